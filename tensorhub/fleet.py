"""The runner registry: the ``runners`` collection, one document per runner process.

A runner registers when it starts, renews its registration with its heartbeat (what each slot is
running, tasks done and failed), and records its clean exit. One that stops heartbeating is shown
as ``lost`` once its lease has passed, and entries that stopped or were lost long ago are deleted
by any runner's housekeeping. Task documents know nothing of this: the fleet view reads here.

    {_id: "gpu-box-1:4242:ab12cd", host: "gpu-box-1", pid: 4242, version: "0.1.0",
     gpus: ["0", "1"], slots: [{slot: 0, gpu: "0", task_id, task_name, since}, ...],
     task_filter: {task_name: "mnist"}, status: "running" | "stopped", started_at, heartbeat_at,
     stopped_at, lease_seconds: 60, tasks_done: 12, tasks_failed: 1, rank: 3, _hub: {project}}

``rank`` names the runner's share of the queue: a runner in a fleet tries the pending tasks of its
share first (see ``tasks/shares.py``), so that runners claiming at once seldom race for one task. A
runner takes the lowest rank no live runner holds when it registers (``ranks.py``).
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from pymongo import ASCENDING
from pymongo.database import Database

from tensorhub.fields import HUB, as_utc, to_bson_value, utcnow
from tensorhub.project import PROJECT_FIELD, Project
from tensorhub.ranks import RankBook

RUNNING, STOPPED, LOST = "running", "stopped", "lost"
FORGET_AFTER = dt.timedelta(days=7)   # stopped or lost runners stay visible this long


@dataclass(frozen=True)
class RunnerRecord:
    """One runner as the fleet view shows it; ``state`` is running, lost or stopped."""

    id: str
    host: str
    pid: int
    version: str
    gpus: list[str]
    slots: list[dict[str, Any]]
    task_filter: dict[str, Any]
    state: str
    started_at: dt.datetime | None
    heartbeat_at: dt.datetime | None
    heartbeat_age: float | None          # seconds since the last heartbeat
    tasks_done: int
    tasks_failed: int
    document: dict[str, Any] = field(repr=False, compare=False)


class Registration(NamedTuple):
    """What a runner learns when it registers."""

    rank: int   # its share of the queue: the lowest rank no live runner held
    live: int   # live runners of the project, itself included


class RunnerRegistry:
    """The runners of one project.

    >>> registry = RunnerRegistry(hub.db, Project("mnist"))
    >>> registry.register({"id": "box:1:a", "host": "box", "pid": 1}, slots=[None], lease_seconds=60)
    Registration(rank=0, live=1)
    >>> [(r.id, r.state) for r in registry.list()]
    [('box:1:a', 'running')]
    """

    def __init__(self, db: Database, project: Project) -> None:
        self._runners = db["runners"]
        self._ranks = RankBook(db, project)
        self._held: dict[str, int] = {}   # the ranks of the runners registered through this object
        self.project = project

    def ensure_indexes(self) -> None:
        self._runners.create_index([(PROJECT_FIELD, ASCENDING), ("_id", ASCENDING)])
        self._runners.create_index([(PROJECT_FIELD, ASCENDING), ("heartbeat_at", ASCENDING)])

    def register(self, identity: Mapping[str, Any], *, slots: Sequence[str | None], lease_seconds: float,
                 version: str = "", task_filter: Mapping[str, Any] | None = None) -> Registration:
        """Add the runner to the registry, with a rank that no live runner (alive within
        ``lease_seconds``) holds. Four commands: the registration, one indexed read of the live
        runners, the rank's ticket, the rank in the registration. Runners registering together
        that have no rank yet take the free ranks in the order they registered in."""
        now = utcnow()
        me = str(identity["id"])
        gpus = [gpu for gpu in slots if gpu is not None]
        self._runners.insert_one({
            "_id": identity["id"], "host": identity.get("host"), "pid": identity.get("pid"), "version": version,
            "gpus": gpus, "slots": [_slot(i, gpu) for i, gpu in enumerate(slots)],
            "task_filter": to_bson_value(dict(task_filter or {}), "task_filter"), "status": RUNNING,
            "started_at": now, "heartbeat_at": now, "stopped_at": None, "lease_seconds": lease_seconds,
            "tasks_done": 0, "tasks_failed": 0, "rank": None, HUB: self.project.stamp()})
        live = [doc for doc in self._runners.find(
            self.project.scope({"heartbeat_at": {"$gte": now - dt.timedelta(seconds=lease_seconds)}}),
            {"rank": 1, "status": 1, "started_at": 1}) if doc.get("status") == RUNNING]
        held = {doc["rank"] for doc in live if doc.get("rank") is not None}
        waiting = [str(doc["_id"]) for doc in sorted(
            (doc for doc in live if doc.get("rank") is None), key=lambda d: (as_utc(d["started_at"]), str(d["_id"])))]
        alive = {str(doc["_id"]) for doc in live}
        rank = self._ranks.take(me, held=held, alive=alive.__contains__, lease_seconds=lease_seconds,
                                position=waiting.index(me) if me in waiting else 0)
        self._runners.update_one({"_id": identity["id"]}, {"$set": {"rank": rank}})
        self._held[me] = rank
        return Registration(rank, max(1, len(live)))

    def heartbeat(self, runner_id: str, slots: Sequence[Mapping[str, Any]], done: int, failed: int) -> None:
        """One update by ``_id``: alive, what each slot runs, the counters."""
        self._runners.update_one({"_id": runner_id}, {"$set": {
            "heartbeat_at": utcnow(), "slots": [dict(s) for s in slots], "tasks_done": done,
            "tasks_failed": failed, "status": RUNNING}})

    def exited(self, runner_id: str, done: int, failed: int) -> None:
        """Record a clean exit, and give the runner's rank back for the next runner to take."""
        now = utcnow()
        self._runners.update_one({"_id": runner_id}, {"$set": {
            "status": STOPPED, "stopped_at": now, "heartbeat_at": now, "tasks_done": done,
            "tasks_failed": failed, "slots": []}})
        if runner_id in self._held:
            self._ranks.give_back(self._held.pop(runner_id), runner_id)

    def list(self, now: dt.datetime | None = None) -> list[RunnerRecord]:
        """Every registered runner of the project, running ones first, then by host."""
        now = now or utcnow()
        cursor = self._runners.find(self.project.scope(), sort=[(PROJECT_FIELD, ASCENDING), ("_id", ASCENDING)])
        records = [self._record(doc, now) for doc in cursor]
        order = {RUNNING: 0, LOST: 1, STOPPED: 2}
        return sorted(records, key=lambda r: (order[r.state], r.host, r.id))

    def live_count(self, within: dt.timedelta = dt.timedelta(seconds=60)) -> int:
        """How many runners of the project renewed their registration ``within`` the last while
        (one indexed count; idle runners pace their polls by it)."""
        return self._runners.count_documents(self.project.scope({"heartbeat_at": {"$gte": utcnow() - within}}))

    def forget_old(self, older_than: dt.timedelta = FORGET_AFTER) -> int:
        """Delete entries of runners that stopped, or went silent, longer ago than ``older_than``."""
        cutoff = utcnow() - older_than
        return self._runners.delete_many(self.project.scope({"heartbeat_at": {"$lt": cutoff}})).deleted_count

    def _record(self, doc: dict[str, Any], now: dt.datetime) -> RunnerRecord:
        beat = doc.get("heartbeat_at")
        age = None if beat is None else max(0.0, (now - as_utc(beat)).total_seconds())
        state = doc.get("status", RUNNING)
        if state == RUNNING and (age is None or age > float(doc.get("lease_seconds") or 60)):
            state = LOST
        return RunnerRecord(
            str(doc["_id"]), str(doc.get("host")), int(doc.get("pid") or 0), str(doc.get("version")),
            list(doc.get("gpus") or []), list(doc.get("slots") or []), dict(doc.get("task_filter") or {}), state,
            doc.get("started_at"), beat, age, int(doc.get("tasks_done") or 0), int(doc.get("tasks_failed") or 0), doc)


def _slot(index: int, gpu: str | None, task: Mapping[str, Any] | None = None,
          since: dt.datetime | None = None) -> dict[str, Any]:
    return {"slot": index, "gpu": gpu, "task_id": None if task is None else task.get("_id"),
            "task_name": None if task is None else task.get("task_name"), "since": since}


def slot_entry(index: int, gpu: str | None, task: Mapping[str, Any] | None,
               since: dt.datetime | None) -> dict[str, Any]:
    """What the registry shows for one slot (idle when ``task`` is None)."""
    return _slot(index, gpu, task, since)
