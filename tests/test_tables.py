"""Typed tables of a run (cox's Store): schema, rows, DataFrames, blobs, concurrency, deletion."""
from __future__ import annotations

import fractions
import hashlib
import threading

import numpy as np
import pandas as pd
import pytest
from bson import Binary, ObjectId

from tensorhub.blobs import BlobStore
from tensorhub.errors import CorruptBlob, InvalidArgument, InvalidField, NotFound, PickleNotAllowed, ReservedField
from tensorhub.project import Project
from tensorhub.tables import TableStore

METRICS = {"epoch": int, "loss": float, "phase": str, "best": bool}


def open_store(hub) -> TableStore:
    store = TableStore(hub.db, BlobStore(hub.db, hub.project_name), Project(hub.project_name))
    store.ensure_indexes()
    return store


@pytest.fixture
def tables(hub) -> TableStore:
    return open_store(hub)


def referenced_anywhere(hub, store):
    """Table rows' references (the facade adds those of records and tasks; here only tables hold blobs)."""
    return store.referenced


def test_append_update_flush_and_the_dataframe(tables):
    table = tables.add_table(ObjectId(), "metrics", METRICS)
    assert table.nrows == 0 and list(table.df.columns) == list(METRICS)
    table.append_row({"epoch": 0, "loss": 1, "phase": "warmup", "best": True})   # an int for a float column
    table.update_row({"epoch": np.int64(1), "phase": "train"})
    table.update_row({"loss": np.float32(0.5), "best": np.bool_(False)})
    table.update_row({"phase": "train2"})                                         # a later value wins
    table.flush_row()
    table.append_row({"epoch": 2, "loss": np.array(0.25), "phase": "train", "best": False})  # a 0-d array
    frame = table.df
    assert table.nrows == 3 and list(frame.index) == [0, 1, 2]
    assert list(frame["epoch"]) == [0, 1, 2] and list(frame["loss"]) == [1.0, 0.5, 0.25]
    assert list(frame["phase"]) == ["warmup", "train2", "train"] and list(frame["best"]) == [True, False, False]
    assert [str(t) for t in frame.dtypes[["epoch", "loss", "best"]]] == ["int64", "float64", "bool"]
    assert pd.api.types.is_string_dtype(frame["phase"])
    assert table.get(1, "phase") == "train2" and table.get(-1, "epoch") == 2


def test_rows_are_plain_documents(hub, tables):
    run_id = ObjectId()
    tables.add_table(run_id, "metrics", METRICS).append_row({"epoch": 3, "loss": 2, "phase": "a", "best": True})
    row = hub.db["run_tables"].find_one({"_hub.kind": "row"})
    assert {k: row[k] for k in METRICS} == {"epoch": 3, "loss": 2.0, "phase": "a", "best": True}
    assert isinstance(row["loss"], float)   # converted from the int given
    assert row["_hub"]["run_id"] == run_id and row["_hub"]["row"] == 0 and row["_hub"]["project"] == "test"
    assert row["_hub"]["blob_ids"] == []
    schema = hub.db["run_tables"].find_one({"_hub.kind": "schema"})["_hub"]
    assert schema["schema"] == {"epoch": "int", "loss": "float", "phase": "str", "best": "bool"}


def test_none_is_a_value_but_every_column_needs_one(tables):
    table = tables.add_table(ObjectId(), "metrics", METRICS)
    table.update_row({"epoch": 0, "loss": None})
    with pytest.raises(InvalidField, match=r"'metrics'.*'phase', 'best'"):
        table.flush_row()
    table.update_row({"phase": None, "best": None})   # the pending row was kept
    table.flush_row()
    table.append_row({"epoch": None, "loss": 0.5, "phase": "x", "best": True})
    frame = table.df
    assert np.isnan(frame["loss"][0]) and frame["phase"].isna()[0]
    assert str(frame["epoch"].dtype) == "Int64" and str(frame["best"].dtype) == "boolean"
    assert frame["epoch"].isna().tolist() == [False, True]


