"""The task script: runs on a runner (or in-process on the embedded store).

Its hyperparameters arrive as global variables (here ``n_units``, ``epochs``); the value of
``test_accuracy`` is read back as the task's result when the script ends.
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import keras  # noqa: E402

from tensorhub import current_task  # noqa: E402

task = current_task()
hub = task.hub
X_train, y_train, X_val, y_val, X_test, y_test = hub.find_top_dataset("mnist")

model = keras.Sequential([
    keras.Input((28, 28)),
    keras.layers.Flatten(),
    keras.layers.Dense(n_units, activation="relu"),  # noqa: F821  (a hyperparameter)
    keras.layers.Dropout(0.2),
    keras.layers.Dense(10, activation="softmax"),
], name="mlp")
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
history = model.fit(X_train, y_train, validation_data=(X_val, y_val), epochs=epochs,  # noqa: F821
                    batch_size=64, verbose=0)
for epoch, (loss, val_acc) in enumerate(zip(history.history["loss"], history.history["val_accuracy"])):
    task.report(epoch=epoch, step=epoch, loss=loss, val_accuracy=val_acc)

test_loss, test_accuracy = model.evaluate(X_test, y_test, verbose=0)
hub.save_model(model, model_name="mlp", test_accuracy=float(test_accuracy), test_loss=float(test_loss),
               n_units=n_units, task_id=task.task_id)  # noqa: F821
print(f"n_units={n_units}: test_accuracy={test_accuracy:.3f}")  # noqa: F821
