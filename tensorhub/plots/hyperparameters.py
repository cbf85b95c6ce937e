"""Hyperparameter against metric: which values of one hyperparameter did well."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from tensorhub.plots import _backend, _data

if TYPE_CHECKING:
    from matplotlib.figure import Figure

JITTER = 0.08  # spreads a category's points sideways so repeats with equal scores stay visible


def hyperparameter_vs_metric(frame: pd.DataFrame | None = None, hyperparameter: str = "hp.lr",
                             metric: str = "val_accuracy", *, hub: Any = None, **selection: Any) -> Figure:
    """Each run's ``metric`` against its ``hyperparameter``: a scatter for numbers (log x when the
    values span more than two decades), a box per value with the runs on top for categories.

    Takes ``hub.metrics_df()``, ``hub.list_runs(as_frame=True)`` or an epochs frame (each run's
    last epoch); ``metric`` is a Keras name (``val_accuracy``, ``test_loss``). ``hyperparameter``
    may drop its ``hp.`` prefix. Instead of a frame, pass ``hub=`` and a selection for
    ``hub.metrics_df`` (``task_name=``, fields).

    >>> frame = pd.DataFrame({"run_id": ["a", "b", "c"], "run_name": ["a", "b", "c"],
    ...                       "val_accuracy": [0.90, 0.95, 0.70], "hp.lr": [0.1, 0.01, 0.0001]})
    >>> hyperparameter_vs_metric(frame, "lr").axes[0].get_xscale()
    'log'
    """
    frame = _data.frame_from(frame, hub, "metrics_df", selection)
    points = _data.hyperparameter_points(frame, hyperparameter, metric)
    values, scores = points.data[points.x], points.data[points.y].to_numpy(dtype=float)
    plt = _backend.pyplot()
    fig = plt.figure(figsize=(6.4, 4.8), layout="constrained")
    ax = fig.add_subplot()
    if _data.is_categorical(values):
        names = _data.categories(values)
        groups = [scores[(values == name).to_numpy()] for name in names]
        positions = np.arange(1, len(names) + 1)
        # Outliers are not drawn twice: every run is its own dot on top of the boxes.
        ax.boxplot(groups, positions=positions, widths=0.5, showfliers=False)
        jitter = np.random.default_rng(0)  # seeded: the same frame draws the same figure
        for position, group in zip(positions, groups, strict=True):
            ax.scatter(position + jitter.uniform(-JITTER, JITTER, len(group)), group, alpha=0.7, zorder=3)
        ax.set_xticks(positions, [str(name) for name in names])
    else:
        ax.scatter(values, scores)
        if _data.spans_decades(values):
            ax.set_xscale("log")
    ax.set_xlabel(points.x)
    ax.set_ylabel(points.y)
    ax.set_title(f"{points.y} by {points.x}, {len(points.data)} runs")
    ax.grid(alpha=0.3)
    return fig
