"""TensorLayer's database page (docs/modules/db.rst, "Tutorials"), section by section.

The calls are the page's, unchanged, except that ``sess=sess`` is gone (TensorLayer 1.x needed a
TF1 session to rebuild a network; a tf.keras model needs none) and the page's undefined ``net``
is a small tf.keras model here. The page's "Task distribution" section is dispatch_tasks.py
(the distributor) and run_tasks.py (the task runner) in this folder.
"""
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import pymongo  # noqa: E402
import tensorflow as tf  # noqa: E402

from tensorhub import TensorHub  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "mnist"))
from digits import make_digits  # noqa: E402

# -- Connect to the database ----------------------------------------------------------------------
db = TensorHub(ip='localhost', port=27017, dbname='temp',
      username=None, password='password', project_name='tutorial')

# start clean when re-run (not on the page)
db.delete_datasets()
db.delete_model()

# -- Dataset management ---------------------------------------------------------------------------
X_train, y_train, X_val, y_val, X_test, y_test = (
    a.reshape(-1, 784) if a.ndim == 3 else a for a in make_digits(n_train=500, n_val=100, n_test=100))

db.save_dataset(dataset=[X_train, y_train, X_test, y_test], dataset_name='mnist', description='this is a tutorial')

# After saving the dataset, others can access the dataset as followed:
dataset = db.find_top_dataset('mnist')
print("dataset:", [a.shape for a in dataset])

# "Apart from the dataset key, you can also insert a custom argument such as version and
# description": a second dataset under the same key, tagged by its own version
db.save_dataset(dataset=[X_val, y_val], dataset_name='mnist', version='1.0', description='validation split')
dataset = db.find_top_dataset('mnist', version='1.0')
print("dataset version 1.0:", [a.shape for a in dataset])

# If you have multiple datasets that use the same dataset key, you can get all of them as followed:
datasets = db.find_datasets('mnist')
print("datasets named mnist:", len(datasets))


# -- Model management -----------------------------------------------------------------------------
def small_mlp(n_units):
    """The page's ``net``: any tf.keras model."""
    net = tf.keras.Sequential([tf.keras.Input([784]), tf.keras.layers.Dense(n_units, activation='relu'),
                               tf.keras.layers.Dense(10)])
    net.compile(optimizer='adam', loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=['accuracy'])
    net.fit(X_train, y_train, epochs=1, batch_size=64, verbose=0)
    return net


net = small_mlp(16)
db.save_model(net, accuracy=0.8, loss=2.3, name='second_model')
net = small_mlp(32)
db.save_model(net, accuracy=0.9, loss=1.1, name='third_model', test_accuracy=0.85)

# After saving the model into database, we can load it as follow:
net = db.find_top_model(accuracy=0.8, loss=2.3)
print("found:", net._name, net._accuracy, net._loss)

# To get the newest or oldest model, you can sort by time:
## newest model
net = db.find_top_model(sort=[("time", pymongo.DESCENDING)])
net = db.find_top_model(sort=[("time", -1)])
print("newest model:", net._name)
## oldest model
net = db.find_top_model(sort=[("time", pymongo.ASCENDING)])
net = db.find_top_model(sort=[("time", 1)])
print("oldest model:", net._name)

# If you save the model along with accuracy, you can get the model with the best accuracy as followed:
net = db.find_top_model(sort=[("test_accuracy", -1)])
print("best model:", net._name, net._test_accuracy)
print("it predicts:", net.predict(X_test[:5], verbose=0).argmax(axis=1))

# To delete all models in a project:
db.delete_model()

# -- Event / Logging management -------------------------------------------------------------------
db.save_training_log(accuracy=0.33)
db.save_training_log(accuracy=0.44)

# Delete logs that match the requirement:
db.delete_training_log(accuracy=0.33)
print("training logs left:", list(db.find_logs("training")["accuracy"]))

# Delete all logging of this project:
db.delete_training_log()
db.delete_validation_log()
db.delete_testing_log()
print("tutorial done")
