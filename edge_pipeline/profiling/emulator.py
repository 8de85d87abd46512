"""The aarch64 emulator: a Debian arm64 sysroot + aarch64 wheels, run under qemu-aarch64-static.

What works here (DESIGN.md, "facts measured"): `mmdebstrap --variant=extract` unpacks Debian's arm64
python3 without running any maintainer script (so no binfmt_misc is needed), `pip download
--platform manylinux..._aarch64` fetches the ARM wheels, which are unzipped into `site/` (a wheel is
a zip; no pip runs inside the emulator), and `qemu-aarch64-static -L ROOT ROOT/usr/bin/python3.X`
runs the sysroot's own Python with `site/` on PYTHONPATH.

Built once per spec (suite, python, packages) under `~/.cache/edge-pipeline/qemu-aarch64/<key>/`
and reused; a `complete.json` written last marks a finished build, so an interrupted one is redone.
Only this setup touches the network (Debian and PyPI); running the emulator never does.

`python -m edge_pipeline.profiling.emulator` builds the default sysroot (used by `make emulator`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .. import procs
from ..errors import PipelineError, UserError

DEBIAN_PACKAGES = ["python3", "libstdc++6", "libgcc-s1"]
AARCH64_PLATFORMS = ["manylinux2014_aarch64", "manylinux_2_17_aarch64", "manylinux_2_27_aarch64", "manylinux_2_28_aarch64"]
LAYOUT_VERSION = "1"  # bump when the on-disk layout changes


def cache_root(override: str | None = None) -> Path:
    base = override or os.environ.get("EDGE_PIPELINE_CACHE") or Path.home() / ".cache" / "edge-pipeline"
    return Path(base).expanduser()


@dataclass(frozen=True)
class Sysroot:
    root: Path  # the Debian arm64 tree
    site: Path  # unpacked aarch64 wheels (on PYTHONPATH)
    python: str  # e.g. /usr/bin/python3.11, inside root
    qemu: str

    def command(self, args: list[str]) -> list[str]:
        return [self.qemu, "-L", str(self.root), str(self.root) + self.python, *args]

    def env(self) -> dict[str, str]:
        """A clean environment: nothing of the host's venv may leak into the emulated Python."""
        keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TERM")}
        return {**keep, "PYTHONPATH": str(self.site), "PYTHONNOUSERSITE": "1", "PYTHONDONTWRITEBYTECODE": "1"}


def spec_of(transport) -> dict:
    return {"suite": transport.suite, "python": transport.python_version, "packages": sorted(transport.packages),
            "layout": LAYOUT_VERSION}


def sysroot_dir(transport) -> Path:
    key = hashlib.sha256(json.dumps(spec_of(transport), sort_keys=True).encode()).hexdigest()[:12]
    return cache_root(transport.cache_dir) / "qemu-aarch64" / f"{transport.suite}-py{transport.python_version}-{key}"


def find_sysroot(transport) -> Sysroot | None:
    """The finished sysroot for this transport's spec, or None if it is not built yet."""
    folder = sysroot_dir(transport)
    if not (folder / "complete.json").is_file():
        return None
    return Sysroot(folder / "root", folder / "site", f"/usr/bin/python{transport.python_version}", transport.qemu)


def missing_tools(transport) -> list[str]:
    return [tool for tool in (transport.qemu, "mmdebstrap") if shutil.which(tool) is None]


def ensure_sysroot(transport, quiet: bool = False) -> Sysroot:
    """The cached sysroot, building it first if needed (network: Debian + PyPI, once)."""
    found = find_sysroot(transport)
    if found is not None:
        if shutil.which(transport.qemu) is None:
            raise UserError(f"{transport.qemu} not found; install qemu-user-static (`make system-deps`)")
        return found
    missing = missing_tools(transport)
    if missing:
        raise UserError(
            f"the aarch64 emulator needs {', '.join(missing)}; install them with `make system-deps` "
            "(apt-get install qemu-user-static mmdebstrap)"
        )
    return build_sysroot(transport, quiet=quiet)


def _log(message: str, quiet: bool) -> None:
    if not quiet:
        from ..ui import console

        console.print(message)


