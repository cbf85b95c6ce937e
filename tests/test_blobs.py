"""Blobs: streamed in chunks, verified on read, aborted writes leave nothing, orphans are found
per project, shared blobs are released safely."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from bson import Binary, ObjectId
from pymongo.errors import CursorNotFound

from tensorhub import blobs as blobs_module
from tensorhub.blobs import CHUNK_SIZE, BlobStore
from tensorhub.errors import CorruptBlob, PickleNotAllowed


@pytest.fixture
def blobs(hub):
    """The blob store of the hub's project (the hub keeps its own to itself)."""
    return BlobStore(hub.db, hub.project_name)


def test_multi_chunk_round_trip_and_gridfs_layout(hub, blobs):
    data = np.random.default_rng(1).bytes(3 * CHUNK_SIZE + 123)
    ref = blobs.write_bytes(data, "raw.bin", "bytes")
    assert blobs.read_bytes(ref.id) == data
    files = hub.db["blobs.files"].find_one({"_id": ref.id})
    assert files["length"] == len(data) and files["chunkSize"] == CHUNK_SIZE
    assert files["metadata"]["sha256"] == ref.sha256 and files["uploadDate"].tzinfo is not None
    assert hub.db["blobs.chunks"].count_documents({"files_id": ref.id}) == 4


def _flip_a_byte(hub, blob_id):
    chunk = hub.db["blobs.chunks"].find_one({"files_id": blob_id, "n": 1})
    data = bytearray(chunk["data"])
    data[10] ^= 0xFF
    hub.db["blobs.chunks"].update_one({"_id": chunk["_id"]}, {"$set": {"data": Binary(bytes(data))}})


def test_corrupted_dataset_is_an_error_not_wrong_data(hub):
    array = np.arange(200_000, dtype=np.float64)  # 1.6 MB: several chunks
    rec = hub.save_dataset(array, "big")
    _flip_a_byte(hub, rec.blob_ids[0])
    with pytest.raises(CorruptBlob, match="sha256"):
        hub.find_top_dataset("big")


def test_missing_chunk_is_reported(hub):
    rec = hub.save_dataset(np.arange(200_000, dtype=np.float64), "big")
    hub.db["blobs.chunks"].delete_one({"files_id": rec.blob_ids[0], "n": 2})
    with pytest.raises(CorruptBlob, match="chunk 2"):
        hub.find_top_dataset("big")


def test_failed_write_leaves_no_chunks_and_no_document(hub):
    big = np.ones(400_000)  # written first (several chunks), then the second leaf is refused
    with pytest.raises(PickleNotAllowed):
        hub.save_dataset((big, object()), "half")
    assert hub.db["datasets"].count_documents({}) == 0
    assert hub.db["blobs.files"].count_documents({}) == 0
    assert hub.db["blobs.chunks"].count_documents({}) == 0


def test_aborted_stream_deletes_partial_chunks(hub, blobs):
    with pytest.raises(RuntimeError):
        with blobs.open_writer("x", "bytes") as out:
            out.write(b"x" * (40 * CHUNK_SIZE))  # forces flushes to the server
            raise RuntimeError("crash mid-write")
    assert hub.db["blobs.chunks"].count_documents({}) == 0
    assert hub.db["blobs.files"].count_documents({}) == 0


def test_orphans_are_found_but_referenced_and_young_blobs_are_not(hub, blobs):
    hub.save_dataset(np.ones(10), "kept")
    orphan = blobs.write_bytes(b"lost", "lost.bin", "bytes")  # a save that died before its document
    assert hub.find_orphan_blobs(older_than=dt.timedelta(hours=1)) == []
    assert hub.find_orphan_blobs(older_than=dt.timedelta(seconds=-5)) == [orphan.id]
    assert hub.delete_orphan_blobs(older_than=dt.timedelta(seconds=-5)) == 1
    assert hub.find_top_dataset("kept").tolist() == [1.0] * 10


# -- cursors -------------------------------------------------------------------------------------


