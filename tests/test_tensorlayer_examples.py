"""TensorLayer's own database examples, ported to tensorhub, run end to end.

Sources (TensorLayer 2.x): ``docs/modules/db.rst`` (the "Tutorials" section) and
``examples/database/{dispatch_tasks,task_script,run_tasks}.py``; their ports are in
``examples/tensorlayer/`` (see its README for the only edits: the import, tf.keras in place of
tl.layers, no TF1 session, offline data).

What is checked is TensorLayer's documented behaviour, which a migrating user relies on:

- ``TensorHub(ip=, port=, dbname=, username=None, password='password', project_name=)`` connects;
- ``save_model(net, accuracy=0.8, loss=2.3, name='second_model')`` stores name/accuracy/loss as
  top-level, queryable fields next to ``model_name`` and ``time``; ``find_top_model(name=...)``
  finds it and the loaded model carries them as ``net._name``, ``net._accuracy``, ...;
- every record gets ``time`` (its creation time), so ``sort=[("time", -1)]`` gives the newest
  data set, model, log and task (``run_top_task(sort=[("time", -1)])`` runs the newest task);
- user kwargs called ``version``, ``description`` or ``time`` are stored as given;
- the distributor/runner example ends with the best model loaded, as TensorLayer prints it.

The examples hard-code TensorLayer's address (``ip='localhost', port=27017, dbname='temp'``);
:func:`stage_examples` copies them and points that one call at the test database, as a user
would edit it.
"""
from __future__ import annotations

import datetime as dt
import re
import runpy
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pymongo import uri_parser

pytest.importorskip("keras", reason="the examples train tf.keras models: pip install 'tensorhub[tensorflow]'")

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "tensorlayer"
DIGITS = ROOT / "examples" / "mnist" / "digits.py"
EXAMPLE_FILES = ("tutorial.py", "dispatch_tasks.py", "task_script.py", "run_tasks.py")
PROJECT = "tutorial"  # TensorLayer's examples use project_name='tutorial'
MODEL_NAMES = ("800-800", "600-600", "400-400")  # the three tasks of dispatch_tasks.py

# The one call each example makes to connect, exactly as TensorLayer wrote it (tutorial.py has
# the docs page's version, with username=None, password='password').
TENSORLAYER_CALL = re.compile(
    r"TensorHub\(ip='localhost', port=27017, dbname='temp',\s*"
    r"(?P<auth>username=None, password='password', )?project_name='tutorial'\)")


# -- helpers ----------------------------------------------------------------------------------------


def tensorlayer_address(uri: str) -> dict[str, Any]:
    """TensorLayer's constructor arguments (ip, port, dbname, ...) for the server of ``uri``.

    The URI's credentials become username/password (and authSource auth_source); its other
    options (directConnection, tls, ...) are passed through as client options.
    """
    parsed = uri_parser.parse_uri(uri)
    (host, port), *others = parsed["nodelist"]
    assert not others, f"TensorLayer's ip/port form names one host, not {parsed['nodelist']}"
    kwargs: dict[str, Any] = {"ip": host, "port": port, "dbname": parsed["database"]}
    if parsed.get("username"):
        kwargs.update(username=parsed["username"], password=parsed["password"])
    for key, value in dict(parsed.get("options") or {}).items():
        if key.lower() == "authsource":
            kwargs["auth_source"] = value
        else:
            kwargs[key] = value
    return kwargs


def point_at(source: str, uri: str) -> str:
    """``source`` with TensorLayer's hard-coded ``TensorHub(ip='localhost', ...)`` aimed at ``uri``.

    On a server the ip/port form is kept (with the server's host, port and database). The
    embedded store has no host or port, so there the call becomes ``TensorHub(uri, ...)``.
    """
    assert len(TENSORLAYER_CALL.findall(source)) == 1, "the example no longer makes TensorLayer's call"

    def replace(match: re.Match[str]) -> str:
        if uri.startswith("mongomock://"):
            return f"TensorHub({uri!r}, project_name='tutorial')"
        kwargs = tensorlayer_address(uri)
        if match["auth"] and "username" not in kwargs:
            kwargs.update(username=None, password="password")  # keep the page's call as it is
        args = ", ".join(f"{key}={value!r}" for key, value in kwargs.items())
        return f"TensorHub({args}, project_name='tutorial')"

    return TENSORLAYER_CALL.sub(replace, source)


