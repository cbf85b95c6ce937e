"""Nothing a task starts outlives its attempt or its runner, not even what left its process group.

Four layers: the descendant helpers (``tensorhub.runner.descendants``) in a throwaway process; the
task supervisor (``python -m tensorhub.runner.child``) on its own, no server; the fork server that
forks supervisors (``tensorhub.runner.forkserver``) in a throwaway runner; and real runner daemons
on a real server, ended every way an attempt can end. Linux only, like the mechanism.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import bson
import pytest
from bson import ObjectId

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="descendant tracking needs Linux /proc")

# A task that leaves three kinds of process behind: a child in a new session (what `setsid cmd`
# does), a classic double-fork daemon (parent gone, new session), and itself. It records their
# pids in `pids` (atomically), naps (so a test can look at them), then ends as `then` says.
TREE_SCRIPT = """
import os, signal, subprocess, time
detached = subprocess.Popen(["sleep", "300"], start_new_session=True)
r, w = os.pipe()
middle = os.fork()
if middle == 0:
    os.setsid()
    if os.fork() == 0:
        os.write(w, str(os.getpid()).encode())
        time.sleep(300)
    os._exit(0)
os.waitpid(middle, 0)
os.close(w)
daemon = int(os.read(r, 32))
with open(pids + ".tmp", "w") as f:
    f.write(f"{os.getpid()} {detached.pid} {daemon}")
os.replace(pids + ".tmp", pids)
time.sleep(nap)
if then == "kill-supervisor":
    os.kill(os.getppid(), signal.SIGKILL)
    time.sleep(300)  # the kernel kills us: the supervisor asked for it
if then == "kill-runner":
    os.kill(int(os.environ["TENSORHUB_RUNNER_PID"]), signal.SIGKILL)
    time.sleep(300)  # the supervisor kills us as it learns that the runner died
if then == "die":
    os.kill(os.getpid(), signal.SIGKILL)
if then == "fail":
    raise RuntimeError("failing on purpose")
done = True
"""


# -- watching processes without being fooled by pid reuse --------------------------------------
@dataclass(frozen=True)
class Proc:
    """A process seen once: pid plus its start time, so a reused pid does not look alive."""

    pid: int
    start: str

    @classmethod
    def seen(cls, pid: int) -> Proc:
        fields = _stat(pid)
        assert fields is not None, f"process {pid} is not there"
        return cls(pid, fields[19])

    def alive(self) -> bool:
        fields = _stat(self.pid)
        return fields is not None and fields[19] == self.start and fields[0] != "Z"

    def parent(self) -> int:
        fields = _stat(self.pid)
        assert fields is not None
        return int(fields[1])


def _stat(pid: int) -> list[str] | None:
    """/proc/PID/stat from the state field on, or None once the process is reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None


