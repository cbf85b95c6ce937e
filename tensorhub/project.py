"""The one place a document is stamped with its project and a query is scoped to it.

Every document the hub writes carries ``_hub.project``; every query the hub sends goes through
:meth:`Project.scope`, so one project never sees another's data. ``None`` is a project too: it is
TensorLayer's default (``TensorHub(..., project_name=None)``), stored as ``null`` and shared by
every hub opened without a project name.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tensorhub.errors import InvalidArgument
from tensorhub.fields import HUB

PROJECT_FIELD = f"{HUB}.project"


@dataclass(frozen=True)
class Project:
    """A project name, and how its documents and queries are marked.

    >>> Project("mnist").scope({"model_name": "mlp"})
    {'_hub.project': 'mnist', 'model_name': 'mlp'}
    """

    name: str | None

    def __post_init__(self) -> None:
        if self.name is not None and (not isinstance(self.name, str) or not self.name):
            raise InvalidArgument(f"project_name must be a non-empty string or None, got {self.name!r}")

    def scope(self, query: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """``query`` restricted to this project's documents."""
        return {PROJECT_FIELD: self.name, **(query or {})}

    def stamp(self, **bookkeeping: Any) -> dict[str, Any]:
        """The ``_hub`` sub-document of a new document: this project plus ``bookkeeping``."""
        return {"project": self.name, **bookkeeping}
