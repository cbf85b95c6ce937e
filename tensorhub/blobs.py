"""Streaming blobs in the GridFS layout, with sha256 written at upload and verified at download.

Files live in the ``blobs.files`` / ``blobs.chunks`` collections exactly as GridFS lays them out
(``files_id``, ``n``, ``data``; ``length``, ``chunkSize``, ``uploadDate``, ``filename``), so
mongofiles, pymongo's ``GridFSBucket`` and Studio3T's GridFS viewer read them, and files they
upload read here (verified by length and chunks; by sha256 too when the metadata has one). We
write the layout ourselves instead of using pymongo's ``gridfs`` because ``gridfs`` refuses
mongomock databases (our embedded store) and because we want the integrity check inside the
stream: chunks go first, the files document last as the commit marker, and a failed write
deletes its partial chunks. Like ``gridfs`` we refuse an unacknowledged write concern and
reopen a chunk cursor the server dropped under a slow reader.

    with blobs.open_writer("weights.npy", fmt="npy") as out:
        out.write(b"...")
    ref = out.ref                                     # BlobRef(id, size, sha256, format)
    with blobs.open_reader(ref.id) as src:
        data = src.read()                             # CorruptBlob if the bytes changed

Each blob belongs to one project (``metadata.project``, and ``project`` on its first chunk, so an
upload that died before its files document is still traceable): see :meth:`BlobStore.release`
for deleting blobs that records share, :meth:`BlobStore.delete_orphans` for cleaning up.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import io
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from bson import Binary, ObjectId
from pymongo import ASCENDING
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import CursorNotFound, OperationFailure
from pymongo.write_concern import WriteConcern

from tensorhub.errors import CorruptBlob, InvalidArgument
from tensorhub.fields import utcnow

BUCKET = "blobs"
CHUNK_SIZE = 255 * 1024
CHUNKS_PER_INSERT = 16  # ~4 MB per round trip: well under the 16 MB message limit
CHUNKS_PER_READ = 16    # the same per getMore when reading
ORPHAN_BATCH = 1000     # ids per query and per is_referenced call when scanning and releasing
RELEASE_MARK_TTL = dt.timedelta(minutes=5)  # a release mark older than this is a crashed releaser's
UPLOADS_INDEX = "project_1_files_id_1"
NOT_IMPLEMENTED = 238   # the server error code FerretDB v1 answers partialFilterExpression with

#: Given a batch of blob ids, returns those some record references (the facade's indexed ``$in``).
IsReferenced = Callable[[list[ObjectId]], set[ObjectId]]


@dataclass(frozen=True)
class BlobRef:
    """What a document stores about a blob: enough to find it and check it."""

    id: ObjectId
    size: int
    sha256: str
    format: str

    def to_doc(self) -> dict[str, Any]:
        return {"id": self.id, "size": self.size, "sha256": self.sha256, "format": self.format}

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> BlobRef:
        return cls(doc["id"], int(doc["size"]), doc["sha256"], doc["format"])


class BlobWriter(io.RawIOBase):
    """A write-only stream into one blob; ``close()`` commits, an exception in ``with`` aborts."""

    def __init__(self, store: BlobStore, filename: str, fmt: str, metadata: dict[str, Any],
                 on_commit: Callable[[BlobRef], None] | None = None) -> None:
        super().__init__()
        self._on_commit = on_commit
        self._files = store.files
        self._chunks = store.chunks
        self._project = store.project
        self._id = ObjectId()  # its timestamp is the upload's start: the age orphan scans go by
        self._filename = filename
        self._format = fmt
        self._metadata = metadata
        self._hash = hashlib.sha256()
        self._buffer = bytearray()
        self._pending: list[dict[str, Any]] = []
        self._n = 0
        self._size = 0
        self.ref: BlobRef | None = None

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        if self.closed:
            raise ValueError("write to a closed blob")
        view = memoryview(data).cast("B")
        self._hash.update(view)
        self._size += len(view)
        self._buffer += view
        while len(self._buffer) >= CHUNK_SIZE:
            self._queue_chunk(bytes(self._buffer[:CHUNK_SIZE]))
            del self._buffer[:CHUNK_SIZE]
        return len(view)

    def _queue_chunk(self, data: bytes) -> None:
        chunk: dict[str, Any] = {"files_id": self._id, "n": self._n, "data": Binary(data)}
        if self._n == 0:
            # Until the files document exists, this is the only trace of whose upload it is;
            # GridFS readers ignore the extra field. One chunk is enough to find the upload.
            chunk["project"] = self._project
        self._pending.append(chunk)
        self._n += 1
        if len(self._pending) >= CHUNKS_PER_INSERT:
            self._flush_chunks()

    def _flush_chunks(self) -> None:
        if self._pending:
            self._chunks.insert_many(self._pending, ordered=True)
            self._pending = []

    def close(self) -> None:
        """Write the last chunk, then the files document that makes the blob exist."""
        if self.closed:
            return
        try:
            if self._buffer:
                self._queue_chunk(bytes(self._buffer))
                self._buffer.clear()
            self._flush_chunks()
            sha = self._hash.hexdigest()
            self._files.insert_one({
                "_id": self._id, "filename": self._filename, "length": self._size,
                "chunkSize": CHUNK_SIZE, "uploadDate": utcnow(),
                "metadata": {**self._metadata, "sha256": sha, "format": self._format},
            })
            self.ref = BlobRef(self._id, self._size, sha, self._format)
            if self._on_commit is not None:
                self._on_commit(self.ref)
        except BaseException:
            self.abort()
            raise
        super().close()

    def abort(self) -> None:
        """Forget everything written so far (deletes the partial chunks)."""
        self._pending = []
        self._buffer.clear()
        _delete_chunks(self._chunks, [self._id])
        super().close()

    def __exit__(self, exc_type: Any, *rest: Any) -> None:
        if exc_type is not None:
            self.abort()
        else:
            self.close()

    def __del__(self) -> None:
        # io's default would close() and so commit a half-written blob; an abandoned writer's
        # chunks stay behind as an interrupted upload instead (see BlobStore.iter_orphans).
        pass


class BlobReader(io.RawIOBase):
    """A read-only stream of one blob, checked chunk by chunk and by sha256 at the end.

    Files uploaded by other GridFS tools have no sha256 in their metadata: for them the chunk
    numbers, chunk sizes and total length are what is checked.
    """

    def __init__(self, chunks: Collection, file_doc: dict[str, Any]) -> None:
        super().__init__()
        self._chunks = chunks
        self._doc = file_doc
        self._length = int(file_doc["length"])
        self._chunk_size = int(file_doc["chunkSize"])
        self._expected_sha = (file_doc.get("metadata") or {}).get("sha256")
        self._hash = hashlib.sha256()
        self._buffer = memoryview(b"")
        self._next_n = 0
        self._served = 0
        self._verified = False
        self._cursor = self._open_cursor()

    def _open_cursor(self) -> Any:
        return self._chunks.find({"files_id": self._doc["_id"], "n": {"$gte": self._next_n}},
                                 sort=[("n", ASCENDING)], batch_size=CHUNKS_PER_READ)

    def readable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        if not self._buffer and not self._load_next_chunk():
            return 0
        count = min(len(target), len(self._buffer))
        memoryview(target).cast("B")[:count] = self._buffer[:count]
        self._buffer = self._buffer[count:]
        return count

    def _next_chunk_doc(self) -> dict[str, Any] | None:
        try:
            return next(self._cursor, None)
        except CursorNotFound:
            # The server dropped our cursor: it kills cursors idle for 10 minutes, i.e. a reader
            # whose consumer is slow. Reopen at the chunk we need next, once; losing the new
            # cursor straight away is a real failure and propagates.
            self._cursor.close()
            self._cursor = self._open_cursor()
            return next(self._cursor, None)

    def _load_next_chunk(self) -> bool:
        chunk = self._next_chunk_doc()
        if chunk is None:
            self._verify_end()
            return False
        data = bytes(chunk["data"])
        expected = min(self._chunk_size, self._length - self._served)
        if chunk["n"] != self._next_n or len(data) != expected:
            raise CorruptBlob(f"blob {self._doc['_id']}: chunk {self._next_n} is missing or the "
                              f"wrong size (got n={chunk['n']}, {len(data)} bytes, wanted {expected})")
        self._next_n += 1
        self._served += len(data)
        self._hash.update(data)
        self._buffer = memoryview(data)
        return True

    def _verify_end(self) -> None:
        if self._verified:
            return
        if self._served != self._length:
            raise CorruptBlob(f"blob {self._doc['_id']}: {self._served} of {self._length} bytes present")
        if self._expected_sha and self._hash.hexdigest() != self._expected_sha:
            raise CorruptBlob(f"blob {self._doc['_id']}: sha256 mismatch, the stored bytes changed")
        self._verified = True

    def verify_rest(self) -> None:
        """Read whatever the consumer left unread and check length and sha256."""
        while self._load_next_chunk():
            self._buffer = memoryview(b"")

    def close(self) -> None:
        self._cursor.close()
        super().close()


class BlobStore:
    """The ``blobs`` bucket of one database, as one project sees it.

    Writing, reading and :meth:`delete` work on any blob id; :meth:`release`,
    :meth:`still_usable`'s marks and the orphan scans only ever touch this project's blobs.
    """

    def __init__(self, db: Database, project: str | None) -> None:
        _require_acknowledged(db)
        self.db = db
        self.project = project
        self.files = db[f"{BUCKET}.files"]
        self.chunks = db[f"{BUCKET}.chunks"]

    def ensure_indexes(self) -> None:
        self.chunks.create_index([("files_id", ASCENDING), ("n", ASCENDING)], unique=True)  # GridFS'
        self.files.create_index([("filename", ASCENDING), ("uploadDate", ASCENDING)])       # GridFS'
        self.files.create_index([("metadata.project", ASCENDING), ("_id", ASCENDING)])      # by age
        self._create_uploads_index()

    def _create_uploads_index(self) -> None:
        # Serves {project, files_id < cutoff}. Only first chunks have `project`; a partial index
        # holds just those (`sparse` would not: a compound sparse index takes every document with
        # any of its keys, and every chunk has files_id). FerretDB v1 refuses partial indexes and
        # uses none for lookups anyway: it gets the full index, one small entry per chunk.
        keys = [("project", ASCENDING), ("files_id", ASCENDING)]
        try:
            self.chunks.create_index(keys, name=UPLOADS_INDEX,
                                     partialFilterExpression={"project": {"$exists": True}})
        except OperationFailure as err:
            if err.code != NOT_IMPLEMENTED:
                raise
            self.chunks.create_index(keys, name=UPLOADS_INDEX)

    # -- writing and reading ---------------------------------------------------------------------
    def open_writer(self, filename: str, fmt: str, on_commit: Callable[[BlobRef], None] | None = None,
                    **metadata: Any) -> BlobWriter:
        """Open a stream that becomes a blob of ``fmt`` when closed (``with`` closes it).

        ``on_commit`` is called with the :class:`BlobRef` once the blob exists.
        """
        return BlobWriter(self, filename, fmt, {**metadata, "project": self.project}, on_commit)

    def open_reader(self, blob_id: ObjectId) -> BlobReader:
        """Open a verified stream over a stored blob; :class:`CorruptBlob` if it is missing."""
        doc = self.files.find_one({"_id": blob_id})
        if doc is None:
            raise CorruptBlob(f"blob {blob_id} is referenced but its bytes are missing")
        return BlobReader(self.chunks, doc)

    def write_bytes(self, data: bytes, filename: str, fmt: str, **metadata: Any) -> BlobRef:
        with self.open_writer(filename, fmt, **metadata) as out:
            out.write(data)
        assert out.ref is not None
        return out.ref

    def read_bytes(self, blob_id: ObjectId) -> bytes:
        with self.open_reader(blob_id) as src:
            data = src.read()
            src.verify_rest()
        return data

    # -- deleting --------------------------------------------------------------------------------
    def delete(self, blob_ids: Iterable[ObjectId]) -> int:
        """Delete blobs unconditionally (those of a failed save, which nothing else can share).

        Files documents first, so no blob is ever half-visible, then their chunks.
        """
        ids = list(blob_ids)
        if not ids:
            return 0
        deleted = self.files.delete_many({"_id": {"$in": ids}}).deleted_count
        _delete_chunks(self.chunks, ids)
        return deleted

    def release(self, blob_ids: Iterable[ObjectId], is_referenced: IsReferenced) -> int:
        """Delete those of this project's ``blob_ids`` that no record references; returns how many.

        Records share blobs (a second save of the same content points at the same ones), so a
        record's blobs may only go once no record references them, and a save that is just
        starting to reuse them must not lose them. Two flags settle it:

        - release marks each files document (``metadata.releasing``), *then* asks
          ``is_referenced``, then deletes the unreferenced (files document first) and unmarks
          the rest;
        - a saver inserts its record, *then* calls :meth:`still_usable`; if that says False it
          withdraws the record and uploads fresh bytes.

        Each side writes its flag before it reads the other's. If the saver's check ran before
        the mark, its record was inserted before the mark too, so ``is_referenced`` (which runs
        after the mark) sees it and the blob stays; otherwise the saver sees the mark and backs
        off. Both may see each other (the blob is kept and may become an orphan for
        :meth:`delete_orphans`), never neither. This needs reads from the primary (the default).

        A mark older than :data:`RELEASE_MARK_TTL` counts as absent (a crashed releaser's), and
        release takes such blobs over; it deletes nothing once its own mark is older than half
        of that, so pauses and clock skew below that margin are safe. A blob another release
        holds a fresh mark on is left to that one.
        """
        ids = list(dict.fromkeys(blob_ids))
        return sum(self._release_batch(ids[i:i + ORPHAN_BATCH], is_referenced)
                   for i in range(0, len(ids), ORPHAN_BATCH))

    def still_usable(self, blob_ids: Iterable[ObjectId]) -> bool:
        """True if every blob exists and no release is under way on it (see :meth:`release`).

        Call it after inserting the record that reuses the blobs, never before.
        """
        ids = list(set(blob_ids))
        if not ids:
            return True
        usable = {"_id": {"$in": ids}, **_unmarked(utcnow())}
        return self.files.count_documents(usable) == len(ids)

    def _release_batch(self, ids: list[ObjectId], is_referenced: IsReferenced) -> int:
        now, token = utcnow(), ObjectId()
        mark: dict[str, Any] = {"at": now, "token": token}
        ours = {"_id": {"$in": ids}, "metadata.project": _is(self.project), **_unmarked(now)}
        self.files.update_many(ours, {"$set": {"metadata.releasing": mark}})
        held = [doc["_id"] for doc in self.files.find(
            {"_id": {"$in": ids}, "metadata.releasing.token": token}, {"_id": 1})]
        if not held:
            return 0
        referenced = is_referenced(held)
        deleted = self._delete_held([i for i in held if i not in referenced], mark)
        self._unmark([i for i in held if i in referenced], token)
        return deleted

    def _delete_held(self, ids: list[ObjectId], mark: dict[str, Any]) -> int:
        if not ids:
            return 0
        if utcnow() - mark["at"] > RELEASE_MARK_TTL / 2:
            # Too slow: savers may soon take our mark for a crashed releaser's. Keep the blobs.
            self._unmark(ids, mark["token"])
            return 0
        deleted = self.files.delete_many({"_id": {"$in": ids}, "metadata.releasing.token": mark["token"]})
        gone = ids
        if deleted.deleted_count != len(ids):  # another release took some over: its chunks, too
            still = {doc["_id"] for doc in self.files.find({"_id": {"$in": ids}}, {"_id": 1})}
            gone = [i for i in ids if i not in still]
        _delete_chunks(self.chunks, gone)
        return deleted.deleted_count

    def _unmark(self, ids: list[ObjectId], token: ObjectId) -> None:
        if ids:
            self.files.update_many({"_id": {"$in": ids}, "metadata.releasing.token": token},
                                   {"$unset": {"metadata.releasing": ""}})

    def _clear_stale_marks(self, ids: list[ObjectId]) -> None:
        stale = {"_id": {"$in": ids}, "metadata.releasing.at": {"$lt": utcnow() - RELEASE_MARK_TTL}}
        self.files.update_many(stale, {"$unset": {"metadata.releasing": ""}})

    # -- orphans ---------------------------------------------------------------------------------
    def iter_orphans(self, is_referenced: IsReferenced, older_than: dt.timedelta) -> Iterator[ObjectId]:
        """Ids of this project's blobs that nothing references, and of its interrupted uploads.

        Only uploads that started more than ``older_than`` ago count: keep it longer than your
        slowest upload, since the chunks of one in flight look exactly like a crashed one's.
        Interrupted uploads are chunks whose files document was never written. Blobs of other
        projects, and files other GridFS tools uploaded, are never listed. The scan walks the
        ids in batches of :data:`ORPHAN_BATCH` (one indexed query and one ``is_referenced``
        call each), so no reply holds every id.
        """
        cutoff = ObjectId.from_datetime(utcnow() - older_than)
        for page in self._file_pages(cutoff):
            yield from _unreferenced(page, is_referenced)
        for page in self._interrupted_pages(cutoff):
            yield from _unreferenced(page, is_referenced)

    def delete_orphans(self, is_referenced: IsReferenced, older_than: dt.timedelta) -> int:
        """Delete what :meth:`iter_orphans` finds; returns how many blobs and uploads went.

        Orphan blobs go through :meth:`release`, so a save reusing one meanwhile keeps it.
        Stale release marks on the blobs scanned are cleared on the way.
        """
        cutoff = ObjectId.from_datetime(utcnow() - older_than)
        count = 0
        for page in self._file_pages(cutoff):
            count += self.release(_unreferenced(page, is_referenced), is_referenced)
            self._clear_stale_marks(page)
        for page in self._interrupted_pages(cutoff):
            orphans = _unreferenced(page, is_referenced)
            _delete_chunks(self.chunks, orphans)
            count += len(orphans)
        return count

    def find_orphans(self, referenced: set[ObjectId], older_than: dt.timedelta) -> list[ObjectId]:
        """Compatibility for callers that hold every referenced id; prefer :meth:`iter_orphans`."""
        return list(self.iter_orphans(lambda batch: referenced.intersection(batch), older_than))

    def _file_pages(self, cutoff: ObjectId) -> Iterator[list[ObjectId]]:
        return _id_pages(self.files, {"metadata.project": _is(self.project)}, "_id", cutoff)

    def _interrupted_pages(self, cutoff: ObjectId) -> Iterator[list[ObjectId]]:
        """Pages of ids of this project's uploads that have chunks but no files document."""
        for page in _id_pages(self.chunks, {"project": _is(self.project)}, "files_id", cutoff):
            committed = {doc["_id"] for doc in self.files.find({"_id": {"$in": page}}, {"_id": 1})}
            missing = [i for i in page if i not in committed]
            if missing:
                yield missing


def _require_acknowledged(db: Database) -> None:
    # With w=0 a lost chunk insert goes unnoticed and the files document commits a blob with a
    # hole; gridfs refuses such databases too. mongomock has no write concern (the attribute
    # names a collection there) and acknowledges everything.
    concern = getattr(db, "write_concern", None)
    if isinstance(concern, WriteConcern) and not concern.acknowledged:
        raise InvalidArgument("blobs need acknowledged writes, but the database's write concern is "
                              "w=0 (unacknowledged); remove w=0 from the URI or client options")


def _delete_chunks(chunks: Collection, ids: list[ObjectId]) -> None:
    if not ids:
        return
    # Chunk 0 goes last: it names the project, so a deletion cut short leaves an interrupted
    # upload that orphan cleanup can find, not anonymous chunks.
    chunks.delete_many({"files_id": {"$in": ids}, "n": {"$gt": 0}})
    chunks.delete_many({"files_id": {"$in": ids}})


def _is(project: str | None) -> dict[str, Any]:
    # None is a project too (TensorLayer's default, stored as null); a bare null would also
    # match files and chunks with no project at all, such as other GridFS tools' files.
    return {"$eq": project, "$exists": True}


def _unmarked(now: dt.datetime) -> dict[str, Any]:
    """A filter for files documents without a release mark, or with a stale one."""
    return {"$or": [{"metadata.releasing": {"$exists": False}},
                    {"metadata.releasing.at": {"$lt": now - RELEASE_MARK_TTL}}]}


def _unreferenced(ids: list[ObjectId], is_referenced: IsReferenced) -> list[ObjectId]:
    referenced = is_referenced(ids) if ids else set()
    return [i for i in ids if i not in referenced]


def _id_pages(collection: Collection, query: dict[str, Any], key: str,
              cutoff: ObjectId) -> Iterator[list[ObjectId]]:
    """Values of ``key`` below ``cutoff`` among documents matching ``query``, in ascending pages.

    Each page is one query resuming after the last id of the one before (keyset paging): no
    cursor stays open while the caller works on a page, and deleting ids already seen cannot
    make the scan skip any.
    """
    after: ObjectId | None = None
    while True:
        bound: dict[str, Any] = {"$lt": cutoff} if after is None else {"$gt": after, "$lt": cutoff}
        projection = {key: 1} if key == "_id" else {key: 1, "_id": 0}
        page = [doc[key] for doc in collection.find({**query, key: bound}, projection,
                                                    sort=[(key, ASCENDING)], limit=ORPHAN_BATCH)]
        if page:
            yield page
        if len(page) < ORPHAN_BATCH:
            return
        after = page[-1]
