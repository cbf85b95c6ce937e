"""``TensorHub``: the one object users hold. It wires the stores together and keeps TensorLayer's
method names; the work happens in ``records``, ``logs``, ``tasks`` and ``blobs``.

Layers point one way: the stores (blobs, codecs, records, logs, tasks) know nothing of this
facade; applications (the runner daemon, the CLI) use its methods and its one documented
namespace for runners, :attr:`TensorHub.queue`.
"""
from __future__ import annotations

import datetime as dt
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING
from pymongo.database import Database

from tensorhub import defaults
from tensorhub.blobs import BlobStore
from tensorhub.connection import Connection, build_uri, connect
from tensorhub.errors import InvalidArgument
from tensorhub.fields import HUB, as_utc
from tensorhub.fleet import RunnerRecord, RunnerRegistry
from tensorhub.logs import LogStore
from tensorhub.project import PROJECT_FIELD, Project
from tensorhub.records import Record, RecordStore, attach_record, records_frame
from tensorhub.runs import analysis
from tensorhub.runs.current import active_run
from tensorhub.runs.run import Run
from tensorhub.runs.store import RunStore
from tensorhub.tables import TableStore
from tensorhub.tasks import local, search
from tensorhub.tasks.claims import runner_identity
from tensorhub.tasks.create import TaskSpec, checked_hyper_parameters
from tensorhub.tasks.model import Task
from tensorhub.tasks.queue import TaskQueue

_indexed: set[tuple[int, str]] = set()
_indexed_lock = threading.Lock()
_UNSET: Any = object()


