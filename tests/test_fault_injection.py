"""Fault injection between runners and the server: replies that come too late.

``DelayProxy`` (tests/delay_proxy.py) sits between pymongo and the server and holds back chosen
replies past the client's socket timeout while the server has already applied the write. The
first half of this file checks the proxy itself (framing, matching, delays, drops, shutdown);
the second runs real runner processes through it and checks that a claim whose answer was lost
is neither lost nor charged: every task runs exactly once, is ``finished`` with ``attempts == 1``,
and none fails, although each was created with ``max_attempts=1``.
"""
from __future__ import annotations

import random
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bson
import pymongo
import pytest
from delay_proxy import (
    CHECKSUM_PRESENT,
    HEADER,
    MORE_TO_COME,
    OP_COMPRESSED,
    OP_MSG,
    OP_QUERY,
    Command,
    DelayProxy,
    ReplyEvent,
    WireError,
    parse_header,
    parse_request,
)
from pymongo.errors import AutoReconnect, NetworkTimeout

ROOT = Path(__file__).resolve().parent.parent


# -- the proxy, without a server: framing and parsing ---------------------------------------------


def op_msg(request_id: int, body: dict[str, Any], sequences: dict[str, list[dict[str, Any]]] | None = None,
           flags: int = 0) -> bytes:
    """An OP_MSG built by hand, the way drivers frame it (body, then document sequences)."""
    sections = b"\x00" + bson.encode(body)
    for identifier, docs in (sequences or {}).items():
        payload = identifier.encode() + b"\x00" + b"".join(bson.encode(d) for d in docs)
        sections += b"\x01" + struct.pack("<i", 4 + len(payload)) + payload
    trailer = b"\x00\x00\x00\x00" if flags & CHECKSUM_PRESENT else b""  # parser skips, never checks
    rest = struct.pack("<i", flags) + sections + trailer
    return HEADER.pack(HEADER.size + len(rest), request_id, 0, OP_MSG) + rest


def test_op_msg_document_sequences_are_merged_into_the_command() -> None:
    message = op_msg(7, {"insert": "task_claims", "ordered": True, "$db": "th_x"},
                     {"documents": [{"_id": "a/1"}, {"_id": "b/1"}]}, flags=CHECKSUM_PRESENT)
    cmd = parse_request(message)
    assert (cmd.request_id, cmd.op_code, cmd.name, cmd.collection, cmd.database) == \
        (7, OP_MSG, "insert", "task_claims", "th_x")
    assert cmd.document["documents"] == [{"_id": "a/1"}, {"_id": "b/1"}]
    assert not cmd.more_to_come
    assert parse_request(op_msg(8, {"update": "t", "$db": "d"}, {"updates": [{"q": {}}]},
                                flags=MORE_TO_COME)).more_to_come  # w=0: no reply will come


def test_legacy_op_query_and_zlib_op_compressed_are_read() -> None:
    query = bson.encode({"isMaster": 1, "client": {"driver": "x"}})
    rest = struct.pack("<i", 0) + b"admin.$cmd\x00" + struct.pack("<ii", 0, -1) + query
    cmd = parse_request(HEADER.pack(HEADER.size + len(rest), 3, 0, OP_QUERY) + rest)
    assert (cmd.name, cmd.collection, cmd.database) == ("isMaster", None, "admin")

    inner = op_msg(9, {"findAndModify": "tasks", "query": {"_id": 1}, "$db": "d"})[HEADER.size:]
    payload = struct.pack("<iiB", OP_MSG, len(inner), 2) + zlib.compress(inner)
    cmd = parse_request(HEADER.pack(HEADER.size + len(payload), 9, 0, OP_COMPRESSED) + payload)
    assert (cmd.request_id, cmd.name, cmd.collection) == (9, "findAndModify", "tasks")

    snappy = struct.pack("<iiB", OP_MSG, len(inner), 1) + b"not for us"
    assert parse_request(HEADER.pack(HEADER.size + len(snappy), 10, 0, OP_COMPRESSED) + snappy).name is None


