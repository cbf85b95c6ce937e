"""Running a task's code: the one place a script or function is executed, in whatever process.

TensorLayer's contract: the hyperparameters are global variables of the script, and the values of
``saved_result_keys`` are read from its globals when it ends. A function task is called with the
hyperparameters as keyword arguments and returns a dict holding the result keys.
"""
from __future__ import annotations

import traceback
from collections.abc import Mapping
from typing import Any

from tensorhub.errors import InvalidField, TaskError

TRACEBACK_TAIL = 4000


class MissingResult(TaskError):
    """Raised when a task ends without setting one of its ``saved_result_keys``."""


def run_code(task: Mapping[str, Any], function_bytes: bytes | None = None) -> dict[str, Any]:
    """Execute ``task``'s code and return its result dict (the saved result keys)."""
    from tensorhub.fields import HUB, to_bson_value

    code = task[HUB]["code"]
    params = dict(task.get("hyper_parameters") or {})
    keys = list(task.get("saved_result_keys") or [])
    if code["kind"] == "script":
        scope: dict[str, Any] = {"__name__": "__main__", "__file__": code.get("filename", "<task>"), **params}
        try:
            exec(compile(code["source"], code.get("filename", "<task>"), "exec"), scope)
        except SystemExit as stop:  # sys.exit() in a script: 0 ends it normally
            if stop.code not in (0, None):
                raise TaskError(f"the script called sys.exit({stop.code!r})") from None
        values: Mapping[str, Any] = scope
    elif code["kind"] == "function":
        if function_bytes is None:
            raise TaskError("function task without its function bytes")
        import dill  # only function tasks pay for it

        returned = dill.loads(function_bytes)(**params)
        if returned is None:
            returned = {}
        if not isinstance(returned, Mapping):
            if len(keys) == 1:
                returned = {keys[0]: returned}
            else:
                raise TaskError(f"a function task must return a dict of results, got {type(returned).__name__}")
        values = returned
    else:
        raise TaskError(f"unknown task code kind {code['kind']!r}")
    missing = [k for k in keys if k not in values]
    if missing:
        raise MissingResult(f"the task ended without setting result key(s) {', '.join(missing)}")
    try:
        return {k: to_bson_value(values[k], k) for k in keys}
    except InvalidField as err:
        raise TaskError(f"the task's result cannot be stored: {err}") from None


def describe_error(err: BaseException) -> dict[str, Any]:
    """An error as the task document stores it: type, message, traceback tail."""
    text = "".join(traceback.format_exception(type(err), err, err.__traceback__))
    return {"type": type(err).__name__, "message": str(err)[:2000], "traceback": text[-TRACEBACK_TAIL:]}
