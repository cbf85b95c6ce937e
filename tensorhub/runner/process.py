"""One task attempt as a supervised subprocess: start it, poll it, stop it together with everything
it started, and read what it left behind (outcome file, output log).

On Linux the process tree of an attempt is (see ``forkserver.py``, ``child.py`` and ``descendants.py``)::

    runner                      a child subreaper (set up by the first TaskProcess)
    ├── fork server             started once per runner thread; forks each supervisor, which the runner adopts
    └── supervisor              a fork of the fork server (or ``python -m tensorhub.runner.child WORKDIR``
        │                       where there is none); leads its own process group
        └── worker              the task's code
            └── ...             anything it starts, setsid() or not; orphans re-parent to the supervisor

The supervisor is the runner's child either way (the fork server double-forks, and Linux hands the
orphan to the nearest subreaper), so everything below reads the same for both ways of starting it.
A fork costs a few milliseconds of CPU where a fresh interpreter costs tens.

* The attempt ends on its own: the supervisor kills what the worker left running, then exits.
* Timeout, cancellation, lost lease, shutdown (``kill()``): SIGTERM to the supervisor, which does
  the same; if it has not exited after ``STOP_GRACE`` seconds, SIGKILL to its whole process group.
* The runner dies, even of SIGKILL: the supervisor gets SIGTERM from Linux (parent-death signal)
  and cleans up on its own; the fork server gets SIGKILL. Linux sends them when the *thread* that
  is their parent ends: a fresh interpreter's is the thread that started it, so TaskProcess objects
  must be created by a thread that lives as long as the runner; an adopted supervisor's is the
  runner's main thread.
* The supervisor itself is killed outright: the worker dies with it (its own parent-death signal),
  and what the worker started re-parents to the runner, which ``cleanup()`` sweeps: it kills every
  child of the runner process that carries the runner's marker and is neither a supervisor it
  still waits for nor its fork server. A runner process therefore owns all its children; run it in
  a process of its own, as ``tensorhub runner`` does.
* The fork server dies: no attempt goes with it (none is its child); the next one starts a new one.

Elsewhere (no ``/proc``) only the process group is killed: descendants that call ``setsid()``
survive the attempt there.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

import bson

from tensorhub.runner import descendants, forkserver
from tensorhub.runner.child import ENV_PARENT
from tensorhub.tasks.claims import Claim, Outcome
from tensorhub.tasks.context import ENV_ATTEMPT, ENV_PROJECT, ENV_RUN, ENV_TASK, ENV_URI

if TYPE_CHECKING:
    from tensorhub.hub import TensorHub

OUTPUT_TAIL = 4000
ENV_TASK_OF = "TENSORHUB_TASK_OF"  # the runner pid whose task a process belongs to
STOP_GRACE = 3.0     # seconds a supervisor gets to kill its tree before its group is SIGKILLed
EXIT_WAIT = 30.0     # then how long to wait for it to die (a wedged GPU driver can hold a process)
SWEEP_WAIT = 2.0     # how long cleanup() waits for the attempt's process group to empty
# How long one sweep keeps killing strays: SIGKILLed processes go in milliseconds, and one stuck in
# the kernel must not hold up the runner's loop (and its heartbeats) for long at every attempt end.
STRAY_WAIT = 0.5
SUPERVISED = descendants.SUPPORTED  # child.py starts a supervisor exactly when this holds
# Looking at a child's exit without reaping it needs waitid (Linux; macOS from Python 3.13).
CAN_PEEK = hasattr(os, "waitid") and hasattr(os, "WNOWAIT")

# Supervisors this process started and has not reaped: the stray sweep must leave them (and their
# exit status, which their Popen or ForkedProcess collects) alone. A cleaned-up attempt whose
# supervisor would not die yet moves to _abandoned until it can be reaped.
_running: weakref.WeakSet[TaskProcess] = weakref.WeakSet()
_abandoned: list[subprocess.Popen | forkserver.ForkedProcess] = []


class TaskProcess:
    """A running attempt: ``poll()`` until it exits, then ``outcome()``; ``kill()`` any time;
    ``cleanup()`` once done with it (it reaps the process and kills whatever it left behind)."""

    def __init__(self, hub: TensorHub, claim: Claim, gpu: str | None, workroot: str | None = None) -> None:
        self.claim = claim
        self.workdir = Path(tempfile.mkdtemp(prefix=f"task-{claim.task_id}-{claim.seq}-", dir=workroot))
        self.workdir.joinpath("task.bson").write_bytes(bson.encode(claim.task))
        function_bytes = hub.queue.function_bytes(claim)
        if function_bytes is not None:
            self.workdir.joinpath("function.dill").write_bytes(function_bytes)
        # The child opens its own hub: it gets the full URI (in its environment, never in a log);
        # the project None (TensorLayer's default) travels as the empty string.
        env = {**os.environ, ENV_URI: hub.connection_uri(), ENV_PROJECT: hub.project_name or "",
               ENV_TASK: str(claim.task_id), ENV_ATTEMPT: str(claim.attempt), ENV_PARENT: str(os.getpid()),
               ENV_RUN: "" if claim.run_id is None else str(claim.run_id),
               # Inherited by everything the task starts: the stray sweep kills only what carries it.
               ENV_TASK_OF: str(os.getpid()),
               "PYTHONUNBUFFERED": "1"}
        # The child imports the very tensorhub this runner runs, installed or not.
        package_root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpu  # the task sees only its slot's GPU
        self.log_path = self.workdir / "output.log"
        self.log_path.touch()
        # Before the first task starts: what a supervisor killed outright leaves behind comes to us.
        descendants.become_subreaper()
        self.popen: subprocess.Popen | forkserver.ForkedProcess = self._fork(env) or self._exec(env)
        _running.add(self)
        self.started = time.monotonic()
        self.returncode: int | None = None
        self.kill_reason: dict[str, Any] | None = None
        self.log_ref: dict[str, Any] | None = None

    def _fork(self, env: dict[str, str]) -> forkserver.ForkedProcess | None:
        """The supervisor, forked by this thread's fork server; None where there is none."""
        server = forkserver.for_this_thread(_server_environment(env))
        if server is None:
            return None
        try:
            return server.spawn(str(self.workdir), str(self.log_path), env)
        except forkserver.ForkServerError as err:  # this attempt starts the old way; the next, a new one
            forkserver.failed(err)
            return None

    def _exec(self, env: dict[str, str]) -> subprocess.Popen:
        """The supervisor as a fresh interpreter (no fork server here, or it failed)."""
        with open(self.log_path, "wb") as log:
            # start_new_session: the supervisor, the task and what it spawns form one process group.
            return subprocess.Popen(
                [sys.executable, "-m", "tensorhub.runner.child", str(self.workdir)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                cwd=self.workdir, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def reaped(self) -> bool:
        return self.popen.returncode is not None

    def poll(self) -> int | None:
        """The exit code (minus the signal that killed it), or None while the attempt runs.

        Does not reap: until ``cleanup()`` the supervisor stays our zombie, so its pid and process
        group id cannot be handed to another process and signalling them stays safe.
        """
        if self.returncode is None:
            self.returncode = _peek_exit(self.popen) if CAN_PEEK else self.popen.poll()
        return self.returncode

    def kill(self, reason: dict[str, Any] | None = None) -> None:
        """Stop the attempt and everything it started, and wait for it to exit."""
        if reason is not None and self.kill_reason is None:
            self.kill_reason = reason
        if SUPERVISED and self.poll() is None:
            # SIGTERM, not SIGKILL: the supervisor has to outlive its worker to kill what the
            # worker started outside the process group. (Not Popen.send_signal: it would reap.)
            os.kill(self.popen.pid, signal.SIGTERM)
            self._wait(STOP_GRACE)
        self._kill_group()  # a supervisor that did not stop in time, or the task itself off Linux
        self._wait(EXIT_WAIT)

    def _wait(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while self.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)

    def _kill_group(self) -> None:
        # Only while the leader is unreaped (then no other group can have its id); without waitid
        # we cannot look without reaping and, as ever off Linux, take the tiny risk.
        if self.reaped and CAN_PEEK:
            return
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def outcome(self) -> Outcome:
        """What the attempt produced, once it has exited (or been killed)."""
        code = self.poll()
        output = {"tail": self.output_tail(), "exit_code": code}
        if self.kill_reason is not None:
            return Outcome("failed", error=self.kill_reason, output=output)
        path = self.workdir / "outcome.bson"
        if path.exists():
            data = bson.decode(path.read_bytes())
            if data.get("ok"):
                return Outcome("finished", result=data.get("result") or {}, output=output)
            return Outcome("failed", error=data.get("error"), output=output)
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exited with status {code}"
        return Outcome("failed", error={"type": "ProcessDied", "message": f"the task process {how} "
                                        "before reporting a result"}, output=output)

    def output_tail(self) -> str:
        with open(self.log_path, "rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - OUTPUT_TAIL))
            return log.read().decode("utf-8", errors="replace")

    def cleanup(self) -> None:
        """Reap the attempt, kill anything it left running (anywhere), and remove the work dir."""
        self._kill_group()
        if self.poll() is not None:
            self.popen.wait()
        elif not self.reaped:  # stuck in the kernel even after SIGKILL: reap it in a later sweep
            _abandoned.append(self.popen)
        _running.discard(self)
        if SUPERVISED:
            self._sweep()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _sweep(self) -> None:
        """Kill the runner's stray children until this attempt's process group is empty.

        Normally there is nothing to do: the supervisor left nothing behind. When it was killed
        outright, its worker is dying of its parent-death signal and only then hands its own
        children (setsid or not) to us, so we wait, in short steps, until the group is gone.
        """
        deadline = time.monotonic() + SWEEP_WAIT
        while True:
            sweep_strays()
            try:
                os.killpg(self.popen.pid, 0)  # signal 0 only asks; harmless whoever has the id now
            except (ProcessLookupError, PermissionError):
                return
            if time.monotonic() >= deadline:
                return
            time.sleep(0.01)


def sweep_strays() -> list[int]:
    """Kill and reap every child of this runner process that is not a supervisor it started.

    They are what tasks left behind when their supervisor could not clean up (it was killed
    outright); the runner, a subreaper, adopted them. Returns the pids still there (stuck).
    """
    for popen in list(_abandoned):
        if popen.poll() is not None:
            _abandoned.remove(popen)
    keep = {proc.pid for proc in _running if not proc.reaped} | {popen.pid for popen in _abandoned}
    keep |= forkserver.server_pids()  # it carries the marker too: all of its environment is the runner's
    marker = f"{ENV_TASK_OF}={os.getpid()}".encode()
    return descendants.kill_descendants(keep=keep, timeout=STRAY_WAIT,
                                        ours=lambda pid: descendants.carries_marker(pid, marker))


def _server_environment(env: dict[str, str]) -> dict[str, str]:
    """The fork server's environment: the runner's, with the marker, minus what each attempt sets."""
    attempt_only = {ENV_URI, ENV_PROJECT, ENV_TASK, ENV_ATTEMPT, ENV_RUN, "CUDA_VISIBLE_DEVICES"}
    server_env = {key: value for key, value in env.items() if key not in attempt_only}
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        server_env["CUDA_VISIBLE_DEVICES"] = os.environ["CUDA_VISIBLE_DEVICES"]
    return server_env


def _peek_exit(popen: subprocess.Popen | forkserver.ForkedProcess) -> int | None:
    """``popen``'s exit code (minus its signal) if it has exited, without reaping it."""
    try:
        info = os.waitid(os.P_PID, popen.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:  # reaped behind our back: let Popen say what it can
        return popen.poll()
    if info is None:
        return None
    return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status
