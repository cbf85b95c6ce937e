"""The questions users ask of their runs, answered as DataFrames (scalarstop's, AIQC's).

Functions over the run store: the facade calls them, they never import it. Hyperparameters
become ``hp.<name>`` columns (nested ones ``hp.<a>.<b>``), metrics keep their Keras names.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bson import ObjectId

if TYPE_CHECKING:
    import pandas as pd

from tensorhub.errors import InvalidArgument
from tensorhub.fields import HUB, flatten
from tensorhub.records import Record, RecordStore
from tensorhub.runs import metrics
from tensorhub.runs.store import FINISHED, RunStore

RUN_COLUMNS = ["run_id", "run_name", "status", "task_id", "task_name", "attempt", "parent_run_id",
               "started_at", "ended_at", "duration_seconds", "epochs_done"]
SPLITS = (("val_", "validation"), ("validation_", "validation"), ("test_", "test"), ("train_", "train"))


def _hp(doc: Mapping[str, Any]) -> dict[str, Any]:
    return {f"hp.{k}": v for k, v in flatten(doc.get("hyper_parameters") or {}).items()}


def _ident(doc: Mapping[str, Any]) -> dict[str, Any]:
    task = doc.get("task_id")
    return {"run_id": str(doc["_id"]), "run_name": doc.get("run_name"), "task_id": None if task is None else str(task)}


def _direction(value: str) -> int:
    if value not in ("max", "min"):
        raise InvalidArgument(f"metric_direction must be 'max' or 'min', got {value!r}")
    return 1 if value == "max" else -1


def runs_frame(docs: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per run: identity, status, timings, each metric's last value, ``hp.*``."""
    import pandas as pd
    rows = []
    for doc in docs:
        row = {**_ident(doc), **{c: doc.get(c) for c in RUN_COLUMNS[2:] if c != "task_id"}}
        row["parent_run_id"] = None if doc.get("parent_run_id") is None else str(doc["parent_run_id"])
        row.update({name: entry.get("last") for name, entry in (doc.get("summary") or {}).items()})
        row.update(_hp(doc))
        rows.append(row)
    return pd.DataFrame(rows, columns=_columns(rows, RUN_COLUMNS))


