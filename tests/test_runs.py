"""Runs: sessions and task attempts, epoch/step metrics, the Blocks view, lineage, checkpoints,
resume, and the questions asked of them as DataFrames."""
from __future__ import annotations

import numpy as np
import pytest

from tensorhub.errors import InvalidArgument, InvalidField, NotFound


def test_a_script_run_is_finished_or_failed_with_its_traceback(hub):
    with hub.start_run("sweep", hyper_parameters={"opt": {"lr": 0.1}, "units": 8}, note="first") as run:
        run.log_epoch(1, loss=0.5)
    doc = hub.db["runs"].find_one({"_id": run.id})
    assert doc["status"] == "finished" and doc["ended_at"] >= doc["started_at"]
    assert doc["hyper_parameters"] == {"opt": {"lr": 0.1}, "units": 8} and doc["note"] == "first"
    assert doc["_hub"]["project"] == "test" and doc["summary"]["loss"]["last"] == 0.5
    with pytest.raises(ZeroDivisionError), hub.start_run("sweep") as failing:
        1 / 0
    failed = hub.get_run(failing.id)
    assert failed.status == "failed" and "ZeroDivisionError" in failed.document["error"]["traceback"]
    with pytest.raises(NotFound):
        hub.get_run("0123456789ab0123456789ab")


def test_metrics_are_bucketed_and_the_blocks_view_reads_and_writes(hub):
    run = hub.start_run("long")
    for step in range(2500):
        run.log_step(step, loss=1 / (step + 1))
    run.close()
    buckets = list(hub.db["run_metrics"].find({"run_id": run.id}))
    assert len(buckets) == 3 and max(b["n"] for b in buckets) == 1000  # no document grows without bound
    steps = run.steps_df()
    assert len(steps) == 2500 and steps["loss"].iloc[9] == pytest.approx(0.1)
    assert run.log[9]["loss"] == pytest.approx(0.1)
    run.log[9].update(accuracy=0.5)                 # Blocks: log[iteration].update(...)
    assert run.log[9] == {"loss": pytest.approx(0.1), "accuracy": 0.5}
    run.flush()
    assert hub.get_run(run.id).log[9]["accuracy"] == 0.5
    run.log.status["best_loss"] = 0.01              # values not bound to a time
    assert hub.get_run(run.id).log.status == {"best_loss": 0.01}
    with pytest.raises(InvalidField, match="loss"):
        run.log_epoch(1, loss=float("nan"))
    with pytest.raises(InvalidArgument):
        run.log_step(-1, loss=1.0)


def test_lineage_without_user_code(hub):
    hub.save_dataset(np.zeros(3), "mnist", note="v1")
    hub.save_dataset(np.ones(3), "mnist", note="v2")
    with hub.start_run("train", hyper_parameters={"units": 32}) as run:
        data = hub.find_top_dataset("mnist")
        run.log_epoch(1, loss=0.4)
        run.log_epoch(2, loss=0.3)
        record = hub.save_model([data], model_name="mlp", test_accuracy=0.9)
    outside = hub.save_model([data], model_name="mlp")  # no run: no lineage
    lineage = hub.lineage(record)
    assert lineage["run"]["id"] == run.id and lineage["epoch"] == 2
    assert lineage["hyper_parameters"] == {"units": 32}
    assert [(d["dataset_name"], d["version"]) for d in lineage["datasets"]] == [("mnist", 2)]
    assert lineage["datasets"][0]["sha256"] == hub.list_datasets("mnist")[0].sha256
    assert hub.get_run(run.id).document["models"][0]["model_name"] == "mlp"
    assert hub.get_current_epoch(record) == 2 and hub.get_current_epoch(run) == 2
    assert hub.lineage(outside)["run"] is None


TRAIN = """
from tensorhub import current_task
task = current_task()
run = task.run
data = task.hub.find_top_dataset("d")
start = run.resume()
first = 0 if start is None else start.epoch
for epoch in range(first + 1, epochs + 1):
    run.log_epoch(epoch, loss=1.0 / epoch, val_loss=1.5 / epoch)
    run.checkpoint([np.full(2, epoch)], epoch=epoch, loss=1.0 / epoch)
    if epoch == crash_at and task.attempt == 1:
        raise RuntimeError("the GPU box went away")
final_epoch = epoch
"""


def test_each_task_attempt_is_a_run_and_the_retry_resumes_from_the_last_checkpoint(hub):
    hub.save_dataset(np.arange(3), "d")
    task_id = hub.create_task("fit", source="import numpy as np\n" + TRAIN, saved_result_keys=["final_epoch"],
                              hyper_parameters={"epochs": 5, "crash_at": 2})
    first = hub.run_top_task("fit")
    assert first.status == "pending" and first.attempts == 1
    second = hub.run_top_task("fit")
    assert second.status == "finished" and second.result == {"final_epoch": 5}
    runs = hub.list_runs("fit", sort="attempt")
    assert [(r.attempt, r.status) for r in runs] == [(1, "failed"), (2, "finished")]
    assert runs[1].parent_run_id == runs[0].id and runs[0].task_id == task_id
    assert runs[0].epochs_df()["epoch"].tolist() == [1, 2]
    assert runs[1].epochs_df()["epoch"].tolist() == [3, 4, 5]        # continued, not restarted
    merged = runs[1].epochs_df(include_ancestors=True)
    assert merged["epoch"].tolist() == [1, 2, 3, 4, 5]               # each epoch once
    assert runs[0].document["datasets"][0]["dataset_name"] == "d"    # lineage inside tasks too
    assert hub.get_run(runs[1].id).resume().epoch == 5


