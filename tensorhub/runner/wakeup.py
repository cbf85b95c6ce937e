"""When an idle runner looks for work again: at once on a change-stream event, otherwise after an
adaptive poll interval (20 ms right after work appeared, doubling up to ``poll_interval``, 0.1 s
by default: one indexed query returning nothing, ten times a second per runner).

Change streams need a replica set (our docker-compose MongoDB is one); on servers without them
(FerretDB v1, a standalone mongod) the watcher thread notices the error once and polling alone
carries on.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from pymongo.errors import PyMongoError

log = logging.getLogger("tensorhub.runner")
MIN_INTERVAL = 0.02
STREAMING_INTERVAL = 2.0


class Wakeup:
    def __init__(self, watch: Callable[..., Any], max_interval: float) -> None:
        self._open_stream = watch  # the queue's change stream of new and changed tasks
        self._max = max_interval
        self._interval = MIN_INTERVAL
        self._event = threading.Event()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="tensorhub-change-stream", daemon=True)
        self.streaming = False

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._event.set()

    def wake(self) -> None:
        self._event.set()

    def wait(self, found_work: bool, cap: float | None = None) -> None:
        """Sleep until woken or the current interval passes; ``found_work`` resets the backoff."""
        # With a change stream, events wake us: polling is only the safety net and can be slow.
        longest = max(self._max, STREAMING_INTERVAL) if self.streaming else self._max
        self._interval = MIN_INTERVAL if found_work else min(longest, self._interval * 2)
        timeout = self._interval if cap is None else min(self._interval, cap)
        if self._event.wait(timeout):
            self._event.clear()
            self._interval = MIN_INTERVAL

    def _watch(self) -> None:
        try:
            with self._open_stream(max_await_time_ms=500) as stream:
                self.streaming = True
                log.info("listening for new tasks on a change stream")
                while not self._stopped.is_set():
                    if stream.try_next() is not None:
                        self._event.set()
        except (PyMongoError, NotImplementedError, TypeError) as err:  # mongomock has no watch()
            log.info("no change streams on this server (%s); polling every <= %.2fs",
                     str(err).splitlines()[0][:120], self._max)
        finally:
            self.streaming = False