def wait_until(condition: Callable[[], object], timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def all_gone(procs: list[Proc]) -> bool:
    return not any(proc.alive() for proc in procs)


@pytest.fixture
def watched() -> Iterator[list[Proc]]:
    """Processes a test saw; any left alive when it ends are killed, so failures leave no sleepers."""
    procs: list[Proc] = []
    yield procs
    for proc in procs:
        if proc.alive():
            os.kill(proc.pid, signal.SIGKILL)


def read_tree(pids: Path, timeout: float = 60) -> list[Proc]:
    """The task, its detached child and its daemon, from the file the task wrote."""
    wait_until(pids.exists, timeout, "the task to start its processes")
    return [Proc.seen(int(pid)) for pid in pids.read_text().split()]


# -- the helpers, in a process of their own (kill_descendants kills its caller's children) --------
HELPER_SCRIPT = """
import json, os, subprocess, sys, time
from tensorhub.runner import descendants as d

assert d.become_subreaper()
tree = "sleep 300 >/dev/null & echo $!; wait"
kept = subprocess.Popen(["sh", "-c", tree], stdout=subprocess.PIPE, text=True)
kept_grandchild = int(kept.stdout.readline())
plain = subprocess.Popen(["sh", "-c", tree], stdout=subprocess.PIPE, text=True)
plain_grandchild = int(plain.stdout.readline())
# The shell exits at once: its setsid child is an orphan, and comes to us, the subreaper.
orphan_sh = "setsid sleep 300 >/dev/null 2>&1 & echo $!"
orphan = int(subprocess.run(["sh", "-c", orphan_sh], capture_output=True, text=True).stdout)
time.sleep(0.2)
me = os.getpid()
found = d.descendants(me)
scan = d._children_by_scan()
result = {
    "found": found,
    "children": sorted(d.children_of(me)),
    "children_by_scan": sorted(scan.get(me, [])),
    "without_kept": d.descendants(me, keep={kept.pid}),
    "left": d.kill_descendants(keep={kept.pid}),
    "after": d.descendants(me),
    "kept_running": kept.poll() is None,
}
kept.kill()
result["kept_status"] = kept.wait()  # its status was left for its Popen, not reaped by the sweep
result["left_at_end"] = d.kill_descendants()
result.update(kept=kept.pid, kept_grandchild=kept_grandchild, plain=plain.pid,
              plain_grandchild=plain_grandchild, orphan=orphan)
print(json.dumps(result))
"""


def test_descendants_are_found_and_killed_except_the_kept_ones():
    done = subprocess.run([sys.executable, "-c", HELPER_SCRIPT], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False)
    assert done.returncode == 0, done.stderr
    r = json.loads(done.stdout)
    assert set(r["found"]) == {r["kept"], r["kept_grandchild"], r["plain"], r["plain_grandchild"], r["orphan"]}
    assert r["found"].index(r["plain"]) < r["found"].index(r["plain_grandchild"])  # parents first
    assert r["children"] == r["children_by_scan"] == sorted([r["kept"], r["plain"], r["orphan"]])
    assert set(r["without_kept"]) == {r["plain"], r["plain_grandchild"], r["orphan"]}
    assert r["left"] == [] and r["kept_running"]
    assert set(r["after"]) == {r["kept"], r["kept_grandchild"]}
    assert r["kept_status"] == -signal.SIGKILL and r["left_at_end"] == []
    for pid in (r["plain"], r["plain_grandchild"], r["orphan"], r["kept_grandchild"]):
        assert _stat(pid) is None  # killed and reaped: not even a zombie is left


# -- the supervisor alone: python -m tensorhub.runner.child WORKDIR, no server --------------------
def write_task(workdir: Path, then: str = "finish", nap: float = 0.0) -> Path:
    """A work dir as TaskProcess prepares it, for a script task that needs no server."""
    workdir.mkdir(exist_ok=True)
    # The task document's layout (tensorhub/tasks/model.py): the hub's bookkeeping under "_hub".
    hub_fields = {"code": {"kind": "script", "source": TREE_SCRIPT}, "attempts": 1, "seq": 1}
    task = {"_id": ObjectId(), "_hub": hub_fields, "saved_result_keys": ["done"],
            "hyper_parameters": {"pids": str(workdir / "pids"), "then": then, "nap": nap}}
    workdir.joinpath("task.bson").write_bytes(bson.encode(task))
    return workdir


def start_child(workdir: Path) -> subprocess.Popen:
    """Start a task's subprocess the way TaskProcess does, with this test as its runner."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TENSORHUB_RUNNER_PID": str(os.getpid())}
    with open(workdir / "output.log", "wb") as log:
        return subprocess.Popen([sys.executable, "-m", "tensorhub.runner.child", str(workdir)], env=env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def test_supervisor_kills_what_the_task_left_when_it_finishes(tmp_path, watched):
    workdir = write_task(tmp_path / "w", nap=2)
    child = start_child(workdir)
    watched += read_tree(workdir / "pids")
    assert child.wait(timeout=60) == 0
    assert all_gone(watched)  # already when the supervisor has exited: nothing to wait for
    assert bson.decode((workdir / "outcome.bson").read_bytes()) == {"ok": True, "result": {"done": True}}


def test_supervisor_stops_on_sigterm_with_everything_below_it(tmp_path, watched):
    workdir = write_task(tmp_path / "w", nap=300)
    child = start_child(workdir)
    watched += read_tree(workdir / "pids")
    assert watched[0].parent() == child.pid  # the worker runs under the supervisor
    assert watched[2].parent() == child.pid  # the double-forked daemon was adopted by it
    child.send_signal(signal.SIGTERM)
    assert child.wait(timeout=10) == -signal.SIGTERM
    assert all_gone(watched)


def test_supervisor_dies_of_the_signal_its_worker_died_of(tmp_path, watched):
    workdir = write_task(tmp_path / "w", then="die", nap=2)
    child = start_child(workdir)
    watched += read_tree(workdir / "pids")
    assert child.wait(timeout=60) == -signal.SIGKILL  # so the runner can say "killed by signal 9"
    assert all_gone(watched)
    assert not (workdir / "outcome.bson").exists()


# A stand-in for the runner: starts the task's subprocess as TaskProcess does, then idles.
FAKE_RUNNER = """
import os, subprocess, sys, time
env = {**os.environ, "TENSORHUB_RUNNER_PID": str(os.getpid())}
child = subprocess.Popen([sys.executable, "-m", "tensorhub.runner.child", sys.argv[1]], env=env,
                         stdout=subprocess.DEVNULL, start_new_session=True)
print(child.pid, flush=True)
time.sleep(300)
"""


def test_supervisor_cleans_up_when_its_runner_is_killed(tmp_path, watched):
    workdir = write_task(tmp_path / "w", nap=300)
    runner = subprocess.Popen([sys.executable, "-c", FAKE_RUNNER, str(workdir)], stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        watched.append(Proc.seen(int(runner.stdout.readline())))
        watched += read_tree(workdir / "pids")
    finally:
        runner.kill()
        runner.wait()
    wait_until(lambda: all_gone(watched), 5, "the supervisor and everything below it to go")


@pytest.mark.parametrize(("modules", "heavy"), [
    ("tensorhub.runner.child", "'numpy', 'pandas', 'pymongo', 'tensorflow'"),
    ("tensorhub.runner.forkserver, tensorhub.runs.current, tensorhub.tasks.execute", "'numpy', 'pandas', 'pymongo', 'dill'"),
], ids=["supervisor", "fork server"])
def test_what_starts_a_task_imports_nothing_heavy(modules: str, heavy: str):
    code = f"import sys, {modules}\nprint(sorted({{m.split('.')[0] for m in sys.modules}} & {{{heavy}}}))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False)
    assert done.stdout.strip() == "[]", done.stderr


# -- the fork server alone, in a throwaway runner (it makes its caller a subreaper) -------------
FORK_SERVER_SCRIPT = """
import json, os, signal, sys, time
from pathlib import Path
import bson
from bson import ObjectId
from tensorhub.runner import forkserver
from tensorhub.runner.process import _peek_exit

env = {**os.environ, "PYTHONUNBUFFERED": "1", "TENSORHUB_TASK_OF": str(os.getpid()),
       "TENSORHUB_RUNNER_PID": str(os.getpid())}
server = forkserver.for_this_thread(env)
source = sys.argv[2]
results = {"runner": os.getpid(), "server": server.pid}
for name, then in (("ok", "finish"), ("died", "die"), ("gpu", "finish")):
    workdir = Path(sys.argv[1]) / name
    workdir.mkdir()
    task = {"_id": ObjectId(), "_hub": {"code": {"kind": "script", "source": source}, "attempts": 1, "seq": 1},
            "saved_result_keys": ["report"], "hyper_parameters": {"then": then}}
    workdir.joinpath("task.bson").write_bytes(bson.encode(task))
    workdir.joinpath("output.log").touch()
    attempt_env = {**env, "CUDA_VISIBLE_DEVICES": "7"} if name == "gpu" else env
    proc = server.spawn(str(workdir), str(workdir / "output.log"), attempt_env)
    while _peek_exit(proc) is None:
        time.sleep(0.01)
    stat = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    results[name] = {"code": _peek_exit(proc), "zombie_until_reaped": stat[0] == "Z", "parent": int(stat[1]),
                     "log": workdir.joinpath("output.log").read_text()}
    if workdir.joinpath("outcome.bson").exists():
        results[name]["outcome"] = bson.decode(workdir.joinpath("outcome.bson").read_bytes())
    results[name]["reaped"] = proc.wait()
    results[name]["gone_after_reap"] = not Path(f"/proc/{proc.pid}").exists()
print(json.dumps(results))
"""

# What a no-op task's process sees: which heavy modules it has, its session, where its output goes.
REPORTING_SCRIPT = """
import os, sys
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"numpy", "pandas", "pymongo", "dill"})
report = {"heavy": heavy, "gpu": os.environ.get("CUDA_VISIBLE_DEVICES"), "cwd": os.getcwd(),
          "session_leader": os.getsid(os.getppid()) == os.getppid(),
          # what the stray sweep looks for: the fork server's exec-time environment, inherited
          "marked": any(v.startswith(b"TENSORHUB_TASK_OF=") for v in open("/proc/self/environ", "rb").read().split(b"\\0"))}
