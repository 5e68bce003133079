"""The asyncio producer: :class:`AsyncProducer`.

Every enqueue is one JetStream publish whose acknowledgement is awaited: the call returns only
once the task is stored, so a returned id means the task will run. An ack that does not arrive in
time is retried with the **same** ``Nats-Msg-Id`` (the duplicate window makes that safe), up to
``publish_attempts`` times; then :class:`~jetq.errors.Timeout` (or
:class:`~jetq.errors.NotConnected` when the connection is down) says the outcome is unknown.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime as _dt
import hashlib
import io
import json
import logging
import ssl
from typing import IO, Any, AsyncIterator, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import nats
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig

from . import errors
from .catalog import Catalog
from .config import Config
from .errors import (
    ArtifactNotFound,
    ConnectError,
    EnqueueError,
    InvalidArtifactName,
    JetqError,
    NoStream,
    NotConnected,
    ProducerClosed,
    Rejected,
    ServerTooOld,
    StatusReadError,
    StreamFull,
    Timeout,
    TooLarge,
    WaitTimeout,
)
from .flow import Unique
from .message import build_task_message
from .priority import PriorityLike
from .protocol import TRACK_STATUS, Prepared, Seconds, Subjects, header_block_size
from .status import CancelOutcome, StatusStore, TaskStatus

__all__ = ["AsyncProducer", "Enqueued", "TaskRequest", "MIN_SERVER_VERSION"]

logger = logging.getLogger("jetq")

#: The oldest server jetq runs on (as the Rust side checks at connect).
MIN_SERVER_VERSION = (2, 10, 0)
#: JetStream's error code for a failed store; ``discard: new`` limits report it as
#: "maximum messages exceeded" / "maximum bytes exceeded".
STREAM_STORE_FAILED = 10077
#: JetStream's error code for a message over the stream's ``max_msg_size``.
MESSAGE_EXCEEDS_MAXIMUM = 10054
#: Upper bound on closing the connection.
_CLOSE_TIMEOUT = 5.0


@dataclasses.dataclass(frozen=True)
class Enqueued:
    """What the server acknowledged."""

    #: The task id: the idempotency key if one was given, else a fresh ULID.
    id: str
    #: The task's sequence in the task stream (of the original, for a duplicate); for a
    #: delayed task, its sequence in the delayed-task stream.
    sequence: int
    #: True if a task with the same id was already in the duplicate window, so the server
    #: dropped this one.
    duplicate: bool
    #: The stream that stored it (``JETQ_TASKS`` for the default prefix; ``JETQ_DELAYED`` for
    #: a delayed task).
    stream: str


@dataclasses.dataclass(frozen=True)
class TaskRequest:
    """One task of :meth:`AsyncProducer.enqueue_many` (a ``(queue, task, args)`` tuple works
    too when no option is needed)."""

    queue: str
    task: str
    args: Any = None
    key: Optional[str] = None
    delay: Optional[Seconds] = None
    max_attempts: Optional[int] = None
    timeout: Optional[Seconds] = None
    traceparent: Optional[str] = None
    tracestate: Optional[str] = None
    at: Optional[_dt.datetime] = None
    track_status: bool = False
    #: The task's level within its queue: ``"high"``, ``"normal"`` (None) or ``"low"``.
    priority: Optional[PriorityLike] = None


TaskLike = Union[TaskRequest, Tuple[str, str, Any]]
#: One result of ``enqueue_many``: what was acknowledged, or why not.
Outcome = Union[Enqueued, EnqueueError]


def _as_request(item: TaskLike) -> TaskRequest:
    if isinstance(item, TaskRequest):
        return item
    queue, task, args = item
    return TaskRequest(queue, task, args)


def parse_version(text: str) -> Optional[Tuple[int, int, int]]:
    """``"v2.10.0-beta.3"`` → ``(2, 10, 0)``; ``None`` when it is not a version."""
    core = text.strip().lstrip("v").split("-")[0].split("+")[0]
    parts = core.split(".")
    try:
        numbers = [int(part) for part in parts[:3]]
    except ValueError:
        return None
    if not numbers:
        return None
    while len(numbers) < 3:
        numbers.append(0)
    return numbers[0], numbers[1], numbers[2]


def check_server_version(reported: str, urls: str = "") -> Tuple[int, int, int]:
    """Raises :class:`~jetq.errors.ServerTooOld` for servers older than 2.10.0."""
    version = parse_version(reported)
    if version is None or version < MIN_SERVER_VERSION:
        raise ServerTooOld(urls, reported, ".".join(map(str, MIN_SERVER_VERSION)))
    return version


def _server_version(nc: NatsClient) -> str:
    info = getattr(nc, "_server_info", None)
    if isinstance(info, dict) and isinstance(info.get("version"), str):
        return str(info["version"])
    version = nc.connected_server_version
    return f"{version.major}.{version.minor}.{version.patch}"


def _tls_context(config: Config) -> Optional[ssl.SSLContext]:
    wants_tls = (
        config.tls_required
        or config.tls_ca is not None
        or config.tls_cert is not None
        or any(url.startswith("tls://") for url in config.server_urls())
    )
    if not wants_tls:
        return None
    context = ssl.create_default_context(cafile=config.tls_ca)
    if config.tls_cert is not None and config.tls_key is not None:
        context.load_cert_chain(config.tls_cert, config.tls_key)
    return context


async def connect_nats(config: Config) -> NatsClient:
    """Connects with ``config`` (credentials, TLS, timeouts) and checks the server version.

    The client reconnects on its own afterwards. The initial connection is bounded by
    ``config.connect_timeout``; a failure raises :class:`~jetq.errors.ConnectError`.
    """
    config.validate()
    urls = config.server_urls()
    last_errors: List[BaseException] = []

    async def on_error(err: Exception) -> None:
        last_errors.append(err)
        del last_errors[:-1]
        logger.warning("jetq: NATS connection error: %s", err)

    async def on_disconnected() -> None:
        if not nc.is_closed:  # a deliberate close() is not worth a warning
            logger.warning("jetq: disconnected from NATS; reconnecting")

    async def on_reconnected() -> None:
        logger.info("jetq: reconnected to NATS")

    options: Dict[str, Any] = {
        "servers": urls,
        "name": config.client_name,
        "connect_timeout": config.connect_timeout,
        "allow_reconnect": True,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": 0.5,
        "error_cb": on_error,
        "disconnected_cb": on_disconnected,
        "reconnected_cb": on_reconnected,
    }
    try:
        tls = _tls_context(config)
    except (OSError, ssl.SSLError) as err:
        raise errors.ConfigError("JETQ_NATS_TLS_CA/CERT/KEY", f"cannot load TLS files: {err}") from None
    if tls is not None:
        options["tls"] = tls
    if config.token is not None:
        options["token"] = config.token
    if config.user is not None:
        options["user"] = config.user
        options["password"] = config.password
    if config.nkey_seed is not None or config.creds_file is not None:
        try:
            import nkeys  # noqa: F401
        except ImportError:
            raise errors.ConfigError(
                "JETQ_NATS_NKEY_SEED/JETQ_NATS_CREDS_FILE",
                "nkey and credentials-file authentication need the nkeys package "
                "(pip install 'jetq-client[nkeys]')",
            ) from None
    if config.nkey_seed is not None:
        options["nkeys_seed_str"] = config.nkey_seed
    if config.creds_file is not None:
        options["user_credentials"] = config.creds_file

    joined = ",".join(urls)
    nc = NatsClient()
    try:
        await asyncio.wait_for(nc.connect(**options), timeout=config.connect_timeout)
    except asyncio.TimeoutError:
        await _close_quietly(nc)
        detail = f"; last error: {last_errors[-1]}" if last_errors else ""
        raise ConnectError(joined, f"no server accepted a connection within {config.connect_timeout:g}s{detail}") from None
    except Exception as err:  # nats-py raises several unrelated types here
        await _close_quietly(nc)
        raise ConnectError(joined, f"{type(err).__name__}: {err}") from err
    try:
        check_server_version(_server_version(nc), joined)
    except ServerTooOld:
        await _close_quietly(nc)
        raise
    return nc


async def _close_quietly(nc: NatsClient) -> None:
    try:
        await asyncio.wait_for(nc.close(), timeout=_CLOSE_TIMEOUT)
    except Exception:  # closing a half-open client must not hide the real error
        logger.debug("jetq: error while closing the NATS client", exc_info=True)


class _AckInbox:
    """One wildcard subscription receiving every publish ack of a producer, each attempt on
    its own reply subject, so acks can be awaited concurrently and a late ack of an abandoned
    attempt is ignored."""

    def __init__(self, nc: NatsClient) -> None:
        self._nc = nc
        self._prefix = ""
        self._next = 0
        self._waiting: Dict[str, "asyncio.Future[Msg]"] = {}
        self._subscription: Optional[Subscription] = None
        self._lock = asyncio.Lock()

    async def _start(self) -> None:
        async with self._lock:
            if self._subscription is None:
                self._prefix = f"{self._nc.new_inbox()}."
                self._subscription = await self._nc.subscribe(f"{self._prefix}*", cb=self._on_reply)

    async def reply_subject(self) -> Tuple[str, "asyncio.Future[Msg]"]:
        """A fresh reply subject and the future its reply resolves."""
        if self._subscription is None:
            await self._start()
        self._next += 1
        token = str(self._next)
        future: "asyncio.Future[Msg]" = asyncio.get_running_loop().create_future()
        self._waiting[token] = future
        future.add_done_callback(lambda _: self._waiting.pop(token, None))
        return self._prefix + token, future

    async def _on_reply(self, msg: Msg) -> None:
        future = self._waiting.pop(msg.subject[len(self._prefix) :], None)
        if future is not None and not future.done():
            future.set_result(msg)

    async def stop(self) -> None:
        for future in list(self._waiting.values()):
            future.cancel()
        if self._subscription is not None:
            try:
                await self._subscription.unsubscribe()
            except Exception:
                logger.debug("jetq: error while unsubscribing the ack inbox", exc_info=True)
            self._subscription = None


class AsyncProducer:
    """Enqueues tasks from asyncio code. Share one per process; it is safe to use from many
    tasks at once.

    ::

        async with await AsyncProducer.from_env() as producer:
            task_id = await producer.enqueue("emails", "send_email", {"to": "ada@example.com"})
    """

    def __init__(self, nc: NatsClient, config: Config, *, owns_connection: bool = True) -> None:
        """Wraps a connected client; prefer :meth:`connect`, :meth:`from_env` or
        :meth:`from_client`, which also check the server version."""
        config.validate()
        self._nc = nc
        self._config = config
        self._subjects = Subjects(config.prefix)
        self._owns_connection = owns_connection
        self._inbox = _AckInbox(nc)
        self._closed = False
        self._js = nc.jetstream(timeout=config.request_timeout)
        self._status = StatusStore(
            self._js,
            self._subjects,
            provision=config.provision,
            ttl=config.status_ttl,
            replicas=config.stream_replicas,
            artifacts_max_bytes=config.artifacts_max_bytes,
        )
        self._delayed_lock = asyncio.Lock()
        #: The task-type catalog: a type its workers track is tracked whatever the caller asked.
        self._catalog = Catalog(self._js, self._subjects)

    @classmethod
    async def connect(cls, config: Optional[Config] = None, **changes: Any) -> "AsyncProducer":
        """Connects with ``config`` (default: :class:`~jetq.config.Config` defaults), with any
        field overridden by keyword, e.g. ``AsyncProducer.connect(nats_url="nats://nats:4222")``."""
        base = config if config is not None else Config()
        if changes:
            base = base.replace(**changes)
        nc = await connect_nats(base)
        return cls(nc, base)

    @classmethod
    async def from_env(cls, environ: Optional[Dict[str, str]] = None, **changes: Any) -> "AsyncProducer":
        """Connects with ``JETQ_*`` settings from the environment."""
        return await cls.connect(Config.from_env(environ), **changes)

    @classmethod
    async def from_client(cls, nc: NatsClient, config: Optional[Config] = None) -> "AsyncProducer":
        """Uses an existing connected nats-py client (its server version is still checked).
        :meth:`close` leaves that client open."""
        check_server_version(_server_version(nc))
        return cls(nc, config if config is not None else Config(), owns_connection=False)

    @property
    def config(self) -> Config:
        """The configuration in use."""
        return self._config

    @property
    def subjects(self) -> Subjects:
        """The subjects this producer publishes to."""
        return self._subjects

    @property
    def client(self) -> NatsClient:
        """The underlying nats-py client, e.g. for health checks."""
        return self._nc

    @property
    def is_connected(self) -> bool:
        """True while the client is connected to a server."""
        return bool(self._nc.is_connected)

    async def __aenter__(self) -> "AsyncProducer":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Stops the producer and, if it opened the connection, closes it (bounded)."""
        if self._closed:
            return
        self._closed = True
        await self._inbox.stop()
        if self._owns_connection:
            await _close_quietly(self._nc)

    def prepare(
        self,
        queue: str,
        task: str,
        args: Any = None,
        *,
        key: Optional[str] = None,
        delay: Optional[Seconds] = None,
        at: Optional[_dt.datetime] = None,
        max_attempts: Optional[int] = None,
        timeout: Optional[Seconds] = None,
        traceparent: Optional[str] = None,
        tracestate: Optional[str] = None,
        track_status: bool = False,
        priority: Optional[PriorityLike] = None,
    ) -> Prepared:
        """Validates a task and builds its message without sending it
        (:func:`jetq.message.build_task_message` with this producer's prefix and maximum delay:
        the transactional outbox builds its rows with the same function)."""
        return build_task_message(
            self._subjects,
            queue,
            task,
            args,
            key=key,
            delay=delay,
            at=at,
            max_attempts=max_attempts,
            timeout=timeout,
            traceparent=traceparent,
            tracestate=tracestate,
            track_status=track_status,
            priority=priority,
            max_delay=self._config.max_delay_timedelta,
        )

    async def enqueue(
        self,
        queue: str,
        task: str,
        args: Any = None,
        *,
        key: Optional[str] = None,
        delay: Optional[Seconds] = None,
        at: Optional[_dt.datetime] = None,
        max_attempts: Optional[int] = None,
        timeout: Optional[Seconds] = None,
        traceparent: Optional[str] = None,
        tracestate: Optional[str] = None,
        track_status: bool = False,
        priority: Optional[PriorityLike] = None,
        unique: Optional[Unique] = None,
        limit_key: Optional[str] = None,
    ) -> str:
        """Enqueues one task and returns its id once JetStream acknowledged it.

        :param queue: queue name, ``[A-Za-z0-9_-]{1,64}``
        :param task: task name, same rule
        :param args: the task's arguments, any JSON-serializable value (usually a dict)
        :param key: idempotency key: becomes the task id; a second enqueue with the same key
            inside the duplicate window (2 minutes by default) is dropped by the server
        :param delay: run it no earlier than this long from now (seconds or ``timedelta``;
            Celery's ``countdown``): it waits in the delayed-task stream until a
            ``jetq-scheduler`` releases it, within about a second of its due time. Zero means now;
            above ``config.max_delay`` (30 days) raises :class:`~jetq.errors.DelayTooLong`
        :param at: run it no earlier than this aware ``datetime`` (Celery's ``eta``); a time
            already past enqueues it at once. Give ``delay`` or ``at``, not both
        :param max_attempts: overrides the task type's maximum attempts (>= 1)
        :param timeout: overrides the per-attempt timeout (seconds or ``timedelta``)
        :param traceparent: explicit W3C trace context; by default the current OpenTelemetry
            span's is used when ``opentelemetry-api`` is installed
        :param tracestate: W3C trace state, sent with ``traceparent``
        :param track_status: track this task's status (``Jetq-Track-Status: 1``) even if its
            worker-side type does not: the producer writes its ``queued`` record after the ack,
            workers record every transition, and :meth:`status` / :meth:`wait` /
            :meth:`cancel` follow it. A type the task-type catalog marks ``tracked`` (its
            workers track it) is tracked without it
        :param priority: the task's level within its queue (docs/PROTOCOL.md §12): ``"high"``,
            ``"normal"`` (the default, also None) or ``"low"``, or a :class:`jetq.Priority`.
            Workers pull ``high`` first; a ``high``/``low`` task goes to
            ``<prefix>.task.<queue>~high.<task>`` (``~low``) with ``Jetq-Priority``. Anything
            else raises :class:`~jetq.errors.InvalidPriority` before anything is sent
        :param unique: a unique key (:class:`jetq.flow.Unique`): while a task of this type holds
            it (as its scope says), enqueueing it again returns the holder's id instead of a new
            task (docs/FLOW_CONTROL.md)
        :param limit_key: the key the workers' per-key rate and concurrency limits count this
            task under (``Jetq-Limit-Key``, e.g. a tenant id)
        :raises EnqueueError: one of its subclasses, see :mod:`jetq.errors`
        """
        result = await self.enqueue_detailed(
            queue,
            task,
            args,
            key=key,
            delay=delay,
            at=at,
            max_attempts=max_attempts,
            timeout=timeout,
            traceparent=traceparent,
            tracestate=tracestate,
            track_status=track_status,
            priority=priority,
            unique=unique,
            limit_key=limit_key,
        )
        return result.id

    async def enqueue_detailed(
        self,
        queue: str,
        task: str,
        args: Any = None,
        *,
        key: Optional[str] = None,
        delay: Optional[Seconds] = None,
        at: Optional[_dt.datetime] = None,
        max_attempts: Optional[int] = None,
        timeout: Optional[Seconds] = None,
        traceparent: Optional[str] = None,
        tracestate: Optional[str] = None,
        track_status: bool = False,
        priority: Optional[PriorityLike] = None,
        unique: Optional[Unique] = None,
        limit_key: Optional[str] = None,
    ) -> Enqueued:
        """Like :meth:`enqueue`, returning the whole acknowledgement (id, stream sequence,
        duplicate flag, stream). With ``unique``, a duplicate names the holder's task."""
        prepared = self.prepare(
            queue,
            task,
            args,
            key=key,
            delay=delay,
            at=at,
            max_attempts=max_attempts,
            timeout=timeout,
            traceparent=traceparent,
            tracestate=tracestate,
            track_status=track_status,
            priority=priority,
        )
        if unique is not None or limit_key is not None:
            from .flow import enqueue_unique, flow_headers

            prepared, period_us = flow_headers(prepared, args, unique, limit_key)
            if unique is not None:
                return await enqueue_unique(self, prepared, period_us)
        return await self.publish_prepared(prepared)

    async def publish_prepared(self, prepared: Prepared) -> Enqueued:
        """Publishes a message built by :meth:`prepare` until it is acknowledged (tracked when
        the task-type catalog says its workers track the type)."""
        prepared = await self._track_if_cataloged(prepared)
        return await self._deliver(prepared, None)

    async def _track_if_cataloged(self, prepared: Prepared) -> Prepared:
        """``prepared``, tracked (``Jetq-Track-Status: 1``) when the caller did not ask but the
        task-type catalog says the type's workers track it (docs/PROTOCOL.md, "Task-type
        catalog"). Cached: at most one catalog read per type per 30 s; unknown changes nothing."""
        if prepared.tracked:
            return prepared
        tracked = self._catalog.cached_tracked(prepared.queue, prepared.task)
        if tracked is None:
            tracked = await self._catalog.tracked(prepared.queue, prepared.task)
        if not tracked:
            return prepared
        return dataclasses.replace(prepared, tracked=True, headers={**prepared.headers, TRACK_STATUS: "1"})

    async def _deliver(self, prepared: Prepared, first: Optional["asyncio.Future[Msg]"]) -> Enqueued:
        """Publishes until acknowledged; for a delayed task whose stream is missing, creates it
        and publishes again; for a tracked task, writes its ``queued`` record after the ack."""
        if first is None:
            await self._open_status_for(prepared)
        try:
            result = await self._publish_until_acked(prepared, first)
        except NoStream:
            # The first delayed task of this installation: create the delayed-task stream and
            # send again, as the Rust producer does. A producer that may not create streams
            # gets the original error.
            if not prepared.delayed or not await self._ensure_delayed_stream():
                raise
            result = await self._publish_until_acked(prepared, None)
        if prepared.tracked and not result.duplicate:
            await self._record_queued(prepared, result)
        return result

    async def _open_status_for(self, prepared: Prepared) -> None:
        """Opens (or creates) the status bucket **before** a tracked task is published: a worker
        whose own types are untracked does not create it, and one that finds it missing runs the
        task without status for 30 s. Best effort; a failure is reported by the ``queued``
        write after the ack."""
        if prepared.tracked:
            try:
                await self._status.kv(for_enqueue=True)
            except JetqError:
                pass

    async def _record_queued(self, prepared: Prepared, result: Enqueued) -> None:
        """Best effort: the task is queued whatever happens here (as in the Rust producer)."""
        try:
            await self._status.write_queued(
                prepared.id,
                prepared.queue,
                prepared.task,
                None if prepared.delayed else result.sequence,
                prepared.headers.get("Jetq-Enqueued-At"),
            )
        except JetqError as err:
            logger.warning("jetq: task %s queued, but its queued status was not recorded: %s", prepared.id, err)

    def delayed_stream_config(self, replicas: int = 1, duplicate_window: float = 120.0) -> StreamConfig:
        """The delayed-task stream (docs/PROTOCOL.md §7) as the Rust side creates it: Limits
        retention (the scheduler deletes what it released), file storage, ``discard: new``, no
        max age (a waiting task never expires), direct get on."""
        return StreamConfig(
            name=self._subjects.delayed_stream,
            description="jetq delayed tasks waiting for their due time",
            subjects=[self._subjects.all_delayed],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            discard=DiscardPolicy.NEW,
            max_msgs=-1,
            max_bytes=-1,
            duplicate_window=duplicate_window,
            num_replicas=replicas,
            allow_direct=True,
        )

    async def _ensure_delayed_stream(self) -> bool:
        """Creates the delayed-task stream with the task stream's replicas and duplicate window
        (when the task stream can be read); False, logged, when that is not possible."""
        async with self._delayed_lock:
            try:
                await self._js.stream_info(self._subjects.delayed_stream)
                return True  # another enqueue (or a scheduler) created it meanwhile
            except nats.js.errors.NotFoundError:
                pass
            except Exception as err:
                logger.warning("jetq: cannot read the delayed-task stream: %s", err)
                return False
            replicas, window = 1, 120.0
            try:
                info = await self._js.stream_info(self._subjects.tasks_stream)
                replicas = info.config.num_replicas or replicas
                window = info.config.duplicate_window or window
            except Exception:
                logger.debug("jetq: task stream unreadable; delayed stream with defaults", exc_info=True)
            try:
                await self._js.add_stream(self.delayed_stream_config(replicas, window))
            except nats.js.errors.BadRequestError as err:
                if err.err_code != 10058:  # 10058: it exists already
                    logger.warning("jetq: cannot create the delayed-task stream: %s", err)
                    return False
            except Exception as err:
                logger.warning("jetq: cannot create the delayed-task stream: %s", err)
                return False
            return True

    async def enqueue_many(self, tasks: Iterable[TaskLike], *, window: Optional[int] = None) -> List[Outcome]:
        """Enqueues many tasks, pipelined: publishes go out in input order while up to
        ``window`` (default ``config.enqueue_window``) acks are outstanding.

        Returns one result per task, in input order: an :class:`Enqueued`, or the
        :class:`~jetq.errors.EnqueueError` that task got. One task's failure does not stop the
        others.
        """
        limit = max(1, window if window is not None else self._config.enqueue_window)
        results: List[Optional[Outcome]] = []
        in_flight: "set[asyncio.Task[Tuple[int, Outcome]]]" = set()

        async def finish(index: int, prepared: Prepared, first: Optional["asyncio.Future[Msg]"]) -> Tuple[int, Outcome]:
            try:
                return index, await self._deliver(prepared, first)
            except EnqueueError as err:
                return index, err

        async def collect(block_until_below: int) -> None:
            while len(in_flight) >= block_until_below and in_flight:
                done, _ = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                for finished in done:
                    in_flight.discard(finished)
                    index, outcome = finished.result()
                    results[index] = outcome

        try:
            for index, item in enumerate(tasks):
                results.append(None)
                try:
                    request = _as_request(item)
                    prepared = self.prepare(
                        request.queue,
                        request.task,
                        request.args,
                        key=request.key,
                        delay=request.delay,
                        at=request.at,
                        max_attempts=request.max_attempts,
                        timeout=request.timeout,
                        traceparent=request.traceparent,
                        tracestate=request.tracestate,
                        track_status=request.track_status,
                        priority=request.priority,
                    )
                except EnqueueError as err:
                    results[index] = err
                    continue
                prepared = await self._track_if_cataloged(prepared)
                await collect(limit)
                await self._open_status_for(prepared)
                # Send in input order now; only the ack waits (and any resend) run concurrently.
                try:
                    first: Optional["asyncio.Future[Msg]"] = await self._send(prepared, attempt=1)
                except Timeout:
                    first = None  # not sent in time: the retry loop tries again
                except EnqueueError as err:
                    results[index] = err
                    continue
                in_flight.add(asyncio.ensure_future(finish(index, prepared, first)))
            await collect(1)
        finally:
            for pending in in_flight:
                pending.cancel()
        # Every slot is filled above; a missing one would be a bug in this loop, so say so.
        return [
            outcome if outcome is not None else Rejected("(batch)", "internal error: missing result")
            for outcome in results
        ]

    async def status(self, id: str) -> Optional[TaskStatus]:
        """The status record of task ``id`` (docs/PROTOCOL.md §8); None if there is none
        (unknown id, untracked task, or expired after ``JETQ_STATUS_TTL``).

        :raises StatusError: :class:`~jetq.errors.StatusUnavailable` (no bucket),
            :class:`~jetq.errors.StatusReadError`, :class:`~jetq.errors.StatusCorrupt`
        """
        self._check_open("(status)")
        return await self._status.status(id)

    async def wait(self, id: str, timeout: float) -> TaskStatus:
        """Waits until task ``id`` reaches a terminal state (``succeeded``, ``failed``, ``dead``,
        ``cancelled``) and returns that record. A failed task is returned too: look at
        ``state``. Follows a KV watch on the task's key, so it returns as soon as the worker's
        write lands, without polling.

        :raises WaitTimeout: after ``timeout`` seconds (everything included), with the last
            record seen in ``.last``
        """
        self._check_open("(wait)")
        if not timeout > 0:
            raise ValueError(f"timeout must be greater than zero, not {timeout!r}")
        deadline = asyncio.get_running_loop().time() + timeout
        try:
            await asyncio.wait_for(self._status.kv(), timeout=timeout)
        except asyncio.TimeoutError:
            raise WaitTimeout(id, timeout, None) from None
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            raise WaitTimeout(id, timeout, None)
        try:
            return await self._status.wait(id, remaining)
        except WaitTimeout as err:
            raise WaitTimeout(id, timeout, err.last) from None

    def watch(self, id: str) -> AsyncIterator[TaskStatus]:
        """Every version of task ``id``'s record: the current one (if any), then each change as
        the server pushes it (states and progress), ending after a terminal state. For a
        progress bar or a server-sent-events endpoint; bound it yourself (``asyncio.timeout``).

        ::

            async for status in producer.watch(task_id):
                print(status.state, status.progress)
        """
        self._check_open("(watch)")
        return self._status.watch(id)

    async def cancel(self, id: str) -> CancelOutcome:
        """Cancels task ``id``: a task that has not started (queued, or waiting to retry)
        becomes ``cancelled`` at once and is dropped, not run, when a worker pulls it; a running
        task's handler is told and the task ends ``cancelled`` when the handler returns; a
        finished task is left as it is. Only tracked tasks can be cancelled here; an untracked
        running task is cancelled by asking its worker (:func:`jetq.control.cancel_running`).

        :raises StatusNotFound: the task has no record
        """
        self._check_open("(cancel)")
        return await self._status.cancel(id)

    async def artifact_to(self, id: str, name: str, file: IO[bytes], *, timeout: float = 300.0) -> int:
        """Streams artifact ``name`` of task ``id`` (object ``<id>/<name>`` of the artifact store,
        e.g. the example worker's ``export.csv``) into ``file`` chunk by chunk, checks its
        SHA-256 digest, and returns its size. Bounded by ``timeout`` seconds.

        :raises ArtifactNotFound: no such artifact (or no artifact store)
        :raises InvalidArtifactName: a name the Rust side would refuse
        :raises StatusReadError: reading failed, timed out, or the digest did not match
        """
        self._check_open("(artifact)")
        _validate_artifact_name(name)
        try:
            return await asyncio.wait_for(self._read_artifact(id, name, file), timeout=timeout)
        except asyncio.TimeoutError:
            raise StatusReadError(id, f"artifact {name} was not read within {timeout:g}s") from None

    async def artifact(self, id: str, name: str, *, timeout: float = 300.0) -> bytes:
        """Artifact ``name`` of task ``id`` as bytes (in memory: prefer :meth:`artifact_to` for
        large files)."""
        buffer = io.BytesIO()
        await self.artifact_to(id, name, buffer, timeout=timeout)
        return buffer.getvalue()

    async def _read_artifact(self, id: str, name: str, file: IO[bytes], bucket: Optional[str] = None) -> int:
        """Reads object ``<id>/<name>`` as the object store protocol lays it out: its metadata
        by direct get (last message on ``$O.<bucket>.M.<base64url name>``), then its chunks
        (``$O.<bucket>.C.<nuid>``) through an ordered consumer. Done here rather than with
        nats-py's object store, which asks with ``STREAM.MSG.GET`` — a right the least-privilege
        producer user (k8s/nats/permissions.conf) does not have, while direct gets it has.
        ``bucket``: another object store than the artifact store (chord results)."""
        bucket = bucket or self._subjects.artifacts_bucket
        stream = f"OBJ_{bucket}"
        encoded = base64.urlsafe_b64encode(f"{id}/{name}".encode("utf-8")).decode()
        try:
            meta = await self._js.get_msg(stream, subject=f"$O.{bucket}.M.{encoded}", direct=True)
        except (nats.js.errors.NotFoundError, nats.errors.NoRespondersError):
            raise ArtifactNotFound(id, name) from None  # no such object, or no artifact store
        except Exception as err:
            raise StatusReadError(id, f"cannot read artifact {name}: {type(err).__name__}: {err}") from err
        try:
            info = json.loads(meta.data or b"")
            nuid, size, digest = str(info["nuid"]), int(info.get("size", 0)), str(info.get("digest", ""))
        except (ValueError, KeyError, TypeError) as err:
            raise StatusReadError(id, f"artifact {name} has unreadable metadata: {err}") from None
        if info.get("deleted"):
            raise ArtifactNotFound(id, name)
        expected = base64.urlsafe_b64decode(digest.split("=", 1)[1]) if "=" in digest else None
        hasher = hashlib.sha256()
        written = 0
        if size > 0:
            chunks: "asyncio.Queue[Msg]" = asyncio.Queue()

            async def on_chunk(msg: Msg) -> None:
                await chunks.put(msg)

            try:
                subscription = await self._js.subscribe(
                    f"$O.{bucket}.C.{nuid}", stream=stream, cb=on_chunk, ordered_consumer=True, inactive_threshold=30.0
                )
            except Exception as err:
                raise StatusReadError(id, f"cannot read artifact {name}: {type(err).__name__}: {err}") from err
            loop = asyncio.get_running_loop()
            try:
                while True:
                    msg = await chunks.get()
                    data = msg.data or b""
                    hasher.update(data)
                    written += len(data)
                    await loop.run_in_executor(None, file.write, data)
                    if msg.metadata.num_pending == 0:
                        break
            finally:
                try:
                    await subscription.unsubscribe()
                except Exception:
                    logger.debug("jetq: error while stopping an artifact read", exc_info=True)
        if written != size or (expected is not None and hasher.digest() != expected):
            raise StatusReadError(id, f"artifact {name} does not match its digest or size ({written} of {size} bytes)")
        return written

    def _check_open(self, task: str) -> None:
        if self._closed:
            raise ProducerClosed(task)

    async def _send(self, prepared: Prepared, attempt: int) -> "asyncio.Future[Msg]":
        """Sends one publish attempt; returns the future of its ack."""
        self._check_open(prepared.task)
        size = len(prepared.payload) + header_block_size(prepared.headers)
        limit = self._nc.max_payload
        if limit and size > limit:
            raise TooLarge(prepared.task, size, limit)
        reply, future = await self._inbox.reply_subject()
        try:
            await self._nc.publish(
                prepared.subject, prepared.payload, reply=reply, headers=dict(prepared.headers)
            )
        except nats.errors.MaxPayloadError:
            future.cancel()
            raise TooLarge(prepared.task, size, limit) from None
        except (nats.errors.ConnectionClosedError, nats.errors.ConnectionDrainingError):
            future.cancel()
            raise NotConnected(prepared.task, attempt) from None
        except nats.errors.OutboundBufferLimitError:
            future.cancel()
            raise NotConnected(prepared.task, attempt) from None
        return future

    async def _publish_until_acked(
        self, prepared: Prepared, first: Optional["asyncio.Future[Msg]"]
    ) -> Enqueued:
        """Publishes and awaits the ack, resending with the same id (docs/PROTOCOL.md §3,
        "Publish errors"). ``first`` is the ack future of a send the caller already made.

        - An ack that times out leaves the outcome unknown; the duplicate window makes a resend
          safe. At most ``publish_attempts`` such sends.
        - No responders or a JetStream 503 stored nothing: no stream leader for a moment (an
          election) or the server cannot store right now. Resent after :func:`retry_pause`
          until the retry budget, ``request_timeout × publish_attempts`` from the first send,
          is spent; these sends do not use up attempts.
        - No responders because no stream captures the subject (the server says so when asked
          once): :class:`NoStream` at once.
        """
        attempts = self._config.publish_attempts
        ack_timeout = self._config.request_timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ack_timeout * attempts
        attempt = 1  # sends whose outcome was unknown, the one in flight included
        retries = 0  # sends after replies that stored nothing
        looked_for_stream = False
        pending = first
        while True:
            future = pending if pending is not None else await self._send(prepared, attempt)
            pending = None
            try:
                reply = await asyncio.wait_for(future, timeout=ack_timeout)
            except asyncio.TimeoutError:
                if self._closed:
                    raise ProducerClosed(prepared.task) from None
                logger.debug(
                    "jetq: no ack for task %s (id %s) within %ss, attempt %d of %d",
                    prepared.task, prepared.id, ack_timeout, attempt, attempts,
                )  # fmt: skip
                if attempt >= attempts or loop.time() >= deadline:
                    break
                attempt += 1
                continue
            except asyncio.CancelledError:
                if self._closed:
                    raise ProducerClosed(prepared.task) from None
                raise
            try:
                return self._read_ack(prepared, reply, attempt + retries)
            except (NoStream, Rejected) as err:
                if not is_unavailable(err):
                    raise
                if isinstance(err, NoStream) and not looked_for_stream:
                    looked_for_stream = True
                    if await self._stream_missing(prepared.subject, min(ack_timeout, 1.0)):
                        raise
                pause = retry_pause(retries, deadline - loop.time())
                if pause is None:
                    raise
                retries += 1
                await asyncio.sleep(pause)
        if self._nc.is_connected:
            raise Timeout(prepared.task, prepared.id, ack_timeout, attempts)
        raise NotConnected(prepared.task, attempts)

    async def _stream_missing(self, subject: str, wait: float) -> bool:
        """True only when the server says no stream captures ``subject`` (a task's or a delayed
        task's): a publish that found no responders is that or an election. Any other answer
        (a stream's name, an error, no answer within ``wait``, no permission to ask) means it
        exists or may."""
        try:
            await asyncio.wait_for(self._js.find_stream_name_by_subject(subject), timeout=wait)
        except nats.js.errors.NotFoundError:
            return True
        except Exception:  # noqa: BLE001 - unknown: keep resending within the budget
            return False
        return False

    def _read_ack(self, prepared: Prepared, reply: Msg, attempt: int = 1) -> Enqueued:
        headers = reply.headers or {}
        status = headers.get("Status")
        if status == "503":
            raise NoStream(prepared.subject)
        try:
            body = json.loads(reply.data) if reply.data else {}
        except ValueError:
            raise Rejected(prepared.task, f"unreadable publish ack: {reply.data[:200]!r}", code=None) from None
        if not isinstance(body, dict):
            raise Rejected(prepared.task, f"unexpected publish ack: {reply.data[:200]!r}")
        error = body.get("error")
        if isinstance(error, dict):
            raise self._classify(prepared, error)
        if status is not None:
            raise Rejected(prepared.task, headers.get("Description", "status reply"), code=_int(status))
        try:
            return Enqueued(
                id=prepared.id,
                sequence=int(body["seq"]),
                duplicate=is_duplicate(bool(body.get("duplicate", False)), attempt, prepared.generated_id),
                stream=str(body.get("stream", "")),
            )
        except (KeyError, TypeError, ValueError):
            raise Rejected(prepared.task, f"publish ack without a sequence: {reply.data[:200]!r}") from None

    def _classify(self, prepared: Prepared, error: Dict[str, Any]) -> EnqueueError:
        code = _int(error.get("code"))
        err_code = _int(error.get("err_code"))
        description = str(error.get("description", ""))
        if err_code == STREAM_STORE_FAILED and "maximum" in description:
            return StreamFull(prepared.task, description)
        if err_code == MESSAGE_EXCEEDS_MAXIMUM:
            size = len(prepared.payload) + header_block_size(prepared.headers)
            return TooLarge(prepared.task, size, None, description)
        return Rejected(prepared.task, description, code=code, err_code=err_code)


