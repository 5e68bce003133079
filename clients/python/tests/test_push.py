"""Signed push requests (jetq.push) against the vectors shared with the Rust crate
jetq-push-signature (docs/push/signature-vectors.json), plus the Python-only surface."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import pytest

import jetq
from jetq import (
    ConfigError,
    JetqError,
    MalformedPushHeader,
    MissingPushHeader,
    PushSignatureError,
    PushSignatureMismatch,
    StalePush,
    push_headers,
    sign_push,
    signing_keys_from_env,
    verify_push,
)
from jetq.push import SIGNATURE_HEADER, TASK_ID_HEADER, TIMESTAMP_HEADER, verified_push

VECTORS_PATH = Path(__file__).resolve().parents[3] / "docs" / "push" / "signature-vectors.json"
VECTORS: Dict[str, Any] = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))

TASK = "01JDQ5X1ZB8Y2K3M4N5P6Q7R8S"
BODY = b'{"to":"ada@example.com","subject":"Welcome"}'
TS = 1764240000


def _body(case: Mapping[str, Any]) -> bytes:
    body = base64.b64decode(case["body_base64"])
    if case["body_utf8"] is not None:
        assert case["body_utf8"].encode("utf-8") == body
    return body


def _outcome(exc: Optional[PushSignatureError]) -> Dict[str, Any]:
    if exc is None:
        return {"result": "ok"}
    if isinstance(exc, (MissingPushHeader, MalformedPushHeader)):
        return {"result": exc.kind, "header": exc.header}
    if isinstance(exc, StalePush):
        return {"result": "stale", "age": exc.age}
    return {"result": exc.kind}


def _run(case: Mapping[str, Any], headers: Mapping[str, str]) -> Dict[str, Any]:
    try:
        verify_push(headers, _body(case), case["keys"], tolerance=case["tolerance_secs"], now=case["now"])
    except PushSignatureError as e:
        return _outcome(e)
    return _outcome(None)


def test_vectors_file_is_complete() -> None:
    assert VECTORS["scheme"] == "v1"
    assert VECTORS["headers"] == {
        "timestamp": TIMESTAMP_HEADER,
        "task_id": TASK_ID_HEADER,
        "signature": SIGNATURE_HEADER,
    }
    assert VECTORS["default_tolerance_secs"] == jetq.push.DEFAULT_TOLERANCE
    assert len(VECTORS["sign"]) >= 5
    assert len(VECTORS["verify"]) >= 40
    results = {case["expect"]["result"] for case in VECTORS["verify"]}
    assert results == {"ok", "missing_header", "malformed", "stale", "mismatch"}


@pytest.mark.parametrize("case", VECTORS["sign"], ids=lambda c: str(c["name"]))
def test_sign_vectors(case: Dict[str, Any]) -> None:
    body = _body(case)
    spelled = b"v1:%d:%s:" % (case["timestamp"], case["task_id"].encode("utf-8")) + body
    assert base64.b64encode(spelled).decode() == case["signed_bytes_base64"]
    assert sign_push(case["keys"], case["timestamp"], case["task_id"], body) == case["signature"]
    # And the receiver holding any one of the keys accepts it.
    headers = {
        TIMESTAMP_HEADER: str(case["timestamp"]),
        TASK_ID_HEADER: case["task_id"],
        SIGNATURE_HEADER: case["signature"],
    }
    for key in case["keys"]:
        verify_push(headers, body, [key], now=case["timestamp"])


@pytest.mark.parametrize("case", VECTORS["verify"], ids=lambda c: str(c["name"]))
def test_verify_vectors(case: Dict[str, Any]) -> None:
    assert _run(case, case["headers"]) == case["expect"]


@pytest.mark.parametrize("case", VECTORS["verify"], ids=lambda c: str(c["name"]))
def test_verify_vectors_with_lowercase_header_names(case: Dict[str, Any]) -> None:
    # Plain dicts keyed as ASGI/WSGI servers or proxies may spell them.
    lowered = {name.lower(): value for name, value in case["headers"].items()}
    assert _run(case, lowered) == case["expect"]
    upper = {name.upper(): value for name, value in case["headers"].items()}
    assert _run(case, upper) == case["expect"]


def test_errors_are_typed() -> None:
    headers = push_headers(["secret"], TASK, BODY, timestamp=TS)
    with pytest.raises(PushSignatureMismatch) as mismatch:
        verify_push(headers, BODY + b" ", ["secret"], now=TS)
    assert isinstance(mismatch.value, PushSignatureError)
    assert isinstance(mismatch.value, JetqError)
    assert str(mismatch.value) == "push request signature does not match"

    with pytest.raises(StalePush) as stale:
        verify_push(headers, BODY, ["secret"], now=TS + 400)
    assert stale.value.age == 400
    assert str(stale.value) == "push request timestamp is 400 s old (outside the tolerance)"
    with pytest.raises(StalePush) as future:
        verify_push(headers, BODY, ["secret"], now=TS - 400)
    assert future.value.age == -400
    assert "in the future" in str(future.value)

    with pytest.raises(MissingPushHeader) as missing:
        verify_push({}, BODY, ["secret"])
    assert missing.value.header == "Jetq-Timestamp"
    assert str(missing.value) == "push request header Jetq-Timestamp is missing"

    bad = dict(headers, **{TIMESTAMP_HEADER: "soon"})
    with pytest.raises(MalformedPushHeader) as malformed:
        verify_push(bad, BODY, ["secret"], now=TS)
    assert (malformed.value.header, malformed.value.reason) == (TIMESTAMP_HEADER, "not decimal Unix seconds")


def test_key_rotation() -> None:
    headers = push_headers(["new", "old"], TASK, BODY, timestamp=TS)
    assert headers[SIGNATURE_HEADER].count("v1=") == 2
    for receiver in (["old"], ["new"], ["new", "old"], ["old", "new"]):
        verify_push(headers, BODY, receiver, now=TS)
    for receiver in (["unrelated"], ["unrelated", "other"]):
        with pytest.raises(PushSignatureMismatch):
            verify_push(headers, BODY, receiver, now=TS)


def test_custom_tolerance_and_default_clock() -> None:
    headers = push_headers(["secret"], TASK, BODY)  # signed now
    verify_push(headers, BODY, ["secret"])  # the real clock
    old = push_headers(["secret"], TASK, BODY, timestamp=int(time.time()) - 120)
    verify_push(old, BODY, ["secret"])
    with pytest.raises(StalePush):
        verify_push(old, BODY, ["secret"], tolerance=60)
    for bad in (-1.0, float("nan")):
        with pytest.raises(ValueError):
            verify_push(old, BODY, ["secret"], tolerance=bad)
        with pytest.raises(ValueError):
            verified_push(["secret"], tolerance=bad)


def test_keys_are_checked_and_never_shown() -> None:
    headers = push_headers(["secret"], TASK, BODY, timestamp=TS)
    for keys in ([], ["a", "b", "c"], [""], ["a", ""]):
        with pytest.raises(ConfigError):
            verify_push(headers, BODY, keys, now=TS)
        with pytest.raises(ConfigError):
            sign_push(keys, TS, TASK, BODY)
    with pytest.raises(ConfigError):
        verify_push(headers, BODY, "secret", now=TS)  # a str is a sequence of characters
    with pytest.raises(ValueError):
        sign_push(["secret"], -1, TASK, BODY)

    assert signing_keys_from_env(" new ,\told\n") == ["new", "old"]
    for value in ("", " ", "a,", ",b", "a,b,c"):
        with pytest.raises(ConfigError) as e:
            signing_keys_from_env(value)
        assert e.value.field == "JETQ_PUSH_SIGNING_KEYS"
    with pytest.raises(ConfigError) as e:
        signing_keys_from_env("super-secret-one,super-secret-two,super-secret-three")
    assert "super-secret" not in str(e.value)


def test_keys_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JETQ_PUSH_SIGNING_KEYS", "k1,k2")
    assert signing_keys_from_env() == ["k1", "k2"]
    monkeypatch.delenv("JETQ_PUSH_SIGNING_KEYS")
    with pytest.raises(ConfigError):
        signing_keys_from_env()


def test_matches_an_independent_hmac() -> None:
    expected = hmac.new(b"secret", b"v1:%d:%s:%s" % (TS, TASK.encode(), BODY), hashlib.sha256).hexdigest()
    assert sign_push(["secret"], TS, TASK, BODY) == f"v1={expected}"


def test_django_request_headers_and_decorator() -> None:
    django = pytest.importorskip("django")
    from django.conf import settings

    if not settings.configured:
        settings.configure(DEBUG=False, ALLOWED_HOSTS=["*"], SECRET_KEY="test", ROOT_URLCONF=__name__)
        django.setup()
    from django.http import HttpRequest, HttpResponse
    from django.test import RequestFactory

    calls: List[str] = []

    @verified_push(["new", "old"])
    def view(request: HttpRequest) -> HttpResponse:
        calls.append(request.headers["Jetq-Task-Id"])
        return HttpResponse("done")

    factory = RequestFactory()
    signed = push_headers(["old"], TASK, BODY)
    # Django's request.headers (case-insensitive, from META) with the headers as a client sends them.
    request = factory.post("/tasks/send_email", data=BODY, content_type="application/json", headers=signed)
    verify_push(request.headers, request.body, ["old"])
    response = view(request)
    assert (response.status_code, response.content) == (200, b"done")
    assert calls == [TASK]

    tampered = factory.post(
        "/tasks/send_email", data=BODY.replace(b"ada", b"eve"), content_type="application/json", headers=signed
    )
    response = view(tampered)
    assert response.status_code == 401
    assert b"does not match" in response.content
    unsigned = factory.post("/tasks/send_email", data=BODY, content_type="application/json")
    assert view(unsigned).status_code == 401
    assert calls == [TASK]


urlpatterns: List[Any] = []
