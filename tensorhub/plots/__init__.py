"""Plots of runs, drawn from the DataFrames the hub returns (data first, plots beside).

Every function takes a DataFrame — ``hub.list_model_epochs()``, ``hub.metrics_df()`` or
``hub.list_runs(as_frame=True)`` — or ``hub=`` and a selection, and returns a matplotlib
Figure; :func:`to_html` draws the same plots with plotly. The plotting libraries are an extra,
imported only when a plot is drawn: ``pip install 'tensorhub[plots]'``.

    from tensorhub import plots

    fig = plots.learning_curves(hub=hub, task_name="mnist", metrics=["loss", "accuracy"])
    plots.save(fig, "curves.png")
    plots.save(plots.performance(hub.metrics_df("mnist"), color="hp.n_units"), "runs.svg")
    plots.hyperparameter_vs_metric(hub=hub, task_name="mnist", hyperparameter="lr", metric="val_accuracy")
    plots.to_html("performance", "runs.html", hub=hub, task_name="mnist", color="hp.n_units")
"""
from __future__ import annotations

from tensorhub.plots._backend import INSTALL_HINT
from tensorhub.plots.curves import learning_curves
from tensorhub.plots.hyperparameters import hyperparameter_vs_metric
from tensorhub.plots.interactive import to_plotly
from tensorhub.plots.output import save, to_html
from tensorhub.plots.scatter import performance

__all__ = ["INSTALL_HINT", "hyperparameter_vs_metric", "learning_curves", "performance", "save", "to_html",
           "to_plotly"]
