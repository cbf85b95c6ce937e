"""Typed tables attached to a run, as cox's ``Store`` keeps them: a schema, then rows, append-only.

::

    table = tables.add_table(run_id, "epochs", {"epoch": int, "loss": float, "weights": "ndarray"})
    table.append_row({"epoch": 0, "loss": 0.9, "weights": w0})
    table.update_row({"epoch": 1})                      # a row built in several steps ...
    table.update_row({"loss": 0.5, "weights": w1})
    table.flush_row()                                   # ... and stored once complete
    table.df                                            # one DataFrame row per stored row, in order
    table.get(-1, "weights")                            # one value, loaded and checked

Column types: ``int``, ``float``, ``str``, ``bool``, ``ndarray`` (numpy arrays), ``dataframe``
(pandas), ``keras`` (Keras models) and ``object`` (anything else, with dill: only for tables
created with ``allow_pickle=True``). A schema takes them as Python types (``int``, ``np.ndarray``,
``pd.DataFrame``, ``keras.Model``, ``object``) or as those names. Every value is checked against its
column when it is given: a wrong type, an unknown or missing column is an
:class:`~tensorhub.errors.InvalidField` naming the table and the column. Ints are accepted (and
converted) in float columns, bools are never ints, numpy scalars and 0-d arrays count as numbers
(as cox accepts), NaN and infinities are refused as everywhere in tensorhub. A row is stored once
every column was given a value, as in cox; unlike cox, ``None`` is one (a diverged loss, say).

Documents (collection ``run_tables``), readable in Studio3T::

    {_hub: {project, run_id, kind: "schema", table: "epochs", row: null, allow_pickle: false,
            schema: {epoch: "int", loss: "float", weights: "ndarray"}, created_at}}
    {epoch: 1, loss: 0.5, weights: {summary: "npy float32 (28, 28)", payload: <payload tree>},
     _hub: {project, run_id, kind: "row", table: "epochs", row: 1, created_at, blob_ids: [...]}}

Scalars are stored as plain fields. Arrays, DataFrames, models and objects are blobs, written
(and committed) before their row, which lists them in ``_hub.blob_ids`` for the reference checks
of :meth:`BlobStore.release` and orphan cleanup. Rows are only ever inserted, never updated
(FerretDB v1 updates read, then write). A unique index on (project, run, table, row) gives each
row its number without races: a writer that loses a number to another takes the next one. The
schema document is that index's ``row: null`` entry, so a run cannot get two tables of one name
(an explicit null: FerretDB's unique indexes let any number of documents *lack* a field).
"""
from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

if TYPE_CHECKING:
    import pandas as pd

from tensorhub import payloads
from tensorhub.blobs import BlobStore, IsReferenced
from tensorhub.errors import (
    CodecError,
    DocumentTooLarge,
    InvalidArgument,
    InvalidField,
    NotFound,
    PickleNotAllowed,
    ReservedField,
    TensorHubError,
)
from tensorhub.fields import ALWAYS_RESERVED, HUB, check_size, to_bson_value, utcnow
from tensorhub.project import PROJECT_FIELD, Project

COLLECTION = "run_tables"
SCALAR_TYPES = ("int", "float", "str", "bool")
BLOB_TYPES = ("ndarray", "dataframe", "keras", "object")
TYPE_NAMES = SCALAR_TYPES + BLOB_TYPES
RUN_FIELD, TABLE_FIELD, ROW_FIELD, KIND_FIELD = f"{HUB}.run_id", f"{HUB}.table", f"{HUB}.row", f"{HUB}.kind"
BLOB_IDS_FIELD = f"{HUB}.blob_ids"
ALL_ROWS = {"$gte": 0}  # row documents only: the schema document has row null
ROW_RETRIES = 50
DELETE_BATCH = 1000
# Other spellings of the type names; __object__ and __pickle__ are cox's pickled-column markers.
_ALIASES = {"integer": "int", "double": "float", "string": "str", "boolean": "bool", "array": "ndarray",
            "np.ndarray": "ndarray", "numpy.ndarray": "ndarray", "pd.dataframe": "dataframe",
            "pandas.dataframe": "dataframe", "keras.model": "keras", "__object__": "object",
            "__pickle__": "object"}


