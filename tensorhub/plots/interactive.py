"""The same three plots as interactive plotly figures (hover shows the run), for HTML reports.

They draw the same data as the matplotlib figures (:mod:`tensorhub.plots._data`), so a run is
the same point or line in both.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from tensorhub.errors import InvalidArgument
from tensorhub.plots import _backend, _data

DASHES = {"train": "solid", "validation": "dash", "test": "dot"}


def _learning_curves(frame: pd.DataFrame, metrics: str | Sequence[str] = "loss",
                     runs: str | Iterable[str] | None = None,
                     splits: Sequence[str] = ("train", "validation")) -> Any:
    go, make_subplots = _backend.plotly()
    lines = _data.curves(frame, metrics, runs, splits)
    panels = list(dict.fromkeys(line.metric for line in lines))
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=panels)
    palette = _backend.require("plotly.colors").qualitative.Plotly
    colors = {rid: palette[i % len(palette)] for i, rid in enumerate(dict.fromkeys(ln.run_id for ln in lines))}
    shown: set[tuple[str, str]] = set()
    for line in lines:
        key = (line.run_id, line.split)  # one legend entry per run and split, toggling it in every panel
        trace = go.Scatter(x=line.epochs, y=line.values, mode="lines+markers", name=f"{line.label} ({line.split})",
                           legendgroup=f"{line.run_id}/{line.split}", showlegend=key not in shown,
                           line={"color": colors[line.run_id], "dash": DASHES[line.split]})
        fig.add_trace(trace, row=1, col=panels.index(line.metric) + 1)
        shown.add(key)
    for col, metric in enumerate(panels, start=1):
        fig.update_xaxes(title_text="epoch", row=1, col=col)
        fig.update_yaxes(title_text=metric, row=1, col=col)
    fig.update_layout(title="Learning curves")
    return fig


def _performance(frame: pd.DataFrame, x: str = "loss", y: str = "accuracy", color: str | None = None,
                 split: str = "validation") -> Any:
    go, _ = _backend.plotly()
    points = _data.scatter_points(frame, x, y, split, color)
    data = points.data
    fig = go.Figure()

    def add(rows: pd.DataFrame, name: str | None, **marker: Any) -> None:
        fig.add_trace(go.Scatter(x=rows[points.x], y=rows[points.y], mode="markers", name=name, text=rows["label"],
                                 showlegend=name is not None, marker=marker or None))

    if points.hue is None:
        add(data, None)
    else:
        hue = data[points.hue]
        missing = hue.isna()
        if _data.is_categorical(hue) or missing.all():
            for value in _data.categories(hue):
                add(data[(hue == value) & ~missing], str(value))
        else:
            log = _data.spans_decades(hue)
            # plotly has no log colour scale: colour by log10 and say so on the colorbar.
            shade = np.log10(hue[~missing].to_numpy(dtype=float)) if log else hue[~missing]
            add(data[~missing], None, color=shade, colorscale="Viridis", showscale=True,
                colorbar={"title": {"text": f"log10({points.hue})" if log else points.hue}})
        if missing.any():
            add(data[missing], f"{points.hue} not set", color="lightgrey")
    fig.update_layout(title=f"{y} against {x} ({split}), {len(data)} runs",
                      xaxis_title=points.x, yaxis_title=points.y)
    return fig


def _hyperparameter_vs_metric(frame: pd.DataFrame, hyperparameter: str = "hp.lr",
                              metric: str = "val_accuracy") -> Any:
    go, _ = _backend.plotly()
    points = _data.hyperparameter_points(frame, hyperparameter, metric)
    data, values = points.data, points.data[points.x]
    fig = go.Figure()
    if _data.is_categorical(values):
        for name in _data.categories(values):
            rows = data[values == name]
            fig.add_trace(go.Box(y=rows[points.y], name=str(name), text=rows["label"], boxpoints="all",
                                 jitter=0.4, pointpos=0))
    else:
        fig.add_trace(go.Scatter(x=values, y=data[points.y], mode="markers", text=data["label"]))
        if _data.spans_decades(values):
            fig.update_xaxes(type="log")
    fig.update_layout(title=f"{points.y} by {points.x}, {len(data)} runs",
                      xaxis_title=points.x, yaxis_title=points.y, showlegend=False)
    return fig


# kind → (drawing, the hub method that supplies its frame)
KINDS: dict[str, tuple[Callable[..., Any], str]] = {
    "learning_curves": (_learning_curves, "list_model_epochs"),
    "performance": (_performance, "metrics_df"),
    "hyperparameter_vs_metric": (_hyperparameter_vs_metric, "metrics_df"),
}


def to_plotly(kind: str, frame: pd.DataFrame | None = None, *, hub: Any = None, **options: Any) -> Any:
    """A plotly Figure of ``kind`` (``"learning_curves"``, ``"performance"``,
    ``"hyperparameter_vs_metric"``), taking the same options as the matplotlib function of that
    name; with ``hub=``, the other keywords select runs as they do there::

        fig = to_plotly("performance", hub.metrics_df("mnist"), color="hp.n_units")
        fig.show()                      # in a notebook: zoom, hover for the run's name
    """
    if kind not in KINDS:
        raise InvalidArgument(f"unknown plot kind {kind!r}; one of {', '.join(KINDS)}")
    _backend.plotly()  # a missing extra is the first thing to hear about, before any query
    draw, method = KINDS[kind]
    names = list(inspect.signature(draw).parameters)[1:]  # its options, after the frame
    plot_options = {k: v for k, v in options.items() if k in names}
    selection = {k: v for k, v in options.items() if k not in names}
    return draw(_data.frame_from(frame, hub, method, selection), **plot_options)
