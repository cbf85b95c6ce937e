"""Epoch and step metrics of runs, in buckets: the collection ``run_metrics``.

A bucket is one immutable document of up to :data:`BUCKET_POINTS` points of one run and one kind
("epoch" or "step"), stored column by column, like a table::

    {run_id, kind: "step", first: 0, last: 990, n: 100,
     time: [<UTC>, <UTC>, ...],
     metrics: {loss: [0.9, 0.5, ...], lr: [0.1, null, ...]},
     _hub: {project}}

``first``, ``last`` and ``n`` say which indexes the points have when they are evenly spaced
(every step, or every 10th: 0, 10, ..., 990 above), the usual case; otherwise the bucket has
the column itself (``step: [0, 3, 4, 9]``, or ``epoch: [...]``). A point that did not log a
metric has ``null`` in its column; the rare point that logged ``None`` on purpose is listed in
``nulls: {lr: [1]}`` (positions), so that a later ``None`` still replaces an earlier value when
points are merged.

Columns, not an array of point documents, because the server's work is per value and per
sub-document: on FerretDB/SQLite 1,000 points as columns are written about 3x and read 2-3x
faster than as 1,000 small documents, and leaving out the index column saves a fifth more
(bench/metrics_logging.py measures the whole path). Readers build a DataFrame from columns.

Writers buffer points and insert whole buckets (never update one: FerretDB v1's updates are a
read followed by a write), so a million steps are a thousand inserts and a thousand documents to
read back, and no document grows without bound. Writing a value again for an index that is
already stored appends a new point; readers merge the points of one index in insertion order
(bucket ``_id`` order), later values winning, which is how ``run.log[i].update(loss=...)`` works.
Buckets written before the column layout (``points: [{epoch, time, ...}, ...]``) are still read.
"""
from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import bson
from bson import ObjectId
from pymongo import ASCENDING
from pymongo.collection import Collection

if TYPE_CHECKING:
    import pandas as pd

from tensorhub.errors import InvalidArgument
from tensorhub.fields import HUB, clean_fields
from tensorhub.project import Project

KINDS = ("epoch", "step")
BUCKET_POINTS = 1000
# Points with large values (strings, lists) end a bucket early: a bucket must stay under the
# server's 16 MiB document limit, and one point alone may be up to fields.FIELDS_SIZE_LIMIT.
BUCKET_BYTES = 8 * 1024 * 1024
FLUSH_SECONDS = 2.0          # a crash loses at most this much of a fast step log
RESERVED = {"time": "the hub stamps each point's time itself"}
_UTC = dt.timezone.utc
_ZERO = dt.timedelta(0)
_NOT_UTC = object()   # marks a datetime of another zone in a column
_INT64 = (-2**63, 2**63)
_PLAIN_POINT_BYTES = 16      # what a number costs in a bucket's column, roughly (type, index key, value)


