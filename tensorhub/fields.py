"""User keyword arguments as document fields and as queries.

Users describe records with keyword arguments (``accuracy=0.93, hp={"lr": 0.1}``); this module
turns them into clean BSON fields (numpy scalars become plain numbers, tuples become arrays) and
refuses what MongoDB cannot hold or what the hub keeps for itself, naming the offending key.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

import bson
import numpy as np

from tensorhub.errors import InvalidArgument, InvalidField, ReservedField

# Operators that may stand at the top of a query; anything else starting with "$" is refused.
TOP_LEVEL_OPERATORS = frozenset({"$and", "$or", "$nor"})
SortSpec = list[tuple[str, int]]


def utcnow() -> dt.datetime:
    """Now as a timezone-aware UTC datetime, truncated to BSON's millisecond precision."""
    now = dt.datetime.now(dt.timezone.utc)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def to_bson_value(value: Any, key: str) -> Any:
    """Convert ``value`` to what BSON stores naturally, or raise :class:`InvalidField` naming ``key``."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {_check_name(k, f"{key}.{k}"): to_bson_value(v, f"{key}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_bson_value(v, f"{key}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, np.ndarray):
        if value.size > 10_000:
            raise InvalidField(f"field {key!r}: a {value.shape} array is too large for a field; "
                               "save it as a dataset instead")
        return value.tolist()
    if isinstance(value, dt.datetime) and value.tzinfo is None:
        return value.replace(tzinfo=dt.timezone.utc)
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return dt.datetime(value.year, value.month, value.day, tzinfo=dt.timezone.utc)
    try:
        bson.encode({"v": value})
    except Exception as err:  # bson raises InvalidDocument, OverflowError, TypeError...
        raise InvalidField(f"field {key!r}: {type(value).__name__} value {value!r:.80} cannot be "
                           f"stored in MongoDB ({err})") from err
    return value


def _check_name(name: Any, path: str) -> str:
    if not isinstance(name, str) or not name:
        raise InvalidField(f"field name {path!r} must be a non-empty string")
    if name.startswith("$") or "." in name or "\x00" in name:
        raise InvalidField(f"field name {path!r} may not start with '$' or contain '.' or NUL; "
                           "use nested dicts for structure")
    return name


def clean_fields(kwargs: Mapping[str, Any], reserved: Iterable[str]) -> dict[str, Any]:
    """Validate keyword arguments to be stored as top-level fields of a record.

    >>> clean_fields({"acc": np.float32(0.5)}, reserved={"name"})
    {'acc': 0.5}
    """
    reserved = frozenset(reserved)
    out: dict[str, Any] = {}
    for key, value in kwargs.items():
        _check_name(key, key)
        if key in reserved:
            raise ReservedField(f"{key!r} is reserved by tensorhub; reserved names are "
                                f"{', '.join(sorted(reserved))}. Rename your field.")
        out[key] = to_bson_value(value, key)
    return out


def build_query(kwargs: Mapping[str, Any], forbidden: Iterable[str]) -> dict[str, Any]:
    """Turn query kwargs into a MongoDB filter: equality, operators, dotted paths, $and/$or/$nor.

    >>> build_query({"hp.lr": 0.1, "acc": {"$gt": np.float64(0.9)}}, forbidden={"project"})
    {'hp.lr': 0.1, 'acc': {'$gt': 0.9}}
    """
    forbidden = frozenset(forbidden)
    query: dict[str, Any] = {}
    for key, value in kwargs.items():
        if not isinstance(key, str) or not key:
            raise InvalidField(f"query key {key!r} must be a non-empty string")
        if key.startswith("$"):
            if key not in TOP_LEVEL_OPERATORS:
                raise InvalidField(f"query operator {key!r} is not allowed at the top level "
                                   f"(allowed: {', '.join(sorted(TOP_LEVEL_OPERATORS))})")
            if not isinstance(value, (list, tuple)):
                raise InvalidField(f"{key} takes a list of conditions")
            query[key] = [build_query(part, forbidden) for part in value]
            continue
        if key.split(".", 1)[0] in forbidden:
            raise ReservedField(f"cannot filter on {key!r}: it is managed by tensorhub "
                                f"(not queryable: {', '.join(sorted(forbidden))})")
        query[key] = _query_value(value, key)
    return query


def _query_value(value: Any, key: str) -> Any:
    # Operator documents ({"$gt": 1}) are kept as they are, only their operands converted.
    if isinstance(value, Mapping) and any(isinstance(k, str) and k.startswith("$") for k in value):
        if "$where" in value or "$function" in value:
            raise InvalidField(f"{key!r}: server-side JavaScript is not allowed in queries")
        return {k: _query_value(v, f"{key}.{k}") if isinstance(v, Mapping) else to_bson_value(v, key)
                for k, v in value.items()}
    return to_bson_value(value, key)


def normalize_sort(sort: Any) -> SortSpec | None:
    """Accept ``"field"``, ``[("field", -1), ...]`` or ``{"field": -1}``; return a list of pairs."""
    if sort is None:
        return None
    if isinstance(sort, str):
        return [(sort, 1)]
    pairs = list(sort.items()) if isinstance(sort, Mapping) else sort
    result: SortSpec = []
    try:
        for field, direction in pairs:
            if not isinstance(field, str) or direction not in (1, -1):
                raise ValueError
            result.append((field, int(direction)))
    except (TypeError, ValueError):
        raise InvalidArgument(f"sort must look like [('test_accuracy', -1)], got {sort!r}") from None
    return result
