"""pandas DataFrames as Parquet (pyarrow): mixed dtypes, index and categories kept, no pickle."""
from __future__ import annotations

import io
import shutil
import sys
import tempfile
from typing import TYPE_CHECKING, Any, BinaryIO

if TYPE_CHECKING:
    import pandas as pd

from tensorhub.codecs.base import Codec, register

SPOOL_BYTES = 64 * 1024 * 1024  # Parquet reads need seeking: spool to disk beyond this size


class DataFrameCodec(Codec):
    name = "pandas.parquet"
    file_format = "parquet"

    def can_encode(self, obj: Any) -> bool:
        pd = sys.modules.get("pandas")  # a DataFrame exists only once pandas is imported
        return pd is not None and isinstance(obj, pd.DataFrame)

    def encode(self, obj: pd.DataFrame, out: BinaryIO, allow_pickle: bool = False) -> dict[str, Any]:
        obj.to_parquet(_KeepOpen(out), engine="pyarrow", index=True)
        return {"rows": len(obj), "columns": [str(c) for c in obj.columns],
                "dtypes": [str(t) for t in obj.dtypes]}

    def decode(self, src: BinaryIO, info: dict[str, Any]) -> pd.DataFrame:
        import pandas as pd

        with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as spool:
            shutil.copyfileobj(src, spool, length=1024 * 1024)
            spool.seek(0)
            return pd.read_parquet(spool, engine="pyarrow")


class _KeepOpen(io.RawIOBase):
    """A write-only view of ``out`` that pyarrow may close without closing ``out`` itself."""

    def __init__(self, out: BinaryIO) -> None:
        super().__init__()
        self._out = out
        self._position = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        written = self._out.write(data)
        self._position += written
        return written

    def tell(self) -> int:
        return self._position


register(DataFrameCodec())
