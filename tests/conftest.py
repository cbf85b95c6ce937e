"""Shared fixtures of the tensorhub test suite.

Backends
========
Tests that take ``backend``, ``store_uri`` or ``hub`` run once per storage backend:

``mongomock``
    The embedded in-process store, ``mongomock://localhost/<db>``. Always available.
``ferretdb``
    A FerretDB server (SQLite backend) started once per test session, on a free
    loopback port, the first time a test needs it (see ``tests/ferretdb.py``).
    Always enabled: a missing binary fails the tests, it never skips them.
    ``bash tests/run.sh`` provides the binary.
``ferretdb_pg``
    A second FerretDB server, with its PostgreSQL backend, on a throw-away
    PostgreSQL cluster (``initdb`` in a temporary directory, a free loopback
    port; see ``tests/postgres.py``), both started once per test session the
    first time a test needs them. Always enabled, like ``ferretdb``: missing
    PostgreSQL programs fail the tests. ``bash tests/run.sh`` installs
    Debian's ``postgresql`` package when they are missing.
``mongodb``
    A real MongoDB, enabled when ``TENSORHUB_TEST_URI`` holds its base URI.

Tests that take ``server_uri`` or ``server_hub`` need a real server (several OS
processes sharing one database, say) and run on ``ferretdb``, ``ferretdb_pg``
and ``mongodb`` only.
Tests on a real server carry the ``real_server`` marker, so
``-m "not real_server"`` runs the mongomock half alone.

Environment variables
=====================
``TENSORHUB_TEST_URI``
    Base URI of a MongoDB server for the ``mongodb`` backend, e.g.
    ``mongodb://localhost:27017/?directConnection=true`` or
    ``mongodb://user:pw@db.lab:27017/admin?tls=true``. Every test gets its own
    database on it: the URI's database is replaced, its options are kept (and
    ``authSource`` is pinned to the original database when credentials are
    given without one). The user must be allowed to create and drop databases
    named ``th_*``.
``TENSORHUB_TEST_BACKENDS``
    Comma-separated backends to run, e.g. ``mongomock``, ``ferretdb_pg`` or
    ``mongomock,mongodb``. Names: ``mongomock``, ``ferretdb``, ``ferretdb_pg``,
    ``mongodb``. Default: all available ones. Naming ``mongodb`` without
    ``TENSORHUB_TEST_URI``, or an unknown name, is a usage error. When the
    selection contains no real server, tests that need one are skipped
    (pytest's "empty parameter set").
``TENSORHUB_FERRETDB``
    The ferretdb binary (``tests/run.sh`` sets it; see ``tests/ferretdb.py``).
``TENSORHUB_POSTGRES_BINDIR``
    Directory of PostgreSQL's ``initdb``, ``postgres``, ``pg_isready`` and
    ``createdb`` (default: found from ``initdb`` on ``PATH``, else the newest
    ``/usr/lib/postgresql/<version>/bin``; see ``tests/postgres.py``).

Fixtures
========
``ferretdb_binary`` (session)
    Path of the ferretdb binary (see ``tests/ferretdb.py``).
``ferretdb_uri`` (session)
    ``mongodb://127.0.0.1:PORT`` of this session's FerretDB server (SQLite).
``postgres_bindir`` (session)
    Directory of the PostgreSQL programs (see ``tests/postgres.py``).
``postgres_url`` (session)
    ``postgres://postgres@127.0.0.1:PORT/ferretdb`` of this session's
    PostgreSQL cluster.
``ferretdb_pg_uri`` (session)
    ``mongodb://127.0.0.1:PORT`` of this session's FerretDB server on that
    PostgreSQL.
``mongodb_uri`` (session)
    ``TENSORHUB_TEST_URI``, after checking that the server answers ``ping``.
``backend_name``
    The backend of this test: ``"mongomock"``, ``"ferretdb"``, ``"ferretdb_pg"``
    or ``"mongodb"``.
``backend``
    That backend's base URI (no fresh database yet).
``store_uri``
    A URI naming a new database ``th_<8 hex digits>`` on ``backend``, dropped
    after the test.
``hub``
    ``TensorHub(store_uri, project_name="test")``, closed after the test.
``server_backend_name``, ``server_uri``, ``server_hub``
    The same three on real servers only (``ferretdb``, ``ferretdb_pg`` and
    ``mongodb``).

Markers
=======
``slow`` (long-running tests) and ``real_server`` (added automatically to the
``ferretdb``, ``ferretdb_pg`` and ``mongodb`` parameters above).

``heavy`` is for the few expensive tests (hundreds of MB, whole example
scripts with TensorFlow) whose subject does not depend on FerretDB's storage
engine: their ``ferretdb_pg`` run is deselected, so the suite stays within its
time budget on a 2-core machine; ``ferretdb`` (SQLite) still runs them. Never
put it on a claim, lease, fencing or death test: those must run on every
server. ``-m heavy`` with ``TENSORHUB_TEST_HEAVY_PG=1`` runs them on
PostgreSQL too.

This module must not import ``tensorhub`` at import time: the fixtures that
need it import it when they run.
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pymongo
import pytest
from ferretdb import POSTGRESQL_HANDLER, FerretDBNotFoundError, FerretDBServer, find_ferretdb
from mongo_uri import database_name, with_database
from postgres import PostgresNotFoundError, PostgresServer, PostgresStartError, find_postgres_bindir
from pymongo.errors import PyMongoError

if TYPE_CHECKING:
    from _pytest.mark.structures import ParameterSet

    from tensorhub import TensorHub

pytest_plugins = ["index_coverage"]  # fails the run when no index serves a query the library sends

MONGOMOCK = "mongomock"
FERRETDB = "ferretdb"
FERRETDB_PG = "ferretdb_pg"
MONGODB = "mongodb"
ALL_BACKENDS = (MONGOMOCK, FERRETDB, FERRETDB_PG, MONGODB)
SERVER_BACKENDS = (FERRETDB, FERRETDB_PG, MONGODB)
#: The backends served by a FerretDB binary (SQLite and PostgreSQL handlers).
FERRETDB_BACKENDS = (FERRETDB, FERRETDB_PG)
#: The session fixture that yields each real server's base URI.
_SERVER_URI_FIXTURES = {FERRETDB: "ferretdb_uri", FERRETDB_PG: "ferretdb_pg_uri", MONGODB: "mongodb_uri"}

TEST_URI_ENV = "TENSORHUB_TEST_URI"
BACKENDS_ENV = "TENSORHUB_TEST_BACKENDS"
#: Set to 1 to keep the ferretdb_pg runs of ``heavy`` tests.
HEAVY_PG_ENV = "TENSORHUB_TEST_HEAVY_PG"

#: Base URI of the embedded store (tensorhub shares one store per mongomock host).
MONGOMOCK_BASE_URI = "mongomock://localhost"
#: Per-test databases are named with this prefix and 8 random hex digits.
DATABASE_PREFIX = "th_"
#: How long the fixtures' own pymongo clients wait for a server.
_SERVER_TIMEOUT_MS = 10_000

MARKERS = {
    "slow": "long-running tests (large blobs, multi-process)",
    "real_server": "needs a real MongoDB-wire server (FerretDB on SQLite or PostgreSQL, or TENSORHUB_TEST_URI)",
    "heavy": "expensive and indifferent to FerretDB's storage engine: not run on ferretdb_pg "
    "(never on claim or death tests)",
}


# -- backend selection --------------------------------------------------------------


def _select_backends() -> tuple[tuple[str, ...], list[str]]:
    """Return (backends to run, usage errors) from the environment.

    Errors are reported by :func:`pytest_configure`; the backend list is
    needed earlier, when the fixtures below are defined.
    """
    available = [MONGOMOCK, FERRETDB, FERRETDB_PG] + ([MONGODB] if os.environ.get(TEST_URI_ENV) else [])
    requested = os.environ.get(BACKENDS_ENV, "").strip()
    if not requested:
        return tuple(available), []
    names = [name.strip().lower() for name in requested.split(",") if name.strip()]
    errors = [
        f"{BACKENDS_ENV}: unknown backend {name!r} (known: {', '.join(ALL_BACKENDS)})"
        for name in names
        if name not in ALL_BACKENDS
    ]
    if MONGODB in names and MONGODB not in available:
        errors.append(f"{BACKENDS_ENV} names {MONGODB!r} but {TEST_URI_ENV} is not set")
    return tuple(name for name in available if name in names), errors


SELECTED_BACKENDS, _SELECTION_ERRORS = _select_backends()


def _backend_param(name: str) -> ParameterSet:
    """A fixture parameter for backend ``name``, marked ``real_server`` unless embedded."""
    marks = () if name == MONGOMOCK else (pytest.mark.real_server,)
    return pytest.param(name, id=name, marks=marks)


# -- pytest hooks ---------------------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    """Register the markers (unless pyproject.toml does) and reject bad settings."""
    if _SELECTION_ERRORS:
        raise pytest.UsageError("\n".join(_SELECTION_ERRORS))
    declared = {line.split(":", 1)[0].strip() for line in config.getini("markers")}
    for name, description in MARKERS.items():
        if name not in declared:
            config.addinivalue_line("markers", f"{name}: {description}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect the ``ferretdb_pg`` runs of ``heavy`` tests (see the module docstring).

    Deselected rather than skipped, so that the ``-ra`` report stays about
    real skips; ``--collect-only -q`` lists what does run.
    """
    if FERRETDB_PG not in SELECTED_BACKENDS or os.environ.get(HEAVY_PG_ENV) == "1":
        return
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        params = callspec.params if callspec is not None else {}
        on_pg = FERRETDB_PG in (params.get("backend_name"), params.get("server_backend_name"))
        (dropped if on_pg and item.get_closest_marker("heavy") else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Say which backends run and which ferretdb binary and PostgreSQL serve them."""
    lines = [f"tensorhub test backends: {', '.join(SELECTED_BACKENDS) or '(none)'}"]
    if any(name in SELECTED_BACKENDS for name in FERRETDB_BACKENDS):
        try:
            lines.append(f"ferretdb binary: {find_ferretdb()}")
        except FerretDBNotFoundError as error:
            lines.append(f"ferretdb binary: MISSING ({error})")
    if FERRETDB_PG in SELECTED_BACKENDS:
        try:
            lines.append(f"postgresql programs: {find_postgres_bindir()}")
        except PostgresNotFoundError as error:
            lines.append(f"postgresql programs: MISSING ({error})")
    return lines


# -- servers (session scope) ----------------------------------------------------------


def _skip_unless_selected(*names: str) -> None:
    """Skip the requesting test unless ``TENSORHUB_TEST_BACKENDS`` selects one of ``names``."""
    if not any(name in SELECTED_BACKENDS for name in names):
        pytest.skip(f"{BACKENDS_ENV} excludes the {' and '.join(names)} backend")


@pytest.fixture(scope="session")
def ferretdb_binary() -> str:
    """Path of the ferretdb binary; fails (never skips) when there is none.

    Skips only when ``TENSORHUB_TEST_BACKENDS`` deselects both FerretDB
    backends (``ferretdb`` and ``ferretdb_pg`` both need the binary).
    """
    _skip_unless_selected(*FERRETDB_BACKENDS)
    try:
        return find_ferretdb()
    except FerretDBNotFoundError as error:
        pytest.fail(f"FerretDB backend unavailable: {error}", pytrace=False)


@pytest.fixture(scope="session")
def ferretdb_uri(ferretdb_binary: str) -> Iterator[str]:
    """Start one FerretDB server (SQLite) for the session; yield its ``mongodb://`` URI."""
    _skip_unless_selected(FERRETDB)
    with FerretDBServer(ferretdb_binary) as server:
        yield server.uri


@pytest.fixture(scope="session")
def postgres_bindir() -> str:
    """Directory of the PostgreSQL programs; fails (never skips) when there are none.

    Skips only when ``TENSORHUB_TEST_BACKENDS`` deselects ``ferretdb_pg``.
    """
    _skip_unless_selected(FERRETDB_PG)
    try:
        return find_postgres_bindir()
    except PostgresNotFoundError as error:
        pytest.fail(f"FerretDB/PostgreSQL backend unavailable: {error}", pytrace=False)


@pytest.fixture(scope="session")
def postgres_url(postgres_bindir: str) -> Iterator[str]:
    """Start one PostgreSQL cluster for the session; yield its ``postgres://`` URL.

    It is stopped and deleted at the end of the session, after the FerretDB
    server that uses it (pytest tears fixtures down in reverse order).
    """
    try:
        server = PostgresServer(postgres_bindir)
        server.start()
    except (PostgresNotFoundError, PostgresStartError) as error:
        pytest.fail(f"FerretDB/PostgreSQL backend unavailable: {error}", pytrace=False)
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def ferretdb_pg_uri(ferretdb_binary: str, postgres_url: str) -> Iterator[str]:
    """Start one FerretDB server on this session's PostgreSQL; yield its ``mongodb://`` URI."""
    with FerretDBServer(ferretdb_binary, handler=POSTGRESQL_HANDLER, postgresql_url=postgres_url) as server:
        yield server.uri


@pytest.fixture(scope="session")
def mongodb_uri() -> str:
    """``TENSORHUB_TEST_URI``, once the server has answered ``ping``."""
    uri = os.environ.get(TEST_URI_ENV)
    if not uri:
        pytest.fail(f"{TEST_URI_ENV} is not set", pytrace=False)
    client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(
        uri, serverSelectionTimeoutMS=_SERVER_TIMEOUT_MS
    )
    try:
        client.admin.command("ping")
    except PyMongoError as error:
        pytest.fail(f"{TEST_URI_ENV} server does not answer ping: {error}", pytrace=False)
    finally:
        client.close()
    return uri


def _base_uri(request: pytest.FixtureRequest, name: str) -> str:
    """Base URI of backend ``name``; starts a server only when one is asked for."""
    if name == MONGOMOCK:
        return MONGOMOCK_BASE_URI
    return str(request.getfixturevalue(_SERVER_URI_FIXTURES[name]))


def _fresh_database(base_uri: str) -> Iterator[str]:
    """Yield a URI naming a new, unique database on ``base_uri``; drop it afterwards."""
    name = f"{DATABASE_PREFIX}{secrets.token_hex(4)}"
    uri = with_database(base_uri, name)
    yield uri
    _drop_database(uri)


def _drop_database(uri: str) -> None:
    """Drop the database named in ``uri``."""
    name = database_name(uri)
    assert name is not None and name.startswith(DATABASE_PREFIX), uri
    if uri.startswith(f"{MONGOMOCK}://"):
        # tensorhub keeps one mongomock store per host for the whole process,
        # so free the test's data there. Only a test that imported tensorhub
        # can have written any.
        connection = sys.modules.get("tensorhub.connection")
        if connection is not None:
            connection.connect(uri).client.drop_database(name)
        return
    client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(
        uri, serverSelectionTimeoutMS=_SERVER_TIMEOUT_MS
    )
    try:
        client.drop_database(name)
    finally:
        client.close()


def _open_hub(uri: str) -> Iterator[TensorHub]:
    """Yield ``TensorHub(uri, project_name="test")`` and close it afterwards."""
    from tensorhub import TensorHub  # here, not at the top: see the module docstring

    hub = TensorHub(uri, project_name="test")
    try:
        yield hub
    finally:
        hub.close()


# -- every backend ----------------------------------------------------------------------


@pytest.fixture(params=[_backend_param(name) for name in SELECTED_BACKENDS])
def backend_name(request: pytest.FixtureRequest) -> str:
    """The backend this test runs on (one test per selected backend)."""
    return str(request.param)


@pytest.fixture
def backend(request: pytest.FixtureRequest, backend_name: str) -> str:
    """Base URI of the backend, without a per-test database."""
    return _base_uri(request, backend_name)


@pytest.fixture
def store_uri(backend: str) -> Iterator[str]:
    """URI of a fresh database ``th_<hex>`` on the backend, dropped after the test."""
    yield from _fresh_database(backend)


@pytest.fixture
def hub(store_uri: str) -> Iterator[TensorHub]:
    """``TensorHub(store_uri, project_name="test")``, closed after the test."""
    yield from _open_hub(store_uri)


# -- real servers only ----------------------------------------------------------------------


@pytest.fixture(params=[_backend_param(name) for name in SELECTED_BACKENDS if name in SERVER_BACKENDS])
def server_backend_name(request: pytest.FixtureRequest) -> str:
    """The real-server backend this test runs on: ``ferretdb``, ``ferretdb_pg`` or ``mongodb``."""
    return str(request.param)


@pytest.fixture
def server_uri(request: pytest.FixtureRequest, server_backend_name: str) -> Iterator[str]:
    """URI of a fresh database on a real server (other processes can open it too)."""
    yield from _fresh_database(_base_uri(request, server_backend_name))


@pytest.fixture
def server_hub(server_uri: str) -> Iterator[TensorHub]:
    """``TensorHub(server_uri, project_name="test")``, closed after the test."""
    yield from _open_hub(server_uri)
