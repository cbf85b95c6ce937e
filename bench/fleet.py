"""A fleet of runners on one server: commands, idle load, dispatch latency, exactly-once, throughput,
memory, for the working tree ("current") against today's design ("baseline", a git revision).

    python bench/fleet.py --quick                          # smoke run: FerretDB/SQLite, small counts
    python bench/fleet.py                                  # full run: N = 1,4,20,50; 50 x 500 tasks
    python bench/fleet.py --backend postgresql             # FerretDB on a throwaway PostgreSQL
    python bench/fleet.py --backend uri --uri mongodb://localhost:27017/?directConnection=true
    python bench/fleet.py --only latency --runners 3,50 --baseline d2d5b0d

Everything goes through the runner CLI (``python -m tensorhub.cli runner``), the public
``create_task`` (in a distributor process of its own, ``bench/fleet_distributor.py``) and the
task documents; the server commands are counted by pymongo command monitoring inside every
process of the fleet (``bench/fleet_sitecustomize.py``, injected through PYTHONPATH), so the
harness knows nothing of either design's internals. Sections (``--only``):

1. commands    server commands per finished no-op task, N runners on a backlog (target <= 6)
2. idle        commands per second from N idle runners, and which (target <= N)
3. latency     created -> started for tasks arriving at 2/s with few and many idle runners
4. once        50 runners x 500 tasks: each ran exactly once, attempts == 1, no overlap
5. throughput  tasks/s with 4 runners on a backlog; hyperopt-mongo-worker x4 on the same server
6. memory      RSS of an idle runner (target < 60 MB); CPU time of a no-op task's processes

Each side (current, baseline) gets fresh databases on the same server. The baseline is checked
out with ``git worktree add`` into a temp dir (removed at exit) and its runners import it through
PYTHONPATH. hyperopt runs from bench/.venv-hyperopt (made on first use: hyperopt + pymongo<4,
since hyperopt's mongoexp still calls pymongo 3's find_and_modify/insert/update/count).
"""
from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import datetime as dt
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pymongo

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
sys.path.insert(0, str(ROOT / "tests"))

SECTIONS = ("commands", "idle", "latency", "once", "throughput", "memory")
HEARTBEAT_KEY = "(heartbeat) hello"  # as bench/fleet_sitecustomize.py names pymongo's heartbeats
DONE = ("finished", "failed", "cancelled")
HYPEROPT_VENV = BENCH / ".venv-hyperopt"
COMMANDS_TARGET = 6.0
RSS_TARGET_MB = 60.0
LATENCY_ABS_TARGET = (100.0, 500.0)  # p50, p95 ms on FerretDB/PostgreSQL (and a real MongoDB)
CLK_TCK = os.sysconf("SC_CLK_TCK")
SETUP_COMMANDS = {"createIndexes", "listIndexes", "create", "listCollections", "buildInfo", "ping"}

# Every process this bench starts, so that no runner outlives it whatever ends the run.
LIVE: list[subprocess.Popen[bytes]] = []


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


class PhaseError(Exception):
    """A phase could not produce its figure; the message goes into the table instead."""


# -- processes ------------------------------------------------------------------------------------
def _die_with_bench() -> None:
    """preexec_fn: SIGTERM when the bench dies, even of SIGKILL (runners then stop as usual)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def spawn(args: list[str], *, env: dict[str, str], cwd: Path, log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(args, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, preexec_fn=_die_with_bench)
    LIVE.append(proc)
    return proc


def stop_processes(procs: list[subprocess.Popen[bytes]], patience: float) -> None:
    """SIGTERM (a runner finishes and exits), again (hands back at once), then SIGKILL."""
    for attempt, signum in enumerate((signal.SIGTERM, signal.SIGTERM, signal.SIGKILL)):
        alive = [p for p in procs if p.poll() is None]
        if not alive:
            break
        for p in alive:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signum)
        deadline = time.monotonic() + (patience if attempt == 0 else 10.0)
        while time.monotonic() < deadline and any(p.poll() is None for p in alive):
            time.sleep(0.1)
    for p in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(timeout=5)
        if p in LIVE:
            LIVE.remove(p)


def kill_everything() -> None:
    if LIVE:
        stop_processes(list(LIVE), patience=5.0)


def last_error(path: Path) -> str:
    """The last line of a log (a traceback's exception line), short enough for a table."""
    lines = [line for line in tail(path, 6000).splitlines() if line.strip()]
    return lines[-1][:300] if lines else "(no output)"


def tail(path: Path, chars: int = 1500) -> str:
    try:
        return path.read_text(errors="replace")[-chars:].strip()
    except OSError:
        return ""


# -- server ---------------------------------------------------------------------------------------
def with_database(uri: str, db: str) -> str:
    """The URI with its path set to ``/db`` (options kept)."""
    parts = urllib.parse.urlsplit(uri)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, "/" + db, parts.query, parts.fragment))


@dataclass
class Server:
    kind: str   # sqlite | postgresql | uri
    uri: str    # no database
    client: pymongo.MongoClient[dict[str, Any]] = field(init=False)

    def __post_init__(self) -> None:
        self.client = pymongo.MongoClient(self.uri, serverSelectionTimeoutMS=10000)

    def uri_text(self) -> str:
        """The server's address without credentials (they never go into the output)."""
        return urllib.parse.urlsplit(self.uri).netloc.rsplit("@", 1)[-1]

    def describe(self) -> str:
        try:
            info = self.client.admin.command("buildInfo")
            flavour = f", FerretDB {info['ferretdbVersion']}" if "ferretdbVersion" in info else ""
            what = {"sqlite": "FerretDB/SQLite", "postgresql": "FerretDB/PostgreSQL"}.get(self.kind, self.uri_text())
            return f"{what} (reports MongoDB {info.get('version')}{flavour})"
        except pymongo.errors.PyMongoError as err:
            return f"{self.kind}: ({err})"


def _setup_key(key: str) -> bool:
    """Commands a hub sends once when it opens (indexes, collections), not per task."""
    return key.split()[0] in SETUP_COMMANDS


