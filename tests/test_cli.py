"""The command line: thin commands over the library, errors as one line and exit status 1."""
from __future__ import annotations

import uuid

import numpy as np
from click.testing import CliRunner

from tensorhub import TensorHub
from tensorhub.cli import main


def test_listing_and_managing_from_the_command_line():
    uri = f"mongomock://localhost/cli_{uuid.uuid4().hex[:8]}"
    hub = TensorHub(uri, project_name="p")
    hub.save_dataset(np.ones(3), "digits", split="train")
    hub.create_task("t", source="raise ValueError('x')", max_attempts=1)
    hub.run_top_task("t")
    cli = CliRunner()

    def run(*args: str) -> str:
        result = cli.invoke(main, [*args, "--uri", uri, "--project", "p"])
        assert result.exit_code == 0, result.output
        return result.output

    assert "digits v1" in run("datasets") and "split" in run("datasets")
    assert "failed" in run("tasks", "list", "--status", "failed")
    assert "requeue: 1 task(s)" in run("tasks", "requeue", "--task-name", "t")
    assert "pending" in run("tasks", "list")
    assert "delete: 1 task(s)" in run("tasks", "delete")
    hub.db.client.drop_database(hub.db.name)


def test_errors_are_one_line_and_runner_refuses_the_embedded_store():
    cli = CliRunner()
    failed = cli.invoke(main, ["tasks", "list", "--uri", "mongodb://u:secret@127.0.0.1:9/x", "--project", "p"])
    assert failed.exit_code == 1 and "ConnectionFailed" in failed.output and "secret" not in failed.output
    refused = cli.invoke(main, ["runner", "--uri", "mongomock://", "--project", "p"])
    assert refused.exit_code == 2 and "embedded" in refused.output
