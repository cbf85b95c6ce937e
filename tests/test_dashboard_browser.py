"""The dashboard as a person uses it: a real FerretDB server, real runner processes, the
``tensorhub dashboard`` command as a subprocess, and a real headless Chromium (Debian's
``chromium``, driven with Playwright) that watches a task go pending → running → finished without
reloading, sorts the leaderboard, finds a run's learning curve drawn (and growing), sees a killed
runner flagged lost, confirms that user strings stay text, cancels with a confirmation, shows
the outage banner while MongoDB is unreachable, and asks for a token once.

The browser tests are about the dashboard, not the storage engine, so they run on FerretDB/SQLite
only. ``bash tests/run.sh`` installs Debian's ``chromium`` when it is missing and exports its path
as ``TENSORHUB_CHROMIUM``; without a Chromium these tests fail, they never skip. Screenshots of
every page go to the test's temporary directory, and also to ``TENSORHUB_DASHBOARD_SCREENSHOTS``
(a directory) when set: ``docs/dashboard/`` holds the README's.
"""
from __future__ import annotations

import os
import queue
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pymongo
import pytest
from mongo_uri import with_database
from playwright.sync_api import BrowserContext, Page, expect, sync_playwright

from tensorhub import TensorHub

pytestmark = [pytest.mark.slow, pytest.mark.real_server]
ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_ENV = "TENSORHUB_CHROMIUM"
SCREENSHOTS_ENV = "TENSORHUB_DASHBOARD_SCREENSHOTS"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
XSS = "<script>alert(1)</script>"
XSS_IMG = "<img src=x onerror=alert(2)>"

WAIT_FOR_FLAG = """
import os, time
from tensorhub import current_task
run = current_task().run
run.log_epoch(1, loss=1.0, val_loss=1.2)
while not os.path.exists(flag):
    time.sleep(0.05)
for epoch in (2, 3, 4):
    run.log_epoch(epoch, loss=1.0 / epoch, val_loss=1.2 / epoch + 0.05)
print("done waiting")
"""

TRAIN = """
import numpy as np
from tensorhub import current_task
task = current_task()
task.hub.find_top_dataset("digits")
run = task.run
for epoch in range(1, 7):
    run.log_epoch(epoch, loss=1.0 / (epoch * units), val_loss=1.0 / (epoch * units) + 0.02 * epoch,
                  accuracy=1 - 0.5 / (epoch * units), val_accuracy=1 - 0.6 / (epoch * units))
val = 1.0 / (6 * units) + 0.12
run.checkpoint([np.full(2, units)], epoch=6, val_loss=val)
task.hub.save_model([np.full(2, units)], model_name="mlp", val_loss=val, units=units)
"""

FAILING = f"""
print({XSS_IMG!r})
raise ValueError({XSS!r})
"""


# -- the pieces: a browser, a database, the dashboard, runners ----------------------------------------
def chromium_path() -> str:
    """Debian's chromium: TENSORHUB_CHROMIUM, else /usr/bin/chromium, else on PATH. Missing = failure."""
    candidates = [os.environ.get(CHROMIUM_ENV), "/usr/bin/chromium", shutil.which("chromium")]
    for path in candidates:
        if path and os.access(path, os.X_OK):
            return path
    pytest.fail(f"no Chromium for the dashboard's browser tests: install Debian's chromium package "
                f"(bash tests/run.sh does) or set {CHROMIUM_ENV}", pytrace=False)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    executable = chromium_path()
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=executable, headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1360, "height": 860})
        context.set_default_timeout(15_000)
        expect.set_options(timeout=15_000)      # a loaded CI machine: polls can take a few seconds
        yield context
        context.close()


@pytest.fixture(scope="module")
def uri(ferretdb_uri: str) -> Iterator[str]:
    """A fresh database on this session's FerretDB (SQLite), shared by the module's tests."""
    name = f"th_{secrets.token_hex(4)}"
    yield with_database(ferretdb_uri, name)
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(ferretdb_uri, serverSelectionTimeoutMS=10_000)
    client.drop_database(name)
    client.close()


class Dashboard:
    """``tensorhub dashboard --port 0`` in a subprocess; ``url`` is the address it printed."""

    def __init__(self, uri: str, log: Path, *extra: str) -> None:
        self._log = log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tensorhub.cli", "dashboard", "--uri", uri, "--project", "test", "--port", "0",
             *extra], cwd=ROOT, stdout=subprocess.PIPE, stderr=self._log, text=True)
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in self.proc.stdout or []], daemon=True).start()
        try:
            first = lines.get(timeout=60)
        except queue.Empty:
            self.stop()
            raise AssertionError(f"the dashboard printed no address: {log.read_text()[-2000:]}") from None
        found = re.search(r"http://127\.0\.0\.1:\d+/", first)
        assert found, first
        self.url = found.group(0)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@pytest.fixture(scope="module")