def stage_examples(tmp_path: Path, uri: str) -> Path:
    """Copy the examples (and ../mnist/digits.py they import) with the address set to ``uri``."""
    folder = tmp_path / "tensorlayer"
    folder.mkdir()
    (tmp_path / "mnist").mkdir()
    shutil.copy(DIGITS, tmp_path / "mnist" / "digits.py")
    for name in EXAMPLE_FILES:
        (folder / name).write_text(point_at((EXAMPLES / name).read_text(), uri))
    return folder


def open_hub(uri: str) -> Any:
    from tensorhub import TensorHub

    return TensorHub(uri, project_name=PROJECT)


def tiny_model(seed: int = 0) -> Any:
    import keras

    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])  # untrained: no optimizer state


def pause() -> None:
    """Let the clock move on, so that records saved one after another have distinct times
    (MongoDB keeps dates to the millisecond)."""
    time.sleep(0.02)


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.timezone.utc)


def as_utc(value: Any) -> dt.datetime:
    """A stored date as an aware UTC datetime (pandas gives Timestamps, mongomock may give naive)."""
    if hasattr(value, "to_pydatetime"):
        value = value.to_pydatetime()
    assert isinstance(value, dt.datetime), f"not a date: {value!r}"
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


@pytest.fixture
def db(hub: Any) -> Iterator[Any]:
    """The hub under TensorLayer's name for it, in TensorLayer's project ``tutorial``.

    On mongomock TensorLayer's ``TensorHub(ip=..., port=...)`` cannot be used (the embedded
    store has no address), so every backend is opened here with its URI; the ip/port form is
    tested on the real servers (``test_tensorlayer_constructor_*``).
    """
    tutorial = open_hub(hub.uri)
    try:
        yield tutorial
    finally:
        tutorial.close()


# -- the docs page, end to end, on every backend ----------------------------------------------------


def test_database_page_tutorial(store_uri, tmp_path, capsys):
    """docs/modules/db.rst, "Tutorials": connect, data sets, models, logs (examples/tensorlayer/tutorial.py).

    Run in this process so that the embedded store is shared with the checks below.
    """
    folder = stage_examples(tmp_path, store_uri)
    saved_path = list(sys.path)
    try:
        scope = runpy.run_path(str(folder / "tutorial.py"), run_name="__main__")
    finally:
        sys.path[:] = saved_path
    out = capsys.readouterr().out
    assert "dataset: [(500, 784), (500,), (100, 784), (100,)]" in out
    assert "dataset version 1.0: [(100, 784), (100,)]" in out
    assert "datasets named mnist: 2" in out
    assert "found: second_model 0.8 2.3" in out
    assert "newest model: third_model" in out
    assert "oldest model: second_model" in out
    assert "best model: third_model 0.85" in out
    assert "training logs left: [0.44]" in out
    assert "tutorial done" in out
    assert len(scope["datasets"]) == 2

    db = open_hub(store_uri)
    try:
        assert not db.find_top_model()  # db.delete_model() deleted every model of the project
        assert len(db.find_logs()) == 0  # and the three delete_*_log() every log
        X_val, y_val = db.find_top_dataset('mnist', version='1.0')
        np.testing.assert_array_equal(X_val, scope["X_val"])
        np.testing.assert_array_equal(y_val, scope["y_val"])
    finally:
        db.close()


# -- TensorLayer's constructor (real servers only) ---------------------------------------------------
# TensorHub(ip=, port=, dbname=, ...) builds a mongodb:// address; the embedded store has none, so
# these tests run on FerretDB (and MongoDB when TENSORHUB_TEST_URI is set) only.


def test_tensorlayer_constructor_with_password_and_no_username(server_uri):
    """The page's call: ``TensorHub(ip='localhost', port=27017, dbname='temp', username=None,
    password='password', project_name='tutorial')``. TensorLayer connects without authenticating
    when there is no username (its password default is 'password', so this is its usual call)."""
    from tensorhub import TensorHub

    address = tensorlayer_address(server_uri)
    if "username" not in address:
        address.update(username=None, password='password')
    db = TensorHub(**address, project_name='tutorial')
    other = open_hub(server_uri)
    try:
        db.save_dataset(dataset=[np.arange(3)], dataset_name='mnist', description='this is a tutorial')
        np.testing.assert_array_equal(other.find_top_dataset('mnist')[0], np.arange(3))  # same database
    finally:
        db.close()
        other.close()


