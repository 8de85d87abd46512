"""Typed, validated values for device files: nothing a device file says can become a local command.

A device file may come from an untrusted place (`./devices` of a cloned repository), and its values
reach `ssh`, `adb` and `qemu` command lines. So every value that reaches one is checked here against
an allow-list of characters and shapes, and every count or duration has an upper bound (a budget
of 1e12 runs would hang, not fail):

- host and user names: DNS names, ssh aliases, IPv4/IPv6 addresses; POSIX user names. Never a
  leading `-` (ssh would read an option), never a space, quote, `%` token or control character.
- jump hosts: `[user@]host[:port]`, passed as `ssh -J` (OpenSSH places it in a command line of its
  own, so it gets the same strict checks).
- local file paths (keys, known_hosts): absolute, `~/...` or relative, made of word characters and
  `. / + @ = : -` only (no `%` tokens, `${VAR}`, whitespace or shell characters).
- local programs (the interpreter of a local device, the adb and qemu binaries): a command name or
  an absolute path whose file name is that program's (e.g. `python3.11`, `adb`); never a path
  relative to the working directory, where a cloned repository could have put a script.
- pinned wheels for the emulator: `name==version` only (no pip options, URLs or local paths).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated

from pydantic import AfterValidator, Field

# Upper bounds, stated in every message pydantic writes for them ("less than or equal to 3600").
MAX_COUNT_RUNS = 100_000_000  # timed runs (they also stop at max_seconds; warmup runs do not)
MAX_WARMUP_RUNS = 10_000
MAX_SECONDS = 86_400.0  # one day: a measurement or a remote command
MAX_CONNECT_SECONDS = 300
MAX_KEEPALIVE_SECONDS = 3_600
MAX_KEEPALIVE_COUNT = 100
MAX_CORES = 1_024
MAX_MEMORY_MB = 16 * 1024 * 1024  # 16 TiB

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_HOST_NAME = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,252})$")
_USER_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
_PATH = re.compile(r"^(?:~/)?[\w./+@=:-]+$")
_PIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(?:\[[A-Za-z0-9_,.-]+\])?==[A-Za-z0-9][A-Za-z0-9.+!-]*$")
PYTHON_PROGRAM = r"python(?:\d+(?:\.\d+)?)?"
ADB_PROGRAM = r"adb"
QEMU_PROGRAM = r"qemu-aarch64(?:-static)?"

# Keys of `ssh -o` that run a local command or change what ssh trusts, and why each is refused.
COMMAND_OPTIONS = {
    "proxycommand": "runs a local command (for a bastion host use transport.jump_host)",
    "localcommand": "runs a local command", "permitlocalcommand": "enables LocalCommand, which runs a local command",
    "knownhostscommand": "runs a local command", "match": "can run a local command (Match exec)",
    "include": "reads another config file, which could run commands", "proxyusefdpass": "belongs to ProxyCommand",
    "remotecommand": "replaces the agent's command", "sessiontype": "replaces the agent's command",
    "securitykeyprovider": "loads a local library", "pkcs11provider": "loads a local library",
    "controlpath": "shares connections through a local socket", "controlmaster": "shares connections through a local socket",
    "sendenv": "sends local environment variables", "setenv": "sets remote environment variables",
    "batchmode": "would allow password prompts", "globalknownhostsfile": "changes host-key checking",
}
# ssh options that have a typed field of their own.
TYPED_FIELDS = {
    "port": "port", "identityfile": "identity_file", "connecttimeout": "connect_timeout_s",
    "serveraliveinterval": "server_alive_interval_s", "serveralivecountmax": "server_alive_count_max",
    "proxyjump": "jump_host", "compression": "compression", "addressfamily": "address_family",
    "stricthostkeychecking": "strict_host_key_checking", "userknownhostsfile": "known_hosts_file",
    "user": "user", "hostname": "host",
}
SSH_FIELDS = ("port, identity_file, known_hosts_file, strict_host_key_checking, jump_host, connect_timeout_s, "
              "server_alive_interval_s, server_alive_count_max, compression, address_family")


def _no_control(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError(f"{value!r} contains a control character (newline, tab, NUL...); remove it")
    return value


def check_host(value: str) -> str:
    """A DNS name, an ssh alias, or an IPv4/IPv6 address."""
    _no_control(value)
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    if value.startswith("-"):
        raise ValueError(f"host {value!r} starts with '-' (ssh would read it as an option); give a host name or address")
    if not _HOST_NAME.fullmatch(value):
        raise ValueError(f"host {value!r} is not a host name or IP address (letters, digits, '.', '-', '_'; "
                         "no spaces, quotes or '%'); give the board's name or address, e.g. raspberrypi.local")
    return value


def check_user(value: str) -> str:
    _no_control(value)
    if not _USER_NAME.fullmatch(value):
        raise ValueError(f"user {value!r} is not a user name (letters, digits, '.', '-', '_', up to 64, "
                         "not starting with '-' or '.'); give the login name on the target, e.g. pi")
    return value


def check_local_path(value: str) -> str:
    """A local file for ssh: no `%` tokens, `${VAR}`, whitespace or shell characters."""
    _no_control(value)
    if value.startswith("-"):
        raise ValueError(f"path {value!r} starts with '-'; write it as ./{value}")
    if not _PATH.fullmatch(value):
        raise ValueError(f"path {value!r} may only contain letters, digits and . / + @ = : - _ "
                         "(ssh expands '%' tokens and ${VAR}; no spaces or shell characters); move the file")
    return value


def check_remote_dir(value: str) -> str:
    """An absolute folder on the target (quoted for its shell; still: no control characters or '..')."""
    _no_control(value)
    if not value.startswith("/") or "/../" in value + "/":
        raise ValueError(f"{value!r} must be an absolute folder without '..' (e.g. /tmp)")
    return value


def check_remote_word(value: str) -> str:
    """One word for the target's shell (it is quoted there): no control characters, no leading '-'."""
    _no_control(value)
    if value.startswith("-"):
        raise ValueError(f"{value!r} starts with '-'; give a command name or a path")
    return value


