"""tf.keras models in Keras' own ``.keras`` archive (architecture + weights), loaded in safe mode.

A model that cannot come back from that archive is refused at save time with a message that says
how to fix it, rather than stored and found broken later:

- a model that is not built yet has no weights to save;
- a ``Lambda`` layer keeps its function as pickled bytecode: stored only with ``allow_pickle=True``
  (and then loadable only with ``allow_pickle=True``, Keras' ``safe_mode=False``);
- a ``Model``/``Layer`` subclass Keras does not know by name cannot be rebuilt by another process
  unless it is registered with ``keras.saving.register_keras_serializable``.

TensorFlow is an optional dependency: this codec only imports it when it sees a Keras model or
loads one, so the hub works (and imports fast) without it.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from typing import Any, BinaryIO

from tensorhub.codecs.base import Codec, register
from tensorhub.errors import CodecError, PickleNotAllowed

ARCHITECTURE_LIMIT = 2 * 1024 * 1024  # keep documents small: bigger configs stay in the archive only


def _keras() -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import keras
    except ImportError as err:
        raise CodecError("loading a Keras model needs TensorFlow: pip install 'tensorhub[tensorflow]'") from err
    return keras


def _layers(keras: Any, model: Any) -> list[Any]:
    """The model and every layer inside it, nested models included."""
    found, stack = [], [model]
    while stack:
        layer = stack.pop()
        found.append(layer)
        stack.extend(getattr(layer, "layers", []) or [])
    return found


def _unregistered(keras: Any, layer: Any) -> bool:
    cls = type(layer)
    if cls.__module__.startswith(("keras.", "tf_keras.", "tensorflow.")):
        return False
    name = keras.saving.get_registered_name(cls)
    return keras.saving.get_registered_object(name) is not cls


def check_saveable(keras: Any, model: Any, allow_pickle: bool) -> str | None:
    """Raise :class:`CodecError` for a model that cannot round-trip; the unsafe reason or None."""
    if not model.built:
        raise CodecError(f"the Keras model {model.name!r} is not built, so it has no weights yet: "
                         "call model.build(input_shape), or fit/predict once, before saving it")
    layers = _layers(keras, model)
    strangers = sorted({type(layer).__qualname__ for layer in layers if _unregistered(keras, layer)})
    if strangers:
        raise CodecError(
            f"Keras cannot rebuild {', '.join(strangers)} in another process: register the class with "
            "@keras.saving.register_keras_serializable(package='yours') (and import it before loading), "
            "or save only the weights: hub.save_model(model.get_weights(), ...)")
    lambdas = sorted(layer.name for layer in layers if isinstance(layer, keras.layers.Lambda))
    if not lambdas:
        return None
    if not allow_pickle:
        raise PickleNotAllowed(
            f"Lambda layer(s) {', '.join(lambdas)} store their function as pickled code, which runs when "
            "the model is loaded: replace them with a registered custom layer, or pass allow_pickle=True "
            "(loading then needs allow_pickle=True too)")
    return f"Lambda layer(s) {', '.join(lambdas)}"


class KerasCodec(Codec):
    name = "keras"
    file_format = "keras"

    def can_encode(self, obj: Any) -> bool:
        # Only look if keras is already imported: a user holding a model has imported it.
        keras = sys.modules.get("keras")
        return keras is not None and isinstance(obj, keras.Model)

    def encode(self, obj: Any, out: BinaryIO, allow_pickle: bool = False) -> dict[str, Any]:
        keras = _keras()
        unsafe = check_saveable(keras, obj, allow_pickle)
        with tempfile.TemporaryDirectory(prefix="tensorhub-") as tmp:
            path = os.path.join(tmp, "model.keras")
            obj.save(path)
            with open(path, "rb") as src:
                shutil.copyfileobj(src, out, length=1024 * 1024)
        info: dict[str, Any] = {"keras_version": keras.__version__, "class_name": type(obj).__name__,
                                "model_name": obj.name, "parameters": int(obj.count_params())}
        if unsafe:
            info.update(unsafe=True, unsafe_reason=unsafe)
        config = obj.to_json()
        if len(config) <= ARCHITECTURE_LIMIT:
            info["architecture"] = json.loads(config)
        return info

    def fingerprint(self, obj: Any) -> str | None:
        """sha256 of the architecture, the weights and the optimizer's state: what a checkpoint is.

        Keras archives carry a save date, so their bytes differ between saves of the same model.
        """
        import numpy as np  # a Keras user has it loaded already

        digest = hashlib.sha256(obj.to_json().encode())
        optimizer = getattr(obj, "optimizer", None)
        variables = list(obj.weights) + list(getattr(optimizer, "variables", []) or [])
        for variable in variables:
            digest.update(np.ascontiguousarray(np.asarray(variable)).tobytes())
        return digest.hexdigest()

    def decode(self, src: BinaryIO, info: dict[str, Any]) -> Any:
        keras = _keras()
        with tempfile.TemporaryDirectory(prefix="tensorhub-") as tmp:
            path = os.path.join(tmp, "model.keras")
            with open(path, "wb") as dst:
                shutil.copyfileobj(src, dst, length=1024 * 1024)
            # safe_mode refuses Lambda layers' pickled code: loading a model never runs code,
            # unless it was saved (and is loaded) with allow_pickle=True.
            try:
                return keras.models.load_model(path, safe_mode=not info.get("unsafe"))
            except (TypeError, ValueError) as err:
                raise CodecError(f"Keras could not rebuild this model ({err}); if it uses custom "
                                 "classes, import their module before loading") from err


register(KerasCodec())
