"""Training/validation/testing logs, and step-indexed metrics that scale to long runs.

Logs are free-form records (one document per call): the user's keywords at the top level, as in
TensorLayer (``time`` is the creation time unless the user passes their own), and the hub's
bookkeeping (project, kind, creation time) in ``_hub``. Metrics are one small
document per (run, step) point in their own collection, so a run of a million steps is a million
tiny documents behind an index, never one document growing towards MongoDB's 16 MB limit.

    hub.save_training_log(epoch=3, loss=0.12, model_name="mlp")
    hub.log_metrics("mlp-run-1", step=100, epoch=1, loss=0.3, accuracy=0.91)
    hub.find_metrics(run="mlp-run-1")          # DataFrame: run, step, epoch, time, loss, accuracy
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from pymongo import ASCENDING
from pymongo.database import Database

if TYPE_CHECKING:
    import pandas as pd

from tensorhub.errors import InvalidArgument
from tensorhub.fields import HUB, build_query, clean_fields, normalize_sort, to_bson_value, utcnow, with_tiebreak
from tensorhub.project import PROJECT_FIELD, Project

LOG_KINDS = ("training", "validation", "testing")
KIND_FIELD = f"{HUB}.kind"
METRIC_RESERVED = frozenset({"run", "step", "epoch", "time"})


class LogStore:
    """The ``logs`` and ``metrics`` collections of one project."""

    def __init__(self, db: Database, project: Project) -> None:
        self.logs = db["logs"]
        self.metrics = db["metrics"]
        self.project = project

    def ensure_indexes(self) -> None:
        # Oldest first is _id order (ObjectIds grow with insertion time).
        self.logs.create_index([(PROJECT_FIELD, ASCENDING), (KIND_FIELD, ASCENDING), ("_id", ASCENDING)])
        self.logs.create_index([(PROJECT_FIELD, ASCENDING), ("_id", ASCENDING)])
        self.logs.create_index([(PROJECT_FIELD, ASCENDING), (KIND_FIELD, ASCENDING), ("time", ASCENDING),
                                ("_id", ASCENDING)])
        self.metrics.create_index([(PROJECT_FIELD, ASCENDING), ("run", ASCENDING), ("step", ASCENDING),
                                   ("time", ASCENDING)])

    # -- free-form logs ------------------------------------------------------------------------
    def save_log(self, kind: str, fields: Mapping[str, Any]) -> Any:
        _check_kind(kind)
        now = utcnow()
        doc = {"time": now, **clean_fields(fields), HUB: self.project.stamp(kind=kind, created_at=now)}
        return self.logs.insert_one(doc).inserted_id

    def delete_logs(self, kind: str | None, query: Mapping[str, Any]) -> int:
        return self.logs.delete_many(self._log_query(kind, query)).deleted_count

    def find_logs(self, kind: str | None, query: Mapping[str, Any], sort: Any = None) -> pd.DataFrame:
        """Matching logs as a DataFrame, oldest first unless ``sort`` says otherwise; nested fields
        become dotted columns, and ``kind`` says which log each row came from."""
        order = with_tiebreak(normalize_sort(sort) or [("_id", ASCENDING)])
        docs = []
        for doc in self.logs.find(self._log_query(kind, query), sort=order):
            docs.append({"kind": doc.pop(HUB).get("kind"), **doc})
        return _frame(docs, ["kind", "time"])

    def _log_query(self, kind: str | None, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        query = self.project.scope(build_query(kwargs, {PROJECT_FIELD}))
        if kind is not None:
            _check_kind(kind)
            query[KIND_FIELD] = kind
        return query

    # -- metrics -------------------------------------------------------------------------------
    def log_metrics(self, run: str, step: int | None = None, epoch: int | None = None,
                    /, **values: Any) -> None:
        self.log_metric_rows(run, [{"step": step, "epoch": epoch, **values}])

    def log_metric_rows(self, run: str, rows: Iterable[Mapping[str, Any]]) -> int:
        """Store many points at once (one round trip): ``[{"step": 1, "loss": 0.3}, ...]``."""
        if not isinstance(run, str) or not run:
            raise InvalidArgument(f"run must be a non-empty string, got {run!r}")
        now = utcnow()
        docs = []
        for row in rows:
            row = dict(row)
            step, epoch = row.pop("step", None), row.pop("epoch", None)
            doc = {"run": run, "step": to_bson_value(step, "step"), "epoch": to_bson_value(epoch, "epoch"),
                   "time": now, **clean_fields(row, METRIC_RESERVED), HUB: self.project.stamp()}
            docs.append(doc)
        if docs:
            self.metrics.insert_many(docs, ordered=True)
        return len(docs)

    def find_metrics(self, run: str | None = None, /, **kwargs: Any) -> pd.DataFrame:
        query = self.project.scope(build_query(kwargs, {PROJECT_FIELD}))
        if run is not None:
            query["run"] = run
        docs = list(self.metrics.find(query, {HUB: 0, "_id": 0},
                                      sort=[("run", ASCENDING), ("step", ASCENDING), ("time", ASCENDING)]))
        return _frame(docs, ["run", "step", "epoch", "time"])

    def delete_metrics(self, run: str | None = None, /, **kwargs: Any) -> int:
        query = self.project.scope(build_query(kwargs, {PROJECT_FIELD}))
        if run is not None:
            query["run"] = run
        return self.metrics.delete_many(query).deleted_count


def _check_kind(kind: str) -> None:
    if kind not in LOG_KINDS:
        raise InvalidArgument(f"log kind must be one of {', '.join(LOG_KINDS)}, got {kind!r}")


def _frame(docs: list[dict[str, Any]], first: list[str]) -> pd.DataFrame:
    import pandas as pd
    frame = pd.json_normalize(docs) if docs else pd.DataFrame(columns=first)
    leading = [c for c in first if c in frame.columns]
    return frame[leading + [c for c in frame.columns if c not in leading]]
