"""Payloads: a saved object as a readable tree of containers, plain values and blobs.

``(X_train, y_train, X_val, y_val)`` is stored as a tuple node whose items are blob nodes (one
``.npy`` blob per array, with shape and dtype visible in the document); dicts, lists and nested
mixes work the same way, plain numbers and strings stay inline. So a dataset document reads like
what it holds, each array streams on its own, and the codec registry decides every leaf's format.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any, BinaryIO, cast

import bson

from tensorhub.blobs import BlobRef, BlobStore
from tensorhub.codecs import codec_for, codec_named
from tensorhub.errors import CodecError, PickleNotAllowed
from tensorhub.fields import to_bson_value

INLINE_TYPES = (bool, int, float, str, type(None))
OpenSink = Callable[[str, str], Any]  # (filename, format) -> writable context manager with .ref


class HashSink:
    """A writable that only hashes: used to learn a payload's content hash before storing it."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self.size = 0
        self.ref: BlobRef | None = None

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self._hash.update(view)
        self.size += len(view)
        return len(view)

    def flush(self) -> None:
        pass

    def __enter__(self) -> HashSink:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.ref = BlobRef(None, self.size, self._hash.hexdigest(), "")  # type: ignore[arg-type]  # never stored


def encode(obj: Any, open_sink: OpenSink, allow_pickle: bool, path: str = "payload",
           hashing: bool = False) -> dict[str, Any]:
    """Encode ``obj`` into a tree document, streaming every leaf through ``open_sink``.

    With ``hashing``, leaves whose codec has a fingerprint are not encoded at all.
    """
    if isinstance(obj, INLINE_TYPES):
        return {"type": "value", "value": to_bson_value(obj, path)}
    if isinstance(obj, (tuple, list)):
        return {"type": type(obj).__name__,
                "items": [encode(v, open_sink, allow_pickle, f"{path}[{i}]", hashing) for i, v in enumerate(obj)]}
    if type(obj) is dict and all(isinstance(k, str) for k in obj):
        return {"type": "dict", "entries": [
            {"key": k, "value": encode(v, open_sink, allow_pickle, f"{path}[{k!r}]", hashing)}
            for k, v in obj.items()]}
    codec = codec_for(obj, allow_pickle)
    if codec is None:
        raise PickleNotAllowed(
            f"{path}: a {type(obj).__module__}.{type(obj).__qualname__} has no safe format "
            "(numpy arrays, DataFrames, Keras models, and lists/tuples/dicts of them do); "
            "pass allow_pickle=True to store it with dill")
    fingerprint = codec.fingerprint(obj)
    if hashing and fingerprint is not None:
        return {"type": "blob", "codec": codec.name, "fingerprint": fingerprint, "blob": {}}
    with open_sink(path, codec.file_format) as sink:
        info = codec.encode(obj, sink, allow_pickle)
    node = {"type": "blob", "codec": codec.name, "schema": codec.schema, "info": _storable(info),
            "blob": sink.ref.to_doc()}
    if codec.needs_pickle or info.get("unsafe"):
        node["unsafe"] = True  # loading it can run code: only with allow_pickle
    if fingerprint is not None:
        node["fingerprint"] = fingerprint
    return node


def _storable(info: dict[str, Any]) -> dict[str, Any]:
    # Codec facts are for people; drop any that BSON cannot hold rather than fail the save.
    try:
        bson.encode(info)
        return info
    except Exception:
        return {k: v for k, v in info.items() if k != "architecture"}


def decode(node: dict[str, Any], blobs: BlobStore, allow_pickle: bool) -> Any:
    """Rebuild the object a tree document describes, verifying every blob it reads."""
    kind = node["type"]
    if kind == "value":
        return node["value"]
    if kind in ("tuple", "list"):
        items = [decode(item, blobs, allow_pickle) for item in node["items"]]
        return tuple(items) if kind == "tuple" else items
    if kind == "dict":
        return {e["key"]: decode(e["value"], blobs, allow_pickle) for e in node["entries"]}
    if kind == "blob":
        if node.get("unsafe") and not allow_pickle:
            raise PickleNotAllowed(
                f"this record holds a {node['codec']} payload whose loading can run code "
                f"({node.get('info', {}).get('unsafe_reason', 'pickled objects')}); pass "
                "allow_pickle=True if you trust who saved it")
        codec = codec_named(node["codec"], allow_pickle)
        with blobs.open_reader(node["blob"]["id"]) as src:
            obj = codec.decode(cast(BinaryIO, src), {**node.get("info", {}), "unsafe": bool(node.get("unsafe"))})
            src.verify_rest()
        return obj
    raise CodecError(f"unknown payload node type {kind!r} (written by a newer tensorhub?)")


def blob_refs(node: dict[str, Any]) -> list[BlobRef]:
    """Every blob a tree references, in order."""
    if node["type"] == "blob":
        return [BlobRef.from_doc(node["blob"])]
    children = node.get("items") or [e["value"] for e in node.get("entries", [])]
    return [ref for child in children for ref in blob_refs(child)]


def content_hash(node: dict[str, Any]) -> str:
    """sha256 of a tree's shape, inline values and blob hashes: equal content, equal hash."""
    def strip(n: dict[str, Any]) -> Any:
        if n["type"] == "blob":
            return ["blob", n["codec"], n.get("fingerprint") or n["blob"]["sha256"]]
        if n["type"] == "value":
            return ["value", repr(n["value"])]
        if n["type"] == "dict":
            return ["dict", [[e["key"], strip(e["value"])] for e in n["entries"]]]
        return [n["type"], [strip(i) for i in n["items"]]]
    return hashlib.sha256(json.dumps(strip(node)).encode()).hexdigest()


def describe(node: dict[str, Any]) -> str:
    """A one-line summary such as ``tuple(6 items)`` or ``npy float32 (60000, 784)``."""
    if node["type"] == "blob":
        info = node.get("info", {})
        if "shape" in info:
            return f"{node['blob'].get('format', '')} {info.get('dtype', '')} {tuple(info['shape'])}".strip()
        return node["codec"]
    if node["type"] in ("tuple", "list"):
        return f"{node['type']}({len(node['items'])} items)"
    if node["type"] == "dict":
        return f"dict({len(node['entries'])} keys)"
    return type(node["value"]).__name__


def encode_to_blobs(obj: Any, blobs: BlobStore, allow_pickle: bool, **metadata: Any) -> dict[str, Any]:
    """Encode and store: a tree whose blob nodes point at committed blobs.

    If any leaf fails, the blobs already written for this payload are deleted again.
    """
    written: list[BlobRef] = []

    def open_sink(path: str, fmt: str) -> Any:
        return blobs.open_writer(path, fmt, on_commit=written.append, **metadata)

    try:
        return encode(obj, open_sink, allow_pickle)
    except BaseException:
        blobs.delete(ref.id for ref in written)
        raise


def hash_only(obj: Any, allow_pickle: bool) -> str:
    """The content hash :func:`content_hash` would give after storing ``obj``, without storing."""
    return content_hash(encode(obj, lambda path, fmt: HashSink(), allow_pickle, hashing=True))
