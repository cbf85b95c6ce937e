"""numpy arrays as ``.npy`` streams: any numeric/bool/string dtype and shape, never pickled."""
from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, BinaryIO

if TYPE_CHECKING:
    import numpy as np

from tensorhub.codecs.base import Codec, register


class NumpyCodec(Codec):
    name = "numpy.npy"
    file_format = "npy"

    def can_encode(self, obj: Any) -> bool:
        # Object arrays would need pickle; they fall through to dill (opt-in) instead. An array
        # exists only once numpy is imported: a process without numpy never imports it here.
        np = sys.modules.get("numpy")
        return np is not None and isinstance(obj, np.ndarray) and not obj.dtype.hasobject

    def encode(self, obj: np.ndarray, out: BinaryIO, allow_pickle: bool = False) -> dict[str, Any]:
        from numpy.lib import format as npy_format

        # write_array streams in buffered chunks for non-file outputs: no full extra copy.
        npy_format.write_array(out, obj, allow_pickle=False)
        return {"shape": list(obj.shape), "dtype": obj.dtype.str}

    def decode(self, src: BinaryIO, info: dict[str, Any]) -> np.ndarray:
        from numpy.lib import format as npy_format

        # read_array fills the array chunk by chunk from a non-file stream.
        return npy_format.read_array(src, allow_pickle=False)


register(NumpyCodec())