def start_server(kind: str, uri: str | None, stack: ExitStack) -> Server:
    if kind == "uri":
        if not uri:
            raise SystemExit("--backend uri needs --uri")
        return Server(kind, uri)
    from ferretdb import FerretDBServer

    if kind == "sqlite":
        return Server(kind, stack.enter_context(FerretDBServer()).uri)
    from postgres import PostgresServer

    pg = stack.enter_context(PostgresServer())
    return Server(kind, stack.enter_context(FerretDBServer(handler="postgresql", postgresql_url=pg.url)).uri)


# -- the two designs -------------------------------------------------------------------------------
@dataclass
class Side:
    name: str    # "current" | "baseline"
    root: Path   # the directory holding its tensorhub package
    label: str


def git(*args: str) -> str:
    """Read-only git queries on the repository (this bench never changes its checkout)."""
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()


def current_label() -> str:
    rev = git("rev-parse", "--short", "HEAD")
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "tensorhub"], cwd=ROOT,
                           capture_output=True, text=True).stdout.strip()
    return f"working tree ({rev}{' + uncommitted changes' if dirty else ''})"


def checkout_baseline(rev: str, stack: ExitStack) -> Side:
    """``git worktree add`` the revision into a temp dir; removed again when the bench ends."""
    parent = Path(tempfile.mkdtemp(prefix="th-baseline-"))
    path = parent / "tree"
    done = subprocess.run(["git", "worktree", "add", "--detach", str(path), rev], cwd=ROOT,
                          capture_output=True, text=True)
    if done.returncode != 0:
        shutil.rmtree(parent, ignore_errors=True)
        raise SystemExit(f"git worktree add {rev} failed: {done.stderr.strip()}")

    def remove() -> None:
        subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=ROOT, capture_output=True)
        shutil.rmtree(parent, ignore_errors=True)

    stack.callback(remove)
    short = git("rev-parse", "--short", rev)
    return Side("baseline", path, f"today's design ({short})")


# -- command counts --------------------------------------------------------------------------------
@dataclass
class ProcessCounts:
    pid: int
    role: str
    argv: list[str]
    totals: Counter[str]
    series: dict[int, Counter[str]]


def read_counts(directory: Path) -> list[ProcessCounts]:
    out = []
    for path in directory.glob("*.json"):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # written atomically; a file that does not parse is not ours
        out.append(ProcessCounts(int(data["pid"]), str(data["role"]), list(data.get("argv", [])),
                                 Counter(data.get("totals", {})),
                                 {int(s): Counter(c) for s, c in data.get("series", {}).items()}))
    return out


def in_window(procs: list[ProcessCounts], first: int, last: int) -> Counter[str]:
    """Commands started in whole seconds ``first..last`` (inclusive) by these processes."""
    total: Counter[str] = Counter()
    for p in procs:
        for second, counts in p.series.items():
            if first <= second <= last:
                total.update(counts)
    return total


def split_heartbeats(counts: Counter[str]) -> tuple[Counter[str], int]:
    commands = Counter(counts)
    beats = commands.pop(HEARTBEAT_KEY, 0)
    return commands, beats


def breakdown(counts: Counter[str], per: float, top: int = 8) -> str:
    parts = [f"{key} {n / per:.2f}" for key, n in counts.most_common(top)]
    rest = sum(n for _, n in counts.most_common()[top:])
    if rest:
        parts.append(f"other {rest / per:.2f}")
    return ", ".join(parts) or "none"


# -- task documents (either layout) ----------------------------------------------------------------
def hub_field(doc: dict[str, Any], key: str) -> Any:
    """New layout keeps bookkeeping under ``_hub``; today's design has it at the top level."""
    hub = doc.get("_hub")
    if isinstance(hub, dict) and key in hub:
        return hub[key]
    return doc.get(key)


def by_name(task_name: str) -> dict[str, Any]:
    return {"$or": [{"task_name": task_name}, {"name": task_name}]}  # new: task_name; old: name


def as_epoch(value: Any) -> float | None:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)  # pymongo returns naive UTC by default
        return value.timestamp()
    return None


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


