"""What the task queue tells the runs store as attempts start and end.

Every task attempt has a run (``tensorhub.runs``). The queue opens it when a claimed attempt is
about to start and closes it, before the task's own outcome is written, when the attempt ends; a
runner that ends one task and claims the next closes one run and opens the next in one command.
The facade passes its :class:`~tensorhub.runs.store.RunStore`, which has these methods; this
package only knows the shape, so the stores stay independent of each other.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from bson import ObjectId

# An attempt being closed: (task id, round, outcome, error or None); the outcome is "finished",
# "failed", "handed_back" or "cancelled".
ClosingAttempt = tuple[ObjectId, int, str, "Mapping[str, Any] | None"]


class AttemptRuns(Protocol):
    def open_attempt(self, task: Mapping[str, Any], seq: int, runner: Mapping[str, Any]) -> ObjectId:
        """Record that round ``seq`` of ``task`` starts now (its run's id is ``task._hub.run_id``)."""

    def close_attempt(self, task_id: ObjectId, seq: int, outcome: str, error: Mapping[str, Any] | None) -> None:
        """Record how an attempt ended (a no-op if its run was never opened)."""

    def close_and_open(self, closing: ClosingAttempt | None, task: Mapping[str, Any], seq: int,
                       runner: Mapping[str, Any]) -> ObjectId:
        """:meth:`close_attempt` (unless ``closing`` is None) and :meth:`open_attempt`, in one command."""

    def discard_attempt(self, task_id: ObjectId, seq: int) -> None:
        """Forget an opened attempt whose code never started (its claim fell through)."""

    def started_attempts(self, attempts: list[tuple[ObjectId, int]]) -> set[tuple[ObjectId, int]]:
        """Which of these (task id, round) attempts were opened."""
