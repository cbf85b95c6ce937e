"""Runners of one fleet racing for one backlog: how many claim tickets they lose, with a fixed
candidate window of 32 (the design before) against today's window (8 per live runner, as
``TaskQueue.expect_fleet`` is told, widened by 16 for each race lost), side by side in one run on
one server. The fixed window is today's code with the widening turned off.

    python bench/claim_window.py                          # 20 runners, 200 tasks, FerretDB/SQLite
    python bench/claim_window.py --runners 50 --tasks 500 --backend postgresql
    python bench/claim_window.py --backend uri --uri mongodb://localhost:27017/?directConnection=true

Each runner is a process running the runner daemon's claim cycle through the public queue API
(``claim_next(spread=True)``, ``begin``, ``finish_then_claim``) with a 20 ms task in place of a
forked one, so the races are the fleet's and the machine is not busy forking. Tickets are counted
with pymongo command monitoring (server-independent): each document of an insert into
``task_claims`` is a ticket tried, and the reply's ``n`` says how many were won.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
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

DESIGNS = ("fixed 32", "fleet-sized")


def runner(uri: str, design: str, fleet: int, work: float, out: Any) -> None:
    from pymongo import monitoring

    from tensorhub import TensorHub
    from tensorhub.tasks.claims import Outcome, runner_identity
    from tensorhub.tasks.queue import ClaimRequest

    counts = {"tried": 0, "won": 0, "reads": 0, "claimed": 0}
    sent: dict[int, int] = {}

    class Tickets(monitoring.CommandListener):
        def started(self, event: monitoring.CommandStartedEvent) -> None:
            if event.command_name == "insert" and event.command.get("insert") == "task_claims":
                sent[event.request_id] = len(event.command.get("documents", []))
            elif event.command_name == "find" and event.command.get("find") == "tasks":
                counts["reads"] += 1

        def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
            if event.request_id in sent:
                counts["tried"] += sent.pop(event.request_id)
                counts["won"] += int(event.reply.get("n", 0))

        def failed(self, event: monitoring.CommandFailedEvent) -> None:
            sent.pop(event.request_id, None)

    if design == DESIGNS[0]:
        from tensorhub.tasks import claims

        claims.CANDIDATES_PER_LOSS = 0
    hub = TensorHub(uri, project_name="bench", event_listeners=[Tickets()])
    hub.queue.expect_fleet(fleet if design == DESIGNS[1] else None)
    request = ClaimRequest(runner_identity(), 60)
    claim = hub.queue.claim_next(request.runner, 60, spread=True)
    while True:
        if claim is None:
            if not hub.queue.counts("t")["pending"]:
                break
            time.sleep(0.1)
            claim = hub.queue.claim_next(request.runner, 60, spread=True)
            continue
        counts["claimed"] += 1
        hub.queue.begin(claim)
        time.sleep(work)
        _, claim = hub.queue.finish_then_claim(claim, Outcome("finished", result={}), None, request)
    hub.close()
    out.put(counts)


def race(uri: str, design: str, runners: int, tasks: int, work: float) -> dict[str, Any]:
    from tensorhub import TensorHub

    hub = TensorHub(uri, project_name="bench")
    hub.create_grid_tasks("t", source="x = 1", grid={"i": list(range(tasks))})
    out: mp.Queue[dict[str, int]] = mp.Queue()
    began = time.monotonic()
    procs = [mp.Process(target=runner, args=(uri, design, runners, work, out)) for _ in range(runners)]
    for p in procs:
        p.start()
    results = [out.get(timeout=1800) for _ in procs]
    for p in procs:
        p.join()
    seconds = time.monotonic() - began
    finished = hub.queue.counts("t")["finished"]
    hub.db.client.drop_database(hub.db.name)
    hub.close()
    total = {k: sum(r[k] for r in results) for k in results[0]}
    lost = total["tried"] - total["won"]
    # Every claim takes a ticket and every end one: what is won beyond those is a lost race's retry.
    return {"finished": finished, "seconds": seconds, "lost": lost, "lost_per_task": lost / max(1, finished),
            "reads_per_task": total["reads"] / max(1, finished), "tried": total["tried"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "uri"), default="sqlite")
    parser.add_argument("--uri", default=None)
    parser.add_argument("--runners", type=int, default=20)
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--work", type=float, default=0.02, help="seconds each task 'runs'")
    args = parser.parse_args()
    results = {}
    with ExitStack() as stack:
        server = start_server(args.backend, args.uri, stack)
        described = server.describe()
        print(f"server {described}; {args.runners} runners, {args.tasks} tasks", flush=True)
        for design in DESIGNS:
            uri = with_database(server.uri, f"window_{uuid.uuid4().hex[:8]}")
            results[design] = race(uri, design, args.runners, args.tasks, args.work)
            print(f"{design}: {json.dumps({k: round(v, 2) for k, v in results[design].items()})}", flush=True)
    before, now = (results[d] for d in DESIGNS)
    print(f"\n{args.runners} runners racing for {args.tasks} tasks on {described}")
    print(f"{'':28}{DESIGNS[0]:>16}{DESIGNS[1]:>16}{'ratio':>8}")
    for key, label in (("lost_per_task", "lost tickets per task"), ("reads_per_task", "candidate reads per task"),
                       ("seconds", "seconds to drain")):
        print(f"{label:28}{before[key]:>16.2f}{now[key]:>16.2f}{now[key] / max(before[key], 1e-9):>7.2f}x")
    print(f"{'tasks finished':28}{before['finished']:>16}{now['finished']:>16}")


if __name__ == "__main__":
    main()
