"""How tasks are queued: options checked, code read and compiled, task documents built.

:meth:`TaskQueue.create <tensorhub.tasks.queue.TaskQueue.create>` queues one task and
:meth:`TaskQueue.create_many <tensorhub.tasks.queue.TaskQueue.create_many>` a sweep; both check
everything here before any byte is written, so a bad argument never leaves half a sweep queued.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tensorhub import defaults
from tensorhub.blobs import BlobStore
from tensorhub.errors import InvalidArgument, TaskError
from tensorhub.fields import HUB, check_size, clean_fields, to_bson_value, utcnow
from tensorhub.project import Project
from tensorhub.tasks import states

RESERVED = {
    "status": "tasks start pending; use cancel_tasks()/requeue_tasks() to change it",
    "result": "results come from the script's variables named in saved_result_keys",
    "task_name": "pass it as the task_name argument",
}

Script = str | os.PathLike[str] | None
SPEC_OPTIONS = frozenset({"source", "function", "saved_result_keys", "priority", "max_attempts", "timeout"})


@dataclass(frozen=True)
class TaskSpec:
    """What every task of one ``create``/``create_many`` call shares, checked once.

    >>> spec = TaskSpec.checked("mnist", source="acc = 0.9", saved_result_keys="acc", timeout=60)
    >>> spec.saved_result_keys, spec.timeout
    (['acc'], 60)
    """

    task_name: str
    script: Script = None
    source: str | None = None
    function: Callable[..., Any] | None = None
    saved_result_keys: tuple[str, ...] | list[str] = ()
    priority: float = 0
    max_attempts: int = defaults.MAX_ATTEMPTS
    timeout: float | None = None

    @classmethod
    def checked(cls, task_name: str, script: Script = None, *, source: str | None = None,
                function: Callable[..., Any] | None = None, saved_result_keys: Any = None,
                priority: float = 0, max_attempts: int = defaults.MAX_ATTEMPTS,
                timeout: float | None = None) -> TaskSpec:
        if not isinstance(task_name, str) or not task_name:
            raise InvalidArgument(f"task_name must be a non-empty string, got {task_name!r}")
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
            raise InvalidArgument(f"max_attempts must be a positive integer, got {max_attempts!r}")
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                    or not 0 < timeout < float("inf")):
            raise InvalidArgument(f"timeout must be a positive number of seconds, got {timeout!r}")
        if isinstance(priority, bool) or not isinstance(priority, (int, float)):
            raise InvalidArgument(f"priority must be a number, got {priority!r}")
        if sum(x is not None for x in (script, source, function)) != 1:
            raise InvalidArgument("give exactly one of script=, source= or function=")
        if function is not None and not callable(function):
            raise InvalidArgument(f"function must be callable, got {type(function).__name__}")
        return cls(task_name, script, source, function, result_keys(saved_result_keys), priority,
                   max_attempts, timeout)

    @classmethod
    def split(cls, task_name: str, script: Script, kwargs: Mapping[str, Any]) -> tuple[TaskSpec, dict[str, Any]]:
        """``create_task``'s keywords parted into the spec and the user's own fields.

        >>> spec, fields = TaskSpec.split("t", None, {"source": "x = 1", "priority": 2, "dataset": "mnist"})
        >>> spec.priority, fields
        (2, {'dataset': 'mnist'})
        """
        options = {k: v for k, v in kwargs.items() if k in SPEC_OPTIONS}
        return cls.checked(task_name, script, **options), {k: v for k, v in kwargs.items() if k not in SPEC_OPTIONS}

    def script_code(self) -> dict[str, Any] | None:
        """The code of a script or source task (read and compiled here); None for a function task."""
        if self.function is not None:
            return None
        source, filename = self.source, "<source>"
        if self.script is not None:
            if not isinstance(self.script, (str, os.PathLike)):
                raise InvalidArgument(f"script must be a file path, got {type(self.script).__name__}")
            path = Path(self.script)
            if not path.is_file():
                raise TaskError(f"script {str(path)!r} is not a file (pass source=... for code text)")
            source, filename = path.read_text(encoding="utf-8"), path.name
        elif not isinstance(source, str):
            raise InvalidArgument(f"source must be a string of Python code, got {type(source).__name__}")
        assert source is not None
        try:
            compile(source, filename, "exec")
        except (SyntaxError, ValueError) as err:
            raise TaskError(f"script {filename} does not compile: {err}") from None
        return {"kind": "script", "filename": filename, "source": source}

    def function_code(self, blobs: BlobStore) -> dict[str, Any]:
        """The function shipped with dill into a blob of its own (each task owns its blobs)."""
        import dill

        name = getattr(self.function, "__name__", "function")
        ref = blobs.write_bytes(dill.dumps(self.function, recurse=True), name, "dill", kind="task-function")
        return {"kind": "function", "name": getattr(self.function, "__qualname__", "function"),
                "blob": ref.to_doc()}


def task_document(spec: TaskSpec, project: Project, code: dict[str, Any], hyper_parameters: Any,
                  fields: Mapping[str, Any]) -> dict[str, Any]:
    """One pending task, ready to insert (its size checked); ``fields`` are the user's kwargs."""
    now = utcnow()
    doc = {"task_name": spec.task_name, **states.initial(), "time": now,
           "hyper_parameters": checked_hyper_parameters(hyper_parameters),
           "saved_result_keys": list(spec.saved_result_keys), "result": None,
           **clean_fields(fields, RESERVED, RESERVED),
           HUB: project.stamp(
               priority=to_bson_value(spec.priority, "priority"), created_at=now, updated_at=now,
               needs_pickle=code["kind"] == "function", max_attempts=spec.max_attempts,
               attempt_limit=spec.max_attempts, timeout_seconds=spec.timeout, attempts=0, seq=0, lease=None,
               runner=None, started_at=None, finished_at=None, duration_seconds=None, error=None,
               failures=[], history=[], output=None, code=code,
               blob_ids=[code["blob"]["id"]] if "blob" in code else [])}
    check_size({k: v for k, v in doc.items() if k != HUB} | {"code": code})
    return doc


def checked_hyper_parameters(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidArgument(f"hyper_parameters must be a dict of name -> value, got {type(value).__name__}")
    return to_bson_value(dict(value), "hyper_parameters")


def result_keys(value: Any) -> list[str]:
    if value is None:
        return []
    keys = [value] if isinstance(value, str) else value  # "test_accuracy" is one key, not 13
    if isinstance(keys, Mapping) or not isinstance(keys, Iterable):
        raise InvalidArgument(f"saved_result_keys must be a list of names, got {value!r}")
    keys = list(keys)
    if not all(isinstance(k, str) and k and "." not in k and not k.startswith("$") for k in keys):
        raise InvalidArgument(f"saved_result_keys must be variable names, got {keys!r}")
    return keys
