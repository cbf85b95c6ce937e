"""The Flask app: HTML pages (shells that Jinja fills with escaped text) and the JSON endpoints
their scripts poll. ``create_app(hub)`` for a hub in this process, ``create_app(opener)`` for a hub
opened on first use (the ``tensorhub dashboard`` command).

    >>> app = create_app(hub)
    >>> app.test_client().get("/api/fleet").get_json()["runners"]
    []
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from flask import Flask, Response, abort, jsonify, redirect, render_template, request, send_file
from pymongo.errors import PyMongoError

from tensorhub.dashboard import auth, data, params
from tensorhub.dashboard.source import HubSource, Unavailable, brief
from tensorhub.errors import ConnectionFailed, InvalidArgument, NotFound
from tensorhub.tasks.states import DONE, STATES

PAGE_SIZES = (20, 50, 100, 200)
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                               "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; "
                               "base-uri 'none'; form-action 'self'; object-src 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
QUEUE_PARAMS = {"task_name", "status", "page", "per_page", "order"}
RUNS_PARAMS = {"metric", "direction", "task_name", "sort", "dir", "page", "per_page"}
RECORD_PARAMS = {"name", "limit"}


def create_app(hub: Any, *, token: str | None = None, allow_actions: bool = False,
               allowed_hosts: frozenset[str] = frozenset(), warm: bool = False) -> Flask:
    """The dashboard for ``hub`` (a TensorHub, or a function that opens one).

    ``warm``: count the queue in the background right away (the server does, tests need not).

    ``token``: every request must present it. Without one, only requests whose ``Host`` is a
    loopback name (or one of ``allowed_hosts``) are served. ``allow_actions``: cancel and requeue.
    """
    app = Flask(__name__)
    source = HubSource(hub if callable(hub) and not hasattr(hub, "find_tasks") else (lambda: hub))
    boards = data.Leaderboards()
    summaries = data.Recent(data.SUMMARY_TTL, stale_for=data.SUMMARY_STALE)
    app.config.update(DASHBOARD_ALLOW_ACTIONS=allow_actions)
    app.jinja_env.autoescape = True  # every template, whatever its name
    _guard(app, token, allowed_hosts)
    _pages(app, source, allow_actions)
    _api(app, source, boards, summaries)
    _actions(app, source, allow_actions)
    _errors(app)
    if warm:
        threading.Thread(target=_warm, args=(source, summaries), daemon=True, name="dashboard-warm").start()

    @app.get("/favicon.ico")
    def favicon() -> Response:
        return Response(status=204)

    @app.get("/static/vendor/plotly.min.js")
    def plotly_js() -> Response:
        return send_file(_plotly_path(), mimetype="text/javascript", max_age=3600)

    @app.after_request
    def headers(response: Response) -> Response:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    return app


def _plotly_path() -> Path:
    """plotly.js as the installed ``plotly`` package ships it: nothing is fetched from the internet."""
    import plotly

    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


# -- who may ask ------------------------------------------------------------------------------------
def _guard(app: Flask, token: str | None, allowed_hosts: frozenset[str]) -> None:
    @app.before_request
    def check() -> Any:
        if token is None:
            host = auth.host_name(request.host)
            if not (auth.is_loopback(host) or host in allowed_hosts):
                return _text(f"host {host[:60]!r} is not served: open the dashboard at 127.0.0.1 or localhost, "
                             "or start it with --token", 403)
            return None
        given = auth.bearer(request.headers.get("Authorization")) or request.cookies.get(auth.COOKIE)
        in_url = request.args.get("token")
        if in_url is not None and auth.token_matches(token, in_url):
            rest = [(k, v) for k, v in request.args.items(multi=True) if k != "token"]
            target = request.path + (("?" + urlencode(rest)) if rest else "")
            response = redirect(target, 303)
            response.set_cookie(auth.COOKIE, in_url, httponly=True, samesite="Strict", path="/",
                                secure=request.is_secure)
            return response
        if not auth.token_matches(token, given):
            return _text("a token is needed: open the dashboard's address with ?token=<token> once, "
                         "or send Authorization: Bearer <token>", 401)
        return None


# -- pages ----------------------------------------------------------------------------------------------
def _pages(app: Flask, source: HubSource, allow_actions: bool) -> None:
    def page(template: str, **context: Any) -> str:
        try:
            project = source.get().project_name
        except Unavailable:
            project = source.project_name()  # the page still comes up; its script shows the outage
        return render_template(template, project=project, allow_actions=allow_actions, statuses=STATES,
                               **context)

    @app.get("/")
    def home() -> Any:
        return redirect("/queue", 302)

    @app.get("/queue")
    def queue_page() -> str:
        _queue_args()
        return page("queue.html", active="queue", page_sizes=PAGE_SIZES)

    @app.get("/tasks/<task_id>")
    def task_page(task_id: str) -> str:
        oid = params.object_id(task_id, "task id")
        task = _call(source, lambda hub: hub.get_task(oid))
        return page("task.html", active="queue", task_id=str(oid), task_name=task.task_name,
                    done_statuses=DONE)

    @app.get("/tasks/<task_id>/output.txt")
    def task_output(task_id: str) -> Response:
        oid = params.object_id(task_id, "task id")
        text = _call(source, lambda hub: hub.task_output(oid))
        return Response(text, mimetype="text/plain", headers={"Content-Disposition": "inline"})

    @app.get("/fleet")
    def fleet_page() -> str:
        params.only(request.args, ())
        return page("fleet.html", active="fleet")

    @app.get("/runs")
    def runs_page() -> str:
        _runs_args()
        return page("runs.html", active="runs", page_sizes=PAGE_SIZES)

    @app.get("/runs/<run_id>")
    def run_page(run_id: str) -> str:
        oid = params.object_id(run_id, "run id")
        run = _call(source, lambda hub: hub.get_run(oid))
        return page("run.html", active="runs", run_id=str(oid), run_name=run.name)

    @app.get("/models")
    def models_page() -> str:
        _record_args()
        return page("records.html", active="models", kind="models", title="Models")

    @app.get("/datasets")
    def datasets_page() -> str:
        _record_args()
        return page("records.html", active="datasets", kind="datasets", title="Datasets")


def _queue_args() -> dict[str, Any]:
    args = request.args
    params.only(args, QUEUE_PARAMS)
    return {"task_name": params.text(args, "task_name"), "status": params.choice(args, "status", None, STATES),
            "page": params.integer(args, "page", 1, 1, 1_000_000),
            "per_page": int(params.choice(args, "per_page", "50", [str(n) for n in PAGE_SIZES]) or 50),
            "newest_first": params.choice(args, "order", "newest", ("newest", "oldest")) == "newest"}


def _runs_args() -> dict[str, Any]:
    args = request.args
    params.only(args, RUNS_PARAMS)
    return {"metric": params.text(args, "metric"), "direction": params.choice(args, "direction", None, ("max", "min")),
            "task_name": params.text(args, "task_name"), "sort": params.text(args, "sort"),
            "descending": params.choice(args, "dir", "asc", ("asc", "desc")) == "desc",
            "page": params.integer(args, "page", 1, 1, 1_000_000),
            "per_page": int(params.choice(args, "per_page", "50", [str(n) for n in PAGE_SIZES]) or 50)}


def _record_args() -> dict[str, Any]:
    args = request.args
    params.only(args, RECORD_PARAMS)
    return {"name": params.text(args, "name"), "limit": params.integer(args, "limit", 100, 1, 1000)}


# -- JSON -------------------------------------------------------------------------------------------------
def _api(app: Flask, source: HubSource, boards: data.Leaderboards, summaries: data.Recent) -> None:
    @app.get("/api/health")
    def health() -> Response:
        params.only(request.args, ())
        hub = _call(source, lambda hub: hub)
        _call(source, lambda hub: hub.db.command("ping"))
        return jsonify({"ok": True, "project": hub.project_name})

    @app.get("/api/queue")
    def queue_json() -> Response:
        args = _queue_args()
        return jsonify(_call(source, lambda hub: data.queue(hub, summaries=summaries, **args)))

    @app.get("/api/tasks/<task_id>")
    def task_json(task_id: str) -> Response:
        oid = params.object_id(task_id, "task id")
        params.only(request.args, ())
        return jsonify(_call(source, lambda hub: data.task_detail(hub, oid)))

    @app.get("/api/fleet")
    def fleet_json() -> Response:
        params.only(request.args, ())
        return jsonify(_call(source, data.fleet))

    @app.get("/api/runs")
    def runs_json() -> Response:
        args = _runs_args()
        try:
            return jsonify(_call(source, lambda hub: data.leaderboard(hub, boards, **args)))
        except KeyError as err:
            raise params.BadRequest(f"sort must be one of the leaderboard's columns, got {str(err.args[0])[:60]!r}") \
                from None

    @app.get("/api/runs/<run_id>")
    def run_json(run_id: str) -> Response:
        oid = params.object_id(run_id, "run id")
        params.only(request.args, ())
        return jsonify(_call(source, lambda hub: data.run_detail(hub, oid)))

    @app.get("/api/models")
    def models_json() -> Response:
        args = _record_args()
        return jsonify(_call(source, lambda hub: data.records(hub, "models", **args)))

    @app.get("/api/datasets")
    def datasets_json() -> Response:
        args = _record_args()
        return jsonify(_call(source, lambda hub: data.records(hub, "datasets", **args)))


def _actions(app: Flask, source: HubSource, allowed: bool) -> None:
    def checked() -> None:
        if not allowed:
            abort(_text("the dashboard is read-only: start it with --allow-actions to cancel and requeue", 403))
        if request.headers.get(auth.ACTION_HEADER) != "1":
            abort(_text(f"actions need the {auth.ACTION_HEADER} header (sent by the dashboard's own page)", 403))
        if not auth.same_origin(request.headers.get("Origin"), request.host):
            abort(_text("cross-origin actions are refused", 403))
        params.only(request.args, ())

    def sweep() -> str:
        body = request.get_json(silent=True)
        name = body.get("task_name") if isinstance(body, dict) else None
        if not isinstance(name, str) or not name or len(name) > params.MAX_TEXT:
            raise params.BadRequest('send {"task_name": "<a task name>"} as JSON')
        return name

    @app.post("/api/sweeps/cancel")
    def cancel_sweep() -> Response:
        checked()
        name = sweep()
        return jsonify({"cancelled": _call(source, lambda hub: hub.cancel_tasks(name))})

    @app.post("/api/sweeps/requeue")
    def requeue_sweep() -> Response:
        checked()
        name = sweep()
        return jsonify({"requeued": _call(source, lambda hub: hub.requeue_tasks(name))})

    @app.post("/api/tasks/<task_id>/cancel")
    def cancel(task_id: str) -> Response:
        checked()
        oid = params.object_id(task_id, "task id")
        return jsonify({"cancelled": _call(source, lambda hub: hub.cancel_tasks(None, _id=oid))})

    @app.post("/api/tasks/<task_id>/requeue")
    def requeue(task_id: str) -> Response:
        checked()
        oid = params.object_id(task_id, "task id")
        return jsonify({"requeued": _call(source, lambda hub: hub.requeue_tasks(None, statuses=DONE, _id=oid))})


# -- errors -------------------------------------------------------------------------------------------------
def _warm(source: HubSource, summaries: data.Recent) -> None:
    """Count the queue once at start, so that the first page shows counts at once too."""
    try:
        hub = source.get()
        summaries.get(id(hub), lambda: data.queue_counts(hub))
    except Exception:
        pass


def _call(source: HubSource, fetch: Callable[[Any], Any]) -> Any:
    """Run ``fetch(hub)``; a server that does not answer becomes :class:`Unavailable` (503)."""
    hub = source.get()
    try:
        return fetch(hub)
    except (ConnectionFailed, PyMongoError) as err:
        raise Unavailable(brief(str(err))) from None


def _wants_json() -> bool:
    return request.path.startswith("/api/")


def _text(message: str, status: int) -> Response:
    if _wants_json():
        response = jsonify({"error": message})
        response.status_code = status
        return response
    return Response(message + "\n", status=status, mimetype="text/plain")


def _errors(app: Flask) -> None:
    @app.errorhandler(params.BadRequest)
    def bad_request(err: params.BadRequest) -> Response:
        return _text(str(err), 400)

    @app.errorhandler(InvalidArgument)
    def invalid(err: InvalidArgument) -> Response:
        return _text(str(err), 400)

    @app.errorhandler(NotFound)
    def not_found(err: NotFound) -> Response:
        return _text(str(err), 404)

    @app.errorhandler(Unavailable)
    def unavailable(err: Unavailable) -> Response:
        return _text(f"the hub's server is unreachable: {err}", 503)

    @app.errorhandler(404)
    def no_route(err: Any) -> Response:
        return _text(f"no page at {request.path[:100]}", 404)

    @app.errorhandler(405)
    def no_method(err: Any) -> Response:
        return _text(f"{request.method} is not allowed here" + (
            "" if app.config["DASHBOARD_ALLOW_ACTIONS"] else " (the dashboard is read-only: start it with "
                                                              "--allow-actions to cancel and requeue)"), 405)

    @app.errorhandler(Exception)
    def unexpected(err: Exception) -> Response:
        if hasattr(err, "code") and hasattr(err, "get_response"):   # werkzeug's own HTTP errors
            return err.get_response()
        app.logger.exception("dashboard error")
        return _text(f"internal error ({type(err).__name__}); see the dashboard's log", 500)
