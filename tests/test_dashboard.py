"""The dashboard's server side, through Flask's test client: page data from the facade, strict
parameters (400 with a message), escaping, the token, read-only unless actions are enabled, a
503 while MongoDB is unreachable and recovery after it, and the ``tensorhub dashboard`` command's
refusals. The browser tests are in test_dashboard_browser.py."""
from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Iterator

import numpy as np
import pytest
from click.testing import CliRunner

from tensorhub import TensorHub
from tensorhub.cli import main
from tensorhub.dashboard import create_app

XSS = "<script>alert(1)</script>"


@pytest.fixture
def mock_hub() -> Iterator[TensorHub]:
    hub = TensorHub(f"mongomock://localhost/dash_{uuid.uuid4().hex[:8]}", project_name="p")
    yield hub
    hub.db.client.drop_database(hub.db.name)


def fill(hub: TensorHub) -> dict:
    evil = hub.create_task(XSS, source="raise ValueError('<img src=x onerror=alert(2)>')",
                           hyper_parameters={"lr": "<b>bold</b>"}, max_attempts=1, note="<i>x</i>")
    hub.run_top_task(XSS)
    ids = hub.create_grid_tasks("sweep", source="x = n", grid={"n": [1, 2, 3]}, saved_result_keys="x")
    hub.run_top_task("sweep")
    runs = []
    for units, loss in ((8, 0.5), (32, 0.2), (16, 0.3)):
        with hub.start_run("mlp", hyper_parameters={"units": units}) as run:
            for epoch in (1, 2, 3):
                run.log_epoch(epoch, loss=loss * 2 / epoch, val_loss=loss + 0.1 / epoch)
            run.checkpoint([np.zeros(2)], epoch=3, val_loss=loss)
            hub.save_model([np.ones(2)], model_name="mlp", val_loss=loss, tag=XSS)
        runs.append(run)
    hub.save_dataset(np.arange(4), "digits", split="train")
    return {"evil": evil, "sweep": ids, "runs": runs}


def test_pages_and_their_data(mock_hub):
    made = fill(mock_hub)
    client = create_app(mock_hub).test_client()
    for path in ("/queue", "/fleet", "/runs", "/models", "/datasets", f"/tasks/{made['evil']}",
                 f"/runs/{made['runs'][0].id}"):
        page = client.get(path)
        assert page.status_code == 200 and page.mimetype == "text/html", path
        assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    assert client.get("/").headers["Location"].endswith("/queue")

    queue = client.get("/api/queue").get_json()
    sweep = next(row for row in queue["summary"] if row["task_name"] == "sweep")
    assert (sweep["total"], sweep["done"], sweep["finished"], sweep["pending"]) == (3, 1, 1, 2)
    assert queue["matching"] == 4 and len(queue["tasks"]) == 4
    page = client.get("/api/queue?task_name=sweep&status=pending&per_page=20&page=1&order=oldest").get_json()
    assert [t["hyper_parameters"]["n"] for t in page["tasks"]] == [2, 3] and page["matching"] == 2
    assert client.get("/api/queue?task_name=sweep&per_page=20&page=2").get_json()["tasks"] == []

    task = client.get(f"/api/tasks/{made['evil']}").get_json()
    assert task["status"] == "failed" and task["error"]["type"] == "ValueError"
    assert "onerror" in task["error"]["traceback"] and task["failures"][0]["traceback"]
    assert task["fields"] == {"note": "<i>x</i>"} and len(task["runs"]) == 1

    board = client.get("/api/runs").get_json()
    assert board["metric"] == "val_loss" and board["direction"] == "min"
    at = {c: i for i, c in enumerate(board["columns"])}
    assert [row[at["hp.units"]] for row in board["rows"]] == [32, 16, 8]
    by_units = client.get("/api/runs?sort=hp.units&dir=desc").get_json()
    assert [row[at["hp.units"]] for row in by_units["rows"]] == [32, 16, 8]
    ascending = client.get("/api/runs?sort=hp.units&dir=asc&per_page=20&page=1").get_json()
    assert [row[at["hp.units"]] for row in ascending["rows"]] == [8, 16, 32]
    assert [row[at["rank"]] for row in ascending["rows"]] == [3, 2, 1]
    assert client.get("/api/runs?metric=loss&direction=max").get_json()["rows"][0][at["hp.units"]] == 8

    run = client.get(f"/api/runs/{made['runs'][1].id}").get_json()
    assert [row[0] for row in run["epochs"]] == [1, 2, 3] and "val_loss" in run["epoch_columns"]
    assert run["checkpoints"][0]["epoch"] == 3 and run["models"][0]["model_name"] == "mlp"
    assert run["summary"]["val_loss"]["min"] == pytest.approx(0.2 + 0.1 / 3)

    models = client.get("/api/models?name=mlp&limit=2").get_json()["records"]
    assert [m["version"] for m in models] == [3, 2] and len(models[0]["sha256"]) == 64 and models[0]["size"] > 16
    assert models[0]["run"]["run_name"] == "mlp" and models[0]["fields"]["tag"] == XSS
    datasets = client.get("/api/datasets").get_json()["records"]
    assert datasets[0]["name"] == "digits" and datasets[0]["fields"]["split"] == "train"
    assert client.get("/api/fleet").get_json() == {"counts": {"lost": 0, "running": 0, "stopped": 0}, "runners": []}
    assert client.get("/static/vendor/plotly.min.js").data.startswith(b"/**")   # served from the plotly package


