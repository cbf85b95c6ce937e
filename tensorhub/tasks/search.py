"""Hyperparameter search spaces: every combination of a grid, or a random sample of it."""
from __future__ import annotations

import itertools
import random
from collections.abc import Mapping, Sequence
from typing import Any

from tensorhub.errors import InvalidArgument


def grid(space: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """All combinations, in order.

    >>> grid({"n_units": [200, 400], "lr": [0.1]})
    [{'n_units': 200, 'lr': 0.1}, {'n_units': 400, 'lr': 0.1}]
    """
    if not isinstance(space, Mapping) or not space:
        raise InvalidArgument("a search space is a non-empty dict of name -> list of values")
    for name, values in space.items():
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
            raise InvalidArgument(f"search space {name!r} needs a non-empty list of values, got {values!r}")
    names = list(space)
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*(space[n] for n in names))]


def sample(space: Mapping[str, Sequence[Any]], n: int | None = None, fraction: float | None = None,
           seed: int | None = None) -> list[dict[str, Any]]:
    """``n`` distinct combinations (or ``fraction`` of the grid, rounded, at least 1), drawn at random."""
    combos = grid(space)
    if (n is None) == (fraction is None):
        raise InvalidArgument("give exactly one of n or fraction")
    if fraction is not None:
        if not 0 < fraction <= 1:
            raise InvalidArgument(f"fraction must be in (0, 1], got {fraction}")
        n = max(1, round(fraction * len(combos)))
    assert n is not None
    if isinstance(n, bool) or not isinstance(n, int) or not 0 < n <= len(combos):
        raise InvalidArgument(f"n must be between 1 and the grid size {len(combos)}, got {n!r}")
    return random.Random(seed).sample(combos, n)
