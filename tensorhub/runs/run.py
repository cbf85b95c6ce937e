"""``Run``: what a training script holds while it trains — metrics, the Blocks-style log,
checkpoints, resume, tables.

    with hub.start_run("mlp-sweep", hyper_parameters={"n_units": 800}) as run:
        for epoch in range(1, 11):
            run.log_epoch(epoch, loss=..., val_loss=...)
        run.checkpoint(model, epoch=10, val_loss=0.1)

Inside a task, ``current_task().run`` is the attempt's run (the runner opened it).
"""
from __future__ import annotations

import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bson import ObjectId

if TYPE_CHECKING:
    import pandas as pd

from tensorhub.errors import InvalidArgument, TensorHubError
from tensorhub.fields import HUB, utcnow
from tensorhub.records import Record, RecordStore
from tensorhub.runs import metrics
from tensorhub.runs.current import RunRef, activate, deactivate
from tensorhub.runs.store import FAILED, FINISHED, RUNNING, RunStore

CHECKPOINT_FIELDS = ("run_name", "version", "time", "epoch")


@dataclass
class Checkpoint:
    """What :meth:`Run.resume` returns: the model as it was, and where training stood."""

    model: Any
    epoch: int
    metrics: dict[str, Any]
    run_id: ObjectId
    record: Record = field(repr=False)


