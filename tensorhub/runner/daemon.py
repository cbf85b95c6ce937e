"""The runner daemon loop: claim, supervise, heartbeat, write back; reap others' expired leases.

One loop in the main thread supervises every slot (one per GPU): it waits in short slices, and
between them polls children, renews leases, enforces timeouts and cancellations, and claims work
for free slots. Signal handlers only set flags: the first SIGTERM/SIGINT stops claiming and lets
running tasks finish within ``grace_seconds`` (then hands them back); the second hands them back
at once. If the server cannot be reached, the loop retries with backoff, and a slot whose lease it
could not renew in time kills its task before the lease can expire (so no two runners overlap).
"""
from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pymongo.errors import PyMongoError

from tensorhub.errors import InvalidArgument
from tensorhub.fields import build_query
from tensorhub.runner.process import TaskProcess
from tensorhub.runner.wakeup import Wakeup
from tensorhub.tasks.claims import Outcome, runner_identity
from tensorhub.tasks.execute import describe_error
from tensorhub.tasks.queue import NOT_QUERYABLE

if TYPE_CHECKING:
    from tensorhub.hub import TensorHub

log = logging.getLogger("tensorhub.runner")
FENCE_FRACTION = 0.8   # kill our task when 80% of the lease passed without a renewal
SUPERVISE_SLICE = 0.1  # seconds between looks at running children


@dataclass
class RunnerConfig:
    """How a runner behaves; the CLI flags map one to one onto these fields."""

    task_name: str | None = None
    gpus: list[str] | None = None
    slots: int = 1
    max_tasks: int | None = None
    lease_seconds: float = 60.0
    poll_interval: float = 0.1
    grace_seconds: float = 30.0
    allow_pickle: bool = False
    query: dict[str, Any] = field(default_factory=dict)
    workdir: str | None = None

    def __post_init__(self) -> None:
        if self.lease_seconds < 2:
            raise InvalidArgument("lease_seconds must be at least 2")
        if self.poll_interval <= 0 or self.grace_seconds < 0:
            raise InvalidArgument("poll_interval must be positive and grace_seconds not negative")
        if self.gpus is not None and not self.gpus:
            raise InvalidArgument("gpus must list at least one device")
        if self.slots < 1:
            raise InvalidArgument("slots must be at least 1")


@dataclass
class Slot:
    gpu: str | None
    process: TaskProcess | None = None
    next_beat: float = 0.0
    fence_deadline: float = 0.0


