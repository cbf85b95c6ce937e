"""MLflow's half of bench/metrics_logging.py; runs in bench/.venv-mlflow, not in tensorhub's venv.

    bench/.venv-mlflow/bin/python bench/mlflow_metrics_child.py --points 100000 --dir /tmp/somewhere

Logs the same step points as the parent (see ``point`` in metrics_logging.py: loss and accuracy
every step, lr every 10th) into one run of a SQLite tracking store with ``MlflowClient.log_batch``
in batches of 1,000 metrics (MLflow's per-request limit), then reads every key back with
``get_metric_history`` into one wide DataFrame (step, time, one column per metric) — the same
frame ``run.steps_df()`` returns. Prints one JSON object on the last line of stdout.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import time
from typing import Any

MAX_METRICS_PER_BATCH = 1000  # MLflow's log_batch limit (MAX_METRICS_PER_BATCH in mlflow.utils.validation)
KEYS = ("loss", "accuracy", "lr")


def point(step: int, points: int) -> dict[str, float]:
    """The metrics of one step; must match metrics_logging.point."""
    values = {"loss": 1.0 / (step + 1), "accuracy": step / points}
    if step % 10 == 0:
        values["lr"] = 0.1 / (1 + step // 1000)
    return values


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--dir", required=True, help="directory for mlflow.db (created)")
    parser.add_argument("--reads", type=int, default=3)
    args = parser.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # keep stdout for the JSON line
    logging.getLogger("alembic").setLevel(logging.WARNING)

    import mlflow
    import pandas as pd
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{os.path.abspath(args.dir)}/mlflow.db")
    experiment = client.create_experiment("bench")
    run_id = client.create_run(experiment).info.run_id  # schema creation and run setup stay untimed

    # Timed like tensorhub's side: building the points (with a timestamp each) and storing them.
    start, cpu = time.perf_counter(), time.process_time()
    batch: list[Any] = []
    logged = 0
    for step in range(args.points):
        now = int(time.time() * 1000)
        for key, value in point(step, args.points).items():
            batch.append(Metric(key, value, now, step))
        if len(batch) >= MAX_METRICS_PER_BATCH - len(KEYS):  # never split one step across requests
            client.log_batch(run_id, metrics=batch)
            logged += len(batch)
            batch = []
    if batch:
        client.log_batch(run_id, metrics=batch)
        logged += len(batch)
    client.set_terminated(run_id)
    log_seconds, log_cpu = time.perf_counter() - start, time.process_time() - cpu

    def read() -> pd.DataFrame:
        frame: pd.DataFrame | None = None
        for key in KEYS:
            history = client.get_metric_history(run_id, key)
            column = pd.DataFrame({"step": [m.step for m in history],
                                   f"time_{key}": [m.timestamp for m in history],
                                   key: [m.value for m in history]})
            frame = column if frame is None else frame.merge(column, on="step", how="outer")
        assert frame is not None
        frame["time"] = pd.to_datetime(frame.pop("time_loss"), unit="ms", utc=True)
        return frame.drop(columns=[c for c in frame.columns if c.startswith("time_")]).sort_values("step")

    reads, cpus = [], []
    rows = 0
    for _ in range(args.reads):
        start, cpu = time.perf_counter(), time.process_time()
        rows = len(read())
        reads.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu)
    print(json.dumps({"mlflow_version": mlflow.__version__, "points": args.points, "metric_values": logged,
                      "log_seconds": log_seconds, "read_seconds": min(reads),
                      "read_seconds_median": statistics.median(reads), "rows": rows,
                      "log_cpu": log_cpu, "read_cpu": min(cpus)}))


if __name__ == "__main__":
    main()