class _DyingCursors:
    """A chunks collection whose n-th cursor loses its server cursor after ``lives[n]`` chunks."""

    def __init__(self, chunks, lives):
        self._chunks = chunks
        self._lives = lives
        self.filters = []

    def find(self, filter, *args, **kwargs):
        cursor = self._chunks.find(filter, *args, **kwargs)
        self.filters.append(filter)
        if len(self.filters) > len(self._lives):
            return cursor
        return self._dying(cursor, self._lives[len(self.filters) - 1])

    @staticmethod
    def _dying(cursor, chunks):
        for _ in range(chunks):
            yield next(cursor)
        cursor.close()
        raise CursorNotFound("cursor id 42 not found", code=43)

    def __getattr__(self, name):
        return getattr(self._chunks, name)


def test_a_cursor_lost_mid_read_is_reopened_at_the_next_chunk(hub, blobs, monkeypatch):
    data = np.random.default_rng(2).bytes(3 * CHUNK_SIZE + 7)
    ref = blobs.write_bytes(data, "raw.bin", "bytes")
    chunks = _DyingCursors(blobs.chunks, lives=[1])
    monkeypatch.setattr(blobs, "chunks", chunks)
    assert blobs.read_bytes(ref.id) == data
    assert [f["n"] for f in chunks.filters] == [{"$gte": 0}, {"$gte": 1}]


def test_a_cursor_lost_twice_in_a_row_is_an_error(hub, blobs, monkeypatch):
    ref = blobs.write_bytes(b"x" * (2 * CHUNK_SIZE), "raw.bin", "bytes")
    monkeypatch.setattr(blobs, "chunks", _DyingCursors(blobs.chunks, lives=[1, 0]))
    with pytest.raises(CursorNotFound):
        blobs.read_bytes(ref.id)


# -- orphans, scoped to their project -------------------------------------------------------------

LONG_AGO = dt.timedelta(seconds=-5)  # "started before 5 s from now": every upload so far counts
HOUR = dt.timedelta(hours=1)


def _nothing(batch):
    return set()


def _interrupted_upload(store, monkeypatch):
    """Chunks of an upload whose process died before the files document: returns its id."""
    before = set(store.chunks.distinct("files_id"))
    with monkeypatch.context() as patch:
        patch.setattr(blobs_module, "CHUNKS_PER_INSERT", 1)  # every chunk goes out at once
        writer = store.open_writer("crash.bin", "bytes")
        writer.write(b"c" * (2 * CHUNK_SIZE + 5))  # two chunks written, the tail still buffered
    (upload,) = set(store.chunks.distinct("files_id")) - before
    return upload


def test_only_the_first_chunk_names_the_project(hub, blobs):
    ref = blobs.write_bytes(b"p" * (2 * CHUNK_SIZE + 1), "raw.bin", "bytes")
    chunks = {c["n"]: c for c in hub.db["blobs.chunks"].find({"files_id": ref.id})}
    assert chunks[0]["project"] == "test" and "project" not in chunks[1] and "project" not in chunks[2]
    assert hub.db["blobs.files"].find_one({"_id": ref.id})["metadata"]["project"] == "test"


def test_an_interrupted_upload_is_found_and_deleted(hub, monkeypatch):
    store = BlobStore(hub.db, "a")
    upload = _interrupted_upload(store, monkeypatch)
    assert hub.db["blobs.files"].count_documents({"_id": upload}) == 0
    assert list(store.iter_orphans(_nothing, HOUR)) == []  # too young: maybe still uploading
    assert list(store.iter_orphans(_nothing, LONG_AGO)) == [upload]
    assert store.delete_orphans(_nothing, LONG_AGO) == 1
    assert hub.db["blobs.chunks"].count_documents({"files_id": upload}) == 0


def test_orphan_cleanup_leaves_other_projects_alone(hub, monkeypatch):
    a, b = BlobStore(hub.db, "a"), BlobStore(hub.db, "b")
    b_upload = _interrupted_upload(b, monkeypatch)
    b_orphan = b.write_bytes(b"b's", "b.bin", "bytes")
    a_orphan = a.write_bytes(b"a's", "a.bin", "bytes")
    assert list(a.iter_orphans(_nothing, LONG_AGO)) == [a_orphan.id]
    assert a.delete_orphans(_nothing, LONG_AGO) == 1
    assert hub.db["blobs.chunks"].count_documents({"files_id": b_upload}) == 2
    assert b.read_bytes(b_orphan.id) == b"b's"
    assert sorted(b.iter_orphans(_nothing, LONG_AGO)) == sorted([b_orphan.id, b_upload])