_ARTIFACT_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")


def _validate_artifact_name(name: str) -> None:
    if not isinstance(name, str) or not 1 <= len(name) <= 128 or name.startswith(".") or not set(name) <= _ARTIFACT_CHARS:
        raise InvalidArtifactName(str(name))


def is_duplicate(acked_duplicate: bool, attempt: int, generated_id: bool) -> bool:
    """Whether an enqueue is reported as a duplicate, as the Rust producer decides it: a fresh
    id of ours can only collide with our own earlier attempt of the same publish (whose ack
    timed out but which the server stored), so a retried publish (``attempt > 1``) of a
    generated id is this task, not a duplicate. With the caller's key it is a real duplicate.

    >>> is_duplicate(True, 2, generated_id=True), is_duplicate(True, 2, generated_id=False)
    (False, True)
    """
    ours = attempt > 1 and generated_id
    return acked_duplicate and not ours


def is_unavailable(err: EnqueueError) -> bool:
    """True when a publish stored nothing and may succeed shortly: no responders (503) or a
    JetStream error with code 503 other than a failed store (err_code 10077: a full stream or
    exhausted resources, which a resend does not cure) — resend with the same id (as the Rust
    producer does)."""
    if isinstance(err, NoStream):
        return True
    return isinstance(err, Rejected) and err.code == 503 and err.err_code != STREAM_STORE_FAILED


