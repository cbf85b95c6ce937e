"""How a URI becomes a pymongo client and database.

``mongodb://`` and ``mongodb+srv://`` URIs go to pymongo unchanged (auth, TLS and replica-set
options pass through). ``mongomock://`` gives the embedded in-process store: every hub in one
process that names the same ``mongomock://`` host shares one store, like clients of one server.
"""
from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus

import mongomock
import pymongo
from pymongo import uri_parser
from pymongo.database import Database
from pymongo.errors import OperationFailure, PyMongoError

from tensorhub.errors import ConnectionFailed, InvalidArgument

MOCK_SCHEME = "mongomock://"
DEFAULT_DATABASE = "tensorhub"
DEFAULT_TIMEOUT_MS = 5000

_mock_clients: dict[str, mongomock.MongoClient] = {}
_mock_lock = threading.Lock()


@dataclass(frozen=True)
class Connection:
    """A connected client, its database, and the URI safe to print (password hidden)."""

    client: Any
    db: Database
    display_uri: str
    embedded: bool


def redact(uri: str) -> str:
    """Return ``uri`` with any password replaced by ``***``.

    >>> redact("mongodb://ann:secret@db:27017/ml")
    'mongodb://ann:***@db:27017/ml'
    """
    return re.sub(r"(//[^:/@]+):[^@/]*@", r"\1:***@", uri)


def build_uri(ip: str, port: int, dbname: str, username: str | None, password: str | None,
              auth_source: str | None = None) -> str:
    """The URI for TensorLayer's ``TensorHub(ip=, port=, dbname=, username=, password=)`` form."""
    if (username is None) != (password is None):
        raise InvalidArgument("give both username and password, or neither")
    credentials = ""
    options = ""
    if username is not None:
        credentials = f"{quote_plus(username)}:{quote_plus(str(password))}@"
        options = f"?authSource={quote_plus(auth_source or dbname)}"
    return f"mongodb://{credentials}{ip}:{int(port)}/{dbname}{options}"


def connect(uri: str, *, timeout_ms: int = DEFAULT_TIMEOUT_MS, **client_options: Any) -> Connection:
    """Connect to ``uri`` and check the server answers, or raise :class:`ConnectionFailed`.

    >>> connect("mongomock://").db.name
    'tensorhub'
    """
    if not isinstance(uri, str) or not uri:
        raise InvalidArgument(f"uri must be a non-empty string, got {uri!r}")
    if uri.startswith(MOCK_SCHEME):
        return _connect_embedded(uri)
    if not uri.startswith(("mongodb://", "mongodb+srv://")):
        raise InvalidArgument(
            f"unsupported URI {redact(uri)!r}: use mongodb://host:port/db, mongodb+srv://... "
            f"or {MOCK_SCHEME} for the embedded store")
    display = redact(uri)
    try:
        parsed = uri_parser.parse_uri(uri, validate=False, warn=True)
    except (PyMongoError, ValueError) as err:
        raise InvalidArgument(f"cannot parse MongoDB URI {display!r}: {err}") from err
    options = {"tz_aware": True, "serverSelectionTimeoutMS": timeout_ms, "appname": "tensorhub"}
    options.update(client_options)
    try:
        client = pymongo.MongoClient(uri, **options)
        client.admin.command("ping")
    except OperationFailure as err:
        raise ConnectionFailed(
            f"the server at {display} refused us ({err.details.get('errmsg', err) if err.details else err}); "
            "check the username, password and authSource") from err
    except PyMongoError as err:
        raise ConnectionFailed(
            f"cannot reach MongoDB at {display}: {err}. Is the server running and reachable? "
            f"Start one with `docker compose up -d mongodb`, or use {MOCK_SCHEME} for the embedded store.") from err
    return Connection(client, client[parsed.get("database") or DEFAULT_DATABASE], display, embedded=False)


def _connect_embedded(uri: str) -> Connection:
    rest = uri[len(MOCK_SCHEME):]
    host, _, path = rest.partition("/")
    dbname = path.split("?", 1)[0] or DEFAULT_DATABASE
    with _mock_lock:
        client = _mock_clients.get(host)
        if client is None:
            client = mongomock.MongoClient(f"mongodb://{host or 'localhost'}", tz_aware=True)
            _mock_clients[host] = client
    return Connection(client, client[dbname], uri, embedded=True)
