"""The objective of bench/fleet.py's hyperopt comparison: a no-op that records each execution.

Importable by name (bench/ is on the workers' PYTHONPATH), so the pickled Domain that hyperopt
stores for its workers refers to it instead of carrying code.
"""
from __future__ import annotations

import os
import time
from typing import Any


def objective(params: dict[str, Any]) -> dict[str, Any]:
    trace = os.environ.get("FLEET_HYPEROPT_TRACE")
    if trace:
        # One line per execution, under O_APPEND: a trial run twice (a claim that was not
        # exclusive) shows up as two lines with the same x.
        with open(trace, "a") as f:
            f.write(f"{params['x']!r} {os.getpid()} {time.time()}\n")
    return {"loss": float(params["x"]), "status": "ok"}
