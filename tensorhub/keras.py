"""``HubCallback``: a Keras callback that logs every epoch to the current run and checkpoints.

    from tensorhub.keras import HubCallback

    callback = HubCallback(checkpoint_every=1)          # inside a task: the attempt's run
    model, initial_epoch = callback.resume(model)       # continue where a dead attempt stopped
    model.fit(x, y, epochs=20, initial_epoch=initial_epoch, callbacks=[callback])

Needs TensorFlow (``pip install 'tensorhub[tensorflow]'``); importing this module imports Keras.
"""
from __future__ import annotations

import math
from typing import Any

import keras

from tensorhub.errors import InvalidArgument, TaskError


def _current_run() -> Any:
    from tensorhub.tasks.context import current_task

    try:
        return current_task().run
    except TaskError:
        raise TaskError("HubCallback() without a run works inside a task only; outside one pass "
                        "run=hub.start_run(...)") from None


class HubCallback(keras.callbacks.Callback):
    """Log each epoch's ``logs`` to a run; checkpoint every ``checkpoint_every`` epochs.

    Epochs are counted from 1 (Keras' epoch index + 1), so ``initial_epoch`` and the logged
    epochs agree: after a resume at epoch k, the next logged epoch is k + 1.
    """

    def __init__(self, run: Any = None, checkpoint_every: int | None = None, allow_pickle: bool = False) -> None:
        super().__init__()
        if checkpoint_every is not None and (isinstance(checkpoint_every, bool) or
                                             not isinstance(checkpoint_every, int) or checkpoint_every < 1):
            raise InvalidArgument(f"checkpoint_every must be a positive integer, got {checkpoint_every!r}")
        self._run = run
        self.checkpoint_every = checkpoint_every
        self.allow_pickle = allow_pickle

    @property
    def run(self) -> Any:
        if self._run is None:
            self._run = _current_run()
        return self._run

    def resume(self, model: Any) -> tuple[Any, int]:
        """``(model, initial_epoch)``: the last checkpoint's model and epoch of earlier attempts,
        or the given model and 0 when there is none."""
        checkpoint = self.run.resume(allow_pickle=self.allow_pickle)
        if checkpoint is None:
            return model, 0
        return checkpoint.model, checkpoint.epoch

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        done = epoch + 1
        # A diverged metric (NaN, inf) is logged as None: tensorhub refuses NaN fields, and
        # training should not stop because a loss blew up for one epoch.
        values = {k: (float(v) if math.isfinite(float(v)) else None) for k, v in (logs or {}).items()}
        self.run.log_epoch(done, **values)
        if self.checkpoint_every and done % self.checkpoint_every == 0:
            self.run.checkpoint(self.model, epoch=done, allow_pickle=self.allow_pickle, **values)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self.run.flush()
