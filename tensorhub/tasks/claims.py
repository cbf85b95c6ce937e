"""Where claims happen: taking a pending task, keeping its lease alive, and ending the attempt.

A claim is the ticket document ``<task_id>/<seq>`` in ``task_claims``; it carries the lease
(``expires_at``), renewed only by the runner that holds it, and ``started_at`` once the runner
has confirmed the claim and is about to run the code. Ending the attempt takes the ticket
``<task_id>/<seq>/end``; whoever wins it (the runner with its outcome, a reaper after expiry, a
cancellation) is the only party that writes the attempt's outcome, in one update that also
matches the claim's ``seq`` and token (fencing). See ``states.py`` for why tickets.

Lost replies: every step of a claim is retried with the same token, and a retry adopts what the
server shows (the ticket is ours, the task is running under our token). A claim that cannot be
confirmed in time is handed back later without charging an attempt (:meth:`ClaimBook.settle`), and
a lease that expires before its runner ever started the code is a lost round, not an attempt.
"""
from __future__ import annotations

import copy
import datetime as dt
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING
from pymongo.collection import Collection
from pymongo.errors import ConnectionFailure

from tensorhub.errors import TaskError
from tensorhub.fields import HUB, as_utc, utcnow
from tensorhub.project import PROJECT_FIELD, Project
from tensorhub.tasks import states
from tensorhub.tasks.attempt_runs import AttemptRuns
from tensorhub.tasks.model import Task
from tensorhub.tasks.shares import deal, in_share
from tensorhub.tasks.states import FAILED, PENDING, RUNNING

CLAIM_ORDER = [(f"{HUB}.priority", DESCENDING), ("_id", ASCENDING)]  # higher priority, then oldest
CANDIDATES_PER_CLAIM = 8
# A runner in a fleet reads more, and tries its own share of them first, then the others' in random
# order (shares.py): many runners claiming at once then mostly pick different tasks. The window grows
# with the fleet (CANDIDATES_PER_RUNNER for each live runner) and with each race lost
# (CANDIDATES_PER_LOSS), up to CANDIDATES_SPREAD_MAX: 20 runners over 32 candidates in random order
# lost about twice as many tickets as over 160 (bench/claim_window.py).
CANDIDATES_SPREAD = 32
CANDIDATES_PER_RUNNER = 8
CANDIDATES_PER_LOSS = 16
CANDIDATES_SPREAD_MAX = 256
# How long a runner keeps the candidates of one read for its next claims: long enough to serve a
# backlog of short tasks, short enough that a newly queued task of higher priority waits little. In
# a fleet, KEPT_SECONDS_PER_RUNNER for each live runner: a busy fleet still reads afresh about twice
# a second in all, while each of its runners reads less often than once per task.
CANDIDATES_KEPT_SECONDS = 2.0
KEPT_SECONDS_PER_RUNNER = 0.5
# ... and for so many claims only that at most KEPT_STALE of what it read was taken by others by
# then: between two claims of a busy runner, each runner of the fleet takes about one task, mostly
# from the same window. A stale candidate costs a lost ticket and a fresh read; a fleet of 50 on a
# backlog of 200 lost 1.5 tickets per task trying kept lists with the time limit alone.
KEPT_STALE = 0.25
LOST_ROUNDS_KEPT = 10_000
# A runner in a fleet that loses a kept candidate reads afresh (others are claiming from the same
# window); one that loses LOSSES_PER_READ freshly read ones gives up after READS_PER_CLAIM fresh
# reads and looks again within a second. At the tail of a backlog, with fewer tasks left than
# runners, further tries mostly lose: 50 runners draining 200 tasks with 3 and 3 sent 2.4 claim
# tickets per task, with 1 and 1 about 1.6.
LOSSES_PER_READ = 1
READS_PER_CLAIM = 1
FAILURES_KEPT = 10
# Hand-backs are not the task's fault and cost no attempt, up to this many: a task that keeps
# making its runner stop (a SIGTERM to its parent, say) must not be retried forever for free.
FREE_HAND_BACKS = 5
# A ticket whose winner has not made its task update this long after taking it belongs to a
# process that died in between (the update follows the insert within milliseconds).
STALE_TICKET = dt.timedelta(seconds=30)
T = TypeVar("T")
log = logging.getLogger("tensorhub.tasks")


@dataclass
class Claim:
    """A runner's hold on one attempt of one task."""

    task: dict[str, Any]              # the task document as it was when claimed
    seq: int
    token: str
    runner: dict[str, Any]
    lease_seconds: float
    run_id: ObjectId | None = None    # the attempt's run, once it started
    claimed_at: float = field(default_factory=time.monotonic)

    @property
    def task_id(self) -> ObjectId:
        return self.task["_id"]

    @property
    def ticket(self) -> str:
        return states.claim_ticket(self.task_id, self.seq)

    @property
    def attempt(self) -> int:
        """The attempt number users see in the task document (1 for the first attempt)."""
        return int(self.task[HUB].get("attempts", 0))

    @property
    def info(self) -> Task:
        return Task.from_doc(self.task)


