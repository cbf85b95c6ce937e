"""tensorhub: one MongoDB as an ML team's hub for datasets, models, logs and hyperparameter tasks.

    from tensorhub import TensorHub
    hub = TensorHub("mongomock://", project_name="mnist")
"""
from tensorhub import errors
from tensorhub.hub import TensorHub
from tensorhub.records import Record
from tensorhub.tasks.context import TaskContext, current_task

__all__ = ["TensorHub", "Record", "TaskContext", "current_task", "errors"]
__version__ = "0.1.0"
