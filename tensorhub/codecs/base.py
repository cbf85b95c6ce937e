"""What a codec is, and the registry that picks one for an object or a stored format.

A codec turns one kind of object into a byte stream and back. Adding a format (say PyTorch
state dicts) is one new module with one :class:`Codec` subclass passed to :func:`register`.
"""
from __future__ import annotations

from typing import Any, BinaryIO, ClassVar

from tensorhub.errors import CodecError, PickleNotAllowed


class Codec:
    """Encode objects of one kind to a stream; decode them back from a stream."""

    name: ClassVar[str]            # stored in documents, e.g. "numpy.npy"
    file_format: ClassVar[str]     # the blob's format field, e.g. "npy"
    schema: ClassVar[int] = 1      # bumped when the stored layout changes
    needs_pickle: ClassVar[bool] = False

    def can_encode(self, obj: Any) -> bool:
        raise NotImplementedError

    def encode(self, obj: Any, out: BinaryIO, allow_pickle: bool = False) -> dict[str, Any]:
        """Write ``obj`` to ``out``; return small readable facts about it (shape, dtype...).

        A codec that can store ``obj`` only in a form whose loading can run code refuses unless
        ``allow_pickle``, and then marks the facts with ``"unsafe": True`` so that loading it
        needs ``allow_pickle`` too.
        """
        raise NotImplementedError

    def decode(self, src: BinaryIO, info: dict[str, Any]) -> Any:
        raise NotImplementedError

    def fingerprint(self, obj: Any) -> str | None:
        """A content hash for formats whose bytes differ between saves of the same content
        (archives with timestamps); None means the stream's sha256 is the content hash."""
        return None


_codecs: list[Codec] = []


def register(codec: Codec) -> Codec:
    """Add ``codec`` to the registry; later registrations are tried first."""
    _codecs.insert(0, codec)
    return codec


def codec_for(obj: Any, allow_pickle: bool) -> Codec | None:
    """The safe codec for ``obj``; dill when allowed; ``None`` when nothing but pickle fits."""
    for codec in _codecs:
        if not codec.needs_pickle and codec.can_encode(obj):
            return codec
    if allow_pickle:
        return codec_named("dill")
    return None


def codec_named(name: str, allow_pickle: bool = True) -> Codec:
    for codec in _codecs:
        if codec.name == name:
            if codec.needs_pickle and not allow_pickle:
                raise PickleNotAllowed(
                    "this record was stored with dill (pickle); loading it can run code. "
                    "Pass allow_pickle=True if you trust who saved it.")
            return codec
    raise CodecError(f"no codec named {name!r} is installed (is an optional dependency missing?)")
