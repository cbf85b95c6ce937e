"""Performance: every run as one point, loss against score (AIQC's ``plot_performance``),
coloured by a hyperparameter."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from tensorhub.plots import _backend, _data

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

MISSING_COLOR = "lightgrey"


def performance(frame: pd.DataFrame | None = None, x: str = "loss", y: str = "accuracy", color: str | None = None,
                split: str = "validation", *, hub: Any = None, **selection: Any) -> Figure:
    """A scatter of every run: metric ``x`` against metric ``y`` in ``split``.

    Takes ``hub.metrics_df()`` (one row per run and split), ``hub.list_runs(as_frame=True)`` or
    an epochs frame (each run's last epoch); ``x="loss", split="validation"`` reads ``val_loss``.
    ``color`` names a hyperparameter (``"hp.n_units"``, or just ``"n_units"``): numbers get a
    colour scale and a colorbar (logarithmic when they span more than two decades), anything
    else one colour per value and a legend. Instead of a frame, pass ``hub=`` and a selection
    for ``hub.metrics_df`` (``task_name=``, fields).

    >>> frame = pd.DataFrame({"run_id": ["a", "b", "c"], "run_name": ["a", "b", "c"],
    ...                       "val_loss": [0.3, 0.2, 0.4], "val_accuracy": [0.90, 0.95, 0.85],
    ...                       "hp.n_units": [200, 800, 100]})
    >>> fig = performance(frame, color="hp.n_units")
    >>> len(fig.axes[0].collections[0].get_offsets()), fig.axes[1].get_ylabel()
    (3, 'hp.n_units')
    """
    frame = _data.frame_from(frame, hub, "metrics_df", selection)
    points = _data.scatter_points(frame, x, y, split, color)
    plt = _backend.pyplot()
    fig = plt.figure(figsize=(6.4, 4.8), layout="constrained")
    ax = fig.add_subplot()
    if points.hue is None:
        ax.scatter(points.data[points.x], points.data[points.y])
    else:
        hue_scatter(fig, ax, points.data[points.x], points.data[points.y], points.data[points.hue], points.hue)
    ax.set_xlabel(points.x)
    ax.set_ylabel(points.y)
    ax.set_title(f"{y} against {x} ({split}), {len(points.data)} runs")
    ax.grid(alpha=0.3)
    return fig


def hue_scatter(fig: Figure, ax: Axes, xs: pd.Series, ys: pd.Series, hue: pd.Series, name: str) -> None:
    """Points coloured by ``hue``: a colour scale with a colorbar for numbers, a legend for categories;
    runs without a value are grey (a colormap would draw them transparent)."""
    from matplotlib import colormaps
    from matplotlib.colors import LogNorm, Normalize

    missing = hue.isna().to_numpy()
    categorical = _data.is_categorical(hue) or missing.all()  # no number at all: no scale to draw
    if categorical:
        values = _data.categories(hue)
        palette = colormaps["tab10" if len(values) <= 10 else "tab20"]
        for i, value in enumerate(values):
            mask = (hue == value).to_numpy() & ~missing
            ax.scatter(xs[mask], ys[mask], color=palette(i % palette.N), label=str(value))
    else:
        numbers = hue.to_numpy(dtype=float)
        norm_type = LogNorm if _data.spans_decades(numbers) else Normalize
        norm = norm_type(vmin=np.nanmin(numbers), vmax=np.nanmax(numbers))
        dots = ax.scatter(xs[~missing], ys[~missing], c=numbers[~missing], cmap="viridis", norm=norm)
        fig.colorbar(dots, ax=ax, label=name)
    if missing.any():
        ax.scatter(xs[missing], ys[missing], color=MISSING_COLOR, label=f"{name} not set")
    if categorical or missing.any():
        ax.legend(title=name if categorical else None, fontsize="small")
