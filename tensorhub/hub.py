"""``TensorHub``: the one object users hold. It wires the stores together and keeps TensorLayer's
method names; the work happens in ``records``, ``logs``, ``tasks`` and ``blobs``.
"""
from __future__ import annotations

import datetime as dt
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from bson import ObjectId
from pymongo.database import Database

from tensorhub.blobs import BlobStore
from tensorhub.connection import Connection, build_uri, connect
from tensorhub.errors import InvalidArgument
from tensorhub.fields import normalize_sort
from tensorhub.logs import LogStore
from tensorhub.records import Record, RecordStore
from tensorhub.tasks import local, search
from tensorhub.tasks.claims import runner_identity
from tensorhub.tasks.queue import TaskQueue

_indexed: set[tuple[int, str]] = set()
_indexed_lock = threading.Lock()


class TensorHub:
    """A project's view of one MongoDB database: datasets, models, logs, metrics and tasks.

    >>> hub = TensorHub("mongomock://", project_name="mnist")        # embedded, nothing to install
    >>> hub = TensorHub("mongodb://user:pw@hub.lab:27017/ml?authSource=admin", project_name="mnist")
    >>> hub = TensorHub(ip="localhost", port=27017, dbname="temp", username="ann", password="pw",
    ...                 project_name="tutorial")                       # TensorLayer's form
    """

    def __init__(self, uri: str | None = None, project_name: str = "default", *,
                 ip: str | None = None, port: int = 27017, dbname: str = "tensorhub",
                 username: str | None = None, password: str | None = None,
                 auth_source: str | None = None, timeout_ms: int = 5000, **client_options: Any) -> None:
        if not isinstance(project_name, str) or not project_name:
            raise InvalidArgument(f"project_name must be a non-empty string, got {project_name!r}")
        if uri is None:
            uri = build_uri(ip or "localhost", port, dbname, username, password, auth_source)
        elif ip is not None or username is not None:
            raise InvalidArgument("give either uri or ip/port/dbname/username/password, not both")
        self._connection: Connection = connect(uri, timeout_ms=timeout_ms, **client_options)
        self.uri = uri
        self.project_name = project_name
        self.db: Database = self._connection.db
        self.blobs = BlobStore(self.db, project_name)
        self.datasets = RecordStore(self.db["datasets"], self.blobs, project_name, dedupe=True)
        self.models = RecordStore(self.db["models"], self.blobs, project_name, dedupe=False)
        self.logs = LogStore(self.db, project_name)
        self.tasks = TaskQueue(self.db, self.blobs, project_name)
        self._ensure_indexes()

    def _ensure_indexes(self) -> None:
        key = (id(self._connection.client), self.db.name)
        with _indexed_lock:
            if key in _indexed:
                return
            for store in (self.blobs, self.datasets, self.models, self.logs, self.tasks):
                store.ensure_indexes()
            _indexed.add(key)

    @property
    def embedded(self) -> bool:
        """True for the in-process ``mongomock://`` store."""
        return self._connection.embedded

    def close(self) -> None:
        """Close the client (the embedded store is shared in-process and stays)."""
        if not self.embedded:
            with _indexed_lock:
                _indexed.discard((id(self._connection.client), self.db.name))
            self._connection.client.close()

    def __enter__(self) -> "TensorHub":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"TensorHub({self._connection.display_uri!r}, project_name={self.project_name!r})"

    # -- datasets ------------------------------------------------------------------------------
    def save_dataset(self, dataset: Any, dataset_name: str, allow_pickle: bool = False, **kwargs: Any) -> Record:
        """Store arrays / tuples / dicts of arrays / DataFrames under ``dataset_name``.

        Same content as an existing version returns that version; new content is the next version.

        >>> hub.save_dataset((X_train, y_train, X_test, y_test), "mnist", description="digits")
        """
        return self.datasets.save(dataset, dataset_name, allow_pickle, **kwargs)

    def find_top_dataset(self, dataset_name: str | None = None, sort: Any = None,
                         allow_pickle: bool = False, **kwargs: Any) -> Any:
        """The best-matching dataset, loaded (newest unless ``sort``/``version`` say otherwise); ``None`` if none.

        >>> X_train, y_train, X_test, y_test = hub.find_top_dataset("mnist")
        >>> old = hub.find_top_dataset("mnist", version=1)
        """
        record = self.datasets.find_top(dataset_name, sort, **kwargs)
        return None if record is None else record.load(allow_pickle)

    def find_datasets(self, dataset_name: str | None = None, allow_pickle: bool = False,
                      **kwargs: Any) -> list[Any]:
        """All matching datasets, loaded, newest first (use :meth:`list_datasets` to skip loading)."""
        return [record.load(allow_pickle) for record in self.datasets.find(dataset_name, **kwargs)]

    def list_datasets(self, dataset_name: str | None = None, sort: Any = None, **kwargs: Any) -> list[Record]:
        """Matching dataset records (name, version, fields, size) without reading any bytes."""
        return self.datasets.find(dataset_name, sort, **kwargs)

    def delete_datasets(self, dataset_name: str | None = None, **kwargs: Any) -> int:
        """Delete matching datasets and their bytes; returns how many went.

        >>> hub.delete_datasets("mnist", version={"$lt": 3})
        """
        return self.datasets.delete(dataset_name, **kwargs)

    # -- models --------------------------------------------------------------------------------
    def save_model(self, network: Any, model_name: str = "model", allow_pickle: bool = False,
                   **kwargs: Any) -> Record:
        """Store a tf.keras model (or a list/dict of weight arrays) with queryable metadata.

        >>> hub.save_model(model, model_name="mlp", test_accuracy=0.97, hp={"n_units": 800})
        """
        return self.models.save(network, model_name, allow_pickle, **kwargs)

    def find_top_model(self, sort: Any = None, model_name: str | None = "model",
                       allow_pickle: bool = False, **kwargs: Any) -> Any:
        """The best-matching model, loaded, or ``None``. Its fields ride along on the object.

        >>> net = hub.find_top_model(sort=[("test_accuracy", -1)], model_name="mlp")
        >>> net._test_accuracy, net.hub_record.version
        """
        record = self.models.find_top(model_name, sort, **kwargs)
        if record is None:
            return None
        return attach_record(record.load(allow_pickle), record)

    def list_models(self, model_name: str | None = None, sort: Any = None, **kwargs: Any) -> list[Record]:
        """Matching model records without loading weights; ``record.load()`` loads one."""
        return self.models.find(model_name, sort, **kwargs)

    def delete_model(self, model_name: str | None = None, **kwargs: Any) -> int:
        """Delete matching models and their bytes; returns how many went."""
        return self.models.delete(model_name, **kwargs)

    # -- logs and metrics ----------------------------------------------------------------------
    def save_training_log(self, **kwargs: Any) -> ObjectId:
        """``hub.save_training_log(epoch=1, loss=0.3, model_name="mlp")``"""
        return self.logs.save_log("training", kwargs)

    def save_validation_log(self, **kwargs: Any) -> ObjectId:
        return self.logs.save_log("validation", kwargs)

    def save_testing_log(self, **kwargs: Any) -> ObjectId:
        return self.logs.save_log("testing", kwargs)

    def delete_training_log(self, **kwargs: Any) -> int:
        return self.logs.delete_logs("training", kwargs)

    def delete_validation_log(self, **kwargs: Any) -> int:
        return self.logs.delete_logs("validation", kwargs)

    def delete_testing_log(self, **kwargs: Any) -> int:
        return self.logs.delete_logs("testing", kwargs)

    def find_logs(self, kind: str | None = None, **kwargs: Any) -> Any:
        """Logs as a pandas DataFrame: ``hub.find_logs("training", model_name="mlp")``."""
        return self.logs.find_logs(kind, kwargs)

    def log_metrics(self, run: str, step: int | None = None, epoch: int | None = None, **values: Any) -> None:
        """One metrics point: ``hub.log_metrics("run-1", step=10, loss=0.2)``."""
        self.logs.log_metrics(run, step, epoch, **values)

    def log_metric_rows(self, run: str, rows: Iterable[Mapping[str, Any]]) -> int:
        return self.logs.log_metric_rows(run, rows)

    def find_metrics(self, run: str | None = None, **kwargs: Any) -> Any:
        """Metrics as a DataFrame ordered by run and step: ``hub.find_metrics(run="run-1")``."""
        return self.logs.find_metrics(run, **kwargs)

    def delete_metrics(self, run: str | None = None, **kwargs: Any) -> int:
        return self.logs.delete_metrics(run, **kwargs)

    # -- tasks: the distributor's side ---------------------------------------------------------
    def create_task(self, task_name: str, script: str | os.PathLike[str] | None = None,
                    hyper_parameters: dict[str, Any] | None = None,
                    saved_result_keys: Iterable[str] | None = None, **kwargs: Any) -> ObjectId:
        """Queue one run of ``script`` (a file, stored with the task) with these hyperparameters.

        Options: ``source=`` (code text instead of a file), ``function=`` (a callable, shipped with
        dill; runners need ``--allow-pickle``), ``priority=`` (higher first), ``max_attempts=3``,
        ``timeout=`` seconds; other kwargs are queryable fields of the task.

        >>> hub.create_task("mnist", script="train.py", hyper_parameters={"n_units": 800},
        ...                 saved_result_keys=["test_accuracy"], priority=5, timeout=3600)
        """
        return self.tasks.create(task_name, script, hyper_parameters, saved_result_keys, **kwargs)

    def create_grid_tasks(self, task_name: str, script: str | os.PathLike[str] | None = None,
                          grid: Mapping[str, Sequence[Any]] | None = None,
                          hyper_parameters: dict[str, Any] | None = None, **kwargs: Any) -> list[ObjectId]:
        """One task per combination of ``grid`` (merged over fixed ``hyper_parameters``).

        >>> hub.create_grid_tasks("mnist", "train.py", grid={"n_units": [200, 800], "lr": [0.1, 0.01]},
        ...                       saved_result_keys=["test_accuracy"])          # 4 tasks
        """
        return [self.create_task(task_name, script, {**(hyper_parameters or {}), **combo}, **kwargs)
                for combo in search.grid(grid or {})]

    def create_random_tasks(self, task_name: str, script: str | os.PathLike[str] | None = None,
                            grid: Mapping[str, Sequence[Any]] | None = None, n: int | None = None,
                            fraction: float | None = None, seed: int | None = None,
                            hyper_parameters: dict[str, Any] | None = None, **kwargs: Any) -> list[ObjectId]:
        """Tasks for ``n`` distinct random combinations of ``grid`` (or a ``fraction`` of it)."""
        return [self.create_task(task_name, script, {**(hyper_parameters or {}), **combo}, **kwargs)
                for combo in search.sample(grid or {}, n, fraction, seed)]

    def check_unfinished_task(self, task_name: str | None = None, **kwargs: Any) -> bool:
        """True while any matching task is pending or running."""
        return self.tasks.has_unfinished(task_name, **kwargs)

    def wait_for_tasks(self, task_name: str | None = None, timeout: float | None = None,
                       poll_interval: float = 1.0, progress: bool = True, **kwargs: Any) -> dict[str, int]:
        """Block (with a progress bar) until no matching task is pending or running.

        Returns the counts per status; raises :class:`~tensorhub.errors.TaskTimeout` after ``timeout`` s.
        """
        return self.tasks.wait(task_name, timeout, poll_interval, progress, **kwargs)

    def find_tasks(self, task_name: str | None = None, **kwargs: Any) -> list[dict[str, Any]]:
        """Task documents (status, attempts, times, runner, result, error), oldest first.

        >>> [t["result"] for t in hub.find_tasks("mnist", status="finished")]
        """
        return self.tasks.find(task_name, **kwargs)

    def get_task(self, task_id: ObjectId | str) -> dict[str, Any]:
        """One task document by id (:class:`~tensorhub.errors.NotFound` if there is none)."""
        return self.tasks.get(task_id)

    def task_counts(self, task_name: str | None = None, **kwargs: Any) -> dict[str, int]:
        """How many matching tasks are in each status."""
        return self.tasks.counts(task_name, **kwargs)

    def task_output(self, task_id: ObjectId | str) -> str:
        """The full stdout/stderr of the task's last attempt on a runner."""
        return self.tasks.output(task_id)

    def cancel_tasks(self, task_name: str | None = None, **kwargs: Any) -> int:
        """Cancel pending and running tasks; runners kill running ones within a heartbeat."""
        return self.tasks.cancel(task_name, **kwargs)

    def requeue_tasks(self, task_name: str | None = None, statuses: Iterable[str] = ("failed",),
                      **kwargs: Any) -> int:
        """Put failed (or ``statuses``) tasks back to pending with a fresh ``max_attempts`` budget."""
        return self.tasks.requeue(task_name, statuses, **kwargs)

    def delete_tasks(self, task_name: str | None = None, **kwargs: Any) -> int:
        """Delete matching tasks (cancelling running ones) with their claims and stored output."""
        return self.tasks.delete(task_name, **kwargs)

    def run_top_task(self, task_name: str | None = None, sort: Any = None, lease_seconds: float = 60.0,
                     allow_pickle: bool = False, **kwargs: Any) -> dict[str, Any] | None:
        """Claim the top pending task and run it in this process; its final document, or ``None``.

        >>> while hub.run_top_task("mnist"): pass          # TensorLayer's worker loop
        """
        query = self.tasks.query(task_name, kwargs)
        query["code.kind"] = {"$in": ["script", "function"] if allow_pickle else ["script"]}
        order = normalize_sort(sort)
        self.tasks.claims.reap_expired()  # a crashed worker's task comes back before we look
        claim = self.tasks.claims.claim_next(query, runner_identity(), lease_seconds,
                                             None if order is None else order + [("_id", 1)])
        return None if claim is None else local.run_claim(self, claim)

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
        """Blobs nothing references (left by crashed saves) that started uploading before ``older_than``.

        Keep ``older_than`` longer than your slowest upload: chunks of an upload still in flight
        look exactly like those of a crashed one.
        """
        referenced = {bid for store in (self.datasets, self.models) for doc in store.iter_all()
                      for bid in doc.get("blob_ids", [])}
        referenced |= self.tasks.referenced_blob_ids()
        return self.blobs.find_orphans(referenced, older_than)

    def delete_orphan_blobs(self, older_than: dt.timedelta = dt.timedelta(hours=24)) -> int:
        """Delete what :meth:`find_orphan_blobs` finds; returns how many blobs went."""
        orphans = self.find_orphan_blobs(older_than)
        self.blobs.delete(orphans)
        return len(orphans)


class _AttrList(list):  # type: ignore[type-arg]
    """A list that can carry the record's fields as attributes."""


class _AttrDict(dict):  # type: ignore[type-arg]
    """A dict that can carry the record's fields as attributes."""


class _AttrTuple(tuple):  # type: ignore[type-arg]
    """A tuple that can carry the record's fields as attributes."""


def attach_record(obj: Any, record: Record) -> Any:
    """Expose a record on its loaded object: ``obj.hub_record`` and TensorLayer's ``obj._<field>``."""
    wrappers: Sequence[tuple[type, type]] = ((list, _AttrList), (dict, _AttrDict), (tuple, _AttrTuple))
    for plain, wrapped in wrappers:
        if type(obj) is plain:
            obj = wrapped(obj)
    attributes = {"hub_record": record, "_name": record.name, "_version": record.version,
                  "_created_at": record.created_at, "_id": record.id}
    attributes.update({f"_{key}": value for key, value in record.fields.items()})
    try:
        for key, value in attributes.items():
            setattr(obj, key, value)
    except (AttributeError, TypeError):
        pass  # e.g. numpy arrays take no attributes: use list_models() records instead
    return obj
