"""One exception tree for everything tensorhub raises on purpose.

Catch :class:`TensorHubError` to handle any of them::

    try:
        hub.find_top_model(model_name="mlp", allow_pickle=False)
    except tensorhub.errors.PickleNotAllowed as err:
        print(err)
"""
from __future__ import annotations


class TensorHubError(Exception):
    """Raised for every error tensorhub reports on purpose (the base class)."""


class ConnectionFailed(TensorHubError):
    """Raised when the hub cannot reach its server; names the URI without the password."""


class InvalidArgument(TensorHubError, ValueError):
    """Raised when an argument is malformed (wrong type, unknown option, bad sort spec...)."""


class ReservedField(InvalidArgument):
    """Raised when a keyword argument uses a field name the hub keeps for itself."""


class InvalidField(InvalidArgument):
    """Raised when a keyword argument's name or value cannot be stored in MongoDB (names the key)."""


class DocumentTooLarge(InvalidField):
    """Raised when the fields given would make a document exceed MongoDB's 16 MB limit (names the field)."""


class NotFound(TensorHubError, LookupError):
    """Raised when a record that must exist (a task id, a blob) does not."""


class CorruptBlob(TensorHubError):
    """Raised when stored bytes fail their sha256/length check or have missing chunks."""


class CodecError(TensorHubError):
    """Raised when an object cannot be encoded or stored bytes cannot be decoded."""


class PickleNotAllowed(CodecError):
    """Raised when saving or loading would need dill/pickle and the caller did not opt in."""


class TaskError(TensorHubError):
    """Raised for task-queue misuse: bad script, illegal state change, unknown task."""


class IllegalTransition(TaskError):
    """Raised when a task state change is not allowed by the task state machine."""


class TaskTimeout(TaskError, TimeoutError):
    """Raised (and recorded as a task's ``error.type``) when a task runs past its ``timeout``."""


class WaitTimeout(TaskError, TimeoutError):
    """Raised when waiting for tasks (``wait_for_tasks``) gives up before they are all done."""
