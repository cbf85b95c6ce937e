"""Shape the hub's DataFrames for plotting: check columns, pick runs and splits, one row per run.

Pure pandas, no plotting library: the matplotlib figures and the plotly ones draw the same data.
Frames follow the analysis layer's contracts: ``list_model_epochs`` (one row per run and epoch),
``metrics_df`` (one row per run and split) and ``list_runs`` (one row per run); metrics keep their
Keras names (``loss``, ``val_loss``), hyperparameters are ``hp.<name>`` columns.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from tensorhub.errors import InvalidArgument

# Columns that describe a run or a row rather than measure it: never offered as metrics.
ID_COLUMNS = frozenset({
    "run_id", "run_name", "task_id", "task_name", "status", "attempt", "parent_run_id", "repeat", "split",
    "epoch", "step", "time", "started_at", "ended_at", "duration_seconds", "epochs_done", "epochs",
})
# How Keras names a metric of each split (``validation_`` is how metrics_df's parser reads it too).
SPLIT_PREFIXES: dict[str, tuple[str, ...]] = {"train": ("",), "validation": ("val_", "validation_"),
                                              "test": ("test_",)}
LOG_SPAN = 100.0  # more than two decades between the smallest and largest value: use a log axis


@dataclass(frozen=True)
class Curve:
    """One line of a learning-curve plot: one metric of one run in one split."""

    metric: str
    split: str
    run_id: str
    label: str
    column: str
    epochs: np.ndarray
    values: np.ndarray


@dataclass(frozen=True)
class Points:
    """The rows of a scatter: ``data`` holds one row per run with the columns ``x``, ``y`` and ``hue``."""

    data: pd.DataFrame
    x: str
    y: str
    hue: str | None = None


def frame_from(frame: pd.DataFrame | None, hub: Any, method: str, selection: Mapping[str, Any]) -> pd.DataFrame:
    """The frame given, or the one ``hub.<method>(**selection)`` returns: exactly one of the two."""
    if frame is not None and hub is not None:
        raise InvalidArgument("pass a DataFrame or hub= with a selection, not both")
    if frame is None:
        if hub is None:
            raise InvalidArgument(f"pass a DataFrame (e.g. from hub.{method}()) or hub= with a selection")
        frame = getattr(hub, method)(**selection)
    elif selection:
        raise InvalidArgument(f"selection keywords {sorted(selection)} only apply with hub=; "
                              "filter the DataFrame itself instead")
    if not isinstance(frame, pd.DataFrame):
        raise InvalidArgument(f"expected a pandas DataFrame, got {type(frame).__name__}")
    if frame.empty:
        raise InvalidArgument("nothing to plot: the frame has no rows (did the selection match any run?)")
    return frame


def metric_names(frame: pd.DataFrame) -> list[str]:
    """The numeric columns that measure something: not identity, time or ``hp.*`` columns."""
    return [str(c) for c in frame.columns
            if c not in ID_COLUMNS and not str(c).startswith("hp.") and pd.api.types.is_numeric_dtype(frame[c])
            and not pd.api.types.is_bool_dtype(frame[c])]


def _available(names: Iterable[str]) -> str:
    return ", ".join(repr(n) for n in names) or "(none)"


def require_column(frame: pd.DataFrame, name: str, needed_by: str = "") -> str:
    """``name`` if the frame has it, else an :class:`InvalidArgument` listing the columns it has."""
    if name not in frame.columns:
        raise InvalidArgument(f"{needed_by}no column {name!r} in the frame; available columns: "
                              f"{_available(map(str, frame.columns))}")
    return name


def hyperparameter_column(frame: pd.DataFrame, name: str) -> str:
    """``name``, or ``hp.<name>`` when only that exists (``"lr"`` finds ``hp.lr``)."""
    for column in (name, f"hp.{name}"):
        if column in frame.columns:
            return column
    hps = [str(c) for c in frame.columns if str(c).startswith("hp.")]
    raise InvalidArgument(f"no hyperparameter column {name!r} in the frame; available hyperparameters: "
                          f"{_available(hps)}")


def check_split(split: str) -> str:
    if split not in SPLIT_PREFIXES:
        raise InvalidArgument(f"split must be one of {', '.join(SPLIT_PREFIXES)}, got {split!r}")
    return split


def explicit_split(frame: pd.DataFrame, metric: str) -> tuple[str, str] | None:
    """``("val_loss" in the frame)`` → ``("loss", "validation")``: a name that already says its split."""
    for split, prefixes in SPLIT_PREFIXES.items():
        for prefix in prefixes:
            if prefix and metric.startswith(prefix) and metric in frame.columns:
                return metric[len(prefix):], split
    return None


def split_column(frame: pd.DataFrame, metric: str, split: str) -> str | None:
    """The column holding ``metric`` for ``split`` (``loss``/``val_loss``/``test_loss``), or None."""
    return next((p + metric for p in SPLIT_PREFIXES[check_split(split)] if p + metric in frame.columns), None)


def metric_column(frame: pd.DataFrame, metric: str, split: str) -> str:
    """The column of ``metric`` in ``split``; a name that carries its own split prefix is taken as is."""
    if explicit_split(frame, metric) is not None:
        return metric
    column = split_column(frame, metric, split)
    if column is None:
        looked = ", ".join(repr(p + metric) for p in SPLIT_PREFIXES[split])
        raise InvalidArgument(f"no {split} column for metric {metric!r} (looked for {looked}); "
                              f"available metrics: {_available(metric_names(frame))}")
    return column


def select_runs(frame: pd.DataFrame, runs: str | Iterable[str] | None) -> pd.DataFrame:
    """The rows of the runs named by id or by run_name (all rows when ``runs`` is None)."""
    if runs is None:
        return frame
    wanted = [runs] if isinstance(runs, str) else [str(r) for r in runs]
    ids, names = frame["run_id"].astype(str), frame["run_name"].astype(str)
    unknown = [r for r in wanted if not (ids == r).any() and not (names == r).any()]
    if unknown:
        raise InvalidArgument(f"no run {unknown[0]!r} in the frame; available runs: {_available(names.unique())}")
    return frame[ids.isin(wanted) | names.isin(wanted)]


def run_labels(frame: pd.DataFrame) -> dict[str, str]:
    """Legend labels by run_id: the run_name, made unique by the hyperparameters that differ
    (a task's attempts all carry the task's name), then by the end of the run id."""
    runs = frame.drop_duplicates("run_id")
    runs.index = pd.Index(runs["run_id"].astype(str))
    labels = {str(rid): str(rid)[-6:] if pd.isna(name) else str(name) for rid, name in runs["run_name"].items()}
    hps = [str(c) for c in runs.columns if str(c).startswith("hp.")]
    for name, group in _collisions(labels):
        varying = [c for c in hps if runs.loc[group, c].astype(str).nunique() > 1]
        for rid in group:
            if varying:
                labels[rid] = f"{name} {', '.join(f'{c[3:]}={runs.at[rid, c]!s}' for c in varying)}"
    for _, group in _collisions(labels):
        for rid in group:
            labels[rid] = f"{labels[rid]} #{rid[-6:]}"
    return labels


def _collisions(labels: Mapping[str, str]) -> list[tuple[str, list[str]]]:
    by_label: dict[str, list[str]] = {}
    for rid, label in labels.items():
        by_label.setdefault(label, []).append(rid)
    return [(label, rids) for label, rids in by_label.items() if len(rids) > 1]


def curves(frame: pd.DataFrame, metrics: str | Sequence[str], runs: str | Iterable[str] | None,
           splits: Sequence[str]) -> list[Curve]:
    """Every line of a learning-curve plot, metric by metric, run by run (in frame order), split by split."""
    require_column(frame, "epoch", "learning curves need one row per epoch (hub.list_model_epochs()): ")
    names = [metrics] if isinstance(metrics, str) else list(metrics)
    if not names:
        raise InvalidArgument("metrics must name at least one metric, e.g. 'loss'")
    splits = [check_split(s) for s in ([splits] if isinstance(splits, str) else splits)]
    frame = select_runs(frame, runs)
    labels = run_labels(frame)
    out: list[Curve] = []
    for metric in names:
        base, wanted = explicit_split(frame, metric) or (metric, None)
        columns = {s: c for s in ([wanted] if wanted else splits) if (c := split_column(frame, base, s))}
        if not columns:
            raise InvalidArgument(f"no column for metric {metric!r} in splits {', '.join(splits)}; "
                                  f"available metrics: {_available(metric_names(frame))}")
        for rid in frame["run_id"].astype(str).unique():
            rows = frame[frame["run_id"].astype(str) == rid].sort_values("epoch", kind="stable")
            for split, column in columns.items():
                data = rows[["epoch", column]].dropna()
                if not data.empty:  # a run that never logged this split draws no empty line
                    out.append(Curve(base, split, rid, labels[rid], column, data["epoch"].to_numpy(),
                                     data[column].to_numpy(dtype=float)))
    if not out:
        raise InvalidArgument(f"no run has values for {', '.join(map(repr, names))} in splits {', '.join(splits)}")
    return out


def one_row_per_run(frame: pd.DataFrame) -> pd.DataFrame:
    """Any of the three frames as one row per run with Keras-named columns (``loss``, ``val_loss``):
    metrics_df's split rows side by side, an epochs frame's last values, a runs frame as it is."""
    if "split" in frame.columns:
        metrics = metric_names(frame)
        wide = frame.drop(columns=[*metrics, "split"]).drop_duplicates("run_id").set_index("run_id")
        for split, part in frame.groupby("split", sort=False):
            prefix = SPLIT_PREFIXES.get(str(split), (f"{split}_",))[0]
            values = part.drop_duplicates("run_id", keep="last").set_index("run_id")[metrics]
            wide = wide.join(values.dropna(axis=1, how="all").add_prefix(prefix))
        return wide.reset_index()
    if "epoch" in frame.columns:
        # Each metric's last logged value: validation that runs every few epochs leaves the final
        # row's val_* empty, and GroupBy.last skips missing values.
        return frame.sort_values("epoch", kind="stable").groupby("run_id", sort=False).last().reset_index()
    return frame


def scatter_points(frame: pd.DataFrame, x: str, y: str, split: str, hue: str | None) -> Points:
    """One row per run with ``x`` and ``y`` of ``split`` (and the ``hue`` column), runs missing either dropped."""
    wide = one_row_per_run(frame)
    x_col, y_col = metric_column(wide, x, split), metric_column(wide, y, split)
    hue_col = None if hue is None else hyperparameter_column(wide, hue)
    return Points(_plottable(wide, [x_col, y_col], hue_col), x_col, y_col, hue_col)


def hyperparameter_points(frame: pd.DataFrame, hyperparameter: str, metric: str) -> Points:
    """One row per run with the hyperparameter as ``x`` and the metric as ``y``."""
    wide = one_row_per_run(frame)
    hp_col = hyperparameter_column(wide, hyperparameter)
    if metric not in wide.columns:
        raise InvalidArgument(f"no metric column {metric!r} in the frame; available metrics: "
                              f"{_available(metric_names(wide))}")
    return Points(_plottable(wide, [hp_col, metric], None), hp_col, metric)


def _plottable(wide: pd.DataFrame, needed: list[str], hue: str | None) -> pd.DataFrame:
    labels = run_labels(wide)
    data = wide.dropna(subset=needed).copy()
    if data.empty:
        raise InvalidArgument(f"no run has values for all of {', '.join(map(repr, needed))}")
    data["label"] = data["run_id"].astype(str).map(labels)
    return data


def is_categorical(values: pd.Series) -> bool:
    """Strings, booleans and mixed values are categories; numbers are a scale."""
    return not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values)


def categories(values: pd.Series) -> list[Any]:
    """The distinct values in sorted order where they sort, else in order of appearance."""
    distinct = list(dict.fromkeys(values.dropna().tolist()))
    try:
        return sorted(distinct)
    except TypeError:
        return distinct


def spans_decades(values: pd.Series | np.ndarray) -> bool:
    """True when all values are positive and the largest is more than 100× the smallest."""
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    return bool(finite.size and finite.min() > 0 and finite.max() / finite.min() > LOG_SPAN)
