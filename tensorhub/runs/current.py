"""Which run the code is in right now, so the hub can record lineage without user code.

A run is active inside ``with hub.start_run(...)``, inside a task run by ``run_top_task``, and in a
runner's task process. While one is active, ``find_top_dataset``/``find_datasets`` record which
dataset versions were read, and ``save_model`` records which run (and epoch) saved the model.
Import-light on purpose: a task's process activates its run before the user's code starts.
"""
from __future__ import annotations

import contextvars
from dataclasses import dataclass


@dataclass(frozen=True)
class RunRef:
    """Enough to find a run again: its id (as text) and its project."""

    run_id: str
    project: str | None


_active: contextvars.ContextVar[RunRef | None] = contextvars.ContextVar("tensorhub_run", default=None)


def active_run() -> RunRef | None:
    """The run the calling code is in, or None."""
    return _active.get()


def activate(ref: RunRef | None) -> contextvars.Token[RunRef | None]:
    return _active.set(ref)


def deactivate(token: contextvars.Token[RunRef | None]) -> None:
    _active.reset(token)