class Run:
    """One run: a task attempt, or a session a script opened with ``hub.start_run``."""

    def __init__(self, store: RunStore, doc: dict[str, Any], checkpoints: RecordStore, tables: Any = None) -> None:
        self._store = store
        self._checkpoints = checkpoints
        self._tables = tables
        self.document = doc
        self._series = {kind: metrics.MetricSeries(store.metrics, store.project, doc["_id"], kind)
                        for kind in metrics.KINDS}
        self._summary: dict[str, dict[str, Any]] = dict(doc.get("summary") or {})
        self._token: Any = None

    def __repr__(self) -> str:
        return f"Run({self.name!r}, id={self.id}, status={self.status!r}, epochs_done={self.epochs_done})"

    # -- what it is --------------------------------------------------------------------------
    @property
    def id(self) -> ObjectId:
        return self.document["_id"]

    @property
    def name(self) -> str:
        return str(self.document["run_name"])

    @property
    def status(self) -> str:
        return str(self.document["status"])

    @property
    def hyper_parameters(self) -> dict[str, Any]:
        return dict(self.document.get("hyper_parameters") or {})

    @property
    def task_id(self) -> ObjectId | None:
        return self.document.get("task_id")

    @property
    def attempt(self) -> int | None:
        return self.document.get("attempt")

    @property
    def parent_run_id(self) -> ObjectId | None:
        return self.document.get("parent_run_id")

    @property
    def epochs_done(self) -> int:
        return int(self.document.get("epochs_done") or 0)

    def refresh(self) -> Run:
        """Read the run document again (status, summaries) from the server."""
        self.document = self._store.get(self.id)
        return self

    def ancestors(self) -> list[Run]:
        """The runs this one continues (earlier attempts of its task), nearest first."""
        return [Run(self._store, doc, self._checkpoints, self._tables) for doc in self._store.ancestors(self.document)]

    # -- metrics -----------------------------------------------------------------------------
    def log_epoch(self, epoch: int, **values: Any) -> None:
        """Record one epoch's metrics (stored at once: epochs are few and a crash must keep them).

        >>> run = hub.start_run("doc-epochs")
        >>> run.log_epoch(1, loss=0.9, val_loss=1.0); run.log_epoch(2, loss=0.5, val_loss=0.7)
        >>> run.epochs_done, run.log.status["epochs_done"], run.epochs_df()["val_loss"].tolist()
        (2, 2, [1.0, 0.7])
        """
        self._series["epoch"].add(epoch, values)
        self._series["epoch"].flush()
        for name, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self._summarize(name, float(value), epoch)
        done = max(self.epochs_done, epoch)
        self.document.update(epochs_done=done, summary=self._summary)
        self.document.setdefault("log_status", {})["epochs_done"] = done
        self._store.set_progress(self.id, {"epochs_done": done, "summary": self._summary,
                                           "log_status.epochs_done": done})

    def _summarize(self, name: str, value: float, epoch: int) -> None:
        entry = self._summary.setdefault(name, {"min": value, "min_epoch": epoch, "max": value, "max_epoch": epoch})
        if value < entry["min"]:
            entry.update(min=value, min_epoch=epoch)
        if value > entry["max"]:
            entry.update(max=value, max_epoch=epoch)
        entry.update(last=value, last_epoch=epoch)

    def log_step(self, step: int, **values: Any) -> None:
        """Record one step's metrics; buffered and stored in buckets of 1,000 (or every 2 s)."""
        if self._series["step"].add(step, values):
            self._store_steps_done()

    def flush(self) -> None:
        """Store buffered step metrics now (``close`` does it too)."""
        if self._series["step"].flush():
            self._store_steps_done()

    def _store_steps_done(self) -> None:
        done = self._series["step"].last or 0
        self.document["steps_done"] = done
        self._store.set_progress(self.id, {"steps_done": done})

    @property
    def log(self) -> TrainingLog:
        """Blocks' view of the step log: ``run.log[i]["loss"]``, ``run.log[i].update(loss=...)``, ``run.log.status``."""
        return TrainingLog(self, "step")

    @property
    def epochs(self) -> TrainingLog:
        """The same view over epochs: ``run.epochs[3]["val_loss"]``."""
        return TrainingLog(self, "epoch")

    def points(self, kind: str = "epoch") -> list[dict[str, Any]]:
        stored = metrics.read_points(self._store.metrics, [self.id], kind)[self.id]
        return metrics.merge_pending(stored, self._series[kind].pending(), kind)

    def epochs_df(self, include_ancestors: bool = False) -> pd.DataFrame:
        """Every epoch of this run as a DataFrame (epoch, time, one column per metric).

        ``include_ancestors`` prepends the epochs of the attempts this run continues; an epoch
        logged by several of them appears once, as the latest attempt logged it.
        """
        points = self.points("epoch")
        if include_ancestors:
            chain = self.ancestors()[::-1]  # oldest first: later attempts override
            stored = metrics.read_points(self._store.metrics, [run.id for run in chain], "epoch")
            by_epoch: dict[int, dict[str, Any]] = {}
            for run in [*chain, self]:
                for point in (points if run is self else stored.get(run.id, [])):
                    by_epoch[point["epoch"]] = {**point, "run_id": str(run.id)}
            points = [by_epoch[e] for e in sorted(by_epoch)]
        return metrics.frame(points, ["epoch", "time"])

    def steps_df(self) -> pd.DataFrame:
        return metrics.frame(self.points("step"), ["step", "time"])

    # -- checkpoints -------------------------------------------------------------------------
    def checkpoint(self, model: Any, epoch: int, allow_pickle: bool = False, **values: Any) -> Record:
        """Store a checkpoint of ``model`` at ``epoch`` (a Keras model or weights), linked to this run.

        Identical content is stored once (a Keras model is fingerprinted by config and weights).
        """
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise InvalidArgument(f"epoch must be a non-negative integer, got {epoch!r}")
        extra = {"run_id": self.id, "task_id": self.task_id, "epoch": epoch}
        return self._checkpoints.save(model, self.name, allow_pickle, extra, epoch=epoch, **values)

    def resume(self, allow_pickle: bool = False) -> Checkpoint | None:
        """The latest checkpoint of this task's earlier attempts (or of the runs this one
        continues), loaded; None when there is none.

        >>> run = hub.start_run("doc-resume")
        >>> run.resume() is None
        True
        """
        if self.task_id is not None:
            record = self._checkpoints.find_top(None, [(f"{HUB}.epoch", -1)], **{f"{HUB}.task_id": self.task_id})
        else:
            ids = [self.id] + [run.id for run in self.ancestors()]
            record = self._checkpoints.find_top(None, [(f"{HUB}.epoch", -1)], **{f"{HUB}.run_id": {"$in": ids}})
        if record is None:
            return None
        values = {k: v for k, v in record.fields.items() if k not in CHECKPOINT_FIELDS}
        return Checkpoint(record.load(allow_pickle), int(record.document[HUB]["epoch"]), values,
                          record.document[HUB]["run_id"], record)

    def checkpoints(self, limit: int = 0) -> list[Record]:
        """This run's checkpoint records, latest epoch first, without loading them (0: all).

        >>> run = hub.start_run("doc-checkpoints")
        >>> _ = run.checkpoint([np.zeros(2)], epoch=1); _ = run.checkpoint([np.ones(2)], epoch=2)
        >>> [record.document["_hub"]["epoch"] for record in run.checkpoints()]
        [2, 1]
        """
        return self._checkpoints.find(None, [(f"{HUB}.epoch", -1)], limit, **{f"{HUB}.run_id": self.id})

    # -- tables ------------------------------------------------------------------------------
    def add_table(self, name: str, schema: Mapping[str, Any]) -> Any:
        """A typed table of rows attached to this run (cox's ``store.add_table``)."""
        return self._table_store().add_table(self.id, name, schema)

    def add_table_like_example(self, name: str, example: Mapping[str, Any], **options: Any) -> Any:
        return self._table_store().add_table_like_example(self.id, name, example, **options)

    def get_table(self, name: str) -> Any:
        return self._table_store().get_table(self.id, name)

    def _table_store(self) -> Any:
        if self._tables is None:
            raise TensorHubError("tables are not available in this hub")
        return self._tables

    # -- ending ------------------------------------------------------------------------------
    def close(self, status: str = FINISHED, error: Mapping[str, Any] | None = None) -> None:
        """Store what is buffered and end the run (task runs are ended by their runner instead)."""
        self.flush()
        if self._store.close(self.id, status, error):
            self.document.update(status=status, ended_at=utcnow(), error=dict(error) if error else None)

    def __enter__(self) -> Run:
        self._token = activate(RunRef(str(self.id), self._store.project.name))
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        try:
            if exc is None:
                self.close(FINISHED)
            else:
                text = "".join(traceback.format_exception(exc_type, exc, tb))
                self.close(FAILED, {"type": type(exc).__name__, "message": str(exc)[:2000],
                                    "traceback": text[-4000:]})
        finally:
            if self._token is not None:
                deactivate(self._token)
                self._token = None


