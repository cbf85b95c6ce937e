"""A training killed with its runner continues on another runner from its last checkpoint.

Real runner processes on a real server, a real Keras model, and kill -9."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

pytest.importorskip("keras")
pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent

TRAIN = """
import time
import numpy as np
import keras
from tensorhub import current_task
from tensorhub.keras import HubCallback

task = current_task()
rng = np.random.default_rng(0)
x, y = rng.random((64, 4)).astype("float32"), rng.integers(0, 3, 64)
model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
callback = HubCallback(checkpoint_every=1)
model, initial_epoch = callback.resume(model)      # the two lines that make a training resumable


class Slow(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        time.sleep(epoch_seconds)


model.fit(x, y, batch_size=16, epochs=epochs, initial_epoch=initial_epoch, verbose=0, callbacks=[callback, Slow()])
iterations = int(model.optimizer.iterations)
started_at = initial_epoch
task.hub.save_model(model, model_name="resumed")
"""


def start_runner(uri: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tensorhub.cli", "runner", "--uri", uri, "--project", "test",
                             "--lease-seconds", "4", "--poll-interval", "0.2", "--log-level", "WARNING"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_until(condition: Callable[[], object], timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def test_kill_9_at_epoch_k_resumes_on_another_runner_at_epoch_k(server_hub, server_uri):
    epochs = 6
    task_id = server_hub.create_task("train", source=TRAIN, saved_result_keys=["iterations", "started_at"],
                                     hyper_parameters={"epochs": epochs, "epoch_seconds": 1.0})
    first = start_runner(server_uri)
    second = None
    try:
        def checkpointed_epochs() -> int:
            return server_hub.db["checkpoints"].count_documents({"_hub.task_id": task_id})
        wait_until(lambda: checkpointed_epochs() >= 2, 120, "the first attempt to checkpoint two epochs")
        first.send_signal(signal.SIGKILL)
        first.wait()
        killed_run = server_hub.list_runs("train")[0]
        k = max(c["epoch"] for c in server_hub.db["checkpoints"].find({"_hub.run_id": killed_run.id}))
        assert 2 <= k < epochs
        second = start_runner(server_uri)
        wait_until(lambda: server_hub.get_task(task_id).status in ("finished", "failed"), 180, "the task to end")
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    task = server_hub.get_task(task_id)
    assert task.status == "finished", task.error
    assert task.result["started_at"] == k                 # the next attempt started at epoch k
    assert task.result["iterations"] == epochs * 4        # trained n epochs in total (4 batches each)
    runs = server_hub.list_runs("train", sort="attempt")
    assert [(r.attempt, r.status) for r in runs] == [(1, "lost"), (2, "finished")]
    assert runs[1].parent_run_id == runs[0].id
    assert runs[0].document["runner"]["id"] != runs[1].document["runner"]["id"]
    assert runs[1].epochs_df()["epoch"].tolist() == list(range(k + 1, epochs + 1))
    history = runs[1].epochs_df(include_ancestors=True)
    assert history["epoch"].tolist() == list(range(1, epochs + 1))   # each epoch once
    lineage = server_hub.lineage(server_hub.list_models("resumed")[0])
    assert lineage["run"]["id"] == runs[1].id and lineage["epoch"] == epochs
    assert [a["id"] for a in lineage["ancestors"]] == [runs[0].id]