class Runner:
    """Claims and runs tasks until stopped.

    >>> Runner(hub, RunnerConfig(gpus=["0", "1"], lease_seconds=60)).run()
    """

    def __init__(self, hub: "TensorHub", config: RunnerConfig | None = None) -> None:
        self.hub = hub
        self.config = config or RunnerConfig()
        gpus: list[str | None] = list(self.config.gpus) if self.config.gpus else [None] * self.config.slots
        self.slots = [Slot(gpu) for gpu in gpus]
        self.identity = runner_identity()
        self.started = 0
        self.completed = 0
        self._stopping = False
        self._stop_now = False
        self._grace_deadline = 0.0
        self._next_reap = 0.0
        self._wakeup = Wakeup(hub.tasks.tasks, self.config.poll_interval)
        kinds = ["script", "function"] if self.config.allow_pickle else ["script"]
        self._query = {**build_query(self.config.query, NOT_QUERYABLE), "code.kind": {"$in": kinds}}
        if self.config.task_name is not None:
            self._query["name"] = self.config.task_name

    # -- control -------------------------------------------------------------------------------
    def stop(self, now: bool = False) -> None:
        """Stop claiming; running tasks get ``grace_seconds`` (or none with ``now``)."""
        if self._stopping or now:
            self._stop_now = True
        else:
            self._stopping = True
            self._grace_deadline = time.monotonic() + self.config.grace_seconds
        self._wakeup.wake()

    def install_signal_handlers(self) -> None:
        def handler(signum: int, frame: Any) -> None:
            # Flags only: no locks here (the main loop may hold one); its waits are short slices.
            if self._stopping:
                self._stop_now = True
            else:
                self._stopping = True
                self._grace_deadline = time.monotonic() + self.config.grace_seconds
        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    # -- the loop ------------------------------------------------------------------------------
    def run(self) -> int:
        """Run until stopped or ``max_tasks`` are done; returns how many tasks were completed."""
        log.info("runner %s: %d slot(s), project %r", self.identity["id"], len(self.slots), self.hub.project_name)
        self._wakeup.start()
        failures = 0
        try:
            while not self._should_exit():
                try:
                    self._supervise()
                    claimed = self._fill_slots()
                    self._reap_if_due()
                    failures = 0
                except Exception as err:  # the server, mostly; a daemon logs and carries on
                    if not isinstance(err, PyMongoError):
                        log.exception("unexpected error in the runner loop")
                    failures += 1
                    # Retry soon while tasks run (their outcomes and leases wait on us), lazily when idle.
                    busy = any(slot.process for slot in self.slots)
                    delay = min(2.0 if busy else 30.0, 0.25 * 2 ** min(failures, 7))
                    what = "server unreachable" if isinstance(err, PyMongoError) else "runner error"
                    log.warning("%s (%s); retrying in %.1fs", what, err, delay)
                    self._supervise_offline(delay)
                    continue
                busy = any(slot.process for slot in self.slots)
                self._wakeup.wait(claimed, SUPERVISE_SLICE if busy else None)
        finally:
            self._hand_back_all()
            self._wakeup.stop()
        return self.completed

    def _should_exit(self) -> bool:
        busy = any(slot.process for slot in self.slots)
        if self._stop_now:
            return True
        if self._stopping:
            return not busy or time.monotonic() >= self._grace_deadline
        return self._quota_reached() and not busy

    def _quota_reached(self) -> bool:
        return self.config.max_tasks is not None and self.started >= self.config.max_tasks

    def _fill_slots(self) -> bool:
        claimed = False
        for slot in self.slots:
            if slot.process is not None or self._stopping or self._quota_reached():
                continue
            runner = {**self.identity, "gpu": slot.gpu}
            claim = self.hub.tasks.claims.claim_next(self._query, runner, self.config.lease_seconds)
            if claim is None:
                break
            self.started += 1
            claimed = True
            now = time.monotonic()
            try:
                slot.process = TaskProcess(self.hub, claim, slot.gpu, self.config.workdir)
            except Exception as err:  # no process: give the attempt back as failed right away
                log.exception("task %s could not be started", claim.task_id)
                self.hub.tasks.claims.finish(claim, Outcome("failed", error=describe_error(err)))
                continue
            slot.next_beat = now + self.config.lease_seconds / 3
            slot.fence_deadline = now + self.config.lease_seconds * FENCE_FRACTION
            log.info("slot %s: running task %s (attempt %d)", slot.gpu, claim.task_id, claim.seq)
        return claimed

    def _supervise(self) -> None:
        """Look after every slot; one slot's error does not starve the others' heartbeats."""
        first_error: Exception | None = None
        # Heartbeats first: a slow write-back below must not delay another slot's renewal.
        for slot in sorted(self.slots, key=lambda s: s.process is not None and s.process.poll() is not None):
            try:
                self._supervise_slot(slot)
            except Exception as err:
                first_error = first_error or err
        if first_error is not None:
            raise first_error

    def _supervise_slot(self, slot: Slot) -> None:
        now = time.monotonic()
        proc = slot.process
        if proc is not None:
            if proc.poll() is not None:
                self._complete(slot)
                return
            if now >= slot.fence_deadline:
                self._abandon(slot, "could not renew the lease in time")
                return
            timeout = proc.claim.task.get("timeout_seconds")
            if timeout and now - proc.started > timeout:
                proc.kill({"type": "TaskTimeout", "message": f"the task ran longer than its timeout of {timeout}s"})
                self._complete(slot)
                return
            if now >= slot.next_beat:
                if self.hub.tasks.claims.heartbeat(proc.claim):
                    slot.next_beat = now + self.config.lease_seconds / 3
                    slot.fence_deadline = now + self.config.lease_seconds * FENCE_FRACTION
                else:  # cancelled, deleted, or reaped after we lost touch: not ours any more
                    self._abandon(slot, "the attempt was ended elsewhere (cancelled, deleted or lease expired)")

    def _supervise_offline(self, delay: float) -> None:
        """While the server is unreachable: keep fencing and reaping children, without the server."""
        end = time.monotonic() + delay
        while time.monotonic() < end and not self._stop_now:
            for slot in self.slots:
                proc = slot.process
                # An exited task keeps its outcome for the write-back; a running one must stop
                # before its lease can expire elsewhere.
                if proc is None or time.monotonic() < slot.fence_deadline:
                    continue
                if proc.poll() is None:
                    self._abandon(slot, "could not renew the lease in time")
                elif time.monotonic() >= slot.fence_deadline + self.config.lease_seconds:
                    # The lease is long gone and the outcome still cannot be written: drop it
                    # (the reaper retries the task) rather than retry a poisoned write forever.
                    self._abandon(slot, "could not write the outcome before the lease expired")
            self._wakeup.wait(False, SUPERVISE_SLICE)

    def _complete(self, slot: Slot) -> None:
        proc = slot.process
        assert proc is not None
        outcome = proc.outcome()
        self._write_back(proc, outcome)
        self.completed += 1
        log.info("task %s: %s", proc.claim.task_id, outcome.status)
        proc.cleanup()
        slot.process = None

    def _write_back(self, proc: TaskProcess, outcome: Outcome) -> None:
        claims, queue = self.hub.tasks.claims, self.hub.tasks
        # Kept on the process: if the server drops us below, the retry reuses the stored log.
        if proc.log_ref is None:
            proc.log_ref = queue.store_output_log(str(proc.log_path), proc.claim.task_id, proc.claim.seq)
        log_ref = proc.log_ref
        outcome.output = {**(outcome.output or {}), "log": log_ref}
        if claims.finish(proc.claim, outcome):
            previous = (proc.claim.task.get("output") or {}).get("log")
            if previous:
                self.hub.blobs.delete([previous["id"]])
        elif self._task_log_id(proc) == log_ref["id"]:
            pass  # an earlier try landed and only its answer was lost: the outcome is in
        else:
            self.hub.blobs.delete([log_ref["id"]])
            log.warning("task %s: lease lost before the outcome was written; outcome discarded", proc.claim.task_id)

    def _task_log_id(self, proc: TaskProcess) -> Any:
        task = self.hub.tasks.tasks.find_one({"_id": proc.claim.task_id}, {"output.log.id": 1})
        return ((task or {}).get("output") or {}).get("log", {}).get("id")

    def _abandon(self, slot: Slot, why: str) -> None:
        proc = slot.process
        assert proc is not None
        log.warning("task %s: %s; killing it", proc.claim.task_id, why)
        proc.kill()
        proc.cleanup()
        slot.process = None
        if proc.log_ref is not None:  # stored for an outcome that will never be written
            try:
                self.hub.blobs.delete([proc.log_ref["id"]])
            except Exception:
                log.info("its stored log stays behind as an orphan blob (tensorhub orphans)")

    def _hand_back_all(self) -> None:
        for slot in self.slots:
            proc = slot.process
            if proc is None:
                continue
            if proc.poll() is not None:  # it finished: keep its result rather than run it again
                try:
                    self._complete(slot)
                    continue
                except Exception:
                    log.warning("task %s: could not write its outcome; handing it back", proc.claim.task_id)
            proc.kill()
            try:
                self.hub.tasks.claims.finish(proc.claim, Outcome("handed_back"))
                log.info("task %s handed back", proc.claim.task_id)
            except PyMongoError:
                log.warning("task %s: could not hand back; it returns when its lease expires", proc.claim.task_id)
            proc.cleanup()
            slot.process = None

    def _reap_if_due(self) -> None:
        now = time.monotonic()
        if now >= self._next_reap:
            reaped = self.hub.tasks.claims.reap_expired()
            if reaped:
                log.info("returned %d task(s) with expired leases", reaped)
                self._wakeup.wake()
            self._next_reap = now + max(1.0, self.config.lease_seconds / 4)
