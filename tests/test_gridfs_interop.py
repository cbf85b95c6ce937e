"""GridFS is GridFS: pymongo's own GridFSBucket reads tensorhub's blobs, and tensorhub reads its files.

Real servers only (``gridfs`` refuses mongomock). Also the two guards gridfs has: an unacknowledged
write concern is refused, and a chunk cursor the server killed under a slow reader is reopened.
"""
from __future__ import annotations

import datetime as dt

import gridfs
import numpy as np
import pymongo
import pytest
from pymongo.write_concern import WriteConcern

from tensorhub import blobs as blobs_module
from tensorhub.blobs import CHUNK_SIZE, BlobStore
from tensorhub.errors import CorruptBlob, InvalidArgument

LONG_AGO = dt.timedelta(seconds=-5)  # every upload so far counts as old enough


@pytest.fixture
def blobs(server_hub):
    """The blob store of the hub's project (the hub keeps its own to itself)."""
    return BlobStore(server_hub.db, server_hub.project_name)


@pytest.fixture
def bucket(server_hub):
    return gridfs.GridFSBucket(server_hub.db, bucket_name="blobs")


def _random(size, seed=0):
    return np.random.default_rng(seed).bytes(size)


@pytest.mark.parametrize("size", [0, 5, CHUNK_SIZE, 3 * CHUNK_SIZE + 123])
def test_gridfs_reads_tensorhub_blobs_byte_exact(server_hub, blobs, bucket, size):
    data = _random(size)
    ref = blobs.write_bytes(data, "weights.npy", "npy")
    with bucket.open_download_stream(ref.id) as grid_out:
        assert grid_out.read() == data
        assert grid_out.length == size and grid_out.chunk_size == CHUNK_SIZE
        assert grid_out.filename == "weights.npy"
        assert grid_out.metadata["sha256"] == ref.sha256 and grid_out.metadata["project"] == "test"
    assert bucket.open_download_stream_by_name("weights.npy").read() == data


def test_tensorhub_files_have_the_fields_mongofiles_lists(server_hub, blobs, bucket):
    before = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=5)
    ref = blobs.write_bytes(b"x" * (CHUNK_SIZE + 1), "listed.bin", "bytes")
    doc = server_hub.db["blobs.files"].find_one({"_id": ref.id})
    assert isinstance(doc["length"], int) and doc["length"] == CHUNK_SIZE + 1
    assert isinstance(doc["chunkSize"], int) and doc["chunkSize"] == CHUNK_SIZE
    assert isinstance(doc["uploadDate"], dt.datetime) and doc["uploadDate"] >= before
    assert doc["filename"] == "listed.bin"
    (listed,) = bucket.find({"filename": "listed.bin"})
    assert (listed._id, listed.length, listed.upload_date) == (ref.id, CHUNK_SIZE + 1, doc["uploadDate"])
    # The project tag on the first chunk is an extra field GridFS readers skip over.
    assert server_hub.db["blobs.chunks"].find_one({"files_id": ref.id, "n": 0})["project"] == "test"


@pytest.mark.parametrize("size, chunk_size", [(0, 1000), (3500, 1000), (2 * CHUNK_SIZE + 9, None)])
def test_tensorhub_reads_gridfs_uploads_byte_exact(server_hub, blobs, bucket, size, chunk_size):
    data = _random(size, seed=size)
    options = {} if chunk_size is None else {"chunk_size_bytes": chunk_size}
    file_id = bucket.upload_from_stream("uploaded.bin", data, **options)
    assert blobs.read_bytes(file_id) == data  # no sha256 in its metadata: length and chunks
    with blobs.open_reader(file_id) as src:
        pieces = iter(lambda: src.read(777), b"")
        assert b"".join(pieces) == data


def test_a_gridfs_upload_missing_a_chunk_is_still_caught(server_hub, blobs, bucket):
    file_id = bucket.upload_from_stream("holey.bin", _random(3500), chunk_size_bytes=1000)
    server_hub.db["blobs.chunks"].delete_one({"files_id": file_id, "n": 3})
    with pytest.raises(CorruptBlob, match="3000 of 3500 bytes"):
        blobs.read_bytes(file_id)


def test_gridfs_uploads_are_never_orphans_of_a_project(server_hub, blobs, bucket):
    file_id = bucket.upload_from_stream("foreign.bin", _random(3500), chunk_size_bytes=1000)
    assert list(blobs.iter_orphans(lambda batch: set(), LONG_AGO)) == []
    assert blobs.delete_orphans(lambda batch: set(), LONG_AGO) == 0
    assert blobs.release([file_id], lambda batch: set()) == 0
    unnamed = BlobStore(server_hub.db, None)  # TensorLayer's default project, stored as null
    assert unnamed.delete_orphans(lambda batch: set(), LONG_AGO) == 0
    assert unnamed.release([file_id], lambda batch: set()) == 0
    assert bucket.open_download_stream(file_id).read() == _random(3500)


def test_an_unacknowledged_write_concern_is_refused(server_uri):
    client = pymongo.MongoClient(server_uri)
    unacknowledged = pymongo.MongoClient(server_uri, w=0)  # as "?w=0" in a URI
    try:
        db = client.get_default_database()
        with pytest.raises(InvalidArgument, match="w=0"):
            BlobStore(db.with_options(write_concern=WriteConcern(w=0)), "p")
        with pytest.raises(InvalidArgument, match="w=0"):
            BlobStore(unacknowledged.get_default_database(), "p")
        BlobStore(db.with_options(write_concern=WriteConcern(w=1)), "p")  # acknowledged is fine
    finally:
        client.close()
        unacknowledged.close()


class _CursorSpy:
    """The chunks collection, keeping every cursor the reader opens."""

    def __init__(self, chunks):
        self._chunks = chunks
        self.cursors = []
        self.filters = []

    def find(self, filter, *args, **kwargs):
        self.filters.append(filter)
        self.cursors.append(self._chunks.find(filter, *args, **kwargs))
        return self.cursors[-1]

    def __getattr__(self, name):
        return getattr(self._chunks, name)


def test_a_cursor_the_server_killed_mid_read_is_reopened(server_hub, blobs, monkeypatch):
    monkeypatch.setattr(blobs_module, "CHUNKS_PER_READ", 2)  # so the cursor outlives its first batch
    data = _random(5 * CHUNK_SIZE + 3)
    ref = blobs.write_bytes(data, "slow.bin", "bytes")
    spy = _CursorSpy(blobs.chunks)
    monkeypatch.setattr(blobs, "chunks", spy)
    with blobs.open_reader(ref.id) as src:
        head = src.read(CHUNK_SIZE)
        (cursor,) = spy.cursors
        assert cursor.cursor_id  # still open on the server, with more chunks to send
        killed = server_hub.db.command("killCursors", "blobs.chunks", cursors=[cursor.cursor_id])
        assert killed["cursorsKilled"] == [cursor.cursor_id]
        rest = src.read()
        src.verify_rest()
    assert head + rest == data
    assert [f["n"] for f in spy.filters] == [{"$gte": 0}, {"$gte": 2}]  # reopened from the next chunk
