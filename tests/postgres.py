"""A throw-away PostgreSQL cluster for the test suite (the store behind FerretDB's postgresql handler).

FerretDB v1 is most often deployed on PostgreSQL, and its PostgreSQL handler
behaves differently from the SQLite one (filters pushed down to SQL, JSONB
storage, a connection pool, no per-database files), so the suite runs against
it too. Nothing outside the test run is touched: every cluster is created
with ``initdb`` in its own temporary directory, listens on a free loopback
port (TCP only, no Unix socket), trusts local connections (it is reachable
from this machine only and lives for one test session), and is stopped and
deleted afterwards.

PostgreSQL refuses to run as root, and CI runs the tests as root: then
``initdb`` and ``postgres`` run as the ``postgres`` user that Debian's
``postgresql`` package creates, and the directory is handed to that user.

Usage::

    with PostgresServer() as server:
        server.url  # postgres://postgres@127.0.0.1:PORT/ferretdb

The binaries are found by :func:`find_postgres_bindir`; ``tests/run.sh``
installs Debian's ``postgresql`` package when none is found.
"""

from __future__ import annotations

import ctypes
import glob
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

#: Environment variable naming the directory holding initdb, postgres, pg_isready, createdb.
POSTGRES_BINDIR_ENV = "TENSORHUB_POSTGRES_BINDIR"
#: Where Debian's postgresql-NN packages put the server programs (not on PATH).
DEBIAN_BINDIR_GLOB = "/usr/lib/postgresql/*/bin"
#: The programs a cluster needs, all from one installation.
REQUIRED_PROGRAMS = ("initdb", "postgres", "pg_isready", "createdb")
#: The user that runs PostgreSQL when the tests run as root.
POSTGRES_USER = "postgres"
#: The database created for FerretDB (its schemas hold the MongoDB databases).
DEFAULT_DATABASE = "ferretdb"

#: Server settings for a disposable test cluster. Durability is pointless for
#: data deleted at the end of the session, and fsync is what makes PostgreSQL
#: slow on a shared CI disk. The rest keeps the footprint small and the log quiet.
_TEST_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "unix_socket_directories": "",  # TCP only: no socket path-length or permission trouble
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "shared_buffers": "64MB",
    "max_connections": "200",  # several FerretDB pools (xdist workers share nothing, but be roomy)
    "log_min_messages": "warning",
    "log_min_error_statement": "panic",  # FerretDB's expected SQL errors need not fill the log
    "log_checkpoints": "off",
}

#: How many fresh ports to try when the port we picked was taken meanwhile.
_PORT_ATTEMPTS = 3
#: Bytes of a log shown when start-up fails.
_LOG_TAIL_BYTES = 4000


class PostgresNotFoundError(RuntimeError):
    """No usable PostgreSQL installation (initdb, postgres, ...) was found."""


class PostgresStartError(RuntimeError):
    """initdb failed, or the server exited or did not become ready in time."""


def _has_programs(bindir: str | os.PathLike[str]) -> bool:
    """True if ``bindir`` holds every program in :data:`REQUIRED_PROGRAMS`."""
    return all(os.access(os.path.join(bindir, name), os.X_OK) for name in REQUIRED_PROGRAMS)


def _version_key(bindir: str) -> tuple[int, ...]:
    """Sort key for ``/usr/lib/postgresql/<version>/bin``: newest version last."""
    version = Path(bindir).parent.name
    return tuple(int(part) for part in re.findall(r"\d+", version)) or (0,)


