"""Runner daemons as real processes against a real server: many runners, kill -9, timeouts,
cancellation, SIGTERM, GPU slots. Every test here needs FerretDB or TENSORHUB_TEST_URI."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


def start_runner(uri: str, *args: str, lease: float = 4.0) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "tensorhub.cli", "runner", "--uri", uri, "--project", "test",
           "--lease-seconds", str(lease), "--poll-interval", "0.2", "--log-level", "WARNING", *args]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


@pytest.fixture
def runners(server_uri: str) -> Iterator[Callable[..., subprocess.Popen]]:
    started: list[subprocess.Popen] = []

    def start(*args: str, lease: float = 4.0) -> subprocess.Popen:
        proc = start_runner(server_uri, *args, lease=lease)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def wait_until(condition: Callable[[], object], timeout: float = 60.0, what: str = "condition") -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead too; a process that went between the two looks is gone
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


RECORDING_SCRIPT = """
import os, time
from tensorhub import current_task
with open(trace, "a") as f:
    f.write(f"start {current_task().task_id} {time.time()} {os.getpid()}\\n")
time.sleep(duration)
with open(trace, "a") as f:
    f.write(f"end {current_task().task_id} {time.time()} {os.getpid()}\\n")
square = i * i
"""


def test_several_runners_run_every_task_once_without_overlap(server_hub, runners, tmp_path):
    trace = tmp_path / "trace.log"
    ids = [server_hub.create_task("many", source=RECORDING_SCRIPT, saved_result_keys=["square"],
                                  hyper_parameters={"i": i, "trace": str(trace), "duration": 0.05 * (i % 3)})
           for i in range(24)]
    procs = [runners("--slots", "2") for _ in range(3)]
    counts = server_hub.wait_for_tasks("many", timeout=180, poll_interval=0.2, progress=False)
    assert counts["finished"] == 24
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    assert all(proc.wait(timeout=30) == 0 for proc in procs)

    tasks = {t["_id"]: t for t in server_hub.find_tasks("many")}
    assert [tasks[i]["result"] for i in ids] == [{"square": i * i} for i in range(24)]
    assert all(t["attempts"] == 1 for t in tasks.values())
    assert len({t["runner"]["id"] for t in tasks.values()}) >= 2  # the work really was shared
    spans: dict[str, list[list[float]]] = defaultdict(list)
    for line in trace.read_text().splitlines():
        kind, task_id, at, _pid = line.split()
        if kind == "start":
            spans[task_id].append([float(at), float("inf")])
        else:
            spans[task_id][-1][1] = float(at)
    assert len(spans) == 24 and all(len(s) == 1 for s in spans.values())  # each ran exactly once


KILLABLE_SCRIPT = """
import os, time
from tensorhub import current_task
with open(pids, "a") as f:
    f.write(f"{os.getpid()}\\n")
if current_task().attempt == 1:
    time.sleep(120)