def _is_keras_class(cls: type) -> bool:
    # Only look if keras is already imported: whoever holds a model (or its class) has imported it.
    keras = sys.modules.get("keras")
    return keras is not None and issubclass(cls, keras.Model)


def _np_types(*names: str) -> tuple[type, ...]:
    """numpy's scalar/array types, if numpy is loaded (no numpy loaded: no numpy values exist)."""
    np = sys.modules.get("numpy")
    return () if np is None else tuple(getattr(np, name) for name in names)


def _is_dataframe(value: Any) -> bool:
    pd = sys.modules.get("pandas")
    return pd is not None and isinstance(value, pd.DataFrame)


_ACCEPTS: dict[str, Callable[[Any], bool]] = {
    "int": lambda v: isinstance(v, (int, *_np_types("integer"))) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, (int, float, *_np_types("integer", "floating"))) and not isinstance(v, bool),
    "str": lambda v: isinstance(v, str),
    "bool": lambda v: isinstance(v, (bool, *_np_types("bool_"))),
    "ndarray": lambda v: isinstance(v, _np_types("ndarray")),
    "dataframe": _is_dataframe,
    "keras": lambda v: _is_keras_class(type(v)),
    "object": lambda v: True,
}


def _class_type_name(cls: type) -> str | None:
    """The column type of values of class ``cls``; None when only ``object`` would take them."""
    import numpy as np
    import pandas as pd
    if issubclass(cls, (bool, np.bool_)):  # first: bool is an int subclass
        return "bool"
    for name, bases in (("int", (int, np.integer)), ("float", (float, np.floating)), ("str", (str,)),
                        ("ndarray", (np.ndarray,)), ("dataframe", (pd.DataFrame,))):
        if issubclass(cls, bases):
            return name
    return "keras" if _is_keras_class(cls) else None


def type_name(spec: Any, where: str) -> str:
    """The column type a schema entry names (``float``, ``"ndarray"``, ``keras.Model``...).

    >>> type_name(np.float32, "loss"), type_name("DataFrame", "table")
    ('float', 'dataframe')
    """
    if isinstance(spec, str):
        name = _ALIASES.get(spec.strip().lower(), spec.strip().lower())
        if name in TYPE_NAMES:
            return name
    elif isinstance(spec, type):
        found = "object" if spec is object else _class_type_name(spec)
        if found is not None:
            return found
    raise InvalidField(f"{where}: unsupported column type {spec!r}; use one of {', '.join(TYPE_NAMES)} "
                       "(as Python types or as these names)")


def _type_of(value: Any) -> str:
    cls = type(value)
    return cls.__name__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def _check_column_name(table: str, column: Any) -> str:
    if not isinstance(column, str) or not column or column.startswith("$") or "." in column or "\x00" in column:
        raise InvalidField(f"table {table!r}: column name {column!r} must be a non-empty string without "
                           "'.', NUL or a leading '$'")
    if column in ALWAYS_RESERVED:
        raise ReservedField(f"table {table!r}: {column!r} cannot be a column name "
                            f"(reserved: {', '.join(sorted(ALWAYS_RESERVED))})")
    return column


def _summary(kind: str, tree: dict[str, Any]) -> str:
    """A one-line description of a stored value, for people browsing the row."""
    import numpy as np
    info = tree.get("info", {})
    if tree["type"] == "blob" and kind == "ndarray" and "shape" in info:
        return f"npy {np.dtype(info['dtype']).name} {tuple(info['shape'])}"
    if tree["type"] == "blob" and kind == "dataframe":
        return f"parquet DataFrame {(info.get('rows'), len(info.get('columns', [])))}"
    if tree["type"] == "blob" and kind == "keras":
        return f"keras {info.get('class_name')} {info.get('model_name')!r} ({info.get('parameters')} parameters)"
    return payloads.describe(tree)


