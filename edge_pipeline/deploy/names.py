"""What may reach a device's command line: app names, release ids and roots, each checked here
against a strict pattern before any command is built (the device's shell program checks them again).

A release id is `<UTC time to the millisecond>-<precision>-<first 8 hex of the model's sha256>`, so
ids sort by creation time and say what they hold: `20250101T120000.123Z-int8-1a2b3c4d`.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

from ..errors import UserError
from ..profiling.fields import check_remote_dir
from ..schema import NAME_MAX_LENGTH, NAME_PATTERN

RELEASE_ID_PATTERN = r"^[0-9]{8}T[0-9]{6}\.[0-9]{3}Z-[a-z0-9_]{1,16}-[0-9a-f]{8}$"
HOME_ROOT = "~"  # the login folder of the device's user (ssh, adb): resolved by the device's shell


def check_app(app: str, where: str = "--app") -> str:
    if len(app) > NAME_MAX_LENGTH or not re.fullmatch(NAME_PATTERN, app):
        raise UserError(f"{where}: app name {app!r} must be lowercase letters, digits, '-' and '_', starting with a letter, "
                        f"at most {NAME_MAX_LENGTH} characters (e.g. quickstart)")
    return app


def check_release_id(release: str, where: str = "--remove") -> str:
    if not re.fullmatch(RELEASE_ID_PATTERN, release):
        raise UserError(f"{where}: {release!r} is not a release id (like 20250101T120000.123Z-int8-1a2b3c4d); "
                        "see `edge-pipeline deploy --list --device NAME`")
    return release


def check_root(root: str, where: str = "--root") -> str:
    """An absolute folder on the device (no '..', not '/' itself), or '~' for the user's home."""
    if root == HOME_ROOT:
        return root
    try:
        check_remote_dir(root)
    except ValueError as exc:
        raise UserError(f"{where}: {exc}") from None
    root = root.rstrip("/")
    if not root or re.search(r"[\x00-\x1f\x7f]", root) or "/./" in root + "/":
        raise UserError(f"{where}: {root or '/'!r} cannot hold releases; give a folder such as /home/pi/models")
    return root


def new_release_id(precision: str, model_sha256: str, now: datetime | None = None) -> str:
    now = now or datetime.now(timezone.utc)
    stamp = now.strftime("%Y%m%dT%H%M%S") + f".{now.microsecond // 1000:03d}Z"
    return check_release_id(f"{stamp}-{precision}-{model_sha256[:8]}", "release id")