print("hello from the task")
if then == "die":
    os.kill(os.getpid(), 9)
"""


def test_the_fork_server_forks_lean_attempts_that_the_runner_adopts(tmp_path):
    done = subprocess.run([sys.executable, "-c", FORK_SERVER_SCRIPT, str(tmp_path), REPORTING_SCRIPT],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False)
    assert done.returncode == 0, done.stderr
    r = json.loads(done.stdout)
    ok, died, gpu = r["ok"], r["died"], r["gpu"]
    assert ok["code"] == 0 and ok["reaped"] == 0
    assert ok["outcome"]["result"]["report"] == {"heavy": [], "gpu": None, "cwd": str(tmp_path / "ok"),
                                                  "session_leader": True, "marked": True}
    assert "hello from the task" in ok["log"]
    assert died["code"] == died["reaped"] == -signal.SIGKILL and "outcome" not in died
    assert gpu["outcome"]["result"]["report"]["gpu"] == "7"
    for attempt in (ok, died, gpu):  # forked by the fork server, adopted by the runner: ours to wait for
        assert attempt["parent"] == r["runner"]
        assert attempt["zombie_until_reaped"] and attempt["gone_after_reap"]


def test_a_fork_server_that_cannot_start_means_fresh_interpreters_for_a_while():
    code = ("import os, sys\n"
            "from tensorhub.runner import forkserver\n"
            "sys.executable = '/bin/false'\n"  # the fork server's interpreter exits at once
            "print(forkserver.for_this_thread(dict(os.environ)), forkserver._failed_until > 0)\n"
            "sys.executable = '/nonexistent/python'\n"  # not even tried again for RETRY_AFTER
            "print(forkserver.for_this_thread(dict(os.environ)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["None", "True", "None"]
    assert "fork server unusable" in done.stderr


# -- real runners on a real server --------------------------------------------------------------
@pytest.fixture
def runners(server_uri: str, tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen]]:
    started: list[subprocess.Popen] = []

    def start(*args: str, lease: float = 3.0, fork_server: bool = True) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "tensorhub.cli", "runner", "--uri", server_uri, "--project", "test",
               "--lease-seconds", str(lease), "--poll-interval", "0.2", "--log-level", "WARNING", *args]
        env = {**os.environ, "TENSORHUB_FORK_SERVER": "1" if fork_server else "0"}
        with open(tmp_path / f"runner-{len(started)}.log", "wb") as log:  # read it when a test fails
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def tree_task(hub, tmp_path: Path, then: str = "finish", nap: float = 0.0, **options) -> tuple[ObjectId, Path]:
    pids = tmp_path / f"pids-{then}"
    task_id = hub.create_task(f"tree-{then}", source=TREE_SCRIPT, saved_result_keys=["done"],
                              hyper_parameters={"pids": str(pids), "then": then, "nap": nap}, **options)
    return task_id, pids


def status_of(hub, task_id: ObjectId) -> str:
    return hub.get_task(task_id)["status"]


@pytest.mark.slow
def test_nothing_outlives_a_task_that_finishes_or_fails(server_hub, runners, tmp_path, watched):
    finishing, finishing_pids = tree_task(server_hub, tmp_path, "finish", nap=3)
    failing, failing_pids = tree_task(server_hub, tmp_path, "fail", nap=3, max_attempts=1)
    runners("--slots", "2")
    trees = {finishing: read_tree(finishing_pids), failing: read_tree(failing_pids)}
    for tree in trees.values():
        watched += tree
    for task_id, status in ((finishing, "finished"), (failing, "failed")):
        wait_until(lambda t=task_id, s=status: status_of(server_hub, t) == s, 60, f"the task to be {status}")
        assert all_gone(trees[task_id])  # the supervisor killed them before the runner wrote the outcome
    task = server_hub.get_task(finishing)
    assert task["result"] == {"done": True}
    assert server_hub.get_task(failing)["error"]["type"] == "RuntimeError"


@pytest.mark.slow
def test_nothing_outlives_a_timeout_or_a_cancellation(server_hub, runners, tmp_path, watched):
    slow, slow_pids = tree_task(server_hub, tmp_path, "timeout", nap=300, timeout=5, max_attempts=1)
    cancelled, cancelled_pids = tree_task(server_hub, tmp_path, "cancel", nap=300)
    runners("--slots", "2")
    watched += (slow_tree := read_tree(slow_pids))
    watched += (cancelled_tree := read_tree(cancelled_pids))
    assert server_hub.cancel_tasks("tree-cancel") == 1
    wait_until(lambda: all_gone(cancelled_tree), 10, "the cancelled task's processes to go")
    wait_until(lambda: status_of(server_hub, slow) == "failed", 60, "the timeout")
    assert server_hub.get_task(slow)["error"]["type"] == "TaskTimeout"
    assert all_gone(slow_tree)
    assert status_of(server_hub, cancelled) == "cancelled"


def is_fork_server(pid: int) -> bool:
    return b"tensorhub.runner.forkserver" in Path(f"/proc/{pid}/cmdline").read_bytes()


@pytest.mark.slow
@pytest.mark.parametrize("fork_server", [True, False], ids=["forked", "fresh-interpreter"])
def test_kill_9_of_the_runner_takes_the_task_and_its_detached_children(server_hub, runners, tmp_path, watched,
                                                                       fork_server):
    task_id, pids = tree_task(server_hub, tmp_path, "finish", nap=300)
    runner = runners(fork_server=fork_server)
    watched += read_tree(pids)
    watched.insert(0, supervisor := Proc.seen(watched[0].parent()))
    assert supervisor.parent() == runner.pid  # forked by the fork server or not, adopted by the runner
    assert is_fork_server(supervisor.pid) == fork_server
    if fork_server:  # it goes too
        watched += [Proc.seen(pid) for pid in fork_servers_of(runner.pid) if pid != supervisor.pid]
    assert status_of(server_hub, task_id) == "running"
    runner.kill()  # SIGKILL: the runner can do nothing more
    runner.wait()
    wait_until(lambda: all_gone(watched), 5, "the task, its supervisor and its detached children to go")


@pytest.mark.slow
def test_the_runner_sweeps_up_after_a_supervisor_killed_outright(server_hub, runners, tmp_path, watched):
    """The one case the supervisor cannot handle: the task kills it. Its worker dies with it; what
    the worker started re-parents to the runner (a subreaper), which kills it after the attempt."""
    task_id, pids = tree_task(server_hub, tmp_path, "kill-supervisor", nap=2, max_attempts=1)
    runner = runners()
    watched += read_tree(pids)
    wait_until(lambda: status_of(server_hub, task_id) == "failed", 60, "the attempt to fail")
    wait_until(lambda: all_gone(watched), 5, "the orphans to be swept")
    assert "killed by signal 9" in server_hub.get_task(task_id)["error"]["message"]
    assert runner.poll() is None


@pytest.mark.slow
def test_a_task_that_kills_its_runner_fails_once_its_attempts_run_out(server_hub, runners, tmp_path, watched):
    task_id, pids = tree_task(server_hub, tmp_path, "kill-runner", nap=2, max_attempts=2)
    for attempt in (1, 2):
        victim = runners()
        watched += (tree := read_tree(pids))
        assert victim.wait(timeout=60) == -signal.SIGKILL
        wait_until(lambda: all_gone(tree), 5, f"attempt {attempt}'s processes to go with their runner")
        pids.unlink()
    survivor = runners()  # reaps the second expired lease: no attempts left, so no third run
    wait_until(lambda: status_of(server_hub, task_id) == "failed", 60, "the task to fail for good")
    task = server_hub.get_task(task_id)
    assert task["attempts"] == 2 and task["error"]["type"] == "LeaseExpired"
    time.sleep(1)
    assert survivor.poll() is None and not pids.exists()


# A no-op task that says which heavy modules its process has, and what it was forked from (a fork
# keeps its parent's command line: a fresh interpreter's would be "-m tensorhub.runner.child").
LEAN_SCRIPT = """
import sys
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"numpy", "pandas", "pymongo", "dill"})
with open("/proc/self/cmdline", "rb") as f:
    forked_from = f.read().split(b"\\0")[2].decode()
