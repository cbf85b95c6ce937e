"""Running a claimed task in the calling process: ``hub.run_top_task()`` (TensorLayer's loop, and
how the embedded store runs tasks). A background thread keeps the lease on the same cadence the
runner daemon uses (see ``attempt.py``). A timeout is not enforced here (the code shares our
process); runners enforce it by killing.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from tensorhub.fields import HUB
from tensorhub.runs.current import RunRef, activate, deactivate
from tensorhub.tasks.attempt import Attempt
from tensorhub.tasks.claims import Claim, Outcome
from tensorhub.tasks.context import TaskContext, reset_current, set_current
from tensorhub.tasks.execute import describe_error, run_code
from tensorhub.tasks.model import Task
from tensorhub.tasks.queue import TaskQueue

SLICE = 0.05


class _LeaseKeeper(threading.Thread):
    def __init__(self, attempt: Attempt) -> None:
        super().__init__(name=f"tensorhub-lease-{attempt.claim.task_id}", daemon=True)
        self.attempt = attempt
        self.stopped = threading.Event()
        self.lost = False

    def run(self) -> None:
        while not self.stopped.wait(SLICE):
            if not self.attempt.beat_due():
                continue
            try:
                if not self.attempt.beat():
                    self.lost = True
                    return
            except Exception:  # a passing connection error: try again next slice
                continue


def run_claim(queue: TaskQueue, claim: Claim, open_hub: Callable[[], Any]) -> Task:
    """Execute the claimed attempt here and write its outcome; returns the task as it ended."""
    attempt = Attempt(queue, claim)
    if not attempt.start():
        return queue.get(claim.task_id)
    keeper = _LeaseKeeper(attempt)
    keeper.start()
    params = dict(claim.task.get("hyper_parameters") or {})
    run_id = None if claim.run_id is None else str(claim.run_id)
    context = TaskContext(str(claim.task_id), claim.attempt, params, open_hub, run_id)
    token = set_current(context)
    run_token = activate(None if run_id is None else RunRef(run_id, claim.task[HUB].get("project")))
    try:
        outcome = Outcome("finished", result=run_code(claim.task, queue.function_bytes(claim)))
    except Exception as err:
        outcome = Outcome("failed", error=describe_error(err))
    except BaseException:  # Ctrl-C, SystemExit: give the task back at once, then stop
        attempt.write_back(Outcome("handed_back", reason="interrupted in run_top_task (Ctrl-C or exit)"))
        raise
    finally:
        context.close()  # buffered step metrics reach the run before the outcome is written
        deactivate(run_token)
        reset_current(token)
        keeper.stopped.set()
        keeper.join()
    attempt.write_back(outcome)
    return queue.get(claim.task_id)


__all__ = ["HUB", "run_claim"]
