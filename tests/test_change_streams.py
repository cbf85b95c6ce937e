"""The change-stream wake-up, tested at the pymongo boundary.

No server on this machine implements change streams (FerretDB v1 has none, MongoDB cannot be
installed here), so these tests feed the code what MongoDB sends: change events recorded in the
shape MongoDB 7 emits them, filtered by the queue's real pipeline, and the error a standalone
server or FerretDB answers ``watch`` with.
"""
from __future__ import annotations

import datetime as dt
import threading
import time
from typing import Any

import mongomock
from bson import ObjectId
from pymongo.errors import OperationFailure

from tensorhub.runner.wakeup import Wakeup
from tensorhub.tasks.queue import PENDING_CHANGES

TASK = ObjectId()
NS = {"db": "ml", "coll": "tasks"}
RECORDED = [  # as MongoDB 7 emits them for the tasks collection
    {"_id": {"_data": "8265A1"}, "operationType": "insert", "clusterTime": 1, "ns": NS,
     "documentKey": {"_id": TASK}, "fullDocument": {"_id": TASK, "task_name": "mnist", "status": "pending"}},
    {"_id": {"_data": "8265A2"}, "operationType": "update", "clusterTime": 2, "ns": NS, "documentKey": {"_id": TASK},
     "updateDescription": {"updatedFields": {"status": "running", "_hub.seq": 1}, "removedFields": [],
                           "truncatedArrays": []}},
    {"_id": {"_data": "8265A3"}, "operationType": "update", "clusterTime": 3, "ns": NS, "documentKey": {"_id": TASK},
     "updateDescription": {"updatedFields": {"status": "pending", "_hub.attempts": 1}, "removedFields": [],
                           "truncatedArrays": []}},
    {"_id": {"_data": "8265A4"}, "operationType": "update", "clusterTime": 4, "ns": NS, "documentKey": {"_id": TASK},
     "updateDescription": {"updatedFields": {"_hub.updated_at": dt.datetime(2026, 1, 1)}, "removedFields": [],
                           "truncatedArrays": []}},
    {"_id": {"_data": "8265A5"}, "operationType": "delete", "clusterTime": 5, "ns": NS, "documentKey": {"_id": TASK}},
]


def test_the_stream_wakes_runners_only_for_tasks_becoming_pending():
    events = mongomock.MongoClient().db.events
    events.insert_many([dict(e) for e in RECORDED])
    passed = [e["_id"]["_data"] for e in events.aggregate(PENDING_CHANGES)]
    assert passed == ["8265A1", "8265A3"]  # the insert, and the retry back to pending; not claims or deletes


class RecordedStream:
    """What ``collection.watch()`` returns, replaying events, then None while nothing happens."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.events = list(events)
        self.closed = False

    def __enter__(self) -> RecordedStream:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.closed = True

    def try_next(self) -> dict[str, Any] | None:
        if self.events:
            return self.events.pop(0)
        time.sleep(0.01)  # like max_await_time_ms: the server waits a little before answering
        return None


def test_a_change_event_wakes_an_idle_runner_at_once():
    gate = threading.Event()
    stream = RecordedStream([])

    def watch(**options: Any) -> RecordedStream:
        assert options == {"max_await_time_ms": 500}
        gate.wait(5)
        return stream

    wakeup = Wakeup(watch, max_interval=30.0)
    wakeup.start()
    gate.set()
    deadline = time.monotonic() + 5
    while not wakeup.streaming and time.monotonic() < deadline:
        time.sleep(0.01)
    assert wakeup.streaming
    stream.events.append(RECORDED[0])
    started = time.monotonic()
    wakeup.wait(found_work=False)          # would sleep 30 s without the event
    assert time.monotonic() - started < 2 and wakeup.take_woken() and not wakeup.take_woken()
    wakeup.stop()


def test_servers_without_change_streams_fall_back_to_the_signal_poll():
    def watch(**options: Any) -> RecordedStream:
        raise OperationFailure("The $changeStream stage is only supported on replica sets", code=40573)

    wakeup = Wakeup(watch, max_interval=0.05)
    wakeup.start()
    time.sleep(0.2)
    assert not wakeup.streaming
    started = time.monotonic()
    wakeup.wait(found_work=False)          # polls at max_interval instead
    assert time.monotonic() - started < 1 and not wakeup.take_woken()
    wakeup.stop()
