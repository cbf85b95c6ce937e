"""The web dashboard (``pip install 'tensorhub[dashboard]'``): the queue, the fleet, the runs
leaderboard and each run's curves, models and datasets, live, in a browser.

    tensorhub dashboard --uri mongodb://hub.lab:27017/ml --project mnist     # http://127.0.0.1:8765/

Inside a process that holds a hub (the embedded ``mongomock://`` store, a notebook)::

    from tensorhub.dashboard import serve
    serve(hub, port=8765)

Nothing outside this package imports it (the ``tensorhub dashboard`` command imports it when run),
so the core library never needs Flask. Read-only unless started with ``allow_actions``; it never
runs code from the database nor loads a stored object (``Record.load`` is never called).
"""
from __future__ import annotations

from tensorhub.dashboard.app import create_app
from tensorhub.dashboard.server import serve

__all__ = ["create_app", "serve"]