def test_wrong_types_and_unknown_columns_name_table_and_column(tables):
    table = tables.add_table(ObjectId(), "metrics", METRICS)
    for row, pattern in [({"epoch": "3"}, r"'metrics', column 'epoch': expected int, got str"),
                         ({"epoch": True}, r"column 'epoch': expected int, got bool"),
                         ({"loss": False}, r"column 'loss': expected float, got bool"),
                         ({"best": 1}, r"column 'best': expected bool, got int"),
                         ({"phase": 1.5}, r"column 'phase': expected str, got float"),
                         ({"loss": np.ones(3)}, r"column 'loss': expected float, got numpy.ndarray"),
                         ({"accuracy": 0.5}, r"'metrics' has no column 'accuracy'")]:
        with pytest.raises(InvalidField, match=pattern):
            table.update_row(row)
    with pytest.raises(InvalidField, match=r"'metrics'.*'loss' is NaN"):
        table.append_row({"epoch": 0, "loss": float("nan"), "phase": "x", "best": True})
    with pytest.raises(InvalidField, match=r"'epoch'.*64 bits"):
        table.update_row({"epoch": 2**64})
    with pytest.raises(InvalidField, match="'epoch'"):   # refused values never reach the pending row
        table.flush_row()
    assert table.nrows == 0
    with pytest.raises(InvalidField, match=r"column 'w'.*expected ndarray, got list"):
        tables.add_table(ObjectId(), "arrays", {"w": "ndarray"}).update_row({"w": [1, 2]})


def test_schemas_are_checked(tables):
    run_id = ObjectId()
    with pytest.raises(InvalidField, match=r"'bad', column 'c'.*unsupported column type"):
        tables.add_table(run_id, "bad", {"c": list})
    with pytest.raises(InvalidField, match="unsupported column type 'tensor'"):
        tables.add_table(run_id, "bad", {"c": "tensor"})
    with pytest.raises(InvalidField, match=r"column name 'a\.b'"):
        tables.add_table(run_id, "bad", {"a.b": int})
    with pytest.raises(ReservedField, match="_hub"):
        tables.add_table(run_id, "bad", {"_hub": int})
    with pytest.raises(InvalidArgument):
        tables.add_table(run_id, "bad", {})
    with pytest.raises(InvalidArgument, match="ObjectId"):
        tables.add_table("run-1", "bad", {"c": int})
    assert tables.tables(run_id) == []
    names = tables.add_table(run_id, "names", {"a": "Integer", "b": np.float32, "c": "np.ndarray",
                                                "d": pd.DataFrame, "e": "BOOL", "f": np.int8})
    assert names.schema == {"a": "int", "b": "float", "c": "ndarray", "d": "dataframe", "e": "bool", "f": "int"}


def test_schema_round_trip_from_another_store(hub, tables):
    run_id, other_run = ObjectId(), ObjectId()
    schema = {"zeta": float, "alpha": int, "mid": str, "w": np.ndarray}
    first = tables.add_table(run_id, "metrics", schema)
    tables.add_table(run_id, "eval", {"acc": float})
    tables.add_table(other_run, "metrics", {"x": int})          # same name in another run: its own table
    first.append_row({"zeta": 0.5, "alpha": 1, "mid": "m", "w": np.arange(3)})
    again = open_store(hub)
    table = again.get_table(run_id, "metrics")
    assert table.schema == first.schema and list(table.schema) == ["zeta", "alpha", "mid", "w"]
    assert table.nrows == 1 and list(table.df.columns) == ["zeta", "alpha", "mid", "w"]
    assert again.tables(run_id) == ["metrics", "eval"] and again.tables(other_run) == ["metrics"]
    table.append_row({"zeta": 1.5, "alpha": 2, "mid": "n", "w": np.arange(2)})   # numbered after the first
    assert list(first.df["alpha"]) == [1, 2] and first.nrows == 2
    assert again.add_table(run_id, "metrics", schema).nrows == 2                    # same schema: the same table
    with pytest.raises(InvalidArgument, match="already has a table 'metrics'"):
        again.add_table(run_id, "metrics", {"zeta": float})
    with pytest.raises(NotFound, match=r"no table 'nope' \(its tables: metrics, eval\)"):
        again.get_table(run_id, "nope")
    with pytest.raises(NotFound, match="no row 5"):
        table.get(5, "zeta")


