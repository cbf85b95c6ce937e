"""Codecs: how each kind of object becomes bytes and back. Importing this registers them all."""
from tensorhub.codecs import dill_codec, keras_codec, numpy_codec, table_codec  # noqa: F401
from tensorhub.codecs.base import Codec, codec_for, codec_named, register

__all__ = ["Codec", "codec_for", "codec_named", "register"]
