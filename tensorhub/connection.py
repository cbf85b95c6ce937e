"""How a URI becomes a pymongo client and database.

``mongodb://`` and ``mongodb+srv://`` URIs go to pymongo unchanged (auth, TLS and replica-set
options pass through). ``mongomock://`` gives the embedded in-process store: every hub in one
process that names the same ``mongomock://`` host shares one store, like clients of one server.

No part of a password ever appears in an error message or a ``repr``: :func:`redact` hides it even
in URIs that do not parse (an unescaped ``/`` or ``@`` in the password), and :func:`scrub` removes
it from messages that pymongo writes.
"""
from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote_plus, unquote_plus

import pymongo
from pymongo import UpdateOne, uri_parser
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import OperationFailure, PyMongoError

from tensorhub import defaults
from tensorhub.errors import ConnectionFailed, InvalidArgument

MOCK_SCHEME = "mongomock://"
SCHEMES = ("mongodb://", "mongodb+srv://", MOCK_SCHEME)

_mock_clients: dict[str, Any] = {}  # host -> mongomock client (imported only for the embedded store)
_mock_lock = threading.Lock()


@dataclass(frozen=True)
class Connection:
    """A connected client, its database, and the URI safe to print (password hidden)."""

    client: Any
    db: Database
    display_uri: str
    embedded: bool
    uri: str = field(repr=False)


def _split_credentials(uri: str) -> tuple[str, str | None, str | None, str]:
    """``(scheme://, user, password, rest)``; the userinfo ends at the *last* ``@`` of the authority.

    Taking the last ``@`` (and not stopping at ``/``) keeps an unescaped ``@`` or ``/`` in a
    password inside the password, where a URI parser would have cut it.
    """
    scheme, sep, rest = uri.partition("://")
    if not sep or "@" not in rest:
        return (scheme + sep, None, None, rest)
    query_start = rest.find("?")
    searchable = rest if query_start < 0 else rest[:query_start]
    at = searchable.rfind("@")
    if at < 0:
        return (scheme + sep, None, None, rest)
    userinfo, host_part = rest[:at], rest[at + 1:]
    user, colon, password = userinfo.partition(":")
    return (scheme + sep, user, password if colon else None, host_part)


def redact(uri: str) -> str:
    """Return ``uri`` with any password replaced by ``***`` (even if the URI does not parse).

    >>> redact("mongodb://ann:secret@db:27017/ml")
    'mongodb://ann:***@db:27017/ml'
    >>> redact("mongodb://ann:se/cr@t@db/ml")
    'mongodb://ann:***@db/ml'
    """
    scheme, user, password, rest = _split_credentials(uri)
    if user is None:
        return uri
    return f"{scheme}{user}:***@{rest}" if password is not None else f"{scheme}{user}@{rest}"


def scrub(text: str, uri: str) -> str:
    """Remove the URI's password (raw and percent-decoded) from ``text``, e.g. a pymongo message."""
    _, _, password, _ = _split_credentials(uri)
    for secret in {password, unquote_plus(password or "")} - {None, ""}:
        assert secret is not None
        text = text.replace(secret, "***")
    return text.replace(uri, redact(uri))


def build_uri(ip: str, port: int, dbname: str, username: str | None, password: str | None,
              auth_source: str | None = None) -> str:
    """The URI for TensorLayer's ``TensorHub(ip=, port=, dbname=, username=, password=)`` form.

    As in TensorLayer, a password without a username means "no authentication": TensorLayer's own
    example passes ``username=None, password='password'`` to a server without auth.

    >>> build_uri("localhost", 27017, "temp", None, "password")
    'mongodb://localhost:27017/temp'
    """
    if not isinstance(ip, str) or not ip:
        raise InvalidArgument(f"ip must be a host name, got {ip!r}")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise InvalidArgument(f"port must be an integer between 1 and 65535, got {port!r}")
    if not isinstance(dbname, str) or not dbname:
        raise InvalidArgument(f"dbname must be a non-empty string, got {dbname!r}")
    credentials = options = ""
    if username is not None:
        if password is None:
            raise InvalidArgument("a username needs a password (or pass neither)")
        credentials = f"{quote_plus(username)}:{quote_plus(str(password))}@"
        options = f"?authSource={quote_plus(auth_source or dbname)}"
    return f"mongodb://{credentials}{ip}:{port}/{quote_plus(dbname)}{options}"


def connect(uri: str, *, timeout_ms: int = defaults.SERVER_TIMEOUT_MS, **client_options: Any) -> Connection:
    """Connect to ``uri`` and check the server answers, or raise :class:`ConnectionFailed`.

    >>> connect("mongomock://").db.name
    'tensorhub'
    """
    if not isinstance(uri, str) or not uri:
        raise InvalidArgument(f"uri must be a non-empty string, got {uri!r}")
    display = redact(uri)
    if uri.startswith(MOCK_SCHEME):
        return _connect_embedded(uri, display)
    if not uri.startswith(SCHEMES):
        raise InvalidArgument(
            f"unsupported URI {display!r}: use mongodb://host:port/db, mongodb+srv://... "
            f"or {MOCK_SCHEME} for the embedded store")
    try:
        parsed = uri_parser.parse_uri(uri, validate=False, warn=True)
    except (PyMongoError, ValueError) as err:
        raise InvalidArgument(f"cannot parse MongoDB URI {display!r}: {scrub(str(err), uri)} "
                              "(escape '@', ':' and '/' in the password with urllib.parse.quote_plus)") from None
    options: dict[str, Any] = {"tz_aware": True, "serverSelectionTimeoutMS": timeout_ms, "appname": "tensorhub"}
    options.update(client_options)
    try:
        client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(uri, **options)
        client.admin.command("ping")
    except OperationFailure as err:
        detail = scrub(str(err.details.get("errmsg", err) if err.details else err), uri)
        raise ConnectionFailed(f"the server at {display} refused us ({detail}); "
                               "check the username, password and authSource") from None
    except PyMongoError as err:
        raise ConnectionFailed(
            f"cannot reach MongoDB at {display}: {scrub(str(err), uri)}. Is the server running and "
            f"reachable? Start one with `docker compose up -d mongodb`, or use {MOCK_SCHEME} for the "
            "embedded store.") from None
    return Connection(client, client[parsed.get("database") or defaults.DATABASE], display, False, uri)


def update_in_one(collection: Collection, updates: Sequence[tuple[dict[str, Any], dict[str, Any], bool]],
                  ordered: bool = True) -> int:
    """Send ``(filter, update, upsert)`` updates as one ``update`` command; how many matched.

    The server answers with a total only. mongomock's ``bulk_write`` lags pymongo's, so on the
    embedded store (in-process: no round trips to save) they are sent one by one.
    """
    if len(updates) <= 1 or not isinstance(collection, Collection):
        return sum(collection.update_one(f, u, upsert=up).matched_count for f, u, up in updates)
    return collection.bulk_write([UpdateOne(f, u, upsert=up) for f, u, up in updates], ordered=ordered).matched_count


def _connect_embedded(uri: str, display: str) -> Connection:
    _, _, _, rest = _split_credentials(uri)
    host, _, path = rest.partition("/")
    dbname = path.split("?", 1)[0] or defaults.DATABASE
    import mongomock

    with _mock_lock:
        client = _mock_clients.get(host)
        if client is None:
            client = mongomock.MongoClient(f"mongodb://{host or 'localhost'}", tz_aware=True)
            _mock_clients[host] = client
    return Connection(client, client[dbname], display, True, uri)
