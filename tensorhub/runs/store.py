"""The ``runs`` collection: one document per task attempt, or per session a script opens.

A run reads in Studio3T as::

    {run_name: "mnist", status: "finished", hyper_parameters: {n_units: 800},
     task_id, task_name: "mnist", attempt: 2, parent_run_id: <the attempt it continues>,
     runner: {id, host, pid, gpu}, started_at, ended_at, duration_seconds, error: null,
     epochs_done: 20, steps_done: 0, summary: {val_loss: {min, min_epoch, max, max_epoch, last}},
     datasets: [{dataset_name: "mnist", version: 3, sha256, id}], models: [{model_name, version, id, epoch}],
     log_status: {...}, <the user's keywords>,
     _hub: {project, created_at, kind: "task" | "script", seq}}

Task runs are opened when a runner confirms an attempt's start and closed by whoever ends the
attempt (the runner, a reaper, a cancellation): the task queue calls :meth:`RunStore.open_attempt`
and :meth:`RunStore.close_attempt`, passed in by the facade.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from tensorhub.connection import update_in_one
from tensorhub.errors import InvalidArgument, NotFound
from tensorhub.fields import (
    HUB,
    as_utc,
    build_query,
    clean_fields,
    normalize_sort,
    object_id,
    to_bson_value,
    utcnow,
    with_tiebreak,
)
from tensorhub.project import PROJECT_FIELD, Project
from tensorhub.runs import metrics

RUNNING, FINISHED, FAILED, HANDED_BACK, CANCELLED, LOST = (
    "running", "finished", "failed", "handed_back", "cancelled", "lost")
RESERVED = {key: "it is part of the run document; pass hyper_parameters= for settings" for key in (
    "run_name", "status", "hyper_parameters", "task_id", "task_name", "attempt", "parent_run_id", "runner",
    "started_at", "ended_at", "duration_seconds", "error", "epochs_done", "steps_done", "summary",
    "datasets", "models", "log_status")}
NEWEST_FIRST = [("_id", DESCENDING)]  # ObjectIds grow with insertion time
LOST_REASONS = ("LeaseExpired", "OutcomeLost")


class RunStore:
    """The runs of one project and their metrics."""

    def __init__(self, db: Database, project: Project) -> None:
        self._runs = db["runs"]
        self.metrics = db["run_metrics"]
        self.project = project

    def ensure_indexes(self) -> None:
        r, p = self._runs, PROJECT_FIELD
        for lead in ([p], [p, "run_name"], [p, "task_name"]):
            r.create_index([(k, ASCENDING) for k in lead] + [("_id", DESCENDING)])
        r.create_index([("task_id", ASCENDING), (f"{HUB}.seq", DESCENDING)])
        metrics.ensure_indexes(self.metrics)

    # -- opening and closing ---------------------------------------------------------------
    def create(self, run_name: str, hyper_parameters: Mapping[str, Any] | None = None, *, kind: str = "script",
               parent_run_id: ObjectId | None = None, task: Mapping[str, Any] | None = None,
               seq: int | None = None, runner: Mapping[str, Any] | None = None,
               fields: Mapping[str, Any] | None = None, run_id: ObjectId | None = None,
               insert: bool = True) -> dict[str, Any]:
        """Insert a new running run; returns its document (only built, not inserted, without ``insert``)."""
        if not isinstance(run_name, str) or not run_name:
            raise InvalidArgument(f"a run needs a name, got {run_name!r}")
        if hyper_parameters is not None and not isinstance(hyper_parameters, Mapping):
            raise InvalidArgument(f"hyper_parameters must be a dict, got {type(hyper_parameters).__name__}")
        now = utcnow()
        doc: dict[str, Any] = {
            "_id": run_id or ObjectId(), "run_name": run_name, "status": RUNNING,
            "hyper_parameters": to_bson_value(dict(hyper_parameters or {}), "hyper_parameters"),
            "task_id": task["_id"] if task else None, "task_name": task.get("task_name") if task else None,
            "attempt": int(task[HUB].get("attempts", 0)) if task else None, "parent_run_id": parent_run_id,
            "runner": dict(runner) if runner else None, "started_at": now, "ended_at": None,
            "duration_seconds": None, "error": None, "epochs_done": 0, "steps_done": 0, "summary": {},
            "datasets": [], "models": [], "log_status": {},
            **clean_fields(fields or {}, RESERVED, RESERVED),
            HUB: self.project.stamp(created_at=now, kind=kind, seq=seq)}
        if insert:
            self._runs.insert_one(doc)
        return doc

    def open_attempt(self, task: Mapping[str, Any], seq: int, runner: Mapping[str, Any]) -> ObjectId:
        """Insert the run of a task attempt that is about to start (one write: the claim chose its
        id and stamped the previous attempt's run on the task as its parent). Safe to retry."""
        doc = self._attempt_document(task, seq, runner)
        try:
            self._runs.insert_one(doc)
        except DuplicateKeyError:  # a retry whose first insert landed (its reply was lost): it is open
            pass
        return doc["_id"]

    def close_and_open(self, closing: tuple[ObjectId, int, str, Mapping[str, Any] | None] | None,
                       task: Mapping[str, Any], seq: int, runner: Mapping[str, Any]) -> ObjectId:
        """Close one attempt's run (``closing``: task id, round, outcome, error) and open the run
        of the next, as :meth:`close_attempt` then :meth:`open_attempt` would, in one command (a
        runner that ends one task and starts the next). Safe to retry: the close is conditional,
        the open an upsert that leaves an existing run alone."""
        doc = self._attempt_document(task, seq, runner)
        writes = [] if closing is None else [(*_close_update(*closing), False)]
        writes.append(({"_id": doc["_id"]}, {"$setOnInsert": {k: v for k, v in doc.items() if k != "_id"}}, True))
        update_in_one(self._runs, writes)
        return doc["_id"]

    def discard_attempt(self, task_id: ObjectId, seq: int) -> None:
        """Delete the run opened for an attempt whose claim fell through before its code started
        (the task was deleted or cancelled in between): it never ran."""
        self._runs.delete_one({"task_id": task_id, f"{HUB}.seq": seq, "status": RUNNING})

    def _attempt_document(self, task: Mapping[str, Any], seq: int, runner: Mapping[str, Any]) -> dict[str, Any]:
        hub = task[HUB]
        return self.create(str(task.get("task_name")), task.get("hyper_parameters"), kind="task",
                           parent_run_id=hub.get("parent_run_id"), task=task, seq=seq, runner=runner,
                           run_id=hub.get("run_id"), insert=False)

    def started_attempts(self, attempts: list[tuple[ObjectId, int]]) -> set[tuple[ObjectId, int]]:
        """Which (task id, round) attempts have a run, i.e. were started (one query)."""
        wanted = set(attempts)
        found = self._runs.find({"task_id": {"$in": list({t for t, _ in attempts})}}, {"task_id": 1, f"{HUB}.seq": 1})
        return {(doc["task_id"], doc[HUB].get("seq")) for doc in found} & wanted

    def close_attempt(self, task_id: ObjectId, seq: int, outcome: str, error: Mapping[str, Any] | None) -> None:
        """Close the run of an ended task attempt with the attempt's outcome (one conditional
        update; a run already closed, or never opened, matches nothing)."""
        self._runs.update_one(*_close_update(task_id, seq, outcome, error))

    def close(self, run_id: ObjectId, status: str, error: Mapping[str, Any] | None = None) -> bool:
        """End a running run (a no-op for one already closed)."""
        doc = self._runs.find_one({"_id": run_id}, {"started_at": 1, "status": 1})
        if doc is None or doc.get("status") != RUNNING:
            return False
        now = utcnow()
        started = doc.get("started_at")
        duration = (now - as_utc(started)).total_seconds() if started else None
        return self._runs.update_one({"_id": run_id, "status": RUNNING}, {"$set": {
            "status": status, "ended_at": now, "duration_seconds": duration,
            "error": dict(error) if error else None}}).matched_count == 1

    # -- what happens during a run ---------------------------------------------------------
    def record_dataset(self, run_id: ObjectId, entry: Mapping[str, Any]) -> None:
        self._runs.update_one({"_id": run_id}, {"$addToSet": {"datasets": dict(entry)}})

    def record_model(self, run_id: ObjectId, entry: Mapping[str, Any]) -> None:
        self._runs.update_one({"_id": run_id}, {"$push": {"models": dict(entry)}})

    def set_progress(self, run_id: ObjectId, fields: Mapping[str, Any]) -> None:
        """Epochs/steps done, metric summaries, status values: written by the run's one writer."""
        self._runs.update_one({"_id": run_id}, {"$set": dict(fields)})

    # -- reading -----------------------------------------------------------------------------
    def get(self, run_id: ObjectId | str) -> dict[str, Any]:
        doc = self._runs.find_one(self.project.scope({"_id": _oid(run_id)}))
        if doc is None:
            raise NotFound(f"no run {run_id} in project {self.project.name!r}")
        return doc

    def find(self, run_name: str | None = None, task_name: str | None = None, sort: Any = None,
             limit: int = 0, projection: Mapping[str, Any] | None = None, /, **filters: Any) -> list[dict[str, Any]]:
        """Runs matching ``filters``; ``projection`` (pymongo's) reads only some fields of each."""
        query = self.project.scope(build_query(filters, {PROJECT_FIELD}))
        if run_name is not None:
            query["run_name"] = run_name
        if task_name is not None:
            query["task_name"] = task_name
        order = normalize_sort(sort)
        return list(self._runs.find(query, None if projection is None else dict(projection),
                                    sort=NEWEST_FIRST if order is None else with_tiebreak(order), limit=limit))

    def of_task(self, task_id: ObjectId) -> list[dict[str, Any]]:
        """Every run of one task, first attempt first."""
        return list(self._runs.find({"task_id": task_id}, sort=[("task_id", ASCENDING), (f"{HUB}.seq", ASCENDING)]))

    def ancestors(self, doc: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The runs this one continues, nearest first."""
        chain, seen = [], {doc["_id"]}
        parent = doc.get("parent_run_id")
        while parent is not None and parent not in seen:
            found = self._runs.find_one({"_id": parent})
            if found is None:
                break
            chain.append(found)
            seen.add(parent)
            parent = found.get("parent_run_id")
        return chain


def _close_update(task_id: ObjectId, seq: int, outcome: str,
                  error: Mapping[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The filter and update that close an attempt's run with the attempt's outcome."""
    status = {"finished": FINISHED, "handed_back": HANDED_BACK, "cancelled": CANCELLED}.get(outcome, FAILED)
    if error and error.get("type") in LOST_REASONS:
        status = LOST
    return ({"task_id": task_id, f"{HUB}.seq": seq, "status": RUNNING},
            {"$set": {"status": status, "ended_at": utcnow(), "error": dict(error) if error else None}})


def _oid(value: ObjectId | str) -> ObjectId:
    return object_id(value, "run id")