def dashboard(uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    started = Dashboard(uri, tmp_path_factory.mktemp("dashboard") / "dashboard.log", "--allow-actions")
    yield started.url
    started.stop()


@pytest.fixture
def hub(uri: str) -> Iterator[TensorHub]:
    opened = TensorHub(uri, project_name="test")
    yield opened
    opened.close()


@pytest.fixture
def runners(uri: str) -> Iterator[Callable[..., subprocess.Popen]]:
    started: list[subprocess.Popen] = []

    def start(*args: str) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-m", "tensorhub.cli", "runner", "--uri", uri, "--project", "test",
                                 "--lease-seconds", "3", "--poll-interval", "0.2", "--log-level", "WARNING", *args],
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


@pytest.fixture
def page(browser: BrowserContext) -> Iterator[Page]:
    opened = browser.new_page()
    dialogs: list[str] = []
    errors: list[str] = []

    def dialog(d: Any) -> None:
        dialogs.append(d.message)
        d.accept() if opened.answer_yes else d.dismiss()   # type: ignore[attr-defined]

    opened.on("dialog", dialog)
    opened.on("pageerror", lambda err: errors.append(str(err)))
    opened.dialogs = dialogs  # type: ignore[attr-defined]   # every alert/confirm the page showed
    opened.answer_yes = False  # type: ignore[attr-defined]  # how confirm() dialogs are answered
    yield opened
    opened.close()
    assert errors == [], errors        # no script error on any page a test opened


@pytest.fixture
def shot(tmp_path: Path) -> Callable[[Page, str], Path]:
    def take(page: Page, name: str) -> Path:
        path = tmp_path / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        if os.environ.get(SCREENSHOTS_ENV):
            target = Path(os.environ[SCREENSHOTS_ENV])
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, target / path.name)
        return path
    return take


