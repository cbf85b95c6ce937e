"""Streaming blobs in the GridFS layout, with sha256 written at upload and verified at download.

Files live in the ``blobs.files`` / ``blobs.chunks`` collections exactly as GridFS lays them out
(``files_id``, ``n``, ``data``; ``length``, ``chunkSize``, ``uploadDate``), so mongofiles and
Studio3T's GridFS viewer read them. We write the layout ourselves instead of using pymongo's
``gridfs`` because ``gridfs`` refuses mongomock databases (our embedded store) and because we
want the integrity check inside the stream: chunks go first, the files document last as the
commit marker, and a failed write deletes its partial chunks.

    with blobs.open_writer("weights.npy", fmt="npy") as out:
        out.write(b"...")
    ref = out.ref                                     # BlobRef(id, size, sha256, format)
    with blobs.open_reader(ref.id) as src:
        data = src.read()                             # CorruptBlob if the bytes changed
"""
from __future__ import annotations

import datetime as dt
import hashlib
import io
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from bson import Binary, ObjectId
from pymongo import ASCENDING
from pymongo.database import Database

from tensorhub.errors import CorruptBlob, NotFound
from tensorhub.fields import utcnow

BUCKET = "blobs"
CHUNK_SIZE = 255 * 1024
CHUNKS_PER_INSERT = 16  # ~4 MB per round trip: well under the 16 MB message limit


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
    def from_doc(cls, doc: dict[str, Any]) -> "BlobRef":
        return cls(doc["id"], int(doc["size"]), doc["sha256"], doc["format"])


class BlobWriter(io.RawIOBase):
    """A write-only stream into one blob; ``close()`` commits, an exception in ``with`` aborts."""

    def __init__(self, db: Database, filename: str, fmt: str, metadata: dict[str, Any],
                 on_commit: Callable[[BlobRef], None] | None = None) -> None:
        super().__init__()
        self._on_commit = on_commit
        self._files = db[f"{BUCKET}.files"]
        self._chunks = db[f"{BUCKET}.chunks"]
        self._id = ObjectId()
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

    def write(self, data: Any) -> int:  # type: ignore[override]
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
        self._pending.append({"files_id": self._id, "n": self._n, "data": Binary(data)})
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
        self._chunks.delete_many({"files_id": self._id})
        super().close()

    def __exit__(self, exc_type: Any, *rest: Any) -> None:
        if exc_type is not None:
            self.abort()
        else:
            self.close()

    def __del__(self) -> None:
        # io's default would close() and so commit a half-written blob; an abandoned writer's
        # chunks stay behind as an orphan instead (see BlobStore.find_orphans).
        pass


class BlobReader(io.RawIOBase):
    """A read-only stream of one blob, checked chunk by chunk and by sha256 at the end."""

    def __init__(self, db: Database, file_doc: dict[str, Any]) -> None:
        super().__init__()
        self._doc = file_doc
        self._length = int(file_doc["length"])
        self._chunk_size = int(file_doc["chunkSize"])
        self._expected_sha = file_doc.get("metadata", {}).get("sha256")
        self._hash = hashlib.sha256()
        self._cursor = db[f"{BUCKET}.chunks"].find(
            {"files_id": file_doc["_id"]}, sort=[("n", ASCENDING)], batch_size=CHUNKS_PER_INSERT)
        self._buffer = memoryview(b"")
        self._next_n = 0
        self._served = 0
        self._verified = False

    def readable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:  # type: ignore[override]
        if not self._buffer:
            if not self._load_next_chunk():
                return 0
        count = min(len(target), len(self._buffer))
        memoryview(target).cast("B")[:count] = self._buffer[:count]
        self._buffer = self._buffer[count:]
        return count

    def _load_next_chunk(self) -> bool:
        chunk = next(self._cursor, None)
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
    """The ``blobs`` bucket of one database: write, read, delete and find orphans."""

    def __init__(self, db: Database, project: str) -> None:
        self.db = db
        self.project = project
        self.files = db[f"{BUCKET}.files"]
        self.chunks = db[f"{BUCKET}.chunks"]

    def ensure_indexes(self) -> None:
        self.chunks.create_index([("files_id", ASCENDING), ("n", ASCENDING)], unique=True)
        self.files.create_index([("filename", ASCENDING), ("uploadDate", ASCENDING)])

    def open_writer(self, filename: str, fmt: str, on_commit: Callable[[BlobRef], None] | None = None,
                    **metadata: Any) -> BlobWriter:
        """Open a stream that becomes a blob of ``fmt`` when closed (``with`` closes it).

        ``on_commit`` is called with the :class:`BlobRef` once the blob exists.
        """
        return BlobWriter(self.db, filename, fmt, {"project": self.project, **metadata}, on_commit)

    def open_reader(self, blob_id: ObjectId) -> BlobReader:
        """Open a verified stream over a stored blob; :class:`CorruptBlob` if it is missing."""
        doc = self.files.find_one({"_id": blob_id})
        if doc is None:
            raise CorruptBlob(f"blob {blob_id} is referenced but its bytes are missing")
        return BlobReader(self.db, doc)

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

    def delete(self, blob_ids: Iterable[ObjectId]) -> int:
        """Delete blobs: the files documents first (so none is half-visible), then their chunks."""
        ids = list(blob_ids)
        if not ids:
            return 0
        deleted = self.files.delete_many({"_id": {"$in": ids}}).deleted_count
        self.chunks.delete_many({"files_id": {"$in": ids}})
        return deleted

    def find_orphans(self, referenced: set[ObjectId], older_than: dt.timedelta) -> list[ObjectId]:
        """Blob ids of this project that nothing references and that are older than ``older_than``.

        The age limit keeps uploads in flight (bytes written, document not yet) out of the list.
        Chunks whose files document never got written (a crashed upload) count too.
        """
        cutoff = ObjectId.from_datetime(utcnow() - older_than)
        orphans = [doc["_id"] for doc in self.files.find(
            {"metadata.project": self.project, "_id": {"$lt": cutoff}}, {"_id": 1})
            if doc["_id"] not in referenced]
        known = set(self.files.distinct("_id"))
        orphans += [fid for fid in self.chunks.distinct("files_id", {"files_id": {"$lt": cutoff}})
                    if fid not in known and fid not in referenced]
        return orphans
