"""The dashboard's page data: facade calls turned into JSON-able dicts (no HTML here).

Every function takes the hub and validated parameters and uses only the facade's public methods
(``queue_summary``, ``find_tasks``, ``runners``, ``list_models_grouped_by_epoch_metric``,
``get_run``...). Nothing here loads a stored object or runs stored code.
"""
from __future__ import annotations

import datetime as dt
import math
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bson import ObjectId

from tensorhub.errors import NotFound
from tensorhub.fields import HUB
from tensorhub.tasks.states import DONE, STATES

TAIL_CHARS = 4000          # of a traceback or an output tail
LEADERBOARD_TTL = 2.0      # seconds a ranking is reused while paging and sorting
SUMMARY_TTL = 1.0          # seconds the queue's counts are shared between polling pages
SUMMARY_STALE = 120.0      # seconds older counts are still shown (with their age) while new ones are counted
METRIC_SAMPLE = 200        # newest runs whose metric names fill the leaderboard's menu


def jsonable(value: Any) -> Any:
    """Anything a document holds, as JSON: ids and dates as strings, NaN as null.

    >>> jsonable({"id": ObjectId("65f000000000000000000000"), "at": dt.datetime(2026, 1, 2, tzinfo=dt.timezone.utc),
    ...           "x": [float("nan"), 1.5, b"ab"]})
    {'id': '65f000000000000000000000', 'at': '2026-01-02T00:00:00Z', 'x': [None, 1.5, '<2 bytes>']}
    """
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, ObjectId):
        return str(value)
    if isinstance(value, dt.datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
        return aware.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [jsonable(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes>"
    if hasattr(value, "item") and callable(value.item):   # numpy and pandas scalars
        try:
            return jsonable(value.item())
        except (TypeError, ValueError):
            pass
    return str(value)


def _tail(text: Any) -> str | None:
    return None if text is None else str(text)[-TAIL_CHARS:]


class Recent:
    """Answers kept for ``ttl`` seconds, one computation per key at a time: however many browser
    tabs poll the same page, the hub is asked once per ``ttl``, and a slow answer is not asked for
    again while it is being computed. An answer that took longer than ``ttl`` to compute is kept
    twice as long as it took, so a slow server spends at most half its time on the dashboard.

    With ``stale_for`` an expired answer younger than that is still served at once, while one
    background thread computes the next (stale-while-revalidate): on a server that must decode
    every task to count them, a page shows the last counts immediately, with their age.

    >>> recent = Recent(ttl=60)
    >>> recent.get("k", lambda: 1), recent.get("k", lambda: 2)
    (1, 1)
    >>> recent.age("k") < 1
    True
    """

    def __init__(self, ttl: float, stale_for: float = 0.0) -> None:
        self._ttl = ttl
        self._stale_for = stale_for
        self._values: dict[Any, tuple[float, float, Any]] = {}   # key -> (fresh until, computed at, value)
        self._locks: dict[Any, threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, key: Any, compute: Callable[[], Any]) -> Any:
        lock = self._lock(key)
        hit = self._values.get(key)
        if hit is not None and self._stale_for and time.monotonic() < hit[1] + self._stale_for:
            if time.monotonic() >= hit[0] and lock.acquire(blocking=False):
                threading.Thread(target=self._refresh, args=(key, compute, lock), daemon=True,
                                 name="dashboard-refresh").start()
            return hit[2]
        with lock:
            hit = self._values.get(key)
            if hit is not None and time.monotonic() < hit[0]:
                return hit[2]
            return self._compute(key, compute)

    def age(self, key: Any) -> float | None:
        """Seconds since the answer for ``key`` was computed (None: none is kept)."""
        hit = self._values.get(key)
        return None if hit is None else time.monotonic() - hit[1]

    def _lock(self, key: Any) -> threading.Lock:
        with self._guard:
            if len(self._locks) > 1024:   # keys come from query parameters: forget idle ones
                self._locks = {k: lk for k, lk in self._locks.items() if k in self._values or lk.locked()}
            return self._locks.setdefault(key, threading.Lock())

    def _compute(self, key: Any, compute: Callable[[], Any]) -> Any:
        started = time.monotonic()
        value = compute()
        now = time.monotonic()
        with self._guard:
            self._values = {k: v for k, v in self._values.items() if now < max(v[0], v[1] + self._stale_for)}
            self._values[key] = (now + max(self._ttl, 2 * (now - started)), now, value)
        return value

    def _refresh(self, key: Any, compute: Callable[[], Any], lock: threading.Lock) -> None:
        try:
            self._compute(key, compute)
        except Exception:   # the server is away: forget the answer, so the next page asks and says so
            with self._guard:
                self._values.pop(key, None)
        finally:
            lock.release()


# -- the queue ----------------------------------------------------------------------------------
def queue(hub: Any, task_name: str | None, status: str | None, page: int, per_page: int,
          newest_first: bool, summaries: Recent | None = None) -> dict[str, Any]:
    """Counts per task name (a sweep's progress), and one page of the matching tasks.

    The counts (one aggregation over the project) and the page (one indexed query) are asked for
    at the same time; ``summaries`` shares the counts between requests for a moment, and serves
    the last ones at once while it counts again (``counts_age`` says how old they are).
    """
    filters = {} if status is None else {"status": status}
    with ThreadPoolExecutor(max_workers=1) as pool:
        page_of_tasks = pool.submit(hub.find_tasks, task_name, sort=[("_id", -1 if newest_first else 1)],
                                    limit=per_page, skip=(page - 1) * per_page, **filters)
        summaries = summaries or Recent(0)
        summary = summaries.get(id(hub), lambda: queue_counts(hub))
        age = summaries.age(id(hub))
        tasks = page_of_tasks.result()
    rows = [r for r in summary if task_name is None or r["task_name"] == task_name]
    matching = sum(r[status] if status else r["total"] for r in rows)
    totals = {s: sum(r[s] for r in summary) for s in STATES}
    return jsonable({"summary": summary, "totals": totals, "matching": matching, "page": page,
                     "per_page": per_page, "pages": max(1, math.ceil(matching / per_page)),
                     "counts_age": None if age is None else round(age, 1),
                     "tasks": [task_row(t) for t in tasks]})


def queue_counts(hub: Any) -> list[dict[str, Any]]:
    """Per task name: counts by status, total, done, and the oldest pending task's age."""
    summary = []
    for row in hub.queue_summary():
        counts = {s: int(row[s]) for s in STATES}
        total, done = sum(counts.values()), sum(counts[s] for s in DONE)
        summary.append({"task_name": row["task_name"], **counts, "total": total, "done": done,
                        "oldest_pending_age": row["oldest_pending_age"]})
    return summary


def task_row(task: Any) -> dict[str, Any]:
    """A task as one line of the queue table."""
    runner = task.runner
    return {"id": task.id, "task_name": task.task_name, "status": task.status, "attempts": task.attempts,
            "attempt_limit": task.attempt_limit, "hyper_parameters": task.hyper_parameters,
            "runner": None if runner is None else {"host": runner.host, "pid": runner.pid, "gpu": runner.gpu},
            "created_at": task.created_at, "started_at": task.started_at, "finished_at": task.finished_at,
            "duration_seconds": task.duration_seconds,
            "error": None if not task.error else {"type": task.error.get("type"),
                                                  "message": str(task.error.get("message") or "")[:300]}}


def task_detail(hub: Any, task_id: ObjectId) -> dict[str, Any]:
    """Everything about one task: fields, attempts and failures with their traceback tails, the
    output tail, the runner, timings, and the runs of its attempts (newest first)."""
    task = hub.get_task(task_id)
    failures = [{**f, "traceback": _tail(f.get("traceback"))} for f in task.failures]
    error = None if not task.error else {**task.error, "traceback": _tail(task.error.get("traceback"))}
    output = dict(task.output or {})
    log = output.get("log")
    detail = {**task_row(task), "fields": task.fields, "result": task.result, "priority": task.priority,
              "max_attempts": task.max_attempts, "timeout_seconds": task.timeout_seconds,
              "saved_result_keys": task.saved_result_keys, "code_kind": task.code_kind, "time": task.time,
              "code_name": (task.document.get(HUB, {}).get("code") or {}).get("filename")
              or (task.document.get(HUB, {}).get("code") or {}).get("name"),
              "error": error, "failures": failures, "history": task.history,
              "output": {"tail": _tail(output.get("tail")), "exit_code": output.get("exit_code"),
                         "log_size": None if not log else log.get("size"),
                         "stored": bool(log) or bool(output.get("whole"))},
              "runs": _attempt_runs(hub, task.document.get(HUB, {}).get("run_id"))}
    return jsonable(detail)


def _attempt_runs(hub: Any, run_id: Any) -> list[dict[str, Any]]:
    if run_id is None:
        return []
    try:
        run = hub.get_run(run_id)
    except NotFound:
        return []   # claimed, not started yet: its run is inserted when the attempt starts
    return [_run_brief(r) for r in [run, *run.ancestors()]]


def _run_brief(run: Any) -> dict[str, Any]:
    doc = run.document
    return {"id": run.id, "name": run.name, "status": run.status, "attempt": run.attempt,
            "epochs_done": run.epochs_done, "started_at": doc.get("started_at"), "ended_at": doc.get("ended_at"),
            "runner": doc.get("runner")}


# -- the fleet ----------------------------------------------------------------------------------
def fleet(hub: Any) -> dict[str, Any]:
    """Every registered runner: host, GPUs, slot → task, heartbeat age; lost ones flagged."""
    runners = [{"id": r.id, "host": r.host, "pid": r.pid, "state": r.state, "gpus": r.gpus, "slots": r.slots,
                "heartbeat_age": r.heartbeat_age, "tasks_done": r.tasks_done, "tasks_failed": r.tasks_failed,
                "version": r.version, "started_at": r.started_at, "task_filter": r.task_filter}
               for r in hub.runners()]
    counts = {state: sum(r["state"] == state for r in runners) for state in ("running", "lost", "stopped")}
    return jsonable({"runners": runners, "counts": counts})


# -- runs -----------------------------------------------------------------------------------------
class Leaderboards:
    """Rankings by (metric, direction, task name), kept for LEADERBOARD_TTL seconds, so paging and
    sorting a leaderboard of 10,000 runs does not rank them again on every click."""

    def __init__(self, ttl: float = LEADERBOARD_TTL) -> None:
        self._recent = Recent(ttl)

    def frame(self, hub: Any, metric: str, direction: str, task_name: str | None) -> Any:
        return self._recent.get((metric, direction, task_name), lambda: self._rank(hub, metric, direction, task_name))

    @staticmethod
    def _rank(hub: Any, metric: str, direction: str, task_name: str | None) -> Any:
        frame = hub.list_models_grouped_by_epoch_metric(metric, direction, task_name)
        frame.insert(0, "rank", range(1, len(frame) + 1))
        return frame


def metric_names(hub: Any, task_name: str | None) -> list[str]:
    """The epoch metrics the newest runs logged (the leaderboard's choices)."""
    names: set[str] = set()
    for run in hub.list_runs(task_name, limit=METRIC_SAMPLE):
        names.update(str(k) for k in (run.document.get("summary") or {}))
    return sorted(names)


def default_metric(names: list[str]) -> tuple[str | None, str]:
    """Validation loss (lower is better) when there is one, else a validation score, else the first."""
    for name, direction in (("val_loss", "min"), ("val_accuracy", "max"), ("loss", "min"), ("accuracy", "max")):
        if name in names:
            return name, direction
    return (names[0] if names else None), "max"


def leaderboard(hub: Any, boards: Leaderboards, metric: str | None, direction: str | None, task_name: str | None,
                sort: str | None, descending: bool, page: int, per_page: int) -> dict[str, Any]:
    """One page of the runs ranked by their best epoch of ``metric`` (``hp.*`` columns), sorted by
    any column. Raises KeyError for a sort column the ranking does not have."""
    names = metric_names(hub, task_name)
    guess, guessed_direction = default_metric(names)
    metric = metric or guess
    direction = direction or (guessed_direction if metric == guess else "max")
    empty = {"metrics": names, "metric": metric, "direction": direction, "columns": [], "rows": [],
             "page": page, "pages": 1, "matching": 0, "sort": sort, "descending": descending}
    if metric is None:
        return jsonable(empty)
    frame = boards.frame(hub, metric, direction, task_name)
    if frame.empty:
        return jsonable(empty)
    column = sort or "rank"
    if column not in frame.columns:
        raise KeyError(column)
    ordered = _sorted(frame, column, descending)
    rows = ordered.iloc[(page - 1) * per_page: page * per_page]
    return jsonable({**empty, "columns": list(frame.columns), "sort": column, "matching": len(frame),
                     "pages": max(1, math.ceil(len(frame) / per_page)),
                     "rows": [[row[c] for c in frame.columns] for row in rows.to_dict("records")]})


def _sorted(frame: Any, column: str, descending: bool) -> Any:
    try:
        return frame.sort_values(column, ascending=not descending, na_position="last", kind="stable")
    except TypeError:  # a hyperparameter with values of several types: order them as text
        return frame.sort_values(column, ascending=not descending, na_position="last", kind="stable",
                                 key=lambda values: values.astype(str))


def run_detail(hub: Any, run_id: ObjectId) -> dict[str, Any]:
    """A run: status, hyperparameters, epochs (with the attempts it continues), checkpoints, and
    lineage: its task, the dataset versions it read, the models it saved, its ancestry."""
    run = hub.get_run(run_id)
    doc = run.document
    epochs = run.epochs_df(include_ancestors=True)
    columns = [str(c) for c in epochs.columns]
    checkpoints = [{"id": r.id, "epoch": r.document.get(HUB, {}).get("epoch"), "version": r.version,
                    "size": r.size, "sha256": r.sha256, "created_at": r.created_at, "summary": r.summary,
                    "fields": {k: v for k, v in r.fields.items() if k not in ("run_name", "version", "time", "epoch")}}
                   for r in run.checkpoints(limit=100)]
    return jsonable({
        "id": run.id, "name": run.name, "status": run.status, "attempt": run.attempt,
        "hyper_parameters": run.hyper_parameters, "task_id": run.task_id, "task_name": doc.get("task_name"),
        "runner": doc.get("runner"), "started_at": doc.get("started_at"), "ended_at": doc.get("ended_at"),
        "duration_seconds": doc.get("duration_seconds"), "epochs_done": run.epochs_done,
        "steps_done": doc.get("steps_done"), "summary": doc.get("summary") or {},
        "error": None if not doc.get("error") else {**doc["error"], "traceback": _tail(doc["error"].get("traceback"))},
        "datasets": doc.get("datasets") or [], "models": doc.get("models") or [],
        "parent_run_id": run.parent_run_id, "ancestors": [_run_brief(r) for r in run.ancestors()],
        "epoch_columns": columns, "epochs": [[row.get(c) for c in columns] for row in epochs.to_dict("records")],
        "checkpoints": checkpoints})


# -- models and datasets --------------------------------------------------------------------------
def records(hub: Any, kind: str, name: str | None, limit: int) -> dict[str, Any]:
    """The newest ``limit`` model or dataset records (kwargs, version, size, sha256); nothing loaded."""
    found = (hub.list_models if kind == "models" else hub.list_datasets)(name, limit=limit)
    rows = [{"id": r.id, "name": r.name, "version": r.version, "created_at": r.created_at, "fields": _own_fields(r),
             "summary": r.summary, "size": r.size, "sha256": r.sha256,
             "run": r.document.get(HUB, {}).get("run")} for r in found]
    return jsonable({"kind": kind, "name": name, "limit": limit, "records": rows})


def _own_fields(record: Any) -> dict[str, Any]:
    """The record's keywords, less the ``time`` and ``version`` the hub filled in (shown already)."""
    filled = {"time": record.created_at, "version": record.version}
    return {k: v for k, v in record.fields.items() if not (k in filled and v == filled[k])}