# -- a fleet of runners ----------------------------------------------------------------------------
class Fleet:
    """N runner processes of one design on a fresh database, optionally with command counting."""

    def __init__(self, side: Side, n: int, server: Server, work: Path, site_dir: Path,
                 instrumented: bool = True) -> None:
        tag = uuid.uuid4().hex[:6]
        self.side, self.n, self.server = side, n, server
        self.db_name = f"fleet_{side.name}_{n}_{tag}"
        self.project = "bench"
        self.uri = with_database(server.uri, self.db_name)
        self.dir = work / f"{side.name}-{n}-{tag}"
        self.count_dir = self.dir / "counts"
        self.count_dir.mkdir(parents=True)
        self.site_dir = site_dir
        self.instrumented = instrumented
        self.runners: list[subprocess.Popen[bytes]] = []
        self.db = server.client[self.db_name]

    def env(self, role: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TENSORHUB_URI", "TENSORHUB_PROJECT"))}
        paths = [str(self.site_dir)] if self.instrumented else []
        env["PYTHONPATH"] = os.pathsep.join(paths + [str(self.side.root)])
        env.pop("FLEET_COUNT_DIR", None)
        if self.instrumented:
            env["FLEET_COUNT_DIR"] = str(self.count_dir)
            env["FLEET_COUNT_ROLE"] = role
        return env

    def start(self, ready_timeout: float) -> None:
        # The working tree may change during a long run (others are editing it): say what each fleet got.
        what = f" from {current_label()}" if self.side.root == ROOT else ""
        log(f"{self.side.name} N={self.n}: starting {self.n} runner(s){what} on database {self.db_name}")
        # The design's own hub makes the database and its indexes first (as a distributor would
        # have before any fleet starts), so N runners do not all race to create them.
        primer = self.distribute("prime", 0)
        try:
            primer.wait(timeout=120)
        except subprocess.TimeoutExpired:
            raise PhaseError("creating the database timed out") from None
        finally:
            stop_processes([primer], patience=1.0)
        if primer.returncode != 0:
            raise PhaseError(f"creating the database failed: {last_error(self.dir / 'distributor-prime.log')}")
        args = [sys.executable, "-m", "tensorhub.cli", "runner", "--uri", self.uri, "--project", self.project,
                "--log-level", "WARNING"]
        for i in range(self.n):
            # cwd = the design's root: `python -m` puts the cwd first on sys.path.
            self.runners.append(spawn(args, env=self.env("runner"), cwd=self.side.root,
                                      log_path=self.dir / f"runner-{i}.log"))
        if self.instrumented:
            self._wait_ready(ready_timeout)

    def _wait_ready(self, timeout: float) -> None:
        """Every runner has sent a command (it is past start-up and polling)."""
        deadline = time.monotonic() + timeout
        pids = {p.pid for p in self.runners}
        while True:
            self.check_alive()
            ready = {c.pid for c in read_counts(self.count_dir)
                     if c.pid in pids and sum(split_heartbeats(c.totals)[0].values()) > 0}
            if len(ready) == len(pids):
                break
            if time.monotonic() > deadline:
                raise PhaseError(f"only {len(ready)} of {self.n} runners were up after {timeout:.0f} s")
            time.sleep(0.5)
        log(f"{self.side.name} N={self.n}: all runners up")

    def check_alive(self) -> None:
        dead = [(i, p) for i, p in enumerate(self.runners) if p.poll() is not None]
        if dead:
            i, p = dead[0]
            raise PhaseError(f"{len(dead)} runner(s) exited (first: status {p.returncode}): "
                             f"{last_error(self.dir / f'runner-{i}.log')}")

    def stop(self) -> None:
        if self.runners:
            stop_processes(self.runners, patience=40.0)
        with contextlib.suppress(pymongo.errors.PyMongoError):
            self.server.client.drop_database(self.db_name)

    def runner_pids(self) -> set[int]:
        return {p.pid for p in self.runners}

    def counts(self, kind: str) -> list[ProcessCounts]:
        """``runner`` daemons, ``task`` processes (everything else they started), ``distributor``."""
        pids = self.runner_pids()
        procs = read_counts(self.count_dir)
        if kind == "runner":
            return [c for c in procs if c.pid in pids]
        if kind == "task":
            return [c for c in procs if c.role == "runner" and c.pid not in pids]
        return [c for c in procs if c.role == kind]

    # -- tasks ---------------------------------------------------------------------------------
    def distribute(self, task_name: str, count: int, rate: float | None = None,
                   trace: Path | None = None) -> subprocess.Popen[bytes]:
        args = [sys.executable, str(BENCH / "fleet_distributor.py"), self.uri, self.project, task_name, str(count)]
        if rate:
            args += ["--rate", str(rate)]
        if trace:
            args += ["--trace", str(trace)]
        return spawn(args, env=self.env("distributor"), cwd=self.side.root,
                     log_path=self.dir / f"distributor-{task_name}.log")

    def wait_done(self, task_name: str, count: int, distributor: subprocess.Popen[bytes],
                  timeout: float, partial_ok: bool = False) -> tuple[float, dict[str, Any]]:
        """Until all ``count`` tasks are done; returns the time it was seen and the distributor's report.

        With ``partial_ok`` a timeout ends the wait instead of the phase: the report then carries a
        ``note`` and the figures cover the tasks that did finish.
        """
        deadline = time.monotonic() + timeout
        done = 0
        note = None
        try:
            while True:
                if distributor.poll() not in (None, 0):
                    raise PhaseError(f"distributor failed: {last_error(self.dir / f'distributor-{task_name}.log')}")
                done = self.db.tasks.count_documents({**by_name(task_name), "status": {"$in": list(DONE)}})
                if done >= count and distributor.poll() == 0:
                    seen = time.time()
                    break
                self.check_alive()
                if time.monotonic() > deadline:
                    note = f"timed out after {timeout:.0f} s with {done}/{count} tasks done"
                    if not partial_ok:
                        raise PhaseError(note)
                    seen = time.time()
                    break
                time.sleep(0.25)
        finally:
            stop_processes([distributor], patience=2.0)  # exited already, unless the phase failed
        report: dict[str, Any] = {}
        for line in tail(self.dir / f"distributor-{task_name}.log", 4000).splitlines():
            with contextlib.suppress(ValueError):
                parsed = json.loads(line)
                report = parsed if isinstance(parsed, dict) else report
        if note:
            report["note"] = note
        return seen, report

    def tasks(self, task_name: str) -> list[dict[str, Any]]:
        return list(self.db.tasks.find(by_name(task_name)))


# -- phases ----------------------------------------------------------------------------------------
def phase_idle(fleet: Fleet, seconds: int) -> dict[str, Any]:
    first = math.ceil(time.time())
    last = first + seconds - 1
    time.sleep(max(0.0, last + 1 - time.time()) + 1.5)  # + the counters' flush second
    fleet.check_alive()
    counts = in_window(fleet.counts("runner") + fleet.counts("task"), first, last)
    commands, beats = split_heartbeats(counts)
    return {"per_s": sum(commands.values()) / seconds, "heartbeats_per_s": beats / seconds,
            "breakdown": breakdown(commands, seconds)}


def phase_latency(fleet: Fleet, count: int, rate: float, timeout: float) -> dict[str, Any]:
    name = "latency"
    distributor = fleet.distribute(name, count, rate=rate)
    fleet.wait_done(name, count, distributor, timeout)
    lat = []
    for doc in fleet.tasks(name):
        created, started = as_epoch(hub_field(doc, "created_at")), as_epoch(hub_field(doc, "started_at"))
        if created is not None and started is not None:
            lat.append((started - created) * 1000)
    if not lat:
        raise PhaseError("no task has both created_at and started_at")
    return {"p50": percentile(lat, 0.5), "p95": percentile(lat, 0.95), "max": max(lat), "n": len(lat)}


def phase_backlog(fleet: Fleet, count: int, timeout: float) -> dict[str, Any]:
    name = "backlog"
    began = time.time()
    distributor = fleet.distribute(name, count)
    seen, report = fleet.wait_done(name, count, distributor, timeout, partial_ok=True)
    began = float(report.get("began", began))
    time.sleep(1.5)  # the counters' flush second
    first, last = int(began), int(seen)
    runner_cmds, runner_beats = split_heartbeats(in_window(fleet.counts("runner"), first, last))
    task_cmds, task_beats = split_heartbeats(in_window(fleet.counts("task"), first, last))
    dist_all, _ = split_heartbeats(sum((c.totals for c in fleet.counts("distributor") if c.pid == distributor.pid),
                                       Counter()))
    dist_setup = Counter({k: v for k, v in dist_all.items() if _setup_key(k)})
    dist_cmds = dist_all - dist_setup
    docs = fleet.tasks(name)
    finished = [d for d in docs if d.get("status") == "finished"]
    n = len(finished) or 1
    fleet_cmds = runner_cmds + task_cmds
    started = [t for t in (as_epoch(hub_field(d, "started_at")) for d in finished) if t is not None]
    ended = [t for t in (as_epoch(hub_field(d, "finished_at")) for d in finished) if t is not None]
    span = (max(ended) - min(started)) if started and ended else 0.0
    return {
        "per_task": sum(fleet_cmds.values()) / n,
        "runner_per_task": sum(runner_cmds.values()) / n,
        "task_proc_per_task": sum(task_cmds.values()) / n,
        "heartbeats_per_task": (runner_beats + task_beats) / n,
        "distributor_per_task": sum(dist_cmds.values()) / max(1, count),
        "distributor_breakdown": breakdown(dist_cmds, max(1, count), top=5),
        "distributor_setup": sum(dist_setup.values()),
        "breakdown": breakdown(fleet_cmds, n),
        "finished": len(finished), "count": count,
        "throughput": len(finished) / span if span > 0 else None,
        "queue_seconds": float(report.get("ended", began)) - began,
        "drain_seconds": span,
        **({"note": report["note"]} if "note" in report else {}),
    }


def phase_once(fleet: Fleet, count: int, timeout: float) -> dict[str, Any]:
    name = "once"
    trace = fleet.dir / "once-trace.log"
    trace.touch()
    distributor = fleet.distribute(name, count, trace=trace)
    seen, report = fleet.wait_done(name, count, distributor, timeout, partial_ok=True)
    docs = fleet.tasks(name)
    # An execution is a (task, pid) pair: its start and end lines; one without an end never ended.
    by_pid: dict[tuple[int, str], list[float]] = {}
    malformed = 0
    for line in trace.read_text().splitlines():
        parts = line.split()
        if len(parts) != 4 or parts[0] not in ("start", "end"):
            malformed += 1
            continue
        kind, i, at, pid = parts[0], int(parts[1]), float(parts[2]), parts[3]
        if kind == "start":
            by_pid[(i, pid)] = [at, math.inf]
        elif (i, pid) in by_pid:
            by_pid[(i, pid)][1] = at
        else:
            malformed += 1
    spans: dict[int, list[list[float]]] = defaultdict(list)
    for (i, _pid), span in by_pid.items():
        spans[i].append(span)
    executions = Counter({i: len(s) for i, s in spans.items()})
    overlapping = 0
    for s in spans.values():
        s.sort()
        overlapping += sum(1 for a, b in zip(s, s[1:], strict=False) if b[0] < a[1])
    finished = sum(1 for d in docs if d.get("status") == "finished")
    attempts_one = sum(1 for d in docs if hub_field(d, "attempts") == 1)
    result = {
        "count": count, "documents": len(docs), "finished": finished, "attempts_one": attempts_one,
        "exactly_once": sum(1 for i in range(count) if executions.get(i) == 1),
        "more_than_once": sum(1 for n in executions.values() if n > 1),
        "never": sum(1 for i in range(count) if executions.get(i, 0) == 0),
        "overlapping": overlapping, "malformed": malformed,
        "seconds": seen - float(report.get("began", seen)),
        **({"note": report["note"]} if "note" in report else {}),
    }
    result["passed"] = (result["documents"] == result["finished"] == result["attempts_one"] == count
                        == result["exactly_once"] and not overlapping and not malformed)
    return result


def proc_times(pid: int) -> tuple[int, int]:
    """(own utime+stime, reaped children's cutime+cstime) in clock ticks."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])


def proc_status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise PhaseError(f"no {key} in /proc/{pid}/status")


def phase_memory(side: Side, server: Server, work: Path, site_dir: Path, count: int,
                 timeout: float) -> dict[str, Any]:
    """One runner without the counting hook (nothing of the bench in it): RSS and CPU."""
    fleet = Fleet(side, 1, server, work, site_dir, instrumented=False)
    try:
        fleet.start(0)
        pid = fleet.runners[0].pid
        # Idle = its CPU time has stopped growing (start-up done), with a floor and a ceiling.
        deadline = time.monotonic() + 90
        time.sleep(3)
        last = proc_times(pid)[0]
        while time.monotonic() < deadline:
            time.sleep(1)
            fleet.check_alive()
            now = proc_times(pid)[0]
            if now - last <= 0.05 * CLK_TCK:
                break
            last = now
        time.sleep(2)
        rss_idle = proc_status_kb(pid, "VmRSS") / 1024
        # RSS also counts pages of shared libraries (numpy's, libpython's) that every runner on the
        # box shares; RssAnon is what each runner costs on its own.
        anon_idle = proc_status_kb(pid, "RssAnon") / 1024
        file_idle = proc_status_kb(pid, "RssFile") / 1024
        own0, children0 = proc_times(pid)
        idle_seconds = 10
        time.sleep(idle_seconds)
        own1, children1 = proc_times(pid)
        idle_cpu_ms_per_s = (own1 - own0) * 1000 / CLK_TCK / idle_seconds
        distributor = fleet.distribute("memory", count)
        fleet.wait_done("memory", count, distributor, timeout)
        time.sleep(1.0)  # the last task's supervisor reaped
        own2, children2 = proc_times(pid)
        return {
            "rss_idle_mb": rss_idle, "anon_idle_mb": anon_idle, "file_idle_mb": file_idle,
            "rss_after_mb": proc_status_kb(pid, "VmRSS") / 1024,
            "hwm_mb": proc_status_kb(pid, "VmHWM") / 1024,
            "idle_cpu_ms_per_s": idle_cpu_ms_per_s,
            "task_cpu_ms": (children2 - children1) * 1000 / CLK_TCK / count,
            "runner_cpu_ms_per_task": (own2 - own1) * 1000 / CLK_TCK / count,
        }
    finally:
        fleet.stop()


# -- hyperopt ----------------------------------------------------------------------------------------
def hyperopt_python() -> Path:
    """bench/.venv-hyperopt's python, made on first use (hyperopt's mongoexp needs pymongo < 4)."""
    python = HYPEROPT_VENV / "bin" / "python"
    if not (HYPEROPT_VENV / "bin" / "hyperopt-mongo-worker").exists():
        log("creating bench/.venv-hyperopt (hyperopt, pymongo<4)")
        subprocess.run([sys.executable, "-m", "venv", str(HYPEROPT_VENV)], check=True)
        _pip(python, "hyperopt", "pymongo<4")
    major = subprocess.run([str(python), "-c", "import pymongo; print(pymongo.version_tuple[0])"],
                           capture_output=True, text=True).stdout.strip()
    if major != "3":
        # hyperopt 0.2.x/0.3.0 mongoexp calls Collection.find_and_modify/insert/update and
        # Cursor.count, which pymongo 4 removed: its workers die on the first reservation.
        _pip(python, "pymongo<4")
    return python


def _pip(python: Path, *packages: str) -> None:
    done = subprocess.run([str(python), "-m", "pip", "install", "-q", *packages], capture_output=True, text=True)
    if done.returncode != 0:
        raise PhaseError(f"pip install {' '.join(packages)} failed: {done.stderr.strip()[-400:]}")


def run_hyperopt(server: Server, work: Path, site_dir: Path, count: int, workers: int,
                 timeout: float) -> dict[str, Any]:
    """hyperopt's own fleet: MongoTrials driver + ``hyperopt-mongo-worker --no-subprocesses``."""
    python = hyperopt_python()
    parts = urllib.parse.urlsplit(server.uri)
    if parts.query or "@" in parts.netloc:
        # hyperopt parses mongo://[user:pw@]host:port/db/collection itself: no URI options.
        raise PhaseError("hyperopt's mongo:// URLs take no URI options; not run against this --uri")
    db = f"fleet_hyperopt_{uuid.uuid4().hex[:6]}"
    folder = work / db
    count_dir = folder / "counts"
    count_dir.mkdir(parents=True)
    trace = folder / "trace.log"
    trace.touch()

    def env(role: str) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site_dir), str(BENCH)]),
                "FLEET_COUNT_DIR": str(count_dir), "FLEET_COUNT_ROLE": role,
                "FLEET_HYPEROPT_TRACE": str(trace)}

    procs: list[subprocess.Popen[bytes]] = []
    try:
        driver = spawn([str(python), str(BENCH / "fleet_hyperopt.py"), f"mongo://{parts.netloc}/{db}/jobs",
                        str(count), "fleet"], env=env("driver"), cwd=folder, log_path=folder / "driver.log")
        procs.append(driver)
        worker = str(HYPEROPT_VENV / "bin" / "hyperopt-mongo-worker")
        for i in range(workers):
            wd = folder / f"w{i}"
            wd.mkdir()
            procs.append(spawn([worker, f"--mongo={parts.netloc}/{db}", "--poll-interval=1", "--no-subprocesses",
                                "--exp-key=fleet", f"--workdir={wd}", "--reserve-timeout=3600"],
                               env=env("worker"), cwd=wd, log_path=folder / f"worker-{i}.log"))
        deadline = time.monotonic() + timeout
        while driver.poll() is None:
            if time.monotonic() > deadline:
                raise PhaseError(f"timed out after {timeout:.0f} s: {last_error(folder / 'driver.log')}")
            dead = [p for p in procs[1:] if p.poll() is not None]
            if len(dead) == workers:
                raise PhaseError("every hyperopt worker exited: " + last_error(folder / "worker-0.log"))
            time.sleep(0.25)
        if driver.returncode != 0:
            raise PhaseError(f"driver failed: {last_error(folder / 'driver.log')}")
        time.sleep(1.5)  # the counters' flush second
        jobs = list(server.client[db].jobs.find({}, {"state": 1, "book_time": 1, "refresh_time": 1, "result": 1}))
        done = [j for j in jobs if j.get("state") == 2]  # JOB_STATE_DONE
        books = [t for t in (as_epoch(j.get("book_time")) for j in done) if t is not None]
        ends = [t for t in (as_epoch(j.get("refresh_time")) for j in done) if t is not None]
        span = max(ends) - min(books) if books and ends else 0.0
        runs = Counter(line.split()[0] for line in trace.read_text().splitlines() if line.strip())
        worker_counts = [c for c in read_counts(count_dir) if c.role == "worker"]
        cmds, beats = split_heartbeats(sum((c.totals for c in worker_counts), Counter()))
        return {"throughput": len(done) / span if span > 0 else None, "done": len(done), "count": count,
                "executions": sum(runs.values()), "more_than_once": sum(1 for n in runs.values() if n > 1),
                "per_trial": sum(cmds.values()) / max(1, len(done)), "breakdown": breakdown(cmds, max(1, len(done))),
                "heartbeats_per_trial": beats / max(1, len(done))}
    finally:
        stop_processes(procs, patience=10.0)
        with contextlib.suppress(pymongo.errors.PyMongoError):
            server.client.drop_database(db)