def test_broken_framing_is_refused() -> None:
    with pytest.raises(WireError):
        parse_header(HEADER.pack(8, 1, 0, OP_MSG))            # shorter than its own header
    with pytest.raises(WireError):
        parse_header(HEADER.pack(1 << 30, 1, 0, OP_MSG))      # a gigabyte: we lost the framing
    message = op_msg(1, {"ping": 1, "$db": "admin"})
    with pytest.raises(WireError):
        parse_request(message[:-3])                          # truncated
    with pytest.raises(WireError):
        parse_request(message[:-6] + b"\xff" * 6)            # the BSON no longer fits


# -- the proxy against a real server -------------------------------------------------------------------


@pytest.fixture
def proxy(server_uri: str) -> Iterator[DelayProxy]:
    with DelayProxy.for_uri(server_uri, seed=1234) as running:
        yield running
        assert running.errors == []


def client_for(uri: str, **options: Any) -> pymongo.MongoClient:
    # No retried writes: the tests below want to see the first failure as it is.
    return pymongo.MongoClient(uri, retryWrites=False, serverSelectionTimeoutMS=20_000, **options)


def database_of(uri: str) -> str:
    return pymongo.uri_parser.parse_uri(uri, validate=False)["database"]


def test_a_delayed_insert_reply_times_out_although_the_document_is_stored(proxy: DelayProxy,
                                                                          server_uri: str) -> None:
    name = database_of(server_uri)
    via_proxy = client_for(proxy.uri_for(server_uri), socketTimeoutMS=1000)
    direct = client_for(server_uri)
    try:
        via_proxy[name].things.insert_one({"_id": "warm-up"})  # connection and handshake done
        rule = proxy.delay_replies(3.0, match=lambda cmd: cmd.name == "insert" and cmd.collection == "things",
                                   count=1)
        started = time.monotonic()
        with pytest.raises(NetworkTimeout):
            via_proxy[name].things.insert_one({"_id": "late"})
        assert time.monotonic() - started < 2.9  # the client's timeout, not the delay, ended it
        assert direct[name].things.find_one({"_id": "late"}) == {"_id": "late"}  # applied all the same
        assert rule.fired == 1
        # The next insert goes through (count=1 is used up) on a fresh connection.
        via_proxy[name].things.insert_one({"_id": "after"})
        assert direct[name].things.count_documents({}) == 3
        # The held reply found its client gone when it was due: dropped quietly.
        deadline = time.monotonic() + 10
        while proxy.events[0].delivered is None and time.monotonic() < deadline:
            time.sleep(0.05)
        [event] = proxy.events
        assert event.action == "delay" and event.delivered is False and event.command is not None
        assert event.command.document["documents"] == [{"_id": "late"}]
    finally:
        via_proxy.close()
        direct.close()


def test_a_short_delay_is_delivered_late_on_the_same_connection(proxy: DelayProxy, server_uri: str) -> None:
    name = database_of(server_uri)
    client = client_for(proxy.uri_for(server_uri), socketTimeoutMS=10_000, maxPoolSize=1)
    try:
        client[name].things.insert_one({"_id": 1, "n": 0})
        opened = proxy.connections_opened
        proxy.delay_replies(0.8, match=lambda cmd: cmd.name == "findAndModify", count=1)
        started = time.monotonic()
        before = client[name].things.find_one_and_update({"_id": 1}, {"$inc": {"n": 1}})
        assert time.monotonic() - started >= 0.75
        assert before == {"_id": 1, "n": 0}
        assert client[name].things.find_one({"_id": 1}) == {"_id": 1, "n": 1}  # the next reply is its own
        assert proxy.events[0].delivered is True
        assert proxy.connections_opened == opened  # no reconnect was needed
    finally:
        client.close()


