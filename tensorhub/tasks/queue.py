"""The task collection: create, read, wait, cancel, requeue, delete (the distributor's side), and
claim, heartbeat, finish (the runner's side, through :class:`~tensorhub.tasks.claims.ClaimBook`).

This package owns the ``tasks`` and ``task_claims`` collections and every query on them; callers
(the facade, the runner) use these methods. The document layout is described in ``model.py``.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING
from pymongo.database import Database
from pymongo.errors import ConnectionFailure, DuplicateKeyError

from tensorhub import defaults
from tensorhub.blobs import BlobStore
from tensorhub.errors import InvalidArgument, NotFound, WaitTimeout
from tensorhub.fields import (
    HUB,
    as_utc,
    build_query,
    normalize_sort,
    object_id,
    utcnow,
    with_tiebreak,
)
from tensorhub.project import PROJECT_FIELD, Project
from tensorhub.tasks import states
from tensorhub.tasks.attempt_runs import AttemptRuns
from tensorhub.tasks.claims import Claim, ClaimBook, ClaimInDoubt, Outcome, retrying
from tensorhub.tasks.create import Script, TaskSpec, task_document
from tensorhub.tasks.model import Task
from tensorhub.tasks.states import ACTIVE, CANCELLED, DONE, FAILED, FINISHED, PENDING, RUNNING

NOT_QUERYABLE = frozenset({PROJECT_FIELD, f"{HUB}.code", f"{HUB}.lease"})
SUMMARY_PROJECTION = {f"{HUB}.code.source": 0}
OLDEST_FIRST = [("_id", ASCENDING)]  # ObjectIds grow with insertion time
OUTPUT_LOG_LIMIT = 32 * 1024 * 1024  # a chatty task must not stall its runner's loop on upload
NEEDS_PICKLE = f"{HUB}.needs_pickle"
# The change-stream filter: a task was inserted, or an update set its status to pending.
PENDING_CHANGES = [{"$match": {"$or": [{"operationType": "insert"},
                                       {"updateDescription.updatedFields.status": PENDING}]}}]


@dataclass(frozen=True)
class ClaimRequest:
    """What a runner's slot claims: :meth:`TaskQueue.claim_next`'s arguments, kept together."""

    runner: dict[str, Any]
    lease_seconds: float = defaults.LEASE_SECONDS
    task_name: str | None = None
    query: Mapping[str, Any] | None = None
    allow_pickle: bool = False


@dataclass(frozen=True)
class QueueSignal:
    """One poll of the queue: see :meth:`TaskQueue.poll`."""

    token: Any                # changes whenever a task becomes pending (None before any was queued)
    taken: Any                # the last token whose work a runner took (see mark_taken)
    reap_due: bool            # the fleet's reaping interval is over: see reap_turn
    fleet_size: int | None    # live runners, as the last reaper counted them


class TaskQueue:
    """The tasks of one project (claims live in ``task_claims``).

    >>> from tensorhub.tasks.claims import runner_identity
    >>> _ = hub.create_task("q", source="x = 1")
    >>> claim = hub.queue.claim_next(runner_identity(), lease_seconds=60, task_name="q")
    >>> claim.attempt, hub.queue.begin(claim), hub.queue.heartbeat(claim)
    (1, True, True)
    """

    def __init__(self, db: Database, blobs: BlobStore, project: Project, runs: AttemptRuns | None = None) -> None:
        """``runs`` is told when attempts start and end (the facade passes its run store, which
        keeps a run per attempt; this package knows nothing of runs beyond that)."""
        self._tasks = db["tasks"]
        self._signals = db["task_signals"]
        self._blobs = blobs
        self.project = project
        self._runs = runs
        self._book = ClaimBook(self._tasks, db["task_claims"], project, runs, self.wake_runners)

    def ensure_indexes(self) -> None:
        c, p = self._tasks, PROJECT_FIELD
        for lead in ([p, "status"], [p, "task_name", "status"]):
            keys = [(k, ASCENDING) for k in lead] + [(NEEDS_PICKLE, ASCENDING)]
            c.create_index(keys + [(f"{HUB}.priority", DESCENDING), ("_id", ASCENDING)])   # claims
            c.create_index(keys + [("time", DESCENDING), ("_id", DESCENDING)])             # TensorLayer's sort
        for lead in ([p], [p, "task_name"], [p, "status"], [p, "task_name", "status"], [p, "task_name", "time"]):
            c.create_index([(k, ASCENDING) for k in lead] + [("_id", ASCENDING)])       # listings, oldest first
        c.create_index([(f"{HUB}.blob_ids", ASCENDING)])
        self._book.ensure_indexes()

    # -- creating ------------------------------------------------------------------------------
    def create(self, task_name: str, script: Script = None, hyper_parameters: Mapping[str, Any] | None = None,
               saved_result_keys: Iterable[str] | str | None = None, *, source: str | None = None,
               function: Callable[..., Any] | None = None, priority: float = 0,
               max_attempts: int = defaults.MAX_ATTEMPTS, timeout: float | None = None,
               **kwargs: Any) -> ObjectId:
        """Queue one task (see :meth:`TensorHub.create_task <tensorhub.hub.TensorHub.create_task>`)."""
        spec = TaskSpec.checked(task_name, script, source=source, function=function,
                                saved_result_keys=saved_result_keys, priority=priority,
                                max_attempts=max_attempts, timeout=timeout)
        return self.create_many(spec, [(hyper_parameters, kwargs)])[0]

    def create_many(self, spec: TaskSpec, variants: Sequence[tuple[Mapping[str, Any] | None, Mapping[str, Any]]]
                    ) -> list[ObjectId]:
        """Queue one task per ``(hyper_parameters, fields)`` variant, all sharing ``spec``: one
        insert (pymongo splits it only past the server's batch limits) and one wake-up, however
        large the sweep. Every document is built and checked before the insert.

        >>> spec = TaskSpec.checked("sweep", source="acc = n / 10", saved_result_keys="acc")
        >>> ids = hub.queue.create_many(spec, [({"n": n}, {}) for n in range(3)])
        >>> [t.hyper_parameters["n"] for t in hub.find_tasks("sweep")]
        [0, 1, 2]
        """
        shared = spec.script_code()
        docs: list[dict[str, Any]] = []
        written: list[ObjectId] = []  # function blobs, each owned by one task once it is in
        try:
            for params, fields in variants:
                code = shared
                if code is None:
                    code = spec.function_code(self._blobs)
                    written.append(code["blob"]["id"])
                docs.append(task_document(spec, self.project, code, params, fields))
            if docs:
                self._tasks.insert_many(docs, ordered=True)
        except BaseException:
            self._release_unqueued(written, [doc["_id"] for doc in docs if "_id" in doc])
            raise
        if docs:
            self.wake_runners()
        return [doc["_id"] for doc in docs]

    def _release_unqueued(self, blob_ids: list[ObjectId], task_ids: list[ObjectId]) -> None:
        """After a failed create: delete the function blobs that no queued task points at."""
        if not blob_ids:
            return
        with contextlib.suppress(ConnectionFailure):
            kept = self.referenced(blob_ids) if task_ids else set()
            self._blobs.delete([b for b in blob_ids if b not in kept])

    # -- reading -------------------------------------------------------------------------------
    def query(self, task_name: str | None, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        query = self.project.scope(build_query(kwargs, NOT_QUERYABLE))
        if task_name is not None:
            query["task_name"] = task_name
        return query

    def find(self, task_name: str | None = None, sort: Any = None, limit: int = 0,
             include_code: bool = False, skip: int = 0, /, **kwargs: Any) -> list[Task]:
        """Matching tasks, oldest first unless ``sort`` says otherwise; ``skip`` and ``limit`` page
        through them (0: no limit)."""
        order = normalize_sort(sort)
        order = OLDEST_FIRST if order is None else with_tiebreak(order)
        cursor = self._tasks.find(self.query(task_name, kwargs), None if include_code else SUMMARY_PROJECTION,
                                  sort=order, limit=_count(limit, "limit"), skip=_count(skip, "skip"))
        return [Task.from_doc(doc) for doc in cursor]

    def get(self, task_id: ObjectId | str, include_code: bool = False) -> Task:
        doc = self._tasks.find_one(self.project.scope({"_id": _oid(task_id)}),
                                   None if include_code else SUMMARY_PROJECTION)
        if doc is None:
            raise NotFound(f"no task {task_id} in project {self.project.name!r}")
        return Task.from_doc(doc)

    def counts(self, task_name: str | None = None, /, **kwargs: Any) -> dict[str, int]:
        """``{"pending": 2, "running": 1, "finished": 5, "failed": 0, "cancelled": 0}``"""
        counts = dict.fromkeys(states.STATES, 0)
        pipeline = [{"$match": self.query(task_name, kwargs)}, {"$group": {"_id": "$status", "n": {"$sum": 1}}}]
        for row in self._tasks.aggregate(pipeline):
            counts[row["_id"]] = int(row["n"])
        return counts

    def has_unfinished(self, task_name: str | None = None, /, **kwargs: Any) -> bool:
        query = self.query(task_name, kwargs)
        query["status"] = {"$in": list(ACTIVE)}
        return self._tasks.find_one(query, {"_id": 1}) is not None

    def wait(self, task_name: str | None = None, timeout: float | None = None,
             poll_interval: float = defaults.WAIT_POLL_INTERVAL, progress: bool = True,
             /, **kwargs: Any) -> dict[str, int]:
        """Block until no matching task is pending or running; return the final counts."""
        from tqdm import tqdm

        deadline = None if timeout is None else time.monotonic() + timeout
        bar = None
        try:
            while True:
                self._book.reap_expired()  # no runner left alive must not mean waiting forever
                counts = self.counts(task_name, **kwargs)
                done, total = sum(counts[s] for s in DONE), sum(counts.values())
                if progress:
                    bar = bar or tqdm(total=total, desc=f"tasks {task_name or ''}".strip(), unit="task")
                    bar.total, bar.n = total, done
                    bar.set_postfix(running=counts[RUNNING], failed=counts[FAILED], refresh=False)
                    bar.refresh()
                if done == total:
                    return counts
                if deadline is not None and time.monotonic() >= deadline:
                    raise WaitTimeout(f"{total - done} of {total} tasks still unfinished after {timeout}s: {counts}")
                time.sleep(poll_interval)
        finally:
            if bar is not None:
                bar.close()

    def summary(self) -> list[dict[str, Any]]:
        """Per task name: how many tasks are in each status, and the oldest pending one's creation.

        One aggregation for the counts, then one indexed lookup per task name with pending tasks
        (FerretDB v1 has no ``$min`` accumulator).
        """
        pipeline = [{"$match": self.project.scope()},
                    {"$group": {"_id": {"task_name": "$task_name", "status": "$status"}, "n": {"$sum": 1}}}]
        rows: dict[Any, dict[str, Any]] = {}
        for group in self._tasks.aggregate(pipeline):
            name = group["_id"].get("task_name")
            row = rows.setdefault(name, {"task_name": name, **dict.fromkeys(states.STATES, 0),
                                         "oldest_pending": None})
            row[group["_id"]["status"]] = int(group["n"])
        for name, row in rows.items():
            if row[PENDING]:
                oldest = self._tasks.find_one(self.project.scope({"task_name": name, "status": PENDING}),
                                              {f"{HUB}.created_at": 1}, sort=[("_id", ASCENDING)])
                row["oldest_pending"] = None if oldest is None else oldest[HUB]["created_at"]
        return [rows[name] for name in sorted(rows, key=str)]

    def output(self, task_id: ObjectId | str) -> str:
        """The full stdout/stderr of a task's last attempt that ran on a runner."""
        task = self.get(task_id)
        output = task.output or {}
        log = output.get("log")
        if not log and output.get("whole"):
            return str(output.get("tail") or "")  # short enough to be kept whole in the document
        if not log:
            raise NotFound(f"task {task_id} has no stored output (not run by a runner yet?)")
        return self._blobs.read_bytes(log["id"]).decode("utf-8", errors="replace")

    def referenced(self, blob_ids: Sequence[ObjectId]) -> set[ObjectId]:
        """Which of ``blob_ids`` tasks (any project) reference: code of function tasks, output logs."""
        wanted, found = set(blob_ids), set()
        for doc in self._tasks.find({f"{HUB}.blob_ids": {"$in": list(blob_ids)}}, {f"{HUB}.blob_ids": 1}):
            found.update(wanted.intersection(doc[HUB].get("blob_ids", [])))
        return found

    # -- changing ------------------------------------------------------------------------------
    def cancel(self, task_name: str | None = None, /, **kwargs: Any) -> int:
        """Cancel pending and running tasks; a running one is killed by its runner within a heartbeat."""
        query = self.query(task_name, kwargs)
        query["status"] = {"$in": list(ACTIVE)}
        return sum(self._cancel_one(task["_id"]) for task in self._tasks.find(query, {"_id": 1}))

    def _cancel_one(self, task_id: ObjectId) -> bool:
        # A claim may race us: if we lose a ticket, read the task again and try its new state.
        for attempt in range(8):
            if attempt:
                time.sleep(0.02 * 2 ** attempt)
            task = self._tasks.find_one({"_id": task_id}, {"status": 1, f"{HUB}.seq": 1})
            if task is None or task["status"] not in ACTIVE:
                return False
            if task["status"] == PENDING and self._book.cancel_pending(task):
                return True
            if task["status"] == RUNNING and self._book.cancel_running(task):
                return True
        return False

    def requeue(self, task_name: str | None = None, statuses: Iterable[str] = (FAILED,), /, **kwargs: Any) -> int:
        """Put failed (or given-status) tasks back to pending with a fresh attempt budget."""
        wanted = [statuses] if isinstance(statuses, str) else list(statuses)
        for status in wanted:
            if status not in DONE:
                raise InvalidArgument(f"only {', '.join(DONE)} tasks can be requeued, not {status!r}")
        query = self.query(task_name, kwargs)
        query["status"] = {"$in": wanted}
        count = 0
        for task in self._tasks.find(query, {"status": 1, f"{HUB}.attempts": 1, f"{HUB}.max_attempts": 1,
                                             f"{HUB}.seq": 1, f"{HUB}.history": 1}):
            if self._book.cancelled_but_still_held(task):
                continue  # just cancelled: its runner has not let go yet (at most one lease)
            hub = task[HUB]
            entry = states.history_entry("requeued", previous_status=task["status"])
            count += states.transition(
                self._tasks, task["_id"], task["status"], PENDING, {"seq": hub.get("seq", 0)},
                {"attempt_limit": int(hub.get("attempts", 0)) + int(hub.get("max_attempts", 1)),
                 "finished_at": None, "result": None, "error": None,
                 "history": states.with_history(task, entry)})
        if count:
            self.wake_runners()
        return count

    def delete(self, task_name: str | None = None, /, **kwargs: Any) -> int:
        """Delete matching tasks (running ones are cancelled first), their claims and blobs."""
        count = 0
        for task in self._tasks.find(self.query(task_name, kwargs), {"status": 1}):
            if task["status"] in ACTIVE:
                self._cancel_one(task["_id"])
            doc = self._tasks.find_one_and_delete({"_id": task["_id"]})  # no projection: FerretDB v1 has none here
            if doc is None:
                continue
            self._book.forget(task["_id"])
            self._blobs.delete(doc[HUB].get("blob_ids", []))
            count += 1
        return count

    # -- the runner's side ---------------------------------------------------------------------
    def claim_next(self, runner: dict[str, Any], lease_seconds: float = defaults.LEASE_SECONDS,
                   task_name: str | None = None, query: Mapping[str, Any] | None = None,
                   allow_pickle: bool = False, sort: Any = None, spread: bool = False) -> Claim | None:
        """Claim the top runnable pending task (priority, then age, unless ``sort``), or None.

        Function tasks (dill) are only claimed with ``allow_pickle``; ``spread`` (for fleets of
        runners) picks among the top candidates at random, so runners rarely race for one. Raises
        :class:`~tensorhub.tasks.claims.ClaimInDoubt` if the server stopped answering mid-claim.
        """
        order = normalize_sort(sort)
        return self._book.claim_next(self._claim_filter(task_name, query, allow_pickle), runner, lease_seconds,
                                     None if order is None else with_tiebreak(order), spread=spread)

    @property
    def contended(self) -> bool:
        """Whether the last claim lost races to other runners (so pending tasks may be left)."""
        return self._book.contended

    @property
    def drained(self) -> bool:
        """Whether the last claim took the only pending task its fresh read saw."""
        return self._book.drained

    def finish_then_claim(self, claim: Claim, outcome: Outcome, log_ref: dict[str, Any] | None,
                          request: ClaimRequest) -> tuple[bool, Claim | None]:
        """:meth:`finish`, then claim the next task as :meth:`claim_next` would (a runner's
        ``spread`` claim), sharing the round trips; returns (outcome written, new claim or None)."""
        filter_ = self._claim_filter(request.task_name, request.query, request.allow_pickle)
        return self._book.finish_then_claim(claim, outcome, _with_log(outcome, log_ref), filter_, request.runner,
                                            request.lease_seconds)

    @staticmethod
    def _claim_filter(task_name: str | None, query: Mapping[str, Any] | None, allow_pickle: bool) -> dict[str, Any]:
        filter_ = build_query(query or {}, NOT_QUERYABLE)
        if task_name is not None:
            filter_["task_name"] = task_name
        filter_[NEEDS_PICKLE] = {"$in": [False, True] if allow_pickle else [False]}
        return filter_

    def begin(self, claim: Claim) -> bool:
        """Mark the claimed attempt as started, just before its code runs; False if it was lost."""
        if (self._runs is None or self._book.renewal_due(claim)) and not self._book.begin(claim):
            return False
        runs = self._runs
        if runs is not None and claim.run_id is None:  # else the claim opened it (finish_then_claim)
            # The run's insert is the start mark: the reaper counts an attempt whose run exists. A
            # lost reply must not lose the claim with it (its run may be there): retried, or in doubt.
            deadline = time.monotonic() + claim.lease_seconds / 4
            try:
                claim.run_id = retrying(lambda: runs.open_attempt(claim.task, claim.seq, claim.runner), deadline)
            except ConnectionFailure:
                raise ClaimInDoubt(claim.task_id, claim.seq, claim.token) from None
        return True

    def heartbeat(self, claim: Claim) -> bool:
        """Renew the claim's lease; False once the attempt was ended elsewhere (stop the code)."""
        return self._book.heartbeat(claim)

    def finish(self, claim: Claim, outcome: Outcome, log_ref: dict[str, Any] | None = None) -> bool:
        """Write the attempt's outcome (fenced by the claim's token); False if the lease was lost."""
        return self._book.finish(claim, outcome, _with_log(outcome, log_ref))

    def settle(self, doubt: ClaimInDoubt) -> None:
        """Hand back a claim whose replies were lost, without charging an attempt."""
        self._book.settle(doubt)

    def reap_expired(self, now: dt.datetime | None = None) -> int:
        """Return tasks whose runner stopped renewing its lease (by ``now``); how many were returned."""
        return self._book.reap_expired(now)

    def reap_turn(self, interval_seconds: float, runner_id: str | None = None) -> bool:
        """Whether this caller should reap now: True for one runner of the fleet per interval.

        One conditional update of the project's reaper document (by ``_id``): the runner that
        finds the interval over moves it on and reaps; the others skip, so the fleet's reaping
        queries do not grow with its size. Where two still win (FerretDB's updates read then
        write), both reap, which is safe: each expired attempt's end ticket has one winner.
        """
        now = utcnow()
        try:
            turn = self._signals.update_one(
                {"_id": self._reaper_id(), "next_at": {"$lte": now}},
                {"$set": {"next_at": now + dt.timedelta(seconds=interval_seconds), "by": runner_id, "at": now}},
                upsert=True)
        except DuplicateKeyError:  # the document exists and its interval is not over: not our turn
            return False
        return turn.matched_count == 1 or turn.upserted_id is not None

    def note_fleet_size(self, runners: int, at_least: bool = False) -> None:
        """Record how many runners are alive (the reaper counts them), for idle runners' pacing;
        ``at_least``: a runner that just registered counted this many, so the fleet is no smaller
        (until the next reaper's count, which may be lower if runners left)."""
        self._signals.update_one({"_id": self._reaper_id()}, {"$max" if at_least else "$set": {"fleet_size": runners}})

    def expect_fleet(self, runners: int | None, rank: int | None = None) -> None:
        """Tell this runner's claims how many runners claim from the queue (None: unknown), and
        its ``rank`` in the runner registry: spread claims read a window that grows with the
        fleet and try this runner's share of it first, so that runners seldom race for one task."""
        self._book.expect_fleet(runners, rank)

    def poll(self) -> QueueSignal:
        """What an idle runner reads each poll, in one read of three small documents by ``_id``:
        the signal token, the token whose work a runner already took, and the reaper's schedule
        and fleet size."""
        ids = [self._signal_id(), self._taken_id(), self._reaper_id()]
        docs = {doc["_id"]: doc for doc in self._signals.find({"_id": {"$in": ids}})}
        signal, taken, reaper = docs.get(ids[0]) or {}, docs.get(ids[1]) or {}, docs.get(ids[2])
        due = reaper is None or as_utc(reaper["next_at"]) <= utcnow()
        return QueueSignal(signal.get("token"), taken.get("token"), due,
                           None if reaper is None else reaper.get("fleet_size"))

    def mark_taken(self, token: Any) -> None:
        """Say that the work signalled by ``token`` is taken: a runner that claimed the last pending
        task after seeing it, so the rest of an idle fleet need not look (one update by ``_id``;
        a newer token is never covered by it). Its own document: it cannot undo a newer signal."""
        self._signals.update_one({"_id": self._taken_id()}, {"$set": {"token": token, "at": utcnow()}}, upsert=True)

    def _taken_id(self) -> str:
        return f"taken/{self.project.name or ''}"

    def _reaper_id(self) -> str:
        return f"reaper/{self.project.name or ''}"

    def wake_runners(self) -> None:
        """Tell idle runners there may be work: a new token on the project's signal document.

        Idle runners read that one document by ``_id`` about once a second (a lookup every server
        pushes down), instead of querying the task collection; a token, not a counter, because a
        lost concurrent update still leaves a changed token.
        """
        self._signals.update_one({"_id": self._signal_id()}, {"$set": {"token": ObjectId(), "at": utcnow()}},
                                 upsert=True)

    def signal(self) -> Any:
        """The project's current signal token (None before any task was queued)."""
        doc = self._signals.find_one({"_id": self._signal_id()}, {"token": 1})
        return None if doc is None else doc.get("token")

    def _signal_id(self) -> str:
        return f"tasks/{self.project.name or ''}"  # "" is the project None (no project may be named "")

    def watch(self, **options: Any) -> Any:
        """A change stream of tasks becoming pending (MongoDB replica sets only): new tasks, retries,
        requeues — not every claim and finish, which would wake every runner for nothing."""
        return self._tasks.watch(PENDING_CHANGES, **options)

    def function_bytes(self, claim: Claim) -> bytes | None:
        """The dill bytes of a function task (None for scripts)."""
        code = claim.task[HUB]["code"]
        return self._blobs.read_bytes(code["blob"]["id"]) if code["kind"] == "function" else None

    def stored_log_id(self, task_id: ObjectId) -> Any:
        """The blob id of the output log the task document points at now (None if none)."""
        doc = self._tasks.find_one({"_id": task_id}, {f"{HUB}.output.log.id": 1})
        return (((doc or {}).get(HUB) or {}).get("output") or {}).get("log", {}).get("id")

    def store_output_log(self, path: str, task_id: ObjectId, attempt: int) -> dict[str, Any]:
        """Store a task's output log (its last OUTPUT_LOG_LIMIT bytes) as a blob."""
        with open(path, "rb") as src, self._blobs.open_writer(
                f"task-{task_id}-attempt-{attempt}.log", "text", kind="task-output") as out:
            size = src.seek(0, os.SEEK_END)
            src.seek(max(0, size - OUTPUT_LOG_LIMIT))
            if size > OUTPUT_LOG_LIMIT:
                out.write(f"[... first {size - OUTPUT_LOG_LIMIT} bytes dropped ...]\n".encode())
            while chunk := src.read(1024 * 1024):
                out.write(chunk)
        assert out.ref is not None
        return out.ref.to_doc()

    def delete_blobs(self, blob_ids: Iterable[ObjectId]) -> None:
        """Delete blobs the queue wrote and no document references (a superseded output log)."""
        self._blobs.delete(blob_ids)


def _with_log(outcome: Outcome, log_ref: dict[str, Any] | None) -> list[ObjectId] | None:
    """Point the outcome at its stored log; the blob ids the task then references beside its code."""
    if log_ref is None:
        return None
    outcome.output = {**(outcome.output or {}), "log": log_ref}
    return [log_ref["id"]]


def _oid(value: ObjectId | str) -> ObjectId:
    return object_id(value, "task id")


def _count(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidArgument(f"{name} must be a non-negative integer, got {value!r}")
    return value


__all__ = ["CANCELLED", "FAILED", "FINISHED", "PENDING", "RUNNING", "TaskQueue"]
