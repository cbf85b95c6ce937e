"""Named, versioned records that point at blobs: what datasets and models have in common.

A record document reads in Studio3T as::

    {_id, project: "mnist", name: "mlp", version: 3, created_at: <UTC date>,
     test_accuracy: 0.97, hp: {n_units: 800},          # the user's kwargs, as given
     summary: "keras Sequential", size: 1234567, sha256: "…",
     payload: {type: "blob", codec: "keras", info: {architecture: {…}}, blob: {id, size, sha256, format}},
     blob_ids: [ObjectId(…)]}

The bytes are written (and committed) before the document that references them is inserted, so a
crash leaves at worst an orphan blob, never a document pointing at missing bytes.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING
from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError

from tensorhub import payloads
from tensorhub.blobs import BlobStore
from tensorhub.errors import InvalidArgument, TensorHubError
from tensorhub.fields import build_query, clean_fields, normalize_sort, utcnow

RESERVED = frozenset({"_id", "project", "name", "version", "created_at", "payload", "summary",
                      "size", "sha256", "blob_ids"})
NOT_QUERYABLE = frozenset({"project", "payload", "blob_ids"})
NEWEST_FIRST = [("created_at", DESCENDING), ("_id", DESCENDING)]
VERSION_RETRIES = 50


@dataclass
class Record:
    """A stored dataset or model, described without loading its bytes.

    >>> rec = hub.list_models(model_name="mlp")[0]
    >>> rec.version, rec.fields["test_accuracy"], rec.load()
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
    _store: "RecordStore" = field(repr=False, compare=False)

    def load(self, allow_pickle: bool = False) -> Any:
        """Read and verify the bytes, and rebuild the object."""
        return payloads.decode(self.document["payload"], self._store.blobs, allow_pickle)


class RecordStore:
    """One collection of named, versioned records of one project."""

    def __init__(self, collection: Collection, blobs: BlobStore, project: str, *, dedupe: bool) -> None:
        self.collection = collection
        self.blobs = blobs
        self.project = project
        self.dedupe = dedupe

    def ensure_indexes(self) -> None:
        c = self.collection
        c.create_index([("project", ASCENDING), ("name", ASCENDING), ("version", ASCENDING)], unique=True)
        c.create_index([("project", ASCENDING), ("created_at", DESCENDING)])
        if self.dedupe:
            c.create_index([("project", ASCENDING), ("name", ASCENDING), ("sha256", ASCENDING)], unique=True)

    # -- writing -------------------------------------------------------------------------------
    def save(self, obj: Any, name: str, allow_pickle: bool = False, **kwargs: Any) -> Record:
        """Store ``obj`` as the next version of ``name``; with dedupe, same content = same record."""
        if not isinstance(name, str) or not name:
            raise InvalidArgument(f"name must be a non-empty string, got {name!r}")
        user_fields = clean_fields(kwargs, RESERVED)
        if self.dedupe:
            existing = self._same_content(name, payloads.hash_only(obj, allow_pickle))
            if existing is not None:
                return existing
        tree = payloads.encode_to_blobs(obj, self.blobs, allow_pickle,
                                        kind=self.collection.name, record=name)
        refs = payloads.blob_refs(tree)
        try:
            return self._insert(name, tree, refs, user_fields)
        except BaseException:
            self.blobs.delete(ref.id for ref in refs)
            raise

    def _insert(self, name: str, tree: dict[str, Any], refs: list[Any], user_fields: dict[str, Any]) -> Record:
        sha = payloads.content_hash(tree)
        for _ in range(VERSION_RETRIES):
            doc = {"project": self.project, "name": name, "version": self._next_version(name),
                   "created_at": utcnow(), **user_fields, "summary": payloads.describe(tree),
                   "size": sum(ref.size for ref in refs), "sha256": sha, "payload": tree,
                   "blob_ids": [ref.id for ref in refs]}
            try:
                self.collection.insert_one(doc)
                return self._record(doc)
            except DuplicateKeyError:
                # Either a concurrent save took our version number (try the next), or it
                # stored the same content first (dedupe: drop our copy, return theirs).
                existing = self._same_content(name, sha) if self.dedupe else None
                if existing is not None:
                    self.blobs.delete(ref.id for ref in refs)
                    return existing
        raise TensorHubError(f"could not assign a version to {name!r} after {VERSION_RETRIES} tries")

    def _next_version(self, name: str) -> int:
        last = self.collection.find_one({"project": self.project, "name": name}, {"version": 1},
                                        sort=[("version", DESCENDING)])
        return 1 if last is None else int(last["version"]) + 1

    def _same_content(self, name: str, sha: str) -> Record | None:
        doc = self.collection.find_one({"project": self.project, "name": name, "sha256": sha})
        return None if doc is None else self._record(doc)

    # -- reading -------------------------------------------------------------------------------
    def query(self, name: str | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        query = {"project": self.project, **build_query(kwargs, NOT_QUERYABLE)}
        if name is not None:
            query["name"] = name
        return query

    def find(self, name: str | None = None, sort: Any = None, limit: int = 0, **kwargs: Any) -> list[Record]:
        """Records matching ``name`` and the query kwargs, newest first unless ``sort`` says otherwise."""
        order = normalize_sort(sort) or NEWEST_FIRST
        cursor = self.collection.find(self.query(name, kwargs), sort=order, limit=limit)
        return [self._record(doc) for doc in cursor]

    def find_top(self, name: str | None = None, sort: Any = None, **kwargs: Any) -> Record | None:
        found = self.find(name, sort, limit=1, **kwargs)
        return found[0] if found else None

    def iter_all(self) -> Iterator[dict[str, Any]]:
        return self.collection.find({"project": self.project}, {"blob_ids": 1})

    # -- deleting ------------------------------------------------------------------------------
    def delete(self, name: str | None = None, **kwargs: Any) -> int:
        """Delete matching records and their blobs; returns how many records went."""
        count = 0
        for doc in self.collection.find(self.query(name, kwargs), {"blob_ids": 1}):
            # Document first: a crash after it leaves orphan bytes, never a dangling reference.
            if self.collection.delete_one({"_id": doc["_id"]}).deleted_count:
                self.blobs.delete(doc.get("blob_ids", []))
                count += 1
        return count

    def _record(self, doc: dict[str, Any]) -> Record:
        user = {k: v for k, v in doc.items() if k not in RESERVED}
        return Record(doc["_id"], doc["name"], int(doc["version"]), doc["created_at"], user,
                      doc.get("summary", ""), int(doc.get("size", 0)), doc.get("sha256", ""), doc, self)
