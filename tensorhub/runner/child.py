"""The entry point of a task's subprocess: ``main(WORKDIR)``, called in a fork of the runner's fork
server (``forkserver.py``), or ``python -m tensorhub.runner.child WORKDIR`` where there is none.

The task's code runs in a *worker* that reads ``task.bson`` (and ``function.dill`` for function
tasks) from WORKDIR, runs the code with the hyperparameters, and writes ``outcome.bson``:
``{ok: true, result}`` or ``{ok: false, error}``. Its stdout/stderr are the runner's log file.

On Linux the process the runner starts is not the worker but a small *supervisor* that forks it,
because a runner killed with SIGKILL can no longer clean up after its task, and a process group
does not hold descendants that called ``setsid()``. The supervisor

* is a child subreaper: everything the worker starts, daemons included, stays below it;
* asks for SIGTERM (catchable, unlike the SIGKILL a plain child would ask for) when the runner
  dies, so it outlives the runner just long enough to clean up;
* when the worker exits, or on SIGTERM/SIGINT/SIGHUP (runner death, timeout, cancellation),
  SIGKILLs the worker and every remaining descendant, reaps them, and exits with the worker's
  status (a worker killed by signal N makes it die of signal N too), so the runner reads the
  attempt exactly as if it had run the worker itself.

The worker asks for SIGKILL when the supervisor dies, so even a supervisor killed outright takes the
worker with it. The supervisor imports nothing the task would not (no numpy, pymongo or pandas) and
forks a copy of itself rather than starting a second interpreter; the fork server, which imports
this module once, spares each attempt the start of even the first one.
Elsewhere (no ``/proc``, no prctl) the worker runs directly, as the runner's child, and only its
process group is killed.
"""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import bson

from tensorhub.runner import descendants

ENV_PARENT = "TENSORHUB_RUNNER_PID"
EXIT_ORPHANED = 70     # the runner was gone before we could ask to die with it
CLEANUP_SECONDS = 5.0  # longest the supervisor tries to kill stragglers stuck in the kernel
STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
WATCHED_SIGNALS = STOP_SIGNALS | {signal.SIGCHLD}


def die_with_parent(signum: int, expected_parent: int | None) -> None:
    """Ask Linux to send ``signum`` when our parent dies, and exit if it is already gone."""
    descendants.set_parent_death_signal(signum)
    if expected_parent and os.getppid() != expected_parent:  # it died before prctl took effect
        os._exit(EXIT_ORPHANED)


def open_hub_from_environment() -> object:
    """The hub a task's code gets from ``current_task().hub``: the runner's server and project."""
    from tensorhub.hub import TensorHub
    from tensorhub.tasks.context import ENV_PROJECT, ENV_URI

    return TensorHub(os.environ[ENV_URI], project_name=os.environ.get(ENV_PROJECT) or None)


def main(workdir: str) -> int:
    runner = int(os.environ.get(ENV_PARENT) or 0) or None
    if not descendants.SUPPORTED:
        die_with_parent(signal.SIGKILL, runner)  # degraded: no supervisor, process group kill only
        return run_task(Path(workdir))
    # Blocked before anything can send them: the supervisor takes them with sigwaitinfo, in order,
    # instead of in a handler that could interrupt its own cleanup.
    original_mask = signal.pthread_sigmask(signal.SIG_BLOCK, WATCHED_SIGNALS)
    die_with_parent(signal.SIGTERM, runner)
    descendants.become_subreaper()  # before the fork: no orphan can escape in between
    supervisor = os.getpid()
    worker = os.fork()
    if worker == 0:
        # The worker: a plain task process again (signals as usual), that dies with its supervisor.
        signal.pthread_sigmask(signal.SIG_SETMASK, original_mask)
        die_with_parent(signal.SIGKILL, supervisor)
        return run_task(Path(workdir))  # then exits through sys.exit like any Python program
    returncode = supervise(worker)
    descendants.kill_descendants(timeout=CLEANUP_SECONDS)  # the worker too, if it is still there
    exit_like(returncode)
    return returncode  # not reached


def supervise(worker: int) -> int:
    """Wait for the worker, reaping adopted orphans meanwhile, or for a stop signal.

    Returns the worker's exit code, or minus the signal it died of or that told us to stop (the
    convention of ``subprocess.Popen.returncode``). Leaves killing to ``kill_descendants``, which
    does not hang on a worker stuck in the kernel the way waiting for it here would.
    """
    while True:
        info = signal.sigwaitinfo(WATCHED_SIGNALS)
        if info.si_signo != signal.SIGCHLD:
            return -info.si_signo
        # SIGCHLDs merge into one, so reap everything that has exited: the worker, or daemons it
        # left to us (a subreaper that never reaps would collect zombies for as long as the task runs).
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                pid, status = 0, 0
            if pid == 0:
                break
            if pid == worker:
                return os.waitstatus_to_exitcode(status)


def exit_like(returncode: int) -> None:
    """Exit with ``returncode`` as a Popen reads it: that exit code, or death by minus that signal."""
    if returncode >= 0:
        os._exit(returncode)
    signum = -returncode
    try:
        import resource

        # Dying of SIGSEGV or SIGABRT would dump a core of this small supervisor too: not useful.
        resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1]))
    except (OSError, ValueError):
        pass
    if signum != signal.SIGKILL:  # the one signal whose action cannot (and need not) be reset
        signal.signal(signum, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signum})
    os.kill(os.getpid(), signum)
    os._exit(128 + signum)  # only if that signal's default is not to die: say it the shell's way


def run_task(folder: Path) -> int:
    """Run the task in this process and write ``outcome.bson``; 0 if it succeeded."""
    from tensorhub.runs.current import RunRef, activate
    from tensorhub.tasks.context import ENV_RUN, TaskContext, set_current
    from tensorhub.tasks.execute import describe_error, run_code

    task = bson.decode(folder.joinpath("task.bson").read_bytes())
    function_file = folder / "function.dill"
    function_bytes = function_file.read_bytes() if function_file.exists() else None
    run_id = os.environ.get(ENV_RUN) or None
    context = TaskContext(str(task["_id"]), int(task["_hub"].get("attempts", 0)),
                          dict(task.get("hyper_parameters") or {}), open_hub_from_environment, run_id)
    set_current(context)
    if run_id is not None:  # lineage: what the task's code reads and saves is recorded on its run
        activate(RunRef(run_id, task["_hub"].get("project")))
    try:
        outcome = {"ok": True, "result": run_code(task, function_bytes)}
    except Exception as err:
        outcome = {"ok": False, "error": describe_error(err)}
    try:
        context.close()  # buffered step metrics reach the run before the outcome is reported
    except Exception as err:
        print(f"tensorhub: could not store the run's last metrics: {err}", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    tmp = folder / "outcome.bson.tmp"
    tmp.write_bytes(bson.encode(outcome))
    tmp.replace(folder / "outcome.bson")  # atomic: the runner never reads half an outcome
    return 0 if outcome["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