def test_dataframes_answer_which_run_was_best_at_which_epoch(hub):
    curves = {8: [0.9, 0.7, 0.8], 32: [0.8, 0.5, 0.6], 128: [0.95, 0.9, 0.85]}
    for units, losses in curves.items():
        with hub.start_run("sweep", hyper_parameters={"units": units, "opt": {"lr": 0.1}}) as run:
            for epoch, loss in enumerate(losses, 1):
                run.log_epoch(epoch, val_loss=loss, val_accuracy=1 - loss)
            run.checkpoint([np.full(2, units)], epoch=2)
    grouped = hub.list_models_grouped_by_epoch_metric("val_loss", "min")
    assert grouped["hp.units"].tolist() == [32, 8, 128] and grouped["epoch"].tolist() == [2, 2, 3]
    assert grouped["val_loss"].tolist() == [0.5, 0.7, 0.85] and "hp.opt.lr" in grouped.columns
    best = hub.get_best_model("val_loss", "min", load=True)
    assert best.hyper_parameters == {"units": 32, "opt.lr": 0.1} and best.epoch == 2
    assert best.metrics["val_accuracy"] == pytest.approx(0.5)
    assert best.model[0].tolist() == [32, 32]                        # the checkpoint of its best epoch
    epochs = hub.list_model_epochs()
    assert len(epochs) == 9 and {"run_id", "epoch", "val_loss", "hp.units"} <= set(epochs.columns)
    frame = hub.list_runs(as_frame=True)
    assert len(frame) == 3 and set(frame["status"]) == {"finished"} and "val_loss" in frame.columns
    with pytest.raises(InvalidArgument, match="metric_direction"):
        hub.get_best_model("val_loss", "lowest")
    assert hub.get_best_model("never_logged") is None


REPEAT = """
from tensorhub import current_task
run = current_task().run
run.log_epoch(1, loss=0.1 * units + 0.01 * repeat_noise, val_loss=0.2 * units)
test_accuracy = 1 - 0.1 * units
"""


def test_repeats_and_splits_as_in_aiqc(hub):
    ids = hub.create_grid_tasks("r", source=REPEAT, grid={"units": [1, 2]}, repeat=3,
                                hyper_parameters={"repeat_noise": 1}, saved_result_keys=["test_accuracy"])
    assert len(ids) == 6 and sorted(t.fields["repeat"] for t in hub.find_tasks("r")) == [0, 0, 1, 1, 2, 2]
    hub.run_tasks("r")
    per_run = hub.metrics_df("r")
    assert set(per_run["split"]) == {"train", "validation", "test"} and len(per_run) == 18
    summary = hub.metrics_aggregate_df("r")
    validation = summary[summary["split"] == "validation"].set_index("hp.units")
    assert validation.loc[2, "loss.mean"] == pytest.approx(0.4) and validation.loc[2, "repeats"] == 3
    assert {"loss.median", "loss.std", "loss.min", "loss.max"} <= set(summary.columns)
    with pytest.raises(InvalidArgument, match="repeat"):
        hub.create_grid_tasks("r", source=REPEAT, grid={"units": [1]}, repeat=0)


keras = pytest.importorskip("keras")


def test_keras_callback_logs_epochs_and_checkpoints_deduplicated(hub):
    from tensorhub.keras import HubCallback

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    rng = np.random.default_rng(0)
    x, y = rng.random((64, 4)), rng.integers(0, 3, 64)
    with hub.start_run("keras") as run:
        callback = HubCallback(run=run, checkpoint_every=2)
        model.fit(x, y, validation_split=0.25, epochs=4, verbose=0, callbacks=[callback])
        run.checkpoint(model, epoch=4)          # the same content as the epoch-4 checkpoint
    epochs = run.epochs_df()
    assert epochs["epoch"].tolist() == [1, 2, 3, 4] and {"loss", "val_loss", "accuracy"} <= set(epochs.columns)
    records = list(hub.db["checkpoints"].find({"_hub.run_id": run.id}, sort=[("_hub.version", 1)]))
    assert [r["epoch"] for r in records] == [2, 4, 4]
    assert records[1]["_hub"]["blob_ids"] == records[2]["_hub"]["blob_ids"]  # bytes stored once
    resumed, initial_epoch = HubCallback(run=hub.start_run("next", parent=run)).resume(model)
    assert initial_epoch == 4
    np.testing.assert_allclose(resumed.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)
    assert int(resumed.optimizer.iterations) == int(model.optimizer.iterations)  # optimizer state too


def test_models_and_datasets_as_dataframes(hub):
    hub.save_dataset(np.zeros(2), "d", split="train", meta={"source": "a"})
    with hub.start_run("r") as run:
        run.log_epoch(1, loss=0.1)
        hub.save_model([np.ones(2)], "m", test_accuracy=0.9, hp={"lr": 0.1})
    models = hub.list_models("m", as_frame=True)
    assert models.loc[0, "test_accuracy"] == 0.9 and models.loc[0, "hp.lr"] == 0.1
    assert models.loc[0, "run_id"] == str(run.id) and models.loc[0, "version"] == 1
    datasets = hub.list_datasets(as_frame=True)
    assert datasets.loc[0, "dataset_name"] == "d" and datasets.loc[0, "meta.source"] == "a"
    assert datasets.loc[0, "split"] == "train" and datasets.loc[0, "size"] > 0


STEPS = """
from tensorhub import current_task
run = current_task().run
for step in range(1500):
    run.log_step(step, loss=1.0 / (step + 1))     # the last 500 are still buffered when the code ends
done = True
"""


def test_a_tasks_buffered_steps_are_stored_when_its_code_ends(hub):
    hub.create_task("steps", source=STEPS, saved_result_keys=["done"])
    assert hub.run_top_task("steps").status == "finished"
    run = hub.list_runs("steps")[0]
    assert len(run.steps_df()) == 1500 and run.refresh().document["steps_done"] == 1499