def find_postgres_bindir() -> str:
    """Return the directory of the PostgreSQL server programs to use.

    Looks at, in this order: ``TENSORHUB_POSTGRES_BINDIR`` (which, when set,
    must hold them), the directory that ``initdb`` on ``PATH`` really lives in
    (symlinks resolved, so a link in /usr/local/bin finds its siblings), and
    the newest ``/usr/lib/postgresql/<version>/bin`` (Debian keeps them off
    ``PATH``).

    Raises:
        PostgresNotFoundError: none of them has all of :data:`REQUIRED_PROGRAMS`.
            PostgreSQL is a required part of the test suite, so callers should
            let this fail the tests rather than skip them.
    """
    configured = os.environ.get(POSTGRES_BINDIR_ENV)
    if configured:
        if _has_programs(configured):
            return os.path.abspath(configured)
        raise PostgresNotFoundError(
            f"{POSTGRES_BINDIR_ENV}={configured!r} does not hold all of {', '.join(REQUIRED_PROGRAMS)}"
        )

    on_path = shutil.which("initdb")
    if on_path:
        bindir = os.path.dirname(os.path.realpath(on_path))
        if _has_programs(bindir):
            return bindir

    for bindir in sorted(glob.glob(DEBIAN_BINDIR_GLOB), key=_version_key, reverse=True):
        if _has_programs(bindir):
            return bindir

    raise PostgresNotFoundError(
        "no PostgreSQL server programs found (initdb, postgres, pg_isready, createdb): "
        f"set {POSTGRES_BINDIR_ENV}, put initdb on PATH, or install Debian's postgresql package "
        "(`bash tests/run.sh` does that as root: apt-get install -y postgresql)"
    )


def free_loopback_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _parent_death_signal(signum: int) -> Callable[[], None]:
    """A ``preexec_fn`` that has Linux send ``signum`` to the child when pytest dies.

    Keeps a crashed or SIGKILLed test run from leaving a server behind. It runs
    after ``Popen`` has switched to ``user=`` (a change of user clears the
    setting, so the order matters). Does nothing on other systems.
    """

    def preexec() -> None:
        if sys.platform.startswith("linux"):
            pr_set_pdeathsig = 1
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(pr_set_pdeathsig, signum)

    return preexec


def _traversable_by_others(path: Path) -> bool:
    """True if every directory from ``/`` down to ``path`` is searchable by any user."""
    for directory in (path, *path.parents):
        try:
            if not os.stat(directory).st_mode & stat.S_IXOTH:
                return False
        except OSError:
            return False
    return True


