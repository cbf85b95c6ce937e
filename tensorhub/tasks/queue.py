"""The task collection from the distributor's side: create, read, wait, cancel, requeue, delete.

A task document reads in Studio3T as::

    {_id, project: "mnist", name: "train", status: "finished", priority: 0,
     hyper_parameters: {n_units: 800}, saved_result_keys: ["test_accuracy"],
     result: {test_accuracy: 0.97}, error: null, failures: [],
     attempts: 1, max_attempts: 3, attempt_limit: 3, timeout_seconds: 600, seq: 1,
     runner: {id: "gpu-box-1:4242:ab12cd", host: "gpu-box-1", pid: 4242, gpu: "0"},
     created_at, started_at, finished_at, duration_seconds: 41.2,
     output: {tail: "...last lines of stdout/stderr...", log: {id, size, sha256, format: "text"}},
     code: {kind: "script", filename: "train.py", source: "..."}}
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import dill
from bson import ObjectId
from pymongo import ASCENDING, DESCENDING
from pymongo.database import Database

from tensorhub.blobs import BlobRef, BlobStore
from tensorhub.errors import InvalidArgument, NotFound, TaskError, TaskTimeout
from tensorhub.fields import build_query, clean_fields, to_bson_value, utcnow
from tensorhub.tasks import states
from tensorhub.tasks.claims import ClaimBook
from tensorhub.tasks.states import ACTIVE, CANCELLED, DONE, FAILED, FINISHED, PENDING, RUNNING

RESERVED = frozenset({
    "_id", "project", "name", "status", "priority", "created_at", "updated_at", "hyper_parameters",
    "saved_result_keys", "code", "max_attempts", "attempt_limit", "timeout_seconds", "attempts",
    "seq", "lease", "runner", "started_at", "finished_at", "duration_seconds", "result", "error",
    "failures", "output"})
NOT_QUERYABLE = frozenset({"project", "code", "lease"})
SUMMARY_PROJECTION = {"code.source": 0}
OUTPUT_LOG_LIMIT = 32 * 1024 * 1024  # a chatty task must not stall its runner's loop on upload


class TaskQueue:
    """The ``tasks`` collection of one project (claims live in ``task_claims``)."""

    def __init__(self, db: Database, blobs: BlobStore, project: str) -> None:
        self.tasks = db["tasks"]
        self.blobs = blobs
        self.project = project
        self.claims = ClaimBook(self.tasks, db["task_claims"], project)

    def ensure_indexes(self) -> None:
        self.tasks.create_index([("project", ASCENDING), ("status", ASCENDING),
                                 ("priority", DESCENDING), ("created_at", ASCENDING)])
        self.tasks.create_index([("project", ASCENDING), ("name", ASCENDING), ("status", ASCENDING)])
        self.claims.ensure_indexes()

    # -- creating ------------------------------------------------------------------------------
    def create(self, task_name: str, script: str | os.PathLike[str] | None = None,
               hyper_parameters: dict[str, Any] | None = None,
               saved_result_keys: Iterable[str] | None = None, *, source: str | None = None,
               function: Callable[..., Any] | None = None, priority: int = 0, max_attempts: int = 3,
               timeout: float | None = None, **kwargs: Any) -> ObjectId:
        if not isinstance(task_name, str) or not task_name:
            raise InvalidArgument(f"task_name must be a non-empty string, got {task_name!r}")
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
            raise InvalidArgument(f"max_attempts must be a positive integer, got {max_attempts!r}")
        if timeout is not None and (not isinstance(timeout, (int, float)) or timeout <= 0):
            raise InvalidArgument(f"timeout must be a positive number of seconds, got {timeout!r}")
        if isinstance(priority, bool) or not isinstance(priority, (int, float)):
            raise InvalidArgument(f"priority must be a number, got {priority!r}")
        keys = list(saved_result_keys or [])
        if not all(isinstance(k, str) and k for k in keys):
            raise InvalidArgument(f"saved_result_keys must be names, got {keys!r}")
        params = to_bson_value(dict(hyper_parameters or {}), "hyper_parameters")
        user_fields = clean_fields(kwargs, RESERVED)  # before any bytes are written
        code = self._code(script, source, function)
        doc = {"project": self.project, "name": task_name, "status": PENDING, "priority": priority,
               "created_at": utcnow(), **user_fields,
               "hyper_parameters": params, "saved_result_keys": keys, "result": None, "error": None,
               "failures": [], "attempts": 0, "max_attempts": max_attempts, "attempt_limit": max_attempts,
               "timeout_seconds": timeout, "seq": 0, "lease": None, "runner": None,
               "started_at": None, "finished_at": None, "code": code}
        try:
            return self.tasks.insert_one(doc).inserted_id
        except BaseException:
            if "blob" in code:  # bytes before references: undo the function blob
                self.blobs.delete([code["blob"]["id"]])
            raise

    def _code(self, script: Any, source: str | None, function: Callable[..., Any] | None) -> dict[str, Any]:
        given = [x is not None for x in (script, source, function)]
        if sum(given) != 1:
            raise InvalidArgument("give exactly one of script (a file path), source (code text) or function")
        if function is not None:
            if not callable(function):
                raise InvalidArgument(f"function must be callable, got {type(function).__name__}")
            # The distributor pickles its own function; runners load it only with --allow-pickle.
            ref = self.blobs.write_bytes(dill.dumps(function, recurse=True),
                                         getattr(function, "__name__", "function"), "dill", kind="task-function")
            return {"kind": "function", "name": getattr(function, "__qualname__", "function"),
                    "blob": ref.to_doc()}
        if script is not None:
            path = Path(script)
            if not path.is_file():
                raise TaskError(f"script {str(path)!r} is not a file (pass source=... for code text)")
            source, filename = path.read_text(encoding="utf-8"), path.name
        else:
            filename = "<source>"
        assert source is not None
        try:
            compile(source, filename, "exec")
        except SyntaxError as err:
            raise TaskError(f"script {filename} does not compile: {err}") from err
        return {"kind": "script", "filename": filename, "source": source}

    # -- reading -------------------------------------------------------------------------------
    def query(self, task_name: str | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        query = {"project": self.project, **build_query(kwargs, NOT_QUERYABLE)}
        if task_name is not None:
            query["name"] = task_name
        return query

    def find(self, task_name: str | None = None, include_code: bool = False, **kwargs: Any) -> list[dict[str, Any]]:
        projection = None if include_code else SUMMARY_PROJECTION
        return list(self.tasks.find(self.query(task_name, kwargs), projection,
                                    sort=[("created_at", ASCENDING), ("_id", ASCENDING)]))

    def get(self, task_id: ObjectId | str, include_code: bool = False) -> dict[str, Any]:
        doc = self.tasks.find_one({"_id": _oid(task_id), "project": self.project},
                                  None if include_code else SUMMARY_PROJECTION)
        if doc is None:
            raise NotFound(f"no task {task_id} in project {self.project!r}")
        return doc

    def counts(self, task_name: str | None = None, **kwargs: Any) -> dict[str, int]:
        """``{"pending": 2, "running": 1, "finished": 5, "failed": 0, "cancelled": 0}``"""
        query = self.query(task_name, kwargs)
        counts = dict.fromkeys(states.STATES, 0)
        for doc in self.tasks.find(query, {"status": 1}):
            counts[doc["status"]] = counts.get(doc["status"], 0) + 1
        return counts

    def has_unfinished(self, task_name: str | None = None, **kwargs: Any) -> bool:
        query = self.query(task_name, kwargs)
        query["status"] = {"$in": list(ACTIVE)}
        return self.tasks.find_one(query, {"_id": 1}) is not None

    def wait(self, task_name: str | None = None, timeout: float | None = None, poll_interval: float = 1.0,
             progress: bool = True, **kwargs: Any) -> dict[str, int]:
        """Block until no matching task is pending or running; return the final counts."""
        from tqdm import tqdm

        deadline = None if timeout is None else time.monotonic() + timeout
        bar = None
        try:
            while True:
                self.claims.reap_expired()  # no runner left alive must not mean waiting forever
                counts = self.counts(task_name, **kwargs)
                done, total = sum(counts[s] for s in DONE), sum(counts.values())
                if progress:
                    bar = bar or tqdm(total=total, desc=f"tasks {task_name or ''}".strip(), unit="task")
                    bar.total = total
                    bar.n = done
                    bar.set_postfix(running=counts[RUNNING], failed=counts[FAILED], refresh=False)
                    bar.refresh()
                if done == total:
                    return counts
                if deadline is not None and time.monotonic() >= deadline:
                    raise TaskTimeout(f"{total - done} of {total} tasks still unfinished after {timeout}s: {counts}")
                time.sleep(poll_interval)
        finally:
            if bar is not None:
                bar.close()

    def output(self, task_id: ObjectId | str) -> str:
        """The full stdout/stderr of a task's last attempt that ran on a runner."""
        task = self.get(task_id)
        log = (task.get("output") or {}).get("log")
        if not log:
            raise NotFound(f"task {task_id} has no stored output (not run by a runner yet?)")
        return self.blobs.read_bytes(log["id"]).decode("utf-8", errors="replace")

    def referenced_blob_ids(self) -> set[ObjectId]:
        ids: set[ObjectId] = set()
        for doc in self.tasks.find({"project": self.project}, {"code.blob.id": 1, "output.log.id": 1}):
            for ref in ((doc.get("code") or {}).get("blob"), (doc.get("output") or {}).get("log")):
                if ref:
                    ids.add(ref["id"])
        return ids

    # -- changing ------------------------------------------------------------------------------
    def cancel(self, task_name: str | None = None, **kwargs: Any) -> int:
        """Cancel pending and running tasks; a running one is killed by its runner within a heartbeat."""
        query = self.query(task_name, kwargs)
        query["status"] = {"$in": list(ACTIVE)}
        cancelled = 0
        for task in self.tasks.find(query, {"status": 1, "seq": 1}):
            cancelled += self._cancel_one(task["_id"])
        return cancelled

    def _cancel_one(self, task_id: ObjectId) -> bool:
        # A claim may race us: if we lose a ticket, read the task again and try its new state.
        for attempt in range(8):
            if attempt:
                time.sleep(0.02 * 2 ** attempt)
            task = self.tasks.find_one({"_id": task_id}, {"status": 1, "seq": 1})
            if task is None or task["status"] not in ACTIVE:
                return False
            if task["status"] == PENDING and self.claims.cancel_pending(task):
                return True
            if task["status"] == RUNNING and self.claims.cancel_running(task):
                return True
        return False

    def requeue(self, task_name: str | None = None, statuses: Iterable[str] = (FAILED,), **kwargs: Any) -> int:
        """Put failed (or given-status) tasks back to pending with a fresh attempt budget."""
        wanted = list(statuses)
        for status in wanted:
            if status not in DONE:
                raise InvalidArgument(f"only {', '.join(DONE)} tasks can be requeued, not {status!r}")
        query = self.query(task_name, kwargs)
        query["status"] = {"$in": wanted}
        count = 0
        for task in self.tasks.find(query, {"status": 1, "attempts": 1, "max_attempts": 1, "seq": 1}):
            if self.claims.cancelled_but_still_held(task):
                continue  # just cancelled: its runner has not let go yet (at most one lease)
            count += states.transition(
                self.tasks, task["_id"], task["status"], PENDING, {"seq": task.get("seq", 0)},
                {"attempt_limit": int(task.get("attempts", 0)) + int(task.get("max_attempts", 1)),
                 "finished_at": None, "result": None, "error": None})
        return count

    def delete(self, task_name: str | None = None, **kwargs: Any) -> int:
        """Delete matching tasks (running ones are cancelled first), their claims and blobs."""
        count = 0
        for task in self.tasks.find(self.query(task_name, kwargs), {"status": 1}):
            if task["status"] in ACTIVE:
                self._cancel_one(task["_id"])
            doc = self.tasks.find_one_and_delete({"_id": task["_id"]})
            if doc is None:
                continue
            self.claims.claims.delete_many({"task_id": task["_id"]})
            refs = [r for r in ((doc.get("code") or {}).get("blob"), (doc.get("output") or {}).get("log")) if r]
            self.blobs.delete(BlobRef.from_doc(r).id for r in refs)
            count += 1
        return count

    def store_output_log(self, path: str, task_id: ObjectId, attempt: int) -> dict[str, Any]:
        """Store a task's output log (its last OUTPUT_LOG_LIMIT bytes) as a blob."""
        with open(path, "rb") as src, self.blobs.open_writer(
                f"task-{task_id}-attempt-{attempt}.log", "text", kind="task-output") as out:
            size = src.seek(0, os.SEEK_END)
            src.seek(max(0, size - OUTPUT_LOG_LIMIT))
            if size > OUTPUT_LOG_LIMIT:
                out.write(f"[... first {size - OUTPUT_LOG_LIMIT} bytes dropped ...]\n".encode())
            while chunk := src.read(1024 * 1024):
                out.write(chunk)
        assert out.ref is not None
        return out.ref.to_doc()


def _oid(value: ObjectId | str) -> ObjectId:
    if isinstance(value, ObjectId):
        return value
    try:
        return ObjectId(value)
    except Exception:
        raise InvalidArgument(f"{value!r} is not a task id") from None


__all__ = ["TaskQueue", "PENDING", "RUNNING", "FINISHED", "FAILED", "CANCELLED"]
