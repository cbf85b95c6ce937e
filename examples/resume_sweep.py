"""A sweep that survives a dead GPU box: epochs logged through the Keras callback, a runner
killed with kill -9 mid-training, its run resumed on another runner from the last checkpoint,
then the leaderboard as a DataFrame and the learning curves as a PNG.

Needs a server that runner processes can share (MongoDB, or FerretDB)::

    docker compose up -d mongodb
    python examples/resume_sweep.py --uri "mongodb://localhost:27017/demo?directConnection=true"
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tensorhub import TensorHub

ROOT = Path(__file__).resolve().parent.parent
TRAIN = """
import time
import numpy as np
import keras
from tensorhub import current_task
from tensorhub.keras import HubCallback

rng = np.random.default_rng(0)
x = rng.random((256, 8)).astype("float32")
y = (x[:, 0] + x[:, 1] > 1).astype("int64")
model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(n_units, activation="relu"),
                          keras.layers.Dense(2, activation="softmax")])
model.compile(keras.optimizers.Adam(lr), "sparse_categorical_crossentropy", metrics=["accuracy"])
callback = HubCallback(checkpoint_every=1)            # logs every epoch to this attempt's run
model, initial_epoch = callback.resume(model)         # continue where a dead attempt stopped


class Pace(keras.callbacks.Callback):                 # a demo: slow enough to kill mid-training
    def on_epoch_end(self, epoch, logs=None):
        time.sleep(epoch_seconds)


model.fit(x, y, validation_split=0.25, epochs=epochs, initial_epoch=initial_epoch, verbose=0,
          callbacks=[callback, Pace()])
val_accuracy = float(model.evaluate(x[192:], y[192:], verbose=0)[1])
current_task().hub.save_model(model, model_name="mlp", val_accuracy=val_accuracy)
"""


def runner(uri: str, project: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tensorhub.cli", "runner", "--uri", uri, "--project", project,
                             "--lease-seconds", "6", "--log-level", "WARNING"], cwd=ROOT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--uri", default=os.environ.get("TENSORHUB_URI"), required="TENSORHUB_URI" not in os.environ)
    parser.add_argument("--project", default="resume-demo")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--plot", default="learning_curves.png")
    args = parser.parse_args()

    hub = TensorHub(args.uri, project_name=args.project)
    hub.delete_tasks()
    hub.create_grid_tasks("sweep", source=TRAIN, grid={"n_units": [4, 16], "lr": [0.01, 0.003]},
                          hyper_parameters={"epochs": args.epochs, "epoch_seconds": 0.5},
                          saved_result_keys=["val_accuracy"], max_attempts=3)
    boxes = [runner(args.uri, args.project) for _ in range(2)]
    try:
        # Wait until some task has checkpointed two epochs, then pull the plug on its runner.
        victim = None
        while victim is None:
            time.sleep(0.5)
            for task in hub.find_tasks("sweep", status="running"):
                if hub.db["checkpoints"].count_documents({"_hub.task_id": task.id}) >= 2:
                    victim = task
                    break
        box = next(p for p in boxes if p.pid == victim.runner.pid)
        print(f"kill -9 runner {box.pid} while it trains task {victim.id} "
              f"(hyper_parameters {victim.hyper_parameters})")
        box.send_signal(signal.SIGKILL)
        box.wait()
        boxes.append(runner(args.uri, args.project))          # a replacement box joins
        hub.wait_for_tasks("sweep", timeout=600, poll_interval=0.5, progress=False)
    finally:
        for proc in boxes:
            if proc.poll() is None:
                proc.terminate()
        for proc in boxes:
            proc.wait(timeout=60)

    for run in hub.list_runs("sweep"):
        if run.parent_run_id is not None:
            resumed_at = run.epochs_df()["epoch"].min() - 1
            print(f"run {run.id} (attempt {run.attempt}) resumed at epoch {resumed_at} "
                  f"after run {run.parent_run_id} was lost")
    leaderboard = hub.list_models_grouped_by_epoch_metric("val_accuracy", "max", task_name="sweep")
    print(leaderboard[["run_name", "status", "epoch", "val_accuracy", "hp.n_units", "hp.lr"]].to_string(index=False))
    best = hub.get_best_model("val_accuracy", "max", task_name="sweep")
    print(f"best: epoch {best.epoch}, val_accuracy {best.value:.3f}, {best.hyper_parameters}")

    from tensorhub import plots

    figure = plots.learning_curves(hub=hub, task_name="sweep", metrics=["loss", "accuracy"])
    plots.save(figure, args.plot)
    print(f"learning curves: {args.plot}")


if __name__ == "__main__":
    main()
