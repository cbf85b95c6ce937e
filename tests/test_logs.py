"""Logs and metrics: saved, filtered, read back as DataFrames, deleted by kind."""
from __future__ import annotations

import numpy as np
import pytest

from tensorhub.errors import ReservedField


def test_logs_by_kind_as_dataframes(hub):
    for epoch in range(3):
        hub.save_training_log(model_name="mlp", epoch=epoch, loss=1.0 / (epoch + 1))
    hub.save_validation_log(model_name="mlp", epoch=2, accuracy=np.float32(0.5))
    hub.save_testing_log(model_name="cnn", accuracy=0.9)
    train = hub.find_logs("training", model_name="mlp")
    assert list(train["epoch"]) == [0, 1, 2] and train["loss"].iloc[1] == 0.5
    assert hub.find_logs("validation")["accuracy"].iloc[0] == 0.5
    assert len(hub.find_logs()) == 5 and len(hub.find_logs(model_name="cnn")) == 1
    assert hub.db["logs"].find_one({"_hub.kind": "validation"})["accuracy"] == 0.5  # a number, not a string


def test_delete_logs_only_touches_its_kind(hub):
    hub.save_training_log(run=1)
    hub.save_validation_log(run=1)
    assert hub.delete_training_log(run=1) == 1
    assert list(hub.find_logs()["kind"]) == ["validation"]
    assert hub.delete_validation_log() == 1 and hub.delete_testing_log() == 0
    assert hub.find_logs().empty


def test_metrics_scale_as_one_small_document_per_point(hub):
    rows = [{"step": s, "epoch": s // 100, "loss": 1 / (s + 1)} for s in range(1000)]
    assert hub.log_metric_rows("run-1", rows) == 1000
    hub.log_metrics("run-2", step=0, loss=9.0)
    frame = hub.find_metrics(run="run-1")
    assert len(frame) == 1000 and list(frame["step"][:3]) == [0, 1, 2]
    assert frame["loss"].iloc[999] == pytest.approx(1 / 1000)
    assert len(hub.find_metrics(run="run-1", step={"$gte": 990})) == 10
    largest = max(len(str(d)) for d in hub.db["metrics"].find())
    assert largest < 500
    assert hub.delete_metrics("run-1") == 1000 and len(hub.find_metrics()) == 1


def test_reserved_log_fields_are_refused(hub):
    hub.save_training_log(kind="x", name="any keyword is a field")  # logs reserve only _id and _hub
    assert hub.find_logs("training")["name"].iloc[0] == "any keyword is a field"
    with pytest.raises(ReservedField, match="_hub"):
        hub.save_training_log(_hub="x")
    with pytest.raises(ReservedField, match="step"):
        hub.log_metric_rows("r", [{"loss": 1, "run": 2, "step": 1, "time": 3}])