#: The first pause after a reply that stored nothing; each later one doubles, up to
#: :data:`MAX_RETRY_PAUSE` seconds.
FIRST_RETRY_PAUSE = 0.25
MAX_RETRY_PAUSE = 2.0


def retry_pause(retry: int, remaining: float) -> Optional[float]:
    """Seconds before resend number ``retry`` (0-based) after :func:`is_unavailable`, when
    ``remaining`` seconds of the retry budget are left: 0.25 doubling to at most 2, cut to what
    remains so that the last resend happens as the budget ends; ``None`` when nothing remains
    (the conformance vectors' ``retry_pauses`` pin this schedule).

    >>> [retry_pause(n, 10.0) for n in range(5)]
    [0.25, 0.5, 1.0, 2.0, 2.0]
    >>> retry_pause(3, 0.25), retry_pause(3, 0.0)
    (0.25, None)
    """
    if remaining <= 0:
        return None
    return min(FIRST_RETRY_PAUSE * (1 << min(retry, 8)), MAX_RETRY_PAUSE, remaining)


def _int(value: Any) -> Optional[int]:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def results_or_raise(results: Sequence[Outcome]) -> List[Enqueued]:
    """The :class:`Enqueued` of every result of ``enqueue_many``, or the first error raised."""
    for outcome in results:
        if isinstance(outcome, EnqueueError):
            raise outcome
    return [outcome for outcome in results if isinstance(outcome, Enqueued)]