@dataclass
class Outcome:
    """How an attempt ended, as the runner saw it."""

    status: str                       # finished | failed | handed_back
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    output: dict[str, Any] | None = None
    reason: str | None = None         # why it was handed back


class ClaimInDoubt(TaskError):
    """Raised when a claim's replies were lost and it could not be confirmed in time.

    The runner keeps it and calls :meth:`ClaimBook.settle` once the server answers again.
    """

    def __init__(self, task_id: ObjectId, seq: int, token: str) -> None:
        super().__init__(f"claim of task {task_id} (round {seq}) could not be confirmed")
        self.task_id, self.seq, self.token = task_id, seq, token


def runner_identity(gpu: str | None = None, runner_id: str | None = None) -> dict[str, Any]:
    host = socket.gethostname()
    return {"id": runner_id or f"{host}:{os.getpid()}:{uuid.uuid4().hex[:6]}", "host": host,
            "pid": os.getpid(), "gpu": gpu}


def retrying(call: Callable[[], T], deadline: float) -> T:
    """``call()``, retried on connection errors until ``deadline`` (monotonic seconds).

    Only for idempotent steps: a retry may find its first try already applied.
    """
    delay = 0.05
    while True:
        try:
            return call()
        except ConnectionFailure:
            if time.monotonic() + delay >= deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 1.0)