class Table:
    """One table of a run: its schema, a pending row (cox's ``update_row``/``flush_row``) and its rows.

    A handle is safe to share between threads; two handles (or processes) may append to the
    same table at once, each row getting its own number.
    """

    def __init__(self, store: TableStore, run_id: ObjectId, name: str, schema: Mapping[str, str], *,
                 pickle_writes: bool, allow_pickle: bool) -> None:
        self._store = store
        self.run_id = run_id
        self.name = name
        self._schema = dict(schema)
        self._pickle_writes = pickle_writes  # the table's creator allowed dill for its values
        self.allow_pickle = allow_pickle     # this handle may load values stored with dill
        self._pending: dict[str, Any] = {}
        self._next_row: int | None = None    # our guess of the next free row number
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Table({self.name!r}, run_id={self.run_id}, schema={self._schema})"

    @property
    def schema(self) -> dict[str, str]:
        """Column name → type name, in column order."""
        return dict(self._schema)

    @property
    def nrows(self) -> int:
        """How many rows are stored (asked from the server: rows of every writer count)."""
        return self._store._count_rows(self)

    @property
    def df(self) -> pd.DataFrame:
        """Every stored row, in row order, indexed by row number: :meth:`frame` with its defaults.

        int, float and bool columns are typed columns (``Int64``/``boolean`` when they hold
        None; float columns hold None as NaN); str columns have pandas' string dtype. Arrays,
        DataFrames and Keras models are loaded (their sha256 checked) into object columns;
        objects stored with dill only if this handle has ``allow_pickle``. ``frame(load=False)``
        gives their summaries instead, without reading any blob.
        """
        return self.frame()

    # -- writing -------------------------------------------------------------------------------
    def update_row(self, row: Mapping[str, Any]) -> None:
        """Set some columns of the pending row; values are checked now, stored at :meth:`flush_row`.

        A later value for a column replaces an earlier one. If any value is refused, the pending
        row is left as it was.
        """
        values = self._validated(row)
        with self._lock:
            self._pending.update(values)

    def flush_row(self) -> None:
        """Store the pending row, which must have a value (maybe None) for every column; start a new one."""
        with self._lock:
            self._flush()

    def append_row(self, row: Mapping[str, Any]) -> None:
        """``update_row(row)`` then ``flush_row()``, as one step (cox's semantics)."""
        values = self._validated(row)
        with self._lock:
            self._pending.update(values)
            self._flush()

    def _flush(self) -> None:
        missing = [column for column in self._schema if column not in self._pending]
        if missing:
            raise InvalidField(f"table {self.name!r}: column(s) {', '.join(map(repr, missing))} have no value "
                               "in this row; give them one with update_row (None marks a missing value)")
        self._store._append(self, self._pending)
        self._pending = {}

    def _validated(self, row: Mapping[str, Any]) -> dict[str, Any]:
        if not isinstance(row, Mapping):
            raise InvalidArgument(f"table {self.name!r}: a row is a dict of column -> value, got {_type_of(row)}")
        for column in row:
            self._known(column)
        return {column: self._value(column, value) for column, value in row.items()}

    def _known(self, column: Any) -> str:
        if column not in self._schema:
            raise InvalidField(f"table {self.name!r} has no column {column!r} "
                               f"(its columns: {', '.join(self._schema)})")
        return str(column)

    def _value(self, column: str, value: Any) -> Any:
        import numpy as np
        kind = self._schema[column]
        if value is None:
            return None
        if kind in SCALAR_TYPES and isinstance(value, np.ndarray) and value.ndim == 0:
            value = value[()]  # e.g. the mean of an array, which cox takes as a number too
        if not _ACCEPTS[kind](value):
            raise InvalidField(f"table {self.name!r}, column {column!r}: expected {kind}, got {_type_of(value)} "
                               f"{value!r:.60}")
        if kind not in SCALAR_TYPES:
            return value  # stored at flush, so a value replaced before then leaves no blob behind
        try:
            plain = to_bson_value(value, column)  # numpy scalars → Python; NaN, inf, >64 bits refused
        except InvalidField as err:
            raise InvalidField(f"table {self.name!r}: {err}") from None
        return float(plain) if kind == "float" else str(plain) if kind == "str" else plain

    # -- reading -------------------------------------------------------------------------------
    def get(self, row_index: int, column: str, allow_pickle: bool | None = None) -> Any:
        """One value, loaded (a blob's sha256 checked); negative indexes count from the end.

        ``allow_pickle`` (default: this handle's) is needed for values stored with dill.
        :class:`~tensorhub.errors.NotFound` if there is no such row.
        """
        import numpy as np
        self._known(column)
        if isinstance(row_index, bool) or not isinstance(row_index, (int, np.integer)):
            raise InvalidArgument(f"table {self.name!r}: a row index is an int, got {_type_of(row_index)}")
        row = int(row_index) + (self.nrows if row_index < 0 else 0)
        doc = self._store._find_row(self, row, column)
        if doc is None:
            raise NotFound(f"table {self.name!r} of run {self.run_id} has no row {row_index} "
                           f"({self.nrows} rows)")
        return self._load(column, doc.get(column), row, self._pickle(allow_pickle))

    def frame(self, columns: Sequence[str] | None = None, *, load: bool = True,
              allow_pickle: bool | None = None) -> pd.DataFrame:
        """The stored rows as a DataFrame (see :attr:`df`), with only ``columns`` if given.

        ``load=False`` puts each blob's summary (``"npy float32 (28, 28)"``) in its cell instead
        of the value: fast, and nothing is downloaded.
        """
        import pandas as pd
        names = list(self._schema) if columns is None else [self._known(c) for c in columns]
        docs = self._store._find_rows(self, names)
        rows = [int(doc[HUB]["row"]) for doc in docs]
        index = pd.RangeIndex(len(rows)) if rows == list(range(len(rows))) else pd.Index(rows)
        pickle = self._pickle(allow_pickle)
        data = {c: self._column(c, [doc.get(c) for doc in docs], rows, index, load, pickle) for c in names}
        return pd.DataFrame(data, index=index, columns=names)

    def _column(self, column: str, stored: list[Any], rows: list[int], index: pd.Index, load: bool,
                pickle: bool) -> pd.Series:
        import pandas as pd
        kind, holes = self._schema[column], any(v is None for v in stored)
        # Built directly from the stored values: no per-cell inference, fast for long tables.
        if kind == "int":
            return pd.Series(stored, index=index, dtype="Int64" if holes else "int64")
        if kind == "float":
            return pd.Series(stored, index=index, dtype="float64")
        if kind == "bool":
            return pd.Series(stored, index=index, dtype="boolean" if holes else "bool")
        if kind == "str":
            return pd.Series(stored, index=index, dtype=None if stored else object)
        if not load:
            return pd.Series([v and v["summary"] for v in stored], index=index, dtype=object)
        return pd.Series([self._load(column, v, row, pickle) for v, row in zip(stored, rows, strict=True)],
                         index=index, dtype=object)

    def _load(self, column: str, stored: Any, row: int, pickle: bool) -> Any:
        if self._schema[column] in SCALAR_TYPES or stored is None:
            return stored
        try:
            return payloads.decode(stored["payload"], self._store.blobs, pickle)
        except PickleNotAllowed as err:
            raise PickleNotAllowed(f"table {self.name!r}, column {column!r}, row {row}: {err} "
                                   "(open the table with allow_pickle=True, or read the column's summaries "
                                   "with frame(load=False))") from None

    def _pickle(self, allow_pickle: bool | None) -> bool:
        return self.allow_pickle if allow_pickle is None else bool(allow_pickle)


