"""Every ``>>>`` example in the library's docstrings runs, against a fresh embedded hub per module.

The namespace the examples see: ``hub`` (project "mnist" on mongomock) holding a dataset "mnist",
models "mlp" (test_accuracy 0.9 and 0.97) and one finished task (``task_id``); arrays
``X_train, y_train, X_test, y_test``; a small Keras ``model``; ``np``; and ``train.py`` in the
current directory.
"""
from __future__ import annotations

import doctest
import importlib
import os
import pkgutil
import uuid
from pathlib import Path

import numpy as np
import pytest

import tensorhub

MODULES = sorted(name for _, name, _ in pkgutil.walk_packages(tensorhub.__path__, "tensorhub.")
                 if not name.endswith("__main__"))
TRAIN_PY = "test_accuracy = 1 - 1 / n_units\n"


def namespace() -> dict:
    from tensorhub import TensorHub

    keras = pytest.importorskip("keras")
    hub = TensorHub(f"mongomock://localhost/doctest_{uuid.uuid4().hex[:8]}", project_name="mnist")
    rng = np.random.default_rng(0)
    X_train, X_test = rng.random((60, 4)).astype("float32"), rng.random((20, 4)).astype("float32")
    y_train, y_test = rng.integers(0, 3, 60), rng.integers(0, 3, 20)
    hub.save_dataset((X_train, y_train, X_test, y_test), "mnist", description="digits")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)], name="mlp")
    hub.save_model(model, model_name="mlp", test_accuracy=0.9)
    hub.save_model(model, model_name="mlp", test_accuracy=0.97)
    task_id = hub.create_task("mnist", source="test_accuracy = 0.5", saved_result_keys=["test_accuracy"])
    hub.run_top_task("mnist")
    return {"hub": hub, "np": np, "model": model, "task_id": task_id, "X_train": X_train,
            "y_train": y_train, "X_test": X_test, "y_test": y_test}


def test_every_docstring_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.py").write_text(TRAIN_PY)
    failures, ran = [], 0
    finder = doctest.DocTestFinder()
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    for name in MODULES:
        module = importlib.import_module(name)
        tests = [t for t in finder.find(module, name) if t.examples]
        if not tests:
            continue
        globs = namespace()
        for test in tests:
            runner = doctest.DocTestRunner(optionflags=flags)
            test.globs = {**vars(module), **globs}
            result = runner.run(test, out=lambda text: failures.append(text))
            ran += result.attempted
        globs["hub"].db.client.drop_database(globs["hub"].db.name)
    assert not failures, "".join(failures)
    assert ran >= 40  # the examples really ran (and no skip directive hides them)


def test_no_example_is_skipped():
    for name in MODULES:
        path = importlib.import_module(name).__file__
        assert path is not None and "doctest: +SKIP" not in Path(path).read_text(), name
    assert os.path.exists(tensorhub.__file__)
