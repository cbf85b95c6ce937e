"""Connecting: URIs, TensorLayer's ip/port form with real authentication, clear failures,
the embedded store, indexes, and the raw database for custom queries."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from ferretdb import FerretDBServer

from tensorhub import TensorHub
from tensorhub.errors import ConnectionFailed, InvalidArgument, InvalidField


def test_unreachable_server_names_the_uri_without_password():
    with pytest.raises(ConnectionFailed) as caught:
        TensorHub("mongodb://ann:s3cret@127.0.0.1:9/ml", project_name="p", timeout_ms=300)
    message = str(caught.value)
    assert "ann:***@127.0.0.1:9" in message and "s3cret" not in message
    assert "docker compose" in message and "mongomock://" in message


def test_bad_uri_and_arguments_are_refused():
    with pytest.raises(InvalidArgument, match="unsupported URI"):
        TensorHub("postgres://x", project_name="p")
    with pytest.raises(InvalidArgument, match="project_name"):
        TensorHub("mongomock://", project_name="")
    with pytest.raises(InvalidArgument, match="username needs a password"):
        TensorHub(ip="localhost", username="ann")


def test_embedded_store_is_shared_within_the_process():
    a = TensorHub("mongomock://localhost/shared_test", project_name="p")
    b = TensorHub("mongomock://localhost/shared_test", project_name="p")
    a.save_training_log(step=1)
    assert len(b.find_logs("training")) == 1
    assert TensorHub("mongomock://", project_name="p").db.name == "tensorhub"
    a.db.client.drop_database("shared_test")


def test_raw_database_and_indexes(hub):
    assert hub.db.name in hub.uri
    hub.save_dataset(np.ones(2), "d")
    assert hub.db["datasets"].count_documents({"dataset_name": "d"}) == 1  # custom queries on hub.db
    names = {ix["name"] for ix in hub.db["datasets"].list_indexes()}
    assert "_hub.project_1_dataset_name_1__hub.version_-1" in names
    TensorHub(hub.uri, project_name="again").close()  # re-creating indexes is harmless


def test_field_values_become_natural_bson(hub):
    naive = dt.datetime(2024, 5, 1, 12, 0)
    hub.save_testing_log(acc=np.float64(0.5), n=np.int64(3), when=naive, shape=(2, 3),
                         hp={"lr": np.float32(0.25), "layers": [np.int32(1)]})
    doc = hub.db["logs"].find_one()
    assert doc["acc"] == 0.5 and type(doc["n"]) is int and doc["shape"] == [2, 3]
    assert doc["hp"] == {"lr": 0.25, "layers": [1]}
    assert doc["when"] == naive.replace(tzinfo=dt.timezone.utc)


def test_query_operators_dotted_paths_and_refusals(hub):
    for lr, acc in ((0.1, 0.8), (0.01, 0.9), (0.001, 0.7)):
        hub.save_validation_log(hp={"lr": lr}, acc=acc)
    assert len(hub.find_logs(**{"hp.lr": {"$lt": 0.05}})) == 2
    assert len(hub.find_logs(**{"$or": [{"acc": 0.8}, {"acc": 0.7}]})) == 2
    assert len(hub.find_logs(acc={"$in": [0.9, 0.7]})) == 2
    with pytest.raises(InvalidField, match=r"\$where"):
        hub.find_logs(**{"$where": "1"})
    with pytest.raises(InvalidField, match="JavaScript"):
        hub.find_logs(acc={"$where": "1"})


@pytest.fixture(scope="module")
def auth_server():
    server = FerretDBServer(extra_args=["--test-enable-new-auth", "--setup-database=labdb",
                                        "--setup-username=ann", "--setup-password=pa55word"])
    with server:
        yield server


@pytest.mark.real_server
def test_tensorlayer_form_authenticates(auth_server):
    hub = TensorHub(ip="127.0.0.1", port=auth_server.port, dbname="labdb", username="ann",
                    password="pa55word", project_name="tutorial")
    try:
        hub.save_training_log(epoch=1)
        assert len(hub.find_logs()) == 1 and hub.db.name == "labdb"
    finally:
        hub.close()
    with pytest.raises(ConnectionFailed, match="refused"):
        TensorHub(ip="127.0.0.1", port=auth_server.port, dbname="labdb", username="ann",
                  password="wrong", project_name="tutorial")


SECRET_URIS = [
    "mongodb://ann:hunter2@127.0.0.1:1/db",              # well-formed
    "mongodb://ann:hun/ter2@127.0.0.1:1/db",             # unescaped '/' in the password
    "mongodb://ann:hun@ter2@127.0.0.1:1/db",             # unescaped '@'
    "mongodb://ann:hun:ter2@127.0.0.1:1/db",             # unescaped ':'
    "mongodb://ann:p%40ss%2Fhunter2@127.0.0.1:1/db",     # escaped properly
]


@pytest.mark.parametrize("uri", SECRET_URIS)
def test_no_part_of_a_password_leaks_into_errors(uri):
    import traceback

    from tensorhub.connection import redact
    from tensorhub.errors import TensorHubError

    assert "hunter2" not in redact(uri) and "ter2" not in redact(uri)
    with pytest.raises(TensorHubError) as caught:
        TensorHub(uri, project_name="p", timeout_ms=200)
    text = "".join(traceback.format_exception(caught.value))
    assert "ter2" not in text and "hun" not in text.replace("hunter", "")  # no fragment either
    assert "ann" in str(caught.value)  # the user name is kept: it helps, and is no secret


def test_embedded_store_uri_hides_its_password_too():
    hub = TensorHub("mongomock://ann:hunter2@localhost/secret_test", project_name="p")
    assert "hunter2" not in repr(hub) and "hunter2" not in hub.uri
    hub.db.client.drop_database("secret_test")


def test_cli_and_runner_never_print_the_password():
    import subprocess
    import sys

    for args in (["tasks", "list"], ["runner", "--lease-seconds", "4", "--wait-for-server", "2"]):
        done = subprocess.run([sys.executable, "-m", "tensorhub.cli", *args, "--uri",
                               "mongodb://ann:hun/ter2@127.0.0.1:1/db", "--project", "p"],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode != 0 and "ter2" not in done.stdout + done.stderr
        assert "ann:***@" in done.stdout + done.stderr


def test_tensorlayer_positional_and_keyword_forms_build_the_same_hub():
    from tensorhub.hub import _tensorlayer_positional

    named = _tensorlayer_positional(["localhost", 27017, "temp", None, "password", "tutorial"],
                                    dict(ip=None, port=None, dbname=None, username=None, password=None,
                                         project_name=None))
    assert named == {"ip": "localhost", "port": 27017, "dbname": "temp", "username": None,
                     "password": "password", "project_name": "tutorial"}
    from tensorhub.connection import build_uri

    # TensorLayer's example passes a password without a username: that means "no authentication".
    assert build_uri("localhost", 27017, "temp", None, "password") == "mongodb://localhost:27017/temp"


def test_project_none_is_tensorlayers_default_a_project_of_its_own():
    a = TensorHub("mongomock://localhost/none_test")               # no project given
    b = TensorHub("mongomock://localhost/none_test", project_name=None)
    c = TensorHub("mongomock://localhost/none_test", project_name="named")
    a.save_training_log(x=1)
    assert a.project_name is None and len(b.find_logs()) == 1 and c.find_logs().empty
    assert a.db["logs"].find_one()["_hub"]["project"] is None
    a.db.client.drop_database("none_test")
