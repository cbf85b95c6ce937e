"""A lean process, started once per runner, that forks the supervisor of each task attempt.

Starting a fresh interpreter per attempt (``python -m tensorhub.runner.child WORKDIR``) is most of
what a no-op task costs: the interpreter's start-up, ``site``, ``bson`` and the task modules. The
fork server pays for that once: ``python -m tensorhub.runner.forkserver`` imports what ``child.py``
needs (no numpy, pandas, pymongo or dill) and then serves its runner over a pipe. For each attempt
it forks twice; the grandchild becomes what the fresh interpreter was (a new session, the work dir,
the output log on fds 1 and 2, the attempt's environment, default signals, no atexit handlers) and
runs ``child.main``, the supervisor.

Why twice: the middle process exits at once, and Linux re-parents its orphan to the nearest child
subreaper above it, which is the runner. So the supervisor is the runner's own child, exactly as a
``subprocess.Popen`` one was: the runner waits for it (``waitid(WNOWAIT)`` to look, then reaps), its
CPU time is the runner's children's, and its parent-death signal follows the runner, not the fork
server. The tree of an attempt is unchanged::

    runner                    a child subreaper
    ├── fork server           python -m tensorhub.runner.forkserver; dies with the runner (SIGKILL)
    └── supervisor            forked by the fork server, adopted by the runner; leads its own session
        └── worker            the task's code, and whatever it starts

* The supervisor asks for its parent-death signal only once it has been adopted (the exit of the
  middle process would trigger it otherwise); from then on it fires when the runner dies.
* The fork server's exec-time environment carries the stray-sweep marker, so ``/proc/PID/environ``
  of every supervisor forked from it does too.
* The fork server dying takes no attempt with it; the next attempt starts a new one. Where there is
  none (no Linux ``/proc``, it failed to start, ``TENSORHUB_FORK_SERVER=0``), attempts start a fresh
  interpreter as before.

Messages both ways are BSON documents back to back on a pipe (a BSON document starts with its
length): ``{op: fork, workdir, log, env}`` → ``{op: forked, pid}``, and ``{op: ready}`` once, first.
"""
from __future__ import annotations

import atexit
import gc
import os
import select
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import bson

from tensorhub.runner import child, descendants

ENV_SWITCH = "TENSORHUB_FORK_SERVER"  # "0": every attempt starts a fresh interpreter, as before
READY_WAIT = 30.0         # how long a runner waits for a new fork server to be ready
REPLY_WAIT = 10.0         # ... and for it to answer a fork
ADOPTION_WAIT = 5.0       # how long a new supervisor waits to become the runner's child
RETRY_AFTER = 60.0        # after a fork server failed, fresh interpreters for this long
EXIT_SETUP_FAILED = 71    # a fork could not become the attempt's process (its error is in the log)
CHUNK = 1 << 16


class ForkServerError(OSError):
    """Raised when the fork server cannot start an attempt (the caller starts it the old way)."""


