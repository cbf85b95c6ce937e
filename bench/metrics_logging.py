"""Step metrics: how fast a run logs them, and reads one run's back into a DataFrame, against MLflow.

    python bench/metrics_logging.py                      # starts a FerretDB/SQLite (TENSORHUB_FERRETDB)
    python bench/metrics_logging.py --uri mongodb://localhost:27017/bench?directConnection=true
    python bench/metrics_logging.py --uri mongodb://127.0.0.1:PORT/bench   # FerretDB/PostgreSQL
    python bench/metrics_logging.py --points 20000 --no-mlflow            # a quick look

tensorhub: ``run = hub.start_run(...)``, ``run.log_step`` 100,000 times (loss and accuracy every
step, lr every 10th: the buffered path, buckets of 1,000), ``run.close()``: points/s. Then
``hub.get_run(id).steps_df()``: seconds for 100,000 rows (best of --reads).

MLflow, in the same run of this script, in its own virtualenv ``bench/.venv-mlflow`` (created
on first use: ``mlflow-skinny`` plus ``sqlalchemy`` and ``alembic``, which its SQLite tracking
store needs and the skinny package does not pull in): the same points into a
``sqlite:///.../mlflow.db`` tracking store with ``MlflowClient.log_batch`` in batches of up to
1,000 metrics (its limit), then ``get_metric_history`` of each key into one DataFrame
(bench/mlflow_metrics_child.py). Use ``--mlflow-python`` for an existing environment.

Both sides run one after the other on the same machine, so the ratios hold even where the
absolute figures move with the machine's load. Targets: logging >= 50,000 points/s on
FerretDB/SQLite and >= 5x MLflow; reading at least as fast as MLflow.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(BENCH))

from mlflow_metrics_child import point  # noqa: E402  (one definition of the points for both sides)

from tensorhub import TensorHub  # noqa: E402

MLFLOW_VENV = BENCH / ".venv-mlflow"
MLFLOW_PACKAGES = ["mlflow-skinny", "sqlalchemy", "alembic", "pandas"]


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux /proc); 0 without a pid."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tensorhub_side(uri: str, points: int, reads: int, server_pid: int | None) -> dict[str, Any]:
    hub = TensorHub(uri, project_name=f"bench-{uuid.uuid4().hex[:6]}")
    try:
        client, server = time.process_time(), cpu_seconds(server_pid)
        start = time.perf_counter()
        run = hub.start_run("metrics-bench", hyper_parameters={"points": points})
        for step in range(points):
            run.log_step(step, **point(step, points))
        run.close()
        log_seconds = time.perf_counter() - start
        client, server = time.process_time() - client, cpu_seconds(server_pid) - server
        times, cpus, rows = [], [], 0
        for _ in range(reads):
            again = hub.get_run(run.id)          # a reader elsewhere: nothing buffered in this object
            cpu = time.process_time() + cpu_seconds(server_pid)
            start = time.perf_counter()
            rows = len(again.steps_df())
            times.append(time.perf_counter() - start)
            cpus.append(time.process_time() + cpu_seconds(server_pid) - cpu)
        buckets = hub.db["run_metrics"].count_documents({"run_id": run.id})
        return {"log_seconds": log_seconds, "read_seconds": min(times), "read_seconds_median": statistics.median(times),
                "rows": rows, "buckets": buckets, "log_cpu": client + server, "log_cpu_client": client,
                "log_cpu_server": server, "read_cpu": min(cpus)}
    finally:
        hub.db["run_metrics"].delete_many({"_hub.project": hub.project_name})
        hub.db["runs"].delete_many({"_hub.project": hub.project_name})
        hub.close()


def mlflow_python(given: str | None) -> str:
    """The interpreter of MLflow's environment; creates bench/.venv-mlflow the first time."""
    if given:
        return given
    python = MLFLOW_VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {MLFLOW_VENV} ({' '.join(MLFLOW_PACKAGES)}), once ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(MLFLOW_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *MLFLOW_PACKAGES], check=True)
    return str(python)


def mlflow_side(python: str, points: int, reads: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-mlflow-") as tmp:
        done = subprocess.run([python, str(BENCH / "mlflow_metrics_child.py"), "--points", str(points),
                               "--dir", tmp, "--reads", str(reads)],
                              capture_output=True, text=True, env={**os.environ, "MLFLOW_TRACKING_URI": ""})
        if done.returncode != 0:
            raise SystemExit(f"the MLflow child failed:\n{done.stderr[-3000:]}")
        return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--uri", default=None, help="a MongoDB or FerretDB URI with a database (default: "
                                                    "start a FerretDB/SQLite)")
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--reads", type=int, default=3, help="reads of the run, best counted")
    parser.add_argument("--no-mlflow", action="store_true")
    parser.add_argument("--mlflow-python", default=None, help="python of an environment with MLflow")
    args = parser.parse_args()

    with ExitStack() as stack:
        uri, label, pid = args.uri, "tensorhub (--uri)", None
        if uri is None:
            from ferretdb import FerretDBServer

            server = stack.enter_context(FerretDBServer())
            uri, label = server.uri + "/bench", "tensorhub, FerretDB/SQLite"
            pid = server._process.pid if server._process is not None else None  # for its CPU time
        ours = tensorhub_side(uri, args.points, args.reads, pid)
    theirs = None if args.no_mlflow else mlflow_side(mlflow_python(args.mlflow_python), args.points, args.reads)

    n = args.points
    print(f"{n:,} step points (loss, accuracy; lr every 10th); machine: {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"{'':<34}{'log points/s':>14}{'read s (best)':>15}{'read s (median)':>17}")
    print(f"{label:<34}{n / ours['log_seconds']:>14,.0f}{ours['read_seconds']:>15.2f}"
          f"{ours['read_seconds_median']:>17.2f}   ({ours['buckets']} buckets, {ours['rows']:,} rows)")
    if theirs is not None:
        print(f"{'MLflow ' + theirs['mlflow_version'] + ', SQLite store':<34}{n / theirs['log_seconds']:>14,.0f}"
              f"{theirs['read_seconds']:>15.2f}{theirs['read_seconds_median']:>17.2f}"
              f"   (log_batch of <= 1,000 metrics, {theirs['rows']:,} rows)")
        print(f"logging: tensorhub / MLflow = {theirs['log_seconds'] / ours['log_seconds']:.1f}x points/s "
              f"(target >= 5x)")
        print(f"reading: MLflow seconds / tensorhub seconds = {theirs['read_seconds'] / ours['read_seconds']:.2f}x "
              f"(target >= 1x)")
    print(f"logging: {n / ours['log_seconds']:,.0f} points/s (target >= 50,000 on FerretDB/SQLite)")
    # CPU seconds do not depend on what else the machine runs: the cost itself, client and server.
    what = "this process + FerretDB" if pid is not None else "this process only (the server's is not seen)"
    print(f"CPU seconds ({what}): logging {ours['log_cpu']:.2f} (client {ours['log_cpu_client']:.2f}, "
          f"server {ours['log_cpu_server']:.2f}), reading {ours['read_cpu']:.2f}", end="")
    if theirs is not None:
        print(f"; MLflow (SQLite in-process): logging {theirs['log_cpu']:.2f}, reading {theirs['read_cpu']:.2f}"
              f" -> {theirs['log_cpu'] / ours['log_cpu']:.1f}x and {theirs['read_cpu'] / ours['read_cpu']:.1f}x")
    else:
        print()


if __name__ == "__main__":
    main()
