"""Runner ranks: each live runner of a project holds a distinct small number, its share of the queue.

A rank is held by a ticket in the ``runner_ranks`` collection, one document per rank and project:

    {_id: "3@mnist", rank: 3, runner: "gpu-box-1:4242:ab12cd", taken_at, _hub: {project: "mnist"}}

Its ``_id`` is unique on every server, so of two runners that take the same free rank at the same
moment exactly one gets it; the other takes the next. A runner gives its rank back when it exits
cleanly; the rank of one that died is taken over by the next runner that registers, once the dead
runner's lease has passed. Ranks therefore stay dense (0 .. fleet-1) as runners come and go, which
is what dealing out a backlog by ``id mod fleet`` needs (``tasks/shares.py``).
"""
from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable, Set

from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from tensorhub.fields import HUB, as_utc, utcnow
from tensorhub.project import Project


class RankBook:
    """The rank tickets of one project's runners.

    >>> book = RankBook(hub.db, Project("mnist"))
    >>> book.take("box:1:a", held=set(), alive=lambda runner: True, lease_seconds=60)
    0
    >>> book.take("box:2:b", held={0}, alive=lambda runner: True, lease_seconds=60)
    1
    >>> book.take("box:4:d", held={0, 1}, alive=lambda runner: True, lease_seconds=60, position=1)
    3
    """

    def __init__(self, db: Database, project: Project) -> None:
        self._ranks = db["runner_ranks"]
        self.project = project

    def _ticket(self, rank: int) -> str:
        return str(rank) if self.project.name is None else f"{rank}@{self.project.name}"

    def take(self, runner_id: str, *, held: Set[int], alive: Callable[[str], bool],
             lease_seconds: float, position: int = 0) -> int:
        """Take a rank not in ``held`` (the ranks of the runners known to be alive) whose ticket is
        free, or whose holder is gone: ``alive(holder)`` says no and it took the ticket longer than
        a lease ago. The ``position``-th free rank is tried first (runners registering together
        each try a different one, so a fleet starting at once does not queue up on rank 0), then
        the others from the lowest. Usually one insert."""
        grace = dt.timedelta(seconds=lease_seconds)
        free = [rank for rank in itertools.islice(itertools.count(), position + len(held) + 1) if rank not in held]
        first = free[position]
        if self._take(first, runner_id, alive, grace):
            return first
        others = (rank for rank in itertools.count() if rank not in held and rank != first)
        return next(rank for rank in others if self._take(rank, runner_id, alive, grace))

    def _take(self, rank: int, runner_id: str, alive: Callable[[str], bool], grace: dt.timedelta) -> bool:
        ticket = self._ticket(rank)
        for _ in range(2):  # a second time if its holder gave it back between our insert and our read
            now = utcnow()
            try:
                self._ranks.insert_one({"_id": ticket, "rank": rank, "runner": runner_id, "taken_at": now,
                                        HUB: self.project.stamp()})
                return True
            except DuplicateKeyError:
                pass
            holder = self._ranks.find_one({"_id": ticket}, {"runner": 1, "taken_at": 1})
            if holder is None:
                continue
            if as_utc(holder["taken_at"]) > now - grace or alive(str(holder["runner"])):
                return False
            # Its holder died: take it over, unless someone else just did.
            return self._ranks.update_one({"_id": ticket, "runner": holder["runner"]},
                                          {"$set": {"runner": runner_id, "taken_at": now}}).matched_count == 1
        return False

    def give_back(self, rank: int, runner_id: str) -> None:
        """Free the rank at a clean exit (only if this runner still holds it)."""
        self._ranks.delete_one({"_id": self._ticket(rank), "runner": runner_id})
