"""The runner daemon loop: claim, supervise, heartbeat, write back; reap others' expired leases.

One loop in the main thread supervises every slot (one per GPU): it waits in short slices, and
between them polls children, renews leases, enforces timeouts and cancellations, and claims work
for free slots. Signal handlers only set flags: the first SIGTERM/SIGINT stops claiming and lets
running tasks finish within ``grace_seconds`` (then hands them back); the second hands them back
at once. If the server cannot be reached, the loop retries with backoff, and a slot whose lease it
could not renew in time kills its task before the lease can expire (so no two runners overlap).
"""
from __future__ import annotations

import datetime as dt
import logging
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pymongo.errors import PyMongoError

from tensorhub import __version__, defaults
from tensorhub.errors import InvalidArgument
from tensorhub.fields import utcnow
from tensorhub.fleet import slot_entry
from tensorhub.runner.process import TaskProcess
from tensorhub.runner.wakeup import Wakeup
from tensorhub.tasks.attempt import Attempt
from tensorhub.tasks.claims import Claim, ClaimInDoubt, Outcome, runner_identity
from tensorhub.tasks.execute import describe_error
from tensorhub.tasks.queue import ClaimRequest

if TYPE_CHECKING:
    from tensorhub.hub import TensorHub

log = logging.getLogger("tensorhub.runner")
SUPERVISE_SLICE = 0.05  # seconds between looks at running children (local syscalls only)
# Reaping tries per interval that a fleet of busy runners sends in all (see _reap_if_due).
BUSY_REAP_TRIES = 3.0
# Renew the runner's registration every third of its lease, as its tasks' leases are: the fleet view
# shows it lost once a whole lease passed without one (what its slots run is as fresh as that).
REGISTRY_BEATS_PER_LEASE = 3
SAFETY_NET_LOOK = 30.0  # look for work this often even if the queue signal never changed
# After the queue moved (a task queued, one claimed), idle runners poll faster for a while, paced so
# that the fleet as a whole reads the signal about FLEET_POLLS_PER_SECOND times a second: a sweep's
# next task is noticed within tens of milliseconds, while a fleet idle for long costs one read per
# runner per poll interval.
ACTIVE_SECONDS = 30.0
FLEET_POLLS_PER_SECOND = 40.0
FASTEST_POLL = 0.02
_UNSEEN = object()  # no signal token read yet


@dataclass
class RunnerConfig:
    """How a runner behaves; the CLI flags map one to one onto these fields."""

    task_name: str | None = None
    gpus: list[str] | None = None
    slots: int = 1
    max_tasks: int | None = None
    lease_seconds: float = defaults.LEASE_SECONDS
    poll_interval: float = defaults.POLL_INTERVAL
    grace_seconds: float = defaults.GRACE_SECONDS
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
    attempt: Attempt | None = None
    since: dt.datetime | None = None


