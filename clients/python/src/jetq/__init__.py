"""jetq: enqueue tasks onto NATS JetStream for jetq's Rust workers.

A small producer that speaks docs/PROTOCOL.md exactly, on the official ``nats-py`` client::

    import jetq

    producer = jetq.Producer.from_env()  # JETQ_NATS_URL, JETQ_PREFIX, credentials...
    task_id = producer.enqueue("emails", "send_email", {"to": "ada@example.com"})

- :class:`Producer` (blocking, for Django views) and :class:`AsyncProducer` (asyncio);
- ``enqueue`` returns the task id only after JetStream acknowledged the task;
- ``key=`` gives server-side deduplication (idempotent enqueue);
- ``enqueue_many`` pipelines publishes through a bounded window of acks;
- ``delay=`` / ``at=`` enqueue delayed tasks (released by ``jetq-scheduler``, up to 30 days);
- ``priority="high"`` / ``"low"`` (or :class:`Priority`) puts a task on its queue's level;
- ``track_status=True`` tracks a task; ``status``, ``wait`` and ``cancel`` follow it;
- failures are typed (:mod:`jetq.errors`), the same cases as the Rust producer's;
- the current OpenTelemetry span's W3C trace context is sent along when
  ``opentelemetry-api`` is installed;
- :class:`jetq.outbox.Outbox` writes a task into the application's own database transaction
  (the transactional outbox, relayed by ``jetq-relay``); :mod:`jetq.django` does it for Django,
  along with ``enqueue_on_commit``;
- :func:`verify_push` checks the signature of a task pushed over HTTP by ``jetq-push``
  (:mod:`jetq.push`).
"""

from .config import Config
from .errors import (
    ArtifactNotFound,
    ConfigError,
    ConnectError,
    DelayTooLong,
    EnqueueError,
    InvalidArtifactName,
    InvalidKey,
    InvalidName,
    InvalidOption,
    InvalidPriority,
    JetqError,
    NoStream,
    NotConnected,
    NotInTransaction,
    NotSupported,
    OutboxMissing,
    ProducerClosed,
    Rejected,
    SerializeError,
    ServerTooOld,
    StatusCorrupt,
    StatusError,
    StatusNotFound,
    StatusReadError,
    StatusUnavailable,
    StatusWriteError,
    StreamFull,
    Timeout,
    TooLarge,
    WaitTimeout,
)
from .metrics_history import MinuteRecord, metrics_history
from .names import validate_key, validate_name
from .producer import AsyncProducer, Enqueued, TaskRequest, results_or_raise
from .flow import InvalidFlowOption, Unique, UniqueUnavailable
from .priority import Priority
from .protocol import Prepared, Subjects
from .push import (
    MalformedPushHeader,
    MissingPushHeader,
    PushSignatureError,
    PushSignatureMismatch,
    StalePush,
    push_headers,
    sign_push,
    signing_keys_from_env,
    verified_push,
    verify_push,
)
from .status import CancelOutcome, Progress, TaskState, TaskStatus, Transition
from .sync import Producer
from .workflows import (
    Batch,
    BatchExists,
    BatchHandle,
    BatchStatus,
    Chain,
    ChainExists,
    ChainHandle,
    ChainStatus,
    InvalidWorkflow,
    Member,
    MembersNotEnqueued,
    UnknownCallback,
    WorkflowStoreError,
)

__version__ = "0.1.0"

__all__ = [
    "AsyncProducer",
    "Producer",
    "Config",
    "Enqueued",
    "TaskRequest",
    "Unique",
    "InvalidFlowOption",
    "UniqueUnavailable",
    "Prepared",
    "Subjects",
    "Priority",
    "TaskState",
    "TaskStatus",
    "Progress",
    "Transition",
    "CancelOutcome",
    "results_or_raise",
    "MinuteRecord",
    "metrics_history",
    "validate_name",
    "validate_key",
    "JetqError",
    "ConfigError",
    "ConnectError",
    "ServerTooOld",
    "EnqueueError",
    "InvalidName",
    "InvalidKey",
    "InvalidOption",
    "InvalidPriority",
    "SerializeError",
    "NotSupported",
    "DelayTooLong",
    "TooLarge",
    "StreamFull",
    "NoStream",
    "NotConnected",
    "NotInTransaction",
    "OutboxMissing",
    "ProducerClosed",
    "Timeout",
    "Rejected",
    "StatusError",
    "StatusUnavailable",
    "StatusReadError",
    "StatusWriteError",
    "StatusCorrupt",
    "StatusNotFound",
    "WaitTimeout",
    "InvalidArtifactName",
    "ArtifactNotFound",
    "verify_push",
    "sign_push",
    "push_headers",
    "signing_keys_from_env",
    "verified_push",
    "PushSignatureError",
    "MissingPushHeader",
    "MalformedPushHeader",
    "StalePush",
    "PushSignatureMismatch",
    "Batch",
    "BatchHandle",
    "BatchStatus",
    "Member",
    "Chain",
    "ChainHandle",
    "ChainStatus",
    "BatchExists",
    "ChainExists",
    "InvalidWorkflow",
    "MembersNotEnqueued",
    "UnknownCallback",
    "WorkflowStoreError",
    "__version__",
]