class MetricSeries:
    """The buffered points of one run and one kind, stored a bucket at a time.

    On a server, a full bucket is inserted by a short-lived thread while the caller goes on
    logging: the training loop does not wait for the server's round trip every 1,000 steps (on
    FerretDB/SQLite the insert is most of the cost of logging). One bucket at most is in flight;
    the next waits for it, so a slow server slows the logger rather than filling memory. A failed
    insert raises from the next ``add``/``flush``. ``flush()`` stores everything and waits, so after
    ``flush()`` or ``Run.close()`` every point is stored. A crash loses the buffer (at most
    FLUSH_SECONDS of points) and the bucket in flight, if any. mongomock, in-process, inserts
    synchronously.
    """

    def __init__(self, collection: Collection, project: Project, run_id: ObjectId, kind: str) -> None:
        if kind not in KINDS:
            raise InvalidArgument(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
        self._collection = collection
        self._project = project
        self.run_id = run_id
        self.kind = kind
        self._reserved = frozenset({kind, *RESERVED})
        self._names: set[str] = set()          # metric names already validated: checked once per series
        # The buffer, one entry per point: index, time, the point's (clean) values.
        self._indexes: list[int] = []
        self._times: list[dt.datetime] = []
        self._values: list[dict[str, Any]] = []
        self._bytes = 0
        self._since = time.monotonic()
        self.last: int | None = None
        # pymongo's Collection means a server on the other end; mongomock's is not thread-safe.
        self._background = isinstance(collection, Collection)
        self._inflight: tuple[threading.Thread, dict[str, Any]] | None = None
        self._error: BaseException | None = None

    def add(self, index: int, values: Mapping[str, Any]) -> bool:
        """Buffer one point; True when it flushed (a full bucket, or FLUSH_SECONDS passed)."""
        if type(index) is not int:  # the usual int skips the isinstance checks; bool is refused
            if isinstance(index, bool) or not isinstance(index, int):
                raise InvalidArgument(f"{self.kind} must be a non-negative integer, got {index!r}")
            index = int(index)
        if index < 0:
            raise InvalidArgument(f"{self.kind} must be a non-negative integer, got {index!r}")
        point, size = self._clean(values)
        flushed = False
        if self._indexes and self._bytes + size > BUCKET_BYTES:
            flushed = self._hand_off() > 0   # the new point would make the bucket too large: store it first
        if not self._indexes:
            self._since = time.monotonic()
        # Not fields.utcnow(): its truncation to milliseconds costs more than the rest of add();
        # BSON keeps milliseconds anyway, and pending() truncates what it hands out.
        self._times.append(dt.datetime.now(_UTC))
        self._indexes.append(index)
        self._values.append(point)
        self._bytes += size
        self.last = index if self.last is None or index > self.last else self.last
        if len(self._indexes) >= BUCKET_POINTS or time.monotonic() - self._since >= FLUSH_SECONDS:
            self._hand_off()
            return True
        return flushed

    def _clean(self, values: Mapping[str, Any]) -> tuple[dict[str, Any], int]:
        """The point's values as stored, and about how many bytes they add to a bucket.

        Finite floats and 64-bit ints under names seen before (a training loop's usual point)
        are taken as they are; anything else goes through ``clean_fields``, which validates
        names and converts or refuses values.
        """
        names = self._names
        for name, value in values.items():
            kind = type(value)
            if name not in names or not (
                    (kind is float and value - value == 0.0)         # NaN and infinities are refused
                    or (kind is int and _INT64[0] <= value < _INT64[1])):
                break
        else:
            return dict(values), _PLAIN_POINT_BYTES * (len(values) + 2)
        cleaned = clean_fields(values, self._reserved, RESERVED)
        names.update(cleaned)
        return cleaned, len(bson.encode(cleaned)) + 2 * _PLAIN_POINT_BYTES

    def flush(self) -> int:
        """Store the buffered points and wait until every bucket is stored; how many points that was."""
        inflight = self._wait()
        if not self._indexes:
            return inflight
        bucket = self._take_bucket()
        self._collection.insert_one(bucket)
        return inflight + int(bucket["n"])

    def _hand_off(self) -> int:
        """Store the buffer as a bucket, in a thread on a server; how many points it holds."""
        if not self._background:
            return self.flush()
        self._wait()
        if not self._indexes:
            return 0
        bucket = self._take_bucket()
        thread = threading.Thread(target=self._store, args=(bucket,), name=f"tensorhub-metrics-{self.run_id}")
        self._inflight = (thread, bucket)
        thread.start()  # not a daemon: at interpreter exit the bucket in flight is still stored
        return int(bucket["n"])

    def _store(self, bucket: dict[str, Any]) -> None:
        try:
            self._collection.insert_one(bucket)
        except BaseException as error:  # handed to the logging thread by _wait()
            self._error = error

    def _wait(self) -> int:
        """Wait for the bucket in flight; raise its insert's error; how many points it held."""
        if self._inflight is None:
            return 0
        thread, bucket = self._inflight
        thread.join()
        self._inflight = None
        error, self._error = self._error, None
        if error is not None:
            raise error
        return int(bucket["n"])

    def _take_bucket(self) -> dict[str, Any]:
        bucket = self._bucket(self._indexes, self._times, self._values)
        self._indexes, self._times, self._values, self._bytes = [], [], [], 0
        return bucket

    def pending(self) -> list[dict[str, Any]]:
        """The points not known to be stored (buffered, or in flight) as point dicts."""
        inflight = self._inflight
        chunk = None if inflight is None else _Chunk.of_bucket(inflight[1], self.kind)
        points = [] if chunk is None else [point for _, point in chunk.points(self.kind)]
        for point in points:
            point["time"] = _millis(point["time"])
        points.extend({self.kind: index, "time": _millis(when), **values}
                      for index, when, values in zip(self._indexes, self._times, self._values, strict=True))
        return points

    def _bucket(self, indexes: list[int], times: list[dt.datetime], values: list[dict[str, Any]]) -> dict[str, Any]:
        names: dict[str, None] = {}
        for point in values:
            if any(name not in names for name in point):
                names.update(dict.fromkeys(point))
        columns = {name: [point.get(name) for point in values] for name in names}
        # The _id is given here, not by pymongo in the insert: readers merge repeated indexes in _id
        # order, and the bucket must not change under a reader while a thread inserts it.
        bucket: dict[str, Any] = {"_id": ObjectId(), "run_id": self.run_id, "kind": self.kind, "first": min(indexes),
                                  "last": max(indexes), "n": len(indexes)}
        if not _evenly_spaced(indexes):  # a fifth of a step bucket's values, and of the server's work on it
            bucket[self.kind] = list(indexes)
        bucket.update(time=list(times), metrics=columns)
        nulls = {name: [i for i, value in enumerate(column) if value is None and name in values[i]]
                 for name, column in columns.items() if None in column}
        nulls = {name: positions for name, positions in nulls.items() if positions}
        if nulls:
            bucket["nulls"] = nulls
        bucket[HUB] = self._project.stamp()
        return bucket


def _evenly_spaced(indexes: list[int]) -> bool:
    """True when ``indexes`` are ``range(first, last + 1, stride)``: first, last and n say them all."""
    first, last, n = indexes[0], indexes[-1], len(indexes)
    if n == 1:
        return True
    if last <= first or (last - first) % (n - 1):
        return False
    return indexes == list(range(first, last + 1, (last - first) // (n - 1)))


def _spaced(first: int, last: int, n: int) -> list[int]:
    """The indexes of a bucket stored without its index column (see _evenly_spaced)."""
    return [first] if n == 1 else list(range(first, last + 1, (last - first) // (n - 1)))


def _millis(when: dt.datetime) -> dt.datetime:
    """``when`` as the server stores it (BSON dates keep milliseconds)."""
    return when.replace(microsecond=when.microsecond // 1000 * 1000)


def ensure_indexes(collection: Collection) -> None:
    collection.create_index([("run_id", ASCENDING), ("kind", ASCENDING), ("first", ASCENDING)])


# -- reading ---------------------------------------------------------------------------------

@dataclass
class _Chunk:
    """The points of one bucket, as columns."""

    indexes: list[int]
    times: list[Any]
    metrics: dict[str, list[Any]]
    nulls: dict[str, list[int]] = field(default_factory=dict)

    @classmethod
    def of_bucket(cls, bucket: Mapping[str, Any], kind: str) -> _Chunk:
        if "points" in bucket:  # a bucket written before the column layout
            points = bucket["points"]
            names = dict.fromkeys(name for point in points for name in point if name not in (kind, "time"))
            return cls([p[kind] for p in points], [p.get("time") for p in points],
                       {name: [p.get(name) for p in points] for name in names},
                       {name: [i for i, p in enumerate(points) if name in p and p[name] is None] for name in names})
        indexes = bucket.get(kind)
        return cls(_spaced(bucket["first"], bucket["last"], bucket["n"]) if indexes is None else list(indexes),
                   list(bucket["time"]), dict(bucket.get("metrics") or {}), dict(bucket.get("nulls") or {}))

    def increasing(self, after: int) -> bool:
        """True when every index is greater than ``after`` and than the one before it."""
        previous = after
        for index in self.indexes:
            if index <= previous:
                return False
            previous = index
        return True

    def points(self, kind: str, at: int | None = None) -> Iterable[tuple[int, dict[str, Any]]]:
        """(index, point dict) of every point (or only index ``at``), without missing metrics."""
        nulls = {name: set(positions) for name, positions in self.nulls.items()}
        columns = list(self.metrics.items())
        for position, index in enumerate(self.indexes):
            if at is not None and index != at:
                continue
            point = {kind: index, "time": self.times[position]}
            for name, column in columns:
                value = column[position]
                if value is not None or position in nulls.get(name, ()):
                    point[name] = value
            yield index, point


def _chunks(collection: Collection, run_ids: Sequence[ObjectId], kind: str,
            at: int | None) -> dict[ObjectId, list[_Chunk]]:
    """Every run's buckets of ``kind`` (those holding index ``at`` if given), oldest first."""
    ids = list(dict.fromkeys(run_ids))
    query: dict[str, Any] = {"run_id": ids[0] if len(ids) == 1 else {"$in": ids}, "kind": kind}
    if at is not None:
        query.update(first={"$lte": at}, last={"$gte": at})
    # Only what a reader needs (not _hub, kind); no server-side sort: the order that
    # matters is insertion order, which the ObjectIds give (sorted here, for free).
    projection = {"run_id": 1, "first": 1, "last": 1, "n": 1, kind: 1, "time": 1, "metrics": 1, "nulls": 1, "points": 1}
    found: dict[ObjectId, list[tuple[ObjectId, _Chunk]]] = {run_id: [] for run_id in ids}
    for bucket in collection.find(query, projection):
        found.setdefault(bucket["run_id"], []).append((bucket["_id"], _Chunk.of_bucket(bucket, kind)))
    return {run_id: [chunk for _, chunk in sorted(chunks, key=lambda pair: pair[0])]
            for run_id, chunks in found.items()}


def _merged(chunks: Sequence[_Chunk], kind: str, at: int | None = None) -> list[dict[str, Any]]:
    """The points of one run's chunks (oldest first), one per index in index order, later values winning."""
    last, unique = -1, True
    for chunk in chunks:
        if not chunk.increasing(last):
            unique = False
            break
        if chunk.indexes:
            last = chunk.indexes[-1]
    if unique:  # every index once, in order: the points are the answer as they are
        return [point for chunk in chunks for _, point in chunk.points(kind, at)]
    by_index: dict[int, dict[str, Any]] = {}
    for chunk in chunks:
        for index, point in chunk.points(kind, at):
            merged = by_index.get(index)
            if merged is None:
                by_index[index] = point
            else:
                merged.update(point)
    return [by_index[i] for i in sorted(by_index)]


def read_points(collection: Collection, run_ids: Sequence[ObjectId], kind: str,
                at: int | None = None) -> dict[ObjectId, list[dict[str, Any]]]:
    """Every run's points of ``kind`` (only index ``at`` if given), merged per index, in order."""
    if not run_ids:
        return {}
    return {run_id: _merged(chunks, kind, at) for run_id, chunks in _chunks(collection, run_ids, kind, at).items()}


def merge_pending(points: list[dict[str, Any]], pending: Iterable[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """Stored points plus ones still in a writer's buffer, merged per index."""
    pending = list(pending)
    if not pending:
        return points  # the common case after a flush or close: nothing to merge, nothing to copy
    by_index = {p[kind]: dict(p) for p in points}
    for point in pending:
        by_index.setdefault(point[kind], {}).update(point)
    return [by_index[i] for i in sorted(by_index)]


def frame(rows: list[dict[str, Any]], first: Sequence[str]) -> pd.DataFrame:
    """Points as a DataFrame, built column by column (no json_normalize: points are flat)."""
    import pandas as pd
    names = dict.fromkeys(first)
    for row in rows:
        if any(name not in names for name in row):
            names.update(dict.fromkeys(row))
    return pd.DataFrame({name: _column([row.get(name) for row in rows]) for name in names}, columns=list(names))


def _column(values: list[Any]) -> Any:
    """A column's values; UTC datetimes as a ``datetime64[us, UTC]`` array.

    pymongo's aware datetimes carry its own UTC tzinfo, which pandas converts one object at a
    time (a third of a second per 100,000 points); naive values localized at once are ten times
    faster, and the column gets pandas' standard UTC zone.
    """
    import pandas as pd
    first = values[0] if values else None
    if not isinstance(first, dt.datetime) or first.utcoffset() != _ZERO:
        return values
    try:
        naive = [value.replace(tzinfo=None) if value.utcoffset() == _ZERO else _NOT_UTC for value in values]
    except (AttributeError, TypeError):  # None, or another type, somewhere in the column
        return values
    if _NOT_UTC in naive:
        return values
    return pd.DatetimeIndex(naive).tz_localize(_UTC)