class Runner:
    """Claims and runs tasks until stopped (a daemon: it blocks, so the example is not run)::

        Runner(hub, RunnerConfig(gpus=["0", "1"], lease_seconds=60)).run()
    """

    def __init__(self, hub: TensorHub, config: RunnerConfig | None = None) -> None:
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
        self.queue = hub.queue
        self.fleet = hub.fleet
        self.failed = 0
        self._wakeup = Wakeup(hub.queue.watch, self.config.poll_interval)
        self._in_doubt: list[ClaimInDoubt] = []  # claims whose replies were lost: hand back later
        self._seen_signal: Any = _UNSEEN         # the queue signal token at our last look for work
        self._look_token: Any = None             # the token this turn's look answers, if a poll caused it
        self._active_until = 0.0                 # poll faster until then: the queue moved lately
        self._fleet_size: int | None = None      # live runners, as the reaper last counted them
        self._fleet_counted = 1                  # live runners, as we counted them when registering
        self._reap_due: bool | None = None       # what our last poll said of the fleet's reaping turn
        self._slot_spent = False                 # this turn's idle slot went to the registry heartbeat
        self._reap_steps: list[Callable[[], None]] = []  # the reaping turn, one idle slot per step
        self._polled_last = True                 # the last idle slot read the signal (steps take every other)
        self._look = True                        # look for work on the next turn, whatever the signal says
        self._next_look = 0.0                    # a safety net: look at least this often anyway
        self._relook_soon = False                # lost races with tasks left: _next_look is a re-look, soon
        self._next_registry_beat = 0.0
        self._registered = False

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
                self._slot_spent = False
                try:
                    self._register_or_beat()
                    self._supervise()
                    self._settle_doubts()
                    claimed = self._fill_slots() if self._worth_looking() else False
                    self._reap_if_due()
                    failures = 0
                except Exception as err:  # the server, mostly; a daemon logs and carries on
                    if not isinstance(err, (PyMongoError, ClaimInDoubt)):
                        log.exception("unexpected error in the runner loop")
                    failures += 1
                    # Retry soon while tasks run (their outcomes and leases wait on us), lazily when idle.
                    busy = any(slot.process for slot in self.slots)
                    delay = min(2.0 if busy else 30.0, 0.25 * 2 ** min(failures, 7))
                    what = "server unreachable" if isinstance(err, (PyMongoError, ClaimInDoubt)) else "runner error"
                    log.warning("%s (%s); retrying in %.1fs", what, err, delay)
                    self._supervise_offline(delay)
                    continue
                busy = any(slot.process for slot in self.slots)
                self._wakeup.wait(claimed, SUPERVISE_SLICE if busy else self._active_poll(), idle=not busy)
        finally:
            self._hand_back_all()
            self._wakeup.stop()
            self._record_exit()
        return self.completed

    # -- the registry and the queue signal ---------------------------------------------------
    def _register_or_beat(self) -> None:
        """Register once, then renew the registration (with what each slot runs) every few seconds."""
        now = time.monotonic()
        if now < self._next_registry_beat:
            return
        if not self._registered:
            filter_ = {k: v for k, v in {"task_name": self.config.task_name, **self.config.query}.items() if v}
            joined = self.fleet.register(self.identity, slots=[s.gpu for s in self.slots], version=__version__,
                                         lease_seconds=self.config.lease_seconds, task_filter=filter_)
            self._registered = True
            # How many claim beside us (counted once, as we registered), for the claim window and
            # our share of the queue, and, raised on the reaper's note, for the fleet's poll pacing:
            # a reaper that counted while the fleet was still starting would otherwise have idle
            # runners poll as fast as a small fleet.
            live = joined.live
            self._fleet_counted = live
            self.queue.expect_fleet(live, rank=joined.rank)
            self.queue.note_fleet_size(live, at_least=True)
            # Start-up commands are not repaid with skipped polls: the fleet's first task would wait.
        else:
            self.fleet.heartbeat(self.identity["id"], self._slot_entries(), self.completed, self.failed)
            self._slot_spent = True
        self._next_registry_beat = now + self.config.lease_seconds / REGISTRY_BEATS_PER_LEASE

    def _slot_entries(self) -> list[dict[str, Any]]:
        return [slot_entry(i, s.gpu, None if s.attempt is None else s.attempt.claim.task, s.since)
                for i, s in enumerate(self.slots)]

    def _record_exit(self) -> None:
        if not self._registered:
            return
        try:
            self.fleet.exited(self.identity["id"], self.completed, self.failed)
        except PyMongoError:
            log.info("could not record the exit in the runner registry; it will show as lost")

    def _worth_looking(self) -> bool:
        """Look for work when a slot is free and the queue signal changed (or we were woken, or
        just finished a task, or the safety-net interval passed). Idle, this is one read by _id
        per poll interval (a slot of time: see Wakeup), and a slot that the registry heartbeat or
        a step of the reaping turn took goes without it: an idle runner sends at most one
        command per poll interval."""
        if self._stopping or self._quota_reached() or all(slot.process is not None for slot in self.slots):
            return False
        now = time.monotonic()
        self._look_token = None
        if self._wakeup.take_woken() or self._look:
            self._look = False  # looking anyway: no need to read the signal (a stale token costs
        elif self._relook_soon and now < self._next_look:  # one extra look later)
            return False  # tasks are pending and a look is due within a second: a poll adds nothing
        elif self._slot_taken(now):
            return False
        elif now < self._next_look and not self._signal_moved(now):
            return False  # (past _next_look: the re-look, or the safety net, looks without a poll)
        self._relook_soon = False
        self._next_look = now + SAFETY_NET_LOOK
        return True

    def _slot_taken(self, now: float) -> bool:
        """Whether this idle slot's one command went, or goes now, to something other than a poll:
        the registry heartbeat, or a step of our reaping turn (never in two slots in a row, so
        that a short lease's reaping does not starve the polls). While the queue is active the
        runner polls at the fleet's pace whatever else it sent."""
        if now < self._active_until:
            return False
        if self._slot_spent:
            return True
        if self._reap_steps and self._polled_last:
            self._polled_last = False
            self._reap_steps.pop(0)()
            return True
        return False

    def _signal_moved(self, now: float) -> bool:
        """Read the queue signal (one read by _id): whether it announces work to look for."""
        self._polled_last = True
        polled = self.queue.poll()
        self._reap_due, self._fleet_size = polled.reap_due, polled.fleet_size or self._fleet_size
        self.queue.expect_fleet(self._fleet_size)
        if polled.token == self._seen_signal:
            return False
        if self._seen_signal is not _UNSEEN:
            self._active_until = now + ACTIVE_SECONDS
        self._seen_signal = polled.token
        if polled.token == polled.taken:
            return False  # another runner took what this token announced: no herd of reads
        self._look_token = polled.token
        return True

    def _active_poll(self) -> float | None:
        """How long an idle runner waits between polls while the queue is active (None: the
        poll interval), so that the whole fleet reads about FLEET_POLLS_PER_SECOND times a second."""
        if self._wakeup.streaming or self._fleet_size is None or time.monotonic() >= self._active_until:
            return None
        return min(self.config.poll_interval, max(FASTEST_POLL, self._fleet_size / FLEET_POLLS_PER_SECOND))

    def _should_exit(self) -> bool:
        busy = any(slot.process for slot in self.slots)
        if self._stop_now:
            return True
        if self._stopping:
            return not busy or time.monotonic() >= self._grace_deadline
        return self._quota_reached() and not busy

    def _quota_reached(self) -> bool:
        return self.config.max_tasks is not None and self.started >= self.config.max_tasks

    def _may_claim(self) -> bool:
        return not self._stopping and not self._quota_reached()

    def _request(self, slot: Slot) -> ClaimRequest:
        return ClaimRequest({**self.identity, "gpu": slot.gpu}, self.config.lease_seconds, self.config.task_name,
                            self.config.query, self.config.allow_pickle)

    def _fill_slots(self) -> bool:
        claimed = False
        for slot in self.slots:
            if slot.process is not None or not self._may_claim():
                continue
            request = self._request(slot)
            try:
                claim = self.queue.claim_next(request.runner, request.lease_seconds, request.task_name,
                                              request.query, request.allow_pickle, spread=True)
            except ClaimInDoubt as doubt:
                log.warning("%s; it will be handed back when the server answers", doubt)
                self._in_doubt.append(doubt)
                raise
            if claim is None:
                if self.queue.contended:  # others won the races, and may have left work: look again soon
                    self._next_look = time.monotonic() + random.uniform(0.2, 1.0)
                    self._relook_soon = True
                break
            claimed = True
            self._active_until = time.monotonic() + ACTIVE_SECONDS
            if self._look_token is not None and self.queue.drained:
                self.queue.mark_taken(self._look_token)  # the rest of the fleet need not look for it
                self._look_token = None
            self._start(slot, claim)
        self._look = claimed  # after a claim there may be more: look again next turn
        return claimed

    def _start(self, slot: Slot, claim: Claim) -> None:
        """Confirm the claim on the server (so an expired lease counts as an attempt), then spawn."""
        attempt = Attempt(self.queue, claim)
        try:
            if not attempt.start():
                log.info("task %s: claim ended elsewhere before it started", claim.task_id)
                return
        except ClaimInDoubt as doubt:
            self._in_doubt.append(doubt)
            raise
        self.started += 1
        try:
            slot.process = TaskProcess(self.hub, claim, slot.gpu, self.config.workdir)
        except Exception as err:  # no process: give the attempt back as failed right away
            log.exception("task %s could not be started", claim.task_id)
            attempt.write_back(Outcome("failed", error=describe_error(err)))
            return
        slot.attempt = attempt
        slot.since = utcnow()
        log.info("slot %s: running task %s (attempt %d)", slot.gpu, claim.task_id, claim.attempt)

    def _settle_doubts(self) -> None:
        while self._in_doubt:
            self.queue.settle(self._in_doubt[0])
            self._in_doubt.pop(0)

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
        proc, attempt = slot.process, slot.attempt
        if proc is None or attempt is None:
            return
        if proc.poll() is not None:
            self._complete(slot)
            return
        if attempt.fenced():
            self._abandon(slot, "could not renew the lease in time")
            return
        timeout = attempt.claim.task["_hub"].get("timeout_seconds")
        if timeout and time.monotonic() - proc.started > timeout:
            proc.kill({"type": "TaskTimeout", "message": f"the task ran longer than its timeout of {timeout}s"})
            self._complete(slot)
            return
        if attempt.beat_due() and not attempt.beat():
            # cancelled, deleted, or reaped after we lost touch: not ours any more
            self._abandon(slot, "the attempt was ended elsewhere (cancelled, deleted or lease expired)")

    def _supervise_offline(self, delay: float) -> None:
        """While the server is unreachable: keep fencing and reaping children, without the server."""
        end = time.monotonic() + delay
        while time.monotonic() < end and not self._stop_now:
            for slot in self.slots:
                proc, attempt = slot.process, slot.attempt
                # An exited task keeps its outcome for the write-back; a running one must stop
                # before its lease can expire elsewhere.
                if proc is None or attempt is None or not attempt.fenced():
                    continue
                if proc.poll() is None:
                    self._abandon(slot, "could not renew the lease in time")
                elif time.monotonic() >= attempt.fence_deadline + self.config.lease_seconds:
                    # The lease is long gone and the outcome still cannot be written: drop it
                    # (the reaper retries the task) rather than retry a poisoned write forever.
                    self._abandon(slot, "could not write the outcome before the lease expired")
            self._wakeup.wait(False, SUPERVISE_SLICE)

    def _complete(self, slot: Slot) -> None:
        """Write the slot's outcome and, with a backlog, claim its next task in the same round trips."""
        proc, attempt = slot.process, slot.attempt
        assert proc is not None and attempt is not None
        outcome = proc.outcome()
        # The stored log is kept on the attempt: if the server drops us here, the retry reuses it.
        nxt: Claim | None = None
        if self._may_claim():
            try:
                written, nxt = attempt.write_back_then_claim(outcome, str(proc.log_path), self._request(slot))
            except ClaimInDoubt as doubt:  # the next claim's: hand it back later; the outcome is retried
                self._in_doubt.append(doubt)
                raise
        else:
            written = attempt.write_back(outcome, str(proc.log_path))
        if not written:
            log.warning("task %s: lease lost before the outcome was written; outcome discarded",
                        proc.claim.task_id)
        if outcome.status == "failed":
            self.failed += 1
        self.completed += 1
        log.info("task %s: %s", proc.claim.task_id, outcome.status)
        proc.cleanup()
        slot.process = slot.attempt = None
        slot.since = None
        self._look = True  # a slot is free: the backlog may hold more
        if nxt is not None:
            self._start(slot, nxt)

    def _abandon(self, slot: Slot, why: str) -> None:
        proc, attempt = slot.process, slot.attempt
        assert proc is not None
        log.warning("task %s: %s; killing it", proc.claim.task_id, why)
        proc.kill()
        proc.cleanup()
        slot.process = slot.attempt = None
        if attempt is not None:  # a log stored for an outcome that will never be written
            try:
                attempt.discard_log()
            except Exception:
                log.info("its stored log stays behind as an orphan blob (tensorhub orphans)")

    def _hand_back_all(self) -> None:
        for slot in self.slots:
            proc, attempt = slot.process, slot.attempt
            if proc is None or attempt is None:
                continue
            if proc.poll() is not None:  # it finished: keep its result rather than run it again
                try:
                    self._complete(slot)
                    continue
                except Exception:
                    log.warning("task %s: could not write its outcome; handing it back", proc.claim.task_id)
            proc.kill()
            why = "the runner was stopped (SIGTERM/SIGINT) before the task finished"
            try:
                attempt.write_back(Outcome("handed_back", reason=why))
                log.info("task %s handed back", proc.claim.task_id)
            except PyMongoError:
                log.warning("task %s: could not hand back; it returns when its lease expires", proc.claim.task_id)
            proc.cleanup()
            slot.process = slot.attempt = None

    def _reap_if_due(self) -> None:
        """Take the fleet's reaping turn when ours comes: one runner reaps per interval (a quarter
        of the lease). An idle runner's polls already tell whether the interval is over, so only
        those that find it over try; timers are spread so that idle fleets rarely try together.
        A busy runner does not poll, so it cannot tell: in a fleet of N it tries with probability
        BUSY_REAP_TRIES / N per interval, so that a busy fleet sends a few tries per interval, not
        N (with every runner busy, an interval passes without a try about one time in ten; the next
        one reaps). An idle runner takes its turn one step per slot in place of a poll (the try,
        the running tasks, the fleet's count, its note), so that it still sends one command per
        slot; a busy or active one takes it at once."""
        now = time.monotonic()
        if not self._reap_steps and now >= self._next_reap:
            self._next_reap = now + self._reap_interval * random.uniform(1.0, 1.5)
            due, self._reap_due = self._reap_due, None
            fleet = max(self._fleet_size or 1, self._fleet_counted)
            if due or (due is None and random.random() * fleet <= BUSY_REAP_TRIES):
                self._reap_steps = [self._try_reaping]
        if now < self._active_until or any(slot.process for slot in self.slots):
            while self._reap_steps:  # not idle: no slots to keep to
                self._reap_steps.pop(0)()

    @property
    def _reap_interval(self) -> float:
        return max(1.0, self.config.lease_seconds / 4)

    def _try_reaping(self) -> None:
        if self.queue.reap_turn(self._reap_interval, self.identity["id"]):
            self._reap_steps += [self._reap, self._count_fleet, self._note_fleet]

    def _reap(self) -> None:
        reaped = self.queue.reap_expired()
        if reaped:
            log.info("returned %d task(s) with expired leases", reaped)
            self._wakeup.wake()

    def _count_fleet(self) -> None:
        self._fleet_size = self.fleet.live_count(within=dt.timedelta(seconds=self.config.lease_seconds))

    def _note_fleet(self) -> None:
        if self._fleet_size is not None:
            self.queue.note_fleet_size(self._fleet_size)
            self.queue.expect_fleet(self._fleet_size)
