"""tensorhub in one minute, on the embedded store (nothing to install but the package):
save a dataset, queue three trainings, run them, and load the best model."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import keras  # noqa: E402
import numpy as np  # noqa: E402

from tensorhub import TensorHub  # noqa: E402

hub = TensorHub("mongomock://", project_name="quickstart")

# 1. A dataset: arrays go to GridFS-style blobs, the document says what they are.
rng = np.random.default_rng(0)
X = rng.random((600, 8), dtype=np.float32)
y = (X[:, 0] + X[:, 1] > 1).astype(np.int64)
hub.save_dataset((X[:400], y[:400], X[400:], y[400:]), "toy", description="x0 + x1 > 1")

# 2. Tasks: one per hyperparameter value; the script's globals are the hyperparameters.
TRAIN = """
import keras
from tensorhub import current_task
hub = current_task().hub
X_train, y_train, X_test, y_test = hub.find_top_dataset("toy")
model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(n_units, activation="relu"),
                          keras.layers.Dense(2, activation="softmax")])
model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
model.fit(X_train, y_train, epochs=15, verbose=0)
test_accuracy = float(model.evaluate(X_test, y_test, verbose=0)[1])
hub.save_model(model, model_name="mlp", test_accuracy=test_accuracy, n_units=n_units)
"""
for n_units in (2, 8, 32):
    hub.create_task("toy", source=TRAIN, hyper_parameters={"n_units": n_units},
                    saved_result_keys=["test_accuracy"])

# 3. Run them here (on MongoDB, runner daemons on GPU boxes would claim them instead).
hub.run_tasks("toy")
for task in hub.find_tasks("toy"):
    print(f"n_units={task['hyper_parameters']['n_units']:>2}  {task['status']}  {task['result']}")

# 4. The best model, loaded, with its metadata riding along.
best = hub.find_top_model(sort=[("test_accuracy", -1)], model_name="mlp")
print(f"best: n_units={best._n_units} test_accuracy={best._test_accuracy:.3f}")
assert isinstance(best, keras.Model) and best.predict(X[:2], verbose=0).shape == (2, 2)