def test_rules_see_command_collection_and_documents(proxy: DelayProxy, server_uri: str) -> None:
    name = database_of(server_uri)
    seen: list[Command] = []

    def record(cmd: Command) -> bool:
        seen.append(cmd)
        return False  # records, never fires

    proxy.delay_replies(0, match=record)
    client = client_for(proxy.uri_for(server_uri))
    try:
        coll = client[name].tasks
        coll.insert_many([{"_id": i} for i in range(3)])
        coll.update_one({"_id": 1}, {"$set": {"x": 1}})
        coll.find_one_and_update({"_id": 2}, {"$set": {"x": 2}})
        coll.delete_one({"_id": 0})
    finally:
        client.close()
    by_name = {cmd.name: cmd for cmd in seen if cmd.collection == "tasks"}
    assert by_name["insert"].document["documents"] == [{"_id": 0}, {"_id": 1}, {"_id": 2}]
    assert by_name["update"].document["updates"][0]["q"] == {"_id": 1}
    assert by_name["findAndModify"].document["query"] == {"_id": 2}
    assert by_name["delete"].document["deletes"][0]["q"] == {"_id": 0}
    assert all(cmd.database == name for cmd in by_name.values())
    assert proxy.events == []


def test_large_messages_and_many_concurrent_clients(proxy: DelayProxy, server_uri: str) -> None:
    name = database_of(server_uri)
    uri = proxy.uri_for(server_uri)
    blob = random.Random(5).randbytes(4 * 1024 * 1024)  # many TCP segments: partial reads on both sides
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        client = client_for(uri, socketTimeoutMS=30_000)
        try:
            coll = client[name].many
            for j in range(10):
                coll.insert_one({"_id": f"{index}-{j}", "v": j})
                found = coll.find_one({"_id": f"{index}-{j}"})
                assert found is not None and found["v"] == j
        except BaseException as err:
            errors.append(err)
        finally:
            client.close()

    # Every tenth reply of anyone is a little late: ordering per connection must still hold.
    proxy.delay_replies(0.05, probability=0.1)
    # Fifty clients, as many as a big runner fleet: each has its own monitor and pool connections.
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(50)]
    for thread in threads:
        thread.start()
    client = client_for(uri, socketTimeoutMS=60_000)
    try:
        client[name].big.insert_one({"_id": 1, "blob": blob})
        found = client[name].big.find_one({"_id": 1})
        assert found is not None and found["blob"] == blob
    finally:
        client.close()
    for thread in threads:
        thread.join(120)
    assert errors == []
    direct = client_for(server_uri)
    try:
        assert direct[name].many.count_documents({}) == 50 * 10
    finally:
        direct.close()
    assert proxy.events  # the random delays did happen


def test_dropped_replies_and_cut_connections(proxy: DelayProxy, server_uri: str) -> None:
    name = database_of(server_uri)
    via_proxy = client_for(proxy.uri_for(server_uri), socketTimeoutMS=5000)
    direct = client_for(server_uri)
    try:
        via_proxy[name].things.insert_one({"_id": 0})
        proxy.drop_replies(match=lambda cmd: cmd.name == "insert", count=1)
        with pytest.raises(AutoReconnect):
            via_proxy[name].things.insert_one({"_id": "lost-answer"})
        assert direct[name].things.find_one({"_id": "lost-answer"}) is not None
        assert [e.action for e in proxy.events] == ["drop"]

        via_proxy[name].things.find_one()  # a pooled connection, in use a moment ago
        opened = proxy.connections_opened
        assert proxy.drop_connections() >= 1
        try:
            via_proxy[name].things.insert_one({"_id": "cut"})
        except AutoReconnect:
            pass  # it ran into the cut connection; whether the driver noticed first is its business
        via_proxy[name].things.insert_one({"_id": "reconnected"})
        assert direct[name].things.find_one({"_id": "reconnected"}) is not None
        assert proxy.connections_opened > opened
    finally:
        via_proxy.close()
        direct.close()


def test_delay_all_makes_every_reply_late_until_switched_off(proxy: DelayProxy, server_uri: str) -> None:
    client = client_for(proxy.uri_for(server_uri), socketTimeoutMS=10_000)
    try:
        client.admin.command("ping")
        with proxy.slow(0.6):
            started = time.monotonic()
            client.admin.command("ping")
            assert time.monotonic() - started >= 0.55
        started = time.monotonic()
        client.admin.command("ping")
        assert time.monotonic() - started < 0.5
    finally:
        client.close()


