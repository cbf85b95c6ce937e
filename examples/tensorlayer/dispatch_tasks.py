"""
A sample script that shows how to distribute multiple tasks to multiple machine
using the database module.

"""
# Ported from TensorLayer's examples/database/dispatch_tasks.py (TensorLayer 2.x): the database
# calls are TensorLayer's, unchanged; only the import and the MNIST download changed (see README.md).
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tensorflow as tf  # noqa: E402,F401  (TensorLayer imports it here too; the models are tf.keras)

from tensorhub import TensorHub  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "mnist"))
from digits import make_digits  # noqa: E402


def load_mnist_dataset(shape=(-1, 784)):
    """Offline stand-in for ``tl.files.load_mnist_dataset``: MNIST-like digits made on the spot."""
    X_train, y_train, X_val, y_val, X_test, y_test = make_digits()
    return X_train.reshape(shape), y_train, X_val.reshape(shape), y_val, X_test.reshape(shape), y_test


# connect to database
db = TensorHub(ip='localhost', port=27017, dbname='temp', project_name='tutorial')

# delete existing tasks, models and datasets in this project
db.delete_tasks()
db.delete_model()
db.delete_datasets()

# save dataset into database, then allow  other servers to use it
X_train, y_train, X_val, y_val, X_test, y_test = load_mnist_dataset(shape=(-1, 784))
db.save_dataset((X_train, y_train, X_val, y_val, X_test, y_test), 'mnist', description='handwriting digit')

# push tasks into database, then allow other servers pull tasks to run
db.create_task(
    task_name='mnist', script='task_script.py', hyper_parameters=dict(n_units1=800, n_units2=800),
    saved_result_keys=['test_accuracy'], description='800-800'
)

db.create_task(
    task_name='mnist', script='task_script.py', hyper_parameters=dict(n_units1=600, n_units2=600),
    saved_result_keys=['test_accuracy'], description='600-600'
)

db.create_task(
    task_name='mnist', script='task_script.py', hyper_parameters=dict(n_units1=400, n_units2=400),
    saved_result_keys=['test_accuracy'], description='400-400'
)

# wait for tasks to finish
while db.check_unfinished_task(task_name='mnist'):
    print("waiting runners to finish the tasks")
    time.sleep(1)

# get the best model
print("all tasks finished")
net = db.find_top_model(model_name='mlp', sort=[("test_accuracy", -1)])
print("the best accuracy {} is from model {}".format(net._test_accuracy, net._name))