def test_another_project_does_not_see_the_tables(hub, tables):
    run_id = ObjectId()
    tables.add_table(run_id, "metrics", {"x": int}).append_row({"x": 1})
    stranger = TableStore(hub.db, BlobStore(hub.db, "other"), Project("other"))
    assert stranger.tables(run_id) == []
    with pytest.raises(NotFound):
        stranger.get_table(run_id, "metrics")


def test_add_table_like_example(tables):
    keras_free = {"epoch": 1, "loss": 0.5, "tag": "a", "ok": True, "f32": np.float32(1), "i8": np.int8(3),
                  "w": np.zeros((2, 2)), "frame": pd.DataFrame({"a": [1]})}
    table = tables.add_table_like_example(ObjectId(), "inferred", keras_free)
    assert table.schema == {"epoch": "int", "loss": "float", "tag": "str", "ok": "bool", "f32": "float",
                            "i8": "int", "w": "ndarray", "frame": "dataframe"}
    assert table.nrows == 0   # the example is not a row
    table.append_row(keras_free)
    assert table.nrows == 1
    with pytest.raises(PickleNotAllowed, match=r"'objects': column\(s\) 'fraction' have type object"):
        tables.add_table_like_example(ObjectId(), "objects", {"x": 1, "fraction": fractions.Fraction(1, 3)})
    objects = tables.add_table_like_example(ObjectId(), "objects", {"fraction": fractions.Fraction(1, 3)},
                                            allow_pickle=True)
    assert objects.schema == {"fraction": "object"}
    with pytest.raises(InvalidField, match="column 'fraction': cannot infer"):
        tables.add_table_like_example(ObjectId(), "strict", {"fraction": fractions.Fraction(1, 3)}, alternative=None)
    with pytest.raises(InvalidField, match="column 'x': cannot infer a column type from NoneType"):
        tables.add_table_like_example(ObjectId(), "nones", {"x": None})


def test_arrays_and_dataframes_round_trip_through_checked_blobs(hub, tables):
    table = tables.add_table(ObjectId(), "snapshots", {"epoch": int, "w": np.ndarray, "pred": pd.DataFrame})
    weights = [np.random.default_rng(i).random((28, 28)).astype(np.float32) for i in range(2)]
    preds = [pd.DataFrame({"label": [1, 2], "p": [0.5, 0.25], "name": ["a", "b"]}), pd.DataFrame({"x": [True]})]
    for epoch in range(2):
        table.append_row({"epoch": epoch, "w": weights[epoch], "pred": preds[epoch]})
    row = hub.db["run_tables"].find_one({"_hub.kind": "row", "_hub.row": 0})
    assert row["w"]["summary"] == "npy float32 (28, 28)" and row["pred"]["summary"] == "parquet DataFrame (2, 3)"
    assert len(row["_hub"]["blob_ids"]) == 2
    for blob_id in row["_hub"]["blob_ids"]:
        stored = hub.db["blobs.files"].find_one({"_id": blob_id})
        data = b"".join(bytes(c["data"]) for c in hub.db["blobs.chunks"].find({"files_id": blob_id}, sort=[("n", 1)]))
        assert stored["metadata"]["sha256"] == hashlib.sha256(data).hexdigest()
        assert stored["metadata"]["table"] == "snapshots" and stored["metadata"]["project"] == "test"
    frame = table.df
    for epoch in range(2):
        np.testing.assert_array_equal(frame["w"][epoch], weights[epoch])
        pd.testing.assert_frame_equal(frame["pred"][epoch], preds[epoch])
    assert frame["w"][0].dtype == np.float32 and list(frame["epoch"]) == [0, 1]
    np.testing.assert_array_equal(table.get(1, "w"), weights[1])
    summaries = table.frame(["w"], load=False)
    assert list(summaries.columns) == ["w"] and summaries["w"][1] == "npy float32 (28, 28)"
    chunk = hub.db["blobs.chunks"].find_one({"files_id": row["w"]["payload"]["blob"]["id"]})
    damaged = bytearray(chunk["data"])
    damaged[-1] ^= 0xFF
    hub.db["blobs.chunks"].update_one({"_id": chunk["_id"]}, {"$set": {"data": Binary(bytes(damaged))}})
    with pytest.raises(CorruptBlob, match="sha256"):
        table.get(0, "w")