def test_old_counts_show_at_once_with_their_age_while_new_ones_are_counted(mock_hub):
    """On servers that count by decoding every task (FerretDB), counting 10,000 tasks takes seconds:
    a poll gets the last counts at once, one background count runs at a time, and a failed one
    is forgotten so that the next poll asks the server itself (and shows an outage)."""
    from tensorhub.dashboard.data import Recent

    recent = Recent(ttl=0.05, stale_for=60)
    assert recent.get("k", lambda: "first") == "first"
    time.sleep(0.1)
    gate, calls = threading.Event(), []

    def slow_count() -> str:
        calls.append(1)
        gate.wait(10)
        return "second"

    began = time.monotonic()
    assert recent.get("k", slow_count) == "first" and recent.get("k", slow_count) == "first"
    assert time.monotonic() - began < 1 and len(calls) == 1 and recent.age("k") >= 0.1
    gate.set()
    deadline = time.monotonic() + 10
    while recent.get("k", slow_count) != "second" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert recent.get("k", slow_count) == "second" and recent.age("k") < 1

    time.sleep(0.1)

    def broken() -> str:
        raise ConnectionError("server away")

    assert recent.get("k", broken) == "second"            # served, and a background count fails
    deadline = time.monotonic() + 10
    while recent.age("k") is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    with pytest.raises(ConnectionError):                  # nothing stale left: this poll asks and fails
        recent.get("k", broken)

    mock_hub.create_task("t", source="x = 1")
    reply = create_app(mock_hub).test_client().get("/api/queue").get_json()
    assert reply["totals"]["pending"] == 1 and 0 <= reply["counts_age"] < 5


def test_user_strings_are_escaped_in_pages_and_plain_data_in_json(mock_hub):
    made = fill(mock_hub)
    client = create_app(mock_hub).test_client()
    html = client.get(f"/tasks/{made['evil']}").get_data(as_text=True)
    assert XSS not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script src=" in html and html.count("<script") == 1    # our own file, no inline script
    api = client.get("/api/queue")
    assert api.mimetype == "application/json" and api.headers["X-Content-Type-Options"] == "nosniff"
    assert XSS in api.get_data(as_text=True).replace("\\u003c", "<").replace("\\u003e", ">")
    script = client.get("/static/dashboard.js").get_data(as_text=True)
    assert "innerHTML" not in script and "insertAdjacentHTML" not in script and "eval(" not in script


RETRIED = """
from tensorhub import current_task
task = current_task()
run = task.run
start = 0 if task.attempt == 1 else run.resume().epoch
for epoch in range(start + 1, 5):
    run.log_epoch(epoch, loss=1.0 / epoch)
    run.checkpoint([np.full(2, epoch)], epoch=epoch)
    if epoch == 2 and task.attempt == 1:
        raise RuntimeError("the GPU box went away")
"""


