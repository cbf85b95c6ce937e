"""Strict reading of query parameters: a bad or unknown one is a 400 with a message, never a
stack trace. Each page declares the parameters it takes; anything else is refused.
"""
from __future__ import annotations

from collections.abc import Collection, Mapping

from bson import ObjectId
from bson.errors import InvalidId

MAX_TEXT = 200


class BadRequest(Exception):
    """Raised when a request's parameters are malformed; the message says which and why."""


def only(args: Mapping[str, str], allowed: Collection[str]) -> None:
    """Refuse parameters a page does not take (``token`` is the auth layer's, always allowed).

    >>> only({"page": "2"}, {"page"})
    >>> only({"sort": "x"}, {"page"})
    Traceback (most recent call last):
    ...
    tensorhub.dashboard.params.BadRequest: unknown parameter 'sort' (this page takes: page)
    """
    unknown = sorted(set(args) - set(allowed) - {"token"})
    if unknown:
        raise BadRequest(f"unknown parameter {unknown[0][:40]!r} (this page takes: {', '.join(sorted(allowed))})")


def integer(args: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    """An integer parameter within ``[low, high]``.

    >>> integer({"page": "3"}, "page", 1, 1, 10_000)
    3
    >>> integer({"page": "x"}, "page", 1, 1, 10_000)
    Traceback (most recent call last):
    ...
    tensorhub.dashboard.params.BadRequest: page must be a whole number from 1 to 10000, got 'x'
    """
    raw = args.get(name)
    if raw is None or raw == "":
        return default
    text = raw.strip()
    if not (text.isascii() and text.lstrip("-").isdigit()) or len(text) > 12 or not low <= int(text) <= high:
        raise BadRequest(f"{name} must be a whole number from {low} to {high}, got {raw[:40]!r}")
    return int(text)


def choice(args: Mapping[str, str], name: str, default: str | None, allowed: Collection[str]) -> str | None:
    """One of ``allowed`` (empty means the default).

    >>> choice({"status": "failed"}, "status", None, ("pending", "failed"))
    'failed'
    """
    raw = args.get(name)
    if raw is None or raw == "":
        return default
    if raw not in allowed:
        raise BadRequest(f"{name} must be one of {', '.join(allowed)}, got {raw[:40]!r}")
    return raw


def text(args: Mapping[str, str], name: str) -> str | None:
    """A free-text parameter (a task or model name): at most MAX_TEXT printable characters."""
    raw = args.get(name)
    if raw is None or raw == "":
        return None
    if len(raw) > MAX_TEXT or not raw.isprintable():
        raise BadRequest(f"{name} must be at most {MAX_TEXT} printable characters")
    return raw


def object_id(value: str, what: str) -> ObjectId:
    """A 24-hex-digit id from the URL path.

    >>> object_id("65f000000000000000000000", "task id")
    ObjectId('65f000000000000000000000')
    """
    try:
        return ObjectId(value)
    except (InvalidId, TypeError):
        raise BadRequest(f"{what} must be 24 hexadecimal digits, got {value[:40]!r}") from None
