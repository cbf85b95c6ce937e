"""tensorhub: one MongoDB as an ML team's hub for datasets, models, logs and hyperparameter tasks.

    from tensorhub import TensorHub
    hub = TensorHub("mongomock://", project_name="mnist")

Names are imported on first use, so a task's subprocess (which needs only ``current_task``)
starts quickly without loading pymongo, pandas or the codecs.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what static type checkers and IDEs see
    from tensorhub import errors
    from tensorhub.hub import TensorHub
    from tensorhub.records import Record
    from tensorhub.tasks.context import TaskContext, current_task
    from tensorhub.tasks.model import Task

__version__ = "0.1.0"
__all__ = ["Record", "Task", "TaskContext", "TensorHub", "current_task", "errors"]

_WHERE = {"TensorHub": "tensorhub.hub", "Record": "tensorhub.records",
          "TaskContext": "tensorhub.tasks.context", "current_task": "tensorhub.tasks.context",
          "Task": "tensorhub.tasks.model",
          "errors": "tensorhub.errors"}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'tensorhub' has no attribute {name!r}")
    module = importlib.import_module(_WHERE[name])
    return module if name == "errors" else getattr(module, name)
