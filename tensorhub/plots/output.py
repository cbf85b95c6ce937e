"""Writing figures: images through matplotlib, interactive HTML through plotly."""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from tensorhub.errors import InvalidArgument
from tensorhub.plots import interactive

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def save(fig: Figure, path: str | os.PathLike[str], **savefig: Any) -> Path:
    """Write ``fig`` in the format its suffix names (``.png``, ``.svg``, ``.pdf``...; none: ``.png``)
    and return the path written. Keywords go to ``Figure.savefig`` (``dpi=300``).

    >>> frame = pd.DataFrame({"run_id": ["a", "a"], "run_name": ["a", "a"], "epoch": [1, 2], "loss": [0.9, 0.4]})
    >>> from tensorhub.plots import learning_curves
    >>> save(learning_curves(frame), "curves.png").name
    'curves.png'
    """
    path = Path(path)
    if not path.suffix:
        path = path.with_suffix(".png")  # what matplotlib would write, so the path returned is the file
    supported = fig.canvas.get_supported_filetypes()
    if path.suffix[1:].lower() not in supported:
        raise InvalidArgument(f"cannot write {path.name!r}: matplotlib writes {', '.join(sorted(supported))}; "
                              "for an interactive page use tensorhub.plots.to_html()")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, **{"dpi": 120, "bbox_inches": "tight", **savefig})
    return path


def to_html(kind: str, path: str | os.PathLike[str], frame: pd.DataFrame | None = None, *, hub: Any = None,
            **options: Any) -> Path:
    """Write an interactive plotly page of ``kind`` (``"learning_curves"``, ``"performance"``,
    ``"hyperparameter_vs_metric"``) with the same options as the matplotlib function of that name.

    The page embeds plotly.js, so it opens offline (on a cluster's login node, in a mail).
    Needs plotly: ``pip install 'tensorhub[plots]'``. ::

        to_html("learning_curves", "curves.html", hub.list_model_epochs("mnist"), metrics=["loss", "accuracy"])
        to_html("performance", "runs.html", hub=hub, task_name="mnist", color="hp.n_units")
    """
    fig = interactive.to_plotly(kind, frame, hub=hub, **options)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.write_html(path, include_plotlyjs=True, full_html=True)
    return path
