"""The ``tensorhub`` command: thin wrappers that parse, call the library and print.

    tensorhub runner --uri mongodb://hub.lab:27017/ml --project mnist --gpus 0,1
    tensorhub tasks list --project mnist --status failed
    tensorhub tasks requeue --project mnist --task-name train
"""
from __future__ import annotations

import datetime as dt
import functools
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

import click

from tensorhub import defaults
from tensorhub.errors import TensorHubError

uri_option = click.option("--uri", envvar="TENSORHUB_URI", required=True, show_envvar=True,
                          help="MongoDB URI of the hub, e.g. mongodb://hub.lab:27017/ml")
project_option = click.option("--project", envvar="TENSORHUB_PROJECT", required=True, show_envvar=True,
                              help="Project name (what TensorHub calls project_name).")


def _hub(uri: str, project: str, **client_options: Any) -> Any:
    from tensorhub.hub import TensorHub

    return TensorHub(uri, project_name=project, **client_options)


def _connect_patiently(uri: str, project: str, patience: float, **client_options: Any) -> Any:
    """A daemon may start before its server (boot order, a restart): retry with backoff."""
    from tensorhub.errors import ConnectionFailed

    deadline, delay = time.monotonic() + patience, 1.0
    while True:
        try:
            return _hub(uri, project, **client_options)
        except ConnectionFailed as err:
            if time.monotonic() + delay > deadline:
                raise
            logging.getLogger("tensorhub.runner").warning("%s; retrying in %.0fs", err, delay)
            time.sleep(delay)
            delay = min(delay * 2, 30.0)


def reports_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn tensorhub's own errors into a one-line message and exit status 1."""
    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except TensorHubError as err:
            raise click.ClickException(f"{type(err).__name__}: {err}") from err
    return wrapper


@click.group()
@click.version_option(package_name="tensorhub")
def main() -> None:
    """tensorhub: datasets, models and hyperparameter tasks shared through one MongoDB."""


@main.command()
@uri_option
@project_option
@click.option("--task-name", default=None, help="Only claim tasks with this name.")
@click.option("--gpus", default=None,
              help="Comma-separated GPU ids; one task slot per GPU (sets CUDA_VISIBLE_DEVICES).")
@click.option("--slots", default=1, show_default=True, help="Task slots when --gpus is not given.")
@click.option("--max-tasks", type=int, default=None, help="Exit after running this many tasks.")
@click.option("--lease-seconds", default=defaults.LEASE_SECONDS, show_default=True,
              help="Lease length; renewed every third of it.")
@click.option("--poll-interval", default=defaults.POLL_INTERVAL, show_default=True,
              help="Longest wait between polls when idle (2 s when a change stream wakes us instead).")
@click.option("--grace-seconds", default=defaults.GRACE_SECONDS, show_default=True,
              help="On SIGTERM, how long running tasks may finish.")
@click.option("--allow-pickle", is_flag=True,
              help="Also run function tasks (dill): only if you trust who queues tasks.")
@click.option("--wait-for-server", default=300.0, show_default=True,
              help="Seconds to keep retrying a server that does not answer at start (0: fail at once).")
@click.option("--log-level", default="INFO", show_default=True)
@reports_errors
def runner(uri: str, project: str, task_name: str | None, gpus: str | None, slots: int, max_tasks: int | None,
           lease_seconds: float, poll_interval: float, grace_seconds: float, allow_pickle: bool,
           wait_for_server: float, log_level: str) -> None:
    """Claim and run tasks until stopped (SIGTERM once: finish and exit; twice: hand back now)."""
    from tensorhub.runner.daemon import Runner, RunnerConfig

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    gpu_list = [g.strip() for g in gpus.split(",") if g.strip()] if gpus else None
    config = RunnerConfig(task_name=task_name, gpus=gpu_list, slots=slots, max_tasks=max_tasks,
                          lease_seconds=lease_seconds, poll_interval=poll_interval,
                          grace_seconds=grace_seconds, allow_pickle=allow_pickle)
    # A runner must never sit in one server call longer than a fraction of its lease: it has
    # to notice a lost server in time to kill its tasks before another runner may take them.
    call_ms = max(1000, int(lease_seconds * 1000 / 8))
    hub = _connect_patiently(uri, project, wait_for_server, timeout_ms=call_ms, socketTimeoutMS=call_ms,
                             connectTimeoutMS=call_ms)
    if hub.embedded:
        raise click.UsageError("a runner in its own process cannot share the embedded mongomock:// store; "
                               "use hub.run_tasks() in the distributor's process, or a MongoDB URI")
    the_runner = Runner(hub, config)
    the_runner.install_signal_handlers()
    done = the_runner.run()
    click.echo(f"runner stopped after {done} task(s)")


@main.group()
def tasks() -> None:
    """Inspect and manage tasks."""