class TrainingLog:
    """Blocks' training log over one kind of index (steps or epochs)."""

    def __init__(self, run: Run, kind: str) -> None:
        self._run = run
        self._kind = kind

    def __getitem__(self, index: int) -> IterationRecord:
        stored = metrics.read_points(self._run._store.metrics, [self._run.id], self._kind, at=index)[self._run.id]
        pending = [p for p in self._run._series[self._kind].pending() if p[self._kind] == index]
        merged = metrics.merge_pending(stored, pending, self._kind)
        values = {k: v for k, v in (merged[0] if merged else {}).items() if k not in (self._kind, "time")}
        return IterationRecord(self, index, values)

    def _write(self, index: int, values: Mapping[str, Any]) -> None:
        if self._kind == "epoch":
            self._run.log_epoch(index, **values)
        else:
            self._run.log_step(index, **values)

    @property
    def status(self) -> StatusDict:
        """Values not bound to a time (epochs done, best so far...); assignments are stored."""
        return StatusDict(self._run, dict(self._run.document.get("log_status") or {}))

    def to_frame(self) -> pd.DataFrame:
        return self._run.epochs_df() if self._kind == "epoch" else self._run.steps_df()


class IterationRecord(dict):
    """The values of one iteration; ``update``/item assignment also store them."""

    def __init__(self, log: TrainingLog, index: int, values: dict[str, Any]) -> None:
        super().__init__(values)
        self._log, self._index = log, index

    def update(self, *args: Any, **kwargs: Any) -> None:
        values = dict(*args, **kwargs)
        self._log._write(self._index, values)
        super().update(values)

    def __setitem__(self, key: str, value: Any) -> None:
        self.update({key: value})


class StatusDict(dict):
    """``run.log.status``: a dict whose assignments are stored on the run document."""

    def __init__(self, run: Run, values: dict[str, Any]) -> None:
        super().__init__(values)
        self._run = run

    def __setitem__(self, key: str, value: Any) -> None:
        self.update({key: value})

    def update(self, *args: Any, **kwargs: Any) -> None:
        from tensorhub.fields import clean_fields

        values = clean_fields(dict(*args, **kwargs))
        self._run._store.set_progress(self._run.id, {f"log_status.{k}": v for k, v in values.items()})
        self._run.document.setdefault("log_status", {}).update(values)
        super().update(values)


__all__ = ["RUNNING", "Checkpoint", "IterationRecord", "Run", "StatusDict", "TrainingLog"]
