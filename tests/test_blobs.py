"""Blobs: streamed in chunks, verified on read, aborted writes leave nothing, orphans are found."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from bson import Binary

from tensorhub.blobs import CHUNK_SIZE
from tensorhub.errors import CorruptBlob, PickleNotAllowed


def test_multi_chunk_round_trip_and_gridfs_layout(hub):
    data = np.random.default_rng(1).bytes(3 * CHUNK_SIZE + 123)
    ref = hub.blobs.write_bytes(data, "raw.bin", "bytes")
    assert hub.blobs.read_bytes(ref.id) == data
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
    _flip_a_byte(hub, rec.document["blob_ids"][0])
    with pytest.raises(CorruptBlob, match="sha256"):
        hub.find_top_dataset("big")


def test_missing_chunk_is_reported(hub):
    rec = hub.save_dataset(np.arange(200_000, dtype=np.float64), "big")
    hub.db["blobs.chunks"].delete_one({"files_id": rec.document["blob_ids"][0], "n": 2})
    with pytest.raises(CorruptBlob, match="chunk 2"):
        hub.find_top_dataset("big")


def test_failed_write_leaves_no_chunks_and_no_document(hub):
    big = np.ones(400_000)  # written first (several chunks), then the second leaf is refused
    with pytest.raises(PickleNotAllowed):
        hub.save_dataset((big, object()), "half")
    assert hub.db["datasets"].count_documents({}) == 0
    assert hub.db["blobs.files"].count_documents({}) == 0
    assert hub.db["blobs.chunks"].count_documents({}) == 0


def test_aborted_stream_deletes_partial_chunks(hub):
    with pytest.raises(RuntimeError):
        with hub.blobs.open_writer("x", "bytes") as out:
            out.write(b"x" * (40 * CHUNK_SIZE))  # forces flushes to the server
            raise RuntimeError("crash mid-write")
    assert hub.db["blobs.chunks"].count_documents({}) == 0
    assert hub.db["blobs.files"].count_documents({}) == 0


def test_orphans_are_found_but_referenced_and_young_blobs_are_not(hub):
    hub.save_dataset(np.ones(10), "kept")
    orphan = hub.blobs.write_bytes(b"lost", "lost.bin", "bytes")  # a save that died before its document
    assert hub.find_orphan_blobs(older_than=dt.timedelta(hours=1)) == []
    assert hub.find_orphan_blobs(older_than=dt.timedelta(seconds=-5)) == [orphan.id]
    assert hub.delete_orphan_blobs(older_than=dt.timedelta(seconds=-5)) == 1
    assert hub.find_top_dataset("kept").tolist() == [1.0] * 10