@tasks.command("list")
@uri_option
@project_option
@click.option("--task-name", default=None)
@click.option("--status", default=None, type=click.Choice(["pending", "running", "finished", "failed", "cancelled"]))
@reports_errors
def tasks_list(uri: str, project: str, task_name: str | None, status: str | None) -> None:
    """One line per task: id, name, status, attempts, result or error."""
    query = {"status": status} if status else {}
    for task in _hub(uri, project).find_tasks(task_name, **query):
        detail = task.result if task.status == "finished" else (task.error or {}).get("message", "")
        click.echo(f"{task.id}  {task.task_name:<16} {task.status:<9} attempts={task.attempts}  "
                   f"{task.hyper_parameters}  {detail or ''}")


def _bulk(action: str) -> Callable[..., None]:
    @uri_option
    @project_option
    @click.option("--task-name", default=None)
    @reports_errors
    def command(uri: str, project: str, task_name: str | None) -> None:
        hub = _hub(uri, project)
        count = getattr(hub, f"{action}_tasks")(task_name)
        click.echo(f"{action}: {count} task(s)")
    command.__doc__ = f"{action.capitalize()} matching tasks."
    return command


for _action in ("cancel", "requeue", "delete"):
    tasks.command(_action)(_bulk(_action))


@tasks.command("wait")
@uri_option
@project_option
@click.option("--task-name", default=None)
@click.option("--timeout", type=float, default=None)
@reports_errors
def tasks_wait(uri: str, project: str, task_name: str | None, timeout: float | None) -> None:
    """Wait until no matching task is pending or running."""
    counts = _hub(uri, project).wait_for_tasks(task_name, timeout=timeout)
    click.echo(" ".join(f"{k}={v}" for k, v in counts.items()))


@tasks.command("output")
@uri_option
@project_option
@click.argument("task_id")
@reports_errors
def tasks_output(uri: str, project: str, task_id: str) -> None:
    """Print a task's full stdout/stderr from its last runner attempt."""
    click.echo(_hub(uri, project).task_output(task_id), nl=False)


def _record_list(kind: str) -> Callable[..., None]:
    """``tensorhub models`` / ``tensorhub datasets``: one line per record, nothing loaded."""
    @uri_option
    @project_option
    @click.option("--name", default=None)
    @reports_errors
    def command(uri: str, project: str, name: str | None) -> None:
        for rec in getattr(_hub(uri, project), f"list_{kind}")(name):
            click.echo(f"{rec.name} v{rec.version}  {rec.created_at:%Y-%m-%d %H:%M}  {rec.size / 1e6:.1f} MB  "
                       f"{rec.summary}  {rec.fields}")
    command.__doc__ = f"List {kind} (newest first) without loading them."
    return command


for _kind in ("models", "datasets"):
    main.command(_kind)(_record_list(_kind))


@main.command("status")
@uri_option
@project_option
@reports_errors
def status(uri: str, project: str) -> None:
    """The queue (counts by task name and status, oldest pending) and the fleet of runners."""
    from rich.console import Console

    from tensorhub.status import status_view

    Console().print(status_view(_hub(uri, project)))


@main.command("top")
@uri_option
@project_option
@click.option("--interval", default=2.0, show_default=True, help="Seconds between refreshes.")
@reports_errors
def top(uri: str, project: str, interval: float) -> None:
    """``tensorhub status``, refreshed every INTERVAL seconds until Ctrl-C."""
    from rich.live import Live

    from tensorhub.status import status_view

    hub = _hub(uri, project)
    try:
        with Live(status_view(hub), refresh_per_second=4, screen=False) as live:
            while True:
                time.sleep(interval)
                live.update(status_view(hub))
    except KeyboardInterrupt:
        pass


@main.command("runs")
@uri_option
@project_option
@click.option("--task-name", default=None, help="Only runs of this task.")
@click.option("--status", default=None, help="Only runs in this status (running, finished, failed, lost...).")
@click.option("--limit", default=50, show_default=True, help="Newest runs first; at most this many.")
@reports_errors
def runs(uri: str, project: str, task_name: str | None, status: str | None, limit: int) -> None:
    """List runs (newest first): status, attempt, epochs, last metrics, hyperparameters."""
    query = {"status": status} if status else {}
    frame = _hub(uri, project).list_runs(task_name, as_frame=True, **query).head(limit)
    if frame.empty:
        click.echo("no runs")
        return
    shown = [c for c in frame.columns if c not in ("task_id", "parent_run_id", "ended_at", "task_name")]
    click.echo(frame[shown].to_string(index=False))


@main.command("best")
@uri_option
@project_option
@click.option("--metric", required=True, help="The epoch metric to rank by, e.g. val_accuracy.")
@click.option("--max/--min", "maximize", default=True, show_default=True, help="Higher is better, or lower.")
@click.option("--task-name", default=None)
@reports_errors
def best(uri: str, project: str, metric: str, maximize: bool, task_name: str | None) -> None:
    """Print the best run by its best epoch's METRIC, with that epoch's metrics and hyperparameters."""
    found = _hub(uri, project).get_best_model(metric, "max" if maximize else "min", task_name)
    if found is None:
        raise click.ClickException(f"no run logged {metric!r}")
    click.echo(f"run {found.run_id} ({found.run_name}): {metric}={found.value} at epoch {found.epoch}")
    for name, value in sorted(found.metrics.items()):
        click.echo(f"  {name} = {value}")
    for name, value in sorted(found.hyper_parameters.items()):
        click.echo(f"  hp.{name} = {value}")
    if found.record is not None:
        click.echo(f"  model: {found.record.name} v{found.record.version} ({found.record.id})")


