"""Every error a user can cause is a TensorHubError that names the argument or key, and nothing
is half-written when one is raised."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from tensorhub import TensorHub
from tensorhub.errors import (
    CodecError,
    DocumentTooLarge,
    InvalidArgument,
    InvalidField,
    PickleNotAllowed,
    TensorHubError,
)

UNSTORABLE = {
    "uint64_max": np.uint64(2**64 - 1),
    "python_big_int": 2**70,
    "complex": np.complex128(1 + 2j),
    "timedelta64": np.timedelta64(5, "s"),
    "timedelta": dt.timedelta(seconds=3),
    "nan": float("nan"),
    "np_nan": np.float32("nan"),
    "inf": float("inf"),
    "minus_inf": -np.inf,
    "set": {1, 2},
}


@pytest.mark.parametrize("key", sorted(UNSTORABLE))
def test_unstorable_values_are_refused_by_name_everywhere(hub, key):
    value = UNSTORABLE[key]
    calls = {
        "dataset kwarg": lambda: hub.save_dataset(np.ones(2), "d", **{key: value}),
        "nested dataset kwarg": lambda: hub.save_dataset(np.ones(2), "d", meta={key: [value]}),
        "model kwarg": lambda: hub.save_model([np.ones(2)], "m", **{key: value}),
        "log": lambda: hub.save_training_log(**{key: value}),
        "metric": lambda: hub.log_metrics("run", step=1, **{key: value}),
        "hyperparameter": lambda: hub.create_task("t", source="x = 1", hyper_parameters={key: value}),
        "task kwarg": lambda: hub.create_task("t", source="x = 1", **{key: value}),
        "query": lambda: hub.find_top_dataset("d", **{key: value}),
    }
    for where, call in calls.items():
        with pytest.raises(InvalidField, match=key) as caught:
            call()
        assert isinstance(caught.value, TensorHubError), where
    assert hub.db["blobs.files"].count_documents({}) == 0  # refused before any bytes were written
    for collection in ("datasets", "models", "logs", "metrics", "tasks"):
        assert hub.db[collection].count_documents({}) == 0


def test_values_bson_holds_are_stored_as_plain_numbers(hub):
    hub.save_training_log(small=np.uint64(7), long=np.longdouble(0.5), half=np.float16(0.25),
                          when=np.datetime64("2024-05-01"), flag=np.bool_(True))
    doc = hub.db["logs"].find_one()
    assert (doc["small"], doc["long"], doc["half"], doc["flag"]) == (7, 0.5, 0.25, True)
    assert doc["when"] == dt.datetime(2024, 5, 1, tzinfo=dt.timezone.utc)


def test_a_field_over_16_mb_is_named_and_nothing_is_written(hub):
    big = "x" * (17 * 1024 * 1024)
    with pytest.raises(DocumentTooLarge, match="'notes'"):
        hub.save_dataset(np.ones(3), "d", notes=big)
    with pytest.raises(DocumentTooLarge, match="'notes'"):
        hub.create_task("t", source="x = 1", notes=big)
    with pytest.raises(DocumentTooLarge, match="hyper_parameters"):
        hub.create_task("t", function=len, hyper_parameters={"vocab": big})
    with pytest.raises(DocumentTooLarge, match="'notes'"):
        hub.save_validation_log(notes=big)
    assert hub.db["blobs.files"].count_documents({}) == 0 and hub.db["blobs.chunks"].count_documents({}) == 0
    assert hub.db["datasets"].count_documents({}) == 0 and hub.db["tasks"].count_documents({}) == 0


def test_sort_strings_and_bad_sorts(hub):
    for i in (3, 1, 2):
        hub.save_dataset(np.full(1, i), "d", rank=i)
    assert hub.find_top_dataset("d", sort="rank")[0] == 1          # ascends, as in pymongo
    assert hub.find_top_dataset("d", sort="-rank")[0] == 3         # descends
    assert hub.find_top_dataset("d", sort=["-rank"])[0] == 3
    assert hub.find_top_dataset("d", sort=("rank", -1))[0] == 3
    for bad in ([("rank", "desc")], [("rank", True)], "$rank", [], 5):
        with pytest.raises(InvalidArgument, match="sort"):
            hub.find_top_dataset("d", sort=bad)


def test_saved_result_keys_given_as_one_string_is_one_key(hub):
    hub.create_task("t", source="test_accuracy = 0.5", saved_result_keys="test_accuracy")
    assert hub.find_tasks()[0].saved_result_keys == ["test_accuracy"]
    assert hub.run_top_task("t").result == {"test_accuracy": 0.5}
    with pytest.raises(InvalidArgument, match="saved_result_keys"):
        hub.create_task("t", source="x = 1", saved_result_keys={"a": 1})


def test_queries_refuse_javascript_and_unknown_top_level_operators(hub):
    with pytest.raises(InvalidField, match="JavaScript"):
        hub.list_models(acc={"$where": "1"})
    with pytest.raises(InvalidField, match=r"\$expr"):
        hub.list_models(**{"$expr": {"$gt": ["$a", 1]}})
    with pytest.raises(InvalidField, match=r"\$or"):
        hub.list_models(**{"$or": "acc"})


def test_tensorlayer_constructor_needs_no_auth_without_a_username_and_names_bad_arguments():
    with pytest.raises(InvalidArgument, match="port"):
        TensorHub(ip="localhost", port="27017x", dbname="temp")
    with pytest.raises(InvalidArgument, match="keywords"):
        TensorHub("localhost", 27017, "temp", None, "password", "p", "extra")
    with pytest.raises(InvalidArgument, match="keywords"):
        TensorHub("localhost", 27017, "temp", ip="otherhost")
    with pytest.raises(InvalidArgument, match="project_name"):
        TensorHub("mongomock://", "mnist", "extra")


keras = pytest.importorskip("keras")


def _built(model: keras.Model) -> keras.Model:
    model(np.zeros((1, 3), dtype="float32"))
    return model


def test_keras_models_that_cannot_round_trip_are_refused_with_a_fix(hub):
    unbuilt = keras.Sequential([keras.layers.Dense(2)])
    with pytest.raises(CodecError, match="not built"):
        hub.save_model(unbuilt, "m")

    class Unregistered(keras.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    with pytest.raises(CodecError, match="register_keras_serializable"):
        hub.save_model(_built(Unregistered()), "m")

    lam = keras.Sequential([keras.Input((3,)), keras.layers.Lambda(lambda x: x * 2)])
    with pytest.raises(PickleNotAllowed, match="allow_pickle=True"):
        hub.save_model(lam, "lam")
    assert hub.db["models"].count_documents({}) == 0 and hub.db["blobs.files"].count_documents({}) == 0

    hub.save_model(lam, "lam", allow_pickle=True)  # the documented opt-in ...
    with pytest.raises(PickleNotAllowed, match="allow_pickle"):
        hub.find_top_model(model_name="lam")      # ... is needed to load it too
    back = hub.find_top_model(model_name="lam", allow_pickle=True)
    np.testing.assert_allclose(back.predict(np.ones((1, 3)), verbose=0), [[2.0, 2.0, 2.0]])


def test_metadata_never_replaces_a_model_attribute(hub):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)], name="net")
    hub.save_model(model, "net", layers=2, name="second_model", trainable="no", test_accuracy=0.5)
    net = hub.find_top_model(model_name="net")
    assert net.predict(np.ones((1, 3)), verbose=0).shape == (1, 2)  # still a working model
    assert isinstance(net._layers, list) and net._name == "second_model" and net._test_accuracy == 0.5
    assert net.hub_record.fields["layers"] == 2 and net.trainable is True