class ClaimBook:
    """Claims, leases and attempt endings for the tasks of one project."""

    def __init__(self, tasks: Collection, claims: Collection, project: Project, runs: AttemptRuns | None = None,
                 on_pending: Callable[[], None] | None = None) -> None:
        self._tasks = tasks
        self._claims = claims
        self.project = project
        self._runs = runs              # a run per attempt: closed here when attempts end
        self._on_pending = on_pending  # a task went back to pending: wake idle runners
        self._kept: dict[str, _Kept] = {}   # candidates kept: see claim_next
        self._lost_before: set[str] = set()  # rounds a patient claimer lost: see _lost_round
        self.contended = False  # the last claim_next lost races: there may be work left for a retry
        self.drained = False    # the last claim_next took the only pending task its fresh read saw
        self.spread_width = CANDIDATES_SPREAD  # candidates a spread read asks for: see expect_fleet
        self.fleet = 1                         # live runners claiming beside us, as last told
        self.rank: int | None = None           # our share of the queue in the fleet: see shares.py

    def expect_fleet(self, runners: int | None, rank: int | None = None) -> None:
        """Widen the spread window to fit ``runners`` live runners claiming from the same queue
        (it never narrows: each race lost widens it too); ``rank``: this runner's share of it."""
        if rank is not None:
            self.rank = rank
        width = max(CANDIDATES_SPREAD, min(CANDIDATES_SPREAD_MAX, CANDIDATES_PER_RUNNER * (runners or 0)))
        if runners:
            self.fleet = runners
        if runners and width > self.spread_width:
            self.spread_width = width
            self._kept.clear()  # read for the old width

    def _ended(self, task_id: ObjectId, seq: int, outcome: str, error: dict[str, Any] | None) -> None:
        if self._runs is None:
            return
        try:
            self._runs.close_attempt(task_id, seq, outcome, error)
        except Exception:  # the attempt's end is written; its run's status is a courtesy
            log.warning("could not close the run of task %s round %d", task_id, seq, exc_info=True)

    def ensure_indexes(self) -> None:
        self._claims.create_index([("task_id", ASCENDING)])

    # -- claiming ------------------------------------------------------------------------------
    def claim_next(self, query: dict[str, Any], runner: dict[str, Any], lease_seconds: float,
                   sort: list[tuple[str, int]] | None = None, spread: bool = False) -> Claim | None:
        """Claim the first pending task matching ``query`` (priority, then age), or return None.

        With ``spread`` (a runner in a fleet) the candidates of one read are kept for a moment
        (CANDIDATES_KEPT_SECONDS) and tried by this runner's next claims, its own share first
        (see shares.py), so a backlog costs one read per several claims: up to ``spread_width``
        for a runner alone; in a fleet, its share and a few more (KEPT_STALE). A kept candidate another runner
        took meanwhile loses its ticket, and the runner reads afresh (see LOSSES_PER_READ).
        ``contended`` tells afterwards whether races were lost while more tasks may be pending.
        Raises :class:`ClaimInDoubt` when the server stopped answering halfway through a claim.
        """
        t, _ = self._win_round(query, sort, runner, lease_seconds, spread)
        if t is None:
            return None
        try:
            doc = retrying(lambda: self._enter_running(t), t.deadline)
        except ConnectionFailure:
            raise ClaimInDoubt(t.task_id, t.seq + 1, t.token) from None
        if doc is None:  # deleted or cancelled since it was read: others may be pending
            self.contended = True
            return None
        return self._confirmed(t, doc)

    def _win_round(self, query: dict[str, Any], sort: list[tuple[str, int]] | None, runner: dict[str, Any],
                   lease_seconds: float, spread: bool, end: _Ticket | None = None) -> tuple[_Try | None, bool | None]:
        """Take the claim ticket of a pending task's next round: the try that won it, or None.

        Candidates are tried best first (``spread``: kept from a recent read, dealt out by shares.py);
        after races lost the candidates are read again, at most READS_PER_CLAIM times. ``end``, a
        ticket that ends the caller's current attempt, rides on the first ticket insert; the
        second value says whether it was won (None: no candidate, so it was never sent).
        """
        self.contended = False
        ended: bool | None = None
        reads = 0
        while reads < READS_PER_CLAIM:
            candidates, fresh = self._candidates(query, sort, spread)
            reads += fresh
            # A full read may leave more pending tasks beyond it; a short one showed them all.
            more = not fresh or len(candidates) >= (self.spread_width if spread else CANDIDATES_PER_CLAIM)
            lost = 0
            self.drained = fresh and len(candidates) == 1
            self.contended = self.contended and not fresh
            while candidates:
                t = _Try(candidates.pop(0), runner, lease_seconds, self.project.name)
                won, end_won = self._take_ticket(t, end if ended is None else None, patient=spread)
                ended = ended if end_won is None else end_won
                if won:
                    return t, ended
                lost += 1
                self.contended = more or self._worth_retrying(candidates)
                if spread and (not fresh or lost >= LOSSES_PER_READ):
                    self._kept.clear()  # others are claiming these right now: read what is left
                    break
            else:
                if fresh:
                    return None, ended  # every candidate of a fresh read was taken (or none was pending)
        return None, ended

    def _worth_retrying(self, untried: list[dict[str, Any]]) -> bool:
        """After a race lost: whether to look again soon for the ``untried`` candidates. In a fleet
        only for our own share: the others' tasks are their owners' next, or other helpers are
        after them (at the tail of a backlog, more runners than tasks); they need no more of us,
        as each winner looks for more as soon as its task ends."""
        if self.rank is None or self.fleet < 2:
            return bool(untried)
        return any(in_share(c["_id"], self.rank, self.fleet) for c in untried)

    def _candidates(self, query: dict[str, Any], sort: list[tuple[str, int]] | None,
                    spread: bool) -> tuple[list[dict[str, Any]], bool]:
        """Pending tasks to try, best first, and whether they were read just now (else kept from
        an earlier read, ``spread`` only). Claims pop what they try from the kept list."""
        key = _key(query, sort)
        kept = self._kept.get(key)
        if spread and kept is not None and kept.serves():
            return kept.candidates, False
        filter_ = self.project.scope({**query, "status": PENDING})
        limit = self.spread_width if spread else CANDIDATES_PER_CLAIM
        # batch_size: the whole window in the first reply (the default first batch is 101: a getMore)
        candidates = list(self._tasks.find(filter_, sort=sort or CLAIM_ORDER, limit=limit, batch_size=limit))
        if spread:
            candidates, own = deal(candidates, self.rank, self.fleet)
            kept_for = max(CANDIDATES_KEPT_SECONDS, KEPT_SECONDS_PER_RUNNER * self.fleet)
            # Our own share stays ours (others take from it last); of the rest, each other runner
            # takes about one between two of our claims.
            others = self.fleet - 1
            serves = len(candidates) if others < 1 else own + int((len(candidates) - own) * KEPT_STALE / others)
            self._kept = {key: _Kept(candidates, time.monotonic() + kept_for, serves)}
        return candidates, True

    def _take_ticket(self, t: _Try, end: _Ticket | None, patient: bool) -> tuple[bool, bool | None]:
        """Take the candidate's next round by its claim ticket (with ``end`` in the same insert):
        whether we won it, and whether we won ``end`` (None without one). The candidate document
        was read with the find, so a claim whose replies all arrive costs two commands: this
        ticket and the task update. ``patient``: see :meth:`_lost_round`."""
        tries = iter(range(1_000_000))
        end_won: bool | None = None
        try:
            if end is None:
                won = retrying(lambda: states.take_ticket(self._claims, t.ticket, t.token, retry=next(tries) > 0,
                                                          **t.ticket_fields), t.deadline)
            else:
                end_won, won = retrying(lambda: states.take_tickets(
                    self._claims, [end, (t.ticket, t.token, t.ticket_fields)], retry=(True, next(tries) > 0)),
                    t.deadline)
        except ConnectionFailure:
            raise ClaimInDoubt(t.task_id, t.seq + 1, t.token) from None
        if not won:
            self._lost_round(t, patient)  # someone else claimed (or cancelled) this round first
        return won, end_won

    def _enter_running(self, t: _Try) -> dict[str, Any] | None:
        """Move the task into ``running`` under our token, or adopt that an earlier try did."""
        change, claimed = _running_change(t)
        if states.apply_transitions(self._tasks, [change]) == 1:
            return claimed
        return self._adopt_or_abandon(t)

    def _adopt_or_abandon(self, t: _Try) -> dict[str, Any] | None:
        """Our move into ``running`` did not report landing: a lost reply (adopt what the server
        has), or the task was deleted, cancelled or skipped meanwhile (close the round)."""
        found = self._tasks.find_one({"_id": t.task_id})
        if found is None:  # deleted (perhaps after we read it as a candidate): drop the ticket we took
            self.forget(t.task_id)
            return None
        if found.get("status") == RUNNING and _lease_token(found) == t.token:
            return found
        states.take_ticket(self._claims, states.end_ticket(t.task_id, t.seq + 1), t.token, task_id=t.task_id,
                           by="claim-abandoned")
        return None

    def _confirmed(self, t: _Try, doc: dict[str, Any], run_opened: bool = False) -> Claim | None:
        """The claim, unless its round was skipped as stale while we were slow (``run_opened``:
        the claim opened the attempt's run, so starting it needs no write)."""
        claim = Claim(doc, t.seq + 1, t.token, t.runner, t.lease_seconds, doc[HUB]["run_id"] if run_opened else None)
        # A round is only ever skipped as stale STALE_TICKET after its ticket was taken: a
        # claim that got here well before that cannot have been skipped.
        slow = time.monotonic() - t.started > STALE_TICKET.total_seconds() / 2
        if slow and retrying(lambda: self._ended_by_other(claim), t.deadline):
            return None
        return claim

    def _lost_round(self, t: _Try, patient: bool) -> None:
        """Someone else holds the round we tried. Usually a live claimer, about to move the task
        on; but one that died between its ticket and its task update would block the task. A
        ``patient`` caller (a runner in a fleet, where lost races are common and cost a command
        each) looks into that only when it loses the same round a second time, since a live
        claimer's round is gone from the candidates by then."""
        if patient:  # a fleet's race: a wider window next time makes the next one less likely
            self.spread_width = min(CANDIDATES_SPREAD_MAX, self.spread_width + CANDIDATES_PER_LOSS)
        if patient and t.ticket not in self._lost_before:
            if len(self._lost_before) >= LOST_ROUNDS_KEPT:
                self._lost_before.clear()
            self._lost_before.add(t.ticket)
            return
        self._skip_stale_claim(t.task_id, t.seq, t.ticket, t.now)

    def _skip_stale_claim(self, task_id: ObjectId, seq: int, ticket: str, now: dt.datetime) -> None:
        """A claimer that died between its ticket and its update would block the task forever:
        past STALE_TICKET, move the task on to the next round (its old ticket then matches nothing)."""
        taken = self._claims.find_one({"_id": ticket}, {"taken_at": 1, "owner": 1})
        if taken is None or as_utc(taken["taken_at"]) >= now - STALE_TICKET:
            return
        # Ending the round by ticket first means a claimer that was only slow finds it ended and
        # backs off instead of running the task (see _try_claim), even where updates race.
        # Either way the round has an end ticket afterwards, so it is over and can be skipped.
        states.take_ticket(self._claims, states.end_ticket(task_id, seq + 1), uuid.uuid4().hex,
                           task_id=task_id, by="stale-claim")
        self._skip_round(task_id, seq, "a claimer took this round and never came back")

    def _skip_round(self, task_id: ObjectId, seq: int, reason: str) -> None:
        doc = self._tasks.find_one({"_id": task_id}, {f"{HUB}.history": 1})
        entry = states.history_entry("round_skipped", round=seq + 1, reason=reason)
        self._tasks.update_one({"_id": task_id, "status": PENDING, f"{HUB}.seq": seq},
                               {"$set": {f"{HUB}.seq": seq + 1, f"{HUB}.history": states.with_history(doc, entry)}})

    def settle(self, doubt: ClaimInDoubt) -> None:
        """Give back a round whose claim could not be confirmed, without charging an attempt."""
        doc = self._tasks.find_one({"_id": doubt.task_id})
        if doc is None:
            return
        seq = int(doc[HUB].get("seq", 0))
        end = states.end_ticket(doubt.task_id, doubt.seq)
        if doc.get("status") == RUNNING and seq == doubt.seq and _lease_token(doc) == doubt.token:
            if states.take_ticket(self._claims, end, doubt.token, task_id=doubt.task_id, by="runner"):
                reason = "lost round: the runner lost the server's replies while claiming it"
                self._end(doc, seq, Outcome("handed_back", reason=reason), token=doubt.token)
            return
        mine = self._claims.find_one({"_id": states.claim_ticket(doubt.task_id, doubt.seq),
                                      "owner": doubt.token}, {"_id": 1})
        if doc.get("status") == PENDING and seq == doubt.seq - 1 and mine is not None:
            states.take_ticket(self._claims, end, doubt.token, task_id=doubt.task_id, by="lost-round")
            self._skip_round(doubt.task_id, seq, "lost round: the runner lost the server's replies")
            if self._runs is not None:  # a claim that ended another attempt may have opened its run
                self._runs.discard_attempt(doubt.task_id, doubt.seq)

    # -- leases --------------------------------------------------------------------------------
    def renewal_due(self, claim: Claim) -> bool:
        """True when the claim took long enough that its lease must be renewed (and its round
        checked) before the code starts."""
        return time.monotonic() - claim.claimed_at > claim.lease_seconds / 4

    def begin(self, claim: Claim) -> bool:
        """Record that the attempt's code is about to run (and renew the lease); False if lost.

        Until then an expired lease is a lost round, not a failed attempt.
        """
        now = utcnow()
        deadline = time.monotonic() + claim.lease_seconds / 4
        try:
            marked = retrying(lambda: self._claims.update_one(
                {"_id": claim.ticket, "owner": claim.token},
                {"$set": {"started_at": now, "heartbeat_at": now,
                          "expires_at": now + dt.timedelta(seconds=claim.lease_seconds)}}), deadline)
        except ConnectionFailure:
            raise ClaimInDoubt(claim.task_id, claim.seq, claim.token) from None
        return marked.matched_count == 1 and not self._ended_by_other(claim)

    def heartbeat(self, claim: Claim) -> bool:
        """Renew the lease; False once the attempt was ended by someone else (kill the task)."""
        now = utcnow()
        renewed = self._claims.update_one({"_id": claim.ticket, "owner": claim.token},
                                          {"$set": {"heartbeat_at": now,
                                                    "expires_at": now + dt.timedelta(seconds=claim.lease_seconds)}})
        if renewed.matched_count == 0:  # the ticket is gone: the task was deleted
            return False
        return not self._ended_by_other(claim)

    def _ended_by_other(self, claim: Claim) -> bool:
        ended = self._claims.find_one({"_id": states.end_ticket(claim.task_id, claim.seq)}, {"owner": 1})
        return ended is not None and ended.get("owner") != claim.token

    def reap_expired(self, now: dt.datetime | None = None) -> int:
        """Return running tasks whose lease expired to pending (or failed when out of attempts).

        Two queries for the whole project (running tasks, then their tickets by ``_id``). Safe to
        run from every runner at once: each expired attempt's end ticket has one winner.
        """
        now = now or utcnow()
        running = list(self._tasks.find(self.project.scope({"status": RUNNING}), {"code": 0}))
        if not running:
            return 0
        tickets = [states.claim_ticket(t["_id"], int(t[HUB].get("seq", 0))) for t in running]
        leases = {doc["_id"]: doc for doc in self._claims.find({"_id": {"$in": tickets}},
                                                               {"expires_at": 1, "started_at": 1})}
        expired = [(task, leases.get(ticket)) for task, ticket in zip(running, tickets, strict=True)
                   if leases.get(ticket) is None or as_utc(leases[ticket]["expires_at"]) <= now]
        pairs = [(task["_id"], int(task[HUB].get("seq", 0))) for task, _ in expired]
        started = self._runs.started_attempts(pairs) if self._runs is not None and pairs else set()
        return sum(self._reap(task, lease, now, pair in started) for (task, lease), pair
                   in zip(expired, pairs, strict=True))

    def _reap(self, task: dict[str, Any], lease: dict[str, Any] | None, now: dt.datetime,
              run_started: bool = False) -> bool:
        seq = int(task[HUB].get("seq", 0))
        if not states.take_ticket(self._claims, states.end_ticket(task["_id"], seq), uuid.uuid4().hex,
                                  task_id=task["_id"], by="reaper"):
            return self._finish_stale_end(task, seq, now)
        runner = (task[HUB].get("runner") or {}).get("id", "?")
        if lease is not None and lease.get("started_at") is None and not run_started:
            reason = f"lost round: runner {runner} claimed the task but never started it"
            return self._end(task, seq, Outcome("handed_back", reason=reason))
        error = {"type": "LeaseExpired",
                 "message": f"runner {runner} stopped renewing its lease (killed, crashed or cut off)"}
        return self._end(task, seq, Outcome("failed", error=error))

    def _finish_stale_end(self, task: dict[str, Any], seq: int, now: dt.datetime) -> bool:
        """Whoever took this attempt's end ticket died before writing the outcome: write it for them."""
        end = self._claims.find_one({"_id": states.end_ticket(task["_id"], seq)})
        if end is None or as_utc(end["taken_at"]) >= now - STALE_TICKET:
            return False
        if end.get("by") == "cancel":
            return self._mark_cancelled(task["_id"], seq)
        error = {"type": "OutcomeLost", "message": f"the attempt was ended by {end.get('by')} "
                 "but its outcome never reached the server"}
        return self._end(task, seq, Outcome("failed", error=error))

    # -- ending an attempt ---------------------------------------------------------------------
    def finish(self, claim: Claim, outcome: Outcome, extra_blob_ids: list[ObjectId] | None = None) -> bool:
        """Write the attempt's outcome if this claim still owns it; False if it lost the lease.

        Idempotent: after a lost reply, calling it again with the same claim answers True.
        """
        if not states.take_ticket(self._claims, states.end_ticket(claim.task_id, claim.seq), claim.token,
                                  task_id=claim.task_id, by="runner"):
            return False
        # While we hold the lease, nobody else writes the task (enders need the end ticket we now
        # hold), so the claimed document is still what the server has: no need to read it back.
        return self._write_end(claim, outcome, extra_blob_ids)

    def _ended_by_us(self, claim: Claim) -> bool:
        """Our outcome update did not report landing: did an earlier try of it land (a lost reply)?"""
        task = self._tasks.find_one({"_id": claim.task_id}, {f"{HUB}.ended_by": 1, f"{HUB}.lease": 1})
        return task is not None and _lease_token(task) is None and task[HUB].get("ended_by") == claim.token

    def finish_then_claim(self, claim: Claim, outcome: Outcome, extra_blob_ids: list[ObjectId] | None,
                          query: dict[str, Any], runner: dict[str, Any], lease_seconds: float,
                          sort: list[tuple[str, int]] | None = None) -> tuple[bool, Claim | None]:
        """:meth:`finish`, and claim the runner's next task in the same round trips.

        A runner with a backlog ends one attempt and starts the next at once, so both ride on the
        same commands: one insert takes this attempt's end ticket and the next task's claim ticket,
        one bulk update writes this outcome and moves the next task to ``running`` (this attempt's
        run is closed in between, as in :meth:`finish`). Each ticket is still won or lost on its
        own, so the guarantees are those of :meth:`finish` and :meth:`claim_next`. Returns whether
        the outcome was written, and the new claim or None. Raises :class:`ClaimInDoubt` for the
        new claim if the server stopped answering (calling again then writes the outcome).
        """
        end: _Ticket = (states.end_ticket(claim.task_id, claim.seq), claim.token,
                        {"task_id": claim.task_id, "by": "runner"})
        t, ended = self._win_round(query, sort, runner, lease_seconds, spread=True, end=end)
        if t is None:  # nothing to claim, or every race lost: end this attempt on its own
            if ended is None:
                return self.finish(claim, outcome, extra_blob_ids), None
            return ended and self._write_end(claim, outcome, extra_blob_ids), None
        try:
            written, doc = retrying(lambda: self._end_and_enter(claim, outcome, extra_blob_ids, bool(ended), t),
                                    t.deadline)
        except ConnectionFailure:
            raise ClaimInDoubt(t.task_id, t.seq + 1, t.token) from None
        return written, None if doc is None else self._confirmed(t, doc, run_opened=True)

    def _end_and_enter(self, claim: Claim, outcome: Outcome, extra_blob_ids: list[ObjectId] | None, ended: bool,
                       t: _Try) -> tuple[bool, dict[str, Any] | None]:
        """Close the claim's run and open the next task's (one command), then write the claim's
        outcome (if we hold its end ticket) and move the next task into ``running`` (one bulk
        update); look at both tasks only when it reports a short count. Safe to repeat."""
        changes = []
        closing = None
        if ended:
            end_change, outcome = _end_change(claim.task, claim.seq, outcome, claim.token, extra_blob_ids)
            closing = (claim.task_id, claim.seq, outcome.status, outcome.error)
            changes.append(end_change)
        change, claimed = _running_change(t)
        if self._runs is not None:  # the runs first: who sees a task ended or running sees its run so
            self._runs.close_and_open(closing, claimed, t.seq + 1, t.runner)
        doc: dict[str, Any] | None = claimed
        if states.apply_transitions(self._tasks, changes + [change]) < len(changes) + 1:
            ended = ended and self._ended_by_us(claim)
            doc = self._adopt_or_abandon(t)
            if doc is None and self._runs is not None:
                self._runs.discard_attempt(t.task_id, t.seq + 1)
        if ended:
            self._wake_if_pending(changes[0])
        return ended, doc

    def _write_end(self, claim: Claim, outcome: Outcome, extra_blob_ids: list[ObjectId] | None) -> bool:
        """Write the outcome of a claim whose end ticket we hold (or an earlier try of ours wrote it)."""
        return self._end(claim.task, claim.seq, outcome, token=claim.token, extra_blob_ids=extra_blob_ids) \
            or self._ended_by_us(claim)

    def _end(self, task: dict[str, Any], seq: int, outcome: Outcome, token: str | None = None,
             extra_blob_ids: list[ObjectId] | None = None) -> bool:
        """The one place an attempt's outcome is written: status, result and times in one update."""
        change, outcome = _end_change(task, seq, outcome, token, extra_blob_ids)
        # The end ticket makes us the only party ending this attempt: close its run first, so a
        # reader who sees the task ended also sees its run ended.
        self._ended(task["_id"], seq, outcome.status, outcome.error)
        moved = states.apply_transitions(self._tasks, [change]) == 1
        if moved:
            self._wake_if_pending(change)
        return moved

    def _wake_if_pending(self, written: states.Change) -> None:
        """An attempt's written end put its task back to pending: wake idle runners."""
        if written.update["$set"]["status"] == PENDING and self._on_pending is not None:
            self._on_pending()

    def cancel_running(self, task: dict[str, Any]) -> bool:
        """End a running attempt as cancelled; its runner sees the ended lease and kills the process."""
        seq = int(task[HUB].get("seq", 0))
        if not states.take_ticket(self._claims, states.end_ticket(task["_id"], seq), uuid.uuid4().hex,
                                  task_id=task["_id"], by="cancel"):
            return False
        return self._mark_cancelled(task["_id"], seq)

    def _mark_cancelled(self, task_id: ObjectId, seq: int) -> bool:
        self._ended(task_id, seq, "cancelled", None)  # the run first, as in _end
        return states.transition(self._tasks, task_id, RUNNING, states.CANCELLED, {"seq": seq},
                                 {"finished_at": utcnow(), "lease": None})

    def cancel_pending(self, task: dict[str, Any]) -> bool:
        """Cancel a task nobody has claimed, by taking its next claim ticket ourselves."""
        seq = int(task[HUB].get("seq", 0))
        if not states.take_ticket(self._claims, states.claim_ticket(task["_id"], seq + 1), uuid.uuid4().hex,
                                  task_id=task["_id"], purpose="cancel"):
            return False
        return states.transition(self._tasks, task["_id"], PENDING, states.CANCELLED, {"seq": seq},
                                 {"seq": seq + 1, "finished_at": utcnow()})

    def cancelled_but_still_held(self, task: dict[str, Any]) -> bool:
        """True while a cancelled task's runner may not yet have noticed (its lease is still live)."""
        seq = int(task[HUB].get("seq", 0))
        lease = self.lease_of(task)
        if lease is None or lease.get("purpose") != "run" or as_utc(lease["expires_at"]) <= utcnow():
            return False
        return self._claims.find_one({"_id": states.end_ticket(task["_id"], seq), "by": "cancel"},
                                     {"_id": 1}) is not None

    def lease_of(self, task: dict[str, Any]) -> dict[str, Any] | None:
        """The lease document of a task's current round (heartbeat_at, expires_at, runner)."""
        return self._claims.find_one({"_id": states.claim_ticket(task["_id"], int(task[HUB].get("seq", 0)))})

    def forget(self, task_id: ObjectId) -> None:
        """Delete every ticket of a deleted task."""
        self._claims.delete_many({"task_id": task_id})


