"""Where claims happen: taking a pending task, keeping its lease alive, and ending the attempt.

A claim is the ticket document ``<task_id>/<seq>`` in ``task_claims``; it carries the lease
(``expires_at``), renewed only by the runner that holds it. Ending the attempt takes the ticket
``<task_id>/<seq>/end``; whoever wins it (the runner with its outcome, a reaper after expiry, a
cancellation) is the only party that writes the attempt's outcome, in one update that also
matches the claim's ``seq`` and token (fencing). See ``states.py`` for why tickets.
"""
from __future__ import annotations

import datetime as dt
import os
import socket
import uuid
from dataclasses import dataclass
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING
from pymongo.collection import Collection

from tensorhub.fields import utcnow
from tensorhub.tasks import states
from tensorhub.tasks.states import FAILED, PENDING, RUNNING

CLAIM_ORDER = [("priority", DESCENDING), ("created_at", ASCENDING), ("_id", ASCENDING)]
CANDIDATES_PER_CLAIM = 8
FAILURES_KEPT = 10
# A ticket whose winner has not made its task update this long after taking it belongs to a
# process that died in between (the update follows the insert within milliseconds).
STALE_TICKET = dt.timedelta(seconds=30)


@dataclass
class Claim:
    """A runner's hold on one attempt of one task."""

    task: dict[str, Any]
    seq: int
    token: str
    runner: dict[str, Any]
    lease_seconds: float

    @property
    def task_id(self) -> ObjectId:
        return self.task["_id"]

    @property
    def ticket(self) -> str:
        return states.claim_ticket(self.task_id, self.seq)


@dataclass
class Outcome:
    """How an attempt ended, as the runner saw it."""

    status: str                       # finished | failed | handed_back
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    output: dict[str, Any] | None = None


def runner_identity(gpu: str | None = None, runner_id: str | None = None) -> dict[str, Any]:
    host = socket.gethostname()
    return {"id": runner_id or f"{host}:{os.getpid()}:{uuid.uuid4().hex[:6]}", "host": host,
            "pid": os.getpid(), "gpu": gpu}


