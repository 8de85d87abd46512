"""How the agent reaches a device. Each transport runs `agent.py` with arguments and returns its JSON."""

from __future__ import annotations

from .base import TRANSPORTS, Transport, make_transport
from . import local  # noqa: F401  (registration)

__all__ = ["TRANSPORTS", "Transport", "make_transport"]