class TensorHub:
    """A project's view of one MongoDB database: datasets, models, logs, metrics and tasks.

    >>> hub = TensorHub("mongomock://", project_name="mnist")       # embedded, nothing to install
    >>> hub.project_name
    'mnist'

    Other forms (not run here: they need a server)::

        TensorHub("mongodb://user:pw@hub.lab:27017/ml?authSource=admin", project_name="mnist")
        TensorHub(ip="localhost", port=27017, dbname="temp", username=None, password="password",
                  project_name="tutorial")                          # TensorLayer's keywords
        TensorHub("localhost", 27017, "temp", None, "password", "tutorial")   # ... and its order

    ``project_name=None`` (TensorLayer's default) is a project of its own, stored as ``null``.
    """

    def __init__(self, uri: str | None = None, *args: Any, project_name: Any = _UNSET,
                 ip: str | None = None, port: int | None = None, dbname: str | None = None,
                 username: str | None = None, password: str | None = None,
                 auth_source: str | None = None, timeout_ms: int = defaults.SERVER_TIMEOUT_MS,
                 **client_options: Any) -> None:
        if uri is not None and not (isinstance(uri, str) and "://" in uri):
            legacy = _tensorlayer_positional([uri, *args], dict(
                ip=ip, port=port, dbname=dbname, username=username, password=password,
                project_name=None if project_name is _UNSET else project_name))
            ip, port, dbname = legacy["ip"], legacy["port"], legacy["dbname"]
            username, password = legacy["username"], legacy["password"]
            project_name, uri = legacy["project_name"], None
        elif len(args) > 1 or (args and project_name is not _UNSET):
            raise InvalidArgument("after the URI only project_name may be positional: "
                                  "TensorHub('mongodb://host/db', project_name='mnist')")
        elif args:
            project_name = args[0]
        if uri is None:
            uri = build_uri(ip or "localhost", 27017 if port is None else port,
                            dbname or defaults.DATABASE, username, password, auth_source)
        elif ip is not None or username is not None:
            raise InvalidArgument("give either uri or ip/port/dbname/username/password, not both")
        self.project_name: str | None = None if project_name is _UNSET else project_name
        project = Project(self.project_name)
        self._connection: Connection = connect(uri, timeout_ms=timeout_ms, **client_options)
        self.db: Database = self._connection.db
        self._blobs = BlobStore(self.db, project.name)
        self._datasets = RecordStore(self.db["datasets"], self._blobs, project, "dataset_name",
                                     self._referenced, dedupe=True)
        self._models = RecordStore(self.db["models"], self._blobs, project, "model_name",
                                   self._referenced, dedupe=False)
        self._logs = LogStore(self.db, project)
        self._runs = RunStore(self.db, project)
        self._tables = TableStore(self.db, self._blobs, project)
        by_epoch = [(f"{HUB}.epoch", DESCENDING), ("_id", DESCENDING)]
        self._checkpoints = RecordStore(
            self.db["checkpoints"], self._blobs, project, "run_name", self._referenced, dedupe=True,
            indexes=[[(PROJECT_FIELD, ASCENDING), (f"{HUB}.task_id", ASCENDING), *by_epoch],
                     [(PROJECT_FIELD, ASCENDING), (f"{HUB}.run_id", ASCENDING), *by_epoch]])
        self.queue = TaskQueue(self.db, self._blobs, project, self._runs)
        """The task queue, for runners and tools: ``claim_next``, ``begin``, ``heartbeat``, ``finish``."""
        self.fleet = RunnerRegistry(self.db, project)
        """The runner registry, for runners and tools: ``register``, ``heartbeat``, ``exited``, ``list``."""
        self._ensure_indexes()

    def _ensure_indexes(self) -> None:
        key = (id(self._connection.client), self.db.name)
        with _indexed_lock:
            if key in _indexed:
                return
            for store in (self._blobs, self._datasets, self._models, self._logs, self.queue, self._runs,
                          self._checkpoints, self._tables, self.fleet):
                store.ensure_indexes()
            _indexed.add(key)

    def _referenced(self, blob_ids: list[ObjectId]) -> set[ObjectId]:
        """Which of ``blob_ids`` any document still references (so they must be kept)."""
        found: set[ObjectId] = set()
        for store in (self._datasets, self._models, self._checkpoints, self.queue, self._tables):
            found |= store.referenced(blob_ids)
        return found

    @property
    def embedded(self) -> bool:
        """True for the in-process ``mongomock://`` store."""
        return self._connection.embedded

    @property
    def uri(self) -> str:
        """The URI with its password hidden (safe to print or log)."""
        return self._connection.display_uri

    def open_again(self, **client_options: Any) -> TensorHub:
        """A new hub on the same server and project (for another thread or a child process)."""
        return TensorHub(self._connection.uri, self.project_name, **client_options)

    def connection_uri(self) -> str:
        """The full URI, password included: only for handing to a child process, never to print."""
        return self._connection.uri

    def close(self) -> None:
        """Close the client (the embedded store is shared in-process and stays)."""
        if not self.embedded:
            with _indexed_lock:
                _indexed.discard((id(self._connection.client), self.db.name))
            self._connection.client.close()

    def __enter__(self) -> TensorHub:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"TensorHub({self._connection.display_uri!r}, project_name={self.project_name!r})"

    # -- datasets ------------------------------------------------------------------------------
    def save_dataset(self, dataset: Any, dataset_name: str, allow_pickle: bool = False, **kwargs: Any) -> Record:
        """Store arrays / tuples / dicts of arrays / DataFrames under ``dataset_name`` as its next version.

        Identical bytes are stored once, but every save gets its own record with its own keywords.

        >>> record = hub.save_dataset((X_train, y_train, X_test, y_test), "mnist", description="digits")
        >>> record.name, record.fields["description"], record.summary
        ('mnist', 'digits', 'tuple(4 items)')
        """
        return self._datasets.save(dataset, dataset_name, allow_pickle, **kwargs)

    def find_top_dataset(self, dataset_name: str | None = None, sort: Any = None,
                         allow_pickle: bool = False, **kwargs: Any) -> Any:
        """The best-matching dataset, loaded (newest unless ``sort`` says otherwise); ``None`` if none.

        >>> X_train, y_train, X_test, y_test = hub.find_top_dataset("mnist")
        >>> X_train.shape
        (60, 4)
        >>> first = hub.find_top_dataset("mnist", version=1)
        >>> newest = hub.find_top_dataset("mnist", sort=[("time", -1)])
        """
        record = self._datasets.find_top(dataset_name, sort, **kwargs)
        if record is None:
            return None
        loaded = record.load(allow_pickle)
        self._note_datasets([record])
        return loaded

    def find_datasets(self, dataset_name: str | None = None, allow_pickle: bool = False, sort: Any = None,
                      **kwargs: Any) -> list[Any]:
        """All matching datasets, loaded, newest first (use :meth:`list_datasets` to skip loading)."""
        records = self._datasets.find(dataset_name, sort, 0, **kwargs)
        loaded = [record.load(allow_pickle) for record in records]
        self._note_datasets(records)
        return loaded

    def list_datasets(self, dataset_name: str | None = None, sort: Any = None, as_frame: bool = False,
                      *, limit: int = 0, **kwargs: Any) -> Any:
        """Matching dataset records (name, version, fields, size) without reading any bytes; with
        ``as_frame=True`` a DataFrame (your keywords as columns, nested ones dotted). ``limit``
        keeps the first that many (0: all)."""
        records = self._datasets.find(dataset_name, sort, _non_negative(limit, "limit"), **kwargs)
        return records_frame(records, "dataset_name") if as_frame else records

    def delete_datasets(self, dataset_name: str | None = None, **kwargs: Any) -> int:
        """Delete matching datasets (and their bytes, unless another record shares them).

        >>> for i in range(3):
        ...     _ = hub.save_dataset(np.full(2, i), "scratch")
        >>> hub.delete_datasets("scratch", version={"$lt": 3})   # versions 1 and 2
        2
        """
        return self._datasets.delete(dataset_name, **kwargs)

    # -- models --------------------------------------------------------------------------------
    def save_model(self, network: Any, model_name: str = "model", allow_pickle: bool = False,
                   **kwargs: Any) -> Record:
        """Store a tf.keras model (or a list/dict of weight arrays) with queryable metadata.

        >>> record = hub.save_model(model, model_name="mlp", test_accuracy=0.97, name="second_model")
        >>> record.fields["name"], record.fields["test_accuracy"]
        ('second_model', 0.97)
        """
        run = self._active_run()
        if run is None:
            return self._models.save(network, model_name, allow_pickle, None, **kwargs)
        doc = self._runs.get(run)
        saved_by = {"run_id": run, "run_name": doc["run_name"], "task_id": doc.get("task_id"),
                    "epoch": doc.get("epochs_done", 0)}
        record = self._models.save(network, model_name, allow_pickle, {"run": saved_by}, **kwargs)
        self._runs.record_model(run, {"model_name": record.name, "version": record.version, "id": record.id,
                                      "epoch": saved_by["epoch"]})
        return record

    def find_top_model(self, sort: Any = None, model_name: str | None = "model", allow_pickle: bool = False,
                       sess: Any = None, **kwargs: Any) -> Any:
        """The best-matching model, loaded, or ``None``. Its fields ride along on the object.

        ``sess`` is TensorLayer's TF1 session argument, accepted and unused (Keras needs none).

        >>> net = hub.find_top_model(sort=[("test_accuracy", -1)], model_name="mlp")
        >>> net._test_accuracy, net.hub_record.version
        (0.97, 2)
        """
        record = self._models.find_top(model_name, sort, **kwargs)
        if record is None:
            return None
        return attach_record(record.load(allow_pickle), record)

    def list_models(self, model_name: str | None = None, sort: Any = None, as_frame: bool = False,
                    *, limit: int = 0, **kwargs: Any) -> Any:
        """Matching model records without loading weights (``record.load()`` loads one); with
        ``as_frame=True`` a DataFrame: your keywords as columns, and the run that saved each model.
        ``limit`` keeps the first that many (0: all).

        >>> hub.list_models("mlp", as_frame=True)[["model_name", "version", "test_accuracy"]].values.tolist()
        [['mlp', 2, 0.97], ['mlp', 1, 0.9]]
        >>> [r.version for r in hub.list_models("mlp", limit=1)]          # the newest only
        [2]
        """
        records = self._models.find(model_name, sort, _non_negative(limit, "limit"), **kwargs)
        return records_frame(records, "model_name") if as_frame else records

    def delete_model(self, model_name: str | None = None, **kwargs: Any) -> int:
        """Delete matching models and their bytes; returns how many went."""
        return self._models.delete(model_name, **kwargs)

    # -- runs --------------------------------------------------------------------------------
    def start_run(self, run_name: str, hyper_parameters: Mapping[str, Any] | None = None,
                  parent: Run | ObjectId | str | None = None, **kwargs: Any) -> Run:
        """Open a run for a notebook or script; use it with ``with`` so it is closed for you.

        ``parent`` continues an earlier run (``run.resume()`` then finds its checkpoints).

        >>> with hub.start_run("mlp-sweep", hyper_parameters={"n_units": 800}) as run:
        ...     run.log_epoch(1, loss=0.5)
        >>> hub.get_run(run.id).status
        'finished'
        """
        parent_id = parent.id if isinstance(parent, Run) else None if parent is None else self._runs.get(parent)["_id"]
        doc = self._runs.create(run_name, hyper_parameters, parent_run_id=parent_id, fields=kwargs)
        return self._run(doc)

    def get_run(self, run_id: ObjectId | str) -> Run:
        """One run by id (:class:`~tensorhub.errors.NotFound` if there is none)."""
        return self._run(self._runs.get(run_id))

    def list_runs(self, task_name: str | None = None, sort: Any = None, as_frame: bool = False,
                  *, limit: int = 0, **filters: Any) -> Any:
        """Runs (newest first), as :class:`Run` objects or, with ``as_frame=True``, a DataFrame with
        hyperparameters as ``hp.<name>`` columns and each metric's last and best values; ``limit``
        keeps the first that many (0: all).

        >>> len(hub.list_runs("mnist")) >= 1
        True
        >>> len(hub.list_runs("mnist", limit=1))
        1
        """
        docs = self._runs.find(None, task_name, sort, _non_negative(limit, "limit"), **filters)
        return analysis.runs_frame(docs) if as_frame else [self._run(doc) for doc in docs]

    def lineage(self, record: Record | Any) -> dict[str, Any]:
        """Where a model came from: its run, hyperparameters, epoch, dataset versions, task, ancestry.

        Accepts a model record or a loaded model (``net.hub_record``).
        """
        record = getattr(record, "hub_record", record)
        return analysis.lineage(self._runs, record.document)

    def get_current_epoch(self, model_or_run: Any) -> int:
        """Epochs done by a run, or by the run that saved a model (scalarstop's get_current_epoch)."""
        if isinstance(model_or_run, Run):
            return model_or_run.refresh().epochs_done
        record = getattr(model_or_run, "hub_record", model_or_run)
        if isinstance(record, Record):
            saved_by = record.document[HUB].get("run") or {}
            return int(saved_by.get("epoch") or 0)
        return int(self._runs.get(model_or_run).get("epochs_done") or 0)

    def list_model_epochs(self, task_name: str | None = None, run_ids: Iterable[Any] | None = None,
                          **filters: Any) -> Any:
        """Every epoch of the selected runs as rows: run_id, run_name, epoch, metrics, ``hp.*``."""
        docs = self._select_runs(task_name, run_ids, filters)
        return analysis.epochs_frame(self._runs, docs)

    def list_models_grouped_by_epoch_metric(self, metric_name: str, metric_direction: str = "max",
                                            task_name: str | None = None, **filters: Any) -> Any:
        """One row per run with its best epoch by ``metric_name`` (``"max"`` or ``"min"``), best first."""
        docs = self._runs.find(None, task_name, None, 0, analysis.ranking_fields(metric_name), **filters)
        return analysis.grouped_by_epoch_metric(docs, metric_name, metric_direction)

    def get_best_model(self, metric_name: str, metric_direction: str = "max", task_name: str | None = None,
                       load: bool = False, allow_pickle: bool = False, **filters: Any) -> Any:
        """The best run by its best epoch's ``metric_name``: run, epoch, metrics, hyperparameters, and
        with ``load=True`` the model (its checkpoint at that epoch when there is one). None if no run."""
        docs = self._runs.find(None, task_name, None, 0, analysis.ranking_fields(metric_name), **filters)
        return analysis.best_model(self._runs, self._checkpoints, self._models, docs, metric_name,
                                   metric_direction, load, allow_pickle)

    def metrics_df(self, task_name: str | None = None, **filters: Any) -> Any:
        """Per run and split (train / validation / test) its final metrics, with ``repeat`` and ``hp.*``."""
        return analysis.metrics_frame(self._runs, self.queue, self._runs.find(None, task_name, None, 0, **filters))

    def metrics_aggregate_df(self, task_name: str | None = None, **filters: Any) -> Any:
        """Mean, median, std, min and max of each metric across the repeats of each combination."""
        return analysis.aggregate(self.metrics_df(task_name, **filters))

    def _run(self, doc: dict[str, Any]) -> Run:
        return Run(self._runs, doc, self._checkpoints, self._tables)

    def _select_runs(self, task_name: str | None, run_ids: Iterable[Any] | None,
                     filters: dict[str, Any]) -> list[dict[str, Any]]:
        if run_ids is not None:
            filters = {**filters, "_id": {"$in": [self._runs.get(r)["_id"] for r in run_ids]}}
        return self._runs.find(None, task_name, None, 0, **filters)

    def _active_run(self) -> ObjectId | None:
        ref = active_run()
        if ref is None or ref.project != self.project_name:
            return None
        return ObjectId(ref.run_id)

    def _note_datasets(self, records: list[Record]) -> None:
        run = self._active_run()
        if run is None:
            return
        for record in records:
            self._runs.record_dataset(run, {"dataset_name": record.name, "version": record.version,
                                            "sha256": record.sha256, "id": record.id})

    # -- logs and metrics ----------------------------------------------------------------------
    def save_training_log(self, **kwargs: Any) -> ObjectId:
        """``hub.save_training_log(epoch=1, loss=0.3, model_name="mlp")``"""
        return self._logs.save_log("training", kwargs)

    def save_validation_log(self, **kwargs: Any) -> ObjectId:
        """``hub.save_validation_log(epoch=1, accuracy=0.9)``"""
        return self._logs.save_log("validation", kwargs)

    def save_testing_log(self, **kwargs: Any) -> ObjectId:
        """``hub.save_testing_log(accuracy=0.91)``"""
        return self._logs.save_log("testing", kwargs)

    def delete_training_log(self, **kwargs: Any) -> int:
        """Delete matching training logs; how many went: ``hub.delete_training_log(model_name="mlp")``."""
        return self._logs.delete_logs("training", kwargs)

    def delete_validation_log(self, **kwargs: Any) -> int:
        """Delete matching validation logs; how many went."""
        return self._logs.delete_logs("validation", kwargs)

    def delete_testing_log(self, **kwargs: Any) -> int:
        """Delete matching testing logs; how many went."""
        return self._logs.delete_logs("testing", kwargs)

    def find_logs(self, kind: str | None = None, sort: Any = None, **kwargs: Any) -> Any:
        """Logs as a pandas DataFrame, oldest first: ``hub.find_logs("training", model_name="mlp")``."""
        return self._logs.find_logs(kind, kwargs, sort)

    def log_metrics(self, run: str, step: int | None = None, epoch: int | None = None, **values: Any) -> None:
        """One metrics point: ``hub.log_metrics("run-1", step=10, loss=0.2)``."""
        self._logs.log_metrics(run, step, epoch, **values)

    def log_metric_rows(self, run: str, rows: Iterable[Mapping[str, Any]]) -> int:
        """Many metrics points in one round trip: ``[{"step": 1, "loss": 0.3}, ...]``."""
        return self._logs.log_metric_rows(run, rows)

    def find_metrics(self, run: str | None = None, **kwargs: Any) -> Any:
        """Metrics as a DataFrame ordered by run and step: ``hub.find_metrics(run="run-1")``."""
        return self._logs.find_metrics(run, **kwargs)

    def delete_metrics(self, run: str | None = None, **kwargs: Any) -> int:
        """Delete a run's (or matching) metrics points; how many went."""
        return self._logs.delete_metrics(run, **kwargs)

    # -- tasks: the distributor's side ---------------------------------------------------------
    def create_task(self, task_name: str, script: str | os.PathLike[str] | None = None,
                    hyper_parameters: Mapping[str, Any] | None = None,
                    saved_result_keys: Iterable[str] | str | None = None, **kwargs: Any) -> ObjectId:
        """Queue one run of ``script`` (a file, stored with the task) with these hyperparameters.

        Options: ``source=`` (code text instead of a file), ``function=`` (a callable, shipped with
        dill; runners need ``--allow-pickle``), ``priority=`` (higher first), ``max_attempts=3``,
        ``timeout=`` seconds; other kwargs are queryable fields of the task.

        >>> task_id = hub.create_task("mnist", script="train.py", hyper_parameters={"n_units": 800},
        ...                           saved_result_keys=["test_accuracy"], priority=5, timeout=3600)
        >>> hub.get_task(task_id).status
        'pending'
        """
        return self.queue.create(task_name, script, hyper_parameters, saved_result_keys, **kwargs)

    def create_grid_tasks(self, task_name: str, script: str | os.PathLike[str] | None = None,
                          grid: Mapping[str, Sequence[Any]] | None = None,
                          hyper_parameters: Mapping[str, Any] | None = None, repeat: int = 1,
                          **kwargs: Any) -> list[ObjectId]:
        """One task per combination of ``grid`` (merged over fixed ``hyper_parameters``); ``repeat=3``
        queues each combination three times (field ``repeat`` = 0, 1, 2), as AIQC's repeats. The
        whole sweep is checked first, then queued in one insert with one wake-up of the runners.

        >>> ids = hub.create_grid_tasks("sweep", "train.py", grid={"n_units": [200, 800], "lr": [0.1, 0.01]},
        ...                             saved_result_keys=["test_accuracy"])
        >>> len(ids)
        4
        """
        spec, fields = TaskSpec.split(task_name, script, kwargs)
        count = _repeats(repeat)
        base = checked_hyper_parameters(hyper_parameters)
        variants = [({**base, **combo}, {**fields, "repeat": r} if count > 1 else fields)
                    for combo in search.grid(grid or {}) for r in range(count)]
        return self.queue.create_many(spec, variants)

    def create_random_tasks(self, task_name: str, script: str | os.PathLike[str] | None = None,
                            grid: Mapping[str, Sequence[Any]] | None = None, n: int | None = None,
                            fraction: float | None = None, seed: int | None = None,
                            hyper_parameters: Mapping[str, Any] | None = None, **kwargs: Any) -> list[ObjectId]:
        """Tasks for ``n`` distinct random combinations of ``grid`` (or a ``fraction`` of it), queued
        in one insert like :meth:`create_grid_tasks`."""
        spec, fields = TaskSpec.split(task_name, script, kwargs)
        base = checked_hyper_parameters(hyper_parameters)
        return self.queue.create_many(spec, [({**base, **combo}, fields)
                                             for combo in search.sample(grid or {}, n, fraction, seed)])

    def check_unfinished_task(self, task_name: str | None = None, **kwargs: Any) -> bool:
        """True while any matching task is pending or running."""
        return self.queue.has_unfinished(task_name, **kwargs)

    def wait_for_tasks(self, task_name: str | None = None, timeout: float | None = None,
                       poll_interval: float = defaults.WAIT_POLL_INTERVAL, progress: bool = True,
                       **kwargs: Any) -> dict[str, int]:
        """Block (with a progress bar) until no matching task is pending or running.

        Returns the counts per status; raises :class:`~tensorhub.errors.WaitTimeout` after ``timeout`` s.
        """
        return self.queue.wait(task_name, timeout, poll_interval, progress, **kwargs)

    def find_tasks(self, task_name: str | None = None, sort: Any = None, *, limit: int = 0, skip: int = 0,
                   **kwargs: Any) -> list[Task]:
        """Tasks (status, attempts, times, runner, result, error), oldest first unless ``sort``;
        ``skip`` and ``limit`` page through them (``limit=0``: all).

        >>> [t.result for t in hub.find_tasks("mnist", status="finished")]
        [{'test_accuracy': 0.5}]
        >>> hub.find_tasks("mnist", status="finished", sort=[("_id", -1)], limit=10, skip=1)   # page 2
        []
        """
        return self.queue.find(task_name, sort, limit, False, skip, **kwargs)

    def get_task(self, task_id: ObjectId | str) -> Task:
        """One task by id (:class:`~tensorhub.errors.NotFound` if there is none)."""
        return self.queue.get(task_id)

    def task_counts(self, task_name: str | None = None, **kwargs: Any) -> dict[str, int]:
        """How many matching tasks are in each status."""
        return self.queue.counts(task_name, **kwargs)

    def task_output(self, task_id: ObjectId | str) -> str:
        """The full stdout/stderr of the task's last attempt on a runner."""
        return self.queue.output(task_id)

    def runners(self, as_frame: bool = False) -> Any:
        """The fleet: every registered runner (running, lost, or stopped), as records or a DataFrame
        (host, GPUs, state, heartbeat age, tasks done and failed, slot → task).

        >>> [r.state for r in hub.runners()]
        []
        """
        records = self.fleet.list()
        if not as_frame:
            return records
        return _runners_frame(records)

    def queue_summary(self, as_frame: bool = False) -> Any:
        """Per task name: tasks in each status and the oldest pending one's age in seconds."""
        rows = self.queue.summary()
        now = dt.datetime.now(dt.timezone.utc)
        for row in rows:
            oldest = row.pop("oldest_pending")
            row["oldest_pending_age"] = None if oldest is None else (now - as_utc(oldest)).total_seconds()
        if not as_frame:
            return rows
        import pandas as pd

        return pd.DataFrame(rows, columns=["task_name", "pending", "running", "finished", "failed", "cancelled",
                                           "oldest_pending_age"])

    def cancel_tasks(self, task_name: str | None = None, **kwargs: Any) -> int:
        """Cancel pending and running tasks; runners kill running ones within a heartbeat."""
        return self.queue.cancel(task_name, **kwargs)

    def requeue_tasks(self, task_name: str | None = None, statuses: Iterable[str] = ("failed",),
                      **kwargs: Any) -> int:
        """Put failed (or ``statuses``) tasks back to pending with a fresh ``max_attempts`` budget."""
        return self.queue.requeue(task_name, statuses, **kwargs)

    def delete_tasks(self, task_name: str | None = None, **kwargs: Any) -> int:
        """Delete matching tasks (cancelling running ones) with their claims and stored output."""
        return self.queue.delete(task_name, **kwargs)

    def run_top_task(self, task_name: str | None = None, sort: Any = None,
                     lease_seconds: float = defaults.LEASE_SECONDS, allow_pickle: bool = False,
                     **kwargs: Any) -> Task | None:
        """Claim the top pending task and run it in this process; the task as it ended, or ``None``.

        >>> for n in (2, 4, 8):
        ...     _ = hub.create_task("demo", source="score = n * 2", hyper_parameters={"n": n},
        ...                         saved_result_keys="score")
        >>> hub.run_top_task("demo", sort=[("time", -1)]).result   # the newest first
        {'score': 16}
        >>> while hub.run_top_task("demo"):                        # TensorLayer's worker loop
        ...     pass
        >>> hub.task_counts("demo")["finished"]
        3
        """
        self.queue.reap_expired()  # a crashed worker's task comes back before we look
        claim = self.queue.claim_next(runner_identity(), lease_seconds, task_name, kwargs, allow_pickle, sort)
        return None if claim is None else local.run_claim(self.queue, claim, lambda: self)

    def run_tasks(self, task_name: str | None = None, max_tasks: int | None = None,
                  allow_pickle: bool = False, **kwargs: Any) -> int:
        """Run pending tasks in this process until none are left (the embedded store's runner)."""
        count = 0
        while (max_tasks is None or count < max_tasks) and self.run_top_task(
                task_name, allow_pickle=allow_pickle, **kwargs):
            count += 1
        return count

    # -- housekeeping --------------------------------------------------------------------------
    def find_orphan_blobs(self, older_than: dt.timedelta = dt.timedelta(hours=24)) -> list[ObjectId]:
        """This project's blobs nothing references (left by crashed saves), older than ``older_than``.

        Keep ``older_than`` longer than your slowest upload: chunks of an upload still in flight
        look exactly like those of a crashed one.
        """
        return list(self._blobs.iter_orphans(self._referenced, older_than))

    def delete_orphan_blobs(self, older_than: dt.timedelta = dt.timedelta(hours=24)) -> int:
        """Delete what :meth:`find_orphan_blobs` finds; returns how many blobs went."""
        return self._blobs.delete_orphans(self._referenced, older_than)