class TableStore:
    """The tables of the runs of one project, in the ``run_tables`` collection.

    >>> tables = TableStore(hub.db, BlobStore(hub.db, "mnist"), Project("mnist"))
    >>> tables.ensure_indexes()
    >>> table = tables.add_table(ObjectId(), "epochs", {"epoch": int, "loss": float})
    >>> table.append_row({"epoch": 0, "loss": 0.5})
    >>> table.update_row({"epoch": 1})
    >>> table.update_row({"loss": 0.25})
    >>> table.flush_row()
    >>> table.df
       epoch  loss
    0      0  0.50
    1      1  0.25
    >>> table.nrows, table.schema
    (2, {'epoch': 'int', 'loss': 'float'})
    """

    def __init__(self, db: Database, blobs: BlobStore, project: Project) -> None:
        self.collection = db[COLLECTION]
        self.blobs = blobs
        self.project = project

    def ensure_indexes(self) -> None:
        c, p = self.collection, PROJECT_FIELD
        # Row numbers (unique: how concurrent writers get distinct ones), rows in order, one row,
        # the count, the last row, and the schema document (row null).
        c.create_index([(p, ASCENDING), (RUN_FIELD, ASCENDING), (TABLE_FIELD, ASCENDING), (ROW_FIELD, ASCENDING)],
                       unique=True)
        # A run's table names in creation order; its rows or schemas in batches for deletion.
        c.create_index([(p, ASCENDING), (RUN_FIELD, ASCENDING), (KIND_FIELD, ASCENDING), ("_id", ASCENDING)])
        c.create_index([(BLOB_IDS_FIELD, ASCENDING)])

    # -- tables --------------------------------------------------------------------------------
    def add_table(self, run_id: ObjectId, name: str, schema: Mapping[str, Any], *,
                  allow_pickle: bool = False) -> Table:
        """Create the table ``name`` of run ``run_id`` with ``schema`` (column → type or type name).

        ``object`` columns are stored with dill and need ``allow_pickle=True``. Adding a table the
        run already has returns it when the schema is the same (a resumed script may add it again)
        and raises :class:`~tensorhub.errors.InvalidArgument` when it differs.
        """
        _check_run_id(run_id)
        _check_table_name(name)
        columns = _normalized_schema(name, schema, allow_pickle)
        doc = {HUB: self.project.stamp(run_id=run_id, kind="schema", table=name, row=None, schema=columns,
                                       allow_pickle=bool(allow_pickle), created_at=utcnow())}
        try:
            self.collection.insert_one(doc)
        except DuplicateKeyError:
            existing = self._schema_doc(run_id, name)
            if existing is None or list(existing[HUB]["schema"].items()) != list(columns.items()):
                stored = existing and existing[HUB]["schema"]
                raise InvalidArgument(f"run {run_id} already has a table {name!r} with schema {stored}, "
                                      f"not {columns}; choose another table name") from None
            return self._table(existing, allow_pickle)
        return self._table(doc, allow_pickle)

    def add_table_like_example(self, run_id: ObjectId, name: str, example: Mapping[str, Any],
                               alternative: Any = "object", *, allow_pickle: bool = False) -> Table:
        """Create a table whose column types are those of the values in ``example`` (not stored).

        bool, int, float, str (and their numpy scalars), arrays, DataFrames and Keras models
        give their own types; other values get ``alternative`` (``"object"``, which needs
        ``allow_pickle=True``; ``None`` refuses them instead).
        """
        if not isinstance(example, Mapping) or not example:
            raise InvalidArgument(f"table {name!r}: the example must be a non-empty dict of column -> value")
        fallback = None if alternative is None else type_name(alternative, f"table {name!r}: alternative")
        schema: dict[str, str] = {}
        for column, value in example.items():
            found = _class_type_name(type(value)) if value is not None else None
            if found is None and (fallback is None or value is None):
                raise InvalidField(f"table {name!r}, column {column!r}: cannot infer a column type from "
                                   f"{_type_of(value)} {value!r:.60}; give a typed value, or use add_table")
            schema[column] = found or str(fallback)
        return self.add_table(run_id, name, schema, allow_pickle=allow_pickle)

    def get_table(self, run_id: ObjectId, name: str, *, allow_pickle: bool = False) -> Table:
        """The table ``name`` of run ``run_id``; :class:`~tensorhub.errors.NotFound` if it has none.

        ``allow_pickle`` lets this handle load values stored with dill.
        """
        _check_run_id(run_id)
        doc = self._schema_doc(run_id, name)
        if doc is None:
            known = ", ".join(self.tables(run_id)) or "none"
            raise NotFound(f"run {run_id} has no table {name!r} (its tables: {known})")
        return self._table(doc, allow_pickle)

    def tables(self, run_id: ObjectId) -> list[str]:
        """The names of the tables of run ``run_id``, in creation order."""
        query = self.project.scope({RUN_FIELD: run_id, KIND_FIELD: "schema"})
        return [doc[HUB]["table"] for doc in self.collection.find(query, {TABLE_FIELD: 1}, sort=[("_id", ASCENDING)])]

    def _schema_doc(self, run_id: ObjectId, name: str) -> dict[str, Any] | None:
        query = self.project.scope({RUN_FIELD: run_id, TABLE_FIELD: name, ROW_FIELD: None})
        return self.collection.find_one(query)

    def _table(self, doc: Mapping[str, Any], allow_pickle: bool) -> Table:
        hub = doc[HUB]
        return Table(self, hub["run_id"], hub["table"], hub["schema"],
                     pickle_writes=bool(hub.get("allow_pickle")) or bool(allow_pickle), allow_pickle=bool(allow_pickle))

    # -- blobs and deletion --------------------------------------------------------------------
    def referenced(self, blob_ids: Sequence[ObjectId]) -> set[ObjectId]:
        """Which of ``blob_ids`` rows reference, in any project (for ``is_referenced``)."""
        wanted, found = set(blob_ids), set()
        for doc in self.collection.find({BLOB_IDS_FIELD: {"$in": list(wanted)}}, {BLOB_IDS_FIELD: 1}):
            found.update(wanted.intersection(doc[HUB].get("blob_ids", [])))
        return found

    def delete_run_tables(self, run_id: ObjectId, is_referenced: IsReferenced) -> int:
        """Delete every table of run ``run_id`` (rows, then schemas) and release their blobs.

        Returns how many documents (rows and schemas) were deleted. Documents go before their
        blobs, so a crash in between leaves orphan bytes, never a row pointing at missing ones.
        Do not write to the run's tables meanwhile.
        """
        _check_run_id(run_id)
        deleted = 0
        for kind in ("row", "schema"):
            query = self.project.scope({RUN_FIELD: run_id, KIND_FIELD: kind})
            # Each batch is a fresh query: what the previous one deleted is gone, so no cursor
            # stays open across deletes and releases.
            while batch := list(self.collection.find(query, {BLOB_IDS_FIELD: 1}, limit=DELETE_BATCH)):
                deleted += self.collection.delete_many({"_id": {"$in": [doc["_id"] for doc in batch]}}).deleted_count
                self.blobs.release([i for doc in batch for i in doc[HUB].get("blob_ids", [])], is_referenced)
        return deleted

    # -- rows (for Table) ----------------------------------------------------------------------
    def _append(self, table: Table, values: Mapping[str, Any]) -> int:
        scalars = {c: values[c] for c, kind in table._schema.items() if kind in SCALAR_TYPES}
        _checked_size(table.name, scalars)  # before any bytes are written
        trees: list[dict[str, Any]] = []
        try:
            columns = {c: values[c] if c in scalars else self._stored(table, c, values[c], trees)
                       for c in table._schema}
            _checked_size(table.name, columns)
            blob_ids = [ref.id for tree in trees for ref in payloads.blob_refs(tree)]
            return self._insert_row(table, columns, blob_ids)
        except BaseException:
            # No row references these bytes: delete them outright (nothing else can share them).
            self.blobs.delete(ref.id for tree in trees for ref in payloads.blob_refs(tree))
            raise

    def _stored(self, table: Table, column: str, value: Any, trees: list[dict[str, Any]]) -> Any:
        if value is None:
            return None
        kind = table._schema[column]
        try:
            tree = payloads.encode_to_blobs(value, self.blobs, table._pickle_writes or kind == "object",
                                            kind=COLLECTION, run_id=table.run_id, table=table.name, column=column)
        except (CodecError, InvalidField) as err:
            raise type(err)(f"table {table.name!r}, column {column!r}: {err}") from None
        trees.append(tree)
        return {"summary": _summary(kind, tree), "payload": tree}

    def _insert_row(self, table: Table, columns: dict[str, Any], blob_ids: list[ObjectId]) -> int:
        for _ in range(ROW_RETRIES):
            row = table._next_row if table._next_row is not None else self._last_row(table) + 1
            bookkeeping = self.project.stamp(run_id=table.run_id, kind="row", table=table.name, row=row,
                                             created_at=utcnow(), blob_ids=blob_ids)
            try:
                self.collection.insert_one({**columns, HUB: bookkeeping})
            except DuplicateKeyError:
                table._next_row = None  # another writer took this number: ask the server for the last one
                continue
            table._next_row = row + 1
            return row
        raise TensorHubError(f"table {table.name!r}: could not number a row after {ROW_RETRIES} tries")

    def _rows_query(self, table: Table, row: Any = ALL_ROWS) -> dict[str, Any]:
        return self.project.scope({RUN_FIELD: table.run_id, TABLE_FIELD: table.name, ROW_FIELD: row})

    def _last_row(self, table: Table) -> int:
        last = self.collection.find_one(self._rows_query(table), {ROW_FIELD: 1}, sort=[(ROW_FIELD, DESCENDING)])
        return -1 if last is None else int(last[HUB]["row"])

    def _count_rows(self, table: Table) -> int:
        return self.collection.count_documents(self._rows_query(table))

    def _find_row(self, table: Table, row: int, column: str) -> dict[str, Any] | None:
        return self.collection.find_one(self._rows_query(table, row), {column: 1})

    def _find_rows(self, table: Table, columns: list[str]) -> list[dict[str, Any]]:
        projection = {"_id": 0, ROW_FIELD: 1, **{c: 1 for c in columns}}
        return list(self.collection.find(self._rows_query(table), projection, sort=[(ROW_FIELD, ASCENDING)]))


