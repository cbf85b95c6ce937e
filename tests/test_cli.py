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


def test_runs_and_best_commands(tmp_path):
    from click.testing import CliRunner

    from tensorhub import TensorHub
    from tensorhub.cli import main

    uri = "mongomock://localhost/cli_runs_test"
    hub = TensorHub(uri, project_name="p")
    for units, loss in ((8, 0.5), (32, 0.2)):
        with hub.start_run("sweep", hyper_parameters={"units": units}) as run:
            run.log_epoch(1, val_loss=loss + 0.1)
            run.log_epoch(2, val_loss=loss)
    runner = CliRunner()
    listed = runner.invoke(main, ["runs", "--uri", uri, "--project", "p"])
    assert listed.exit_code == 0 and listed.output.count("sweep") == 2 and "hp.units" in listed.output
    found = runner.invoke(main, ["best", "--uri", uri, "--project", "p", "--metric", "val_loss", "--min"])
    assert found.exit_code == 0 and "val_loss=0.2 at epoch 2" in found.output and "hp.units = 32" in found.output
    missing = runner.invoke(main, ["best", "--uri", uri, "--project", "p", "--metric", "nope"])
    assert missing.exit_code == 1 and "no run logged 'nope'" in missing.output
    hub.db.client.drop_database("cli_runs_test")
