"""Datasets: exact round trips, versions, dedupe, queries, deletes that leave no bytes behind."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from tensorhub.errors import PickleNotAllowed, ReservedField


def mnist_like(seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    x = rng.random((50, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, 50).astype(np.int64)
    return x[:30], y[:30], x[30:40], y[30:40], x[40:], y[40:]


def test_tensorlayer_tuple_round_trips_exactly(hub):
    data = mnist_like()
    hub.save_dataset(data, "mnist", description="digits")
    loaded = hub.find_top_dataset("mnist")
    assert isinstance(loaded, tuple) and len(loaded) == 6
    for original, back in zip(data, loaded, strict=True):
        assert back.dtype == original.dtype and back.shape == original.shape
        np.testing.assert_array_equal(back, original)


@pytest.mark.parametrize("array", [
    np.arange(24, dtype=np.uint8).reshape(2, 3, 4),
    np.array([1.5, np.nan, -np.inf], dtype=np.float16),
    np.array([[1 + 2j]], dtype=np.complex128),
    np.array(["ab", "ünïcode"], dtype="<U7"),
    np.array([True, False]),
    np.zeros((0, 5), dtype=np.int32),
    np.asfortranarray(np.arange(6, dtype=">i4").reshape(2, 3)),
    np.array(7.0),
], ids=["uint8-3d", "float16-special", "complex", "unicode", "bool", "empty", "fortran-bigendian", "scalar"])
def test_any_dtype_and_shape_round_trips(hub, array):
    hub.save_dataset(array, "a")
    back = hub.find_top_dataset("a")
    assert back.dtype == array.dtype and back.shape == array.shape
    np.testing.assert_array_equal(back, array)


def test_nested_dicts_lists_and_values(hub):
    data = {"train": [np.ones(3), np.zeros(2)], "meta": {"classes": 10, "name": "x"}, "none": None}
    hub.save_dataset(data, "nested")
    back = hub.find_top_dataset("nested")
    assert back["meta"] == {"classes": 10, "name": "x"} and back["none"] is None
    np.testing.assert_array_equal(back["train"][1], np.zeros(2))


def test_dataframe_with_mixed_dtypes(hub):
    frame = pd.DataFrame({
        "i": np.arange(4, dtype=np.int16), "f": [0.5, np.nan, 2.0, 3.5], "s": ["a", "b", None, "d"],
        "t": pd.date_range("2024-01-01", periods=4, tz="UTC"), "c": pd.Categorical(["x", "y", "x", "z"]),
        "b": [True, False, True, True], "n": pd.array([1, None, 3, 4], dtype="Int64"),
    }, index=pd.Index(["r1", "r2", "r3", "r4"], name="row"))
    hub.save_dataset(frame, "table")
    pd.testing.assert_frame_equal(hub.find_top_dataset("table"), frame)


def test_same_content_shares_bytes_but_never_metadata(hub):
    first = hub.save_dataset(mnist_like(0), "mnist", description="raw")
    again = hub.save_dataset(mnist_like(0), "mnist", description="same pixels, new notes", split="v2")
    changed = hub.save_dataset(mnist_like(1), "mnist")
    assert (first.version, again.version, changed.version) == (1, 2, 3)
    assert again.fields["description"] == "same pixels, new notes" and again.fields["split"] == "v2"
    assert again.blob_ids == first.blob_ids  # the bytes are stored once
    assert hub.db["blobs.files"].count_documents({}) == 12
    np.testing.assert_array_equal(hub.find_top_dataset("mnist")[0], mnist_like(1)[0])
    np.testing.assert_array_equal(hub.find_top_dataset("mnist", version=1)[0], mnist_like(0)[0])
    assert hub.find_top_dataset("mnist", split="v2") is not None
    assert [r.version for r in hub.list_datasets("mnist", sort=[("version", 1)])] == [1, 2, 3]


def test_deleting_one_record_keeps_blobs_another_record_shares(hub):
    first = hub.save_dataset(mnist_like(0), "mnist", note="a")
    hub.save_dataset(mnist_like(0), "copy", note="b")  # same bytes under another name
    assert hub.delete_datasets("mnist") == 1
    assert hub.db["blobs.files"].count_documents({"_id": {"$in": first.blob_ids}}) == 6
    np.testing.assert_array_equal(hub.find_top_dataset("copy")[0], mnist_like(0)[0])
    assert hub.find_orphan_blobs(older_than=dt.timedelta(0)) == []  # orphan cleanup knows they are used
    assert hub.delete_datasets("copy") == 1
    assert hub.db["blobs.files"].count_documents({}) == 0 and hub.db["blobs.chunks"].count_documents({}) == 0


def test_documents_are_readable(hub):
    hub.save_dataset(mnist_like(), "mnist", description="digits", source={"url": "none", "year": 1998})
    doc = hub.db["datasets"].find_one()
    assert doc["dataset_name"] == "mnist" and doc["version"] == 1 and doc["time"].tzinfo is not None
    assert doc["description"] == "digits" and doc["source"] == {"url": "none", "year": 1998}
    assert doc["_hub"]["project"] == "test" and doc["_hub"]["version"] == 1
    assert doc["_hub"]["created_at"] == doc["time"]
    leaf = doc["_hub"]["payload"]["items"][0]
    assert leaf["info"] == {"shape": [30, 28, 28], "dtype": "<f4"}
    assert set(leaf["blob"]) == {"id", "size", "sha256", "format"} and leaf["blob"]["format"] == "npy"


def test_queries_by_kwargs_and_find_datasets(hub):
    hub.save_dataset(np.ones(1), "d", split="train", rows=100)
    hub.save_dataset(np.ones(2), "d", split="test", rows=20)
    hub.save_dataset(np.ones(3), "other", split="train", rows=5)
    assert hub.find_top_dataset("d", split="test").shape == (2,)
    assert len(hub.find_datasets(split="train")) == 2
    assert [a.shape for a in hub.find_datasets("d", rows={"$gte": 50})] == [(1,)]
    assert hub.find_top_dataset(sort=[("rows", 1)]).shape == (3,)
    assert hub.find_top_dataset("missing") is None


def test_projects_do_not_see_each_other(hub, store_uri):
    from tensorhub import TensorHub

    hub.save_dataset(np.ones(1), "shared-name")
    other = TensorHub(store_uri, project_name="another")
    try:
        assert other.find_top_dataset("shared-name") is None
        other.save_dataset(np.zeros(1), "shared-name")
        assert other.delete_datasets("shared-name") == 1
        assert hub.find_top_dataset("shared-name").tolist() == [1.0]
    finally:
        other.close()


def test_delete_removes_blobs_and_chunks(hub):
    hub.save_dataset(mnist_like(), "mnist")
    hub.save_dataset(np.ones(3), "keep")
    assert hub.delete_datasets("mnist") == 1
    assert hub.find_top_dataset("mnist") is None
    assert hub.db["blobs.files"].count_documents({}) == 1
    keep_id = hub.db["blobs.files"].find_one()["_id"]
    assert hub.db["blobs.chunks"].count_documents({"files_id": {"$ne": keep_id}}) == 0


def test_reserved_and_unstorable_kwargs_are_refused_by_name(hub):
    with pytest.raises(ReservedField, match="_hub"):
        hub.save_dataset(np.ones(1), "d", _hub=3)
    with pytest.raises(Exception, match="'bad'"):
        hub.save_dataset(np.ones(1), "d", bad=object())
    with pytest.raises(Exception, match=r"a\.b"):
        hub.save_dataset(np.ones(1), "d", meta={"a.b": 1})
    assert hub.db["blobs.files"].count_documents({}) == 0


def test_other_objects_need_explicit_pickle_opt_in(hub):
    class Vocabulary:
        def __init__(self) -> None:
            self.words = ["a", "b"]

    with pytest.raises(PickleNotAllowed, match="allow_pickle"):
        hub.save_dataset(Vocabulary(), "vocab")
    hub.save_dataset(Vocabulary(), "vocab", allow_pickle=True)
    with pytest.raises(PickleNotAllowed):
        hub.find_top_dataset("vocab")
    assert hub.find_top_dataset("vocab", allow_pickle=True).words == ["a", "b"]
    # object arrays are pickles in disguise: refused the same way
    with pytest.raises(PickleNotAllowed):
        hub.save_dataset(np.array([{"a": 1}], dtype=object), "objects")