@main.command("orphans")
@uri_option
@project_option
@click.option("--older-than-hours", default=24.0, show_default=True)
@click.option("--delete", is_flag=True, help="Delete them instead of listing them.")
@reports_errors
def orphans(uri: str, project: str, older_than_hours: float, delete: bool) -> None:
    """List (or delete) blobs nothing references, left behind by crashed saves."""
    hub = _hub(uri, project)
    age = dt.timedelta(hours=older_than_hours)
    if delete:
        click.echo(f"deleted {hub.delete_orphan_blobs(age)} orphan blob(s)")
    else:
        for blob_id in hub.find_orphan_blobs(age):
            click.echo(str(blob_id))


@main.command("dashboard")
@uri_option
@project_option
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but loopback needs --token.")
@click.option("--port", default=8765, show_default=True, help="Port to listen on (0: a free one).")
@click.option("--token", envvar="TENSORHUB_DASHBOARD_TOKEN", default=None, show_envvar=True,
              help="Secret every request must present (?token=... once, or Authorization: Bearer).")
@click.option("--allow-actions", is_flag=True, help="Enable cancel and requeue (read-only without it).")
@reports_errors
def dashboard(uri: str, project: str, host: str, port: int, token: str | None, allow_actions: bool) -> None:
    """Serve the web dashboard (queue, fleet, runs, models, datasets); needs tensorhub[dashboard]."""
    from tensorhub.connection import MOCK_SCHEME

    if uri.startswith(MOCK_SCHEME):
        raise click.UsageError("mongomock:// is an in-process store that no other process can reach, so a "
                               "dashboard in its own process would see nothing: use a MongoDB URI, or call "
                               "tensorhub.dashboard.serve(hub) in the process that holds the hub")
    try:
        from tensorhub.dashboard import serve
        from tensorhub.dashboard.source import CLIENT_OPTIONS
    except ImportError as err:
        raise click.ClickException(f"the dashboard needs its extra: pip install 'tensorhub[dashboard]' ({err})") \
            from err
    serve(lambda: _hub(uri, project, **CLIENT_OPTIONS), host, port, token=token, allow_actions=allow_actions)


@main.group()
def plot() -> None:
    """Draw runs to an image (.png, .svg, .pdf...) or an interactive page (.html); needs tensorhub[plots]."""


def _draw(kind: str, output: str, hub: Any, **options: Any) -> None:
    from tensorhub import plots

    if output.lower().endswith((".html", ".htm")):
        click.echo(plots.to_html(kind, output, hub=hub, **options))
    else:
        click.echo(plots.save(getattr(plots, kind)(hub=hub, **options), output))


output_option = click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
                             help="File to write; its suffix picks the format (.png, .svg, .pdf, .html).")


@plot.command("learning-curves")
@uri_option
@project_option
@click.option("--task-name", default=None, help="Only runs of this task.")
@click.option("--metric", "metrics", multiple=True, default=("loss",), show_default=True,
              help="Metric to plot, one axes each; repeat for more (--metric loss --metric accuracy).")
@click.option("--split", "splits", multiple=True, default=("train", "validation"), show_default=True,
              type=click.Choice(["train", "validation", "test"]), help="Splits to draw; repeatable.")
@output_option
@reports_errors
def plot_learning_curves(uri: str, project: str, task_name: str | None, metrics: tuple[str, ...],
                         splits: tuple[str, ...], output: str) -> None:
    """Each metric against the epoch, one line per run and split."""
    _draw("learning_curves", output, _hub(uri, project), task_name=task_name, metrics=list(metrics),
          splits=list(splits))


@plot.command("performance")
@uri_option
@project_option
@click.option("--task-name", default=None, help="Only runs of this task.")
@click.option("--x", default="loss", show_default=True, help="Metric on the x axis.")
@click.option("--y", default="accuracy", show_default=True, help="Metric on the y axis.")
@click.option("--color", default=None, help="Hyperparameter that colours the points, e.g. hp.n_units.")
@click.option("--split", default="validation", show_default=True, type=click.Choice(["train", "validation", "test"]))
@output_option
@reports_errors
def plot_performance(uri: str, project: str, task_name: str | None, x: str, y: str, color: str | None,
                     split: str, output: str) -> None:
    """Every finished run as one point: --y against --x, coloured by a hyperparameter."""
    _draw("performance", output, _hub(uri, project), task_name=task_name, x=x, y=y, color=color, split=split)


if __name__ == "__main__":
    sys.exit(main())
