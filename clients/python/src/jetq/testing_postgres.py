"""Test support: a real PostgreSQL cluster per test session, for the transactional outbox.

Like :class:`jetq.testing.NatsServer` for NATS: the test starts its own server and nothing else
is touched — never the machine's PostgreSQL on port 5432::

    from jetq.testing_postgres import PostgresServer

    with PostgresServer() as pg:
        pg.create_database("shop")
        connection = psycopg.connect(pg.dsn("shop"))

``initdb`` makes a throw-away cluster in a temporary directory (trust authentication, user
``postgres``, durability off for speed); ``postgres`` listens on a free loopback port, with its
Unix socket in the same directory. Both are removed on :meth:`PostgresServer.stop`. The server
binaries are in ``$JETQ_TEST_PG_BIN``, else the newest ``/usr/lib/postgresql/<version>/bin``
(Debian's ``postgresql`` package; ``scripts/test.sh`` installs it), else on ``PATH``. PostgreSQL
refuses to run as root: under root the cluster belongs to, and runs as, the user ``nobody``.
Every wait is bounded.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from typing import Dict, List, Optional

from .testing import free_port

__all__ = ["PostgresServer", "find_postgres_bin", "PG_BIN_ENV"]

#: Environment variable naming the directory of ``initdb`` and ``postgres``.
PG_BIN_ENV = "JETQ_TEST_PG_BIN"
#: How long ``initdb`` may take.
INITDB_TIMEOUT = 60.0
#: How long a fresh server may take to accept connections.
READY_TIMEOUT = 30.0
#: How long a stopped server may take to exit before it is killed.
STOP_TIMEOUT = 15.0
#: Attempts with new ports when a port turns out to be taken.
START_ATTEMPTS = 5
#: The superuser of the cluster (trust authentication: no password).
USER = "postgres"
_READY = "database system is ready to accept connections"


def find_postgres_bin() -> str:
    """The directory holding ``initdb`` and ``postgres`` (see the module documentation); raises
    ``FileNotFoundError`` with the fix when there is none."""
    configured = os.environ.get(PG_BIN_ENV)
    if configured:
        if not os.access(os.path.join(configured, "initdb"), os.X_OK):
            raise FileNotFoundError(f"{PG_BIN_ENV}={configured} has no executable initdb")
        return configured
    candidates = glob.glob("/usr/lib/postgresql/*/bin/initdb")

    def major(path: str) -> int:
        version = path.split("/")[4]
        return int(version) if version.isdigit() else 0

    for initdb in sorted(candidates, key=major, reverse=True):
        if os.access(initdb, os.X_OK):
            return os.path.dirname(initdb)
    on_path = shutil.which("initdb")
    if on_path:
        return os.path.dirname(on_path)
    raise FileNotFoundError(
        "no PostgreSQL server binaries found: install them (Debian: apt-get install postgresql; "
        f"scripts/test.sh does) or set {PG_BIN_ENV} to the directory holding initdb and postgres"
    )


class PostgresServer:
    """A PostgreSQL cluster owned by one test (or session). Starts in the constructor; stops
    and removes its directory on :meth:`stop`, ``with``-block exit or garbage collection."""

    def __init__(self, bin_dir: Optional[str] = None) -> None:
        self.bin_dir = bin_dir or find_postgres_bin()
        self._dir = tempfile.mkdtemp(prefix="jetq-pg-")
        self.data_dir = os.path.join(self._dir, "data")
        #: The directory of the server's Unix socket (usable as ``host``).
        self.socket_dir = self._dir
        self.host = "127.0.0.1"
        self.port = 0
        self._log_path = os.path.join(self._dir, "postgres.log")
        self._process: Optional["subprocess.Popen[bytes]"] = None
        self._run_as: Optional[pwd.struct_passwd] = None
        try:
            if os.geteuid() == 0:
                # initdb and postgres refuse to run as root: hand the directory to nobody.
                self._run_as = pwd.getpwnam("nobody")
                os.chown(self._dir, self._run_as.pw_uid, self._run_as.pw_gid)
            self._initdb()
            last_logs = ""
            for _ in range(START_ATTEMPTS):
                self.port = free_port()
                if self._spawn():
                    return
                last_logs = self.logs()
            raise RuntimeError(f"postgres did not start after {START_ATTEMPTS} attempts:\n{last_logs}")
        except BaseException:
            self._kill()
            self._cleanup_dir()
            raise

    def _run_kwargs(self) -> Dict[str, object]:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "TZ": "UTC"}
        if self._run_as is None:
            return {"env": env}
        env["HOME"] = self._dir
        return {"env": env, "user": self._run_as.pw_uid, "group": self._run_as.pw_gid, "extra_groups": []}

    def _initdb(self) -> None:
        command = [
            os.path.join(self.bin_dir, "initdb"),
            "-D", self.data_dir,
            "-U", USER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        ]  # fmt: skip
        try:
            result = subprocess.run(
                command,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                timeout=INITDB_TIMEOUT,
                cwd=self._dir,
                **self._run_kwargs(),  # type: ignore[call-overload]
            )
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"initdb did not finish within {INITDB_TIMEOUT}s") from None
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed with exit code {result.returncode}:\n{result.stdout.decode(errors='replace')}")

    @property
    def url(self) -> str:
        """``postgresql://postgres@127.0.0.1:<port>/postgres``: the default database."""
        return self.url_for("postgres")

    def url_for(self, database: str) -> str:
        """A connection URL (libpq, sqlx) for ``database`` of this server."""
        return f"postgresql://{USER}@{self.host}:{self.port}/{database}"

    def dsn(self, database: str = "postgres") -> str:
        """A libpq keyword connection string (psycopg) for ``database`` of this server."""
        return f"host={self.host} port={self.port} user={USER} dbname={database}"

    def django_settings(self, database: str) -> Dict[str, str]:
        """The ``DATABASES`` entry of Django's PostgreSQL backend for ``database``."""
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": database,
            "USER": USER,
            "PASSWORD": "",
            "HOST": self.host,
            "PORT": str(self.port),
        }

    def logs(self) -> str:
        """Everything the server logged so far."""
        try:
            with open(self._log_path, encoding="utf-8", errors="replace") as log:
                return log.read()
        except FileNotFoundError:
            return ""

    def _spawn(self) -> bool:
        command = [
            os.path.join(self.bin_dir, "postgres"),
            "-D", self.data_dir,
            "-p", str(self.port),
            "-c", f"listen_addresses={self.host}",
            "-c", f"unix_socket_directories={self.socket_dir}",
            # A test cluster: nothing must survive a crash, so spare the disk.
            "-c", "fsync=off",
            "-c", "synchronous_commit=off",
            "-c", "full_page_writes=off",
            "-c", "shared_buffers=16MB",
            "-c", "max_connections=60",
        ]  # fmt: skip
        if self._run_as is not None and not os.path.exists(self._log_path):
            open(self._log_path, "wb").close()
            os.chown(self._log_path, self._run_as.pw_uid, self._run_as.pw_gid)
        log = open(self._log_path, "ab")  # noqa: SIM115 - handed to the child process
        start = log.tell()
        try:
            self._process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self._dir,
                **self._run_kwargs(),  # type: ignore[call-overload]
            )
        finally:
            log.close()
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            text = self.logs()[start:]
            if _READY in text:
                return True
            if self._process.poll() is not None:
                if "could not bind" in text or "already in use" in text:
                    return False
                raise RuntimeError(f"postgres exited with {self._process.returncode}:\n{text}")
            time.sleep(0.02)
        self._kill()
        raise RuntimeError(f"postgres was not ready within {READY_TIMEOUT}s:\n{self.logs()}")

    def create_database(self, name: str) -> str:
        """Creates database ``name`` (with ``createdb``); returns the name."""
        self._client("createdb", name)
        return name

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Runs ``sql`` with ``psql`` (stopping at the first error) and returns its output."""
        return self._client("psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d", database, "-c", sql)

    def _client(self, program: str, *args: str) -> str:
        command: List[str] = [os.path.join(self.bin_dir, program), "-h", self.host, "-p", str(self.port), "-U", USER, *args]
        try:
            result = subprocess.run(
                command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=30
            )
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"{program} did not finish within 30s") from None
        output = result.stdout.decode(errors="replace")
        if result.returncode != 0:
            raise RuntimeError(f"{program} {' '.join(args)} failed ({result.returncode}):\n{output}")
        return output

    def _kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            try:
                self._process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:  # pragma: no cover - the kernel did not reap it
                pass

    def stop(self) -> None:
        """Stops the server (fast shutdown: open sessions are ended) and removes its directory."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGINT)
            try:
                self._process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self._kill()
        self._cleanup_dir()

    def _cleanup_dir(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> "PostgresServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __del__(self) -> None:
        try:
            self._kill()
            self._cleanup_dir()
        except Exception:
            pass
