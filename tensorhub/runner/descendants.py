"""Finding and killing every process a task left behind, even those that left its process group.

A process group is not a container: a task's child can call ``setsid()`` (the ``setsid`` tool,
daemonizing libraries, some data-loader workers) and a ``killpg`` no longer reaches it. Linux
lets a process declare itself a *child subreaper* (``prctl(PR_SET_CHILD_SUBREAPER)``): orphans
below it are re-parented to it instead of to init, so "everything the task started" stays a tree
under one process we control, and this module walks that tree through ``/proc``.

Killing by pid has one classic hazard: a pid that exits and is reaped can be reused by an unrelated
process. Two things keep that out of reach here. A direct child's pid cannot be reused until *we*
reap it, so the loop in :func:`kill_descendants` always ends by killing what has become our direct
child. And deeper descendants are killed parents first: once a parent has SIGKILL pending it cannot
reap its children, so their pids stay reserved (the remaining window, a parent reaping a child in
the microseconds between our snapshot and our signal, would also need the pid space to wrap).

Only Linux with ``/proc`` is supported (``SUPPORTED``); elsewhere the runner falls back to killing
the task's process group, which misses processes that called ``setsid()``.
"""
from __future__ import annotations

import ctypes
import functools
import os
import signal
import sys
import time
from collections.abc import Callable, Collection, Iterable

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
SUPPORTED = sys.platform.startswith("linux") and os.path.isdir("/proc/self/task")


def _prctl(option: int, value: int) -> bool:
    return _libc().prctl(option, value, 0, 0, 0) == 0


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def become_subreaper() -> bool:
    """Make orphaned descendants of this process re-parent to it (Linux); False where unsupported.

    Idempotent. The whole process adopts orphans from then on, so it must also reap them.
    """
    return SUPPORTED and _prctl(PR_SET_CHILD_SUBREAPER, 1)


def set_parent_death_signal(signum: int) -> bool:
    """Have Linux send ``signum`` to this process when the thread that forked it exits."""
    return SUPPORTED and _prctl(PR_SET_PDEATHSIG, int(signum))


# -- looking ----------------------------------------------------------------------------------
def children_of(pid: int) -> list[int]:
    """The direct children of ``pid`` (zombies included); [] once it is gone."""
    if _has_children_files():
        kids: list[int] = []
        try:
            threads = os.listdir(f"/proc/{pid}/task")
        except OSError:
            return []
        # A child belongs to the thread that forked it (or adopted it), so read every thread's list.
        for tid in threads:
            try:
                with open(f"/proc/{pid}/task/{tid}/children") as file:
                    kids.extend(int(word) for word in file.read().split())
            except OSError:  # the thread ended meanwhile
                continue
        return kids
    return _children_by_scan().get(pid, [])


def descendants(pid: int, keep: Collection[int] = ()) -> list[int]:
    """Every descendant of ``pid``, parents before their children, leaving out ``keep`` and theirs."""
    by_parent = None if _has_children_files() else _children_by_scan()
    found: list[int] = []
    seen = set(keep)
    queue = [pid]
    while queue:
        parent = queue.pop(0)
        kids = children_of(parent) if by_parent is None else by_parent.get(parent, [])
        for kid in kids:
            if kid not in seen:
                seen.add(kid)
                found.append(kid)
                queue.append(kid)
    return found


@functools.cache
def _has_children_files() -> bool:
    # /proc/PID/task/TID/children needs CONFIG_PROC_CHILDREN; most distribution kernels have it.
    return os.path.exists(f"/proc/self/task/{os.getpid()}/children")


def _children_by_scan() -> dict[int, list[int]]:
    """Parent → children, from every ``/proc/PID/stat`` (the slow way, without children files)."""
    by_parent: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as file:
                stat = file.read()
        except OSError:  # gone meanwhile
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ")".
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        by_parent.setdefault(ppid, []).append(int(name))
    return by_parent


# -- killing ----------------------------------------------------------------------------------
def kill_descendants(keep: Collection[int] = (), timeout: float = 5.0,
                     ours: Callable[[int], bool] | None = None) -> list[int]:
    """SIGKILL every descendant of this process except ``keep`` and their subtrees, and reap them.

    With ``ours``, a direct child is only touched when ``ours(pid)`` says it is one of ours: a
    process that embeds a runner may have children of its own (a database server in a test, say).

    Call it from a subreaper: each killed process's children are then re-parented to us, and the
    loop runs until nothing is left. Only our own children outside ``keep`` are reaped, one pid at
    a time (never ``waitpid(-1)``), so the exit status of a kept child stays for its owner
    (``subprocess.Popen``) to collect. Returns what is still there at ``timeout``: processes stuck
    in the kernel (uninterruptible sleep) or that we may not signal (setuid programs).
    """
    me = os.getpid()
    deadline = time.monotonic() + timeout
    refused: set[int] = set()  # EPERM: signalling them again will not help
    while True:
        spared = set(keep)
        if ours is not None:  # re-checked each round: re-parented grandchildren are judged too
            spared |= {pid for pid in children_of(me) if pid not in spared and not ours(pid)}
        _reap([pid for pid in children_of(me) if pid not in spared])
        left = descendants(me, spared)
        targets = [pid for pid in left if pid not in refused]
        if not targets or time.monotonic() >= deadline:
            return left
        refused.update(_signal_all(targets, signal.SIGKILL))
        time.sleep(0.005)  # let the kernel finish those exits and re-parent their children to us


def _signal_all(pids: Iterable[int], signum: int) -> list[int]:
    """Signal each pid; returns the ones we are not allowed to signal."""
    refused = []
    for pid in pids:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass
        except PermissionError:
            refused.append(pid)
    return refused


def _reap(pids: Iterable[int]) -> None:
    for pid in pids:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # not ours (any more)
            pass


def carries_marker(pid: int, marker: bytes) -> bool:
    """True if process ``pid``'s environment holds ``marker`` (``b"NAME=value"``): descendants
    inherit their parent's environment, so a task's leftovers carry its runner's marker."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as environ:
            return marker in environ.read().split(b"\0")
    except OSError:  # gone, or not ours to read
        return False