def test_orphans_are_scanned_in_batches(hub, monkeypatch):
    store = BlobStore(hub.db, "batched")
    ids = [store.write_bytes(bytes([i]), f"{i}.bin", "bytes").id for i in range(5)]
    uploads = [_interrupted_upload(store, monkeypatch) for _ in range(3)]
    monkeypatch.setattr(blobs_module, "ORPHAN_BATCH", 2)
    batches = []

    def is_referenced(batch):
        batches.append(list(batch))
        return {ids[0]} & set(batch)

    assert sorted(store.iter_orphans(is_referenced, LONG_AGO)) == sorted(ids[1:] + uploads)
    assert batches and all(len(batch) <= 2 for batch in batches)
    assert sum(len(batch) for batch in batches) == 8
    assert store.delete_orphans(is_referenced, LONG_AGO) == 7
    assert store.read_bytes(ids[0]) == bytes([0])
    assert hub.db["blobs.files"].count_documents({"metadata.project": "batched"}) == 1


def test_a_gridfs_file_without_project_is_never_an_orphan(hub, blobs):
    # What GridFSBucket writes (the interop tests upload through GridFSBucket itself).
    fid = ObjectId.from_datetime(dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=2))
    hub.db["blobs.chunks"].insert_one({"files_id": fid, "n": 0, "data": Binary(b"mongofiles")})
    hub.db["blobs.files"].insert_one({"_id": fid, "filename": "put.txt", "length": 10,
                                      "chunkSize": CHUNK_SIZE, "uploadDate": dt.datetime.now(dt.timezone.utc)})
    lost = ObjectId.from_datetime(dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=3))
    hub.db["blobs.chunks"].insert_one({"files_id": lost, "n": 0, "data": Binary(b"no files doc")})
    assert list(blobs.iter_orphans(_nothing, HOUR)) == []
    assert blobs.delete_orphans(_nothing, HOUR) == 0
    assert blobs.read_bytes(fid) == b"mongofiles"  # no sha256: length and chunks checked
    assert hub.db["blobs.chunks"].count_documents({"files_id": lost}) == 1


def test_the_unnamed_project_does_not_claim_files_that_have_no_project(hub, monkeypatch):
    # TensorLayer's default project is None, stored as null: it must not match "no project".
    unnamed = BlobStore(hub.db, None)
    fid = ObjectId.from_datetime(dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=2))
    hub.db["blobs.chunks"].insert_many([{"files_id": fid, "n": n, "data": Binary(b"ab")} for n in range(2)])
    hub.db["blobs.files"].insert_one({"_id": fid, "filename": "put.txt", "length": 4, "chunkSize": 2,
                                      "uploadDate": dt.datetime.now(dt.timezone.utc)})
    orphan = unnamed.write_bytes(b"mine", "m.bin", "bytes")
    upload = _interrupted_upload(unnamed, monkeypatch)
    assert sorted(unnamed.iter_orphans(_nothing, LONG_AGO)) == sorted([orphan.id, upload])
    assert unnamed.release([fid], _nothing) == 0
    assert unnamed.delete_orphans(_nothing, LONG_AGO) == 2
    assert unnamed.read_bytes(fid) == b"abab"


def test_the_compatibility_find_orphans_takes_a_referenced_set(hub, blobs):
    kept = blobs.write_bytes(b"kept", "k.bin", "bytes")
    lost = blobs.write_bytes(b"lost", "l.bin", "bytes")
    assert blobs.find_orphans({kept.id}, LONG_AGO) == [lost.id]


# -- releasing shared blobs ------------------------------------------------------------------------


