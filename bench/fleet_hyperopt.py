"""The hyperopt driver of bench/fleet.py (runs in bench/.venv-hyperopt, not in tensorhub's venv).

    python bench/fleet_hyperopt.py mongo://HOST:PORT/DB/jobs COUNT EXP_KEY

Queues COUNT trials of a no-op objective at once (``max_queue_len=COUNT``: a backlog, as the
tensorhub side gets) through ``MongoTrials`` and waits until ``hyperopt-mongo-worker`` processes
have run them all. Prints one JSON line: when it began and ended (epoch seconds) and the count.
"""
from __future__ import annotations

import json
import sys
import time

from hyperopt import fmin, hp, rand
from hyperopt.mongoexp import MongoTrials

from fleet_hyperopt_objective import objective


def main() -> None:
    url, count, exp_key = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    trials = MongoTrials(url, exp_key=exp_key)
    began = time.time()
    fmin(objective, {"x": hp.uniform("x", 0.0, 1.0)}, algo=rand.suggest, max_evals=count,
         trials=trials, max_queue_len=count, show_progressbar=False)
    print(json.dumps({"began": began, "ended": time.time(), "count": count}), flush=True)


if __name__ == "__main__":
    main()
