"""Epoch and step metrics of runs, in buckets: the collection ``run_metrics``.

A bucket is one immutable document of up to :data:`BUCKET_POINTS` points of one run and one kind
("epoch" or "step")::

    {run_id, kind: "epoch", first: 1, last: 3, n: 3,
     points: [{epoch: 1, time: <UTC>, loss: 0.9, val_loss: 1.1}, {epoch: 2, ...}, ...],
     _hub: {project}}

Writers buffer points and insert whole buckets (never update one: FerretDB v1's updates are a
read followed by a write), so a million steps are a thousand inserts and a thousand documents to
read back, and no document grows without bound. Writing a value again for an index that is
already stored appends a new point; readers merge the points of one index in order, later values
winning, which is how ``run.log[i].update(loss=...)`` works.
"""
from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd
from bson import ObjectId
from pymongo import ASCENDING
from pymongo.collection import Collection

from tensorhub.errors import InvalidArgument
from tensorhub.fields import HUB, clean_fields, utcnow
from tensorhub.project import Project

KINDS = ("epoch", "step")
BUCKET_POINTS = 1000
FLUSH_SECONDS = 2.0          # a crash loses at most this much of a fast step log
RESERVED = {"time": "the hub stamps each point's time itself"}


class MetricSeries:
    """The buffered points of one run and one kind; ``flush()`` stores them as buckets."""

    def __init__(self, collection: Collection, project: Project, run_id: ObjectId, kind: str) -> None:
        if kind not in KINDS:
            raise InvalidArgument(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
        self._collection = collection
        self._project = project
        self.run_id = run_id
        self.kind = kind
        self._buffer: list[dict[str, Any]] = []
        self._since = time.monotonic()
        self.last: int | None = None

    def add(self, index: int, values: Mapping[str, Any]) -> bool:
        """Buffer one point; True when it flushed (a full bucket, or FLUSH_SECONDS passed)."""
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise InvalidArgument(f"{self.kind} must be a non-negative integer, got {index!r}")
        point = {self.kind: index, "time": utcnow(), **clean_fields(values, {self.kind, *RESERVED}, RESERVED)}
        if not self._buffer:
            self._since = time.monotonic()
        self._buffer.append(point)
        self.last = index if self.last is None else max(self.last, index)
        if len(self._buffer) >= BUCKET_POINTS or time.monotonic() - self._since >= FLUSH_SECONDS:
            self.flush()
            return True
        return False

    def flush(self) -> int:
        """Store the buffered points (one insert); how many there were."""
        points, self._buffer = self._buffer, []
        if not points:
            return 0
        buckets = [points[i:i + BUCKET_POINTS] for i in range(0, len(points), BUCKET_POINTS)]
        self._collection.insert_many([self._bucket(chunk) for chunk in buckets], ordered=True)
        return len(points)

    def pending(self) -> list[dict[str, Any]]:
        return list(self._buffer)

    def _bucket(self, points: list[dict[str, Any]]) -> dict[str, Any]:
        indexes = [p[self.kind] for p in points]
        return {"run_id": self.run_id, "kind": self.kind, "first": min(indexes), "last": max(indexes),
                "n": len(points), "points": points, HUB: self._project.stamp()}


def ensure_indexes(collection: Collection) -> None:
    collection.create_index([("run_id", ASCENDING), ("kind", ASCENDING), ("first", ASCENDING)])


def read_points(collection: Collection, run_ids: Sequence[ObjectId], kind: str,
                at: int | None = None) -> dict[ObjectId, list[dict[str, Any]]]:
    """Every run's points of ``kind`` (only index ``at`` if given), merged per index, in order."""
    query: dict[str, Any] = {"run_id": {"$in": list(run_ids)}, "kind": kind}
    if at is not None:
        query.update(first={"$lte": at}, last={"$gte": at})
    merged: dict[ObjectId, dict[int, dict[str, Any]]] = {run_id: {} for run_id in run_ids}
    for bucket in collection.find(query, {"run_id": 1, "points": 1},
                                  sort=[("run_id", ASCENDING), ("kind", ASCENDING), ("first", ASCENDING)]):
        series = merged.setdefault(bucket["run_id"], {})
        for point in bucket["points"]:
            if at is None or point[kind] == at:
                series.setdefault(point[kind], {}).update(point)
    return {run_id: [series[i] for i in sorted(series)] for run_id, series in merged.items()}


def merge_pending(points: list[dict[str, Any]], pending: Iterable[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """Stored points plus ones still in a writer's buffer, merged per index."""
    by_index = {p[kind]: dict(p) for p in points}
    for point in pending:
        by_index.setdefault(point[kind], {}).update(point)
    return [by_index[i] for i in sorted(by_index)]


def frame(rows: list[dict[str, Any]], first: Sequence[str]) -> pd.DataFrame:
    """Points as a DataFrame, built column by column (no json_normalize: points are flat)."""
    columns: dict[str, list[Any]] = {name: [] for name in first}
    for row in rows:
        for name in row:
            if name not in columns:
                columns[name] = [None] * (len(columns[first[0]]) if first else 0)
        for name, values in columns.items():
            values.append(row.get(name))
    return pd.DataFrame(columns)