def test_keras_models_round_trip(tables):
    keras = pytest.importorskip("keras")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)], name="tiny")
    table = tables.add_table(ObjectId(), "checkpoints", {"epoch": int, "model": keras.Model})
    assert table.schema == {"epoch": "int", "model": "keras"}
    table.append_row({"epoch": 0, "model": model})
    with pytest.raises(InvalidField, match=r"column 'model': expected keras, got numpy\.ndarray"):
        table.update_row({"model": np.zeros(3)})
    loaded = table.get(0, "model")
    assert isinstance(loaded, keras.Model) and loaded.name == "tiny"
    for mine, theirs in zip(model.get_weights(), loaded.get_weights(), strict=True):
        np.testing.assert_array_equal(mine, theirs)
    assert isinstance(table.df["model"][0], keras.Model)
    assert table.frame(load=False)["model"][0] == "keras Sequential 'tiny' (15 parameters)"
    assert tables.add_table_like_example(ObjectId(), "like", {"model": model}).schema == {"model": "keras"}


def test_objects_need_allow_pickle_to_write_and_to_read(hub, tables):
    run_id = ObjectId()
    with pytest.raises(PickleNotAllowed, match=r"'notes': column\(s\) 'extra' have type object.*allow_pickle=True"):
        tables.add_table(run_id, "notes", {"epoch": int, "extra": object})
    writer = tables.add_table(run_id, "notes", {"epoch": int, "extra": "object"}, allow_pickle=True)
    writer.append_row({"epoch": 0, "extra": fractions.Fraction(1, 3)})
    writer.append_row({"epoch": 1, "extra": {"plain": [1, 2]}})   # no pickle needed for plain values
    assert writer.get(0, "extra") == fractions.Fraction(1, 3) and writer.df["extra"][1] == {"plain": [1, 2]}
    reader = open_store(hub).get_table(run_id, "notes")
    assert reader.get(1, "extra") == {"plain": [1, 2]}
    with pytest.raises(PickleNotAllowed, match="'notes', column 'extra', row 0"):
        reader.get(0, "extra")
    with pytest.raises(PickleNotAllowed, match=r"frame\(load=False\)"):
        _ = reader.df
    assert list(reader.frame(load=False)["extra"]) == ["dill", "dict(1 keys)"]
    assert reader.get(0, "extra", allow_pickle=True) == fractions.Fraction(1, 3)
    trusting = open_store(hub).get_table(run_id, "notes", allow_pickle=True)
    assert trusting.df["extra"][0] == fractions.Fraction(1, 3)