_POSITIONAL = ("ip", "port", "dbname", "username", "password", "project_name")


def _tensorlayer_positional(values: list[Any], keywords: dict[str, Any]) -> dict[str, Any]:
    """Map positional arguments in TensorLayer's order onto their names, refusing doubles."""
    given = list(values)
    if len(given) > len(_POSITIONAL):
        raise InvalidArgument("TensorHub takes at most (ip, port, dbname, username, password, project_name) "
                              "positionally, as TensorLayer does; or use keywords: TensorHub(ip='localhost', "
                              "port=27017, dbname='temp', project_name='tutorial')")
    named = dict(zip(_POSITIONAL, given, strict=False))  # fewer values than names is fine
    for key, value in keywords.items():
        if value is not None and key in named and named[key] != value:
            raise InvalidArgument(f"{key} given both by position and by keyword; use keywords: TensorHub("
                                  "ip='localhost', port=27017, dbname='temp', project_name='tutorial')")
        named.setdefault(key, value)
    return named  # every name present: the keywords filled what was not given by position


def _runners_frame(records: list[RunnerRecord]) -> Any:
    import pandas as pd

    rows = [{"runner_id": r.id, "host": r.host, "pid": r.pid, "state": r.state, "gpus": ",".join(r.gpus),
             "slots": "; ".join(f"{s.get('gpu') or s.get('slot')}→{s.get('task_name') or '-'}" for s in r.slots),
             "heartbeat_age": r.heartbeat_age, "tasks_done": r.tasks_done, "tasks_failed": r.tasks_failed,
             "version": r.version, "started_at": r.started_at} for r in records]
    return pd.DataFrame(rows, columns=["runner_id", "host", "pid", "state", "gpus", "slots", "heartbeat_age",
                                       "tasks_done", "tasks_failed", "version", "started_at"])


def _non_negative(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidArgument(f"{name} must be a non-negative integer, got {value!r}")
    return value


def _repeats(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidArgument(f"repeat must be a positive integer, got {value!r}")
    return value


