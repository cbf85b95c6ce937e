"""One claimed attempt from start to write-back: the engine the runner daemon and the in-process
``run_top_task`` share.

It owns the lease cadence (renew every third of the lease; stop the code once 80% of the lease
passed without a renewal, so it can never overlap with the next holder), and the write-back (store
the output log, write the outcome fenced by the claim's token, drop what got superseded).
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from tensorhub.fields import HUB
from tensorhub.tasks.claims import Claim, Outcome
from tensorhub.tasks.queue import ClaimRequest, TaskQueue

FENCE_FRACTION = 0.8   # stop our task when 80% of the lease passed without a renewal
BEATS_PER_LEASE = 3
INLINE_LOG_BYTES = 2000  # a log this small is kept whole in the task's output tail


class Attempt:
    """A claim being worked on: when to renew its lease, when to give up, how to write it back.

    >>> from tensorhub.tasks.claims import runner_identity
    >>> _ = hub.create_task("a", source="acc = 0.9", saved_result_keys="acc")
    >>> attempt = Attempt(hub.queue, hub.queue.claim_next(runner_identity(), task_name="a"))
    >>> attempt.start()          # then run the code, calling attempt.beat() when attempt.beat_due()
    True
    >>> attempt.write_back(Outcome("finished", result={"acc": 0.9}))
    True
    """

    def __init__(self, queue: TaskQueue, claim: Claim, clock: Callable[[], float] = time.monotonic) -> None:
        self.queue = queue
        self.claim = claim
        self._clock = clock
        self.log_ref: dict[str, Any] | None = None
        self.next_beat = self.fence_deadline = 0.0
        self._renewed()

    def _renewed(self) -> None:
        now, lease = self._clock(), self.claim.lease_seconds
        self.next_beat = now + lease / BEATS_PER_LEASE
        self.fence_deadline = now + lease * FENCE_FRACTION

    def start(self) -> bool:
        """Tell the server the code is about to run; False if the claim was lost meanwhile."""
        started = self.queue.begin(self.claim)
        if started:
            self._renewed()
        return started

    def beat_due(self) -> bool:
        return self._clock() >= self.next_beat

    def fenced(self) -> bool:
        """True once the lease may have run out without us knowing: the code must stop now."""
        return self._clock() >= self.fence_deadline

    def beat(self) -> bool:
        """Renew the lease; False once the attempt was ended elsewhere (cancelled, deleted, reaped)."""
        if not self.queue.heartbeat(self.claim):
            return False
        self._renewed()
        return True

    def write_back(self, outcome: Outcome, log_path: str | None = None) -> bool:
        """Store the output log (once, even across retries) and write the outcome; False if the
        lease was lost first (the outcome is then dropped, and the stored log with it)."""
        self._store_log(outcome, log_path)
        return self._written(self.queue.finish(self.claim, outcome, self.log_ref))

    def write_back_then_claim(self, outcome: Outcome, log_path: str | None,
                              request: ClaimRequest) -> tuple[bool, Claim | None]:
        """:meth:`write_back`, and claim the slot's next task in the same round trips (a runner
        with a backlog); returns (outcome written, the next claim or None)."""
        self._store_log(outcome, log_path)
        written, claim = self.queue.finish_then_claim(self.claim, outcome, self.log_ref, request)
        return self._written(written), claim

    def _store_log(self, outcome: Outcome, log_path: str | None) -> None:
        if log_path is not None and self.log_ref is None:
            if os.path.getsize(log_path) <= INLINE_LOG_BYTES:
                # The whole log is the tail the outcome already carries: no blob (two writes saved).
                outcome.output = {**(outcome.output or {}), "whole": True}
            else:
                self.log_ref = self.queue.store_output_log(log_path, self.claim.task_id, self.claim.attempt)

    def _written(self, written: bool) -> bool:
        """After the outcome's write: drop the log it superseded, or ours if it was not written."""
        if written:
            previous = ((self.claim.task[HUB].get("output") or {}).get("log") or {}).get("id")
            if previous is not None and (self.log_ref is None or previous != self.log_ref["id"]):
                self.queue.delete_blobs([previous])  # the last attempt's log, superseded by ours
            return True
        self.discard_log()
        return False

    def discard_log(self) -> None:
        """Delete the stored log of an outcome that will never be written."""
        if self.log_ref is not None and self.queue.stored_log_id(self.claim.task_id) != self.log_ref["id"]:
            self.queue.delete_blobs([self.log_ref["id"]])
        self.log_ref = None