def wait_until(condition: Callable[[], object], timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


# -- the tests ---------------------------------------------------------------------------------------------
def test_a_task_goes_pending_running_finished_without_reloading(hub, dashboard, runners, page, shot, tmp_path):
    flag = tmp_path / "go"
    task_id = hub.create_task("live", source=WAIT_FOR_FLAG, hyper_parameters={"flag": str(flag)})
    hub.create_grid_tasks("sweep-waiting", source="x = 1", grid={"n": [1, 2, 3]})   # a sweep nobody runs yet
    page.goto(dashboard + "queue")
    page.evaluate("window.stayed = true")         # gone if the page reloaded
    status = page.locator(f'#tasks tr[data-task-id="{task_id}"] .status')
    expect(status).to_have_text("pending")
    runners("--task-name", "live")
    expect(status).to_have_text("running", timeout=30_000)
    expect(page.locator('#summary tr[data-task-name="live"] td.s-running')).to_have_text("1")
    shot(page, "queue")

    page.goto(dashboard + f"tasks/{task_id}")
    run_link = page.locator("#task-runs a").first
    expect(run_link).to_be_visible()
    run_link.click()                               # the attempt's run, while it runs
    expect(page.locator("#run-status .status")).to_have_text("running")
    page.evaluate("window.stayed = true")
    points = "(document.querySelector('#curves .curve[data-metric=\"loss\"]')?.data || [{x: []}])[0].x.length"
    page.wait_for_function(f"() => {points} === 1")      # epoch 1 drawn; the task waits for the flag
    flag.write_text("go")                          # the task logs three more epochs and ends
    page.wait_for_function(f"() => {points} === 4", timeout=30_000)
    expect(page.locator("#run-status .status")).to_have_text("finished", timeout=30_000)
    assert page.evaluate("window.stayed") is True   # the curve grew without a reload
    shot(page, "run-live")

    page.goto(dashboard + "queue?task_name=live")
    page.evaluate("window.stayed = true")
    expect(page.locator(f'#tasks tr[data-task-id="{task_id}"] .status')).to_have_text("finished", timeout=30_000)
    expect(page.locator('#summary tr[data-task-name="live"] td.progress')).to_contain_text("1/1 (100%)")
    assert page.evaluate("window.stayed") is True
    page.goto(dashboard + f"tasks/{task_id}")
    expect(page.locator("#task-output")).to_contain_text("done waiting")
    shot(page, "task")


def test_the_leaderboard_sorts_and_a_run_shows_its_learning_curves_and_lineage(hub, dashboard, runners, page, shot):
    hub.save_dataset(np.arange(10), "digits", split="train")
    hub.create_grid_tasks("fit", source=TRAIN, grid={"units": [1, 4, 2]}, saved_result_keys=["val"])
    runners("--task-name", "fit", "--slots", "2")
    wait_until(lambda: hub.task_counts("fit")["finished"] == 3, 90, "the three fits")

    page.goto(dashboard + "runs?task_name=fit")
    header = page.locator('#leaderboard th[data-column="hp.units"] a')
    expect(header).to_be_visible()
    expect(page.locator("#filter-metric")).to_have_value("val_loss")
    ranks = page.locator("#leaderboard tbody td:first-child")
    expect(ranks).to_have_text(["1", "2", "3"])
    column = page.locator("#leaderboard thead th").all_text_contents()
    position = next(i for i, name in enumerate(column) if name.startswith("hp.units")) + 1
    units = page.locator(f"#leaderboard tbody td:nth-child({position})")
    expect(units).to_have_text(["4", "2", "1"])                 # best val_loss first: 4 units, then 2, then 1
    shot(page, "runs")
    header.click()                                              # sorted by units, ascending
    expect(units).to_have_text(["1", "2", "4"])
    expect(ranks).to_have_text(["3", "2", "1"])
    assert "sort=hp.units" in page.url and "dir=asc" in page.url
    page.locator('#leaderboard th[data-column="hp.units"] a').click()   # and descending
    expect(units).to_have_text(["4", "2", "1"])
    assert "dir=desc" in page.url

    page.locator("#leaderboard tbody a").first.click()
    curves = page.locator("#curves .curve")
    expect(curves).to_have_count(2)                             # accuracy and loss, train and validation
    expect(page.locator('#curves .curve[data-metric="loss"] .scatterlayer .trace')).to_have_count(2)  # loss, val_loss
    drawn = page.locator('#curves .curve[data-metric="loss"] path.js-line').evaluate_all(
        "nodes => nodes.map(n => (n.getAttribute('d') || '').length)")
    assert sum(length > 20 for length in drawn) >= 2            # two polylines through six epochs
    expect(page.locator("#run-epochs tbody tr")).to_have_count(6)
    expect(page.locator("#run-checkpoints tbody tr")).to_have_count(1)
    expect(page.locator("#run-lineage")).to_contain_text("digits v1")
    expect(page.locator("#run-lineage")).to_contain_text("mlp v")
    expect(page.locator("#run-lineage a").first).to_contain_text("fit")
    shot(page, "run")

    page.goto(dashboard + "models")
    expect(page.locator("#records tbody tr")).to_have_count(3)
    expect(page.locator("#records tbody")).to_contain_text("units=")
    shot(page, "models")
    page.goto(dashboard + "datasets")
    expect(page.locator("#records tbody tr")).to_have_count(1)
    expect(page.locator("#records tbody")).to_contain_text("split=train")
    shot(page, "datasets")


def test_a_killed_runner_is_flagged_lost(hub, dashboard, runners, page, shot):
    gpu_box = runners("--task-name", "nothing-here", "--gpus", "0,1")
    cpu_box = runners("--task-name", "long")
    task_id = hub.create_task("long", source="import time\ntime.sleep(60)")
    page.goto(dashboard + "fleet")
    gpu_row = page.locator(f'#runners tr[data-runner-pid="{gpu_box.pid}"]')
    cpu_row = page.locator(f'#runners tr[data-runner-pid="{cpu_box.pid}"]')
    expect(gpu_row).to_have_attribute("data-state", "running", timeout=60_000)
    expect(cpu_row.locator("ul.slots")).to_contain_text("long", timeout=30_000)
    expect(gpu_row.locator("ul.slots li")).to_have_count(2)
    gpu_box.send_signal(signal.SIGKILL)
    gpu_box.wait()
    expect(gpu_row).to_have_attribute("data-state", "lost", timeout=30_000)      # after its 3 s lease
    expect(gpu_row).to_contain_text("LOST")
    expect(cpu_row).to_have_attribute("data-state", "running")
    shot(page, "fleet")
    hub.cancel_tasks("long")
    wait_until(lambda: hub.get_task(task_id).status == "cancelled", 30, "the cancel")


def test_user_strings_are_shown_as_text(hub, dashboard, runners, page, shot):
    task_id = hub.create_task(XSS, source=FAILING, hyper_parameters={"lr": XSS_IMG}, max_attempts=1, note=XSS)
    runners("--task-name", XSS)
    wait_until(lambda: hub.get_task(task_id).status == "failed", 60, "the failing task")
    page.goto(dashboard + f"queue?task_name={XSS}")
    row = page.locator(f'#tasks tr[data-task-id="{task_id}"]')
    expect(row.locator("td.name")).to_have_text(XSS)
    expect(row.locator("td.hp")).to_have_text(f"lr={XSS_IMG}")
    row.locator("button.expand").click()                        # the failure, opened in place
    detail = page.locator(f'tr[data-detail-of="{task_id}"]')
    expect(detail).to_contain_text(f"failure 1: ValueError: {XSS}")
    expect(detail.locator("pre.trace")).to_contain_text("Traceback (most recent call last)")
    expect(detail.locator("pre.output")).to_contain_text(XSS_IMG)
    time.sleep(2)                                               # it stays open across a refresh
    expect(detail.locator("pre.output")).to_contain_text(XSS_IMG)
    assert page.locator("img").count() == 0
    shot(page, "queue-failure")
    page.goto(dashboard + f"tasks/{task_id}")
    expect(page.locator("#task-name")).to_have_text(XSS)
    expect(page.locator("#task-error")).to_contain_text(f"ValueError: {XSS}")
    expect(page.locator("#task-output")).to_contain_text(XSS_IMG)
    expect(page.locator("#task-fields")).to_contain_text(XSS)
    assert page.title().startswith(f"Task {XSS}")
    assert page.locator("img").count() == 0                     # no element came out of the strings
    assert page.locator("script").count() == 1                  # only the dashboard's own
    assert page.dialogs == []                                   # and nothing ran
    shot(page, "escaping")


def test_cancel_needs_a_confirmation(hub, dashboard, runners, page):
    task_id = hub.create_task("to-cancel", source="import time\ntime.sleep(60)")
    runners("--task-name", "to-cancel")
    page.goto(dashboard + f"tasks/{task_id}")
    expect(page.locator("#task-status .status")).to_have_text("running", timeout=30_000)
    page.locator("#cancel").click()                             # "no" to the confirmation ...
    assert page.dialogs and page.dialogs[-1].startswith("Cancel task to-cancel")
    time.sleep(1.0)
    assert hub.get_task(task_id).status == "running"
    page.answer_yes = True
    page.locator("#cancel").click()                             # ... then "yes"
    expect(page.locator("#task-status .status")).to_have_text("cancelled", timeout=30_000)
    expect(page.locator("#requeue")).to_be_visible()


def test_an_unreachable_server_shows_a_banner_and_the_page_recovers(uri, hub, page, tmp_path):
    from delay_proxy import DelayProxy

    hub.create_task("seen", source="x = 1")
    with DelayProxy.for_uri(uri) as proxy:
        through = Dashboard(proxy.uri_for(uri), tmp_path / "dashboard.log")
        try:
            page.goto(through.url + "queue?task_name=seen")
            expect(page.locator("#tasks tbody tr")).to_have_count(1)
            expect(page.locator("#banner")).to_be_hidden()
            proxy.drop_replies()
            proxy.drop_connections()
            expect(page.locator("#banner")).to_contain_text("Hub unreachable", timeout=30_000)
            expect(page.locator("#live")).to_contain_text("stale")      # the numbers shown are old
            expect(page.locator("#tasks tbody tr")).to_have_count(1)     # and still shown
            proxy.clear_rules()
            expect(page.locator("#banner")).to_be_hidden(timeout=30_000)
            expect(page.locator("#live")).to_have_text("live")
            expect(page.locator("#tasks tbody tr")).to_have_count(1)
        finally:
            through.stop()


def test_a_token_is_asked_for_once_and_then_kept_in_a_cookie(uri, hub, browser, page, tmp_path):
    hub.create_task("guarded", source="x = 1")
    token = "s3cret-" + secrets.token_hex(8)
    guarded = Dashboard(uri, tmp_path / "dashboard.log", "--token", token)
    try:
        refused = page.goto(guarded.url + "queue")
        assert refused is not None and refused.status == 401 and "token" in page.content()
        page.goto(guarded.url + f"queue?token={token}&task_name=guarded")
        assert page.url == guarded.url + "queue?task_name=guarded"     # the token left the address
        expect(page.locator("#tasks tbody tr")).to_have_count(1)          # the page's polls use the cookie
        expect(page.locator("#live")).to_have_class("live ok")
        page.goto(guarded.url + "fleet")
        expect(page.locator("#fleet-counts")).to_contain_text("running")
        cookie = next(c for c in browser.cookies() if c["name"] == "tensorhub_dashboard")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        assert page.evaluate("document.cookie") == ""                     # no script can read it
    finally:
        browser.clear_cookies()
        guarded.stop()
