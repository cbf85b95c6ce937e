"""Where the dashboard gets its hub: opened on first use, and again after a failed open, so the
server starts (and keeps serving) while MongoDB is unreachable and recovers when it is back.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from pymongo.errors import PyMongoError

from tensorhub.errors import ConnectionFailed

# A dashboard request must fail fast when the server is away, not hang for pymongo's 30 s.
CLIENT_OPTIONS: dict[str, Any] = {"timeout_ms": 2000, "connectTimeoutMS": 2000, "socketTimeoutMS": 20000}


class Unavailable(Exception):
    """Raised when the hub's server cannot be reached right now (shown as 503, polled again)."""


def brief(message: str) -> str:
    """A driver's error without its topology dump, short enough for a banner.

    >>> brief("cannot reach MongoDB at mongodb://h/x: h:9: [Errno 111] Connection refused "
    ...       "(configured timeouts: ...), Timeout: 2.0s, Topology Description: <...>. Is it running?")
    'cannot reach MongoDB at mongodb://h/x: h:9: [Errno 111] Connection refused'
    """
    for cut in (" (configured timeouts", ", Timeout:", ", Topology Description"):
        message = message.split(cut)[0]
    return message[:300]


class HubSource:
    """Gives the hub, opening it lazily with ``opener``; thread-safe.

    >>> source = HubSource(lambda: hub)
    >>> source.get() is hub
    True
    """

    def __init__(self, opener: Callable[[], Any]) -> None:
        self._opener = opener
        self._hub: Any = None
        self._lock = threading.Lock()

    def get(self) -> Any:
        hub = self._hub
        if hub is not None:
            return hub
        with self._lock:
            if self._hub is None:
                try:
                    self._hub = self._opener()
                except (ConnectionFailed, PyMongoError) as err:
                    raise Unavailable(brief(str(err))) from None
            return self._hub

    def project_name(self) -> Any:
        return None if self._hub is None else self._hub.project_name