# -- output ------------------------------------------------------------------------------------------
Results = dict[str, dict[Any, dict[str, Any]]]  # section -> key (N) -> side -> figures or {"error"}


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [headers, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def cell(figures: dict[str, Any] | None, key: str, fmt: str) -> str:
    if figures is None:
        return "not run"
    if "error" in figures:
        return "n/a"
    value = figures.get(key)
    return "n/a" if value is None else format(value, fmt) + ("*" if "note" in figures else "")


def ratio(cur: dict[str, Any] | None, base: dict[str, Any] | None, key: str) -> str:
    try:
        a, b = float(cur[key]), float(base[key])  # type: ignore[index]
    except (TypeError, KeyError, ValueError):
        return "-"
    return f"{a / b:.2f}x" if b else "-"


def errors(entries: dict[Any, dict[str, Any]]) -> list[str]:
    out = []
    for key, sides in entries.items():
        for side, figures in sides.items():
            if figures and "error" in figures:
                out.append(f"  ! {side} N={key}: {figures['error']}")
            elif figures and "note" in figures:
                out.append(f"  * {side} N={key}: {figures['note']}; the figure covers the finished tasks")
    return out


def report(results: Results, sides: list[Side], backend: str, server_text: str, args: argparse.Namespace) -> None:
    names = {s.name: s.label for s in sides}
    has_base = "baseline" in names
    head = ["N", "current", f"baseline ({names.get('baseline', 'not run')})" if has_base else "baseline", "cur/base"]

    def section_rows(entries: dict[Any, dict[str, Any]], key: str, fmt: str,
                     target: Callable[[Any, dict[str, Any] | None], str]) -> list[list[str]]:
        rows = []
        for n in sorted(entries):
            cur, base = entries[n].get("current"), entries[n].get("baseline")
            rows.append([str(n), cell(cur, key, fmt), cell(base, key, fmt), ratio(cur, base, key), target(n, cur)])
        return rows

    def meets(ok: bool | None) -> str:
        return "" if ok is None else ("ok" if ok else "MISSED")

    print()
    print("=" * 100)
    print(f"fleet benchmark on {server_text}")
    print(f"current = {names.get('current')}; baseline = {names.get('baseline', 'not run')}")
    print("=" * 100)

    if results.get("commands"):
        e = results["commands"]
        print(f"\n1. Server commands per finished task (runners + their task processes; backlog of {args.tasks} "
              f"no-op tasks; heartbeats and the distributor apart)")
        print(table(head + [f"target <= {COMMANDS_TARGET:g}"], section_rows(
            e, "per_task", ".2f",
            lambda n, c: meets(None if not c or "error" in c else c["per_task"] <= COMMANDS_TARGET))))
        for n in sorted(e):
            for side, f in e[n].items():
                if f and "error" not in f:
                    print(f"  {side:8} N={n:<3} runner daemons {f['runner_per_task']:.2f} + task processes "
                          f"{f['task_proc_per_task']:.2f}; pymongo heartbeats {f['heartbeats_per_task']:.2f}/task; "
                          f"{f['finished']}/{f['count']} finished")
                    print(f"  {'':8}       by command: {f['breakdown']}")
        for n in sorted(e):
            for side, f in e[n].items():
                if f and "error" not in f:
                    print(f"  distributor ({side}, N={n}): {f['distributor_per_task']:.2f} commands per create_task "
                          f"({f['distributor_breakdown']}), + {f['distributor_setup']} once when its hub opened "
                          f"(indexes)")
        print("\n".join(errors(e)))

    if results.get("idle"):
        e = results["idle"]
        print(f"\n2. Idle load: commands per second from N idle runners ({args.idle_seconds} s window, "
              f"after {args.settle:g} s settling)")
        print(table(head + ["target <= N"], section_rows(
            e, "per_s", ".1f", lambda n, c: meets(None if not c or "error" in c else c["per_s"] <= n))))
        for n in sorted(e):
            for side, f in e[n].items():
                if f and "error" not in f:
                    print(f"  {side:8} N={n:<3} per s: {f['breakdown']}; + pymongo heartbeats "
                          f"{f['heartbeats_per_s']:.1f}/s")
        print("\n".join(errors(e)))

    if results.get("latency"):
        e = results["latency"]
        print(f"\n3. Dispatch latency, created -> started (ms), {args.latency_tasks} tasks arriving at "
              f"{args.latency_rate:g}/s, N idle runners")
        ns = sorted(e)
        rows = []
        for n in ns:
            cur, base = e[n].get("current"), e[n].get("baseline")
            if backend == "sqlite":
                small = e[ns[0]].get("current")
                if n == ns[0] or not cur or "error" in cur or not small or "error" in small:
                    target = "" if n == ns[0] else f"p50,p95 <= 2x N={ns[0]}"
                else:
                    ok = cur["p50"] <= 2 * small["p50"] and cur["p95"] <= 2 * small["p95"]
                    target = f"p50,p95 <= 2x N={ns[0]}: {meets(ok)}"
            else:
                ok = None if not cur or "error" in cur else (cur["p50"] <= LATENCY_ABS_TARGET[0]
                                                              and cur["p95"] <= LATENCY_ABS_TARGET[1])
                target = f"p50 <= {LATENCY_ABS_TARGET[0]:g}, p95 <= {LATENCY_ABS_TARGET[1]:g}: {meets(ok)}"
            for key in ("p50", "p95", "max"):
                rows.append([f"{n} {key}", cell(cur, key, ".0f"), cell(base, key, ".0f"), ratio(cur, base, key),
                             target if key == "p50" else ""])
        print(table(head + ["target"], rows))
        print("\n".join(errors(e)))

    if results.get("once"):
        e = results["once"]
        print("\n4. Exactly once: every task ran once, attempts == 1, no overlapping executions")
        for n in sorted(e):
            for side, f in e[n].items():
                if not f:
                    continue
                if "error" in f:
                    print(f"  FAIL (could not complete) {side} N={n}: {f['error']}")
                    continue
                rate = f"; {f['finished'] / f['seconds']:.1f} tasks/s" if f["seconds"] > 0 else ""
                malformed = f", {f['malformed']} malformed trace lines" if f["malformed"] else ""
                print(f"  {'PASS' if f['passed'] else 'FAIL'} {side:8} {n} runners x {f['count']} tasks: "
                      f"{f['documents']} documents, {f['finished']} finished, {f['attempts_one']} with attempts == 1, "
                      f"{f['exactly_once']} ran exactly once, {f['more_than_once']} more than once, "
                      f"{f['never']} never, {f['overlapping']} overlapping executions{malformed}{rate}")
                if "note" in f:
                    print(f"       ({f['note']})")

    if results.get("throughput"):
        e = results["throughput"]
        print("\n5. Claim throughput on a backlog of no-op tasks (tasks/s, first start -> last finish)")
        rows = [[f"tensorhub, {n} runners", cell(e[n].get("current"), "throughput", ".2f"),
                 cell(e[n].get("baseline"), "throughput", ".2f"),
                 ratio(e[n].get("current"), e[n].get("baseline"), "throughput")]
                for n in sorted(k for k in e if k != "hyperopt")]
        print(table(["", "current", "baseline", "cur/base"], rows))
        print("\n".join(errors({k: v for k, v in e.items() if k != "hyperopt"})))
        h = e.get("hyperopt", {}).get("hyperopt")
        if h is not None:
            if "error" in h:
                print(f"  hyperopt-mongo-worker x{args.hyperopt_workers} --no-subprocesses: could not run: "
                      f"{h['error']}")
            else:
                cur = next((s.get("current") for k, s in e.items() if k != "hyperopt"), None)
                vs = ""
                if cur and "error" not in cur and cur.get("throughput") and h.get("throughput"):
                    vs = f" (tensorhub current / hyperopt = {cur['throughput'] / h['throughput']:.3f}x)"
                print(f"  hyperopt-mongo-worker x{args.hyperopt_workers} --no-subprocesses, same server: "
                      f"{cell(h, 'throughput', '.2f')} trials/s{vs}; {h['done']}/{h['count']} trials done, "
                      f"{h['executions']} executions, {h['more_than_once']} trial(s) run more than once")
                print(f"  hyperopt worker commands per trial: {h['per_trial']:.2f} ({h['breakdown']}); "
                      f"heartbeats {h['heartbeats_per_trial']:.2f}/trial")
                print("  (hyperopt runs trials inside the worker process; a tensorhub task gets a fresh process)")
                if h["more_than_once"] and backend in ("sqlite", "postgresql"):
                    print("  (hyperopt reserves a job with one findAndModify; FerretDB v1 executes findAndModify as a "
                          "read followed by a write, so two workers can both reserve the same job)")

    if results.get("memory"):
        e = results["memory"]
        print("\n6. Memory and CPU of one runner (no counting hook in it)")
        rows = []
        for key, label, fmt in (("rss_idle_mb", f"idle runner VmRSS, MB (target < {RSS_TARGET_MB:g})", ".1f"),
                                ("anon_idle_mb", "  of which RssAnon (private), MB", ".1f"),
                                ("file_idle_mb", "  of which RssFile (shared libraries, code), MB", ".1f"),
                                ("rss_after_mb", "VmRSS after the no-op tasks, MB", ".1f"),
                                ("hwm_mb", "VmHWM (peak RSS), MB", ".1f"),
                                ("idle_cpu_ms_per_s", "idle runner CPU, ms per s", ".2f"),
                                ("task_cpu_ms", "CPU of a no-op task's processes, ms", ".0f"),
                                ("runner_cpu_ms_per_task", "runner's own CPU per task, ms", ".0f")):
            cur, base = e[1].get("current"), e[1].get("baseline")
            status = ""
            if key == "rss_idle_mb" and cur and "error" not in cur:
                status = meets(cur[key] < RSS_TARGET_MB)
            rows.append([label, cell(cur, key, fmt), cell(base, key, fmt), ratio(cur, base, key), status])
        print(table(["", "current", "baseline", "cur/base", "target"], rows))
        print("\n".join(errors(e)))
    print()


# -- the run -----------------------------------------------------------------------------------------
def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", choices=("sqlite", "postgresql", "uri"), default="sqlite")
    p.add_argument("--uri", default=None, help="server for --backend uri (no database needed)")
    p.add_argument("--baseline", default="d2d5b0d", help="git revision of today's design ('none': skip it)")
    p.add_argument("--runners", default=None, help="fleet sizes for commands and idle (default 1,4,20,50)")
    p.add_argument("--quick", action="store_true", help="small counts: a smoke run")
    p.add_argument("--only", default=None, help=f"comma-separated sections of: {', '.join(SECTIONS)}")
    p.add_argument("--tasks", type=int, default=None, help="backlog per fleet in section 1 (default 200)")
    p.add_argument("--idle-seconds", type=int, default=None, help="idle window (default 20)")
    p.add_argument("--settle", type=float, default=3.0, help="seconds after start-up before the idle window")
    p.add_argument("--latency-runners", default=None, help="default 3,50")
    p.add_argument("--latency-tasks", type=int, default=None, help="default 40")
    p.add_argument("--latency-rate", type=float, default=2.0, help="tasks per second")
    p.add_argument("--once-runners", type=int, default=None, help="default 50")
    p.add_argument("--once-tasks", type=int, default=None, help="default 500")
    p.add_argument("--throughput-runners", type=int, default=4)
    p.add_argument("--hyperopt-workers", type=int, default=4)
    p.add_argument("--hyperopt-tasks", type=int, default=None, help="default: as --tasks")
    p.add_argument("--no-hyperopt", action="store_true")
    p.add_argument("--memory-tasks", type=int, default=None, help="default 20")
    p.add_argument("--ready-timeout", type=float, default=None, help="seconds for a fleet to come up")
    p.add_argument("--keep", action="store_true", help="keep the runner/distributor logs and counts (temp dir)")
    a = p.parse_args()
    q = a.quick
    a.runners = [int(x) for x in (a.runners or ("1,4" if q else "1,4,20,50")).split(",")]
    a.latency_runners = [int(x) for x in (a.latency_runners or ("3,8" if q else "3,50")).split(",")]
    a.tasks = a.tasks or (20 if q else 200)
    a.idle_seconds = a.idle_seconds or (5 if q else 20)
    a.latency_tasks = a.latency_tasks or (8 if q else 40)
    a.once_runners = a.once_runners or (8 if q else 50)
    a.once_tasks = a.once_tasks or (40 if q else 500)
    a.hyperopt_tasks = a.hyperopt_tasks or a.tasks
    a.memory_tasks = a.memory_tasks or (5 if q else 20)
    a.sections = [s.strip() for s in (a.only or ",".join(SECTIONS)).split(",")]
    unknown = set(a.sections) - set(SECTIONS)
    if unknown:
        p.error(f"unknown section(s) {', '.join(sorted(unknown))}; known: {', '.join(SECTIONS)}")
    return a


def plan(args: argparse.Namespace) -> dict[int, list[str]]:
    """Fleet size -> the phases it runs, in order; one fleet serves them all (start-up is costly)."""
    phases: dict[int, list[str]] = defaultdict(list)
    s = args.sections
    for n in args.runners:
        if "idle" in s:
            phases[n].append("idle")
    for n in args.latency_runners:
        if "latency" in s:
            phases[n].append("latency")
    for n in args.runners:
        if "commands" in s:
            phases[n].append("backlog")
    if "throughput" in s and "backlog" not in phases[args.throughput_runners]:
        phases[args.throughput_runners].append("backlog")
    if "once" in s:
        phases[args.once_runners].append("once")
    return {n: phases[n] for n in sorted(phases) if phases[n]}


def run_fleet(side: Side, n: int, phases: list[str], args: argparse.Namespace, server: Server,
              work: Path, site_dir: Path, results: Results) -> None:
    def record(section: str, key: Any, fig: dict[str, Any]) -> None:
        results[section].setdefault(key, {})[side.name] = fig

    fleet = Fleet(side, n, server, work, site_dir)
    try:
        fleet.start(args.ready_timeout or 60 + 4 * n)
    except Exception as err:  # noqa: BLE001 -- a design that cannot start still gets its row
        log(f"{side.name} N={n}: fleet did not start: {err}")
        for phase in phases:
            for section in section_of(phase, n, args):
                record(section, n, {"error": f"fleet did not start: {err}"})
        fleet.stop()
        return
    try:
        time.sleep(args.settle)  # past start-up before any phase: backoffs at their idle length
        for phase in phases:
            t0 = time.monotonic()
            try:
                if phase == "idle":
                    fig = phase_idle(fleet, args.idle_seconds)
                    log(f"{side.name} N={n}: idle {fig['per_s']:.1f} commands/s")
                elif phase == "latency":
                    fig = phase_latency(fleet, args.latency_tasks, args.latency_rate,
                                        args.latency_tasks / args.latency_rate + 120)
                    log(f"{side.name} N={n}: latency p50 {fig['p50']:.0f} ms, p95 {fig['p95']:.0f} ms")
                elif phase == "backlog":
                    fig = phase_backlog(fleet, args.tasks, 120 + 3 * args.tasks)
                    log(f"{side.name} N={n}: {fig['per_task']:.2f} commands/task, "
                        f"{fig['throughput'] or 0:.2f} tasks/s")
                else:
                    fig = phase_once(fleet, args.once_tasks, 180 + 3 * args.once_tasks)
                    log(f"{side.name} N={n}: once {'passed' if fig['passed'] else 'FAILED'}")
            except Exception as err:  # noqa: BLE001 -- record and go on with the next phase
                log(f"{side.name} N={n}: {phase} failed after {time.monotonic() - t0:.0f} s: {err}")
                fig = {"error": str(err)}
            for section in section_of(phase, n, args):
                record(section, n, fig)
            if "error" in fig and fleet.runners and any(p.poll() is not None for p in fleet.runners):
                break  # runners died: the remaining phases would only time out
    finally:
        log(f"{side.name} N={n}: stopping")
        fleet.stop()


def section_of(phase: str, n: int, args: argparse.Namespace) -> list[str]:
    if phase == "backlog":
        out = ["commands"] if "commands" in args.sections and n in args.runners else []
        if "throughput" in args.sections and n == args.throughput_runners:
            out.append("throughput")
        return out
    return [{"idle": "idle", "latency": "latency", "once": "once"}[phase]]


def main() -> None:
    args = parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that the finally blocks stop the fleet
    atexit.register(kill_everything)
    results: Results = defaultdict(dict)
    sides: list[Side] = []
    with ExitStack() as stack:
        work = Path(tempfile.mkdtemp(prefix="tensorhub-fleet-"))
        if args.keep:
            stack.callback(log, f"logs and command counts kept in {work}")
        else:
            stack.callback(shutil.rmtree, work, True)
        site_dir = work / "site"
        site_dir.mkdir()
        shutil.copy(BENCH / "fleet_sitecustomize.py", site_dir / "sitecustomize.py")
        stack.callback(kill_everything)
        sides.append(Side("current", ROOT, current_label()))
        if args.baseline.lower() != "none":
            sides.append(checkout_baseline(args.baseline, stack))
        server = start_server(args.backend, args.uri, stack)
        stack.callback(server.client.close)
        load = os.getloadavg()
        log(f"server {server.describe()}; {os.cpu_count()} CPUs, load {load[0]:.1f}; "
            + "; ".join(f"{s.name} = {s.label}" for s in sides))
        try:
            for n, phases in plan(args).items():
                for side in sides:
                    run_fleet(side, n, phases, args, server, work, site_dir, results)
                if "throughput" in args.sections and n == args.throughput_runners and not args.no_hyperopt:
                    log(f"hyperopt: {args.hyperopt_workers} workers, {args.hyperopt_tasks} trials")
                    try:
                        fig = run_hyperopt(server, work, site_dir, args.hyperopt_tasks, args.hyperopt_workers,
                                           120 + 3 * args.hyperopt_tasks)
                        log(f"hyperopt: {fig['throughput'] or 0:.2f} trials/s")
                    except Exception as err:  # noqa: BLE001
                        log(f"hyperopt: {err}")
                        fig = {"error": str(err)}
                    results["throughput"].setdefault("hyperopt", {})["hyperopt"] = fig
            if "memory" in args.sections:
                for side in sides:
                    log(f"{side.name}: memory and CPU of one runner")
                    try:
                        fig = phase_memory(side, server, work, site_dir, args.memory_tasks, 120 + 5 * args.memory_tasks)
                    except Exception as err:  # noqa: BLE001
                        fig = {"error": str(err)}
                    results["memory"].setdefault(1, {})[side.name] = fig
        finally:
            report(results, sides, args.backend, server.describe(), args)


if __name__ == "__main__":
    main()
