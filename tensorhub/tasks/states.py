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

Only the ticket's winner then updates the task document, conditionally on (status, seq). So the
task document has one writer at a time, which matters on servers (FerretDB v1) whose updates are
a read followed by a whole-document write.

Every attempt that runs is counted in ``_hub.attempts``; a round that never started (a runner that
lost its claim's replies, or handed the task back) gives its count back and leaves a line in
``_hub.history``.
"""
from __future__ import annotations

from typing import Any, NamedTuple

from bson import ObjectId
from pymongo.collection import Collection
from pymongo.errors import BulkWriteError, DuplicateKeyError

from tensorhub.connection import update_in_one
from tensorhub.errors import IllegalTransition
from tensorhub.fields import HUB, utcnow

PENDING, RUNNING, FINISHED, FAILED, CANCELLED = "pending", "running", "finished", "failed", "cancelled"
STATES = (PENDING, RUNNING, FINISHED, FAILED, CANCELLED)
ACTIVE = (PENDING, RUNNING)
DONE = (FINISHED, FAILED, CANCELLED)
HISTORY_KEPT = 20
DUPLICATE_KEY = 11000  # the server's code for an insert whose _id is taken

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


def hub_path(name: str) -> str:
    """The document path of a bookkeeping field: ``"seq"`` -> ``"_hub.seq"``; top-level names stay."""
    return name if name in ("status", "result") or name.startswith(f"{HUB}.") else f"{HUB}.{name}"


def claim_ticket(task_id: ObjectId, seq: int) -> str:
    return f"{task_id}/{seq}"


def end_ticket(task_id: ObjectId, seq: int) -> str:
    return f"{task_id}/{seq}/end"


def take_ticket(claims: Collection, ticket: str, owner: str, retry: bool = True, **fields: Any) -> bool:
    """Insert ``ticket`` for ``owner``; True for the one owner that wins it, False for everyone else.

    Asking again as the same owner is True again, so a caller whose insert reached the server but
    whose answer was lost (a dropped connection, a late reply) can safely retry. A first try
    (``retry=False``) that finds the ticket taken knows it is someone else's without asking.
    """
    try:
        claims.insert_one({"_id": ticket, "owner": owner, "taken_at": utcnow(), **fields})
        return True
    except DuplicateKeyError:
        if not retry:
            return False
        return claims.find_one({"_id": ticket, "owner": owner}, {"_id": 1}) is not None


def take_tickets(claims: Collection, tickets: list[tuple[str, str, dict[str, Any]]],
                 retry: tuple[bool, ...] | None = None) -> list[bool]:
    """Take several tickets in one round trip: ``(ticket, owner, fields)`` each, each won or lost
    on its own exactly as with :func:`take_ticket` (``retry[i]`` as its ``retry``, default True).

    One unordered insert: a ticket someone else holds does not stop the others.
    """
    now = utcnow()
    try:
        claims.insert_many([{"_id": t, "owner": o, "taken_at": now, **f} for t, o, f in tickets], ordered=False)
        return [True] * len(tickets)
    except BulkWriteError as err:
        errors = err.details.get("writeErrors", [])
        if any(e.get("code") != DUPLICATE_KEY for e in errors):
            raise
        taken = {int(e["index"]) for e in errors}
    retry = retry or (True,) * len(tickets)
    ask = [tickets[i][0] for i in sorted(taken) if retry[i]]
    owners = {d["_id"]: d.get("owner") for d in claims.find({"_id": {"$in": ask}}, {"owner": 1})} if ask else {}
    return [i not in taken or (retry[i] and owners.get(t) == o) for i, (t, o, _) in enumerate(tickets)]


def history_entry(event: str, **details: Any) -> dict[str, Any]:
    """One line of a task's history, e.g. ``{"at": …, "event": "handed_back", "reason": …}``."""
    return {"at": utcnow(), "event": event, **{k: v for k, v in details.items() if v is not None}}


def with_history(doc: dict[str, Any] | None, entry: dict[str, Any]) -> list[dict[str, Any]]:
    """The task's history with ``entry`` appended, the oldest lines dropped beyond HISTORY_KEPT."""
    history = list(((doc or {}).get(HUB) or {}).get("history") or [])
    return (history + [entry])[-HISTORY_KEPT:]


def transition(tasks: Collection, task_id: ObjectId, source: str, target: str,
               guard: dict[str, Any] | None = None, set_fields: dict[str, Any] | None = None,
               inc: dict[str, int] | None = None) -> bool:
    """Move one task from ``source`` to ``target`` in one conditional update.

    ``guard`` adds conditions (the claim's ``seq``, its token), so the update only lands on the
    state the caller's ticket is about. Field names are bookkeeping names (``"seq"``,
    ``"lease.token"``) or the top-level ``"result"``. Returns whether it landed.
    """
    return apply_transitions(tasks, [transition_change(task_id, source, target, guard, set_fields, inc)]) == 1


class Change(NamedTuple):
    """One task's conditional update: what it must still be (``query``) and what it becomes."""

    query: dict[str, Any]
    update: dict[str, Any]


def transition_change(task_id: ObjectId, source: str, target: str, guard: dict[str, Any] | None = None,
                      set_fields: dict[str, Any] | None = None, inc: dict[str, int] | None = None) -> Change:
    """The one conditional update of :func:`transition`, not yet sent: :func:`apply_transitions`
    sends several (of different tasks) in one round trip."""
    if (source, target) not in TRANSITIONS:
        raise IllegalTransition(f"a task cannot go from {source!r} to {target!r}")
    changes = {hub_path(k): v for k, v in (set_fields or {}).items()}
    update: dict[str, Any] = {"$set": {"status": target, f"{HUB}.updated_at": utcnow(), **changes}}
    if inc:
        update["$inc"] = {hub_path(k): v for k, v in inc.items()}
    query = {"_id": task_id, "status": source, **{hub_path(k): v for k, v in (guard or {}).items()}}
    return Change(query, update)


def apply_transitions(tasks: Collection, changes: list[Change]) -> int:
    """Send transitions of different tasks in one unordered bulk update; how many landed.

    The server answers with a total only: when it is short, the caller reads the tasks to see which.
    """
    return update_in_one(tasks, [(c.query, c.update, False) for c in changes], ordered=False)


def initial() -> dict[str, Any]:
    """The state fields of a new task: every task starts ``pending``."""
    return {"status": PENDING}
