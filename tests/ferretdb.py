"""A throw-away FerretDB server for the test suite.

FerretDB (https://www.ferretdb.com) speaks the MongoDB wire protocol; with its
SQLite backend it needs nothing but its own binary, which makes it the "real
server" the tests run against on machines without MongoDB. Its PostgreSQL
backend, the one most deployments use, needs a PostgreSQL server as well
(see ``tests/postgres.py``). ``tests/run.sh`` makes sure a binary exists
(building FerretDB v1.24.2 from source if needed) and exports its path as
``TENSORHUB_FERRETDB``.

Usage::

    with FerretDBServer() as server:                          # SQLite
        client = pymongo.MongoClient(server.uri)
    with FerretDBServer(handler="postgresql", postgresql_url=url) as server:
        ...

Every server gets its own free loopback port and its own temporary directory
(SQLite files, state, and ``ferretdb.log`` with the server's output), removed
when the server stops. (The PostgreSQL data belongs to the PostgreSQL server.)
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import pymongo
from pymongo.errors import PyMongoError

#: Environment variable naming the ferretdb binary (set by tests/run.sh).
FERRETDB_ENV = "TENSORHUB_FERRETDB"
#: Where tests/run.sh caches the binary it builds (gitignored).
CACHED_BINARY = Path(__file__).resolve().parent.parent / ".cache" / "ferretdb" / "ferretdb"

#: FerretDB's ``--handler`` values these tests use: its SQLite and PostgreSQL backends.
SQLITE_HANDLER = "sqlite"
POSTGRESQL_HANDLER = "postgresql"
HANDLERS = (SQLITE_HANDLER, POSTGRESQL_HANDLER)

#: How many fresh ports to try when the port we picked was taken meanwhile.
_PORT_ATTEMPTS = 3
#: Bytes of the server log shown when start-up fails.
_LOG_TAIL_BYTES = 4000


class FerretDBNotFoundError(RuntimeError):
    """No usable ferretdb binary is available."""


class FerretDBStartError(RuntimeError):
    """The ferretdb process exited or did not answer in time."""


def find_ferretdb() -> str:
    """Return the path of the ferretdb binary to use.

    Looks at, in this order: the ``TENSORHUB_FERRETDB`` environment variable
    (which, when set, must name an executable file), ``ferretdb`` on ``PATH``,
    and the build cached by ``tests/run.sh`` at ``.cache/ferretdb/ferretdb``.

    Raises:
        FerretDBNotFoundError: none of them exists. The FerretDB backend is a
            required part of the test suite, so callers should let this fail
            the tests rather than skip them.
    """
    configured = os.environ.get(FERRETDB_ENV)
    if configured:
        if os.path.isfile(configured) and os.access(configured, os.X_OK):
            return os.path.abspath(configured)  # the server starts in its own temp dir
        raise FerretDBNotFoundError(f"{FERRETDB_ENV}={configured!r} is not an executable file")

    on_path = shutil.which("ferretdb")
    if on_path:
        return os.path.abspath(on_path)

    if CACHED_BINARY.is_file() and os.access(CACHED_BINARY, os.X_OK):
        return str(CACHED_BINARY)

    raise FerretDBNotFoundError(
        "no ferretdb binary found: set TENSORHUB_FERRETDB, put ferretdb on PATH, "
        f"or run `bash tests/run.sh`, which builds one into {CACHED_BINARY}"
    )


def _free_loopback_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent() -> None:
    """``preexec_fn``: have Linux send SIGTERM to the child when pytest dies.

    Keeps a crashed or SIGKILLed test run from leaving servers behind. Does
    nothing on other systems.
    """
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


class FerretDBServer:
    """A FerretDB process (SQLite or PostgreSQL backend) on a free loopback port.

    A context manager: entering starts the server and waits until it answers
    ``ping`` (which FerretDB answers only once its backend works, so a broken
    PostgreSQL connection fails here, not in the first test); leaving stops
    it (SIGTERM, then SIGKILL) and removes its directory. ``start()`` and
    ``stop()`` can also be called directly.

    Args:
        binary: the ferretdb executable; default :func:`find_ferretdb`.
        handler: FerretDB's backend, ``"sqlite"`` (default; data in the
            server's directory) or ``"postgresql"`` (data in the PostgreSQL
            database named by ``postgresql_url``).
        postgresql_url: ``postgres://user@host:port/database`` of an existing
            database; required with ``handler="postgresql"``, refused otherwise.
        startup_timeout: seconds to wait for the first successful ``ping``.
        stop_timeout: seconds to wait after SIGTERM before sending SIGKILL.
        log_level: FerretDB's ``--log-level``.
        keep_dir: keep the data/log directory after stopping (for debugging).
        extra_args: more ferretdb flags, appended to the command line, e.g.
            ``["--test-enable-new-auth", "--setup-database=db",
            "--setup-username=ann", "--setup-password=pw"]`` for a server
            with authentication.
    """

    def __init__(
        self,
        binary: str | None = None,
        *,
        handler: str = SQLITE_HANDLER,
        postgresql_url: str | None = None,
        startup_timeout: float = 30.0,
        stop_timeout: float = 10.0,
        log_level: str = "warn",
        keep_dir: bool = False,
        extra_args: Sequence[str] = (),
    ) -> None:
        if handler not in HANDLERS:
            raise ValueError(f"unknown FerretDB handler {handler!r} (known: {', '.join(HANDLERS)})")
        if (handler == POSTGRESQL_HANDLER) != (postgresql_url is not None):
            raise ValueError("postgresql_url is required with handler='postgresql' and only with it")
        self.binary = binary or find_ferretdb()
        self.handler = handler
        self.postgresql_url = postgresql_url
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.log_level = log_level
        self.keep_dir = keep_dir
        self.extra_args = list(extra_args)
        self.port: int | None = None
        self.dir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        """``mongodb://127.0.0.1:PORT`` of the running server (no database)."""
        if self.port is None or self._process is None:
            raise RuntimeError("FerretDBServer is not running")
        return f"mongodb://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        """The file receiving the server's stdout and stderr."""
        if self.dir is None:
            raise RuntimeError("FerretDBServer has not been started")
        return self.dir / "ferretdb.log"

    def start(self) -> None:
        """Start the server and block until it answers ``ping``.

        Raises:
            FerretDBStartError: the process exited, or did not answer within
                ``startup_timeout`` seconds. The message includes the end of
                its log.
        """
        if self._process is not None:
            raise RuntimeError("FerretDBServer is already running")
        self.dir = Path(tempfile.mkdtemp(prefix="tensorhub-ferretdb-"))
        try:
            # The port is free when picked but could be taken before ferretdb
            # binds it; a process that exits early is retried on a new port.
            for attempt in range(1, _PORT_ATTEMPTS + 1):
                self._spawn()
                try:
                    self._wait_until_ready()
                    return
                except FerretDBStartError:
                    port_taken = self._port_was_taken()
                    self._terminate()
                    if not port_taken or attempt == _PORT_ATTEMPTS:
                        raise
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the server (if running) and remove its directory.

        Safe to call more than once.
        """
        self._terminate()
        if self.dir is not None and not self.keep_dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self) -> FerretDBServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- internals ---------------------------------------------------------------

    def _spawn(self) -> None:
        """Start the ferretdb process on a newly picked port."""
        assert self.dir is not None
        self.port = _free_loopback_port()
        command = [self.binary, f"--handler={self.handler}", *self._backend_args()]
        command += [
            f"--listen-addr=127.0.0.1:{self.port}",
            f"--state-dir={self.dir}",
            "--debug-addr=-",
            "--telemetry=disable",
            f"--log-level={self.log_level}",
            *self.extra_args,
        ]
        with open(self.log_path, "ab") as log:
            log.write(f"$ {' '.join(command)}\n".encode())
            log.flush()
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
                preexec_fn=_die_with_parent,
            )

    def _backend_args(self) -> list[str]:
        """The flags that say where the handler keeps its data."""
        assert self.dir is not None
        if self.handler == POSTGRESQL_HANDLER:
            assert self.postgresql_url is not None
            return [f"--postgresql-url={self.postgresql_url}"]
        data_dir = self.dir / "data"
        data_dir.mkdir(exist_ok=True)
        return [f"--sqlite-url=file:{data_dir}/"]

    def _wait_until_ready(self) -> None:
        """Poll with ``ping`` until the server answers, it exits, or time runs out."""
        assert self._process is not None
        deadline = time.monotonic() + self.startup_timeout
        client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(
            self.uri,
            serverSelectionTimeoutMS=500,
            connectTimeoutMS=500,
            directConnection=True,
        )
        try:
            while True:
                returncode = self._process.poll()
                if returncode is not None:
                    raise FerretDBStartError(
                        f"ferretdb exited with status {returncode} while starting\n{self._log_tail()}"
                    )
                try:
                    client.admin.command("ping")
                    return
                except PyMongoError as error:
                    if time.monotonic() > deadline:
                        raise FerretDBStartError(
                            f"ferretdb did not answer ping on {self.uri} within "
                            f"{self.startup_timeout:g} s ({error})\n{self._log_tail()}"
                        ) from error
                time.sleep(0.1)
        finally:
            client.close()

    def _terminate(self) -> None:
        """SIGTERM the process, SIGKILL it after ``stop_timeout`` seconds."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def _port_was_taken(self) -> bool:
        """True if the process exited because its port was in use."""
        if self._process is None or self._process.poll() is None:
            return False
        try:
            return b"address already in use" in self.log_path.read_bytes().lower()
        except OSError:
            return False

    def _log_tail(self) -> str:
        """The last part of the server log, framed for an error message."""
        try:
            data = self.log_path.read_bytes()[-_LOG_TAIL_BYTES:]
        except OSError as error:
            return f"(log {self.log_path} unreadable: {error})"
        text = data.decode("utf-8", errors="replace").rstrip()
        return f"--- end of {self.log_path} ---\n{text}\n---"
