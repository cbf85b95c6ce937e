"""How fast the dashboard's queue page answers on a project of many tasks: counts made on every
poll (the design before) against counts served at once while the next are made in the background
(``Recent(stale_for=...)``), side by side in one run on one server.

    python bench/dashboard_pages.py                          # FerretDB/SQLite, 10,000 tasks
    python bench/dashboard_pages.py --backend postgresql     # FerretDB on a throwaway PostgreSQL
    python bench/dashboard_pages.py --backend uri --uri mongodb://localhost:27017/?directConnection=true

The dashboard runs in this process (Flask's test client: server time only, no browser). For each
design: the page's HTML, its first data poll, then polls a second apart while a runner-like
writer finishes tasks, so the counts keep changing. Printed: milliseconds per request (first,
median, max of the later polls) and how old the counts shown were.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from fleet import start_server, with_database  # noqa: E402  (the fleet bench's server helpers)

from tensorhub import TensorHub  # noqa: E402
from tensorhub.dashboard import app as dashboard_app  # noqa: E402
from tensorhub.dashboard import data  # noqa: E402


def fill(hub: TensorHub, count: int) -> None:
    began = time.monotonic()
    hub.create_grid_tasks("sweep", source="acc = lr * 2", grid={"lr": [i / count for i in range(count)]},
                          saved_result_keys="acc")
    print(f"queued {count} tasks in {time.monotonic() - began:.1f} s (one insert)", flush=True)


def finish_some(hub: TensorHub, stop: threading.Event) -> int:
    """A runner's writes meanwhile: tasks go pending -> running -> finished, so counts change."""
    done = 0
    while not stop.is_set():
        if hub.run_top_task("sweep") is None:
            break
        done += 1
        stop.wait(0.2)
    return done


def where_time_goes(hub: TensorHub) -> dict[str, float]:
    """The two queries of a queue poll, each timed alone (ms)."""
    out = {}
    for key, call in (("counts", lambda: hub.queue_summary()),
                      ("page", lambda: hub.find_tasks(sort=[("_id", -1)], limit=50)),
                      ("by_status", lambda: hub.find_tasks(status="pending", sort=[("_id", -1)], limit=50))):
        began = time.perf_counter()
        call()
        out[key] = (time.perf_counter() - began) * 1000
    return out


def measure(hub: TensorHub, uri: str, design: str, polls: int) -> dict[str, Any]:
    stale = data.SUMMARY_STALE if design == "background" else 0.0
    original = data.SUMMARY_STALE
    data.SUMMARY_STALE = stale
    try:
        app = dashboard_app.create_app(hub, warm=design == "background")
    finally:
        data.SUMMARY_STALE = original
    client = app.test_client()
    timed: list[float] = []
    ages: list[float] = []

    def get(path: str) -> Any:
        began = time.perf_counter()
        reply = client.get(path)
        timed.append((time.perf_counter() - began) * 1000)
        if reply.status_code != 200:
            raise SystemExit(f"{path}: HTTP {reply.status_code}: {reply.get_data(as_text=True)[:300]}")
        return reply

    time.sleep(1.0)   # a person opens the page a moment after starting the dashboard
    get("/queue")
    page = timed[-1]
    first = get("/api/queue").get_json()
    ages.append(first.get("counts_age") or 0.0)
    first_ms = timed[-1]
    stop = threading.Event()
    writer_hub = TensorHub(uri, project_name=hub.project_name)
    writer = threading.Thread(target=finish_some, args=(writer_hub, stop), daemon=True)
    writer.start()
    later = []
    for i in range(polls):
        time.sleep(1.0)
        reply = get(f"/api/queue?page={1 + i % 3}").get_json()
        later.append(timed[-1])
        ages.append(reply.get("counts_age") or 0.0)
    stop.set()
    writer.join(timeout=60)
    writer_hub.close()
    return {"page": page, "first": first_ms, "median": statistics.median(later), "max": max(later),
            "age_max": max(ages)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "uri"), default="sqlite")
    parser.add_argument("--uri", default=None)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--polls", type=int, default=8)
    args = parser.parse_args()
    with ExitStack() as stack:
        server = start_server(args.backend, args.uri, stack)
        described = server.describe()
        print(f"server {described}", flush=True)
        uri = with_database(server.uri, f"dash_{uuid.uuid4().hex[:8]}")
        hub = TensorHub(uri, project_name="bench")
        try:
            fill(hub, args.tasks)
            parts = where_time_goes(hub)
            results = {design: measure(hub, uri, design, args.polls) for design in ("every poll", "background")}
        finally:
            hub.db.client.drop_database(hub.db.name)
            hub.close()
    before, now = results["every poll"], results["background"]
    print(f"\nqueue page of a project with {args.tasks} tasks ({described}); ms per request")
    print(f"{'':34}{'counted every poll':>20}{'counted in background':>24}{'ratio':>8}")
    for key, label in (("page", "HTML page"), ("first", "first data poll"), ("median", "later polls, median"),
                       ("max", "later polls, max")):
        print(f"{label:34}{before[key]:>20.0f}{now[key]:>24.0f}{before[key] / max(now[key], 0.1):>7.1f}x")
    print(f"{'oldest counts shown (s)':34}{before['age_max']:>20.1f}{now['age_max']:>24.1f}")
    print(f"\nwhere a poll's time goes, alone and unloaded: counts {parts['counts']:.0f} ms, "
          f"a page of 50 tasks {parts['page']:.0f} ms, the same page filtered by status {parts['by_status']:.0f} ms")


if __name__ == "__main__":
    main()