def test_tensorlayer_constructor_without_project_name(server_uri):
    """``project_name=None`` is TensorLayer's default (it then files everything under the script's
    name). Which name is used is the hub's business; that the call works and keeps the project
    apart from ``tutorial`` is what users rely on."""
    from tensorhub import TensorHub

    address = tensorlayer_address(server_uri)
    db = TensorHub(**address, project_name=None)
    tutorial = open_hub(server_uri)
    try:
        db.save_training_log(accuracy=0.33)
        assert list(db.find_logs("training")["accuracy"]) == [0.33]
        assert len(tutorial.find_logs("training")) == 0
    finally:
        db.close()
        tutorial.close()


# -- behaviours the migration must keep, on every backend ----------------------------------------


def test_save_model_stores_name_accuracy_loss_as_queryable_fields(db):
    net = tiny_model()
    before = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)
    db.save_model(net, accuracy=0.8, loss=2.3, name='second_model')
    after = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=1)

    found = db.find_top_model(name='second_model')
    assert found, "find_top_model(name='second_model') found nothing"
    assert (found._name, found._accuracy, found._loss) == ('second_model', 0.8, 2.3)
    assert found._model_name == 'model'  # TensorLayer's default model_name
    x = np.ones((2, 4), np.float32)
    np.testing.assert_allclose(found.predict(x, verbose=0), net.predict(x, verbose=0), rtol=1e-6)

    assert db.find_top_model(accuracy=0.8, loss=2.3)._name == 'second_model'  # the page's lookup
    assert not db.find_top_model(name='first_model')
    assert not db.find_top_model(accuracy=0.9)

    # The document reads as TensorLayer's did (browse it in Studio3T): the user's fields at the top.
    doc = db.db["models"].find_one({"name": "second_model"})
    assert doc is not None
    assert (doc["accuracy"], doc["loss"], doc["model_name"]) == (0.8, 2.3, 'model')
    assert before <= as_utc(doc["time"]) <= after  # added automatically: the creation time


def test_sort_on_time_finds_the_newest_dataset(db):
    for i in range(3):
        db.save_dataset([np.full(3, i)], 'mnist', description=f'set {i}')
        pause()
    assert db.find_top_dataset('mnist', sort=[("time", -1)])[0].tolist() == [2, 2, 2]
    assert db.find_top_dataset('mnist', sort=[("time", 1)])[0].tolist() == [0, 0, 0]
    doc = db.db["datasets"].find_one({"description": "set 1"})
    assert doc is not None and doc["dataset_name"] == 'mnist' and isinstance(doc["time"], dt.datetime)


def test_sort_on_time_finds_the_newest_model(db):
    for i, name in enumerate(('first_model', 'second_model', 'third_model')):
        db.save_model(tiny_model(i), accuracy=0.5 + i / 10, name=name)
        pause()
    assert db.find_top_model(sort=[("time", -1)])._name == 'third_model'
    assert db.find_top_model(sort=[("time", 1)])._name == 'first_model'
    assert db.find_top_model(sort=[("accuracy", -1)])._name == 'third_model'


def test_sort_on_time_finds_the_newest_logs(db):
    for accuracy in (0.33, 0.44, 0.55):
        db.save_training_log(accuracy=accuracy)
        db.save_validation_log(accuracy=accuracy)
        pause()
    for kind in ("training", "validation"):
        newest_first = db.find_logs(kind, sort=[("time", -1)])
        assert list(newest_first["accuracy"]) == [0.55, 0.44, 0.33]
        times = [as_utc(t) for t in newest_first["time"]]
        assert times == sorted(times, reverse=True)
    db.delete_training_log(accuracy=0.33)
    assert list(db.find_logs("training", sort=[("time", 1)])["accuracy"]) == [0.44, 0.55]


TRACE_SCRIPT = """
with open(trace, "a") as f:
    f.write(f"{n_units1}\\n")
test_accuracy = n_units1 / 1000
"""


def test_run_top_task_sorted_on_time_runs_the_newest_task(db, tmp_path):
    script = tmp_path / "task_script.py"
    script.write_text(TRACE_SCRIPT)
    trace = tmp_path / "trace.txt"
    for n in (800, 600, 400):  # dispatch_tasks.py's order: 400-400 is the newest
        db.create_task(task_name='mnist', script=str(script),
                       hyper_parameters=dict(n_units1=n, n_units2=n, trace=str(trace)),
                       saved_result_keys=['test_accuracy'], description=f'{n}-{n}')
        pause()
    assert db.check_unfinished_task(task_name='mnist')

    db.run_top_task(task_name='mnist', sort=[("time", -1)])  # run_tasks.py's call
    assert trace.read_text().split() == ['400']
    db.run_top_task(task_name='mnist', sort=[("time", 1)])  # the oldest pending one
    assert trace.read_text().split() == ['400', '800']
    db.run_top_task(task_name='mnist', sort=[("time", -1)])
    assert trace.read_text().split() == ['400', '800', '600']
    assert not db.check_unfinished_task(task_name='mnist')

    tasks = {t['description']: t for t in db.find_tasks('mnist')}
    assert {d: t['result'] for d, t in tasks.items()} == {
        '800-800': {'test_accuracy': 0.8}, '600-600': {'test_accuracy': 0.6}, '400-400': {'test_accuracy': 0.4}}
    assert all(t['task_name'] == 'mnist' and isinstance(t['time'], dt.datetime) for t in tasks.values())