def build_sysroot(transport, quiet: bool = False) -> Sysroot:
    from ..ui import status_line

    final = sysroot_dir(transport)
    final.parent.mkdir(parents=True, exist_ok=True)
    _log(f"setting up the aarch64 emulator (one time): Debian {transport.suite} arm64 + "
         f"{', '.join(transport.packages)} -> {final}", quiet)
    work = Path(tempfile.mkdtemp(prefix=final.name + ".", suffix=".tmp", dir=final.parent))
    try:
        with status_line("emulator setup 1/3: mmdebstrap arm64 sysroot (~40 MB download)"):
            _run(["mmdebstrap", "--quiet", "--variant=extract", "--architectures=arm64",
                  "--include=" + ",".join(DEBIAN_PACKAGES), transport.suite, str(work / "root")], "mmdebstrap", 900)
        python = f"/usr/bin/python{transport.python_version}"
        if not (work / "root" / python.lstrip("/")).exists():
            raise UserError(f"Debian {transport.suite} has no {python}; set transport.python_version to its Python")
        with status_line("emulator setup 2/3: pip download aarch64 wheels (~25 MB)"):
            cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                   "--only-binary=:all:", "--python-version", transport.python_version, "--implementation", "cp",
                   "--dest", str(work / "wheels")]
            for platform_tag in AARCH64_PLATFORMS:
                cmd += ["--platform", platform_tag]
            _run(cmd + list(transport.packages), "pip download", 900)
        with status_line("emulator setup 3/3: unpacking wheels"):
            wheels = sorted((work / "wheels").glob("*.whl"))
            for wheel in wheels:
                with zipfile.ZipFile(wheel) as archive:
                    archive.extractall(work / "site")
            shutil.rmtree(work / "wheels")
        sysroot = Sysroot(work / "root", work / "site", python, transport.qemu)
        probe = procs.run(
            sysroot.command(["-c", "import platform, numpy; from ai_edge_litert import interpreter; print(platform.machine())"
                             if any(p.startswith("ai-edge-litert") for p in transport.packages)
                             else "import platform, numpy; print(platform.machine())"]),
            env=sysroot.env(), timeout=300,
        )
        if probe.returncode != 0 or probe.stdout.strip() != "aarch64":
            tail = (probe.stderr.strip().splitlines() or ["no output"])[-1]
            raise PipelineError(f"emulator setup: the aarch64 Python does not start under {transport.qemu}: {tail}")
        (work / "complete.json").write_text(json.dumps({**spec_of(transport), "wheels": [w.name for w in wheels]}, indent=2))
        if final.exists():  # a stale, unfinished build
            shutil.rmtree(final)
        os.replace(work, final)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    _log(f"aarch64 emulator ready: {final}", quiet)
    return find_sysroot(transport)  # type: ignore[return-value]


def _run(cmd: list[str], what: str, timeout: float) -> None:
    try:
        proc = procs.run(cmd, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise PipelineError(f"emulator setup: {what} did not finish within {timeout:.0f}s") from None
    if proc.returncode != 0:
        lines = [line for line in (proc.stderr or proc.stdout).strip().splitlines() if line.strip()]
        errors = [line for line in lines if "error" in line.lower()] or lines or ["no output"]
        raise PipelineError(
            f"emulator setup: {what} failed ({errors[-1][:300]}); it needs network access to Debian and PyPI once"
        )


def main(argv: list[str] | None = None) -> int:
    """Build (or confirm) the emulator of devices/qemu-aarch64.yaml (or the given device)."""
    import argparse

    from ..errors import EdgePipelineError
    from .devices import get_device

    parser = argparse.ArgumentParser(description="Build the cached aarch64 emulator sysroot.")
    parser.add_argument("--device", default="qemu-aarch64")
    parser.add_argument("--quiet", action="store_true", help="print only when something is built")
    args = parser.parse_args(argv)
    try:
        device = get_device(args.device)
        if device.transport.kind != "qemu":
            raise UserError(f"device {device.name} does not use the qemu transport")
        existing = find_sysroot(device.transport)
        sysroot = existing or ensure_sysroot(device.transport)
        if existing is None or not args.quiet:
            print(f"emulator for {device.name}: {sysroot.root.parent}")
    except EdgePipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
