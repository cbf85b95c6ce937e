"""The distributor of bench/fleet.py: queues tasks through the public API of whichever tensorhub
is first on ``PYTHONPATH`` (today's design or the working tree), in a process of its own so its
commands are counted apart from the runners'.

    python bench/fleet_distributor.py URI PROJECT TASK_NAME COUNT [--rate PER_SECOND] [--trace FILE]

Without ``--rate`` the tasks go in as one sweep (``create_grid_tasks`` over ``i``): the whole backlog
at once in the current design, one insert per task in designs that had no bulk insert; with it,
one every 1/rate seconds on a fixed schedule (arrivals do not drift with slow inserts). With
``--trace`` the task records its start and end in FILE (the exactly-once check); otherwise it is
a no-op (``x = 1``). Prints one JSON line: when queueing began and ended (epoch seconds).
"""
from __future__ import annotations

import argparse
import json
import time

NOOP_SOURCE = "x = 1\n"
# Appends, one line per write, under O_APPEND: concurrent tasks never interleave within a line.
RECORDING_SOURCE = """
import os, time
with open(trace, "a") as f:
    f.write(f"start {i} {time.time()} {os.getpid()}\\n")
x = 1
with open(trace, "a") as f:
    f.write(f"end {i} {time.time()} {os.getpid()}\\n")
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("uri")
    parser.add_argument("project")
    parser.add_argument("task_name")
    parser.add_argument("count", type=int)
    parser.add_argument("--rate", type=float, default=None)
    parser.add_argument("--trace", default=None)
    args = parser.parse_args()

    from tensorhub import TensorHub

    hub = TensorHub(args.uri, project_name=args.project)
    began = time.time()
    start = time.monotonic()
    extra = {"trace": args.trace} if args.trace else {}
    source = RECORDING_SOURCE if args.trace else NOOP_SOURCE
    if not args.rate and args.count:  # (count 0: the hub only makes its database and indexes)
        hub.create_grid_tasks(args.task_name, source=source, grid={"i": list(range(args.count))},
                              hyper_parameters=extra, saved_result_keys=["x"])
    for i in range(args.count if args.rate else 0):
        delay = start + i / args.rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        hub.create_task(args.task_name, source=source, saved_result_keys=["x"], hyper_parameters={"i": i, **extra})
    ended = time.time()
    hub.close()
    print(json.dumps({"began": began, "ended": ended, "count": args.count}), flush=True)


if __name__ == "__main__":
    main()
