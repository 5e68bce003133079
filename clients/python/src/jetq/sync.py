"""The blocking producer for synchronous code (Django and Flask views, scripts, Celery-free
workers): :class:`Producer`.

It runs an :class:`~jetq.producer.AsyncProducer` on an event loop in its own daemon thread and
waits for each call with a bounded timeout, so it is safe to share between the threads of a web
server. The task is validated, and the OpenTelemetry context captured, in the **calling** thread,
so the trace of the request that enqueued the task is the one continued by the worker.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as _dt
import os
import threading
import time
import dataclasses
import logging
from typing import IO, Any, AsyncIterator, Callable, Coroutine, Dict, Iterable, Iterator, List, Optional, TypeVar

from .config import Config
from .errors import ConnectError, JetqError, NotConnected, ProducerClosed, StatusReadError, Timeout, WaitTimeout
from .producer import AsyncProducer, Enqueued, Outcome, TaskLike, _as_request
from .flow import Unique, enqueue_unique, flow_headers
from .priority import PriorityLike
from .protocol import Prepared, Seconds, Subjects
from .status import CAS_ROUNDS, CancelOutcome, TaskStatus
from .tracing import current_trace_context

__all__ = ["Producer"]

logger = logging.getLogger("jetq")

T = TypeVar("T")

#: Extra seconds granted on top of the computed bound of a call, for scheduling latency.
_SLACK = 5.0


async def _next(updates: AsyncIterator[TaskStatus], timeout: float) -> Optional[TaskStatus]:
    """The next status of a watch, or None after ``timeout`` seconds (the wait is cancelled,
    which ends the watch and stops its consumer)."""
    try:
        return await asyncio.wait_for(_anext(updates), timeout=timeout)
    except asyncio.TimeoutError:
        return None


async def _anext(updates: AsyncIterator[TaskStatus]) -> TaskStatus:
    return await updates.__anext__()


async def _close(updates: AsyncIterator[TaskStatus]) -> None:
    close = getattr(updates, "aclose", None)
    if close is not None:
        await close()


class Producer:
    """Enqueues tasks from synchronous code.

    ::

        producer = Producer.from_env()
        task_id = producer.enqueue("emails", "send_email", {"to": "ada@example.com"})

    Create one per process and reuse it (connecting takes a round trip). After a ``fork``
    (gunicorn's ``--preload``), create a new one in the child: a producer refuses to be used
    from a process other than the one that created it.
    """

    def __init__(self, config: Optional[Config] = None, **changes: Any) -> None:
        """Starts the loop thread and connects (bounded by ``connect_timeout``).

        :raises ConnectError: no server accepted the connection, or it is too old
        :raises ConfigError: the configuration is unusable
        """
        base = config if config is not None else Config()
        if changes:
            base = base.replace(**changes)
        base.validate()
        self._config = base
        self._subjects = Subjects(base.prefix)
        self._pid = os.getpid()
        self._closed = False
        self._close_lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name="jetq-producer", daemon=True)
        self._thread.start()
        try:
            self._async: AsyncProducer = self._call(
                AsyncProducer.connect(base),
                base.connect_timeout + _SLACK,
                lambda: ConnectError(base.nats_url, "the connection attempt did not finish in time"),
            )
        except BaseException:
            self._stop_loop()
            raise

    @classmethod
    def from_env(cls, environ: Optional[Dict[str, str]] = None, **changes: Any) -> "Producer":
        """Connects with ``JETQ_*`` settings from the environment (see :mod:`jetq.config`)."""
        return cls(Config.from_env(environ), **changes)

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def _call(
        self, coroutine: Coroutine[Any, Any, T], bound: float, on_timeout: Callable[[], JetqError]
    ) -> T:
        """Runs ``coroutine`` on the loop thread and waits at most ``bound`` seconds."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result(timeout=bound)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise on_timeout() from None

    def _check_usable(self, task: str) -> None:
        if self._closed:
            raise ProducerClosed(task)
        if os.getpid() != self._pid:
            raise NotConnected(
                task,
                0,
                "this jetq Producer was created in another process (before a fork); "
                "create a new Producer in each worker process",
            )

    @property
    def config(self) -> Config:
        """The configuration in use."""
        return self._config

    @property
    def subjects(self) -> Subjects:
        """The subjects this producer publishes to."""
        return self._subjects

    @property
    def is_connected(self) -> bool:
        """True while the client is connected to a server."""
        return not self._closed and self._async.is_connected

    def _bound(self, tasks: int = 1) -> float:
        """The longest a call for ``tasks`` tasks may take: every attempt's ack timeout for each
        window's worth, plus slack."""
        config = self._config
        windows = max(1, -(-tasks // config.enqueue_window))
        return windows * config.publish_attempts * config.request_timeout + _SLACK

    def enqueue(
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

        Arguments as :meth:`jetq.AsyncProducer.enqueue` (``unique`` and ``limit_key`` included:
        docs/FLOW_CONTROL.md); errors are the subclasses of :class:`~jetq.errors.EnqueueError`.
        """
        return self.enqueue_detailed(
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
        ).id

    def enqueue_detailed(
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
        """Like :meth:`enqueue`, returning the whole acknowledgement (with ``unique``, a
        duplicate names the holder's task)."""
        self._check_usable(task)
        # Validate and capture the trace context here, in the caller's thread and context.
        prepared = self._async.prepare(
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
            prepared, period_us = flow_headers(prepared, args, unique, limit_key)
            if unique is not None:
                config = self._config
                return self._call(
                    enqueue_unique(self._async, prepared, period_us),
                    # Taking, checking and confirming the key: a few KV requests more.
                    self._bound() + 3 * config.request_timeout,
                    lambda: Timeout(prepared.task, prepared.id, config.request_timeout, config.publish_attempts),
                )
        return self.publish_prepared(prepared)

    def publish_prepared(self, prepared: Prepared) -> Enqueued:
        """Publishes a message built by :meth:`jetq.AsyncProducer.prepare`."""
        self._check_usable(prepared.task)
        config = self._config
        return self._call(
            self._async.publish_prepared(prepared),
            self._bound(),
            lambda: Timeout(prepared.task, prepared.id, config.request_timeout, config.publish_attempts),
        )

    def enqueue_many(self, tasks: Iterable[TaskLike], *, window: Optional[int] = None) -> List[Outcome]:
        """Enqueues many tasks, pipelined through a bounded window of outstanding acks.

        Returns one result per task in input order: an :class:`~jetq.Enqueued` or the
        :class:`~jetq.errors.EnqueueError` of that task.
        """
        self._check_usable("(batch)")
        requests = [_as_request(item) for item in tasks]
        # Capture the caller's trace context (the loop thread has its own) for the tasks that
        # do not carry one.
        traceparent, tracestate = current_trace_context()
        if traceparent is not None:
            requests = [
                r
                if r.traceparent is not None
                else dataclasses.replace(r, traceparent=traceparent, tracestate=tracestate)
                for r in requests
            ]
        config = self._config
        effective = max(1, window if window is not None else config.enqueue_window)
        windows = max(1, -(-len(requests) // effective))
        bound = windows * config.publish_attempts * config.request_timeout + _SLACK
        return self._call(
            self._async.enqueue_many(requests, window=window),
            bound,
            lambda: Timeout("(batch)", "(batch)", config.request_timeout, config.publish_attempts),
        )

    def _status_bound(self) -> float:
        """The longest a status read or cancel may take: every compare-and-set round's read and
        write, plus opening (or creating) the bucket, plus slack."""
        return (2 * CAS_ROUNDS + 4) * self._config.request_timeout + _SLACK

    def status(self, id: str) -> Optional[TaskStatus]:
        """The status record of task ``id``, or None; see :meth:`jetq.AsyncProducer.status`."""
        self._check_usable("(status)")
        return self._call(
            self._async.status(id), self._status_bound(), lambda: StatusReadError(id, "no answer in time")
        )

    def wait(self, id: str, timeout: float) -> TaskStatus:
        """Blocks until task ``id`` reaches a terminal state and returns that record;
        :class:`~jetq.errors.WaitTimeout` after ``timeout`` seconds. See
        :meth:`jetq.AsyncProducer.wait`."""
        self._check_usable("(wait)")
        return self._call(self._async.wait(id, timeout), timeout + _SLACK, lambda: WaitTimeout(id, timeout, None))

    def watch(self, id: str, timeout: float) -> Iterator[TaskStatus]:
        """Every version of task ``id``'s record — the current one (if any), then each change
        as the server pushes it (states and progress) — ending after a terminal state, or
        quietly once ``timeout`` seconds have passed (look at the last state to tell which).
        For a progress page or a server-sent-events response::

            for status in producer.watch(task_id, timeout=300):
                yield f"data: {status.state} {status.progress}\n\n"
        """
        self._check_usable("(watch)")
        deadline = time.monotonic() + timeout
        updates = self._async.watch(id)
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                try:
                    status = self._call(_next(updates, remaining), remaining + _SLACK, lambda: WaitTimeout(id, timeout, None))
                except StopAsyncIteration:
                    return
                if status is None:  # the time ran out while waiting for the next change
                    return
                yield status
        finally:
            if not self._closed:
                try:
                    self._call(_close(updates), _SLACK, lambda: StatusReadError(id, "watch did not stop"))
                except Exception:  # stopping a watch must not hide what ended it
                    logger.debug("jetq: error while closing a status watch", exc_info=True)

    def cancel(self, id: str) -> CancelOutcome:
        """Cancels task ``id``; see :meth:`jetq.AsyncProducer.cancel`."""
        self._check_usable("(cancel)")
        return self._call(
            self._async.cancel(id), self._status_bound(), lambda: StatusReadError(id, "no answer in time")
        )

    def artifact_to(self, id: str, name: str, file: IO[bytes], *, timeout: float = 300.0) -> int:
        """Streams artifact ``name`` of task ``id`` into ``file`` (digest checked) and returns its
        size; see :meth:`jetq.AsyncProducer.artifact_to`. The writes happen on a worker thread."""
        self._check_usable("(artifact)")
        return self._call(
            self._async.artifact_to(id, name, file, timeout=timeout),
            timeout + _SLACK,
            lambda: StatusReadError(id, f"artifact {name} was not read within {timeout:g}s"),
        )

    def artifact(self, id: str, name: str, *, timeout: float = 300.0) -> bytes:
        """Artifact ``name`` of task ``id`` as bytes; see :meth:`jetq.AsyncProducer.artifact`."""
        self._check_usable("(artifact)")
        return self._call(
            self._async.artifact(id, name, timeout=timeout),
            timeout + _SLACK,
            lambda: StatusReadError(id, f"artifact {name} was not read within {timeout:g}s"),
        )

    def close(self) -> None:
        """Closes the connection and stops the loop thread (bounded). Idempotent."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        if os.getpid() == self._pid:
            try:
                self._call(
                    self._async.close(), _SLACK * 2, lambda: NotConnected("(close)", 0, "close timed out")
                )
            except JetqError:
                pass
        self._stop_loop()

    def _stop_loop(self) -> None:
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=_SLACK)
        if not self._thread.is_alive() and not self._loop.is_closed():
            self._loop.close()

    def __enter__(self) -> "Producer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
