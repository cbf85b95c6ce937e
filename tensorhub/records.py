"""Named, versioned records that point at blobs: what datasets and models have in common.

A model document reads in Studio3T as TensorLayer's did, the user's keywords at the top::

    {_id, model_name: "mlp", version: 3, time: <UTC date>,
     test_accuracy: 0.97, name: "second_model", hp: {n_units: 800},     # the user's kwargs, as given
     _hub: {project: "mnist", version: 3, created_at: <UTC date>, sha256: "…", size: 1234567,
            summary: "keras Sequential", payload: {type: "blob", codec: "keras", …}, blob_ids: […]}}

``_hub`` holds the hub's bookkeeping, out of the way of any keyword. ``time`` (the creation time)
and ``version`` (the hub's version number) are filled in at the top level for TensorLayer's
queries and sorts, unless the user passes their own, which are then stored as given; the hub's own
values always stay in ``_hub``.

The bytes are written (and committed) before the document that references them is inserted, so a
crash leaves at worst an orphan blob, never a document pointing at missing bytes. Identical
content is stored once: a second save of the same dataset gets its own record (and version, and
keywords) pointing at the same blobs, and a blob is deleted only when no record references it.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING
from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError

from tensorhub import payloads
from tensorhub.blobs import BlobStore
from tensorhub.errors import InvalidArgument, TensorHubError
from tensorhub.fields import HUB, build_query, clean_fields, normalize_sort, utcnow, with_tiebreak
from tensorhub.project import PROJECT_FIELD, Project

# ObjectIds grow with insertion time, so "newest first" is _id descending: one (..., field, _id)
# index then serves both an equality on a field and the default order.
NEWEST_FIRST = [("_id", DESCENDING)]
VERSION_RETRIES = 50
IsReferenced = Callable[[list[ObjectId]], set[ObjectId]]


@dataclass
class Record:
    """A stored dataset or model, described without loading its bytes.

    >>> rec = hub.list_models(model_name="mlp")[0]          # newest first, nothing loaded yet
    >>> rec.version, rec.fields["test_accuracy"], rec.summary
    (2, 0.97, 'keras')
    >>> net = rec.load()
    """

    id: ObjectId
    name: str
    version: int
    created_at: dt.datetime
    fields: dict[str, Any]
    summary: str
    size: int
    sha256: str
    document: dict[str, Any] = field(repr=False)
    _store: RecordStore = field(repr=False, compare=False)

    def load(self, allow_pickle: bool = False) -> Any:
        """Read and verify the bytes, and rebuild the object."""
        return payloads.decode(self.document[HUB]["payload"], self._store.blobs, allow_pickle)

    @property
    def blob_ids(self) -> list[ObjectId]:
        return list(self.document[HUB].get("blob_ids", []))


class RecordStore:
    """One collection of named, versioned records of one project."""

    def __init__(self, collection: Collection, blobs: BlobStore, project: Project, name_field: str,
                 is_referenced: IsReferenced, *, dedupe: bool,
                 indexes: Sequence[list[tuple[str, int]]] = ()) -> None:
        self.collection = collection
        self.indexes = list(indexes)          # more indexes for the queries a caller makes
        self.blobs = blobs
        self.project = project
        self.name_field = name_field          # "dataset_name" / "model_name", as in TensorLayer
        self.is_referenced = is_referenced    # which blob ids some record (anywhere) still uses
        self.dedupe = dedupe

    def ensure_indexes(self) -> None:
        c, name = self.collection, self.name_field
        c.create_index([(PROJECT_FIELD, ASCENDING), (name, ASCENDING), (f"{HUB}.version", DESCENDING)],
                       unique=True)
        newest = ("_id", DESCENDING)
        c.create_index([(PROJECT_FIELD, ASCENDING), (name, ASCENDING), newest])
        c.create_index([(PROJECT_FIELD, ASCENDING), newest])
        c.create_index([(PROJECT_FIELD, ASCENDING), (name, ASCENDING), ("time", DESCENDING), newest])
        c.create_index([(PROJECT_FIELD, ASCENDING), (name, ASCENDING), ("version", DESCENDING), newest])
        c.create_index([(f"{HUB}.blob_ids", ASCENDING)])
        if self.dedupe:
            c.create_index([(PROJECT_FIELD, ASCENDING), (f"{HUB}.sha256", ASCENDING)])
        for keys in self.indexes:
            c.create_index(keys)

    # -- writing -------------------------------------------------------------------------------
    def save(self, obj: Any, name: str, allow_pickle: bool = False, extra: dict[str, Any] | None = None,
             /, **kwargs: Any) -> Record:
        """Store ``obj`` as the next version of ``name`` with the user's ``kwargs`` as fields.

        ``extra`` is more bookkeeping for ``_hub`` (the run that saved it, say).
        """
        if not isinstance(name, str) or not name:
            raise InvalidArgument(f"{self.name_field} must be a non-empty string, got {name!r}")
        user_fields = clean_fields(kwargs, {self.name_field}, {
            self.name_field: f"it is the record's name; pass it as the {self.name_field} argument"})
        if self.dedupe:
            reused = self._save_reusing(obj, name, allow_pickle, user_fields, extra)
            if reused is not None:
                return reused
        tree = payloads.encode_to_blobs(obj, self.blobs, allow_pickle,
                                        kind=self.collection.name, record=name)
        try:
            return self._insert(name, tree, user_fields, extra)
        except BaseException:
            self.blobs.delete(ref.id for ref in payloads.blob_refs(tree))
            raise

    def _save_reusing(self, obj: Any, name: str, allow_pickle: bool, user_fields: dict[str, Any],
                      extra: dict[str, Any] | None) -> Record | None:
        """Same bytes as a stored record: a new record sharing its blobs (metadata is never merged).

        The record goes in first, then the blobs are checked: a concurrent delete that released
        them meanwhile is seen here (and we upload afresh), or it saw our record and kept them.
        """
        sha = payloads.hash_only(obj, allow_pickle)
        twin = self.collection.find_one(self.project.scope({f"{HUB}.sha256": sha}), {f"{HUB}.payload": 1})
        if twin is None:
            return None
        record = self._insert(name, twin[HUB]["payload"], user_fields, extra)
        if self.blobs.still_usable(record.blob_ids):
            return record
        self.collection.delete_one({"_id": record.id})
        return None

    def _insert(self, name: str, tree: dict[str, Any], user_fields: dict[str, Any],
                extra: dict[str, Any] | None) -> Record:
        refs = payloads.blob_refs(tree)
        bookkeeping = {"sha256": payloads.content_hash(tree), "size": sum(ref.size for ref in refs),
                       "summary": payloads.describe(tree), "payload": tree,
                       "blob_ids": [ref.id for ref in refs], **(extra or {})}
        for _ in range(VERSION_RETRIES):
            version, now = self._next_version(name), utcnow()
            doc = {self.name_field: name, "version": version, "time": now, **user_fields,
                   HUB: self.project.stamp(version=version, created_at=now, **bookkeeping)}
            try:
                self.collection.insert_one(doc)
                return self._record(doc)
            except DuplicateKeyError:
                continue  # a concurrent save took this version number: take the next one
        raise TensorHubError(f"could not assign a version to {name!r} after {VERSION_RETRIES} tries")

    def _next_version(self, name: str) -> int:
        last = self.collection.find_one(self.project.scope({self.name_field: name}), {f"{HUB}.version": 1},
                                        sort=[(f"{HUB}.version", DESCENDING)])
        return 1 if last is None else int(last[HUB]["version"]) + 1

    # -- reading -------------------------------------------------------------------------------
    def query(self, name: str | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        query = self.project.scope(build_query(kwargs, {PROJECT_FIELD}))
        if name is not None:
            query[self.name_field] = name
        return query

    def find(self, name: str | None = None, sort: Any = None, limit: int = 0, /, **kwargs: Any) -> list[Record]:
        """Records matching ``name`` and the query kwargs, newest first unless ``sort`` says otherwise."""
        order = normalize_sort(sort)
        order = NEWEST_FIRST if order is None else with_tiebreak(order)
        cursor = self.collection.find(self.query(name, kwargs), sort=order, limit=limit)
        return [self._record(doc) for doc in cursor]

    def find_top(self, name: str | None = None, sort: Any = None, /, **kwargs: Any) -> Record | None:
        found = self.find(name, sort, 1, **kwargs)
        return found[0] if found else None

    def referenced(self, blob_ids: Sequence[ObjectId]) -> set[ObjectId]:
        """Which of ``blob_ids`` records of this collection (any project) reference."""
        wanted = set(blob_ids)
        found: set[ObjectId] = set()
        for doc in self.collection.find({f"{HUB}.blob_ids": {"$in": list(blob_ids)}}, {f"{HUB}.blob_ids": 1}):
            found.update(wanted.intersection(doc[HUB].get("blob_ids", [])))
        return found

    # -- deleting ------------------------------------------------------------------------------
    def delete(self, name: str | None = None, /, **kwargs: Any) -> int:
        """Delete matching records, and their blobs unless another record still uses them."""
        count = 0
        for doc in self.collection.find(self.query(name, kwargs), {f"{HUB}.blob_ids": 1}):
            # Document first: a crash after it leaves orphan bytes, never a dangling reference.
            if self.collection.delete_one({"_id": doc["_id"]}).deleted_count:
                self.blobs.release(doc[HUB].get("blob_ids", []), self.is_referenced)
                count += 1
        return count

    def _record(self, doc: dict[str, Any]) -> Record:
        hub = doc[HUB]
        user = {k: v for k, v in doc.items() if k not in ("_id", HUB, self.name_field)}
        return Record(doc["_id"], doc[self.name_field], int(hub["version"]), hub["created_at"], user,
                      hub.get("summary", ""), int(hub.get("size", 0)), hub.get("sha256", ""), doc, self)


class _AttrList(list):
    """A list that can carry the record's fields as attributes."""