def test_probability_is_seeded_and_count_is_a_limit(server_uri: str) -> None:
    name = database_of(server_uri)

    def firing_pattern() -> list[bool]:
        with DelayProxy.for_uri(server_uri, seed=99) as proxy:
            client = client_for(proxy.uri_for(server_uri), maxPoolSize=1)
            try:
                rule = proxy.delay_replies(0, match=lambda cmd: cmd.name == "insert", probability=0.5)
                pattern = []
                for _ in range(20):
                    before = rule.fired
                    client[name].seeded.insert_one({})
                    pattern.append(rule.fired > before)
                limited = proxy.delay_replies(0, match=lambda cmd: cmd.name == "find", count=2)
                proxy.remove_rule(rule)
                for _ in range(5):
                    client[name].seeded.find_one()
                assert limited.fired == 2
                return pattern
            finally:
                client.close()

    first = firing_pattern()
    assert 3 <= sum(first) <= 17
    assert firing_pattern() == first  # same seed, same sequence of requests: same faults


def test_closing_the_proxy_stops_listening_and_cuts_clients(server_uri: str) -> None:
    proxy = DelayProxy.for_uri(server_uri).start()
    client = client_for(proxy.uri_for(server_uri), socketTimeoutMS=60_000)
    outcome: list[BaseException | None] = []

    def ping() -> None:
        try:
            client.admin.command("ping")
            outcome.append(None)
        except BaseException as err:
            outcome.append(err)

    try:
        client.admin.command("ping")
        assert proxy.active_connections >= 1
        port = proxy.port
        proxy.delay_replies(60, match=lambda cmd: cmd.name == "ping")  # a held reply must not block close
        pinger = threading.Thread(target=ping)
        pinger.start()
        deadline = time.monotonic() + 10
        while not proxy.events and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proxy.events, "the ping reply was never held"
        started = time.monotonic()
        proxy.close()
        assert time.monotonic() - started < 5
        pinger.join(10)
        assert len(outcome) == 1 and isinstance(outcome[0], AutoReconnect)  # cut, not answered
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
            pass
        proxy.close()  # idempotent
    finally:
        proxy.close()
        client.close()


# -- runners through the proxy --------------------------------------------------------------------

LEASE = 16.0                        # seconds; the runner's socket timeout is max(1 s, lease/8) = 2 s
CLIENT_TIMEOUT = max(1.0, LEASE / 8)
LATE = CLIENT_TIMEOUT + 1.5         # a held reply always arrives after the client gave up
TASKS = 30
RUNNERS = 4
SLOTS = 2

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


def ticket_insert(cmd: Command) -> bool:
    """A claim or end ticket being taken (an insert with a unique ``_id`` into ``task_claims``)."""
    return cmd.name == "insert" and cmd.collection == "task_claims"


def task_update(cmd: Command) -> bool:
    """A conditional update of a task document: pending -> running, or an attempt's outcome."""
    return cmd.name in ("update", "findAndModify") and cmd.collection == "tasks"


class RunnerFleet:
    """Runner daemons (real processes) pointed at the proxy; their logs go to files."""

    def __init__(self, uri: str, logdir: Path) -> None:
        self.uri = uri
        self.logdir = logdir
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, count: int) -> None:
        for index in range(count):
            # A file, not a pipe: nobody reads a pipe while the test runs, and a runner that
            # logs every retry would block on a full pipe and lose its leases for that reason.
            with open(self.logdir / f"runner-{index}.log", "wb") as log:
                self.procs.append(subprocess.Popen(
                    [sys.executable, "-m", "tensorhub.cli", "runner", "--uri", self.uri, "--project", "test",
                     "--lease-seconds", str(LEASE), "--slots", str(SLOTS), "--poll-interval", "0.2",
                     "--grace-seconds", "10", "--log-level", "WARNING"],
                    cwd=ROOT, stdout=log, stderr=subprocess.STDOUT))

    def stop(self) -> list[int | None]:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes: list[int | None] = []
        for proc in self.procs:
            try:
                codes.append(proc.wait(timeout=60))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                codes.append(None)
        return codes

    def log_tails(self, lines: int = 12) -> str:
        parts = []
        for path in sorted(self.logdir.glob("runner-*.log")):
            text = path.read_text(errors="replace").splitlines()
            parts.append(f"--- {path.name} ({len(text)} lines), last {lines}:\n" + "\n".join(text[-lines:]))
        return "\n".join(parts)


