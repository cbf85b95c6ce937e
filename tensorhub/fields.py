"""User keyword arguments as document fields and as queries.

Users describe records with keyword arguments (``accuracy=0.93, hp={"lr": 0.1}``); this module
turns them into clean BSON fields (numpy scalars become plain numbers, tuples become arrays) and
refuses, with an :class:`~tensorhub.errors.InvalidField` naming the key, what a MongoDB-compatible
server cannot hold or would misread: integers beyond 64 bits, complex numbers, durations, NaN and
infinities (FerretDB drops the connection on NaN), names with ``$`` or ``.``, and documents over
the 16 MB limit.

The hub's own bookkeeping lives in one nested sub-document, :data:`HUB` (``_hub``), so that every
top-level name is free for the user's keywords; ``_id`` and ``_hub`` are the only names reserved
everywhere.
"""
from __future__ import annotations

import datetime as dt
import math
import sys
from collections.abc import Iterable, Mapping
from typing import Any

import bson

from tensorhub.errors import DocumentTooLarge, InvalidArgument, InvalidField, ReservedField

HUB = "_hub"                       # the bookkeeping sub-document of every document the hub writes
ALWAYS_RESERVED = frozenset({"_id", HUB})
# Operators that may stand at the top of a query; anything else starting with "$" is refused.
TOP_LEVEL_OPERATORS = frozenset({"$and", "$or", "$nor"})
FORBIDDEN_OPERATORS = frozenset({"$where", "$function", "$accumulator"})
# MongoDB refuses documents over 16 MiB; keep room for the bookkeeping written beside the fields.
FIELDS_SIZE_LIMIT = 15 * 1024 * 1024
ARRAY_FIELD_LIMIT = 10_000
SortSpec = list[tuple[str, int]]
_PLAIN = (str, bool, bytes, type(None), bson.ObjectId, bson.Decimal128, bson.Int64, bson.Binary)


