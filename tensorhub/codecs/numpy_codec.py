"""numpy arrays as ``.npy`` streams: any numeric/bool/string dtype and shape, never pickled."""
from __future__ import annotations

from typing import Any, BinaryIO

import numpy as np
from numpy.lib import format as npy_format

from tensorhub.codecs.base import Codec, register


class NumpyCodec(Codec):
    name = "numpy.npy"
    file_format = "npy"

    def can_encode(self, obj: Any) -> bool:
        # Object arrays would need pickle; they fall through to dill (opt-in) instead.
        return isinstance(obj, np.ndarray) and not obj.dtype.hasobject

    def encode(self, obj: np.ndarray, out: BinaryIO, allow_pickle: bool = False) -> dict[str, Any]:
        # write_array streams in buffered chunks for non-file outputs: no full extra copy.
        npy_format.write_array(out, obj, allow_pickle=False)
        return {"shape": list(obj.shape), "dtype": obj.dtype.str}

    def decode(self, src: BinaryIO, info: dict[str, Any]) -> np.ndarray:
        # read_array fills the array chunk by chunk from a non-file stream.
        return npy_format.read_array(src, allow_pickle=False)


register(NumpyCodec())
