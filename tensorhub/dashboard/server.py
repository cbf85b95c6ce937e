"""Serving the app with waitress (a pure-Python production WSGI server, threads), and the rules
for where it may listen: loopback freely, anywhere else only with a token."""
from __future__ import annotations

import sys
from typing import Any, TextIO

from tensorhub.dashboard import auth
from tensorhub.errors import InvalidArgument

DEFAULT_PORT = 8765
THREADS = 8


def check_exposure(host: str, token: str | None) -> None:
    """Refuse to listen beyond this machine without a token.

    >>> check_exposure("127.0.0.1", None)
    >>> check_exposure("0.0.0.0", None)
    Traceback (most recent call last):
    ...
    tensorhub.errors.InvalidArgument: --host 0.0.0.0 exposes the dashboard beyond this machine: give --token ...
    """
    if not auth.is_loopback(host) and not token:
        raise InvalidArgument(f"--host {host} exposes the dashboard beyond this machine: give --token "
                              "(or TENSORHUB_DASHBOARD_TOKEN), which every request must then present")
    if token is not None and len(token) < 8:
        raise InvalidArgument("the dashboard token must be at least 8 characters long")


def make_server(app: Any, host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> Any:
    """A waitress server for ``app`` (``port=0`` picks a free port: see ``server.effective_port``)."""
    from waitress.server import create_server

    return create_server(app, host=host, port=port, threads=THREADS, ident="tensorhub-dashboard",
                         clear_untrusted_proxy_headers=True)


def address(server: Any) -> str:
    host = server.effective_host
    shown = f"[{host}]" if ":" in str(host) else host
    return f"http://{shown}:{server.effective_port}/"


def serve(hub: Any, host: str = "127.0.0.1", port: int = DEFAULT_PORT, *, token: str | None = None,
          allow_actions: bool = False, out: TextIO | None = None) -> None:
    """Serve the dashboard for ``hub`` (a TensorHub or a function opening one) until interrupted.

    Works with the embedded ``mongomock://`` store too, since the hub lives in this process.
    """
    from tensorhub.dashboard.app import create_app

    check_exposure(host, token)
    allowed = frozenset() if auth.is_loopback(host) else frozenset({host.lower()})
    server = make_server(create_app(hub, token=token, allow_actions=allow_actions, allowed_hosts=allowed, warm=True),
                         host, port)
    stream = out or sys.stdout
    mode = "actions: cancel, requeue" if allow_actions else "read-only"
    print(f"tensorhub dashboard on {address(server)} ({mode}{', token required' if token else ''}); "
          "Ctrl-C stops it", file=stream, flush=True)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