@pytest.fixture
def fleet(server_uri: str, tmp_path: Path) -> Iterator[tuple[DelayProxy, RunnerFleet]]:
    with DelayProxy.for_uri(server_uri, seed=20240607) as proxy:
        runners = RunnerFleet(proxy.uri_for(server_uri), tmp_path)
        try:
            yield proxy, runners
        finally:
            proxy.clear_rules()
            proxy.delay_all(None)
            runners.stop()


def create_tasks(hub: Any, trace: Path, duration: float) -> list[Any]:
    return [hub.create_task("fault", source=RECORDING_SCRIPT, saved_result_keys=["square"], max_attempts=1,
                            hyper_parameters={"i": i, "trace": str(trace), "duration": duration})
            for i in range(TASKS)]


def executions(trace: Path) -> dict[str, list[list[float]]]:
    """task id -> [start, end] of every time the task's code ran (end inf: never ended)."""
    spans: dict[str, list[list[float]]] = defaultdict(list)
    if trace.exists():
        for line in trace.read_text().splitlines():
            kind, task_id, at, _pid = line.split()
            if kind == "start":
                spans[task_id].append([float(at), float("inf")])
            elif spans[task_id]:
                spans[task_id][-1][1] = float(at)
    return spans


def unfinished(hub: Any) -> int:
    counts = hub.task_counts("fault")
    return int(counts.get("pending", 0)) + int(counts.get("running", 0))


def wait_all_done(hub: Any, timeout: float) -> None:
    """Until no task is pending or running (wait_for_tasks also reaps expired leases, so a lost
    claim ends after its lease instead of never); on timeout the checks report what is left."""
    from tensorhub.errors import TaskTimeout

    try:
        hub.wait_for_tasks("fault", timeout=timeout, poll_interval=0.5, progress=False)
    except TaskTimeout:
        pass


def describe_fault(event: ReplyEvent) -> str:
    """``delay update(db.tasks) -> running``: which write's answer was held, and what it did."""
    text = f"{event.action} {event.command}"
    document = event.command.document if event.command is not None else {}
    for update in document.get("updates") or [document]:
        target = ((update.get("u") or update.get("update") or {}).get("$set") or {}).get("status")
        if target:
            return f"{text} -> {target}"
    for doc in document.get("documents") or []:
        if isinstance(doc.get("_id"), str):
            return f"{text} {'end ticket' if doc['_id'].endswith('/end') else 'claim ticket'}"
    return text


