"""The http sink and the shared HTTP client, against a strict loopback receiver."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from forwarder.config import parse_config
from forwarder.errors import ConfigError
from forwarder.sinks.base import Batch, outcome_of
from forwarder.sinks.http.client import parse_retry_after
from forwarder.sinks.http.sink import HttpSink, HttpSinkConfig, idempotency_key
from forwarder.sinks.outcome import Outcome, Verdict
from tests.receivers.base import Reply
from tests.receivers.http import HttpReceiver
from tests.support.events import make_events


def http_config(receiver: HttpReceiver, **options: Any) -> HttpSinkConfig:
    """An http sink table pointing at the receiver's path."""
    return HttpSinkConfig.model_validate(
        {"type": "http", "endpoint": receiver.url + receiver.path, **options}
    )


async def send(config: HttpSinkConfig, events: list[Any]) -> Outcome:
    """Send one batch through a fresh sink; its Outcome (no answer classified as the worker does)."""
    sink = HttpSink("http", config)
    await sink.start()
    try:
        return await outcome_of(sink, sink.send(Batch(events)))
    finally:
        await sink.close()


@pytest.mark.parametrize(
    ("options", "receiver_options"),
    [
        ({}, {}),
        ({"format": "json_array"}, {"body_format": "json_array"}),
        ({"compression": "gzip", "method": "PUT"}, {"method": "PUT"}),
        ({"format": "json_array", "compression": "gzip"}, {"body_format": "json_array"}),
    ],
    ids=["ndjson", "json_array", "ndjson-gzip-put", "json_array-gzip"],
)
async def test_every_record_arrives_in_each_format(options, receiver_options):
    """NDJSON and JSON-array bodies, plain or gzip, POST or PUT, carry every record as sent."""
    events = make_events([f"event {i}" for i in range(30)])
    async with HttpReceiver(**receiver_options) as receiver:
        await send(http_config(receiver, **options), events)
        assert [orjson.dumps(e) for e in receiver.events_containing("event ")] == [
            e.json for e in events
        ]


async def test_custom_headers_and_bearer_token_file(tmp_path: Path):
    """Configured headers are sent and the bearer token comes from its file."""
    token = tmp_path / "token"
    token.write_text("t0ken\n")
    async with HttpReceiver(
        authorization="Bearer t0ken", required_headers={"X-Source": "kmsg"}
    ) as receiver:
        config = http_config(receiver, headers={"X-Source": "kmsg"}, bearer_token_file=str(token))
        await send(config, make_events(["hi"]))
        assert len(receiver.events) == 1


async def test_idempotency_key_is_stable_per_batch_and_differs_for_halves():
    """A re-sent batch carries the same Idempotency-Key; its halves carry other keys."""
    events = make_events([f"k {i}" for i in range(4)])
    async with HttpReceiver() as receiver:
        config = http_config(receiver)
        await send(config, events)
        await send(config, events)
        await send(config, events[:2])
        assert receiver.keys[0] == receiver.keys[1] == idempotency_key(Batch(events))
        assert receiver.keys[2] != receiver.keys[0]
        assert receiver.duplicates == 6


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (Reply(408, "timeout"), Verdict.UNAVAILABLE),
        (Reply(429, "", {"Retry-After": "5"}), Verdict.UNAVAILABLE),
        (Reply(500, "oops"), Verdict.UNAVAILABLE),
        (Reply(503, "later"), Verdict.UNAVAILABLE),
        (Reply(501, "not implemented"), "http_5xx"),
        (Reply(400, "bad"), "http_4xx"),
        (Reply(404, "gone"), Verdict.OPERATOR_NEEDED),
        (Reply(301, "moved"), Verdict.OPERATOR_NEEDED),
        (Reply(422, "no"), "http_4xx"),
        (Reply(401, "who"), Verdict.OPERATOR_NEEDED),
        (Reply(403, "no"), Verdict.OPERATOR_NEEDED),
        (Reply(413, "big"), Verdict.SPLIT),
    ],
)
async def test_status_classes(reply, expected):
    """408/429/5xx retry, 501 and other 4xx refuse the batch, auth needs an operator, 413 splits."""
    events = make_events(["x", "y"])
    async with HttpReceiver() as receiver:
        receiver.script(reply)
        outcome = await send(http_config(receiver), events)
    if isinstance(expected, str):
        assert outcome.verdict is Verdict.ANSWERED
        assert [(r.index, r.reason) for r in outcome.rejected] == [(0, expected), (1, expected)]
        assert f"HTTP {reply.status}" in outcome.rejected[0].detail
    else:
        assert outcome.verdict is expected
        assert f"HTTP {reply.status}" in outcome.detail
    assert outcome.retry_after_s == (5.0 if reply.status == 429 else None)


