"""Verify (and make) jetq's signed HTTP push requests.

When ``jetq-push`` delivers a task to an HTTP endpoint, it signs the request (scheme ``v1``,
docs/PUSH-SIGNATURES.md): ``Jetq-Timestamp`` (Unix seconds), ``Jetq-Task-Id`` and
``Jetq-Signature: v1=<hex>[,v1=<hex>]``, where each ``<hex>`` is the lowercase hex
HMAC-SHA256, keyed with a secret's UTF-8 bytes, of ``v1:<timestamp>:<task id>:<raw body>``.

An endpoint verifies a request with :func:`verify_push`, which raises a
:class:`PushSignatureError` subclass when the request is not from jetq, was altered, or is older
(or newer) than the tolerance::

    from django.http import HttpResponse, JsonResponse
    import jetq

    KEYS = jetq.signing_keys_from_env()  # JETQ_PUSH_SIGNING_KEYS=key1[,key2]

    def send_email(request):
        try:
            jetq.verify_push(request.headers, request.body, KEYS)
        except jetq.PushSignatureError as e:
            return HttpResponse(str(e), status=401)
        ...

Flask: ``jetq.verify_push(request.headers, request.get_data(), KEYS)``. Header names are looked
up case-insensitively, in any mapping. :func:`verified_push` wraps a Django view.

The Rust crate ``jetq-push-signature`` implements the same scheme; both are tested against the
shared vectors in ``docs/push/signature-vectors.json``.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import importlib
import math
import os
import re
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, TypeVar, cast

from .errors import ConfigError, JetqError

__all__ = [
    "TIMESTAMP_HEADER",
    "TASK_ID_HEADER",
    "SIGNATURE_HEADER",
    "DEFAULT_TOLERANCE",
    "SIGNING_KEYS_ENV",
    "MAX_KEYS",
    "PushSignatureError",
    "MissingPushHeader",
    "MalformedPushHeader",
    "StalePush",
    "PushSignatureMismatch",
    "verify_push",
    "sign_push",
    "push_headers",
    "signing_keys_from_env",
    "verified_push",
]

#: Header carrying the signing time, Unix seconds in decimal.
TIMESTAMP_HEADER = "Jetq-Timestamp"
#: Header carrying the task id (covered by the signature: use it for idempotency).
TASK_ID_HEADER = "Jetq-Task-Id"
#: Header carrying ``v1=<hex>`` per signing key, comma separated.
SIGNATURE_HEADER = "Jetq-Signature"
#: Seconds the timestamp may be from the receiver's clock, either way, by default.
DEFAULT_TOLERANCE = 300.0
#: The environment variable holding ``key1[,key2]`` on both sides.
SIGNING_KEYS_ENV = "JETQ_PUSH_SIGNING_KEYS"
#: The most keys in use at once: the new one and the old one, during a rotation.
MAX_KEYS = 2

_VERSION = "v1"
_DIGITS = re.compile(r"[0-9]+")
_HEX = re.compile(r"[0-9a-fA-F]{64}")
_U64_MAX = 2**64 - 1
_OWS = " \t"


class PushSignatureError(JetqError):
    """A push request failed verification; answer it with 401.

    :attr:`kind` names the case as the shared vectors do: ``missing_header``, ``malformed``,
    ``stale`` or ``mismatch``.
    """

    kind = ""


class MissingPushHeader(PushSignatureError):
    """A required header is absent; :attr:`header` is its name."""

    kind = "missing_header"

    def __init__(self, header: str) -> None:
        self.header = header
        super().__init__(f"push request header {header} is missing")


class MalformedPushHeader(PushSignatureError):
    """A header is present but not in the scheme's format; :attr:`header`, :attr:`reason`."""

    kind = "malformed"

    def __init__(self, header: str, reason: str) -> None:
        self.header = header
        self.reason = reason
        super().__init__(f"push request header {header} is malformed: {reason}")


class StalePush(PushSignatureError):
    """The timestamp is further from the receiver's clock than the tolerance (a replay, a
    request held up too long, or a skewed clock). :attr:`age` is the receiver's clock (whole
    seconds, rounded down) minus the timestamp: negative for a timestamp in the future."""

    kind = "stale"

    def __init__(self, age: int) -> None:
        self.age = age
        where = "old" if age >= 0 else "in the future"
        super().__init__(f"push request timestamp is {abs(age)} s {where} (outside the tolerance)")


class PushSignatureMismatch(PushSignatureError):
    """No signature matches any of the receiver's keys (forged or altered request, or keys
    that differ between jetq-push and the receiver)."""

    kind = "mismatch"

    def __init__(self) -> None:
        super().__init__("push request signature does not match")