def test_a_retried_task_shows_its_attempts_and_the_run_its_ancestry(mock_hub):
    task_id = mock_hub.create_task("retried", source="import numpy as np\n" + RETRIED)
    mock_hub.run_top_task("retried")
    mock_hub.run_top_task("retried")
    client = create_app(mock_hub).test_client()
    task = client.get(f"/api/tasks/{task_id}").get_json()
    assert task["status"] == "finished" and [(r["attempt"], r["status"]) for r in task["runs"]] == \
        [(2, "finished"), (1, "failed")]
    assert task["failures"][0]["type"] == "RuntimeError" and "GPU box" in task["failures"][0]["traceback"]
    second = client.get(f"/api/runs/{task['runs'][0]['id']}").get_json()
    assert [a["id"] for a in second["ancestors"]] == [task["runs"][1]["id"]]
    assert second["parent_run_id"] == task["runs"][1]["id"]
    at = second["epoch_columns"].index("run_id")
    assert [row[0] for row in second["epochs"]] == [1, 2, 3, 4]            # across both attempts
    assert [row[at] for row in second["epochs"]] == [task["runs"][1]["id"]] * 2 + [task["runs"][0]["id"]] * 2
    assert [c["epoch"] for c in second["checkpoints"]] == [4, 3]


def test_nothing_is_loaded_and_no_asset_comes_from_elsewhere(mock_hub, monkeypatch):
    from tensorhub.records import Record

    made = fill(mock_hub)

    def refuse(*args, **kwargs):
        raise AssertionError("the dashboard loaded a stored object")

    monkeypatch.setattr(Record, "load", refuse)
    client = create_app(mock_hub).test_client()
    for path in ("/api/models", "/api/datasets", f"/api/runs/{made['runs'][0].id}", "/api/runs",
                 f"/api/tasks/{made['evil']}", "/api/queue"):
        assert client.get(path).status_code == 200, path
    for path in ("/queue", "/fleet", "/runs", f"/runs/{made['runs'][0].id}", "/models", "/datasets",
                 f"/tasks/{made['evil']}"):
        html = client.get(path).get_data(as_text=True)
        assert not re.search(r'(src|href)="(https?:)?//', html), path     # only our own paths
    script = client.get("/static/dashboard.js").get_data(as_text=True)
    assert "http://" not in script and "https://" not in script


@pytest.mark.parametrize("path, message", [
    ("/api/queue?status=lost", "status must be one of"),
    ("/api/queue?page=0", "page must be a whole number"),
    ("/api/queue?page=1e3", "page must be a whole number"),
    ("/api/queue?per_page=7", "per_page must be one of"),
    ("/api/queue?order=up", "order must be one of"),
    ("/api/queue?task_name=" + "x" * 300, "at most 200"),
    ("/api/queue?$where=1", "unknown parameter '$where'"),
    ("/api/runs?sort=nope", "sort must be one of the leaderboard's columns"),
    ("/api/runs?dir=sideways", "dir must be one of"),
    ("/api/models?limit=-1", "limit must be a whole number"),
    ("/api/tasks/not-an-id", "task id must be 24 hexadecimal digits"),
    ("/runs/123", "run id must be 24 hexadecimal digits"),
    ("/queue?status=%3Cscript%3E", "status must be one of"),
])
def test_bad_parameters_are_a_400_with_a_message(mock_hub, path, message):
    fill(mock_hub)
    response = create_app(mock_hub).test_client().get(path)
    assert response.status_code == 400
    body = response.get_data(as_text=True)
    assert message in body and "Traceback" not in body
    # echoed values are never markup: plain text or JSON, and browsers may not sniff otherwise
    assert response.mimetype in ("text/plain", "application/json") and response.headers["X-Content-Type-Options"] == "nosniff"


def test_missing_things_are_404_and_no_page_shows_a_stack_trace(mock_hub):
    client = create_app(mock_hub).test_client()
    for path in ("/api/tasks/65f000000000000000000000", "/tasks/65f000000000000000000000",
                 "/api/runs/65f000000000000000000000", "/nowhere"):
        response = client.get(path)
        assert response.status_code == 404 and "Traceback" not in response.get_data(as_text=True), path


