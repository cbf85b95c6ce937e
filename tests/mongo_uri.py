"""URI helpers for the test fixtures: point a base URI at another database."""

from __future__ import annotations

from urllib.parse import quote, unquote_plus

from pymongo import uri_parser

#: Schemes :func:`with_database` understands.
MONGODB_SCHEMES = ("mongodb", "mongodb+srv")
MONGOMOCK_SCHEME = "mongomock"

#: Authentication mechanisms whose credentials live in the database named by
#: ``authSource`` (default: the URI's database, else ``admin``). The others
#: (X.509, Kerberos, LDAP, AWS, OIDC) default to ``$external`` and ignore the path.
_DATABASE_AUTH_MECHANISMS = ("DEFAULT", "SCRAM-SHA-1", "SCRAM-SHA-256")


def with_database(base_uri: str, database: str) -> str:
    """Return ``base_uri`` with its database (the URI path) set to ``database``.

    Host list, credentials and query options are kept as written. One thing
    changes meaning when the path changes: with credentials and no
    ``authSource`` option, MongoDB authenticates against the path's database
    (or ``admin`` without one). So in that case ``authSource`` is added, naming
    the database the base URI authenticated against.

    Accepts ``mongodb://``, ``mongodb+srv://`` and ``mongomock://`` URIs.
    A plain ``mongodb://`` result is validated with pymongo's parser (which
    needs no network; ``+srv`` URIs would need DNS, so they are not).

    >>> with_database("mongodb://u:p@h1,h2/orig?replicaSet=rs0", "th_1")
    'mongodb://u:p@h1,h2/th_1?replicaSet=rs0&authSource=orig'
    >>> with_database("mongomock://localhost", "th_1")
    'mongomock://localhost/th_1'

    Raises:
        ValueError: unknown scheme, or a database name that needs escaping.
        pymongo.errors.InvalidURI: the base URI is malformed.
    """
    if not database or quote(database, safe="") != database:
        raise ValueError(f"unsuitable database name for a URI path: {database!r}")
    scheme, sep, rest = base_uri.partition("://")
    if not sep:
        raise ValueError(f"not a URI: {base_uri!r}")
    # "scheme://[userinfo@]hosts[/[database][?options]]": the host list holds
    # no "/" (UNIX socket paths must be percent-encoded), so the first "/"
    # starts the path.
    hosts, _, path = rest.partition("/")
    if "?" in hosts:
        raise ValueError(f"a '/' must separate the hosts from the options in {base_uri!r}")
    old_database, _, query = path.partition("?")
    old_database = unquote_plus(old_database)

    if scheme == MONGOMOCK_SCHEME:
        new_uri = f"{scheme}://{hosts or 'localhost'}/{database}"
        return f"{new_uri}?{query}" if query else new_uri
    if scheme not in MONGODB_SCHEMES:
        raise ValueError(f"unsupported URI scheme {scheme!r} in {base_uri!r}")

    options = uri_parser.split_options(query) if query else {}
    has_credentials = "@" in hosts
    mechanism = str(options.get("authMechanism", "DEFAULT")).upper()
    if has_credentials and "authSource" not in options and mechanism in _DATABASE_AUTH_MECHANISMS:
        auth_source = quote(old_database or "admin", safe="")
        query = f"{query}&authSource={auth_source}" if query else f"authSource={auth_source}"

    new_uri = f"{scheme}://{hosts}/{database}" + (f"?{query}" if query else "")
    if scheme == "mongodb":
        parsed = uri_parser.parse_uri(new_uri)
        if parsed["database"] != database:  # pragma: no cover - guards the split above
            raise ValueError(f"could not set database {database!r} in {base_uri!r}")
    return new_uri


def database_name(uri: str) -> str | None:
    """The database named in ``uri``'s path, or None (works for mongomock:// too)."""
    _, _, rest = uri.partition("://")
    _, _, path = rest.partition("/")
    name = unquote_plus(path.partition("?")[0])
    return name or None