def _check_keys(keys: Sequence[str]) -> List[bytes]:
    if isinstance(keys, (str, bytes)):
        raise ConfigError("keys", "a sequence of 1 or 2 key strings, not a single string")
    if len(keys) == 0:
        raise ConfigError("keys", f"no push signing key: set {SIGNING_KEYS_ENV}=key1[,key2]")
    if len(keys) > MAX_KEYS:
        raise ConfigError(
            "keys", f"{len(keys)} push signing keys given: at most {MAX_KEYS} (the new key and the old one)"
        )
    out = []
    for index, key in enumerate(keys):
        if not isinstance(key, str):
            raise ConfigError("keys", f"push signing key #{index + 1} is not a string")
        if key == "":
            raise ConfigError("keys", f"push signing key #{index + 1} is empty")
        out.append(key.encode("utf-8"))
    return out


def signing_keys_from_env(value: Optional[str] = None) -> List[str]:
    """The keys in ``JETQ_PUSH_SIGNING_KEYS`` (or in ``value``): ``key1[,key2]``.

    Entries are split on ``,`` and stripped of surrounding whitespace (so a key cannot contain
    a comma or begin or end with whitespace); an empty entry is an error. Raises
    :class:`~jetq.errors.ConfigError` (never showing a key).

    >>> signing_keys_from_env("new-secret, old-secret\\n")
    ['new-secret', 'old-secret']
    """
    if value is None:
        value = os.environ.get(SIGNING_KEYS_ENV)
        if value is None:
            raise ConfigError(SIGNING_KEYS_ENV, "not set: set it to key1[,key2]")
    if value.strip() == "":
        raise ConfigError(SIGNING_KEYS_ENV, "no push signing key: set it to key1[,key2]")
    keys = [entry.strip() for entry in value.split(",")]
    try:
        _check_keys(keys)
    except ConfigError as e:
        raise ConfigError(SIGNING_KEYS_ENV, e.problem) from None
    return keys


def _mac(key: bytes, timestamp: str, task_id: str, body: bytes) -> bytes:
    message = b"".join(
        [_VERSION.encode(), b":", timestamp.encode("utf-8"), b":", task_id.encode("utf-8"), b":", body]
    )
    return hmac.new(key, message, hashlib.sha256).digest()


def sign_push(keys: Sequence[str], timestamp: int, task_id: str, body: bytes) -> str:
    """The ``Jetq-Signature`` value for a request: ``v1=<hex>`` per key, in key order.

    For tests, and for other producers of push requests.

    >>> sign_push(["whsec_test_2026_current"], 1764240000, "01JDQ5X1ZB8Y2K3M4N5P6Q7R8S",
    ...           b'{"to":"ada@example.com","subject":"Welcome"}')
    'v1=e90de6797982b5a64e05861bceebba851c2d2f5146b681ef5b29caf3b7d23014'
    """
    if isinstance(timestamp, bool) or not isinstance(timestamp, int) or not 0 <= timestamp <= _U64_MAX:
        raise ValueError("timestamp must be Unix seconds as a non-negative int")
    ts = str(timestamp)
    return ",".join(f"{_VERSION}={_mac(k, ts, task_id, bytes(body)).hex()}" for k in _check_keys(keys))


def push_headers(
    keys: Sequence[str], task_id: str, body: bytes, *, timestamp: Optional[int] = None
) -> Dict[str, str]:
    """The three signature headers of a request, signed now (or at ``timestamp``)."""
    ts = int(time.time()) if timestamp is None else timestamp
    return {
        TIMESTAMP_HEADER: str(ts),
        TASK_ID_HEADER: task_id,
        SIGNATURE_HEADER: sign_push(keys, ts, task_id, body),
    }


def _header(headers: Mapping[str, str], name: str) -> Optional[str]:
    value = headers.get(name)
    if value is None:
        lower = name.lower()
        for key, candidate in headers.items():
            if isinstance(key, str) and key.lower() == lower:
                value = candidate
                break
    if value is None:
        return None
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            raise MalformedPushHeader(name, "not visible ASCII") from None
    return str(value).strip(_OWS)


