"""Configuration from JETQ_* variables: the Rust side's names, defaults and error messages."""

from __future__ import annotations

from typing import Dict

import pytest

from jetq import Config, ConfigError
from jetq.config import parse_duration


def test_defaults_without_variables() -> None:
    config = Config.from_env({})
    assert config == Config()
    assert config.server_urls() == ["nats://127.0.0.1:4222"]
    assert (config.prefix, config.connect_timeout, config.request_timeout) == ("jetq", 5.0, 5.0)
    assert (config.enqueue_window, config.publish_attempts) == (256, 3)


def test_reads_every_field() -> None:
    config = Config.from_env(
        {
            "JETQ_NATS_URL": "nats://a:4222, nats://b:4223",
            "JETQ_NATS_USER": "app",
            "JETQ_NATS_PASSWORD": "hunter2",
            "JETQ_NATS_TLS_CA": "/etc/ca.pem",
            "JETQ_NATS_TLS_REQUIRED": "true",
            "JETQ_PREFIX": "shop",
            "JETQ_CONNECT_TIMEOUT": "2s",
            "JETQ_REQUEST_TIMEOUT": "750ms",
            "JETQ_ENQUEUE_WINDOW": "32",
            "JETQ_PUBLISH_ATTEMPTS": "5",
            "JETQ_MAX_DELAY": "90days",
            "JETQ_PROVISION": "false",
            "JETQ_STATUS_TTL": "2h",
            "JETQ_STREAM_REPLICAS": "3",
            "JETQ_ARTIFACTS_MAX_BYTES": "1000000",
            "OTHER": "ignored",
        }
    )
    assert config.server_urls() == ["nats://a:4222", "nats://b:4223"]
    assert (config.user, config.password) == ("app", "hunter2")
    assert config.tls_ca == "/etc/ca.pem" and config.tls_required
    assert config.prefix == "shop"
    assert config.connect_timeout == 2.0 and config.request_timeout == 0.75
    assert (config.enqueue_window, config.publish_attempts) == (32, 5)
    assert config.max_delay == 90 * 86400.0 and config.max_delay_timedelta.days == 90
    assert not config.provision and config.status_ttl == 7200.0
    assert (config.stream_replicas, config.artifacts_max_bytes) == (3, 1_000_000)


def test_delay_and_status_defaults_are_the_rust_sides() -> None:
    config = Config()
    assert config.max_delay == 30 * 86400.0 and config.provision
    assert (config.status_ttl, config.stream_replicas, config.artifacts_max_bytes) == (86400.0, 1, -1)


def test_secrets_never_print() -> None:
    for env in ({"JETQ_NATS_TOKEN": "s3cr3t"}, {"JETQ_NATS_USER": "u", "JETQ_NATS_PASSWORD": "s3cr3t"},
                {"JETQ_NATS_NKEY_SEED": "SUs3cr3t"}):  # fmt: skip
        assert "s3cr3t" not in repr(Config.from_env(env))


@pytest.mark.parametrize(
    "env, field",
    [
        ({"JETQ_NATS_URL": "http://[::"}, "JETQ_NATS_URL"),
        ({"JETQ_NATS_URL": " , "}, "JETQ_NATS_URL"),
        ({"JETQ_NATS_URL": "http://example.com"}, "JETQ_NATS_URL"),
        ({"JETQ_NATS_USER": "u"}, "JETQ_NATS_USER/JETQ_NATS_PASSWORD"),
        ({"JETQ_NATS_TOKEN": "t", "JETQ_NATS_NKEY_SEED": "SU"}, "JETQ_NATS_TOKEN/USER/NKEY_SEED/CREDS_FILE"),
        ({"JETQ_PREFIX": "a.b"}, "JETQ_PREFIX"),
        ({"JETQ_MAX_DELAY": "0s"}, "JETQ_MAX_DELAY"),
        ({"JETQ_MAX_DELAY": "a month"}, "JETQ_MAX_DELAY"),
        ({"JETQ_PROVISION": "maybe"}, "JETQ_PROVISION"),
        ({"JETQ_STATUS_TTL": "0s"}, "JETQ_STATUS_TTL"),
        ({"JETQ_STREAM_REPLICAS": "7"}, "JETQ_STREAM_REPLICAS"),
        ({"JETQ_ARTIFACTS_MAX_BYTES": "0"}, "JETQ_ARTIFACTS_MAX_BYTES"),
        ({"JETQ_NATS_TLS_CERT": "/c.pem"}, "JETQ_NATS_TLS_CERT/JETQ_NATS_TLS_KEY"),
        ({"JETQ_CONNECT_TIMEOUT": "soon"}, "JETQ_CONNECT_TIMEOUT"),
        ({"JETQ_REQUEST_TIMEOUT": "0s"}, "JETQ_REQUEST_TIMEOUT"),
        ({"JETQ_ENQUEUE_WINDOW": "0"}, "JETQ_ENQUEUE_WINDOW"),
        ({"JETQ_PUBLISH_ATTEMPTS": "many"}, "JETQ_PUBLISH_ATTEMPTS"),
        ({"JETQ_NATS_TLS_REQUIRED": "maybe"}, "JETQ_NATS_TLS_REQUIRED"),
    ],
)
def test_errors_name_the_variable(env: Dict[str, str], field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Config.from_env(env)
    assert caught.value.field == field
    assert field in str(caught.value)


def test_durations_use_the_rust_spelling() -> None:
    assert parse_duration("750ms") == 0.75
    assert parse_duration("5s") == 5.0
    assert parse_duration("2m") == 120.0
    assert parse_duration("1h 30m") == 5400.0
    assert parse_duration("30days") == 30 * 86400.0
    for bad in ("", "5", "five seconds", "5 parsecs"):
        with pytest.raises(ConfigError):
            parse_duration(bad)


def test_replace_validates() -> None:
    assert Config().replace(prefix="shop").prefix == "shop"
    with pytest.raises(ConfigError):
        Config().replace(prefix="a b")