class PostgresServer:
    """A PostgreSQL cluster of its own, on a free loopback port, with one database.

    A context manager: entering runs ``initdb`` in a new temporary directory,
    starts ``postgres``, waits until it accepts connections and creates
    ``database``; leaving stops the server (fast shutdown) and deletes the
    directory.

    Args:
        bindir: directory of initdb/postgres/pg_isready/createdb; default
            :func:`find_postgres_bindir`.
        database: the database to create (FerretDB needs one made in advance).
        startup_timeout: seconds to wait for the server to accept connections.
        stop_timeout: seconds to wait after each shutdown signal before the next,
            stronger one (SIGINT fast, SIGQUIT immediate, SIGKILL).
        keep_dir: keep the directory after stopping (for debugging).
        settings: more ``postgres -c name=value`` settings, overriding the
            test defaults.
    """

    def __init__(
        self,
        bindir: str | None = None,
        *,
        database: str = DEFAULT_DATABASE,
        startup_timeout: float = 60.0,
        stop_timeout: float = 10.0,
        keep_dir: bool = False,
        settings: dict[str, str] | None = None,
    ) -> None:
        self.bindir = bindir or find_postgres_bindir()
        self.database = database
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.keep_dir = keep_dir
        self.settings = {**_TEST_SETTINGS, **(settings or {})}
        self.port: int | None = None
        self.dir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        # PostgreSQL will not run as root: then it runs as the postgres user.
        self._run_as: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            try:
                self._run_as = pwd.getpwnam(POSTGRES_USER)
            except KeyError as error:
                raise PostgresNotFoundError(
                    f"running as root, but there is no {POSTGRES_USER!r} user to run PostgreSQL as "
                    "(Debian's postgresql package creates it)"
                ) from error

    @property
    def url(self) -> str:
        """``postgres://postgres@127.0.0.1:PORT/<database>`` of the running server."""
        if self.port is None or self._process is None:
            raise RuntimeError("PostgresServer is not running")
        return f"postgres://{POSTGRES_USER}@127.0.0.1:{self.port}/{self.database}"

    @property
    def data_dir(self) -> Path:
        """The cluster's data directory (made by initdb)."""
        if self.dir is None:
            raise RuntimeError("PostgresServer has not been started")
        return self.dir / "data"

    @property
    def log_path(self) -> Path:
        """The file receiving initdb's and the server's output."""
        if self.dir is None:
            raise RuntimeError("PostgresServer has not been started")
        return self.dir / "postgres.log"

    def start(self) -> None:
        """Create the cluster, start the server, wait for it and create the database.

        Raises:
            PostgresStartError: a step failed or timed out; the message
                includes the end of the log.
        """
        if self._process is not None:
            raise RuntimeError("PostgresServer is already running")
        self.dir = self._make_dir()
        try:
            self._initdb()
            # The port is free when picked but could be taken before postgres
            # binds it; a server that exits early is retried on a new port.
            for attempt in range(1, _PORT_ATTEMPTS + 1):
                self._spawn()
                try:
                    self._wait_until_ready()
                    break
                except PostgresStartError:
                    port_taken = self._port_was_taken()
                    self._terminate()
                    if not port_taken or attempt == _PORT_ATTEMPTS:
                        raise
            self._run_client(["createdb", *self._client_args(), self.database], "createdb")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the server (if running) and remove its directory. Safe to call more than once."""
        self._terminate()
        if self.dir is not None and not self.keep_dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self) -> PostgresServer:
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

    def _make_dir(self) -> Path:
        """A new temporary directory that the server's user owns and can reach.

        As root the directory is given to the postgres user, and it must lie
        below directories that user may enter: ``TMPDIR`` is used if it
        qualifies, else /tmp or /var/tmp.
        """
        if self._run_as is None:
            return Path(tempfile.mkdtemp(prefix="tensorhub-postgres-"))
        candidates = [tempfile.gettempdir(), "/tmp", "/var/tmp"]
        for base in candidates:
            if _traversable_by_others(Path(base)):
                directory = Path(tempfile.mkdtemp(prefix="tensorhub-postgres-", dir=base))
                os.chown(directory, self._run_as.pw_uid, self._run_as.pw_gid)
                return directory
        raise PostgresStartError(
            f"none of {', '.join(candidates)} can be entered by the {POSTGRES_USER} user; "
            "set TMPDIR to a directory every user may enter"
        )

    def _program(self, name: str) -> str:
        return os.path.join(self.bindir, name)

    def _server_env(self) -> dict[str, str]:
        """Environment of initdb and postgres: C locale, and a HOME the user can read."""
        env = {key: value for key, value in os.environ.items() if not key.startswith(("PG", "LC_"))}
        env["LANG"] = env["LC_ALL"] = "C"
        if self._run_as is not None:
            env["HOME"] = self._run_as.pw_dir
            env["USER"] = env["LOGNAME"] = self._run_as.pw_name
        return env

    def _server_user(self) -> tuple[int | None, int | None, list[int] | None]:
        """``Popen``'s ``user``, ``group`` and ``extra_groups``: the postgres user when we are root.

        Popen switches user itself (rather than ``runuser -u postgres --``) so
        that the process we hold is postgres itself: our shutdown signals and
        the parent-death signal reach it directly, with no su/runuser process
        in between deciding what to forward. ``(None, None, None)`` keeps the
        current user.
        """
        if self._run_as is None:
            return None, None, None
        return self._run_as.pw_uid, self._run_as.pw_gid, []

    def _initdb(self) -> None:
        """Create the cluster: UTF-8, C locale (both required by FerretDB), trust auth, no fsync."""
        command = [
            self._program("initdb"),
            f"--pgdata={self.data_dir}",
            f"--username={POSTGRES_USER}",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",  # thrown away after the session
        ]
        with open(self.log_path, "ab") as log:
            log.write(f"$ {' '.join(command)}\n".encode())
            log.flush()
            user, group, extra_groups = self._server_user()
            done = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
                env=self._server_env(),
                timeout=self.startup_timeout,
                check=False,
                user=user,
                group=group,
                extra_groups=extra_groups,
            )
        if done.returncode != 0:
            raise PostgresStartError(f"initdb failed with status {done.returncode}\n{self._log_tail()}")

    def _spawn(self) -> None:
        """Start postgres on a newly picked port."""
        self.port = free_loopback_port()
        command = [self._program("postgres"), "-D", str(self.data_dir), "-p", str(self.port)]
        for name, value in self.settings.items():
            command += ["-c", f"{name}={value}"]
        with open(self.log_path, "ab") as log:
            log.write(f"$ {' '.join(command)}\n".encode())
            log.flush()
            user, group, extra_groups = self._server_user()
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
                env=self._server_env(),
                # fast shutdown: FerretDB's pooled connections must not keep it up
                preexec_fn=_parent_death_signal(signal.SIGINT),
                user=user,
                group=group,
                extra_groups=extra_groups,
            )

    def _client_args(self) -> list[str]:
        return ["--host=127.0.0.1", f"--port={self.port}", f"--username={POSTGRES_USER}"]

    def _run_client(self, command: Sequence[str], what: str) -> subprocess.CompletedProcess[str]:
        """Run a client program from ``bindir``; raise PostgresStartError if it fails."""
        program, *args = command
        done = subprocess.run(
            [self._program(program), *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=self._server_env(),
            timeout=self.startup_timeout,
            check=False,
        )
        if done.returncode != 0:
            raise PostgresStartError(
                f"{what} failed with status {done.returncode}: {(done.stdout + done.stderr).strip()}\n"
                f"{self._log_tail()}"
            )
        return done

    def _wait_until_ready(self) -> None:
        """Poll with pg_isready until the server accepts connections, exits, or time runs out."""
        assert self._process is not None
        deadline = time.monotonic() + self.startup_timeout
        while True:
            returncode = self._process.poll()
            if returncode is not None:
                raise PostgresStartError(
                    f"postgres exited with status {returncode} while starting\n{self._log_tail()}"
                )
            ready = subprocess.run(
                [self._program("pg_isready"), *self._client_args(), "--dbname=postgres", "--timeout=2"],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                env=self._server_env(),
                check=False,
            )
            if ready.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise PostgresStartError(
                    f"postgres did not accept connections on 127.0.0.1:{self.port} within "
                    f"{self.startup_timeout:g} s\n{self._log_tail()}"
                )
            time.sleep(0.1)

    def _terminate(self) -> None:
        """Shut the server down: SIGINT (fast), then SIGQUIT (immediate), then SIGKILL."""
        process, self._process = self._process, None
        if process is None:
            return
        for signum in (signal.SIGINT, signal.SIGQUIT):
            if process.poll() is not None:
                return
            process.send_signal(signum)
            try:
                process.wait(timeout=self.stop_timeout)
                return
            except subprocess.TimeoutExpired:
                continue
        process.kill()
        process.wait()

    def _port_was_taken(self) -> bool:
        """True if the server exited because its port was in use."""
        if self._process is None or self._process.poll() is None:
            return False
        try:
            return b"address already in use" in self.log_path.read_bytes().lower()
        except OSError:
            return False

    def _log_tail(self) -> str:
        """The last part of the log, framed for an error message."""
        try:
            data = self.log_path.read_bytes()[-_LOG_TAIL_BYTES:]
        except OSError as error:
            return f"(log {self.log_path} unreadable: {error})"
        text = data.decode("utf-8", errors="replace").rstrip()
        return f"--- end of {self.log_path} ---\n{text}\n---"
