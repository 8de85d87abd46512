"""Fixtures for profiling tests: tiny real TFLite models, short-budget device files, and a real
OpenSSH server on 127.0.0.1 with generated host and user keys (no other address is ever used)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.profiling.tiny_models import shared_tiny_models

SSHD = "/usr/sbin/sshd"


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """float32 + int8 TFLite of a 2-conv net at 16x16, and 8 input samples (~15 s, once)."""
    return shared_tiny_models(tmp_path_factory)


def device_file(folder: Path, name: str, body: str) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(f"name: {name}\n" + textwrap.dedent(body))
    return path


SHORT_BUDGET = "budget: {warmup_runs: 2, min_runs: 10, min_seconds: 0.05, max_seconds: 10.0, max_rel_std: 10.0}\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


@dataclass
class Sshd:
    port: int
    user: str
    identity: Path
    known_hosts: Path
    root: Path  # a folder the tests use as the target's remote_tmp

    def device(self, folder: Path, name: str = "loopback", **fields: str) -> Path:
        transport = {
            "kind": "ssh", "host": "127.0.0.1", "port": str(self.port), "user": self.user,
            "identity_file": str(self.identity), "known_hosts_file": str(self.known_hosts),
            "python": sys.executable, "remote_tmp": str(self.root), "connect_timeout_s": "5",
        }
        transport.update(fields)
        flow = ", ".join(f"{k}: {v!r}" if k not in ("port", "connect_timeout_s") else f"{k}: {v}" for k, v in transport.items())
        return device_file(folder, name, f"arch: x86_64\ntransport: {{{flow}}}\n" + SHORT_BUDGET)

    def leftovers(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir())


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    """A real sshd (Debian's openssh-server) on 127.0.0.1:<free port>, key login for the current user."""
    if not Path(SSHD).is_file() or shutil.which("ssh") is None:
        pytest.fail("openssh-server/openssh-client missing: run `make system-deps`")
    base = tmp_path_factory.mktemp("sshd")
    host_key = keygen(base / "host_ed25519")
    user_key = keygen(base / "user_ed25519")
    (base / "authorized_keys").write_text((base / "user_ed25519.pub").read_text())
    port = free_port()
    host_pub = (base / "host_ed25519.pub").read_text().split()
    known = base / "known_hosts"
    known.write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    target = base / "target-tmp"
    target.mkdir()
    config = base / "sshd_config"
    config.write_text(textwrap.dedent(f"""\
        ListenAddress 127.0.0.1
        Port {port}
        HostKey {host_key}
        PidFile {base / 'sshd.pid'}
        AuthorizedKeysFile {base / 'authorized_keys'}
        PasswordAuthentication no
        KbdInteractiveAuthentication no
        PubkeyAuthentication yes
        PermitRootLogin prohibit-password
        UsePAM no
        StrictModes no
        LogLevel ERROR
        """))
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation dir
    with open(base / "sshd.log", "wb") as log:  # sshd keeps its own copy of the descriptor
        proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"sshd did not start: {(base / 'sshd.log').read_text()[-500:]}")
            time.sleep(0.1)
    import getpass

    try:
        yield Sshd(port, getpass.getuser(), user_key, known, target)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
