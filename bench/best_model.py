"""``get_best_model`` and ``list_models_grouped_by_epoch_metric`` over 10,000 runs of 50 epochs.

    python bench/best_model.py                        # FerretDB/SQLite, and FerretDB/PostgreSQL when
                                                      # tests/postgres.py finds PostgreSQL's programs
    python bench/best_model.py --backends sqlite      # only FerretDB/SQLite
    python bench/best_model.py --uri mongodb://localhost:27017/bench?directConnection=true   # also MongoDB
    python bench/best_model.py --runs 1000            # a quick look

The data: 10,000 finished runs (hyperparameters lr, units, optimizer, dropout), each with 50
epochs of loss, val_loss and val_accuracy, written as the library writes them: every run goes
through ``RunStore.create``, ``Run.log_epoch`` x 50 and ``Run.close`` against an in-memory
stand-in of the two collections (``start_run`` + ``log_epoch`` is two round trips per epoch,
hours for 500,000 epochs), and the documents it captured (10,000 runs, 500,000 one-epoch buckets)
are then inserted with ``insert_many``.

Then, per backend: the wall time of each query (best and median of --repeat), and the server
commands it sends, counted by a ``pymongo.monitoring.CommandListener`` with the documents and
bytes of their replies: a figure that does not depend on the server's speed and holds on MongoDB.
"""
from __future__ import annotations

import argparse
import math
import os
import random
import statistics
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import bson
from bson import ObjectId
from pymongo import monitoring

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from tensorhub import TensorHub  # noqa: E402
from tensorhub.project import Project  # noqa: E402
from tensorhub.runs import analysis, metrics  # noqa: E402
from tensorhub.runs.run import Run  # noqa: E402
from tensorhub.runs.store import RunStore  # noqa: E402

METRIC = "val_accuracy"


# -- counting what a query sends ---------------------------------------------------------------

class Commands(monitoring.CommandListener):
    """Counts the commands sent while ``recording``: names, documents and bytes in the replies."""

    def __init__(self) -> None:
        self.recording = False
        self.names: Counter[str] = Counter()
        self.documents = 0
        self.reply_bytes = 0
        self.runs_projection: Any = None   # what the runs query asked for (None: whole documents)

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if self.recording:
            self.names[event.command_name] += 1
            if event.command_name == "find" and event.command.get("find") == "runs":
                self.runs_projection = event.command.get("projection")

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        if not self.recording:
            return
        cursor = event.reply.get("cursor") or {}
        self.documents += len(cursor.get("firstBatch") or cursor.get("nextBatch") or [])
        self.reply_bytes += len(bson.encode(event.reply))

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    @contextmanager
    def record(self) -> Iterator[Commands]:
        self.names, self.documents, self.reply_bytes = Counter(), 0, 0
        self.runs_projection: Any = None
        self.recording = True
        try:
            yield self
        finally:
            self.recording = False


COMMANDS = Commands()
monitoring.register(COMMANDS)  # before any client exists: listeners apply to clients created later


# -- making the data as the library writes it ----------------------------------------------------

class Memory:
    """The part of a pymongo collection that RunStore, Run and MetricSeries use to write a run."""

    def __init__(self) -> None:
        self.docs: dict[ObjectId, dict[str, Any]] = {}

    def insert_one(self, doc: dict[str, Any]) -> SimpleNamespace:
        doc.setdefault("_id", ObjectId())
        self.docs[doc["_id"]] = doc
        return SimpleNamespace(inserted_id=doc["_id"])

    def find_one(self, query: dict[str, Any], projection: Any = None) -> dict[str, Any] | None:
        doc = self.docs.get(query["_id"])
        return doc if doc is not None and all(doc.get(k) == v for k, v in query.items() if k != "_id") else None

    def update_one(self, query: dict[str, Any], update: dict[str, Any]) -> SimpleNamespace:
        doc = self.find_one(query)
        if doc is not None:
            for path, value in update["$set"].items():
                *parents, name = path.split(".")
                target = doc
                for parent in parents:
                    target = target.setdefault(parent, {})
                target[name] = value
        return SimpleNamespace(matched_count=int(doc is not None))