def test_concurrent_appends_get_distinct_row_numbers(hub, tables):
    run_id = ObjectId()
    tables.add_table(run_id, "metrics", {"writer": int, "i": int})
    per_writer, start, errors = 15, threading.Barrier(2), []

    def write(writer: int) -> None:
        try:
            table = open_store(hub).get_table(run_id, "metrics")   # as a second process would
            start.wait()
            for i in range(per_writer):
                table.append_row({"writer": writer, "i": i})
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    frame = tables.get_table(run_id, "metrics").df
    assert list(frame.index) == list(range(2 * per_writer))
    for writer in range(2):   # each writer's rows in its own order
        assert list(frame[frame["writer"] == writer]["i"]) == list(range(per_writer))


def test_one_handle_shared_by_threads(tables):
    table = tables.add_table(ObjectId(), "metrics", {"i": int})
    threads = [threading.Thread(target=lambda k=k: [table.append_row({"i": k * 10 + j}) for j in range(5)])
               for k in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(table.df["i"]) == [0, 1, 2, 3, 4, 10, 11, 12, 13, 14]


def test_delete_run_tables_releases_their_blobs(hub, tables):
    doomed, kept = ObjectId(), ObjectId()
    for run_id in (doomed, kept):
        table = tables.add_table(run_id, "snapshots", {"epoch": int, "w": np.ndarray})
        tables.add_table(run_id, "scalars", {"x": float}).append_row({"x": 1.0})
        for epoch in range(3):
            table.append_row({"epoch": epoch, "w": np.full(4, epoch)})
    hub.save_dataset(np.arange(5), "unrelated")
    assert hub.db["blobs.files"].count_documents({}) == 7
    assert tables.delete_run_tables(doomed, referenced_anywhere(hub, tables)) == 6   # 4 rows, 2 schemas
    assert hub.db["blobs.files"].count_documents({}) == 4
    assert hub.db["blobs.chunks"].count_documents({}) == 4
    assert tables.tables(doomed) == [] and tables.tables(kept) == ["snapshots", "scalars"]
    np.testing.assert_array_equal(tables.get_table(kept, "snapshots").get(2, "w"), np.full(4, 2))
    assert tables.delete_run_tables(doomed, referenced_anywhere(hub, tables)) == 0


def test_failed_rows_leave_no_blobs(hub, tables):
    table = tables.add_table(ObjectId(), "mixed", {"w": np.ndarray, "x": "ndarray"})
    with pytest.raises(PickleNotAllowed, match="'mixed', column 'x'"):   # an object array needs dill
        table.append_row({"w": np.ones(10), "x": np.array([object()], dtype=object)})
    assert hub.db["blobs.files"].count_documents({}) == 0 and table.nrows == 0


def test_referenced_finds_the_blob_ids_of_rows(hub, tables):
    table = tables.add_table(ObjectId(), "snapshots", {"w": np.ndarray})
    table.append_row({"w": np.ones(3)})
    table.append_row({"w": None})
    blob_ids = hub.db["run_tables"].find_one({"_hub.row": 0})["_hub"]["blob_ids"]
    stranger = ObjectId()
    assert tables.referenced([*blob_ids, stranger]) == set(blob_ids)
    assert TableStore(hub.db, BlobStore(hub.db, "other"), Project("other")).referenced(blob_ids) == set(blob_ids)
    assert BlobStore(hub.db, hub.project_name).release(blob_ids, referenced_anywhere(hub, tables)) == 0  # kept
    assert table.get(1, "w") is None and table.df["w"][1] is None


def test_a_run_has_tables_through_the_facade(hub):
    with hub.start_run("with-tables") as run:
        table = run.add_table("predictions", {"label": int, "p": float, "image": np.ndarray})
        table.append_row({"label": 3, "p": 0.9, "image": np.eye(2)})
    again = hub.get_run(run.id).get_table("predictions")
    assert again.nrows == 1 and again.df.loc[0, "label"] == 3
    np.testing.assert_array_equal(again.get(0, "image"), np.eye(2))
    assert hub.find_orphan_blobs(older_than=__import__("datetime").timedelta(0)) == []  # rows' blobs are known