def utcnow() -> dt.datetime:
    """Now as a timezone-aware UTC datetime, truncated to BSON's millisecond precision."""
    now = dt.datetime.now(dt.timezone.utc)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def as_utc(value: dt.datetime) -> dt.datetime:
    """A stored date as an aware UTC datetime (servers and clients without tz_aware give naive ones)."""
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def to_bson_value(value: Any, key: str) -> Any:
    """Convert ``value`` to what BSON stores naturally, or raise :class:`InvalidField` naming ``key``.

    >>> to_bson_value({"lr": np.float32(0.5), "layers": (64, 32)}, "hp")
    {'lr': 0.5, 'layers': [64, 32]}
    """
    np = sys.modules.get("numpy")  # numpy values exist only once numpy is imported: a task's
    # process that never imports it does not pay for it here
    if np is not None and isinstance(value, np.generic):  # first: np.float64 is also a float
        return _numpy_scalar(value, key)
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, float):
        return _finite(value, key)
    if isinstance(value, int):
        if not -2**63 <= value < 2**63:
            raise InvalidField(f"field {key!r}: the integer {value} does not fit in 64 bits "
                               "(MongoDB's largest integer); store it as a string or a float")
        return value
    if isinstance(value, Mapping):
        return {_check_name(k, f"{key}.{k}"): to_bson_value(v, f"{key}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_bson_value(v, f"{key}[{i}]") for i, v in enumerate(value)]
    if np is not None and isinstance(value, np.ndarray):
        if value.size > ARRAY_FIELD_LIMIT:
            raise InvalidField(f"field {key!r}: a {value.shape} array is too large for a field; "
                               "save it as a dataset instead")
        return to_bson_value(value.tolist(), key)
    if isinstance(value, dt.datetime):
        return as_utc(value)
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day, tzinfo=dt.timezone.utc)
    if isinstance(value, dt.timedelta):
        raise InvalidField(f"field {key!r}: MongoDB has no duration type; store "
                           f"{key}={value.total_seconds()!r} (seconds, from .total_seconds()) instead")
    return _encodable(value, key)


def _finite(value: float, key: str) -> float:
    if math.isnan(value):
        raise InvalidField(f"field {key!r} is NaN: MongoDB-compatible servers disagree on NaN "
                           "(FerretDB drops the connection), so tensorhub refuses it; store None instead")
    if math.isinf(value):
        raise InvalidField(f"field {key!r} is {value}: infinities are refused like NaN; store None "
                           "or a large finite number instead")
    return value


def _numpy_scalar(value: Any, key: str) -> Any:
    import numpy as np

    if isinstance(value, np.complexfloating):
        raise InvalidField(f"field {key!r}: complex numbers cannot be stored in MongoDB; "
                           "store the real and imaginary parts as two numbers")
    if isinstance(value, np.floating) and value.dtype.itemsize > 8:  # longdouble
        as_float = float(value)
        if as_float != value and not np.isnan(value):
            raise InvalidField(f"field {key!r}: {value.dtype} {value!r} does not fit in a 64-bit float")
        return _finite(as_float, key)
    return to_bson_value(value.item(), key)


def _encodable(value: Any, key: str) -> Any:
    try:
        bson.encode({"v": value})
    except Exception as err:  # bson raises InvalidDocument, OverflowError, TypeError...
        raise InvalidField(f"field {key!r}: {type(value).__name__} value {value!r:.80} cannot be "
                           f"stored in MongoDB ({err})") from None
    return value


def _check_name(name: Any, path: str) -> str:
    if not isinstance(name, str) or not name:
        raise InvalidField(f"field name {path!r} must be a non-empty string")
    if name.startswith("$") or "." in name or "\x00" in name:
        raise InvalidField(f"field name {path!r} may not start with '$' or contain '.' or NUL; "
                           "use nested dicts for structure")
    return name


def clean_fields(kwargs: Mapping[str, Any], reserved: Iterable[str] = (),
                 alternatives: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Validate keyword arguments to be stored as top-level fields of a document.

    ``reserved`` names (beyond ``_id`` and ``_hub``) are refused with a :class:`ReservedField` that
    names the key and, from ``alternatives``, what to use instead.

    >>> clean_fields({"acc": np.float32(0.5), "name": "second_model"})
    {'acc': 0.5, 'name': 'second_model'}
    """
    taken = ALWAYS_RESERVED | frozenset(reserved)
    out: dict[str, Any] = {}
    for key, value in kwargs.items():
        _check_name(key, str(key))
        if key in taken:
            hint = (alternatives or {}).get(key, "rename your field")
            raise ReservedField(f"{key!r} cannot be a keyword field here: {hint} "
                                f"(reserved here: {', '.join(sorted(taken))})")
        out[key] = to_bson_value(value, key)
    check_size(out)
    return out


def check_size(fields: Mapping[str, Any], limit: int = FIELDS_SIZE_LIMIT) -> None:
    """Raise :class:`DocumentTooLarge` naming the largest field if ``fields`` exceed ``limit`` bytes."""
    if len(bson.encode(dict(fields))) <= limit:
        return
    sizes = {key: len(bson.encode({key: value})) for key, value in fields.items()}
    biggest = max(sizes, key=sizes.__getitem__)
    raise DocumentTooLarge(f"field {biggest!r} ({sizes[biggest] / 2**20:.1f} MiB) makes the document "
                           f"exceed MongoDB's 16 MiB limit; save large values as a dataset instead")


def build_query(kwargs: Mapping[str, Any], forbidden: Iterable[str] = ()) -> dict[str, Any]:
    """Turn query kwargs into a MongoDB filter: equality, operators, dotted paths, $and/$or/$nor.

    ``forbidden`` holds field paths (and their prefixes) the caller scopes itself, e.g. the project.

    >>> build_query({"hp.lr": 0.1, "acc": {"$gt": np.float64(0.9)}})
    {'hp.lr': 0.1, 'acc': {'$gt': 0.9}}
    """
    blocked = frozenset(forbidden)
    query: dict[str, Any] = {}
    for key, value in kwargs.items():
        if not isinstance(key, str) or not key:
            raise InvalidField(f"query key {key!r} must be a non-empty string")
        if key.startswith("$"):
            if key not in TOP_LEVEL_OPERATORS:
                raise InvalidField(f"query operator {key!r} is not allowed at the top level "
                                   f"(allowed: {', '.join(sorted(TOP_LEVEL_OPERATORS))})")
            if not isinstance(value, (list, tuple)) or not all(isinstance(p, Mapping) for p in value):
                raise InvalidField(f"{key} takes a list of conditions (dicts)")
            query[key] = [build_query(part, blocked) for part in value]
            continue
        if any(key == path or key.startswith(path + ".") or path.startswith(key + ".") for path in blocked):
            raise ReservedField(f"cannot filter on {key!r}: tensorhub sets it itself "
                                f"(not queryable: {', '.join(sorted(blocked))})")
        query[key] = _query_value(value, key)
    return query


def _query_value(value: Any, key: str) -> Any:
    # Operator documents ({"$gt": 1}) are kept as they are, only their operands converted.
    if isinstance(value, Mapping) and any(isinstance(k, str) and k.startswith("$") for k in value):
        bad = FORBIDDEN_OPERATORS.intersection(value)
        if bad:
            raise InvalidField(f"{key!r}: server-side JavaScript ({', '.join(sorted(bad))}) is not "
                               "allowed in queries")
        return {k: _query_value(v, f"{key}.{k}") if isinstance(v, Mapping) else to_bson_value(v, key)
                for k, v in value.items()}
    return to_bson_value(value, key)


def normalize_sort(sort: Any) -> SortSpec | None:
    """Accept pymongo's and the shell's sort forms; return a list of ``(field, direction)`` pairs.

    ``"acc"`` ascends (as in pymongo), ``"-acc"`` descends; lists may mix such strings with
    ``("acc", -1)`` pairs; a dict ``{"acc": -1}`` works too.

    >>> normalize_sort("-test_accuracy")
    [('test_accuracy', -1)]
    >>> normalize_sort([("time", -1), "loss"])
    [('time', -1), ('loss', 1)]
    """
    if sort is None:
        return None
    items = [sort] if isinstance(sort, str) else list(sort.items()) if isinstance(sort, Mapping) else sort
    if isinstance(items, tuple) and len(items) == 2 and isinstance(items[0], str) and items[1] in (1, -1):
        items = [items]  # a single ("field", -1) pair
    result: SortSpec = []
    try:
        for item in items:
            if isinstance(item, str):
                field, direction = (item[1:], -1) if item.startswith("-") else (item.lstrip("+"), 1)
            else:
                field, direction = item
            if not isinstance(field, str) or not field or field.startswith("$") or isinstance(direction, bool):
                raise ValueError
            if direction not in (1, -1):
                raise ValueError
            result.append((field, int(direction)))
    except (TypeError, ValueError):
        raise InvalidArgument(f"sort must look like [('test_accuracy', -1)] or '-test_accuracy', "
                              f"got {sort!r}") from None
    if not result:
        raise InvalidArgument("sort is empty: give at least one field")
    return result


def object_id(value: Any, what: str) -> bson.ObjectId:
    """``value`` as an ObjectId (given as one or as its 24 hex digits), or :class:`InvalidArgument`.

    >>> object_id("6b02504ffcda3459fa0dcbfb", "task id")
    ObjectId('6b02504ffcda3459fa0dcbfb')
    """
    if isinstance(value, bson.ObjectId):
        return value
    try:
        return bson.ObjectId(value)
    except Exception:
        raise InvalidArgument(f"{value!r} is not a {what}") from None


def with_tiebreak(sort: SortSpec) -> SortSpec:
    """``sort`` plus ``_id`` in the direction of its last key, so ties (same millisecond) keep
    insertion order the way the sort reads: ``("time", -1)`` puts the newest of a tie first.

    >>> with_tiebreak([("time", -1)])
    [('time', -1), ('_id', -1)]
    """
    if any(field == "_id" for field, _ in sort):
        return sort
    return sort + [("_id", sort[-1][1])]


def flatten(doc: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as dotted keys: ``{"hp": {"lr": 0.1}}`` → ``{"hp.lr": 0.1}``."""
    out: dict[str, Any] = {}
    for key, value in doc.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, path + "."))
        else:
            out[path] = value
    return out
