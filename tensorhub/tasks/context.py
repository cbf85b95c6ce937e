"""What a running task's code can ask about itself: ``tensorhub.current_task()``.

    from tensorhub import current_task
    task = current_task()
    task.report(step=epoch, loss=loss)                   # metrics, stored per step in `metrics`
    task.hub.save_model(model, model_name="mlp", test_accuracy=acc, **task.hyper_parameters)
"""
from __future__ import annotations

import contextvars
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tensorhub.errors import TaskError

if TYPE_CHECKING:
    from tensorhub.hub import TensorHub

ENV_URI, ENV_PROJECT, ENV_TASK, ENV_ATTEMPT = ("TENSORHUB_URI", "TENSORHUB_PROJECT",
                                               "TENSORHUB_TASK_ID", "TENSORHUB_ATTEMPT")


@dataclass
class TaskContext:
    """The task being run: its id, attempt, hyperparameters, and a hub to save results to."""

    task_id: str
    attempt: int
    hyper_parameters: dict[str, Any]
    _hub: "TensorHub | None" = field(default=None, repr=False)

    @property
    def hub(self) -> "TensorHub":
        """The hub the task came from (opened on first use inside a runner's subprocess)."""
        if self._hub is None:
            from tensorhub.hub import TensorHub

            self._hub = TensorHub(os.environ[ENV_URI], project_name=os.environ[ENV_PROJECT])
        return self._hub

    def report(self, step: int | None = None, epoch: int | None = None, **metrics: Any) -> None:
        """Record progress metrics for this task (run name = the task id)."""
        self.hub.log_metrics(self.task_id, step=step, epoch=epoch, **metrics)


_current: contextvars.ContextVar[TaskContext | None] = contextvars.ContextVar("tensorhub_task", default=None)


def current_task() -> TaskContext:
    """The task this code runs as; :class:`TaskError` outside a task."""
    ctx = _current.get()
    if ctx is None:
        raise TaskError("current_task() is only available inside a task run by a runner or run_top_task()")
    return ctx


def set_current(ctx: TaskContext | None) -> contextvars.Token[TaskContext | None]:
    return _current.set(ctx)


def reset_current(token: contextvars.Token[TaskContext | None]) -> None:
    _current.reset(token)
