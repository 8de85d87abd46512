"""Hostile device files: nothing in a device file may run a local command (ssh options, host and user
values, tool paths), budgets are bounded, and a file in ./devices that shadows a built-in one is
announced. The ssh target is 127.0.0.1 on a closed port: nothing is ever reached."""

from __future__ import annotations

import stat

from .builders import FAST_DEVICE, alias_bomb, symlink
from .harness import Case, Sandbox

CLOSED_PORT = 9  # discard: nothing listens here, a connection is refused at once
SSH = f"kind: ssh, host: 127.0.0.1, port: {CLOSED_PORT}, user: pi, connect_timeout_s: 2"


def _device(name: str, transport: str = "{" + SSH + "}", extra: str = "") -> str:
    return f"name: {name}\ndescription: hostile\narch: aarch64\ntransport: {transport}\n{extra}"


def _evil_script(sandbox: Sandbox, name: str = "evil.sh") -> str:
    """An executable in the working folder that creates the marker (a 'tool' a device file names)."""
    script = sandbox.write(name, f"#!/bin/sh\n{sandbox.inject}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


def _check_file(body, *args: str):
    """`devices --check --device-file evil.yaml evil` on a device file (text or function of the sandbox)."""

    def setup(sandbox: Sandbox) -> list[str]:
        sandbox.write("evil.yaml", body(sandbox) if callable(body) else body)
        return ["devices", "--check", "--device-file", "evil.yaml", "evil", *args]

    return setup


def _ssh_options(*options) -> callable:
    def body(sandbox: Sandbox) -> str:
        listed = ", ".join(repr(o.format(cmd=sandbox.inject)) for o in options)
        return _device("evil", "{" + SSH + f", options: [{listed}]" + "}")

    return body


def _include_config(sandbox: Sandbox) -> str:
    """`Include` pulls in an ssh config file that may say anything (here: a ProxyCommand)."""
    config = sandbox.write("evil.conf", f"ProxyCommand {sandbox.inject}\n")
    return _device("evil", "{" + SSH + f", options: ['Include={config}']" + "}")


def _bad_device(id: str, setup, *, error_has: tuple[str, ...] = ("evil.yaml",), **kw) -> Case:
    return Case(id, "devices", setup, 2, error_has=error_has, timeout_s=kw.pop("timeout_s", 30), **kw)


def _shadowing_rpi4(body):
    """./devices/rpi4.yaml (as cloned from an untrusted repository), then `devices --check rpi4`."""

    def setup(sandbox: Sandbox) -> list[str]:
        sandbox.write("devices/rpi4.yaml", body(sandbox))
        return ["devices", "--check", "rpi4"]

    return setup


def _shadow_announced(sandbox: Sandbox) -> list[str]:
    sandbox.write("devices/rpi4.yaml", _device("rpi4"))
    return ["devices", "rpi4"]


def _names_shadowing_file(sandbox: Sandbox, outcome) -> list[str]:
    if "devices/rpi4.yaml" not in outcome.stdout + outcome.stderr:
        return ["a ./devices/rpi4.yaml that shadows the built-in rpi4 is not announced (its path is not printed)"]
    return []


def _unreachable(sandbox: Sandbox) -> list[str]:
    sandbox.write("evil.yaml", _device("evil"))
    return ["devices", "--check", "--device-file", "evil.yaml", "evil"]


def _profile_with(body):
    """`profile model.tflite --device-file evil.yaml` with a real tiny model."""

    def setup(sandbox: Sandbox) -> list[str]:
        model = sandbox.work / "model.tflite"
        model.write_bytes(sandbox.shared.tflite()["float32"].read_bytes())
        sandbox.write("evil.yaml", body(sandbox))
        return ["profile", "model.tflite", "--device-file", "evil.yaml"]

    return setup


def _dev_zero(sandbox: Sandbox) -> list[str]:
    symlink(sandbox.work / "evil.yaml", "/dev/zero")
    return ["devices", "--device-file", "evil.yaml"]


def _list_file(body):
    def setup(sandbox: Sandbox) -> list[str]:
        sandbox.write("evil.yaml", body(sandbox) if callable(body) else body)
        return ["devices", "--device-file", "evil.yaml"]

    return setup


FAST_BODY = FAST_DEVICE.replace("name: fast", "name: evil")

def _ssh_field(field: str, template: str):
    """An ssh transport whose `field` is `template` with {cmd} the injected command."""

    def body(sandbox: Sandbox) -> str:
        value = template.format(cmd=sandbox.inject)
        fields = {"host": "127.0.0.1", "port": str(CLOSED_PORT), "user": "pi", "connect_timeout_s": "2", field: f"'{value}'"}
        return _device("evil", "{kind: ssh, " + ", ".join(f"{k}: {v}" for k, v in fields.items()) + "}")

    return body


def _proxycommand(name: str):
    return lambda sandbox: _device(name, "{" + SSH + f", options: ['ProxyCommand={sandbox.inject}']" + "}")


def _tool(kind: str, field: str, script: str = "evil.sh", extra: str = ""):
    """A ./devices/rpi4.yaml whose `field` names an executable in the working folder."""

    def body(sandbox: Sandbox) -> str:
        text = _device("rpi4", f"{{kind: {kind}, {field}: '{_evil_script(sandbox, script)}'{extra}}}")
        return text.replace("arch: aarch64", "arch: x86_64") if kind == "local" else text

    return body


def _budget(old: str, new: str):
    return _list_file(FAST_BODY.replace(old, new))


CASES = [
    # Issue 11.1: ssh options that run a local command are refused when the file is read.
    _bad_device("device-ssh-proxycommand", _check_file(_ssh_options("ProxyCommand={cmd}"))),
    _bad_device("device-ssh-proxycommand-lowercase", _check_file(_ssh_options("proxycommand={cmd}"))),
    _bad_device("device-ssh-proxycommand-spaced", _check_file(_ssh_options("ProxyCommand {cmd}"))),
    _bad_device("device-ssh-localcommand", _check_file(_ssh_options("PermitLocalCommand=yes", "LocalCommand={cmd}"))),
    _bad_device("device-ssh-match-exec", _check_file(_ssh_options('Match=exec "{cmd}"'))),
    _bad_device("device-ssh-knownhostscommand", _check_file(_ssh_options("KnownHostsCommand=/bin/sh -c '{cmd}'"))),
    _bad_device("device-ssh-include-config", _check_file(_include_config)),
    _bad_device("device-ssh-proxyjump-option", _check_file(_ssh_options("ProxyJump=-oProxyCommand={cmd}"))),
    # Host and user values that ssh would parse as options.
    _bad_device("device-ssh-host-option", _check_file(_ssh_field("host", "-oProxyCommand={cmd}"))),
    _bad_device("device-ssh-user-with-spaces", _check_file(_ssh_field("user", "pi -oProxyCommand={cmd}"))),
    _bad_device("device-ssh-user-option", _check_file(_ssh_field("user", "-oProxyCommand={cmd}"))),
    # The README's threat: an untrusted repository's ./devices overrides a built-in name.
    _bad_device("device-shadowing-builtin-proxycommand", _shadowing_rpi4(_proxycommand("rpi4")), error_has=("rpi4.yaml",)),
    Case("device-shadowing-builtin-announced", "devices", _shadow_announced, 0, check=_names_shadowing_file, timeout_s=30),
    # Tool paths in a device file name local programs: one in the working folder must not run,
    # also under the name the tool expects (a cloned repository can ship ./bin/python3).
    _bad_device("device-local-python-script", _shadowing_rpi4(_tool("local", "python")), error_has=("rpi4.yaml",)),
    _bad_device("device-local-python-named-python3", _shadowing_rpi4(_tool("local", "python", "bin/python3")),
                error_has=("rpi4.yaml",)),
    _bad_device("device-adb-binary-script", _shadowing_rpi4(_tool("adb", "adb", extra=", python: python3")),
                error_has=("rpi4.yaml",)),
    _bad_device("device-adb-named-adb", _shadowing_rpi4(_tool("adb", "adb", "bin/adb", ", python: python3")),
                error_has=("rpi4.yaml",)),
    _bad_device("device-qemu-binary-script", _shadowing_rpi4(_tool("qemu", "qemu")), error_has=("rpi4.yaml",)),
    # Issue 11.10: `devices --check NAME` fails when NAME is unreachable (exit 2: the user must fix it).
    Case("device-check-unreachable", "devices", _unreachable, (1, 2), error_has=("evil",), timeout_s=30),
    # Bounded budgets (issue 11.10: warmup_runs 1e12 hangs) and bounded values.
    _bad_device("device-warmup-runs-1e12", _budget("warmup_runs: 1", "warmup_runs: 1000000000000")),
    _bad_device("device-min-runs-1e12", _budget("min_runs: 3", "min_runs: 1000000000000")),
    _bad_device("device-max-seconds-1e12", _budget("max_seconds: 5.0", "max_seconds: 1.0e12")),
    _bad_device("device-pin-cores-negative", _list_file(FAST_BODY + "pin_cores: [-1]\n")),
    _bad_device("device-name-path-traversal", _budget("name: evil", "name: ../../evil")),
    _bad_device("device-not-a-mapping", _list_file("- name: evil\n")),
    _bad_device("device-python-tag",
                _list_file(lambda s: FAST_BODY.replace("threads: 1", f'threads: !!python/object/apply:os.system ["{s.inject}"]'))),
    _bad_device("device-alias-bomb", _list_file(FAST_BODY + "bomb:\n" + alias_bomb(indent="  ")), memory_limit_mb=1024),
    _bad_device("device-file-dev-zero", _dev_zero, timeout_s=20, memory_limit_mb=1024),
    # The same refusal through `profile --device-file` (issue 11.1), before anything is run.
    _bad_device("device-profile-proxycommand", _profile_with(_proxycommand("evil")), timeout_s=60),
]
