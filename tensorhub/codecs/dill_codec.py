"""Any Python object through dill: only on explicit opt-in, because loading it can run code."""
from __future__ import annotations

from typing import Any, BinaryIO

from tensorhub.codecs.base import Codec, register


class DillCodec(Codec):
    name = "dill"
    file_format = "dill"
    needs_pickle = True

    def can_encode(self, obj: Any) -> bool:
        return True

    def encode(self, obj: Any, out: BinaryIO, allow_pickle: bool = False) -> dict[str, Any]:
        import dill  # only for the explicit opt-in

        dill.dump(obj, out, recurse=True)
        return {"python_type": f"{type(obj).__module__}.{type(obj).__qualname__}"}

    def decode(self, src: BinaryIO, info: dict[str, Any]) -> Any:
        import dill

        return dill.load(src)


register(DillCodec())