@dataclass
class _Kept:
    """The candidates of one spread read, kept for the runner's next claims (see _candidates)."""

    candidates: list[dict[str, Any]]
    until: float   # monotonic seconds
    claims: int    # how many later claims it may still serve

    def serves(self) -> bool:
        """Whether it may serve one more claim (counting that claim)."""
        if not self.candidates or self.claims <= 0 or time.monotonic() >= self.until:
            return False
        self.claims -= 1
        return True


@dataclass
class _Try:
    """One try at claiming a candidate: the round it takes, with its own token and lease."""

    candidate: dict[str, Any]
    runner: dict[str, Any]
    lease_seconds: float
    project: str | None
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    now: dt.datetime = field(default_factory=utcnow)
    started: float = field(default_factory=time.monotonic)
    run_id: ObjectId = field(default_factory=ObjectId)  # the attempt's run, if this try wins

    @property
    def task_id(self) -> ObjectId:
        return self.candidate["_id"]

    @property
    def seq(self) -> int:
        """The round the candidate was in when read; the claim takes the next one."""
        return int(self.candidate[HUB].get("seq", 0))

    @property
    def ticket(self) -> str:
        return states.claim_ticket(self.task_id, self.seq + 1)

    @property
    def deadline(self) -> float:
        return self.started + self.lease_seconds / 2

    @property
    def ticket_fields(self) -> dict[str, Any]:
        return {"task_id": self.task_id, "project": self.project, "seq": self.seq + 1, "purpose": "run",
                "runner": self.runner, "heartbeat_at": self.now,
                "expires_at": self.now + dt.timedelta(seconds=self.lease_seconds)}


