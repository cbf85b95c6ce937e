"""A fault-injecting TCP proxy for MongoDB wire-protocol traffic (test tooling, stdlib + bson only).

It sits between pymongo clients and a server and forwards bytes both ways, one framed wire
message at a time. It reads every request (OP_MSG, legacy OP_QUERY, OP_COMPRESSED with zlib)
to learn which command each reply answers, so that tests can hold back *the reply to a given
command*: the server has already applied the write, only the answer is late. A client whose
``socketTimeoutMS`` passes first sees a timeout for a write that did in fact happen: exactly
the fault a claim protocol must survive. ::

    with DelayProxy.for_uri(server_uri, seed=7) as proxy:
        client = pymongo.MongoClient(proxy.uri_for(server_uri), socketTimeoutMS=1000)
        proxy.delay_replies(3.0, match=lambda cmd: cmd.name == "insert" and cmd.collection == "x",
                            probability=0.5, count=10)
        proxy.drop_replies(match=lambda cmd: cmd.name == "update")  # the reply is lost: connection closed
        proxy.delay_all(2.0)        # a slow server: every reply 2 s late ...
        proxy.delay_all(None)       # ... until switched off
        proxy.drop_connections()    # cut every open connection (a network blip)

A delayed reply is still written later on the same connection, in order (pymongo sends one
request at a time on a connection, so holding one reply never reorders answers). If the client
gave up and closed its socket meanwhile, the late write fails quietly.

All network work runs on one asyncio event loop in a background thread, so fifty runners with a
handful of pooled connections each cost coroutines, not hundreds of threads. The control methods
are thread-safe and can be called from the test's thread at any time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlencode

import bson
from pymongo import uri_parser

log = logging.getLogger("delay_proxy")

OP_REPLY = 1
OP_QUERY = 2004
OP_COMPRESSED = 2012
OP_MSG = 2013

#: messageLength, requestID, responseTo, opCode (little-endian int32s).
HEADER = struct.Struct("<iiii")
_INT32 = struct.Struct("<i")
#: OP_MSG flagBits.
CHECKSUM_PRESENT = 1 << 0
MORE_TO_COME = 1 << 1
#: MongoDB's own limit is 48 MB; a larger length means we lost the framing, not a big message.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
#: After the client closed its end, how long we wait for the server's last replies before cutting.
_HALF_CLOSED_GRACE = 60.0


class WireError(ValueError):
    """Bytes that are not a well-formed MongoDB wire message."""


@dataclass(frozen=True)
class Command:
    """What one request asked for, as far as the proxy could read it.

    ``name`` is the command name (the first key of the command document, e.g. ``"insert"``,
    ``"findAndModify"``, ``"hello"``); ``collection`` its value when that is a string (the
    collection the command works on); ``database`` the ``$db`` (or the legacy namespace's
    database). ``document`` is the command document with OP_MSG document sequences merged in,
    so an insert's ``document["documents"]`` lists the inserted documents whichever way the
    driver framed them. ``name`` is None when the request could not be read (a compressor we do
    not speak, a legacy opcode): such requests are forwarded untouched all the same.
    """

    request_id: int
    op_code: int
    name: str | None
    collection: str | None = None
    database: str | None = None
    document: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    more_to_come: bool = False  # the client expects no reply (unacknowledged write)

    def __str__(self) -> str:
        return f"{self.name or '?'}({self.database or '?'}.{self.collection or '-'})"


@dataclass
class ReplyEvent:
    """One reply the proxy held back or threw away (for test assertions and failure reports)."""

    at: float                    # time.monotonic() when the reply came from the server
    action: str                  # "delay" | "drop"
    seconds: float               # how long it was held (0 for a drop)
    command: Command | None      # the request it answers; None if unknown
    delivered: bool | None = None  # for delays: whether the client was still there to take it


@dataclass
class Rule:
    """A standing instruction for replies whose request ``match`` accepts.

    Fires with ``probability`` (drawn from the proxy's seeded random generator) at most ``count``
    times (None: no limit). ``fired`` counts how often it did.
    """

    action: str
    seconds: float
    match: Callable[[Command], bool] | None
    probability: float
    count: int | None
    fired: int = 0

    @property
    def exhausted(self) -> bool:
        return self.count is not None and self.fired >= self.count


# -- wire protocol ---------------------------------------------------------------------------------


def parse_header(header: bytes) -> tuple[int, int, int, int]:
    """(messageLength, requestID, responseTo, opCode) of a 16-byte header; WireError if absurd."""
    if len(header) != HEADER.size:
        raise WireError(f"a message header has 16 bytes, got {len(header)}")
    length, request_id, response_to, op_code = HEADER.unpack(header)
    if not HEADER.size <= length <= MAX_MESSAGE_BYTES:
        raise WireError(f"implausible messageLength {length} (opCode {op_code}): lost the framing")
    return length, request_id, response_to, op_code


def _cstring(data: bytes, pos: int) -> tuple[str, int]:
    end = data.find(b"\x00", pos)
    if end < 0:
        raise WireError("unterminated cstring")
    return data[pos:end].decode("utf-8", "replace"), end + 1


def _bson_at(data: bytes, pos: int, end: int) -> tuple[dict[str, Any], int]:
    """Decode the BSON document starting at ``pos`` (it must fit before ``end``)."""
    if pos + 4 > end:
        raise WireError("truncated BSON document length")
    (size,) = _INT32.unpack_from(data, pos)
    if size < 5 or pos + size > end:
        raise WireError(f"BSON document of {size} bytes does not fit its message")
    try:
        return bson.decode(data[pos:pos + size]), pos + size
    except Exception as err:  # bson raises InvalidBSON and friends; all mean the same here
        raise WireError(f"undecodable BSON document: {err}") from err


def _describe(request_id: int, op_code: int, body: dict[str, Any], database: str | None,
              more_to_come: bool = False) -> Command:
    if "$query" in body and isinstance(body["$query"], dict):  # legacy wrapped OP_QUERY command
        body = body["$query"]
    name = next(iter(body), None)
    value = body.get(name) if name is not None else None
    db = body.get("$db")
    return Command(request_id, op_code, name, value if isinstance(value, str) else None,
                   db if isinstance(db, str) else database, body, more_to_come)


def parse_request(message: bytes) -> Command:
    """Read one complete request message (header included) into a :class:`Command`.

    Raises WireError on malformed bytes; returns a Command with ``name=None`` for messages that
    are well framed but not readable here (unknown compressor, legacy write opcodes).
    """
    length, request_id, _response_to, op_code = parse_header(message[:HEADER.size])
    if length != len(message):
        raise WireError(f"messageLength says {length} bytes, got {len(message)}")
    if op_code == OP_MSG:
        return _parse_op_msg(message, request_id)
    if op_code == OP_QUERY:
        (_flags,) = _INT32.unpack_from(message, 16)
        namespace, pos = _cstring(message, 20)
        pos += 8  # numberToSkip, numberToReturn
        body, _ = _bson_at(message, pos, len(message))
        database = namespace.split(".", 1)[0] or None
        return _describe(request_id, op_code, body, database)
    if op_code == OP_COMPRESSED:
        if len(message) < 25:
            raise WireError("OP_COMPRESSED shorter than its own header")
        original_op, uncompressed_size = struct.unpack_from("<ii", message, 16)
        compressor = message[24]
        if compressor == 0:      # noop
            payload = message[25:]
        elif compressor == 2:    # zlib (snappy and zstd are not in the stdlib: left unread)
            try:
                payload = zlib.decompress(message[25:])
            except zlib.error as err:
                raise WireError(f"bad zlib payload: {err}") from err
        else:
            return Command(request_id, op_code, None)
        if len(payload) != uncompressed_size:
            raise WireError(f"uncompressed {len(payload)} bytes, header promised {uncompressed_size}")
        inner = HEADER.pack(HEADER.size + len(payload), request_id, _response_to, original_op) + payload
        return parse_request(inner)
    return Command(request_id, op_code, None)


def _parse_op_msg(message: bytes, request_id: int) -> Command:
    (flags,) = _INT32.unpack_from(message, 16)
    end = len(message) - (4 if flags & CHECKSUM_PRESENT else 0)  # the CRC-32C trails the sections
    pos = 20
    body: dict[str, Any] | None = None
    sequences: dict[str, list[dict[str, Any]]] = {}
    while pos < end:
        kind = message[pos]
        pos += 1
        if kind == 0:
            body, pos = _bson_at(message, pos, end)
        elif kind == 1:
            if pos + 4 > end:
                raise WireError("truncated document sequence")
            (size,) = _INT32.unpack_from(message, pos)
            section_end = pos + size
            if size < 5 or section_end > end:
                raise WireError(f"document sequence of {size} bytes does not fit its message")
            identifier, cursor = _cstring(message, pos + 4)
            docs = sequences.setdefault(identifier, [])
            while cursor < section_end:
                doc, cursor = _bson_at(message, cursor, section_end)
                docs.append(doc)
            pos = section_end
        else:
            raise WireError(f"unknown OP_MSG section kind {kind}")
    if body is None:
        raise WireError("OP_MSG without a body section")
    if sequences:  # the driver moves insert's "documents" etc. out of the body: put them back
        body = {**body, **{key: [*body.get(key, []), *docs] for key, docs in sequences.items()}}
    return _describe(request_id, OP_MSG, body, None, bool(flags & MORE_TO_COME))


def reply_more_to_come(message: bytes) -> bool:
    """True for an OP_MSG reply announcing further replies to the same request (exhaust/streaming)."""
    return (len(message) >= 20 and HEADER.unpack_from(message)[3] == OP_MSG
            and bool(_INT32.unpack_from(message, 16)[0] & MORE_TO_COME))


async def read_message(reader: asyncio.StreamReader) -> bytes | None:
    """The next whole message from ``reader`` (partial reads are joined), None at a clean EOF."""
    try:
        header = await reader.readexactly(HEADER.size)
    except asyncio.IncompleteReadError as err:
        if err.partial:
            raise WireError("connection closed inside a message header") from err
        return None
    length = parse_header(header)[0]
    try:
        return header + await reader.readexactly(length - HEADER.size)
    except asyncio.IncompleteReadError as err:
        raise WireError("connection closed inside a message") from err


# -- the proxy -------------------------------------------------------------------------------------


class _Connection:
    """One client connection and its upstream twin."""

    def __init__(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.client_reader = client_reader
        self.client_writer = client_writer
        self.upstream_reader: asyncio.StreamReader | None = None
        self.upstream_writer: asyncio.StreamWriter | None = None
        # requestID -> what it asked; filled before the request is forwarded, so the reply
        # (which cannot come earlier) always finds its entry.
        self.pending: dict[int, Command] = {}

    def abort(self) -> None:
        """Cut both sides at once (RST, no goodbye): what a network failure looks like."""
        for writer in (self.client_writer, self.upstream_writer):
            if writer is not None and not writer.is_closing():
                writer.transport.abort()

    def close(self) -> None:
        for writer in (self.client_writer, self.upstream_writer):
            if writer is not None and not writer.is_closing():
                writer.close()


class DelayProxy:
    """A TCP proxy in front of one MongoDB-wire server that can delay or drop chosen replies.

    Args:
        upstream_host, upstream_port: the real server.
        listen_host: where the proxy listens (on a free port; see :attr:`port`).
        seed: seed of the random generator behind rules' ``probability``.
    """

    def __init__(self, upstream_host: str, upstream_port: int, *, listen_host: str = "127.0.0.1",
                 seed: int | None = 0) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = int(upstream_port)
        self.host = listen_host
        self.port: int | None = None
        self._random = random.Random(seed)
        # Rules, switches, counters: shared with the test's thread. Reentrant, so that a rule's
        # ``match`` may itself switch faults on or off (say, a slow spell that starts right after
        # a given reply); such a change applies from the next reply on.
        self._lock = threading.RLock()
        self._rules: list[Rule] = []
        self._delay_all: float | None = None
        self._events: list[ReplyEvent] = []
        self._errors: list[str] = []
        self.replies = 0               # replies that reached the proxy from the server
        self.connections_opened = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[_Connection] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._stopping: asyncio.Event | None = None

    @classmethod
    def for_uri(cls, server_uri: str, **kwargs: Any) -> DelayProxy:
        """A proxy in front of the (single) host of ``server_uri``."""
        nodes = uri_parser.parse_uri(server_uri, validate=False)["nodelist"]
        if len(nodes) != 1:
            raise ValueError(f"DelayProxy fronts one server; {server_uri!r} names {len(nodes)}")
        host, port = nodes[0]
        return cls(host, port, **kwargs)

    # -- life cycle ----------------------------------------------------------------------------
    def start(self) -> DelayProxy:
        if self._thread is not None:
            raise RuntimeError("DelayProxy already started")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="delay-proxy", daemon=True)
        self._thread.start()
        try:
            self._call(self._start_server(), timeout=10)
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Stop listening, cut every connection, stop the loop thread. Idempotent."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if thread.is_alive() and not loop.is_closed():
            with contextlib.suppress(Exception):
                self._call(self._shutdown(), timeout=15)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=15)
        if not thread.is_alive():
            loop.close()
        self._loop = self._thread = None

    def __enter__(self) -> DelayProxy:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _call(self, coroutine: Any, timeout: float) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    async def _start_server(self) -> None:
        self._stopping = asyncio.Event()
        # A generous backlog: fifty runners opening their pools at once must not see refusals.
        self._server = await asyncio.start_server(self._handle, self.host, 0, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        assert self._stopping is not None
        self._stopping.set()  # wakes replies sleeping on a delay; they see the stop and quit
        if self._server is not None:
            self._server.close()
        for conn in list(self._connections):
            conn.abort()
        handlers = list(self._handlers)
        for handler in handlers:
            handler.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    # -- addresses -----------------------------------------------------------------------------
    @property
    def address(self) -> str:
        if self.port is None:
            raise RuntimeError("DelayProxy is not running")
        return f"{self.host}:{self.port}"

    def uri_for(self, server_uri: str) -> str:
        """``server_uri`` with its host replaced by the proxy (database, credentials and options
        kept) and ``directConnection=true``: otherwise a driver that discovers a replica set
        would connect to the members' own addresses and go around the proxy."""
        scheme, sep, rest = server_uri.partition("://")
        if scheme != "mongodb" or not sep:
            raise ValueError(f"uri_for needs a mongodb:// URI, got {server_uri!r}")
        authority, _, path = rest.partition("/")
        userinfo, at, _hosts = authority.rpartition("@")
        database, _, query = path.partition("?")
        options = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k.lower() != "directconnection"]
        options.append(("directConnection", "true"))
        return f"mongodb://{userinfo}{at}{self.address}/{database}?{urlencode(options)}"

    # -- fault controls (thread-safe) ----------------------------------------------------------
    def delay_replies(self, seconds: float, match: Callable[[Command], bool] | None = None,
                      probability: float = 1.0, count: int | None = None) -> Rule:
        """Hold back replies to requests ``match`` accepts (None: every reply) by ``seconds``.

        ``match`` sees the :class:`Command` the reply answers; it is only asked about requests
        the proxy could read (``name`` set), and one that raises counts as "no" (see
        :attr:`errors`). The first rule that fires decides; ``delay_all`` adds a floor.
        """
        if seconds < 0:
            raise ValueError("seconds must not be negative")
        return self._add_rule(Rule("delay", float(seconds), match, probability, count))

    def drop_replies(self, match: Callable[[Command], bool] | None = None, probability: float = 1.0,
                     count: int | None = None) -> Rule:
        """Throw away replies to matching requests and cut the connection (the request was applied)."""
        return self._add_rule(Rule("drop", 0.0, match, probability, count))

    def _add_rule(self, rule: Rule) -> Rule:
        if not 0.0 <= rule.probability <= 1.0:
            raise ValueError("probability must be within [0, 1]")
        if rule.count is not None and rule.count < 0:
            raise ValueError("count must not be negative")
        with self._lock:
            self._rules.append(rule)
        return rule

    def remove_rule(self, rule: Rule) -> None:
        with self._lock:
            if rule in self._rules:
                self._rules.remove(rule)

    def clear_rules(self) -> None:
        with self._lock:
            self._rules.clear()

    def delay_all(self, seconds: float | None) -> None:
        """Make every reply ``seconds`` late (a slow server); None switches it off again.

        Replies already being held keep their delay; only replies that arrive later are affected.
        """
        if seconds is not None and seconds < 0:
            raise ValueError("seconds must not be negative")
        with self._lock:
            self._delay_all = seconds

    @contextlib.contextmanager
    def slow(self, seconds: float) -> Iterator[DelayProxy]:
        """``delay_all(seconds)`` for the duration of a ``with`` block."""
        self.delay_all(seconds)
        try:
            yield self
        finally:
            self.delay_all(None)

    def drop_connections(self) -> int:
        """Cut every open connection now; returns how many there were."""
        if self._loop is None:
            return 0

        async def cut() -> int:
            connections = list(self._connections)
            for conn in connections:
                conn.abort()
            return len(connections)

        return int(self._call(cut(), timeout=10))

    # -- what happened -------------------------------------------------------------------------
    @property
    def events(self) -> list[ReplyEvent]:
        """Replies held back or dropped so far, oldest first (a copy)."""
        with self._lock:
            return list(self._events)

    @property
    def errors(self) -> list[str]:
        """Problems inside the proxy (a ``match`` that raised, unreadable requests). Should stay empty."""
        with self._lock:
            return list(self._errors)

    @property
    def active_connections(self) -> int:
        return len(self._connections)

    def _error(self, text: str) -> None:
        log.warning("delay proxy: %s", text)
        with self._lock:
            if len(self._errors) < 1000:
                self._errors.append(text)

    # -- the decision on one reply -------------------------------------------------------------
    def _decide(self, command: Command | None, arrived: float) -> ReplyEvent | None:
        """What to do with a reply to ``command``: None to pass it on, else the event to act on."""
        with self._lock:
            self.replies += 1
            delay = self._delay_all or 0.0
            action = "delay" if delay > 0 else None
            for rule in self._rules:
                if rule.exhausted:
                    continue
                if rule.match is not None:
                    if command is None or command.name is None:
                        continue  # an unreadable request only meets rules that match everything
                    try:
                        if not rule.match(command):
                            continue
                    except Exception as err:  # a broken predicate must not kill the connection
                        self._errors.append(f"match raised {err!r} on {command}")
                        continue
                if rule.probability < 1.0 and self._random.random() >= rule.probability:
                    continue
                rule.fired += 1
                if rule.action == "drop":
                    action, delay = "drop", 0.0
                    break
                action, delay = "delay", max(delay, rule.seconds)
                break  # the first rule that fires decides
            if action is None:
                return None
            event = ReplyEvent(arrived, action, delay, command)
            self._events.append(event)
            return event

    # -- forwarding ----------------------------------------------------------------------------
    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        conn = _Connection(client_reader, client_writer)
        try:
            try:
                conn.upstream_reader, conn.upstream_writer = await asyncio.wait_for(
                    asyncio.open_connection(self.upstream_host, self.upstream_port), 10)
            except (OSError, asyncio.TimeoutError) as err:
                log.info("delay proxy: upstream unreachable (%s); closing the client", err)
                conn.abort()
                return
            self.connections_opened += 1
            self._connections.add(conn)
            replies = asyncio.create_task(self._server_to_client(conn))
            try:
                await self._client_to_server(conn)
                # The client is done (EOF) or gone. Let the server answer what it was sent, so a
                # late reply still "arrives" (to nobody), then make sure both sides are closed.
                await asyncio.wait_for(asyncio.shield(replies), _HALF_CLOSED_GRACE)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                pass
            finally:
                conn.abort()
                replies.cancel()
                await asyncio.gather(replies, return_exceptions=True)
        except asyncio.CancelledError:
            pass
        except Exception as err:  # never let one connection's trouble reach the event loop
            self._error(f"connection handler: {err!r}")
        finally:
            conn.abort()
            self._connections.discard(conn)
            self._handlers.discard(handler)

    async def _client_to_server(self, conn: _Connection) -> None:
        upstream = conn.upstream_writer
        assert upstream is not None
        while True:
            try:
                message = await read_message(conn.client_reader)
            except (WireError, ConnectionError, OSError) as err:
                log.debug("client side ended: %s", err)
                break
            if message is None:
                break
            try:
                command = parse_request(message)
            except WireError as err:
                # Forward it anyway: the server will refuse it; we only lose the ability to match.
                self._error(f"unreadable request: {err}")
                command = Command(HEADER.unpack_from(message)[1], HEADER.unpack_from(message)[3], None)
            if not command.more_to_come:
                conn.pending[command.request_id] = command  # before forwarding: see _Connection
            try:
                upstream.write(message)
                await upstream.drain()
            except (ConnectionError, OSError):
                break
        # Half-close towards the server: it still answers what it got, then closes its side.
        if not upstream.is_closing() and upstream.can_write_eof():
            with contextlib.suppress(OSError, RuntimeError):
                upstream.write_eof()

    async def _server_to_client(self, conn: _Connection) -> None:
        assert conn.upstream_reader is not None and self._stopping is not None
        client = conn.client_writer
        while True:
            try:
                message = await read_message(conn.upstream_reader)
            except (WireError, ConnectionError, OSError) as err:
                log.debug("server side ended: %s", err)
                break
            if message is None:
                break
            arrived = time.monotonic()
            _length, request_id, response_to, _op = HEADER.unpack_from(message)
            command = conn.pending.pop(response_to, None)
            if command is not None and reply_more_to_come(message):
                conn.pending[request_id] = command  # the next reply answers this one (exhaust)
            event = self._decide(command, arrived)
            if event is not None and event.action == "drop":
                conn.abort()
                break
            if event is not None and event.seconds > 0:
                remaining = arrived + event.seconds - time.monotonic()
                if remaining > 0:
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), remaining)
                if self._stopping.is_set():
                    break
            delivered = False
            # A client that hung up (EOF seen by _client_to_server) gets nothing: writing would
            # only earn a reset. Otherwise the reply goes out, late but in order.
            if not client.is_closing() and not conn.client_reader.at_eof():
                try:
                    client.write(message)
                    await client.drain()
                    delivered = True
                except (ConnectionError, OSError):
                    pass  # the client timed out and hung up: the late answer has no taker
            if event is not None:
                event.delivered = delivered
        conn.close()