class ClaimBook:
    """Claims, leases and attempt endings for the tasks of one project."""

    def __init__(self, tasks: Collection, claims: Collection, project: str) -> None:
        self.tasks = tasks
        self.claims = claims
        self.project = project

    def ensure_indexes(self) -> None:
        self.claims.create_index([("task_id", ASCENDING)])

    # -- claiming ------------------------------------------------------------------------------
    def claim_next(self, query: dict[str, Any], runner: dict[str, Any], lease_seconds: float,
                   sort: list[tuple[str, int]] | None = None) -> Claim | None:
        """Claim the first pending task matching ``query`` (priority, then age), or return None."""
        filter_ = {**query, "project": self.project, "status": PENDING}
        for candidate in self.tasks.find(filter_, {"seq": 1}, sort=sort or CLAIM_ORDER,
                                         limit=CANDIDATES_PER_CLAIM):
            claim = self._try_claim(candidate["_id"], int(candidate.get("seq", 0)), runner, lease_seconds)
            if claim is not None:
                return claim
        return None

    def _try_claim(self, task_id: ObjectId, seq: int, runner: dict[str, Any],
                   lease_seconds: float) -> Claim | None:
        token = uuid.uuid4().hex
        now = utcnow()
        ticket = states.claim_ticket(task_id, seq + 1)
        if not states.take_ticket(self.claims, ticket, token, task_id=task_id, project=self.project,
                                  seq=seq + 1, purpose="run", runner=runner,
                                  heartbeat_at=now, expires_at=now + dt.timedelta(seconds=lease_seconds)):
            self._skip_stale_claim(task_id, seq, ticket, now)
            return None  # someone else claimed (or cancelled) this round first
        moved = states.transition(
            self.tasks, task_id, PENDING, RUNNING, guard={"seq": seq},
            set_fields={"seq": seq + 1, "lease": {"ticket": ticket, "token": token}, "runner": runner,
                        "started_at": now, "finished_at": None},
            inc={"attempts": 1})
        if not moved:  # deleted or skipped meanwhile: close the ticket so nothing waits on it
            states.take_ticket(self.claims, states.end_ticket(task_id, seq + 1), token, task_id=task_id,
                               by="claim-abandoned")
            return None
        task = self.tasks.find_one({"_id": task_id})
        claim = Claim(task, seq + 1, token, runner, lease_seconds) if task else None
        if claim is None or self._ended_by_other(claim):  # skipped as stale while we were slow
            return None
        return claim

    def _skip_stale_claim(self, task_id: ObjectId, seq: int, ticket: str, now: dt.datetime) -> None:
        """A claimer that died between its ticket and its update would block the task forever:
        past STALE_TICKET, move the task on to the next round (its old ticket then matches nothing)."""
        taken = self.claims.find_one({"_id": ticket}, {"taken_at": 1})
        if taken is None or _aware(taken["taken_at"]) >= now - STALE_TICKET:
            return
        # Ending the round by ticket first means a claimer that was only slow finds it ended and
        # backs off instead of running the task (see _try_claim), even where updates race.
        # Either way the round has an end ticket afterwards, so it is over and can be skipped.
        states.take_ticket(self.claims, states.end_ticket(task_id, seq + 1), uuid.uuid4().hex,
                           task_id=task_id, by="stale-claim")
        self.tasks.update_one({"_id": task_id, "status": PENDING, "seq": seq}, {"$set": {"seq": seq + 1}})

    # -- leases --------------------------------------------------------------------------------
    def heartbeat(self, claim: Claim) -> bool:
        """Renew the lease; False once the attempt was ended by someone else (kill the task)."""
        now = utcnow()
        renewed = self.claims.update_one({"_id": claim.ticket, "owner": claim.token},
                                         {"$set": {"heartbeat_at": now,
                                                   "expires_at": now + dt.timedelta(seconds=claim.lease_seconds)}})
        if renewed.matched_count == 0:  # the ticket is gone: the task was deleted
            return False
        return not self._ended_by_other(claim)

    def _ended_by_other(self, claim: Claim) -> bool:
        ended = self.claims.find_one({"_id": states.end_ticket(claim.task_id, claim.seq)}, {"owner": 1})
        return ended is not None and ended.get("owner") != claim.token

    def reap_expired(self, now: dt.datetime | None = None) -> int:
        """Return running tasks whose lease expired to pending (or failed when out of attempts).

        Safe to run from every runner at once: each expired attempt's end ticket has one winner.
        """
        now = now or utcnow()
        reaped = 0
        for task in self.tasks.find({"project": self.project, "status": RUNNING}):
            seq = int(task.get("seq", 0))
            lease = self.claims.find_one({"_id": states.claim_ticket(task["_id"], seq)}, {"expires_at": 1})
            if lease is not None and _aware(lease["expires_at"]) > now:
                continue
            if not states.take_ticket(self.claims, states.end_ticket(task["_id"], seq), uuid.uuid4().hex,
                                      task_id=task["_id"], by="reaper"):
                reaped += self._finish_stale_end(task, seq, now)
                continue
            runner = (task.get("runner") or {}).get("id", "?")
            error = {"type": "LeaseExpired",
                     "message": f"runner {runner} stopped renewing its lease (killed, crashed or cut off)"}
            self._end(task, seq, Outcome("failed", error=error))
            reaped += 1
        return reaped

    def _finish_stale_end(self, task: dict[str, Any], seq: int, now: dt.datetime) -> bool:
        """Whoever took this attempt's end ticket died before writing the outcome: write it for them."""
        end = self.claims.find_one({"_id": states.end_ticket(task["_id"], seq)})
        if end is None or _aware(end["taken_at"]) >= now - STALE_TICKET:
            return False
        if end.get("by") == "cancel":
            return self._mark_cancelled(task["_id"], seq)
        error = {"type": "OutcomeLost", "message": f"the attempt was ended by {end.get('by')} "
                 "but its outcome never reached the server"}
        return self._end(task, seq, Outcome("failed", error=error))

    # -- ending an attempt ---------------------------------------------------------------------
    def finish(self, claim: Claim, outcome: Outcome) -> bool:
        """Write the attempt's outcome if this claim still owns it; False if it lost the lease."""
        if not states.take_ticket(self.claims, states.end_ticket(claim.task_id, claim.seq), claim.token,
                                  task_id=claim.task_id, by="runner"):
            return False
        task = self.tasks.find_one({"_id": claim.task_id})
        if task is None:
            return False
        return self._end(task, claim.seq, outcome, token=claim.token)

    def _end(self, task: dict[str, Any], seq: int, outcome: Outcome, token: str | None = None) -> bool:
        """The one place an attempt's outcome is written: status, result and times in one update."""
        now = utcnow()
        started = task.get("started_at")
        fields: dict[str, Any] = {"finished_at": now, "lease": None,
                                  "duration_seconds": (now - _aware(started)).total_seconds() if started else None}
        if outcome.output is not None:
            fields["output"] = outcome.output
        inc: dict[str, int] = {}
        if outcome.status == "finished":
            target = states.FINISHED
            fields.update(result=outcome.result, error=None)
        elif outcome.status == "handed_back":
            target = PENDING  # not the task's fault: the attempt does not count against its budget
            inc["attempt_limit"] = 1
            fields.update(finished_at=None)
        else:
            attempts_left = int(task.get("attempts", 0)) < int(task.get("attempt_limit", 1))
            target = PENDING if attempts_left else FAILED
            failure = {"attempt": int(task.get("attempts", 0)), "at": now,
                       "runner": (task.get("runner") or {}).get("id"), **(outcome.error or {})}
            fields.update(error=outcome.error,
                          failures=(list(task.get("failures") or []) + [failure])[-FAILURES_KEPT:])
            if target == PENDING:
                fields["finished_at"] = None
        guard: dict[str, Any] = {"seq": seq}
        if token is not None:
            guard["lease.token"] = token
        return states.transition(self.tasks, task["_id"], RUNNING, target, guard, fields, inc or None)

    def cancel_running(self, task: dict[str, Any]) -> bool:
        """End a running attempt as cancelled; its runner sees the ended lease and kills the process."""
        seq = int(task.get("seq", 0))
        if not states.take_ticket(self.claims, states.end_ticket(task["_id"], seq), uuid.uuid4().hex,
                                  task_id=task["_id"], by="cancel"):
            return False
        return self._mark_cancelled(task["_id"], seq)

    def _mark_cancelled(self, task_id: ObjectId, seq: int) -> bool:
        return states.transition(self.tasks, task_id, RUNNING, states.CANCELLED, {"seq": seq},
                                 {"finished_at": utcnow(), "lease": None})

    def cancel_pending(self, task: dict[str, Any]) -> bool:
        """Cancel a task nobody has claimed, by taking its next claim ticket ourselves."""
        seq = int(task.get("seq", 0))
        if not states.take_ticket(self.claims, states.claim_ticket(task["_id"], seq + 1), uuid.uuid4().hex,
                                  task_id=task["_id"], purpose="cancel"):
            return False
        return states.transition(self.tasks, task["_id"], PENDING, states.CANCELLED, {"seq": seq},
                                 {"seq": seq + 1, "finished_at": utcnow()})

    def cancelled_but_still_held(self, task: dict[str, Any]) -> bool:
        """True while a cancelled task's runner may not yet have noticed (its lease is still live)."""
        seq = int(task.get("seq", 0))
        lease = self.lease_of(task)
        if lease is None or lease.get("purpose") != "run" or _aware(lease["expires_at"]) <= utcnow():
            return False
        return self.claims.find_one({"_id": states.end_ticket(task["_id"], seq), "by": "cancel"},
                                    {"_id": 1}) is not None

    def lease_of(self, task: dict[str, Any]) -> dict[str, Any] | None:
        """The live lease document of a running task (heartbeat_at, expires_at, runner)."""
        return self.claims.find_one({"_id": states.claim_ticket(task["_id"], int(task.get("seq", 0)))})


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
