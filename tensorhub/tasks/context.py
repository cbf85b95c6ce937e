"""What a running task's code can ask about itself: ``tensorhub.current_task()``.

    from tensorhub import current_task
    task = current_task()
    task.report(step=epoch, loss=loss)                   # metrics, stored per step in `metrics`
    task.hub.save_model(model, model_name="mlp", test_accuracy=acc, **task.hyper_parameters)

This module never imports the facade: whoever starts the task passes ``open_hub``, a way to get a
hub (the runner's child opens one from its environment; ``run_top_task`` passes itself).
"""
from __future__ import annotations

import contextvars
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tensorhub.errors import TaskError

ENV_URI, ENV_PROJECT, ENV_TASK, ENV_ATTEMPT, ENV_RUN = (
    "TENSORHUB_URI", "TENSORHUB_PROJECT", "TENSORHUB_TASK_ID", "TENSORHUB_ATTEMPT", "TENSORHUB_RUN_ID")


@dataclass
class TaskContext:
    """The task being run: its id, attempt number, hyperparameters, and a hub to save results to.

    ``attempt`` is the number users see in the task document (1 for the first attempt).
    """

    task_id: str
    attempt: int
    hyper_parameters: dict[str, Any]
    open_hub: Callable[[], Any] | None = field(default=None, repr=False)
    run_id: str | None = None
    _hub: Any = field(default=None, repr=False)
    _run: Any = field(default=None, repr=False)

    @property
    def hub(self) -> Any:
        """The hub the task came from (opened on first use inside a runner's subprocess)."""
        if self._hub is None:
            if self.open_hub is None:
                raise TaskError("this task context has no hub to open")
            self._hub = self.open_hub()
        return self._hub

    @property
    def run(self) -> Any:
        """This attempt's run (``log_epoch``, ``checkpoint``, ``resume``...), opened on first use."""
        if self._run is None:
            if self.run_id is None:
                raise TaskError("this task attempt has no run")
            self._run = self.hub.get_run(self.run_id)
        return self._run

    def close(self) -> None:
        """Store what the attempt's run still buffers (step metrics): called when the code ends."""
        if self._run is not None:
            self._run.flush()

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
