"""Tests of the test infrastructure itself: servers, per-test databases, scripts, compose file.

These use raw pymongo wherever they can, so that they say something even while
the tensorhub package is broken.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pymongo
import pytest
from ferretdb import FerretDBServer
from mongo_uri import database_name, with_database

REPO_ROOT = Path(__file__).resolve().parent.parent
FRESH_DATABASE = re.compile(r"th_[0-9a-f]{8}")


def _client(uri: str) -> pymongo.MongoClient[dict[str, object]]:
    return pymongo.MongoClient(uri, serverSelectionTimeoutMS=10_000)


# -- FerretDB -------------------------------------------------------------------------------


@pytest.mark.real_server
def test_ferretdb_session_server_answers_ping(ferretdb_uri: str) -> None:
    client = _client(ferretdb_uri)
    try:
        assert client.admin.command("ping")["ok"] == 1.0
    finally:
        client.close()


@pytest.mark.real_server
def test_ferretdb_server_lifecycle(ferretdb_binary: str) -> None:
    """A FerretDBServer serves on its port while running and leaves nothing behind."""
    server = FerretDBServer(ferretdb_binary)
    with server:
        assert server.uri == f"mongodb://127.0.0.1:{server.port}"
        assert server.dir is not None and server.dir.is_dir()
        data_dir, port = server.dir, server.port
        client = _client(server.uri)
        try:
            client.th_lifecycle.items.insert_one({"x": 1})
            assert client.th_lifecycle.items.find_one({}, {"_id": 0}) == {"x": 1}
        finally:
            client.close()
    assert not data_dir.exists()
    with socket.socket() as probe:  # the port is free again
        probe.bind(("127.0.0.1", port))
    with pytest.raises(RuntimeError):
        _ = server.uri


# -- per-test databases ------------------------------------------------------------------------


def test_store_uri_names_a_fresh_database(backend: str, store_uri: str) -> None:
    name = database_name(store_uri)
    assert name is not None and FRESH_DATABASE.fullmatch(name), store_uri
    assert store_uri == with_database(backend, name)


@pytest.mark.real_server
def test_fresh_database_is_empty(server_uri: str) -> None:
    name = database_name(server_uri)
    assert name is not None and FRESH_DATABASE.fullmatch(name)
    client = _client(server_uri)
    try:
        assert name not in client.list_database_names()
        database = client.get_default_database()
        assert database.name == name
        assert database.list_collection_names() == []
        database.leftovers.insert_one({"dropped": "after the test"})
    finally:
        client.close()


def test_hub_fixture_opens_the_test_database(hub: object, store_uri: str) -> None:
    db = hub.db  # type: ignore[attr-defined]
    assert db.name == database_name(store_uri)
    db.infrastructure_check.insert_one({"seen": True})
    assert db.infrastructure_check.count_documents({"seen": True}) == 1


# -- several processes on one server ------------------------------------------------------------

# Inserts its own document, waits until the other writer's document shows up,
# then prints the sorted list of writers it sees.
_WRITER = textwrap.dedent(
    """
    import json, sys, time
    import pymongo

    uri, me, other = sys.argv[1:4]
    client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=10000)
    shared = client.get_default_database()["shared"]
    shared.insert_one({"writer": me})
    deadline = time.monotonic() + 30
    while shared.count_documents({"writer": other}) == 0:
        if time.monotonic() > deadline:
            sys.exit(f"{me}: no document from {other} after 30 s")
        time.sleep(0.05)
    print(json.dumps(sorted(doc["writer"] for doc in shared.find())))
    client.close()
    """
)


@pytest.mark.real_server
def test_two_processes_share_a_database(server_uri: str) -> None:
    writers = {
        name: subprocess.Popen(
            [sys.executable, "-c", _WRITER, server_uri, name, other],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, other in (("alpha", "beta"), ("beta", "alpha"))
    }
    for name, process in writers.items():
        try:
            stdout, stderr = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            for other in writers.values():
                other.kill()
            pytest.fail(f"writer {name} hung")
        assert process.returncode == 0, f"writer {name} failed:\n{stderr}"
        assert json.loads(stdout) == ["alpha", "beta"]

    client = _client(server_uri)
    try:
        assert client.get_default_database()["shared"].count_documents({}) == 2
    finally:
        client.close()


# -- URIs -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base", "expected"),
    [
        pytest.param("mongomock://localhost", "mongomock://localhost/th_x", id="mongomock"),
        pytest.param("mongodb://127.0.0.1:27017", "mongodb://127.0.0.1:27017/th_x", id="bare"),
        pytest.param(
            "mongodb://h1:1,h2:2/old?replicaSet=rs0&tls=true",
            "mongodb://h1:1,h2:2/th_x?replicaSet=rs0&tls=true",
            id="options-kept",
        ),
        pytest.param(
            "mongodb://ann:pw@h/ml?replicaSet=rs0",
            "mongodb://ann:pw@h/th_x?replicaSet=rs0&authSource=ml",
            id="auth-db-pinned",
        ),
        pytest.param("mongodb://ann:pw@h", "mongodb://ann:pw@h/th_x?authSource=admin", id="auth-admin-pinned"),
        pytest.param(
            "mongodb://ann:pw@h/ml?authSource=users",
            "mongodb://ann:pw@h/th_x?authSource=users",
            id="auth-source-kept",
        ),
    ],
)
def test_with_database(base: str, expected: str) -> None:
    assert with_database(base, "th_x") == expected


def test_with_database_rejects_other_schemes() -> None:
    with pytest.raises(ValueError):
        with_database("postgres://h/db", "th_x")


# -- scripts and deployment files ------------------------------------------------------------------


@pytest.mark.parametrize("script", ["tests/run.sh", ".ci/run"])
def test_shell_script_syntax(script: str) -> None:
    result = subprocess.run(["bash", "-n", str(REPO_ROOT / script)], check=False, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_docker_compose_file() -> None:
    import yaml  # from the "test" extra

    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"mongodb", "runner"} <= services.keys()

    mongodb = services["mongodb"]
    assert "rs.initiate" in " ".join(mongodb["healthcheck"]["test"])
    assert "mongodb-data:/data/db" in mongodb["volumes"]
    assert "mongodb-data" in compose["volumes"]

    runner = services["runner"]
    assert runner["build"]["dockerfile"] == "runners/Dockerfile"
    assert runner["depends_on"]["mongodb"]["condition"] == "service_healthy"
    assert runner["command"][0] == "runner"  # the image's ENTRYPOINT is `tensorhub`