def _signatures(header: str) -> List[bytes]:
    if header == "":
        raise MalformedPushHeader(SIGNATURE_HEADER, "empty")
    out = []
    for raw in header.split(","):
        entry = raw.strip(_OWS)
        scheme, sep, value = entry.partition("=")
        if not sep:
            raise MalformedPushHeader(SIGNATURE_HEADER, "an entry is not scheme=value")
        if scheme != _VERSION:
            continue
        if not _HEX.fullmatch(value):
            raise MalformedPushHeader(SIGNATURE_HEADER, "a v1 value is not 64 hex digits")
        out.append(bytes.fromhex(value))
    if not out:
        raise MalformedPushHeader(SIGNATURE_HEADER, "no v1 signature")
    return out


def verify_push(
    headers: Mapping[str, str],
    body: bytes,
    keys: Sequence[str],
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    now: Optional[float] = None,
) -> None:
    """Verify a signed push request; return None, or raise a :class:`PushSignatureError`.

    ``headers`` is any mapping of the request's headers (Django's and Flask's
    ``request.headers``, a plain dict): names are matched case-insensitively. ``body`` is the
    raw request body, exactly as received (``request.body`` in Django, ``request.get_data()``
    in Flask) — never re-encoded JSON. ``keys`` are the receiver's 1 or 2 keys (see
    :func:`signing_keys_from_env`); a bad list raises :class:`~jetq.errors.ConfigError`, a
    negative or NaN ``tolerance`` :class:`ValueError`.
    ``now`` (Unix seconds, default the current time) is rounded down to the second.

    Checked in order, the first failure raised: every header present
    (:class:`MissingPushHeader`), each well formed (:class:`MalformedPushHeader`), the timestamp
    within ``tolerance`` seconds of ``now`` (:class:`StalePush`), one of the keys producing one of
    the ``v1=`` signatures, compared with :func:`hmac.compare_digest`
    (:class:`PushSignatureMismatch`).
    """
    key_bytes = _check_keys(keys)
    # `not >=` also refuses NaN, which would otherwise turn the freshness check off.
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be a non-negative number of seconds, not {tolerance!r}")
    timestamp_text = _header(headers, TIMESTAMP_HEADER)
    if timestamp_text is None:
        raise MissingPushHeader(TIMESTAMP_HEADER)
    task_id = _header(headers, TASK_ID_HEADER)
    if task_id is None:
        raise MissingPushHeader(TASK_ID_HEADER)
    signature = _header(headers, SIGNATURE_HEADER)
    if signature is None:
        raise MissingPushHeader(SIGNATURE_HEADER)

    if timestamp_text == "":
        raise MalformedPushHeader(TIMESTAMP_HEADER, "empty")
    # ASCII digits only: int() would also take "+5", " 5", "5_000" and non-ASCII digits.
    if not (timestamp_text.isascii() and _DIGITS.fullmatch(timestamp_text)):
        raise MalformedPushHeader(TIMESTAMP_HEADER, "not decimal Unix seconds")
    timestamp = int(timestamp_text)
    if timestamp > _U64_MAX:
        raise MalformedPushHeader(TIMESTAMP_HEADER, "out of range")
    if task_id == "":
        raise MalformedPushHeader(TASK_ID_HEADER, "empty")
    candidates = _signatures(signature)

    clock = time.time() if now is None else now
    age = math.floor(clock) - timestamp
    if abs(age) > tolerance:
        raise StalePush(age)

    matched = False
    for key in key_bytes:
        expected = _mac(key, timestamp_text, task_id, bytes(body))
        for candidate in candidates:
            # No early exit: every pair is compared.
            matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise PushSignatureMismatch()


_View = TypeVar("_View", bound=Callable[..., Any])


def verified_push(
    keys: Optional[Sequence[str]] = None, *, tolerance: float = DEFAULT_TOLERANCE
) -> Callable[[_View], _View]:
    """Decorator for a Django view that only lets verified push requests through.

    Others get ``401`` with the reason as plain text. ``keys`` default to
    ``JETQ_PUSH_SIGNING_KEYS``, read once when the decorator is applied::

        @csrf_exempt
        @require_POST
        @jetq.verified_push()
        def send_email(request):
            args = json.loads(request.body)
            task_id = request.headers["Jetq-Task-Id"]
            ...
    """
    key_list = list(keys) if keys is not None else signing_keys_from_env()
    _check_keys(key_list)
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be a non-negative number of seconds, not {tolerance!r}")

    def decorate(view: _View) -> _View:
        @functools.wraps(view)
        def wrapper(request: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                verify_push(request.headers, request.body, key_list, tolerance=tolerance)
            except PushSignatureError as e:
                http = importlib.import_module("django.http")
                return http.HttpResponse(str(e), status=401, content_type="text/plain")
            return view(request, *args, **kwargs)

        return cast(_View, wrapper)

    return decorate