def check_jump_host(value: str) -> str:
    """`[user@]host[:port]` (IPv6 as `[addr]:port`); one hop."""
    _no_control(value)
    match = re.fullmatch(r"(?:(?P<user>[^@]*)@)?(?:\[(?P<v6>[^\]]*)\]|(?P<host>[^:]*))(?::(?P<port>\d{1,5}))?", value)
    if match is None:
        raise ValueError(f"jump_host {value!r} must be [user@]host[:port] (one hop, e.g. admin@bastion.example.org:22)")
    try:
        if match["user"] is not None:
            check_user(match["user"])
        check_host(match["v6"] if match["v6"] is not None else match["host"])
    except ValueError as exc:
        raise ValueError(f"jump_host {value!r}: {exc}") from None
    if match["port"] is not None and not 1 <= int(match["port"]) <= 65535:
        raise ValueError(f"jump_host {value!r}: port must be 1..65535")
    return value


def program_check(name_pattern: str, names: str):
    """A validator for a local program: a command name, or an absolute (or ~/) path to it, whose file
    name matches `name_pattern` (`names` says the same to a person)."""
    def check(value: str) -> str:
        _no_control(value)
        if "/" in value and not value.startswith(("/", "~/")):
            raise ValueError(f"{value!r} is a relative path (it would run a file from the working directory); "
                             f"give an absolute path or a command name ({names})")
        if not re.fullmatch(name_pattern, value.rsplit("/", 1)[-1]) or not _PATH.fullmatch(value):
            raise ValueError(f"{value!r} is not allowed here: the program's file name must be {names}, "
                             "its path made of letters, digits and . / + @ = : - _ only")
        return value
    return check


def check_pinned_wheel(value: str) -> str:
    _no_control(value)
    if not _PIN.fullmatch(value):
        raise ValueError(f"{value!r} must be a pinned package name==version (e.g. numpy==1.26.4); "
                         "no pip options, URLs or paths")
    return value


def reject_ssh_option(value: str) -> str:
    """`transport.options` is gone: each entry is an error that says what to do instead."""
    option = value.strip()[:60]
    key = re.split(r"[\s=]", option, maxsplit=1)[0].lower()
    if key in TYPED_FIELDS:
        raise ValueError(f"ssh option {option!r} is not accepted; use the field transport.{TYPED_FIELDS[key]}")
    if key in COMMAND_OPTIONS:
        raise ValueError(f"ssh option {option!r} is not accepted: it {COMMAND_OPTIONS[key]}; remove it")
    raise ValueError(f"free-form ssh options are not accepted ({option!r}); use the typed fields: {SSH_FIELDS}")


HostName = Annotated[str, Field(min_length=1, max_length=253), AfterValidator(check_host)]
UserName = Annotated[str, AfterValidator(check_user)]
LocalPath = Annotated[str, Field(min_length=1, max_length=4096), AfterValidator(check_local_path)]
RemoteDir = Annotated[str, Field(min_length=1, max_length=4096), AfterValidator(check_remote_dir)]
RemoteWord = Annotated[str, Field(min_length=1, max_length=4096), AfterValidator(check_remote_word)]
JumpHost = Annotated[str, Field(min_length=1, max_length=330), AfterValidator(check_jump_host)]
_PROGRAM_PATH = Field(min_length=1, max_length=4096)
PythonProgram = Annotated[str, _PROGRAM_PATH, AfterValidator(program_check(PYTHON_PROGRAM, "python, python3 or python3.X"))]
AdbProgram = Annotated[str, _PROGRAM_PATH, AfterValidator(program_check(ADB_PROGRAM, "adb"))]
QemuProgram = Annotated[str, _PROGRAM_PATH, AfterValidator(program_check(QEMU_PROGRAM, "qemu-aarch64-static or qemu-aarch64"))]
PinnedWheel = Annotated[str, AfterValidator(check_pinned_wheel)]
RejectedSshOption = Annotated[str, AfterValidator(reject_ssh_option)]
Seconds = Annotated[float, Field(gt=0, le=MAX_SECONDS, allow_inf_nan=False)]
PlainText = Annotated[str, Field(max_length=500), AfterValidator(_no_control)]