def test_an_unexpected_error_is_a_500_without_a_trace(mock_hub, monkeypatch):
    from tensorhub.dashboard import data

    def broken(hub):
        raise RuntimeError("secret internals at /srv/x.py line 3")

    monkeypatch.setattr(data, "fleet", broken)
    response = create_app(mock_hub).test_client().get("/api/fleet")
    assert response.status_code == 500 and response.get_json() == {
        "error": "internal error (RuntimeError); see the dashboard's log"}


def test_read_only_by_default_and_actions_need_the_flag_and_the_header(mock_hub):
    task = mock_hub.create_task("t", source="x = 1")
    read_only = create_app(mock_hub).test_client()
    refused = read_only.post(f"/api/tasks/{task}/cancel", headers={"X-Tensorhub-Action": "1"})
    assert refused.status_code == 403 and "read-only" in refused.get_json()["error"]
    assert mock_hub.get_task(task).status == "pending"
    assert 'data-actions="0"' in read_only.get("/queue").get_data(as_text=True)

    client = create_app(mock_hub, allow_actions=True).test_client()
    assert client.post(f"/api/tasks/{task}/cancel").status_code == 403               # no header: CSRF guard
    assert client.post(f"/api/tasks/{task}/cancel", headers={"X-Tensorhub-Action": "1",
                                                            "Origin": "http://evil.example"}).status_code == 403
    assert client.get(f"/api/tasks/{task}/cancel").status_code == 405
    assert mock_hub.get_task(task).status == "pending"
    done = client.post(f"/api/tasks/{task}/cancel", headers={"X-Tensorhub-Action": "1", "Origin": "http://localhost"})
    assert done.get_json() == {"cancelled": 1} and mock_hub.get_task(task).status == "cancelled"
    again = client.post(f"/api/tasks/{task}/requeue", headers={"X-Tensorhub-Action": "1"})
    assert again.get_json() == {"requeued": 1} and mock_hub.get_task(task).status == "pending"
    sweep = {"X-Tensorhub-Action": "1"}
    assert client.post("/api/sweeps/cancel", headers=sweep, data="t").status_code == 400     # JSON only
    assert client.post("/api/sweeps/cancel", headers=sweep, json={"task_name": "t"}).get_json() == {"cancelled": 1}
    assert client.post("/api/sweeps/requeue", headers=sweep, json={"task_name": "t"}).get_json() == {"requeued": 0}
    assert read_only.post("/api/sweeps/cancel", headers=sweep, json={"task_name": "t"}).status_code == 403


def test_a_token_guards_every_request_and_loopback_guards_the_host(mock_hub):
    client = create_app(mock_hub, token="s3cret-token").test_client()
    for path in ("/queue", "/api/queue", "/static/dashboard.js", "/api/queue?token=wrong"):
        assert client.get(path).status_code == 401, path
    assert client.get("/api/queue", headers={"Authorization": "Bearer s3cret-token"}).status_code == 200
    first = client.get("/queue?token=s3cret-token&status=failed")
    assert first.status_code == 303 and first.headers["Location"] == "/queue?status=failed"   # token leaves the URL
    cookie = first.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert client.get("/api/queue").status_code == 200                                # the cookie now
    open_app = create_app(mock_hub).test_client()
    rebound = open_app.get("/api/queue", headers={"Host": "attacker.example:8765"})
    assert rebound.status_code == 403                                                 # DNS rebinding
    assert open_app.get("/api/queue", headers={"Host": "localhost:8765"}).status_code == 200


def test_waitress_serves_an_embedded_hub_in_its_own_process(mock_hub):
    """What ``tensorhub.dashboard.serve(hub)`` does for a mongomock:// hub, minus blocking forever."""
    import json
    import threading
    import urllib.request

    from tensorhub.dashboard.server import address, make_server

    mock_hub.create_task("in-process", source="x = 1")
    server = make_server(create_app(mock_hub), "127.0.0.1", 0)

    def run() -> None:
        try:
            server.run()
        except OSError:
            pass  # closed under its select() at the end of the test: how a waitress server stops

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        url = address(server)
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", url)
        with urllib.request.urlopen(url + "api/queue", timeout=10) as reply:
            assert json.load(reply)["summary"][0]["task_name"] == "in-process"
        with urllib.request.urlopen(url + "queue", timeout=10) as reply:
            assert reply.headers["X-Frame-Options"] == "DENY" and b"tensorhub" in reply.read()
    finally:
        server.close()
        thread.join(timeout=10)