answer = 42
"""


def test_kill_9_runner_task_process_dies_and_task_reruns_elsewhere(server_hub, runners, tmp_path):
    pids = tmp_path / "pids"
    task_id = server_hub.create_task("crash", source=KILLABLE_SCRIPT, saved_result_keys=["answer"],
                                     hyper_parameters={"pids": str(pids)})
    victim = runners(lease=3.0)
    wait_until(lambda: pids.exists() and pids.read_text().strip(), 60, "the task to start")
    task_pid = int(pids.read_text().split()[0])
    assert server_hub.get_task(task_id)["status"] == "running"
    victim.kill()  # SIGKILL: no handler, no hand-back
    victim.wait()
    wait_until(lambda: not pid_alive(task_pid), 10, "the orphaned task process to die")

    runners(lease=3.0)
    wait_until(lambda: server_hub.get_task(task_id)["status"] == "finished", 60, "the rerun to finish")
    task = server_hub.get_task(task_id)
    assert task["result"] == {"answer": 42} and task["attempts"] == 2
    assert task["failures"][0]["type"] == "LeaseExpired"
    assert len(pids.read_text().split()) == 2


def test_timeout_failing_script_and_captured_output(server_hub, runners):
    slow = server_hub.create_task("bad", source="import time\nprint('starting', flush=True)\ntime.sleep(60)",
                                  timeout=1.5, max_attempts=1)
    broken = server_hub.create_task("bad", source="print('about to fail')\nraise KeyError('lr')",
                                    max_attempts=2)
    runners("--slots", "2")
    wait_until(lambda: not server_hub.check_unfinished_task("bad"), 90, "both tasks to end")
    timed_out = server_hub.get_task(slow)
    assert timed_out["status"] == "failed" and timed_out["error"]["type"] == "TaskTimeout"
    assert "starting" in timed_out["output"]["tail"]
    failed = server_hub.get_task(broken)
    assert failed["status"] == "failed" and failed["attempts"] == 2
    assert failed["error"]["type"] == "KeyError" and "about to fail" in server_hub.task_output(broken)


def test_cancel_stops_a_running_task_on_its_runner(server_hub, runners, tmp_path):
    pids = tmp_path / "pids"
    task_id = server_hub.create_task("cancel", source=KILLABLE_SCRIPT, hyper_parameters={"pids": str(pids)})
    runners(lease=3.0)
    wait_until(lambda: pids.exists() and pids.read_text().strip(), 60, "the task to start")
    task_pid = int(pids.read_text().split()[0])
    assert server_hub.cancel_tasks("cancel") == 1
    assert server_hub.get_task(task_id)["status"] == "cancelled"
    wait_until(lambda: not pid_alive(task_pid), 10, "the cancelled process to be killed")
    time.sleep(1.5)
    assert server_hub.get_task(task_id)["status"] == "cancelled"  # the runner did not overwrite it


def test_sigterm_finishes_short_tasks_and_hands_back_long_ones(server_hub, runners, tmp_path):
    pids = tmp_path / "pids"
    short = server_hub.create_task("stop", source="import time\ntime.sleep(1.5)\ndone = True",
                                   saved_result_keys=["done"], priority=1)
    runner = runners("--grace-seconds", "30")
    wait_until(lambda: server_hub.get_task(short)["status"] == "running", 60, "the short task to start")
    runner.send_signal(signal.SIGTERM)
    assert runner.wait(timeout=30) == 0
    assert server_hub.get_task(short)["status"] == "finished"

    long_task = server_hub.create_task("stop", source=KILLABLE_SCRIPT, hyper_parameters={"pids": str(pids)})
    runner = runners("--grace-seconds", "1")
    wait_until(lambda: pids.exists() and pids.read_text().strip(), 60, "the long task to start")
    runner.send_signal(signal.SIGTERM)
    assert runner.wait(timeout=30) == 0
    task = server_hub.get_task(long_task)
    # Handed back: not the task's fault, so the attempt is not counted, and the history says why.
    assert task.status == "pending" and task.attempts == 0 and task.attempt_limit == 3
    assert task.history[-1]["event"] == "handed_back" and "SIGTERM" in task.history[-1]["reason"]
    assert not pid_alive(int(pids.read_text().split()[0]))


def test_one_slot_per_gpu_each_sees_only_its_gpu(server_hub, runners):
    script = "import os, time\ntime.sleep(0.3)\ngpu = os.environ.get('CUDA_VISIBLE_DEVICES')"
    for i in range(6):
        server_hub.create_task("gpu", source=script, saved_result_keys=["gpu"], hyper_parameters={"i": i})
    runners("--gpus", "3,5")
    server_hub.wait_for_tasks("gpu", timeout=90, poll_interval=0.2, progress=False)
    tasks = server_hub.find_tasks("gpu")
    assert all(t["result"]["gpu"] == t["runner"]["gpu"] for t in tasks)
    assert {t["runner"]["gpu"] for t in tasks} == {"3", "5"}


def test_function_tasks_run_only_on_runners_that_allow_pickle(server_hub, runners):
    def train(n_units):
        return {"score": n_units / 10}

    task_id = server_hub.create_task("fn", function=train, hyper_parameters={"n_units": 5},
                                     saved_result_keys=["score"])
    runners("--max-tasks", "1")
    time.sleep(2)
    assert server_hub.get_task(task_id)["status"] == "pending"
    proc = runners("--allow-pickle", "--max-tasks", "1")
    assert proc.wait(timeout=60) == 0  # --max-tasks 1: exits after its one task
    assert server_hub.get_task(task_id)["result"] == {"score": 0.5}


@pytest.mark.real_server
def test_runner_survives_a_server_outage_and_fences_itself_when_it_lasts_too_long(tmp_path):
    """The server stops answering (SIGSTOP, like a network partition): a short outage is ridden
    out; one longer than the lease makes the runner kill its task before the lease expires, and
    the task runs again once the server is back."""
    from ferretdb import FerretDBServer

    from tensorhub import TensorHub

    with FerretDBServer() as server:
        uri = server.uri + "/outage"
        hub = TensorHub(uri, project_name="test")
        runner = start_runner(uri, lease=8.0)
        try:
            quick = hub.create_task("o", source="import time\ntime.sleep(2)\nok = 1", saved_result_keys=["ok"])
            wait_until(lambda: hub.get_task(quick)["status"] == "running", 60, "the task to start")
            os.kill(server._process.pid, signal.SIGSTOP)
            time.sleep(4)  # shorter than the lease; the task ends while the server is away
            os.kill(server._process.pid, signal.SIGCONT)
            wait_until(lambda: hub.get_task(quick)["status"] == "finished", 60, "the write-back after the outage")
            assert hub.get_task(quick)["attempts"] == 1

            pids = tmp_path / "pids"
            long_task = hub.create_task("o", source=KILLABLE_SCRIPT, saved_result_keys=["answer"],
                                        hyper_parameters={"pids": str(pids)})
            wait_until(lambda: pids.exists() and pids.read_text().strip(), 60, "the long task to start")
            first_pid = int(pids.read_text().split()[0])
            os.kill(server._process.pid, signal.SIGSTOP)
            try:
                # 80% of the 8 s lease: the runner must have killed its task by then (plus slack).
                wait_until(lambda: not pid_alive(first_pid), 12, "the runner to fence its task")
            finally:
                os.kill(server._process.pid, signal.SIGCONT)
            wait_until(lambda: hub.get_task(long_task)["status"] == "finished", 90, "the rerun")
            task = hub.get_task(long_task)
            assert task["attempts"] == 2 and task["result"] == {"answer": 42}
            assert runner.poll() is None  # the same runner kept going throughout
        finally:
            runner.kill()
            runner.wait()
            hub.close()


def test_deleting_a_running_task_stops_it(server_hub, runners, tmp_path):
    pids = tmp_path / "pids"
    server_hub.create_task("del", source=KILLABLE_SCRIPT, hyper_parameters={"pids": str(pids)})
    runners(lease=3.0)
    wait_until(lambda: pids.exists() and pids.read_text().strip(), 60, "the task to start")
    assert server_hub.delete_tasks("del") == 1
    wait_until(lambda: not pid_alive(int(pids.read_text().split()[0])), 10, "the deleted task to be killed")
    assert server_hub.find_tasks("del") == []
