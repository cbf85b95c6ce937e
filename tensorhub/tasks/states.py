"""The task state machine, written once, and the only code that writes a task's ``status``.

    pending ──claim──▶ running ──finish──▶ finished
       │                 │ ├──fail (no attempts left)──▶ failed ──requeue──▶ pending
       │                 │ └──retry / lease expired / handed back──▶ pending
       └──cancel──▶ cancelled ◀──cancel──┘              cancelled ──requeue──▶ pending

Exclusivity does not rest on the server making a read-modify-write atomic (FerretDB v1 does not):
leaving ``pending`` or leaving ``running`` first requires a *ticket*, a document inserted into
``task_claims`` under a unique ``_id``. Inserts with a duplicate ``_id`` fail on every server, so
exactly one party wins each ticket:

- ``<task_id>/<seq>`` — the right to take the task out of ``pending`` for the ``seq``-th time
  (a runner's claim, carrying its lease, or a cancellation);
- ``<task_id>/<seq>/end`` — the right to end that claim (the runner's outcome, the reaper after
  the lease expired, a cancellation).

Only the ticket's winner then updates the task document, conditionally on (status, seq).
"""
from __future__ import annotations

from typing import Any

from bson import ObjectId
from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError

from tensorhub.errors import IllegalTransition
from tensorhub.fields import utcnow

PENDING, RUNNING, FINISHED, FAILED, CANCELLED = "pending", "running", "finished", "failed", "cancelled"
STATES = (PENDING, RUNNING, FINISHED, FAILED, CANCELLED)
ACTIVE = (PENDING, RUNNING)
DONE = (FINISHED, FAILED, CANCELLED)

# (from, to) -> why it happens. Anything not listed is refused.
TRANSITIONS: dict[tuple[str, str], str] = {
    (PENDING, RUNNING): "a runner claimed the task (ticket <id>/<seq>)",
    (PENDING, CANCELLED): "cancelled before any runner claimed it (ticket <id>/<seq>)",
    (RUNNING, FINISHED): "the attempt succeeded (ticket <id>/<seq>/end)",
    (RUNNING, FAILED): "the attempt failed and no attempts are left (ticket <id>/<seq>/end)",
    (RUNNING, PENDING): "retry after a failure, an expired lease or a hand-back (ticket <id>/<seq>/end)",
    (RUNNING, CANCELLED): "cancelled while running; the runner kills it (ticket <id>/<seq>/end)",
    (FAILED, PENDING): "requeued by a user",
    (CANCELLED, PENDING): "requeued by a user",
    (FINISHED, PENDING): "requeued by a user (run again)",
}


def claim_ticket(task_id: ObjectId, seq: int) -> str:
    return f"{task_id}/{seq}"


def end_ticket(task_id: ObjectId, seq: int) -> str:
    return f"{task_id}/{seq}/end"


def take_ticket(claims: Collection, ticket: str, owner: str, **fields: Any) -> bool:
    """Insert ``ticket`` for ``owner``; True for the one owner that wins it, False for everyone else.

    Asking again as the same owner is True again, so a caller whose insert reached the server but
    whose answer was lost (a dropped connection) can safely retry.
    """
    try:
        claims.insert_one({"_id": ticket, "owner": owner, "taken_at": utcnow(), **fields})
        return True
    except DuplicateKeyError:
        return claims.find_one({"_id": ticket, "owner": owner}, {"_id": 1}) is not None


def transition(tasks: Collection, task_id: ObjectId, source: str, target: str,
               guard: dict[str, Any] | None = None, set_fields: dict[str, Any] | None = None,
               inc: dict[str, int] | None = None) -> bool:
    """Move one task from ``source`` to ``target`` in one conditional update.

    ``guard`` adds conditions (the claim's ``seq``, its token), so the update only lands on the
    state the caller's ticket is about. Returns whether it landed.
    """
    if (source, target) not in TRANSITIONS:
        raise IllegalTransition(f"a task cannot go from {source!r} to {target!r}")
    update: dict[str, Any] = {"$set": {"status": target, "updated_at": utcnow(), **(set_fields or {})}}
    if inc:
        update["$inc"] = inc
    query = {"_id": task_id, "status": source, **(guard or {})}
    return tasks.update_one(query, update).matched_count == 1
