"""Lazy imports of the plotting libraries, which are an extra: ``pip install 'tensorhub[plots]'``.

Nothing here runs at import time, so ``import tensorhub.plots`` works (and the data helpers can
be used) on a box without matplotlib or plotly; only drawing asks for them.
"""
from __future__ import annotations

import importlib
import os
import sys
from types import ModuleType
from typing import Any

from tensorhub.errors import TensorHubError

INSTALL_HINT = "pip install 'tensorhub[plots]'"


def require(module: str) -> ModuleType:
    """Import ``module`` or raise a :class:`TensorHubError` naming the extra that provides it.

    >>> require("matplotlib").__name__
    'matplotlib'
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        library = module.split(".")[0]
        raise TensorHubError(f"plotting with {library} needs it installed ({err}): {INSTALL_HINT}") from err


def _headless() -> bool:
    # On Linux without X11/Wayland an interactive backend (a matplotlibrc asking for TkAgg, say)
    # fails at the first figure; macOS and Windows always have a display to draw on.
    return sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def pyplot() -> Any:
    """``matplotlib.pyplot``, on the Agg backend when there is no display to show figures on.

    An explicit ``MPLBACKEND`` (Jupyter's kernel sets one) or a pyplot the user already imported
    is left alone: the backend is theirs to choose.
    """
    matplotlib = require("matplotlib")
    if "matplotlib.pyplot" not in sys.modules and not os.environ.get("MPLBACKEND") and _headless():
        matplotlib.use("Agg")
    return require("matplotlib.pyplot")


def plotly() -> tuple[Any, Any]:
    """``(plotly.graph_objects, plotly.subplots.make_subplots)``."""
    return require("plotly.graph_objects"), require("plotly.subplots").make_subplots