def test_release_deletes_only_unreferenced_blobs(hub):
    store = BlobStore(hub.db, "shared")
    refs = [store.write_bytes(bytes([i]) * (CHUNK_SIZE + 1), f"{i}.bin", "bytes") for i in range(3)]
    asked = []

    def is_referenced(batch):
        asked.extend(batch)
        return {refs[1].id}

    assert store.release([r.id for r in refs], is_referenced) == 2
    assert sorted(asked) == sorted(r.id for r in refs)
    assert hub.db["blobs.files"].count_documents({"metadata.project": "shared"}) == 1
    assert hub.db["blobs.chunks"].count_documents({"files_id": {"$in": [refs[0].id, refs[2].id]}}) == 0
    assert store.read_bytes(refs[1].id) == bytes([1]) * (CHUNK_SIZE + 1)
    assert store.still_usable([refs[1].id])  # unmarked again
    assert "releasing" not in hub.db["blobs.files"].find_one({"_id": refs[1].id})["metadata"]


def test_release_leaves_other_projects_blobs_alone(hub, blobs):
    other = BlobStore(hub.db, "other").write_bytes(b"theirs", "t.bin", "bytes")
    assert BlobStore(hub.db, "mine").release([other.id], _nothing) == 0
    assert blobs.read_bytes(other.id) == b"theirs"


def test_a_saver_sees_the_mark_while_a_release_is_under_way(hub):
    store = BlobStore(hub.db, "race")
    ref = store.write_bytes(b"shared bytes", "s.bin", "bytes")
    seen = []

    def is_referenced(batch):
        # A saver that inserted its record just now checks here, between mark and decision.
        seen.append(store.still_usable([ref.id]))
        return set(batch)  # ...and the releaser sees that record

    assert store.release([ref.id], is_referenced) == 0
    assert seen == [False]
    assert store.still_usable([ref.id])
    assert not store.still_usable([ref.id, ObjectId()])  # a missing blob is not usable


def test_a_stale_mark_is_ignored_then_cleared(hub):
    store = BlobStore(hub.db, "stale")
    kept, lost = (store.write_bytes(name.encode(), f"{name}.bin", "bytes") for name in ("kept", "lost"))
    files = hub.db["blobs.files"]

    def mark(blob_id, age):
        at = dt.datetime.now(dt.timezone.utc) - age
        files.update_one({"_id": blob_id}, {"$set": {"metadata.releasing": {"at": at, "token": ObjectId()}}})

    mark(kept.id, dt.timedelta(seconds=1))
    assert not store.still_usable([kept.id])
    for blob in (kept, lost):
        mark(blob.id, dt.timedelta(hours=1))  # left by a releaser that crashed
    assert store.still_usable([kept.id, lost.id])
    assert store.delete_orphans(lambda batch: {kept.id} & set(batch), LONG_AGO) == 1  # takes `lost` over
    assert files.count_documents({"_id": lost.id}) == 0
    assert "releasing" not in files.find_one({"_id": kept.id})["metadata"]


def test_release_with_a_fresh_foreign_mark_leaves_the_blob_to_that_release(hub, blobs):
    ref = blobs.write_bytes(b"busy", "b.bin", "bytes")
    hub.db["blobs.files"].update_one({"_id": ref.id}, {"$set": {"metadata.releasing": {
        "at": dt.datetime.now(dt.timezone.utc), "token": ObjectId()}}})
    assert blobs.release([ref.id], _nothing) == 0
    assert hub.db["blobs.files"].count_documents({"_id": ref.id}) == 1


def test_interrupted_uploads_are_indexed_by_project(hub, blobs):
    blobs.ensure_indexes()  # twice is fine (FerretDB takes the fallback again)
    index = hub.db["blobs.chunks"].index_information()[blobs_module.UPLOADS_INDEX]
    assert index["key"] == [("project", 1), ("files_id", 1)]


def test_records_sharing_blobs_keep_them_until_the_last_one_goes(hub):
    first = hub.save_dataset(np.arange(10), "first")
    second = hub.save_dataset(np.arange(10), "second")  # same bytes: its own record, the same blobs
    assert first.blob_ids == second.blob_ids and first.id != second.id
    hub.delete_datasets("first")
    assert hub.find_top_dataset("second").tolist() == list(range(10))
    hub.delete_datasets("second")
    assert hub.db["blobs.files"].count_documents({}) == 0
    assert hub.db["blobs.chunks"].count_documents({}) == 0
