"""When an idle runner looks for work again.

Idle, a runner reads the queue's signal document by ``_id`` every ``poll_interval`` (1 s by
default: a lookup every server pushes down, one per runner per second), and looks for work only
when its token changed. On MongoDB replica sets a change stream of tasks becoming pending wakes
it at once; FerretDB v1 and standalone servers have no change streams, so the watcher thread
notices the error once and the signal alone carries on. After finding work the runner looks again
straight away, since a backlog may hold more.
"""
from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from pymongo.errors import PyMongoError

log = logging.getLogger("tensorhub.runner")
MIN_INTERVAL = 0.02      # after finding work: look again almost at once
STREAMING_INTERVAL = 2.0  # with a change stream, the signal poll is only a safety net


class Wakeup:
    def __init__(self, watch: Callable[..., Any], max_interval: float) -> None:
        self._open_stream = watch  # the queue's change stream of new and changed tasks
        self._max = max_interval
        self._event = threading.Event()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="tensorhub-change-stream", daemon=True)
        self.streaming = False
        self.woken = False

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._event.set()

    def wake(self) -> None:
        self._event.set()

    def wait(self, found_work: bool, cap: float | None = None, idle: bool = False) -> None:
        """Sleep until woken, or for the poll interval (MIN_INTERVAL after finding work).

        ``idle`` (a runner with a free slot): the clock is cut into slots of one period (whole seconds, by
        default), and the runner polls once in each slot, at a moment drawn anew for each. So an
        idle runner sends one command per second of the clock (the daemon gives a slot to its
        registry heartbeat or a reaping step instead, never both), and a fleet's polls are spread
        evenly over time whatever happened before: runners that polled in step (booted together,
        or freed together by tasks that arrived on a schedule) would leave most of each interval
        without a poll, and a new task would wait for the polls to come round.
        """
        interval = MIN_INTERVAL if found_work else (
            max(self._max, STREAMING_INTERVAL) if self.streaming else self._max)
        timeout = interval if cap is None else min(interval, cap)
        if idle and not found_work:
            timeout = self._until_next_poll(timeout)
        if self._event.wait(timeout):
            self._event.clear()
            self.woken = True

    @staticmethod
    def _until_next_poll(period: float) -> float:
        """Until a random moment of the next slot of the clock: whatever this turn sent went out
        in the current one (a turn that ran late into a later slot moves the next poll on)."""
        now = time.time()
        return max(0.0, (math.floor(now / period) + 1 + random.random()) * period - now)

    def take_woken(self) -> bool:
        """True once after an event woke us (a task became pending, or a stop)."""
        woken, self.woken = self.woken, False
        return woken

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