def test_the_command_refuses_the_embedded_store_and_an_exposed_host_without_token():
    cli = CliRunner()
    mock = cli.invoke(main, ["dashboard", "--uri", "mongomock://", "--project", "p"])
    assert mock.exit_code == 2 and "no other process can reach" in mock.output
    exposed = cli.invoke(main, ["dashboard", "--uri", "mongodb://127.0.0.1:9/x", "--project", "p", "--host", "0.0.0.0"],
                         env={"TENSORHUB_DASHBOARD_TOKEN": None})
    assert exposed.exit_code == 1 and "--token" in exposed.output
    short = cli.invoke(main, ["dashboard", "--uri", "mongodb://127.0.0.1:9/x", "--project", "p", "--token", "abc"])
    assert short.exit_code == 1 and "at least 8 characters" in short.output


@pytest.mark.heavy
def test_every_query_the_dashboard_sends_is_indexed(server_hub):
    """On a real server, so that tests/index_coverage.py judges each query shape of every page
    (a dashboard on 10,000 tasks must not scan them: paging, sorting and counts ride on indexes)."""
    made = fill(server_hub)
    client = create_app(server_hub, allow_actions=True).test_client()
    run_id = made["runs"][0].id
    for path in ("/api/queue", "/api/queue?status=failed", "/api/queue?task_name=sweep&order=oldest&page=2&per_page=20",
                 "/api/queue?task_name=sweep&status=pending", f"/api/tasks/{made['evil']}", "/api/fleet",
                 "/api/runs", "/api/runs?task_name=mlp&metric=loss&direction=max&sort=hp.units&dir=desc",
                 f"/api/runs/{run_id}", "/api/models", "/api/models?name=mlp&limit=5", "/api/datasets?name=digits",
                 "/api/health"):
        assert client.get(path).status_code == 200, path
    assert client.get(f"/tasks/{made['evil']}/output.txt").status_code == 404   # run in-process: no stored log
    headers = {"X-Tensorhub-Action": "1"}
    assert client.post(f"/api/tasks/{made['sweep'][2]}/cancel", headers=headers).get_json() == {"cancelled": 1}
    assert client.post(f"/api/tasks/{made['sweep'][2]}/requeue", headers=headers).get_json() == {"requeued": 1}
    assert client.post("/api/sweeps/cancel", headers=headers, json={"task_name": "sweep"}).get_json() == {"cancelled": 2}
    assert client.post("/api/sweeps/requeue", headers=headers, json={"task_name": XSS}).get_json() == {"requeued": 1}


@pytest.mark.heavy
def test_an_unreachable_server_is_a_503_and_the_dashboard_recovers(server_uri):
    from delay_proxy import DelayProxy

    from tensorhub.dashboard.source import CLIENT_OPTIONS

    with DelayProxy.for_uri(server_uri) as proxy:
        hub = TensorHub(proxy.uri_for(server_uri), project_name="test", **CLIENT_OPTIONS)
        hub.create_task("t", source="x = 1")
        client = create_app(hub).test_client()
        assert client.get("/api/queue").get_json()["matching"] == 1
        proxy.drop_replies()                 # the server stops answering ...
        proxy.drop_connections()
        started = time.monotonic()
        down = client.get("/api/queue")
        assert down.status_code == 503 and "unreachable" in down.get_json()["error"]
        assert time.monotonic() - started < 10                     # a short server selection timeout
        assert client.get("/queue").status_code == 200             # the page itself still comes up
        proxy.clear_rules()                  # ... and is back
        deadline = time.monotonic() + 30
        while (up := client.get("/api/queue")).status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert up.status_code == 200 and up.get_json()["matching"] == 1
        hub.close()