async def test_retry_after_http_date_is_honoured():
    """A Retry-After given as an HTTP-date becomes seconds on the 'unavailable' outcome."""
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    async with HttpReceiver() as receiver:
        receiver.script(Reply(503, "", {"Retry-After": when}))
        outcome = await send(http_config(receiver), make_events(["x"]))
    assert outcome.verdict is Verdict.UNAVAILABLE
    assert outcome.retry_after_s is not None
    assert 100 < outcome.retry_after_s <= 120


async def test_timeout_is_retryable():
    """A receiver slower than timeout_s is no answer: 'unavailable', retried."""
    async with HttpReceiver() as receiver:
        receiver.script(Reply(200, "late", delay_s=5))
        outcome = await send(http_config(receiver, timeout_s=0.2), make_events(["x"]))
    assert outcome.verdict is Verdict.UNAVAILABLE
    assert "Timeout" in outcome.detail


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("0", 0.0),
        ("17", 17.0),
        (" 3 ", 3.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),
        ("soon", None),
        ("-5", None),
        (None, None),
    ],
)
def test_parse_retry_after(value, seconds):
    """Delta-seconds and past HTTP-dates parse; garbage gives None."""
    assert parse_retry_after(value, now_s=2_000_000_000) == seconds


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"endpoint": "ftp://x/y"}, "http:// or https://"),
        ({"method": "GET"}, "method"),
        ({"password": "p"}, "needs a username"),
        ({"username": "u", "bearer_token": "t"}, "one kind of authentication"),
        ({"headers": {"Authorization": "x"}, "bearer_token": "t"}, "exclude each other"),
        ({"headers": {"AUTHORIZATION": "x"}, "username": "u"}, "exclude each other"),
        ({"headers": {"Content-Encoding": "br"}}, "set by the sink"),
        ({"format": "csv"}, "format"),
        ({"timeout_s": 0}, "timeout_s"),
    ],
)
def test_config_errors(options, message):
    """Invalid http sink tables fail at config time, naming the option."""
    raw = {"sinks": {"h": {"type": "http", "endpoint": "http://127.0.0.1:8080/in", **options}}}
    with pytest.raises(ConfigError, match=message):
        parse_config(raw)


def test_unreadable_ca_file_is_a_config_error(tmp_path: Path):
    """A tls.ca_file that cannot be loaded fails when the sink is built, naming TLS."""
    config = HttpSinkConfig.model_validate(
        {
            "type": "http",
            "endpoint": "https://127.0.0.1:1/x",
            "tls": {"ca_file": str(tmp_path / "no")},
        }
    )
    with pytest.raises(ConfigError, match="TLS options"):
        HttpSink("h", config)


def test_missing_secret_file_is_a_config_error(tmp_path: Path):
    """A password_file that cannot be read fails when the sink is built."""
    config = HttpSinkConfig(
        type="http",
        endpoint="http://127.0.0.1:1/x",
        username="u",
        password_file=tmp_path / "missing",
    )
    with pytest.raises(ConfigError, match="password_file"):
        HttpSink("h", config)


@pytest.fixture
def server_tls(tmp_path: Path) -> tuple[ssl.SSLContext, Path]:
    """A self-signed certificate for 127.0.0.1 (openssl CLI) and the server context using it."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context, cert


async def test_tls_with_the_configured_ca(server_tls):
    """An https endpoint is trusted through tls.ca_file and records arrive."""
    context, cert = server_tls
    async with HttpReceiver(tls=context) as receiver:
        await send(http_config(receiver, tls={"ca_file": str(cert)}), make_events(["secure"]))
        assert len(receiver.events) == 1


async def test_tls_verify_false_skips_verification(server_tls):
    """tls.verify = false accepts an untrusted certificate (tests only)."""
    context, _ = server_tls
    async with HttpReceiver(tls=context) as receiver:
        await send(http_config(receiver, tls={"verify": False}), make_events(["trusting"]))
        assert len(receiver.events) == 1


async def test_untrusted_certificate_is_a_configuration_error(server_tls):
    """A certificate the CA bundle does not trust needs an operator (retried, data kept)."""
    context, _ = server_tls
    async with HttpReceiver(tls=context) as receiver:
        outcome = await send(http_config(receiver), make_events(["x"]))
        assert receiver.requests == []
    assert outcome.verdict is Verdict.OPERATOR_NEEDED
    assert "TLS" in outcome.detail