def test_dataset_kwargs_version_description_time_are_stored_as_given(db):
    when = utc(2018, 9, 1, 12, 30, 15)
    db.save_dataset(dataset=[np.arange(4)], dataset_name='mnist', version='1.0',
                    description='this is a tutorial', time=when)
    pause()
    db.save_dataset(dataset=[np.arange(5)], dataset_name='mnist', version='2.0')
    assert db.find_top_dataset('mnist', version='1.0')[0].tolist() == [0, 1, 2, 3]
    assert db.find_top_dataset('mnist', description='this is a tutorial')[0].tolist() == [0, 1, 2, 3]
    assert db.find_top_dataset('mnist', time=when)[0].tolist() == [0, 1, 2, 3]
    doc = db.db["datasets"].find_one({"version": "1.0"})
    assert doc is not None
    assert (doc["version"], doc["description"], as_utc(doc["time"])) == ('1.0', 'this is a tutorial', when)


def test_same_dataset_saved_again_with_a_version_tag_is_found_by_it(db):
    """The page: save a data set, then ``find_top_dataset('mnist', version='1.0')``. TensorLayer
    inserts one document per save, so tagging the same arrays with a version makes them findable."""
    data = [np.arange(6), np.arange(6) % 2]
    db.save_dataset(dataset=data, dataset_name='mnist', description='this is a tutorial')
    pause()
    db.save_dataset(dataset=data, dataset_name='mnist', version='1.0', description='this is a tutorial')
    found = db.find_top_dataset('mnist', version='1.0')
    assert found, "find_top_dataset('mnist', version='1.0') found nothing"
    np.testing.assert_array_equal(found[0], data[0])


def test_model_kwargs_version_description_time_are_stored_as_given(db):
    when = utc(2019, 1, 2, 3, 4, 5)
    db.save_model(tiny_model(), model_name='mlp', name='800-800', version=3, description='first try', time=when)
    pause()
    db.save_model(tiny_model(1), model_name='mlp', name='600-600', version=4)
    net = db.find_top_model(model_name='mlp', version=3)
    assert net and net._name == '800-800'
    assert (net._version, net._description, as_utc(net._time)) == (3, 'first try', when)
    assert db.find_top_model(model_name='mlp', time=when)._name == '800-800'
    assert db.find_top_model(model_name='mlp', sort=[("version", -1)])._name == '600-600'
    doc = db.db["models"].find_one({"name": "800-800"})
    assert doc is not None
    assert (doc["version"], doc["description"], as_utc(doc["time"])) == (3, 'first try', when)


def test_task_kwargs_version_description_time_are_stored_as_given(db, tmp_path):
    script = tmp_path / "task_script.py"
    script.write_text("test_accuracy = 0.5\n")
    when = utc(2020, 5, 6, 7, 8, 9)
    db.create_task(task_name='mnist', script=str(script), hyper_parameters=dict(n_units1=800, n_units2=800),
                   saved_result_keys=['test_accuracy'], description='800-800', version='v2', time=when)
    (task,) = db.find_tasks('mnist', version='v2')
    assert (task['description'], task['version'], as_utc(task['time'])) == ('800-800', 'v2', when)
    assert task['task_name'] == 'mnist'
    assert len(db.find_tasks('mnist', description='800-800', time=when)) == 1


def test_log_kwargs_version_description_time_are_stored_as_given(db):
    when = utc(2021, 2, 3, 4, 5, 6)
    db.save_training_log(accuracy=0.33, version=1, description='warm-up', time=when)
    logs = db.find_logs("training", version=1)
    assert len(logs) == 1
    row = logs.iloc[0]
    assert (row["accuracy"], row["version"], row["description"]) == (0.33, 1, 'warm-up')
    assert as_utc(row["time"]) == when


# -- dispatch_tasks.py with runners on a real server -------------------------------------------------


