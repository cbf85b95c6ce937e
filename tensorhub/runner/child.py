"""The entry point of a task's subprocess: ``python -m tensorhub.runner.child WORKDIR``.

It reads ``task.bson`` (and ``function.dill`` for function tasks) from WORKDIR, runs the code with
the hyperparameters, and writes ``outcome.bson``: ``{ok: true, result}`` or ``{ok: false, error}``.
Its stdout/stderr are the runner's log file. It dies with its runner (Linux parent-death signal).
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys
from pathlib import Path

import bson

PR_SET_PDEATHSIG = 1
ENV_PARENT = "TENSORHUB_RUNNER_PID"


def die_with_parent() -> None:
    """Ask Linux to SIGKILL us when the runner dies, and exit if it is already gone."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    expected = os.environ.get(ENV_PARENT)
    if expected and os.getppid() != int(expected):  # the runner died before prctl took effect
        os._exit(70)


def main(workdir: str) -> int:
    die_with_parent()
    from tensorhub.tasks.context import TaskContext, set_current
    from tensorhub.tasks.execute import describe_error, run_code

    folder = Path(workdir)
    task = bson.decode(folder.joinpath("task.bson").read_bytes())
    function_file = folder / "function.dill"
    function_bytes = function_file.read_bytes() if function_file.exists() else None
    set_current(TaskContext(str(task["_id"]), int(task.get("seq", 0)), dict(task.get("hyper_parameters") or {})))
    try:
        outcome = {"ok": True, "result": run_code(task, function_bytes)}
    except Exception as err:
        outcome = {"ok": False, "error": describe_error(err)}
    sys.stdout.flush()
    sys.stderr.flush()
    tmp = folder / "outcome.bson.tmp"
    tmp.write_bytes(bson.encode(outcome))
    tmp.replace(folder / "outcome.bson")  # atomic: the runner never reads half an outcome
    return 0 if outcome["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
