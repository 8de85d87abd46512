"""`ssh`: a board reached with the OpenSSH client, one subprocess per step.

Safe by default: `BatchMode=yes` (keys only, never a password prompt), host-key checking on
(`StrictHostKeyChecking=yes` unless the device file says `accept-new`), connect and command
timeouts. Each session makes a private temp dir on the target (`mktemp -d`, mode 700), streams the
agent and the model into it over ssh's stdin, checks their sha256 there with the target's Python,
runs the agent, and removes the dir in a `finally`, so a failed run leaves nothing behind.

Every remote command is one string built with `shlex.quote` (the remote side is a POSIX shell);
locally no shell is ever involved.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ... import procs
from ...artifacts import LIMIT_TFLITE, read_bytes_bounded, sha256_file
from ...errors import PipelineError, UserError
from .base import AGENT, MISSING_RUNTIME_HINT, RUNTIME_PROBE, TRANSPORTS, Session, Transport, parse_agent_output

# Hashes files given as arguments, one "sha256 name" per line; runs on the target's Python 3.8+.
_HASH_SCRIPT = (
    "import hashlib, sys\n"
    "for p in sys.argv[1:]:\n"
    "    h = hashlib.sha256()\n"
    "    with open(p, 'rb') as f:\n"
    "        for b in iter(lambda: f.read(1 << 20), b''):\n"
    "            h.update(b)\n"
    "    print(h.hexdigest(), p)\n"
)
TEMP_PREFIX = "edge-pipeline."
# What ssh prints when the target cannot be reached at all (as opposed to refusing us).
UNREACHABLE_MARKERS = ("Connection refused", "timed out", "No route to host", "Could not resolve hostname",
                       "Name or service not known", "Network is unreachable")


class SshSession(Session):
    def __init__(self, transport: SshTransport, remote_dir: str, model: str, inputs: str | None, sha256: str) -> None:
        super().__init__(transport, model, inputs, sha256)
        self.remote_dir = remote_dir

    def remote_command(self, args: list[str]) -> str:
        transport: SshTransport = self.transport  # type: ignore[assignment]
        words = [*transport.taskset_prefix(), transport.settings.python, f"{self.remote_dir}/agent.py", *self.agent_args(args)]
        return "cd " + shlex.quote(self.remote_dir) + " && " + " ".join(shlex.quote(w) for w in words)

    def agent(self, args: list[str], timeout: float) -> dict[str, Any]:
        transport: SshTransport = self.transport  # type: ignore[assignment]
        proc = transport.ssh(self.remote_command(args), timeout=timeout)
        if proc.returncode == 127:
            raise UserError(f"device {transport.device.name}: {transport.settings.python!r} not found on the target; "
                            "set transport.python to a Python 3.8+")
        return parse_agent_output(proc.stdout, proc.stderr, transport.device.name)


class SshTransport(Transport):
    kind = "ssh"

    # ---- command construction (pure: tested without a network) ----
    def destination(self) -> str:
        s = self.settings
        return f"{s.user}@{s.host}" if s.user else s.host

    def options(self) -> list[str]:
        """ssh's options, each from a typed, validated field of the device file (devices.SshSettings):
        no value reaches ssh that could name a command, a config file or a `%` token."""
        s = self.settings
        opts = [
            "-o", "BatchMode=yes", "-o", f"StrictHostKeyChecking={s.strict_host_key_checking}",
            "-o", f"ConnectTimeout={s.connect_timeout_s}", "-o", f"ServerAliveInterval={s.server_alive_interval_s}",
            "-o", f"ServerAliveCountMax={s.server_alive_count_max}", "-o", f"Compression={'yes' if s.compression else 'no'}",
            "-o", f"AddressFamily={s.address_family}", "-o", "LogLevel=ERROR", "-p", str(s.port),
        ]
        if s.known_hosts_file:
            opts += ["-o", f"UserKnownHostsFile={Path(s.known_hosts_file).expanduser()}", "-o", "GlobalKnownHostsFile=/dev/null"]
        if s.identity_file:
            opts += ["-i", str(Path(s.identity_file).expanduser()), "-o", "IdentitiesOnly=yes"]
        if s.jump_host:
            opts += ["-J", s.jump_host]
        return opts

    def ssh_command(self, remote: str) -> list[str]:
        # "--" ends ssh's options; the remote command is one word, parsed by the target's shell.
        return ["ssh", "-T", *self.options(), "--", self.destination(), remote]

    def taskset_prefix(self) -> list[str]:
        pins = self.device.pin_cores
        return ["taskset", "-c", ",".join(str(c) for c in pins)] if pins else []

    # ---- running ----
    def ssh(self, remote: str, timeout: float | None = None, stdin: bytes | None = None) -> subprocess.CompletedProcess:
        timeout = timeout or self.settings.command_timeout_s
        if shutil.which("ssh") is None:
            raise UserError("the ssh transport needs the OpenSSH client (`make system-deps` or apt-get install openssh-client)")
        try:
            proc = procs.run(self.ssh_command(remote), input=stdin, timeout=timeout, text=False)  # dies with us
        except subprocess.TimeoutExpired:
            raise PipelineError(f"device {self.device.name}: ssh command did not finish within {timeout:.0f}s") from None
        out = subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(errors="replace"),
                                          proc.stderr.decode(errors="replace"))
        if out.returncode == 255:  # ssh's own failure: connection, host key or authentication
            raise UserError(self.explain_ssh_failure(out.stderr))
        return out

    def explain_ssh_failure(self, stderr: str) -> str:
        s, name = self.settings, self.device.name
        where = f"{self.destination()}:{s.port}"
        text = " ".join(stderr.split())
        known = s.known_hosts_file or "~/.ssh/known_hosts"
        if "REMOTE HOST IDENTIFICATION HAS CHANGED" in stderr or "Host key verification failed" in stderr:
            if "CHANGED" in stderr:
                why = "its host key does not match the one in " + known
            else:
                why = f"its host key is not in {known} (or does not match it)"
            return (f"device {name}: refusing {where}: {why}; verify the key on the device, then add it "
                    f"(ssh-keyscan -p {s.port} {s.host} >> {known}) or fix the entry")
        if "Permission denied" in stderr:
            return (f"device {name}: {where} refused the login ({text[-160:]}); add your public key to the target's "
                    "authorized_keys or set transport.identity_file")
        for marker in UNREACHABLE_MARKERS:
            if marker in stderr:
                return f"device {name}: cannot reach {where} ({marker}); check that it is on, its address and port"
        return f"device {name}: ssh to {where} failed: {text[-300:] or 'no message'}"

    def make_temp_dir(self) -> str:
        template = f"{self.settings.remote_tmp.rstrip('/')}/{TEMP_PREFIX}XXXXXXXX"
        proc = self.ssh("mktemp -d " + shlex.quote(template))
        path = proc.stdout.strip()
        if proc.returncode != 0 or not self.is_our_temp_dir(path):
            raise PipelineError(f"device {self.device.name}: cannot make a temp dir under {self.settings.remote_tmp} "
                                f"({(proc.stderr.strip().splitlines() or ['no output'])[-1]})")
        return path

    def is_our_temp_dir(self, path: str) -> bool:
        """Guard for `rm -rf`: only a path that our mktemp template can produce."""
        prefix = re.escape(self.settings.remote_tmp.rstrip("/") + "/" + TEMP_PREFIX)
        return re.fullmatch(prefix + r"[A-Za-z0-9]{8}", path) is not None

    def upload(self, local: Path, remote: str) -> None:
        proc = self.ssh("cat > " + shlex.quote(remote), stdin=read_bytes_bounded(local, LIMIT_TFLITE, "file to copy"))
        if proc.returncode != 0:
            raise PipelineError(f"device {self.device.name}: copying {local.name} failed: "
                                f"{(proc.stderr.strip().splitlines() or ['no output'])[-1]}")

    def verify(self, remote_dir: str, expected: dict[str, str]) -> None:
        """sha256 of the copies, computed on the target by its Python (also proves that Python exists)."""
        files = [f"{remote_dir}/{name}" for name in expected]
        remote = " ".join(shlex.quote(w) for w in [self.settings.python, "-c", _HASH_SCRIPT, *files])
        proc = self.ssh(remote)
        if proc.returncode == 127 or "not found" in proc.stderr and proc.returncode != 0 and not proc.stdout:
            raise UserError(f"device {self.device.name}: {self.settings.python!r} not found on the target; "
                            "set transport.python to a Python 3.8+ with numpy and ai-edge-litert or tflite-runtime")
        found = dict(reversed(line.split(None, 1)) for line in proc.stdout.strip().splitlines() if " " in line)
        for name, digest in expected.items():
            actual = found.get(f"{remote_dir}/{name}")
            if actual != digest:
                raise PipelineError(f"device {self.device.name}: {name} arrived corrupted (sha256 {actual} != {digest})")

    def remove(self, remote_dir: str) -> None:
        if self.is_our_temp_dir(remote_dir):
            try:
                self.ssh("rm -rf -- " + shlex.quote(remote_dir))
            except (UserError, PipelineError):
                pass  # the connection is gone: nothing more we can do, and the original error matters more

    @contextmanager
    def session(self, model: Path, inputs: Path | None = None) -> Iterator[Session]:
        remote_dir = self.make_temp_dir()
        try:
            files = {"agent.py": AGENT, "model.tflite": Path(model)}
            if inputs is not None:
                files["inputs.npy"] = Path(inputs)
            digests = {name: sha256_file(path) for name, path in files.items()}
            for name, path in files.items():
                self.upload(path, f"{remote_dir}/{name}")
            self.verify(remote_dir, digests)
            yield SshSession(self, remote_dir, f"{remote_dir}/model.tflite",
                             f"{remote_dir}/inputs.npy" if inputs is not None else None, digests["model.tflite"])
        finally:
            self.remove(remote_dir)

    def check(self) -> str | None:
        try:
            remote = " ".join(shlex.quote(w) for w in [self.settings.python, "-c", RUNTIME_PROBE])
            proc = self.ssh(remote, timeout=self.settings.connect_timeout_s + 60)
        except (UserError, PipelineError) as exc:
            return str(exc).split(": ", 1)[-1]
        if proc.returncode == 127:
            return f"reachable, but {self.settings.python!r} is not found there"
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or ["runtime probe failed"])[-1]
            return f"reachable, but {tail} ({MISSING_RUNTIME_HINT})"
        return None


TRANSPORTS.register("ssh", SshTransport)