def check_dispatch_outcome(out: str, uri: str) -> None:
    """What dispatch_tasks.py prints, checked against the database."""
    assert "all tasks finished" in out, out[-3000:]
    printed = re.search(r"the best accuracy (\S+) is from model (\S+)", out)
    assert printed, out[-3000:]

    db = open_hub(uri)
    try:
        tasks = {t['description']: t for t in db.find_tasks('mnist')}
        assert sorted(tasks) == sorted(MODEL_NAMES)
        accuracy = {}
        for name in MODEL_NAMES:  # one model per task, found as task_script.py saved it
            net = db.find_top_model(model_name='mlp', name=name)
            assert net, f"no model named {name}"
            accuracy[name] = net._test_accuracy
            assert tasks[name]['result'] == {'test_accuracy': net._test_accuracy}
        top = max(accuracy.values())
        best_names = {name for name, value in accuracy.items() if value == top}  # ties are possible
        assert printed[2] in best_names and float(printed[1]) == top

        best = db.find_top_model(model_name='mlp', sort=[("test_accuracy", -1)])
        assert best._name in best_names and best._test_accuracy == top
        X_train, y_train, X_val, y_val, X_test, y_test = db.find_top_dataset('mnist')
        assert X_test.shape == (400, 784)
        predictions = best.predict(X_test, verbose=0)
        assert predictions.shape == (400, 10)
        assert abs(float((predictions.argmax(axis=1) == y_test).mean()) - best._test_accuracy) < 0.01
        assert best._test_accuracy > 0.1  # better than chance: it did learn something
    finally:
        db.close()


def run_dispatch(folder: Path, uri: str, log: Path) -> str:
    """Run dispatch_tasks.py in ``folder`` (its script='task_script.py' is relative, as in TensorLayer)."""
    done = subprocess.run([sys.executable, "dispatch_tasks.py"], cwd=folder, capture_output=True,
                          text=True, timeout=600)
    if done.returncode != 0:
        pytest.fail(f"dispatch_tasks.py exited with {done.returncode}\n--- its output ---\n"
                    f"{done.stdout[-2000:]}{done.stderr[-3000:]}\n--- the tasks ---\n{_task_report(uri)}"
                    f"\n--- the runners ---\n{_tail(log, 3000)}", pytrace=False)
    return done.stdout


def _task_report(uri: str) -> str:
    """The task documents (without their code), to say why the tasks failed."""
    try:
        db = open_hub(uri)
        try:
            return "\n".join(repr({k: v for k, v in task.items() if k != "code"})[:2000]
                             for task in db.find_tasks('mnist'))
        finally:
            db.close()
    except Exception as err:  # diagnostics only
        return f"(could not read the tasks: {err!r})"


def _tail(path: Path, size: int = 6000) -> str:
    return path.read_text(errors="replace")[-size:] if path.exists() else ""


def stop(processes: list[subprocess.Popen]) -> None:
    for proc in processes:
        if proc.poll() is None:
            proc.terminate()
    for proc in processes:
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.heavy  # whole examples / hundreds of MB: engine-indifferent, not rerun on ferretdb_pg
def test_dispatch_tasks_with_two_run_tasks_workers(server_uri, tmp_path):
    """TensorLayer's README: run_tasks.py on each GPU server, dispatch_tasks.py on your machine."""
    folder = stage_examples(tmp_path, server_uri)
    log = tmp_path / "workers.log"
    with log.open("w") as out:
        workers = [subprocess.Popen([sys.executable, "-u", "run_tasks.py"], cwd=folder, stdout=out,
                                    stderr=subprocess.STDOUT) for _ in range(2)]
    try:
        printed = run_dispatch(folder, server_uri, log)
    finally:
        stop(workers)
    check_dispatch_outcome(printed, server_uri)


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.heavy  # whole examples / hundreds of MB: engine-indifferent, not rerun on ferretdb_pg
def test_dispatch_tasks_with_tensorhub_runners(server_uri, tmp_path):
    """The same distributor, with tensorhub's runner daemon in place of run_tasks.py."""
    folder = stage_examples(tmp_path, server_uri)
    log = tmp_path / "runners.log"
    with log.open("w") as out:
        runners = [subprocess.Popen([sys.executable, "-m", "tensorhub.cli", "runner", "--uri", server_uri,
                                     "--project", PROJECT, "--poll-interval", "0.2"],
                                    cwd=ROOT, stdout=out, stderr=subprocess.STDOUT) for _ in range(2)]
    try:
        printed = run_dispatch(folder, server_uri, log)
    finally:
        stop(runners)
    check_dispatch_outcome(printed, server_uri)
