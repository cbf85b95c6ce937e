"""Models: real tf.keras round trips, weight lists, metadata queries, best-model lookups."""
from __future__ import annotations

import os

import numpy as np
import pytest

from tensorhub.errors import PickleNotAllowed, ReservedField

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
keras = pytest.importorskip("keras", reason="tf.keras models need: pip install 'tensorhub[tensorflow]'")


def tiny_model(units: int = 8) -> keras.Model:
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(units, activation="relu"),
                              keras.layers.Dense(3, activation="softmax")], name="mlp")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    rng = np.random.default_rng(0)
    model.fit(rng.random((32, 4)), rng.integers(0, 3, 32), epochs=2, verbose=0)
    return model


@pytest.fixture(scope="module")
def trained() -> keras.Model:
    return tiny_model()


def test_keras_model_round_trips_with_identical_predictions(hub, trained):
    x = np.random.default_rng(1).random((5, 4)).astype("float32")
    hub.save_model(trained, model_name="mlp", test_accuracy=0.9)
    net = hub.find_top_model(model_name="mlp")
    np.testing.assert_array_equal(net.predict(x, verbose=0), trained.predict(x, verbose=0))
    assert [w.shape for w in net.get_weights()] == [w.shape for w in trained.get_weights()]
    assert net.optimizer is not None  # compiled state travels too: training can resume


def test_architecture_is_readable_in_the_document(hub, trained):
    hub.save_model(trained, model_name="mlp")
    doc = hub.db["models"].find_one()
    info = doc["_hub"]["payload"]["info"]
    assert info["class_name"] == "Sequential" and info["parameters"] == trained.count_params()
    layers = info["architecture"]["config"]["layers"]
    assert [layer["class_name"] for layer in layers][-2:] == ["Dense", "Dense"]
    assert doc["_hub"]["payload"]["blob"]["format"] == "keras"


def test_best_model_by_metric_with_tensorlayer_attributes(hub, trained):
    for acc in (0.7, 0.95, 0.8):
        hub.save_model(trained, model_name="mlp", test_accuracy=acc, hp={"n_units": int(acc * 100)})
    hub.save_model(trained, model_name="cnn", test_accuracy=0.99)
    net = hub.find_top_model(sort=[("test_accuracy", -1)], model_name="mlp")
    assert net._test_accuracy == 0.95 and net._model_name == "mlp" and net._hp == {"n_units": 95}
    assert net.hub_record.fields["test_accuracy"] == 0.95 and net.hub_record.version == 2
    assert hub.find_top_model(model_name="mlp", test_accuracy={"$gt": 0.9})._test_accuracy == 0.95
    assert hub.find_top_model(model_name="mlp", **{"hp.n_units": 70})._test_accuracy == 0.7
    assert hub.find_top_model(model_name="mlp", test_accuracy={"$gt": 0.99}) is None


def test_weight_lists_round_trip_and_list_without_loading(hub, trained):
    weights = trained.get_weights()
    hub.save_model(weights, model_name="weights", epoch=3)
    records = hub.list_models("weights")
    assert len(records) == 1 and records[0].fields["epoch"] == 3 and records[0].fields["version"] == 1
    back = hub.find_top_model(model_name="weights")
    assert isinstance(back, list) and back._epoch == 3
    for a, b in zip(weights, back, strict=True):
        np.testing.assert_array_equal(a, b)
    dict_weights = {"w": np.ones((2, 2)), "b": np.zeros(2)}
    hub.save_model(dict_weights, model_name="dict")
    assert hub.find_top_model(model_name="dict")["w"].tolist() == [[1.0, 1.0], [1.0, 1.0]]


def test_delete_model_removes_its_bytes(hub, trained):
    hub.save_model(trained, model_name="mlp", run=1)
    hub.save_model(trained, model_name="mlp", run=2)
    assert hub.delete_model("mlp", run=1) == 1
    assert [r.fields["run"] for r in hub.list_models("mlp")] == [2]
    assert hub.db["blobs.files"].count_documents({}) == 1


def test_bad_kwargs_are_named(hub, trained):
    with pytest.raises(ReservedField, match="_hub"):
        hub.save_model(trained, model_name="mlp", _hub=1)
    with pytest.raises(ReservedField, match=r"_hub\.project"):
        hub.find_top_model(model_name="mlp", **{"_hub.project": "other"})
    with pytest.raises(Exception, match="'callback'"):
        hub.save_model(trained, model_name="mlp", callback=lambda: 1)
    with pytest.raises(Exception, match="sort"):
        hub.find_top_model(sort=[("acc", "desc")])


def test_arbitrary_objects_only_with_pickle_opt_in(hub):
    def predict(x):
        return x * 2

    with pytest.raises(PickleNotAllowed):
        hub.save_model(predict, model_name="fn")
    hub.save_model(predict, model_name="fn", allow_pickle=True)
    with pytest.raises(PickleNotAllowed):
        hub.find_top_model(model_name="fn")
    assert hub.find_top_model(model_name="fn", allow_pickle=True)(21) == 42