def _check_run_id(run_id: Any) -> None:
    if not isinstance(run_id, ObjectId):
        raise InvalidArgument(f"a run id is an ObjectId, got {_type_of(run_id)} {run_id!r:.60}")


def _check_table_name(name: Any) -> None:
    if not isinstance(name, str) or not name:
        raise InvalidArgument(f"a table name is a non-empty string, got {name!r:.60}")


def _normalized_schema(name: str, schema: Any, allow_pickle: bool) -> dict[str, str]:
    if not isinstance(schema, Mapping) or not schema:
        raise InvalidArgument(f"table {name!r}: the schema must be a non-empty dict of column -> type")
    columns = {_check_column_name(name, c): type_name(t, f"table {name!r}, column {c!r}") for c, t in schema.items()}
    pickled = [c for c, kind in columns.items() if kind == "object"]
    if pickled and not allow_pickle:
        raise PickleNotAllowed(f"table {name!r}: column(s) {', '.join(map(repr, pickled))} have type object, "
                               "stored with dill, whose loading can run code; pass allow_pickle=True to "
                               "add_table if you accept that, or give them a type")
    return columns


def _checked_size(table: str, columns: Mapping[str, Any]) -> None:
    try:
        check_size(columns)
    except DocumentTooLarge as err:
        raise DocumentTooLarge(f"table {table!r}: {err}") from None