def make_runs(project: str, runs: int, epochs: int, seed: int = 0) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``runs`` finished runs of ``epochs`` epochs: (run documents, metric buckets) as the library writes them."""
    rng = random.Random(seed)
    memory = {"runs": Memory(), "run_metrics": Memory()}
    store = RunStore(memory, Project(project))  # type: ignore[arg-type]  # the stand-in is duck-typed
    for _ in range(runs):
        hp = {"lr": 10 ** rng.uniform(-4, -1), "units": rng.choice([32, 64, 128, 256, 512, 1024]),
              "optimizer": rng.choice(["adam", "sgd", "rmsprop"]), "dropout": round(rng.uniform(0, 0.5), 2)}
        ceiling = 0.6 + 0.35 * rng.random()
        run = Run(store, store.create("sweep", hp), checkpoints=None)  # type: ignore[arg-type]
        for epoch in range(1, epochs + 1):
            accuracy = ceiling * (1 - math.exp(-epoch / 8)) + rng.gauss(0, 0.01)
            loss = 2.0 * math.exp(-epoch / 10) + rng.random() * 0.05
            run.log_epoch(epoch, loss=loss, val_loss=loss * 1.1 + rng.random() * 0.05, val_accuracy=accuracy)
        run.close()
    return list(memory["runs"].docs.values()), list(memory["run_metrics"].docs.values())


# -- the backends --------------------------------------------------------------------------------

@contextmanager
def ferretdb_sqlite() -> Iterator[str]:
    from ferretdb import FerretDBServer

    with FerretDBServer() as server:
        yield server.uri + "/bench"


@contextmanager
def ferretdb_postgresql() -> Iterator[str]:
    from ferretdb import FerretDBServer
    from postgres import PostgresServer

    with PostgresServer() as postgres, FerretDBServer(handler="postgresql", postgresql_url=postgres.url) as server:
        yield server.uri + "/bench"


def postgres_available() -> bool:
    try:
        from postgres import find_postgres_bindir

        find_postgres_bindir()
        return True
    except Exception as error:  # no tests/postgres.py, or no PostgreSQL programs
        print(f"FerretDB/PostgreSQL skipped: {error}")
        return False


# -- one backend ---------------------------------------------------------------------------------

def timed(call: Callable[[], Any], repeat: int) -> tuple[list[float], Any]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = call()
        times.append(time.perf_counter() - start)
    return times, result


def measure(label: str, uri: str, runs: list[dict[str, Any]], buckets: list[dict[str, Any]], project: str,
            repeat: int, clean_up: bool) -> dict[str, Any]:
    hub = TensorHub(uri, project_name=project)  # creates the indexes
    try:
        start = time.perf_counter()
        for i in range(0, len(runs), 1000):
            hub.db["runs"].insert_many(runs[i:i + 1000], ordered=False)
        for i in range(0, len(buckets), 10_000):
            hub.db["run_metrics"].insert_many(buckets[i:i + 10_000], ordered=False)
        populate = time.perf_counter() - start
        print(f"[{label}] inserted {len(runs):,} runs and {len(buckets):,} buckets in {populate:.0f} s", flush=True)

        result: dict[str, Any] = {"label": label, "populate_seconds": populate}
        queries = {
            "get_best_model": lambda: hub.get_best_model(METRIC, "max"),
            "list_models_grouped_by_epoch_metric": lambda: hub.list_models_grouped_by_epoch_metric(METRIC, "max"),
        }
        for name, call in queries.items():
            with COMMANDS.record() as sent:  # the first call, counted (counting costs little next to the call)
                first, answer = timed(call, 1)
            times = first + timed(call, repeat - 1)[0]
            result[name] = {"best": min(times), "median": statistics.median(times), "commands": dict(sent.names),
                            "documents": sent.documents, "reply_bytes": sent.reply_bytes, "answer": answer,
                            "projection": sent.runs_projection}
            print(f"[{label}] {name}: best {min(times):.2f} s, median {statistics.median(times):.2f} s", flush=True)
        result["parts"] = parts(hub, repeat)
        return result
    finally:
        if clean_up:  # a server of the user's (--uri); a server started here goes away with its data
            for name, docs in (("runs", runs), ("run_metrics", buckets)):
                for i in range(0, len(docs), 5000):  # FerretDB/SQLite: one SQL variable per document deleted
                    hub.db[name].delete_many({"_id": {"$in": [doc["_id"] for doc in docs[i:i + 5000]]}})
        hub.close()


def parts(hub: TensorHub, repeat: int) -> dict[str, float]:
    """Where get_best_model's time goes, step by step through the stores it uses (best of ``repeat``).

    Reaches into the hub (``_runs``) to time the runs query with and without the ranking
    projection, whichever of the two the hub itself sends.
    """
    store = hub._runs
    full, docs = timed(lambda: store.find(None, None, None, 0), repeat)
    projected, _ = timed(lambda: store.find(None, None, None, 0, analysis.ranking_fields(METRIC)), repeat)
    ranking, table = timed(lambda: analysis.grouped_by_epoch_metric(docs, METRIC, "max"), repeat)
    top = ObjectId(table.iloc[0]["run_id"])
    epoch = int(table.iloc[0]["epoch"])
    lookup, _ = timed(lambda: metrics.read_points(store.metrics, [top], "epoch", at=epoch), 1)
    return {"runs query, whole documents": min(full), "runs query, ranking projection": min(projected),
            "ranking (Python)": min(ranking), "the best epoch's bucket": min(lookup)}


def check(runs: list[dict[str, Any]], result: dict[str, Any]) -> None:
    """The answers are the right ones (computed here from the documents)."""
    best_doc = max(runs, key=lambda doc: doc["summary"][METRIC]["max"])
    best = result["get_best_model"]["answer"]
    assert best.run_id == best_doc["_id"] and best.epoch == best_doc["summary"][METRIC]["max_epoch"], best
    assert best.metrics[METRIC] == best_doc["summary"][METRIC]["max"]
    grouped = result["list_models_grouped_by_epoch_metric"]["answer"]
    assert len(grouped) == len(runs) and grouped["run_id"].iloc[0] == str(best_doc["_id"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3, help="calls of each query (at least 1)")
    parser.add_argument("--backends", default="sqlite,postgresql",
                        help="which FerretDB backends to start: sqlite, postgresql (comma-separated; '' for none)")
    parser.add_argument("--uri", action="append", default=[], help="another server (with a database); repeatable")
    args = parser.parse_args()

    project = f"bench-{uuid.uuid4().hex[:6]}"
    start = time.perf_counter()
    runs, buckets = make_runs(project, args.runs, args.epochs)
    print(f"made {len(runs):,} runs and {len(buckets):,} buckets through RunStore/Run in "
          f"{time.perf_counter() - start:.0f} s (a run document: {len(bson.encode(runs[0])):,} bytes)", flush=True)

    wanted = {name.strip() for name in args.backends.split(",") if name.strip()}
    backends: list[tuple[str, Callable[[], Any]]] = []
    if "sqlite" in wanted:
        backends.append(("FerretDB/SQLite", ferretdb_sqlite))
    if "postgresql" in wanted and postgres_available():
        backends.append(("FerretDB/PostgreSQL", ferretdb_postgresql))
    results = []
    for label, start_server in backends:
        with ExitStack() as stack:
            uri = stack.enter_context(start_server())
            results.append(measure(label, uri, runs, buckets, project, args.repeat, clean_up=False))
    for i, uri in enumerate(args.uri, 1):
        results.append(measure(f"--uri #{i}", uri, runs, buckets, project, args.repeat, clean_up=True))
    for result in results:
        check(runs, result)

    print(f"\n{args.runs:,} runs x {args.epochs} epochs; machine: {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"{'backend':<22}{'query':<38}{'best s':>8}{'median s':>10}")
    for result in results:
        for name in ("get_best_model", "list_models_grouped_by_epoch_metric"):
            figures = result[name]
            print(f"{result['label']:<22}{name:<38}{figures['best']:>8.2f}{figures['median']:>10.2f}")
    print("\nwhere get_best_model's time goes (best s):")
    for result in results:
        print(f"  {result['label']:<22}" + "; ".join(f"{part} {seconds:.2f}" for part, seconds in result["parts"].items()))
    print("\nserver commands per query (the same on any server, up to how it sizes cursor batches):")
    for name in ("get_best_model", "list_models_grouped_by_epoch_metric"):
        figures = results[0][name] if results else None
        if figures is not None:
            listing = ", ".join(f"{command} x{count}" for command, count in sorted(figures["commands"].items()))
            fields = "whole documents" if figures["projection"] is None else "projection " + ", ".join(figures["projection"])
            print(f"  {name}: {sum(figures['commands'].values())} commands ({listing}); "
                  f"{figures['documents']:,} documents, {figures['reply_bytes'] / 2**20:.1f} MiB of replies; "
                  f"runs read as {fields}")


if __name__ == "__main__":
    main()
