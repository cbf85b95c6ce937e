"""The fleet view for a terminal: the queue (counts by task name and status, oldest pending age)
and the runners (host, GPUs, slot → task, heartbeat age, tasks done, failures), as rich tables.

``tensorhub status`` prints it once; ``tensorhub top`` refreshes it until Ctrl-C. Read-only: it
uses the hub's ``queue_summary()`` and ``runners()``, one aggregation and one query.
"""
from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.table import Table

STATE_STYLE = {"running": "green", "lost": "bold red", "stopped": "dim"}


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def queue_table(hub: Any) -> Table:
    table = Table(title=f"queue — project {hub.project_name!r}", title_justify="left")
    for column in ("task", "pending", "running", "finished", "failed", "cancelled", "oldest pending"):
        table.add_column(column, justify="left" if column == "task" else "right")
    for row in hub.queue_summary():
        table.add_row(str(row["task_name"]), *(str(row[s]) for s in ("pending", "running", "finished", "failed",
                                                                      "cancelled")),
                      _age(row["oldest_pending_age"]))
    return table


def fleet_table(hub: Any) -> Table:
    table = Table(title="runners", title_justify="left")
    for column in ("runner", "state", "GPUs", "slot → task", "heartbeat", "done", "failed"):
        table.add_column(column, justify="right" if column in ("heartbeat", "done", "failed") else "left")
    for runner in hub.runners():
        slots = "\n".join(f"{s.get('gpu') if s.get('gpu') is not None else s.get('slot')} → "
                          f"{s.get('task_name') or 'idle'}" + (f" ({s['task_id']})" if s.get("task_id") else "")
                          for s in runner.slots) or "-"
        style = STATE_STYLE.get(runner.state, "")
        table.add_row(f"{runner.host}:{runner.pid}", f"[{style}]{runner.state}[/]", ",".join(runner.gpus) or "-",
                      slots, _age(runner.heartbeat_age), str(runner.tasks_done), str(runner.tasks_failed))
    return table


def status_view(hub: Any) -> Group:
    """Both tables, for ``rich.print`` or a ``rich.live.Live``."""
    return Group(queue_table(hub), fleet_table(hub))
