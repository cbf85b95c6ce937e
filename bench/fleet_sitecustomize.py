"""Command counting for bench/fleet.py, copied into a temp dir as ``sitecustomize.py``.

Python imports ``sitecustomize`` at start-up from the first ``sys.path`` entry that has one, so a
directory on ``PYTHONPATH`` reaches every process of a runner fleet: the runner daemons, their task
supervisors and workers (which inherit the environment), and the distributor. Nothing here changes
what those processes do:

* it is inert unless ``FLEET_COUNT_DIR`` is set;
* it does not import pymongo itself: a one-shot import hook registers the listeners right after
  the process imports pymongo of its own accord (before it can build a client), so processes that
  never talk to the server (the task supervisor) stay as lean as they were;
* it counts in memory and writes ``<FLEET_COUNT_DIR>/<role>-<pid>.json`` from a daemon thread at
  most once a second (only when something changed) and at exit. Runners stop on SIGTERM through
  their own handler and exit normally, so the atexit write runs; a process killed outright loses
  at most its last second.

Counted: every command pymongo starts (CommandStartedEvent), by command name and collection, in
total and per wall-clock second (so the bench can cut out windows: idle, backlog, ...), and the
server-monitoring heartbeats (ServerHeartbeatStartedEvent, not command events) on their own key.
"""
from __future__ import annotations

import atexit
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
import threading
import time
from collections import Counter
from types import ModuleType
from typing import Any

OUT_DIR = os.environ.get("FLEET_COUNT_DIR")
ROLE = os.environ.get("FLEET_COUNT_ROLE", "process")
HEARTBEAT_KEY = "(heartbeat) hello"
FLUSH_SECONDS = 1.0


class _Counts:
    """Counters of this process; reset in a forked child, which is a process of its own."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pid = os.getpid()
        self.started = time.time()
        self.totals: Counter[str] = Counter()
        self.series: dict[int, Counter[str]] = {}
        self.dirty = False
        self.flusher: threading.Thread | None = None

    def add(self, key: str) -> None:
        second = int(time.time())
        with self.lock:
            self.totals[key] += 1
            self.series.setdefault(second, Counter())[key] += 1
            self.dirty = True

    def write(self) -> None:
        if OUT_DIR is None:
            return
        with self.lock:
            if not self.dirty:
                return
            self.dirty = False
            data = {"pid": self.pid, "ppid": os.getppid(), "role": ROLE, "argv": sys.argv[:4],
                    "started": self.started, "totals": dict(self.totals),
                    "series": {str(s): dict(c) for s, c in self.series.items()}}
        path = os.path.join(OUT_DIR, f"{ROLE}-{self.pid}.json")
        tmp = f"{path}.tmp"
        try:
            with open(tmp, "w") as f:
                json.dump(data, f)
            os.replace(tmp, path)  # the bench never reads half a file
        except OSError:
            pass

    def start_flusher(self) -> None:
        def loop() -> None:
            while True:
                time.sleep(FLUSH_SECONDS)
                self.write()
        self.flusher = threading.Thread(target=loop, name="fleet-count-flusher", daemon=True)
        self.flusher.start()


_counts = _Counts()


def _collection(event: Any) -> str:
    """The collection a command works on; admin commands (hello, ping, endSessions) have none."""
    value = event.command.get(event.command_name)
    if event.command_name == "getMore":
        value = event.command.get("collection")
    return value if isinstance(value, str) else ""


def _install(pymongo: ModuleType) -> None:
    from pymongo import monitoring

    class Commands(monitoring.CommandListener):
        def started(self, event: Any) -> None:
            _counts.add(f"{event.command_name} {_collection(event)}".strip())

        def succeeded(self, event: Any) -> None:
            pass

        def failed(self, event: Any) -> None:
            pass

    class Heartbeats(monitoring.ServerHeartbeatListener):
        def started(self, event: Any) -> None:
            _counts.add(HEARTBEAT_KEY)

        def succeeded(self, event: Any) -> None:
            pass

        def failed(self, event: Any) -> None:
            pass

    monitoring.register(Commands())
    monitoring.register(Heartbeats())
    _counts.dirty = True  # a process that imported pymongo writes its file even with no command
    _counts.start_flusher()
    atexit.register(_write_at_exit)


def _write_at_exit() -> None:
    _counts.write()  # the current object: a forked child replaced its parent's


class _PymongoHook(importlib.abc.MetaPathFinder):
    """Finds nothing itself: wraps the real loader of ``pymongo`` to register after it loads."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname != "pymongo":
            return None
        sys.meta_path.remove(self)  # one shot; the finders after us find the real package
        spec = importlib.util.find_spec("pymongo")
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        loader: Any = spec.loader
        real_exec = loader.exec_module

        def exec_module(module: ModuleType) -> None:
            real_exec(module)
            _install(module)

        loader.exec_module = exec_module
        return spec


def _after_fork_in_child() -> None:
    # A forked child (the task worker) starts with empty counts and a flusher of its own (threads
    # do not survive fork); the atexit hook it inherited writes its own file.
    global _counts
    had_pymongo = _counts.flusher is not None
    _counts = _Counts()
    if had_pymongo:
        _counts.dirty = True
        _counts.start_flusher()


def _chain_next_sitecustomize() -> None:
    """Run the sitecustomize this file shadows, if the environment has one."""
    here = os.path.dirname(os.path.abspath(__file__))
    rest = [p for p in sys.path if os.path.abspath(p or ".") != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is not None and spec.loader is not None:
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)


if OUT_DIR is not None:
    if "pymongo" in sys.modules:  # cannot happen at start-up, but be exact if it does
        _install(sys.modules["pymongo"])
    else:
        sys.meta_path.insert(0, _PymongoHook())
    os.register_at_fork(after_in_child=_after_fork_in_child)
_chain_next_sitecustomize()