def _running_change(t: _Try) -> tuple[states.Change, dict[str, Any]]:
    """The claim's move of a pending task into ``running``, and the task as it will then be.

    The attempt's run id is chosen here and stamped on the task with the previous one as its
    parent, so opening and closing the run later are one write each, with no lookups.
    """
    fields = {"seq": t.seq + 1, "lease": {"ticket": t.ticket, "token": t.token}, "runner": t.runner,
              "started_at": t.now, "finished_at": None, "run_id": t.run_id,
              "parent_run_id": t.candidate[HUB].get("run_id")}
    change = states.transition_change(t.task_id, PENDING, RUNNING, guard={"seq": t.seq}, set_fields=fields,
                                      inc={"attempts": 1})
    claimed = copy.deepcopy(t.candidate)  # what the update makes of it, without reading it back
    claimed["status"] = RUNNING
    claimed[HUB].update(fields, attempts=int(t.candidate[HUB].get("attempts", 0)) + 1)
    return change, claimed


def _end_change(task: dict[str, Any], seq: int, outcome: Outcome, token: str | None,
                extra_blob_ids: list[ObjectId] | None) -> tuple[states.Change, Outcome]:
    """The update that writes an attempt's outcome (status, result, times, failures), and the
    outcome as written (a hand-back past FREE_HAND_BACKS counts as a failure)."""
    hub, now = task[HUB], utcnow()
    started = hub.get("started_at")
    runner = (hub.get("runner") or {}).get("id")
    fields: dict[str, Any] = {"finished_at": now, "lease": None, "ended_by": token,
                              "duration_seconds": (now - as_utc(started)).total_seconds() if started else None}
    if outcome.output is not None:
        fields["output"] = outcome.output
    if extra_blob_ids is not None:
        fields["blob_ids"] = _code_blob_ids(hub) + list(extra_blob_ids)
    inc: dict[str, int] = {}
    attempts = int(hub.get("attempts", 0))
    if outcome.status == "handed_back" and int(hub.get("hand_backs", 0)) >= FREE_HAND_BACKS:
        outcome = Outcome("failed", output=outcome.output, error={
            "type": "HandedBackTooOften",
            "message": f"handed back {FREE_HAND_BACKS} times without finishing; this time it counts "
                       f"as an attempt (last reason: {outcome.reason})"})
    if outcome.status == "finished":
        target = states.FINISHED
        fields.update(result=outcome.result, error=None)
    elif outcome.status == "handed_back":
        target = PENDING  # not the task's fault: the round does not count as an attempt
        inc.update(attempts=-1, hand_backs=1)
        fields.update(finished_at=None, history=states.with_history(task, states.history_entry(
            "handed_back", attempt=attempts, runner=runner, reason=outcome.reason)))
    else:
        target = PENDING if attempts < int(hub.get("attempt_limit", 1)) else FAILED
        failure = {"attempt": attempts, "at": now, "runner": runner, **(outcome.error or {})}
        fields.update(error=outcome.error, failures=(list(hub.get("failures") or []) + [failure])[-FAILURES_KEPT:])
        if target == PENDING:
            fields["finished_at"] = None
    guard: dict[str, Any] = {"seq": seq}
    if token is not None:
        guard["lease.token"] = token
    return states.transition_change(task["_id"], RUNNING, target, guard, fields, inc or None), outcome


# A ticket to take beside a claim ticket: (ticket id, owner token, fields), as states.take_tickets takes.
_Ticket = tuple[str, str, dict[str, Any]]


def _key(query: dict[str, Any], sort: list[tuple[str, int]] | None) -> str:
    return repr((query, sort))


def _lease_token(doc: dict[str, Any]) -> str | None:
    return ((doc.get(HUB) or {}).get("lease") or {}).get("token")


def _code_blob_ids(hub: dict[str, Any]) -> list[ObjectId]:
    blob = (hub.get("code") or {}).get("blob")
    return [blob["id"]] if blob else []


__all__ = ["PROJECT_FIELD", "Claim", "ClaimBook", "ClaimInDoubt", "Outcome", "runner_identity"]
