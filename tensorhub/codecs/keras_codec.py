"""tf.keras models in Keras' own ``.keras`` archive (architecture + weights), loaded in safe mode.

TensorFlow is an optional dependency: this codec only imports it when it sees a Keras model or
loads one, so the hub works (and imports fast) without it.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from typing import Any, BinaryIO

from tensorhub.codecs.base import Codec, register
from tensorhub.errors import CodecError

ARCHITECTURE_LIMIT = 2 * 1024 * 1024  # keep documents small: bigger configs stay in the archive only


def _keras() -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import keras
    except ImportError as err:
        raise CodecError("loading a Keras model needs TensorFlow: pip install 'tensorhub[tensorflow]'") from err
    return keras


class KerasCodec(Codec):
    name = "keras"
    file_format = "keras"

    def can_encode(self, obj: Any) -> bool:
        # Only look if keras is already imported: a user holding a model has imported it.
        keras = sys.modules.get("keras")
        return keras is not None and isinstance(obj, keras.Model)

    def encode(self, obj: Any, out: BinaryIO) -> dict[str, Any]:
        keras = _keras()
        with tempfile.TemporaryDirectory(prefix="tensorhub-") as tmp:
            path = os.path.join(tmp, "model.keras")
            obj.save(path)
            with open(path, "rb") as src:
                shutil.copyfileobj(src, out, length=1024 * 1024)
        info: dict[str, Any] = {"keras_version": keras.__version__, "class_name": type(obj).__name__,
                                "model_name": obj.name, "parameters": int(obj.count_params())}
        config = obj.to_json()
        if len(config) <= ARCHITECTURE_LIMIT:
            info["architecture"] = json.loads(config)
        return info

    def decode(self, src: BinaryIO, info: dict[str, Any]) -> Any:
        keras = _keras()
        with tempfile.TemporaryDirectory(prefix="tensorhub-") as tmp:
            path = os.path.join(tmp, "model.keras")
            with open(path, "wb") as dst:
                shutil.copyfileobj(src, dst, length=1024 * 1024)
            # safe_mode refuses Lambda layers' pickled code: loading a model never runs code.
            return keras.models.load_model(path, safe_mode=True)


register(KerasCodec())