# -- the runner's side -------------------------------------------------------------------------
class ForkedProcess:
    """What ``subprocess.Popen`` is to a process the runner started, for a supervisor it adopted."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None  # set once reaped, as Popen's

    def poll(self) -> int | None:
        """Reap it if it has exited; its exit code (minus its signal), or None while it runs."""
        if self.returncode is None:
            self._reap(os.WNOHANG)
        return self.returncode

    def wait(self) -> int:
        while self.returncode is None:
            self._reap(0)
        return self.returncode

    def _reap(self, flags: int) -> None:
        try:
            pid, status = os.waitpid(self.pid, flags)
        except ChildProcessError:  # reaped behind our back: the status is lost, as Popen says
            self.returncode = 0
            return
        if pid == self.pid:
            self.returncode = os.waitstatus_to_exitcode(status)


class ForkServer:
    """The runner's handle on its fork server."""

    def __init__(self, env: dict[str, str]) -> None:
        self.owner = os.getpid()
        requests_r, self._requests = os.pipe()
        self._replies, replies_w = os.pipe()
        try:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "tensorhub.runner.forkserver", str(requests_r), str(replies_w),
                 str(self.owner)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env=env, pass_fds=(requests_r, replies_w),
                cwd=Path(__file__).resolve().parents[2], start_new_session=True)
        except BaseException:
            os.close(self._requests)
            os.close(self._replies)
            raise
        finally:
            os.close(requests_r)
            os.close(replies_w)
        self._buffer = b""
        self._closed = False
        if self._receive(READY_WAIT).get("op") != "ready":
            self.close()
            raise ForkServerError("the fork server did not start")

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return not self._closed and self.popen.poll() is None

    def spawn(self, workdir: str, log: str, env: dict[str, str]) -> ForkedProcess:
        """Fork an attempt's supervisor, as this process's child; ForkServerError if that fails."""
        try:
            _write_all(self._requests, bson.encode({"op": "fork", "workdir": workdir, "log": log, "env": env}))
        except OSError as err:  # BrokenPipeError: it died
            raise ForkServerError(f"the fork server is gone: {err}") from None
        reply = self._receive(REPLY_WAIT)
        if reply.get("op") != "forked":
            self.close()  # out of step with us, or gone: the next attempt gets a new one
            raise ForkServerError(f"the fork server did not fork: {reply.get('error', 'no answer')}")
        proc = ForkedProcess(reply["pid"])
        if _parent_of(proc.pid) != os.getpid():  # not adopted (we are no subreaper?): it exits by itself
            proc.returncode = -1  # not ours to wait for, nor to signal
            raise ForkServerError("the forked supervisor did not become the runner's child")
        return proc

    def close(self) -> None:
        """Stop it (closing its request pipe ends it) and reap it; once (fd numbers get reused)."""
        if self._closed:
            return
        self._closed = True
        os.close(self._requests)
        os.close(self._replies)
        try:
            self.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()

    def _receive(self, timeout: float) -> dict[str, Any]:
        """The next message, or {} if none came in ``timeout`` seconds or the fork server is gone."""
        deadline = time.monotonic() + timeout
        while len(self._buffer) < 4 or len(self._buffer) < int.from_bytes(self._buffer[:4], "little"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._replies], [], [], left)[0]:
                return {}
            data = os.read(self._replies, CHUNK)
            if not data:
                return {}
            self._buffer += data
        size = int.from_bytes(self._buffer[:4], "little")
        message, self._buffer = bson.decode(self._buffer[:size]), self._buffer[size:]
        return message


_servers: dict[int, ForkServer] = {}  # by the thread that started it: its parent-death signal follows that thread
_failed_until = 0.0
_lock = threading.Lock()


def for_this_thread(env: dict[str, str]) -> ForkServer | None:
    """This thread's fork server (started with ``env`` if there is none or it died), or None where
    it cannot be used: not Linux with /proc, switched off, or it failed a moment ago."""
    global _failed_until
    if not descendants.SUPPORTED or os.environ.get(ENV_SWITCH) == "0":
        return None
    with _lock:
        server = _servers.get(threading.get_ident())
        if server is not None and server.owner == os.getpid() and server.alive():
            return server
        if time.monotonic() < _failed_until:
            return None
        threads = {thread.ident for thread in threading.enumerate()}
        for key, old in list(_servers.items()):  # dead ones, those of ended threads, a parent process's
            if old.owner != os.getpid() or not old.alive() or key not in threads:
                if old.owner == os.getpid():
                    old.close()
                del _servers[key]
        descendants.become_subreaper()  # before it starts: its orphans (the supervisors) come to us
        try:
            server = _servers[threading.get_ident()] = ForkServer(env)
        except (OSError, ValueError) as err:
            failed(err)
            return None
        return server


def failed(err: Exception) -> None:
    """Note that the fork server failed: fresh interpreters for a while."""
    global _failed_until
    print(f"tensorhub: fork server unusable ({err}); tasks start fresh interpreters for now", file=sys.stderr)
    _failed_until = time.monotonic() + RETRY_AFTER