"""


def fork_servers_of(runner: int) -> list[int]:
    """The runner's children with the fork server's command line: it, and its forks while they run."""
    kids = [int(pid) for tid in os.listdir(f"/proc/{runner}/task")
            for pid in Path(f"/proc/{runner}/task/{tid}/children").read_text().split()]
    return [pid for pid in kids if is_fork_server(pid)]


@pytest.mark.slow
def test_a_runner_survives_the_death_of_its_fork_server(server_hub, runners, tmp_path, watched):
    """The fork server killed outright takes no attempt with it (the runner adopted them all); the
    runner starts a new one for the next attempt, still without numpy or pymongo in the task."""
    task_id, pids = tree_task(server_hub, tmp_path, "finish", nap=4, max_attempts=1)
    runner = runners()
    watched += read_tree(pids)
    supervisor = Proc.seen(watched[0].parent())
    assert supervisor.parent() == runner.pid and is_fork_server(supervisor.pid)  # a fork of it
    [server] = [pid for pid in fork_servers_of(runner.pid) if pid != supervisor.pid]
    os.kill(server, signal.SIGKILL)
    time.sleep(0.5)
    assert not any(proc.pid == server for proc in watched) and supervisor.alive() and watched[0].alive()
    wait_until(lambda: status_of(server_hub, task_id) == "finished", 60, "the attempt to finish")
    assert all_gone(watched) and server_hub.get_task(task_id)["result"] == {"done": True}
    lean = server_hub.create_task("lean", source=LEAN_SCRIPT, saved_result_keys=["heavy", "forked_from"])
    wait_until(lambda: status_of(server_hub, lean) == "finished", 30, "a task after the fork server died")
    assert server_hub.get_task(lean)["result"] == {"heavy": [], "forked_from": "tensorhub.runner.forkserver"}
    new_server = wait_until(lambda: fork_servers_of(runner.pid), 10, "the new fork server")
    assert server not in new_server and runner.poll() is None
