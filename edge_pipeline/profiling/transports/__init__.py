"""How the agent reaches a device: local, qemu (aarch64 emulator), ssh, adb. Each transport opens a
session per model and runs the agent (or benchmark_model) there, returning its JSON."""

from __future__ import annotations

from . import adb, local, qemu, ssh  # noqa: F401  (registration)
from .base import TRANSPORTS, Session, Transport, make_transport

__all__ = ["TRANSPORTS", "Session", "Transport", "make_transport"]