def server_pids() -> set[int]:
    """The fork servers this process runs and has not reaped (the stray sweep spares them)."""
    return {s.pid for s in _servers.values() if s.owner == os.getpid() and s.popen.returncode is None}


def _parent_of(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


# -- the fork server's side --------------------------------------------------------------------
def serve(requests: int, replies: int, runner: int) -> None:
    """Fork an attempt's supervisor per request, until the runner closes its end of the pipe."""
    _write_all(replies, bson.encode({"op": "ready"}))
    buffer = b""
    while True:
        data = os.read(requests, CHUNK)
        if not data:  # the runner closed its end, or is gone
            os._exit(0)
        buffer += data
        while len(buffer) >= 4 and len(buffer) >= int.from_bytes(buffer[:4], "little"):
            size = int.from_bytes(buffer[:4], "little")
            message, buffer = bson.decode(buffer[:size]), buffer[size:]
            pid = fork_attempt(message, runner, (requests, replies))
            reply = {"op": "forked", "pid": pid} if pid else {"op": "failed", "error": "fork failed"}
            _write_all(replies, bson.encode(reply))


def fork_attempt(message: dict[str, Any], runner: int, own_fds: tuple[int, int]) -> int | None:
    """Fork twice; returns the grandchild's pid once it is the runner's child, or None."""
    read_end, write_end = os.pipe()
    try:
        middle = os.fork()
    except OSError:
        os.close(read_end)
        os.close(write_end)
        return None
    if middle == 0:
        try:
            os.close(read_end)
            grandchild = os.fork()
        except BaseException:
            os._exit(1)
        if grandchild == 0:
            os.close(write_end)
            sys.exit(become_attempt(message, runner, own_fds))  # the interpreter exits as it always did
        try:
            os.write(write_end, str(grandchild).encode())
        finally:
            os._exit(0)  # orphaning the grandchild: the runner, a subreaper, adopts it
    os.close(write_end)
    said = os.read(read_end, 32)
    os.close(read_end)
    os.waitpid(middle, 0)  # once it is reaped its orphan has been re-parented (Linux does that first)
    return int(said) if said else None


def become_attempt(message: dict[str, Any], runner: int, own_fds: tuple[int, int]) -> int:
    """In the grandchild: turn into what ``python -m tensorhub.runner.child WORKDIR`` was, and run it."""
    try:
        for fd in own_fds:
            os.close(fd)
        os.setsid()  # its own session and process group, as start_new_session gave it
        workdir = message["workdir"]
        if sys.path and sys.path[0] == os.getcwd():
            sys.path[0] = workdir  # -m put the start directory first, as it put the work dir before
        os.chdir(workdir)
        log = os.open(message["log"], os.O_WRONLY | os.O_CREAT, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        os.environ.clear()
        os.environ.update(message["env"])
        sys.argv = [child.__file__, workdir]
        atexit._clear()
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        deadline = time.monotonic() + ADOPTION_WAIT
        while os.getppid() != runner:  # until adopted: then child.main asks to die with the runner
            if time.monotonic() > deadline:
                os._exit(child.EXIT_ORPHANED)
            time.sleep(0.0002)
    except BaseException:
        traceback.print_exc()
        os._exit(EXIT_SETUP_FAILED)
    return child.main(workdir)


def main(requests: int, replies: int, runner: int) -> None:
    child.die_with_parent(signal.SIGKILL, runner)
    for fd in (requests, replies):
        os.set_inheritable(fd, False)  # programs a task executes never see them
    # Imported once here, so that a task's process does not import them again.
    import tensorhub.runs.current
    import tensorhub.tasks.context
    import tensorhub.tasks.execute  # noqa: F401

    gc.freeze()  # what is loaded now stays shared with every fork, untouched by their collections
    serve(requests, replies, runner)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
