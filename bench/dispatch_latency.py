"""How long a new task waits before an idle runner claims it (created_at -> started_at).

    python bench/dispatch_latency.py                       # starts a FerretDB (TENSORHUB_FERRETDB)
    python bench/dispatch_latency.py --uri mongodb://localhost:27017/bench?directConnection=true

Runs one runner with the default adaptive polling and one with a fixed 1 s poll (what polling
peers do), creates tasks one at a time at random gaps, and prints p50/p95 latencies and the ratio.
"""
from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from tensorhub import TensorHub  # noqa: E402


def measure(uri: str, poll: float, count: int) -> list[float]:
    project = f"bench-{uuid.uuid4().hex[:6]}"
    hub = TensorHub(uri, project_name=project)
    runner = subprocess.Popen([sys.executable, "-m", "tensorhub.cli", "runner", "--uri", uri, "--project", project,
                               "--poll-interval", str(poll), "--log-level", "WARNING"], cwd=ROOT)
    try:
        time.sleep(3)  # let the runner become idle, its backoff at its longest
        for _ in range(count):
            task_id = hub.create_task("bench", source="x = 1")
            while hub.get_task(task_id)["status"] in ("pending", "running"):
                time.sleep(0.01)
            time.sleep(random.uniform(0.5, 1.5))  # idle again before the next task
        tasks = hub.find_tasks("bench")
        return [(t["started_at"] - t["created_at"]).total_seconds() * 1000 for t in tasks]
    finally:
        runner.terminate()
        runner.wait()
        hub.delete_tasks("bench")
        hub.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--uri", default=None)
    parser.add_argument("--tasks", type=int, default=20)
    args = parser.parse_args()
    with ExitStack() as stack:
        uri = args.uri
        if uri is None:
            from ferretdb import FerretDBServer

            uri = stack.enter_context(FerretDBServer()).uri + "/bench"
        results = {}
        for label, poll in (("adaptive (default 0.1 s cap)", 0.1), ("fixed 1 s poll (peers)", 1.0)):
            lat = sorted(measure(uri, poll, args.tasks))
            results[label] = statistics.median(lat)
            print(f"{label:<30} p50 {statistics.median(lat):7.1f} ms   p95 {lat[int(0.95 * (len(lat) - 1))]:7.1f} ms"
                  f"   max {lat[-1]:7.1f} ms   (n={len(lat)})")
        a, b = results.values()
        print(f"median dispatch latency ratio, fixed 1 s / adaptive: {b / a:.1f}x")


if __name__ == "__main__":
    main()
