"""``Task``: the typed, documented read model of a task document.

A task document keeps TensorLayer's fields at the top level (``task_name``, ``status``, ``time``,
``hyper_parameters``, ``saved_result_keys``, ``result``) next to the user's own keywords, and the
hub's bookkeeping (attempts, runner, lease, timings, failures, output, code) under ``_hub``::

    {_id, task_name: "mnist", status: "finished", time: <UTC date>,
     hyper_parameters: {n_units: 800}, saved_result_keys: ["test_accuracy"],
     result: {test_accuracy: 0.97}, description: "800-800",               # the user's kwargs
     _hub: {project: "mnist", priority: 0, created_at, updated_at, attempts: 1, max_attempts: 3,
            attempt_limit: 3, timeout_seconds: 600, seq: 1, runner: {id, host, pid, gpu},
            started_at, finished_at, duration_seconds, error: null, failures: [], history: [...],
            output: {tail, exit_code, log: {id, size, sha256, format}},
            code: {kind: "script", filename: "train.py", source: "..."}, blob_ids: [...]}}

``Task`` is what ``find_tasks``/``get_task``/``run_top_task`` return. It reads like a dataclass
(``task.attempts``, ``task.runner.host``...) and, for code written against TensorLayer's dicts, it
also answers ``task["status"]``, ``task["result"]``, ``task["attempts"]``, ``task.get("error")``.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from bson import ObjectId

from tensorhub.fields import HUB

TOP_LEVEL = ("task_name", "status", "time", "hyper_parameters", "saved_result_keys", "result")


@dataclass(frozen=True)
class RunnerInfo:
    """Which runner (and GPU) ran an attempt."""

    id: str
    host: str
    pid: int
    gpu: str | None = None

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any] | None) -> RunnerInfo | None:
        if not doc:
            return None
        return cls(str(doc.get("id")), str(doc.get("host")), int(doc.get("pid") or 0), doc.get("gpu"))


@dataclass(frozen=True)
class Task(Mapping[str, Any]):
    """One task as stored, typed; also a read-only mapping of its flat field names.

    >>> task = hub.get_task(task_id)
    >>> task.status, task.attempts, task.result
    ('finished', 1, {'test_accuracy': 0.5})
    >>> task["status"], task.get("error"), task.runner.pid > 0
    ('finished', None, True)
    """

    id: ObjectId
    task_name: str
    status: str
    time: dt.datetime | None
    hyper_parameters: dict[str, Any]
    saved_result_keys: list[str]
    result: dict[str, Any] | None
    fields: dict[str, Any]                 # the user's own keywords
    project: str | None
    priority: float
    created_at: dt.datetime | None
    attempts: int                          # attempts that ran (hand-backs are not counted)
    max_attempts: int
    attempt_limit: int                     # attempts allowed in total (grows when requeued)
    timeout_seconds: float | None
    runner: RunnerInfo | None
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    duration_seconds: float | None
    error: dict[str, Any] | None           # type, message, traceback tail of the last failure
    failures: list[dict[str, Any]]
    history: list[dict[str, Any]]          # hand-backs, lost rounds, expired leases, requeues
    output: dict[str, Any] | None          # tail, exit_code, log (the full log blob)
    code_kind: str
    document: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> Task:
        hub = doc.get(HUB) or {}
        code = hub.get("code") or {}
        return cls(
            id=doc["_id"], task_name=doc.get("task_name", ""), status=doc.get("status", ""),
            time=doc.get("time"), hyper_parameters=dict(doc.get("hyper_parameters") or {}),
            saved_result_keys=list(doc.get("saved_result_keys") or []), result=doc.get("result"),
            fields={k: v for k, v in doc.items() if k not in TOP_LEVEL and k not in ("_id", HUB)},
            project=hub.get("project"), priority=hub.get("priority", 0), created_at=hub.get("created_at"),
            attempts=int(hub.get("attempts", 0)), max_attempts=int(hub.get("max_attempts", 1)),
            attempt_limit=int(hub.get("attempt_limit", 1)), timeout_seconds=hub.get("timeout_seconds"),
            runner=RunnerInfo.from_doc(hub.get("runner")), started_at=hub.get("started_at"),
            finished_at=hub.get("finished_at"), duration_seconds=hub.get("duration_seconds"),
            error=hub.get("error"), failures=list(hub.get("failures") or []),
            history=list(hub.get("history") or []), output=hub.get("output"),
            code_kind=code.get("kind", ""), document=dict(doc))

    # -- the mapping view: TensorLayer-style dict access --------------------------------------
    def _flat(self) -> dict[str, Any]:
        hub = dict(self.document.get(HUB) or {})
        hub.pop("code", None)
        flat = {**hub, **{k: v for k, v in self.document.items() if k != HUB}}
        flat["runner"] = hub.get("runner")
        return flat

    def __getitem__(self, key: str) -> Any:
        return self._flat()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._flat())

    def __len__(self) -> int:
        return len(self._flat())

    def __hash__(self) -> int:
        return hash(self.id)
