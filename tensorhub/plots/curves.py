"""Learning curves: each metric against the epoch, one line per run and split."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd

from tensorhub.plots import _backend, _data

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# A run keeps its colour in every axes; the split is the line style, so the legend reads
# "which run" by colour and "train or validation" by dash.
LINESTYLES = {"train": "-", "validation": "--", "test": ":"}


def learning_curves(frame: pd.DataFrame | None = None, metrics: str | Sequence[str] = "loss",
                    runs: str | Iterable[str] | None = None, splits: Sequence[str] = ("train", "validation"),
                    *, hub: Any = None, **selection: Any) -> Figure:
    """One axes per metric, one line per run per split, epoch on x.

    ``frame`` is ``hub.list_model_epochs()``'s: one row per run and epoch. A split's column is
    the metric's Keras name (``loss`` for train, ``val_loss`` for validation, ``test_loss``);
    a name that says its split (``metrics="val_loss"``) draws that split only. ``runs`` picks
    runs by id or name. Instead of a frame, pass ``hub=`` and a selection for
    ``hub.list_model_epochs`` (``task_name=``, ``run_ids=``, fields).

    >>> frame = pd.DataFrame({"run_id": ["a", "a", "b", "b"], "run_name": ["small", "small", "big", "big"],
    ...                       "epoch": [1, 2, 1, 2], "loss": [0.9, 0.5, 0.8, 0.3],
    ...                       "val_loss": [1.0, 0.7, 0.9, 0.6], "accuracy": [0.6, 0.8, 0.7, 0.9]})
    >>> fig = learning_curves(frame, metrics=["loss", "accuracy"])
    >>> [ax.get_title() for ax in fig.axes], len(fig.axes[0].lines)
    (['loss', 'accuracy'], 4)
    """
    frame = _data.frame_from(frame, hub, "list_model_epochs", selection)
    lines = _data.curves(frame, metrics, runs, splits)
    plt = _backend.pyplot()
    panels = list(dict.fromkeys(line.metric for line in lines))
    fig = plt.figure(figsize=(5.5 * len(panels), 4.2), layout="constrained")
    axes = dict(zip(panels, fig.subplots(1, len(panels), squeeze=False)[0], strict=True))
    colors = _run_colors([line.run_id for line in lines])
    several_splits = len({line.split for line in lines}) > 1
    for line in lines:
        label = f"{line.label} ({line.split})" if several_splits else line.label
        axes[line.metric].plot(line.epochs, line.values, LINESTYLES[line.split], color=colors[line.run_id],
                               label=label, marker="." if len(line.epochs) < 30 else None)
    for metric, ax in axes.items():
        ax.set_title(metric)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)  # epochs are whole numbers
        ax.legend(fontsize="small")
    return fig


def _run_colors(run_ids: Iterable[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    order = list(dict.fromkeys(run_ids))
    palette = colormaps["tab10" if len(order) <= 10 else "tab20"]
    return {rid: palette(i % palette.N) for i, rid in enumerate(order)}
