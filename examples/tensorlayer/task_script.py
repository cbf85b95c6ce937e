"""Sample task script."""
# Ported from TensorLayer's examples/database/task_script.py (TensorLayer 2.x). The database calls
# are TensorLayer's, unchanged; the tl.layers MLP and tl.utils.fit/test became tf.keras (see
# README.md). The runner (`tensorhub runner` or run_tasks.py) sets the hyper-parameters
# n_units1 and n_units2 as global variables and keeps `test_accuracy` as the task's result.
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tensorflow as tf  # noqa: E402

from tensorhub import TensorHub  # noqa: E402

# connect to database
db = TensorHub(ip='localhost', port=27017, dbname='temp', project_name='tutorial')

# load dataset from database
X_train, y_train, X_val, y_val, X_test, y_test = db.find_top_dataset('mnist')


# define the network
def mlp():
    ni = tf.keras.Input([784], name='input')
    net = tf.keras.layers.Dropout(rate=0.2, name='drop1')(ni)  # tl.layers.Dropout(keep=0.8)
    net = tf.keras.layers.Dense(n_units1, activation=tf.nn.relu, name='relu1')(net)  # noqa: F821
    net = tf.keras.layers.Dropout(rate=0.5, name='drop2')(net)
    net = tf.keras.layers.Dense(n_units2, activation=tf.nn.relu, name='relu2')(net)  # noqa: F821
    net = tf.keras.layers.Dropout(rate=0.5, name='drop3')(net)
    net = tf.keras.layers.Dense(10, activation=None, name='output')(net)
    M = tf.keras.Model(inputs=ni, outputs=net, name='mlp')
    return M


network = mlp()

# cost, accuracy and optimizer (tl.cost.cross_entropy works on logits)
network.compile(
    optimizer=tf.keras.optimizers.Adam(learning_rate=0.0001),
    loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    metrics=['accuracy'],
)

# train the network (TensorLayer: batch_size=256, n_epoch=20; kept small so the example is quick)
network.fit(X_train, y_train, batch_size=64, epochs=2, validation_data=(X_val, y_val), verbose=2)

# evaluation and save result that match the result_key
test_loss, test_accuracy = network.evaluate(X_test, y_test, verbose=0)
test_accuracy = float(test_accuracy)
print("   test loss: {:f}\n   test acc: {:f}".format(test_loss, test_accuracy))

# save model into database
db.save_model(network, model_name='mlp', name=str(n_units1) + '-' + str(n_units2), test_accuracy=test_accuracy)  # noqa: F821
# in other script, you can load the model as follow
# net = db.find_top_model(model_name='mlp', name=str(n_units1) + '-' + str(n_units2))