class _AttrDict(dict):
    """A dict that can carry the record's fields as attributes."""


class _AttrTuple(tuple):
    """A tuple that can carry the record's fields as attributes."""


def attach_record(obj: Any, record: Record) -> Any:
    """Expose a record on its loaded object: ``obj.hub_record``, and TensorLayer's ``obj._<field>``.

    A field never replaces an attribute the object already has (a Keras model's ``_layers``, say):
    such fields are only on ``obj.hub_record.fields``.
    """
    for plain, wrapped in ((list, _AttrList), (dict, _AttrDict), (tuple, _AttrTuple)):
        if type(obj) is plain:
            obj = wrapped(obj)
    attributes = {"hub_record": record, "_id": record.id, "_version": record.version,
                  f"_{record._store.name_field}": record.name,
                  **{f"_{key}": value for key, value in record.fields.items()}}
    for key, value in attributes.items():
        try:
            if key == "hub_record" or not hasattr(obj, key):
                setattr(obj, key, value)
        except (AttributeError, TypeError):
            return obj  # e.g. numpy arrays take no attributes: use list_models() records instead
    return obj


def records_frame(records: list[Record], name_column: str) -> Any:
    """Records as a DataFrame: id, name, version, creation, size, sha256, summary, the run that
    saved it (if any), then the user's keywords (nested ones as dotted columns)."""
    import pandas as pd

    from tensorhub.fields import flatten

    rows = []
    for record in records:
        saved_by = record.document[HUB].get("run") or {}
        rows.append({"id": str(record.id), name_column: record.name, "version": record.version,
                     "created_at": record.created_at, "size": record.size, "sha256": record.sha256,
                     "summary": record.summary,
                     "run_id": None if not saved_by else str(saved_by.get("run_id")),
                     **flatten({k: v for k, v in record.fields.items() if k != "version"})})
    first = ["id", name_column, "version", "created_at", "size", "sha256", "summary", "run_id"]
    columns = first + [c for row in rows for c in row if c not in first]
    return pd.DataFrame(rows, columns=list(dict.fromkeys(columns)))
