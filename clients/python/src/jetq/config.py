"""Producer configuration, from ``JETQ_*`` environment variables or built in code.

The variables are the Rust side's (``jetq_contract::ConnectionConfig`` and
``jetq_producer::ProducerSettings``), so one environment configures producers in both languages:

=============================  ===================================================================
variable                       meaning
=============================  ===================================================================
``JETQ_NATS_URL``              one or more server URLs, comma separated (default
                               ``nats://127.0.0.1:4222``)
``JETQ_NATS_TOKEN``            token authentication
``JETQ_NATS_USER``,            user/password authentication
``JETQ_NATS_PASSWORD``
``JETQ_NATS_NKEY_SEED``        nkey seed (``SU…``); needs the ``nkeys`` package (``jetq-client[nkeys]``)
``JETQ_NATS_CREDS_FILE``       path to a ``.creds`` file (JWT + nkey); needs ``nkeys`` too
``JETQ_NATS_TLS_CA``           CA certificate (PEM) to verify the server
``JETQ_NATS_TLS_CERT``,        client certificate and key (PEM)
``JETQ_NATS_TLS_KEY``
``JETQ_NATS_TLS_REQUIRED``     require TLS even for ``nats://`` URLs (``true``/``false``)
``JETQ_PREFIX``                subject prefix (default ``jetq``)
``JETQ_CONNECT_TIMEOUT``       connect timeout (default ``5s``)
``JETQ_REQUEST_TIMEOUT``       publish-ack timeout, per attempt (default ``5s``)
``JETQ_ENQUEUE_WINDOW``        acks ``enqueue_many`` keeps outstanding at once (default 256)
``JETQ_PUBLISH_ATTEMPTS``      attempts per task when an ack times out (default 3)
``JETQ_MAX_DELAY``             longest delay ``delay=``/``at=`` accept (default ``30days``)
``JETQ_PROVISION``             may create the delayed-task stream and the status bucket on first
                               use when they are missing (default ``true``; set ``false`` where
                               the producer's NATS user may only publish)
``JETQ_STATUS_TTL``            retention of status records (and artifacts) the producer creates
                               the bucket with (default ``24h``)
``JETQ_STREAM_REPLICAS``       replicas of the streams the producer creates (default 1)
``JETQ_ARTIFACTS_MAX_BYTES``   byte limit of the artifact store it creates (-1: none)
=============================  ===================================================================

Durations use the Rust side's humantime spelling: ``750ms``, ``5s``, ``2m``, ``1h 30m``.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import os
import re
from typing import List, Mapping, Optional
from urllib.parse import urlsplit

from .errors import ConfigError, InvalidName
from .names import validate_name

__all__ = ["Config", "parse_duration", "DEFAULT_URL", "DEFAULT_PREFIX"]

DEFAULT_URL = "nats://127.0.0.1:4222"
DEFAULT_PREFIX = "jetq"

_UNITS = {
    "ns": 1e-9, "nsec": 1e-9,
    "us": 1e-6, "usec": 1e-6, "\u00b5s": 1e-6,
    "ms": 1e-3, "msec": 1e-3, "millis": 1e-3,
    "s": 1.0, "sec": 1.0, "secs": 1.0, "second": 1.0, "seconds": 1.0,
    "m": 60.0, "min": 60.0, "mins": 60.0, "minute": 60.0, "minutes": 60.0,
    "h": 3600.0, "hr": 3600.0, "hrs": 3600.0, "hour": 3600.0, "hours": 3600.0,
    "d": 86400.0, "day": 86400.0, "days": 86400.0,
    "w": 604800.0, "week": 604800.0, "weeks": 604800.0,
}  # fmt: skip
_DURATION_PART = re.compile(r"\s*(\d+)\s*([a-zA-Z\u00b5]+)\s*")


def parse_duration(text: str, field: str = "duration") -> float:
    """Parses a humantime duration (``750ms``, ``5s``, ``1m 30s``) into seconds.

    >>> parse_duration("1m 30s")
    90.0
    """
    position, total, parts = 0, 0.0, 0
    while position < len(text):
        match = _DURATION_PART.match(text, position)
        if match is None or match.group(2) not in _UNITS:
            raise ConfigError(field, f"{text!r} is not a duration (expected e.g. 750ms, 5s, 2m)")
        total += int(match.group(1)) * _UNITS[match.group(2)]
        position = match.end()
        parts += 1
    if parts == 0:
        raise ConfigError(field, f"{text!r} is not a duration (expected e.g. 750ms, 5s, 2m)")
    return total


def _parse_bool(text: str, field: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no", ""):
        return False
    raise ConfigError(field, f"{text!r} is not a boolean (expected true or false)")


def _parse_int(text: str, field: str, minimum: int) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise ConfigError(field, f"{text!r} is not an integer") from None
    if value < minimum:
        raise ConfigError(field, f"{value} is below the minimum of {minimum}")
    return value


@dataclasses.dataclass
class Config:
    """Where NATS is, how to log in, and how the producer publishes.

    Build it in code (``Config(nats_url="nats://nats:4222")``) or read it with
    :meth:`from_env`. Secrets never appear in ``repr``.
    """

    nats_url: str = DEFAULT_URL
    token: Optional[str] = dataclasses.field(default=None, repr=False)
    user: Optional[str] = None
    password: Optional[str] = dataclasses.field(default=None, repr=False)
    nkey_seed: Optional[str] = dataclasses.field(default=None, repr=False)
    creds_file: Optional[str] = None
    tls_ca: Optional[str] = None
    tls_cert: Optional[str] = None
    tls_key: Optional[str] = None
    tls_required: bool = False
    prefix: str = DEFAULT_PREFIX
    #: Seconds to wait for a connection at startup.
    connect_timeout: float = 5.0
    #: Seconds to wait for each publish acknowledgement.
    request_timeout: float = 5.0
    #: Outstanding acks in ``enqueue_many``.
    enqueue_window: int = 256
    #: Publish attempts per task when an ack times out (all with the same ``Nats-Msg-Id``).
    publish_attempts: int = 3
    #: The connection name shown in the server's monitoring.
    client_name: str = "jetq-producer-python"
    #: May create missing jetq objects on first use (the delayed-task stream is tried in any
    #: case, as the Rust producer does; the status bucket only with this on).
    provision: bool = True
    #: The longest delay ``delay=`` / ``at=`` accepts, in seconds (30 days; ``JETQ_MAX_DELAY``).
    max_delay: float = 30 * 24 * 3600.0
    #: Seconds a status record is kept after its last write, when this producer creates the
    #: status bucket (``JETQ_STATUS_TTL``).
    status_ttl: float = 24 * 3600.0
    #: Replicas of the streams this producer creates (``JETQ_STREAM_REPLICAS``).
    stream_replicas: int = 1
    #: Byte limit of the artifact store this producer creates; -1 for none.
    artifacts_max_bytes: int = -1

    @property
    def max_delay_timedelta(self) -> _dt.timedelta:
        """:attr:`max_delay` as a ``timedelta``."""
        return _dt.timedelta(seconds=self.max_delay)

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None) -> "Config":
        """Reads ``JETQ_*`` variables (from ``os.environ`` unless ``environ`` is given) and
        validates the result; a :class:`~jetq.errors.ConfigError` names the variable to fix."""
        env = os.environ if environ is None else environ
        config = cls()

        def get(name: str) -> Optional[str]:
            value = env.get(name)
            return value if value is not None and value != "" else None

        config.nats_url = get("JETQ_NATS_URL") or DEFAULT_URL
        config.token = get("JETQ_NATS_TOKEN")
        config.user = get("JETQ_NATS_USER")
        config.password = get("JETQ_NATS_PASSWORD")
        config.nkey_seed = get("JETQ_NATS_NKEY_SEED")
        config.creds_file = get("JETQ_NATS_CREDS_FILE")
        config.tls_ca = get("JETQ_NATS_TLS_CA")
        config.tls_cert = get("JETQ_NATS_TLS_CERT")
        config.tls_key = get("JETQ_NATS_TLS_KEY")
        required = get("JETQ_NATS_TLS_REQUIRED")
        if required is not None:
            config.tls_required = _parse_bool(required, "JETQ_NATS_TLS_REQUIRED")
        config.prefix = get("JETQ_PREFIX") or DEFAULT_PREFIX
        for name, attr in (
            ("JETQ_CONNECT_TIMEOUT", "connect_timeout"),
            ("JETQ_REQUEST_TIMEOUT", "request_timeout"),
        ):
            value = get(name)
            if value is not None:
                setattr(config, attr, parse_duration(value, name))
        window = get("JETQ_ENQUEUE_WINDOW")
        if window is not None:
            config.enqueue_window = _parse_int(window, "JETQ_ENQUEUE_WINDOW", 1)
        attempts = get("JETQ_PUBLISH_ATTEMPTS")
        if attempts is not None:
            config.publish_attempts = _parse_int(attempts, "JETQ_PUBLISH_ATTEMPTS", 1)
        max_delay = get("JETQ_MAX_DELAY")
        if max_delay is not None:
            config.max_delay = parse_duration(max_delay, "JETQ_MAX_DELAY")
        provision = get("JETQ_PROVISION")
        if provision is not None:
            config.provision = _parse_bool(provision, "JETQ_PROVISION")
        ttl = get("JETQ_STATUS_TTL")
        if ttl is not None:
            config.status_ttl = parse_duration(ttl, "JETQ_STATUS_TTL")
        replicas = get("JETQ_STREAM_REPLICAS")
        if replicas is not None:
            config.stream_replicas = _parse_int(replicas, "JETQ_STREAM_REPLICAS", 1)
        artifacts = get("JETQ_ARTIFACTS_MAX_BYTES")
        if artifacts is not None:
            config.artifacts_max_bytes = _parse_int(artifacts, "JETQ_ARTIFACTS_MAX_BYTES", -1)
        config.validate()
        return config

    def server_urls(self) -> List[str]:
        """The server URLs, trimmed, empty entries dropped."""
        return [url.strip() for url in self.nats_url.split(",") if url.strip()]

    def validate(self) -> None:
        """Checks that the settings can work together; the error names the variable to fix."""
        urls = self.server_urls()
        if not urls:
            raise ConfigError(
                "JETQ_NATS_URL", "no server URL given (expected e.g. nats://127.0.0.1:4222)"
            )
        for url in urls:
            try:
                parts = urlsplit(url if "://" in url else f"nats://{url}")
                parts.port  # noqa: B018 - raises ValueError on a bad port
            except ValueError as err:
                raise ConfigError(
                    "JETQ_NATS_URL",
                    f"{url!r} is not a NATS URL ({err}); expected e.g. nats://host:4222",
                ) from None
            if parts.scheme not in ("nats", "tls", "ws", "wss") or not parts.hostname:
                raise ConfigError(
                    "JETQ_NATS_URL", f"{url!r} is not a NATS URL; expected e.g. nats://host:4222"
                )
        try:
            validate_name("prefix", self.prefix)
        except InvalidName as err:
            raise ConfigError("JETQ_PREFIX", str(err)) from None
        methods = [
            self.token is not None,
            self.user is not None or self.password is not None,
            self.nkey_seed is not None,
            self.creds_file is not None,
        ]
        if sum(methods) > 1:
            raise ConfigError(
                "JETQ_NATS_TOKEN/USER/NKEY_SEED/CREDS_FILE",
                "more than one authentication method is set; keep exactly one",
            )
        if (self.user is None) != (self.password is None):
            raise ConfigError(
                "JETQ_NATS_USER/JETQ_NATS_PASSWORD", "set both the user and the password, or neither"
            )
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError(
                "JETQ_NATS_TLS_CERT/JETQ_NATS_TLS_KEY",
                "a client certificate needs its key and a key needs its certificate",
            )
        if not self.request_timeout > 0:
            raise ConfigError("JETQ_REQUEST_TIMEOUT", "must be greater than zero")
        if not self.connect_timeout > 0:
            raise ConfigError("JETQ_CONNECT_TIMEOUT", "must be greater than zero")
        if self.enqueue_window < 1:
            raise ConfigError("JETQ_ENQUEUE_WINDOW", "must be at least 1")
        if self.publish_attempts < 1:
            raise ConfigError("JETQ_PUBLISH_ATTEMPTS", "must be at least 1")
        if not self.max_delay > 0:
            raise ConfigError("JETQ_MAX_DELAY", "must be greater than zero (e.g. 30days)")
        if self.status_ttl < 1:
            raise ConfigError(
                "JETQ_STATUS_TTL", "must be at least 1s (status records would expire before anyone reads them)"
            )
        if not 1 <= self.stream_replicas <= 5:
            raise ConfigError("JETQ_STREAM_REPLICAS", f"{self.stream_replicas} is outside 1..=5")
        if self.artifacts_max_bytes == 0 or self.artifacts_max_bytes < -1:
            raise ConfigError(
                "JETQ_ARTIFACTS_MAX_BYTES",
                f"{self.artifacts_max_bytes} is not a limit; use a positive number or -1 for none",
            )

    def replace(self, **changes: object) -> "Config":
        """A copy with some fields changed (and validated)."""
        config = dataclasses.replace(self, **changes)  # type: ignore[arg-type]
        config.validate()
        return config