def epochs_frame(store: RunStore, docs: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Every epoch of ``docs`` as rows: run_id, run_name, task_id, epoch, time, metrics, ``hp.*``."""
    import pandas as pd
    by_id = {doc["_id"]: doc for doc in docs}
    points = metrics.read_points(store.metrics, list(by_id), "epoch") if by_id else {}
    rows: list[dict[str, Any]] = []
    for run_id, doc in by_id.items():
        ident, hp = _ident(doc), _hp(doc)
        rows.extend({**ident, **point, **hp} for point in points.get(run_id, []))
    return pd.DataFrame(rows, columns=_columns(rows, ["run_id", "run_name", "task_id", "epoch", "time"]))


def ranking_fields(metric_name: str) -> dict[str, int] | None:
    """The fields of a run that ranking by ``metric_name`` reads (a projection for ``RunStore.find``).

    Ten thousand runs are ten thousand documents to send and decode; the ranking needs a few
    fields of each (bench/best_model.py). None when ``metric_name`` cannot be a field path (no
    stored metric has such a name, and the whole documents give the same empty answer).
    """
    if not isinstance(metric_name, str) or not metric_name or metric_name[0] == "$" or \
            any(c in metric_name for c in ".\0"):
        return None
    return {"run_name": 1, "task_id": 1, "status": 1, "epochs_done": 1, "hyper_parameters": 1,
            f"summary.{metric_name}": 1}


def grouped_by_epoch_metric(docs: Sequence[Mapping[str, Any]], metric_name: str,
                            metric_direction: str = "max") -> pd.DataFrame:
    """One row per run that logged ``metric_name``: its best epoch and value, best run first."""
    import pandas as pd
    sign = _direction(metric_direction)
    key = "max" if sign > 0 else "min"
    rows = []
    for doc in docs:
        entry = (doc.get("summary") or {}).get(metric_name)
        if not entry:
            continue
        rows.append({**_ident(doc), "status": doc.get("status"), "epoch": entry[f"{key}_epoch"],
                     metric_name: entry[key], "epochs_done": doc.get("epochs_done"), **_hp(doc)})
    rows.sort(key=lambda row: -sign * row[metric_name])
    return pd.DataFrame(rows, columns=_columns(rows, ["run_id", "run_name", "task_id", "status", "epoch",
                                                      metric_name, "epochs_done"]))


@dataclass
class BestModel:
    """What ``get_best_model`` returns."""

    run_id: ObjectId
    run_name: str
    epoch: int
    value: float
    metrics: dict[str, Any]               # every metric of the best epoch
    hyper_parameters: dict[str, Any]      # flattened: {"optimizer.lr": 0.1}
    run: dict[str, Any] = field(repr=False)
    model: Any = field(default=None, repr=False)
    record: Record | None = field(default=None, repr=False)


def best_model(store: RunStore, checkpoints: RecordStore, models: RecordStore, docs: Sequence[Mapping[str, Any]],
               metric_name: str, metric_direction: str, load: bool, allow_pickle: bool) -> BestModel | None:
    """The best run by its best epoch; the model is its checkpoint at that epoch, else its last saved model.

    ``docs`` may hold only :func:`ranking_fields`: the winner's whole document is read again.
    """
    ranking = grouped_by_epoch_metric(docs, metric_name, metric_direction)
    if ranking.empty:
        return None
    top = ranking.iloc[0]
    doc = store.get(ObjectId(top["run_id"]))
    epoch = int(top["epoch"])
    point = metrics.read_points(store.metrics, [doc["_id"]], "epoch", at=epoch)[doc["_id"]]
    values = {k: v for k, v in (point[0] if point else {}).items() if k not in ("epoch", "time")}
    record = checkpoints.find_top(None, [(f"{HUB}.epoch", -1)], **{f"{HUB}.run_id": doc["_id"], f"{HUB}.epoch": epoch})
    if record is None:
        record = models.find_top(None, None, **{f"{HUB}.run.run_id": doc["_id"]})
    best = BestModel(doc["_id"], str(doc.get("run_name")), epoch, float(top[metric_name]), values,
                     flatten(doc.get("hyper_parameters") or {}), dict(doc), record=record)
    if load and record is not None:
        best.model = record.load(allow_pickle)
    return best


def metrics_frame(store: RunStore, queue: Any, docs: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Per finished run and split, its final metrics (last epoch, plus the task's saved results)."""
    import pandas as pd
    finished = [d for d in docs if d.get("status") == FINISHED]
    points = metrics.read_points(store.metrics, [d["_id"] for d in finished], "epoch") if finished else {}
    rows = []
    for doc in finished:
        values = {k: v for k, v in (points.get(doc["_id"]) or [{}])[-1].items() if k not in ("epoch", "time")}
        task = queue.get(doc["task_id"]) if doc.get("task_id") is not None else None
        if task is not None:
            values.update(task.result or {})
        by_split: dict[str, dict[str, Any]] = {}
        for name, value in values.items():
            split, metric = _split(name)
            by_split.setdefault(split, {})[metric] = value
        repeat = task.fields.get("repeat", 0) if task is not None else 0
        for split, row in by_split.items():
            rows.append({**_ident(doc), "repeat": repeat, "split": split, **row, **_hp(doc)})
    return pd.DataFrame(rows, columns=_columns(rows, ["run_id", "run_name", "task_id", "repeat", "split"]))


def _split(name: str) -> tuple[str, str]:
    for prefix, split in SPLITS:
        if name.startswith(prefix):
            return split, name[len(prefix):]
    return "train", name


def aggregate(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean, median, std, min, max of each metric per hyperparameter combination and split."""
    import pandas as pd
    if frame.empty:
        return frame
    keys = [c for c in frame.columns if c.startswith("hp.")] + ["split"]
    skip = {"run_id", "run_name", "task_id", "repeat", *keys}
    values = [c for c in frame.columns if c not in skip and pd.api.types.is_numeric_dtype(frame[c])]
    grouped = frame.groupby(keys, dropna=False)[values].agg(["mean", "median", "std", "min", "max"])
    grouped.columns = [f"{column[0]}.{column[1]}" for column in grouped.columns.to_flat_index()]
    counts = frame.groupby(keys, dropna=False)["run_id"].count().rename("repeats")
    return grouped.join(counts).reset_index()


def lineage(store: RunStore, record_doc: Mapping[str, Any]) -> dict[str, Any]:
    """A model's run, hyperparameters, epoch, dataset versions, task and ancestry."""
    saved_by = (record_doc.get(HUB) or {}).get("run")
    if not saved_by:
        return {"run": None, "epoch": None, "datasets": [], "hyper_parameters": {}, "task_id": None, "ancestors": []}
    run = store.get(saved_by["run_id"])
    return {"run": {"id": run["_id"], "name": run.get("run_name"), "status": run.get("status"),
                    "attempt": run.get("attempt")},
            "epoch": saved_by.get("epoch"), "datasets": list(run.get("datasets") or []),
            "hyper_parameters": dict(run.get("hyper_parameters") or {}), "task_id": run.get("task_id"),
            "ancestors": [{"id": a["_id"], "attempt": a.get("attempt"), "status": a.get("status")}
                          for a in store.ancestors(run)]}


def _columns(rows: Iterable[Mapping[str, Any]], first: Sequence[str]) -> list[str]:
    seen = dict.fromkeys(first)
    for row in rows:
        seen.update(dict.fromkeys(row))
    return list(seen)
