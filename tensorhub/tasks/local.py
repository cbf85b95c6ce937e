"""Running a claimed task in the calling process: ``hub.run_top_task()`` (TensorLayer's loop, and
how the embedded store runs tasks). A background thread renews the lease while the code runs.
A timeout is not enforced here (the code shares our process); runners enforce it by killing.
"""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from tensorhub.tasks.claims import Claim, Outcome
from tensorhub.tasks.context import TaskContext, reset_current, set_current
from tensorhub.tasks.execute import describe_error, run_code

if TYPE_CHECKING:
    from tensorhub.hub import TensorHub


class _LeaseKeeper(threading.Thread):
    def __init__(self, hub: "TensorHub", claim: Claim) -> None:
        super().__init__(name=f"tensorhub-lease-{claim.task_id}", daemon=True)
        self.hub, self.claim = hub, claim
        self.stop = threading.Event()
        self.lost = False

    def run(self) -> None:
        while not self.stop.wait(self.claim.lease_seconds / 3):
            try:
                if not self.hub.tasks.claims.heartbeat(self.claim):
                    self.lost = True
                    return
            except Exception:  # a passing connection error: try again next beat
                continue


def run_claim(hub: "TensorHub", claim: Claim) -> dict[str, Any]:
    """Execute the claimed attempt here and write its outcome; returns the task document."""
    code = claim.task["code"]
    keeper = _LeaseKeeper(hub, claim)
    keeper.start()
    token = set_current(TaskContext(str(claim.task_id), claim.seq,
                                    dict(claim.task.get("hyper_parameters") or {}), hub))
    try:
        function_bytes = hub.blobs.read_bytes(code["blob"]["id"]) if code["kind"] == "function" else None
        outcome = Outcome("finished", result=run_code(claim.task, function_bytes))
    except Exception as err:
        outcome = Outcome("failed", error=describe_error(err))
    except BaseException:  # Ctrl-C, SystemExit: give the task back at once, then stop
        hub.tasks.claims.finish(claim, Outcome("handed_back"))
        raise
    finally:
        reset_current(token)
        keeper.stop.set()
        keeper.join()
    hub.tasks.claims.finish(claim, outcome)
    return hub.tasks.get(claim.task_id)
