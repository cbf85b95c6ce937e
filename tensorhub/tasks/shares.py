"""How a fleet divides a backlog: each runner tries the pending tasks of its own share first.

Runners in a fleet read the same window of pending tasks (best first). If each tried them in the
same order, all would race for the first; in random order, two of fifty runners still pick the
same task often. So the tasks of the window are dealt out by id: a task belongs to share
``id mod fleet`` (ids made one after another, as a distributor makes them, fall into consecutive
shares), and the runner whose registry rank is that share tries it first, best first. Once its own
share is done it helps the others, in random order, leaving last each share's next task, the one
its owner is about to take. Shares are a preference, never a lock: a task whose owner is busy,
gone, or never existed is taken by whoever comes.

>>> from bson import ObjectId
>>> ids = [ObjectId(f"6566f0a0{'0' * 10}{n:06x}") for n in range(6)]
>>> [share_of(i, 3) for i in ids]
[0, 1, 2, 0, 1, 2]
>>> tasks = [{"_id": i, "_hub": {"priority": 0}} for i in ids]
>>> ordered, own = deal(tasks, rank=1, fleet=3)
>>> [share_of(t["_id"], 3) for t in ordered[:own]]
[1, 1]
"""
from __future__ import annotations

import random
import zlib
from typing import Any

from bson import ObjectId

from tensorhub.fields import HUB


def share_of(task_id: Any, fleet: int) -> int:
    """The share (0 .. fleet-1) a task belongs to in a fleet of ``fleet`` runners."""
    if fleet < 2:
        return 0
    if isinstance(task_id, ObjectId):
        return int.from_bytes(task_id.binary, "big") % fleet
    return zlib.crc32(repr(task_id).encode()) % fleet


def in_share(task_id: Any, rank: int, fleet: int) -> bool:
    """Whether the task belongs to the share of the runner of rank ``rank``."""
    return share_of(task_id, fleet) == rank % max(fleet, 1)


def deal(candidates: list[dict[str, Any]], rank: int | None, fleet: int) -> tuple[list[dict[str, Any]], int]:
    """The order in which a runner of rank ``rank`` tries ``candidates`` (read best first), and
    how many at the front are its own share.

    Only tasks of the highest priority read are dealt out; lower priorities follow in the order
    read. Without a rank (a runner that has not registered) the top tasks come in random order.
    """
    if not candidates:
        return candidates, 0
    top_priority = candidates[0][HUB].get("priority", 0)
    top = [c for c in candidates if c[HUB].get("priority", 0) == top_priority]
    lower = [c for c in candidates if c[HUB].get("priority", 0) != top_priority]
    if rank is None or fleet < 2:
        random.shuffle(top)
        return top + lower, 0
    own = [c for c in top if in_share(c["_id"], rank, fleet)]
    others = [c for c in top if not in_share(c["_id"], rank, fleet)]
    heads: set[int] = set()  # each other share's best task: its owner takes it next
    seen: set[int] = set()
    for c in others:
        share = share_of(c["_id"], fleet)
        if share not in seen:
            seen.add(share)
            heads.add(id(c))
    random.shuffle(others)
    others.sort(key=lambda c: id(c) in heads)  # stable: still random within each part
    return own + others + lower, len(own)