def check_every_task_ran_once(hub: Any, ids: list[Any], trace: Path, proxy: DelayProxy,
                              runners: RunnerFleet) -> None:
    """The claim guarantees under lost replies, with a report that says which task broke which."""
    tasks = {t.id: t for t in hub.find_tasks("fault")}
    spans = executions(trace)
    problems = []
    for index, task_id in enumerate(ids):
        task = tasks[task_id]
        ran = spans.get(str(task_id), [])
        overlap = any(a[0] < b[1] and b[0] < a[1] for n, a in enumerate(ran) for b in ran[n + 1:])
        if (task.status != "finished" or task.attempts != 1 or len(ran) != 1 or overlap
                or task.result != {"square": index * index}):
            failures = [f"{f.get('type')}: {f.get('message')}" for f in task.failures]
            problems.append(f"task {index} ({task_id}): status={task.status} attempts={task.attempts} "
                            f"seq={task.get('seq')} attempt_limit={task.attempt_limit} "
                            f"executions={len(ran)}{' OVERLAPPING' if overlap else ''} "
                            f"result={task.result} failures={failures} history={task.history}")
    held = Counter(describe_fault(e) for e in proxy.events)
    report = (f"{len(problems)} of {len(ids)} tasks broke the run-once guarantee:\n  " + "\n  ".join(problems)
              + f"\nstatus counts: {dict(Counter(t.status for t in tasks.values()))}"
              + f"\nreplies held back or dropped by the proxy ({len(proxy.events)} of {proxy.replies}): "
              + f"{dict(held)}\nproxy errors: {proxy.errors}\n{runners.log_tails()}")
    assert not problems, report
    assert proxy.errors == [], report


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_lost_replies_on_the_claim_path_never_lose_or_charge_a_claim(
        server_hub: Any, fleet: tuple[DelayProxy, RunnerFleet], tmp_path: Path) -> None:
    """A random fraction of the replies to ticket inserts and task updates arrives after the
    runner's socket timeout, although the server applied every one of those writes.

    Each rule stops after ``count`` faults: a runner that meets a late reply on nearly every
    attempt backs off for up to 30 s, and the test is about surviving faults, not about how
    long a fleet takes to crawl through a server that never answers in time."""
    proxy, runners = fleet
    trace = tmp_path / "trace.log"
    ids = create_tasks(server_hub, trace, duration=0.2)
    updates = proxy.delay_replies(LATE, match=task_update, probability=0.3, count=12)
    # A runner with a backlog takes its end and next claim tickets in one insert: about one insert
    # per task, so a higher probability holds as many replies as two inserts per task used to.
    tickets = proxy.delay_replies(LATE, match=ticket_insert, probability=0.3, count=12)
    runners.start(RUNNERS)
    wait_all_done(server_hub, timeout=420)
    proxy.clear_rules()
    # Enough faults that some pending -> running updates were surely among them.
    assert updates.fired >= 6 and tickets.fired >= 3, \
        f"only {updates.fired} + {tickets.fired} replies were held: the test did not test anything"
    check_every_task_ran_once(server_hub, ids, trace, proxy, runners)
    codes = runners.stop()
    assert codes == [0] * RUNNERS, f"runner exit codes {codes}\n{runners.log_tails(40)}"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_server_slow_for_a_few_seconds_never_loses_or_charges_a_claim(
        server_hub: Any, fleet: tuple[DelayProxy, RunnerFleet], tmp_path: Path) -> None:
    """The server is slow for 4 s at a time: every reply is late past the runners' timeout,
    while the server still applies everything it is sent. Claims, heartbeats and write-backs
    all meet it. Each spell starts right after a claim ticket was taken (its reply on time), so
    it always catches a claim between its ticket and its pending -> running update: the moment
    the claim code must get right. A spell is far shorter than the fence (80% of the lease),
    so a correct runner never has to give a running task up."""
    proxy, runners = fleet
    trace = tmp_path / "trace.log"
    ids = create_tasks(server_hub, trace, duration=1.0)
    armed = threading.Event()
    started = threading.Event()

    def start_spell_after_a_claim_ticket(cmd: Command) -> bool:
        # A claim ticket alone, or beside the end ticket of the attempt before (a runner with a backlog).
        tickets = [d.get("_id") for d in cmd.document.get("documents") or []]
        if armed.is_set() and ticket_insert(cmd) and any(isinstance(t, str) and not t.endswith("/end")
                                                         for t in tickets):
            armed.clear()
            proxy.delay_all(LATE)  # from the next reply on: this ticket's own answer is on time
            started.set()
        return False  # a trigger, never a fault of its own

    runners.start(RUNNERS)
    # Spells start once every runner is up (has claimed a task): a runner that cannot reach the
    # server when it starts exits at once (ConnectionFailed), and that is not what this tests.
    pids = {proc.pid for proc in runners.procs}
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not pids <= {t.runner.pid for t in server_hub.find_tasks("fault")
                                                        if t.runner is not None}:
        time.sleep(0.2)
    proxy.delay_replies(0, match=start_spell_after_a_claim_ticket)
    spells = 0
    while spells < 6 and unfinished(server_hub):
        started.clear()
        armed.set()
        if not started.wait(30):  # no claim for 30 s: be slow anyway
            armed.clear()
            proxy.delay_all(LATE)
        time.sleep(4.0)
        proxy.delay_all(None)
        spells += 1
        time.sleep(3.0)  # the server is itself again: runners recover before the next spell
    wait_all_done(server_hub, timeout=420)
    assert spells >= 2 and proxy.events, f"only {spells} slow spell(s): the test did not test much"
    check_every_task_ran_once(server_hub, ids, trace, proxy, runners)
    codes = runners.stop()
    assert codes == [0] * RUNNERS, f"runner exit codes {codes}\n{runners.log_tails(40)}"
