"""The elasticsearch sink against a strict loopback _bulk receiver."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from forwarder.config import parse_config
from forwarder.errors import ConfigError
from forwarder.sinks.base import Batch, outcome_of
from forwarder.sinks.elasticsearch.sink import ElasticsearchSink, ElasticsearchSinkConfig
from forwarder.sinks.outcome import Outcome, Verdict
from tests.receivers.base import Reply
from tests.receivers.elasticsearch import ElasticsearchReceiver, ItemRule
from tests.support.events import identity, make_events, make_kernel_event


def es_config(receiver: ElasticsearchReceiver, **options: Any) -> ElasticsearchSinkConfig:
    """An elasticsearch sink table pointing at the receiver."""
    return ElasticsearchSinkConfig.model_validate(
        {"type": "elasticsearch", "endpoint": receiver.url, "index": receiver.index, **options}
    )


async def send(config: ElasticsearchSinkConfig, events: list[Any]) -> Outcome:
    """Send one batch through a fresh sink; its Outcome (no answer classified as the worker does)."""
    sink = ElasticsearchSink("es", config)
    await sink.start()
    try:
        return await outcome_of(sink, sink.send(Batch(events)))
    finally:
        await sink.close()


@pytest.mark.parametrize("compression", ["none", "gzip"])
async def test_every_record_is_stored_under_its_id(compression):
    """Each record becomes one document with _id = record id and its @timestamp."""
    events = make_events([f"doc {i}" for i in range(25)])
    async with ElasticsearchReceiver() as es:
        result = await send(es_config(es, compression=compression), events)
        assert result == Outcome.delivered()
        assert list(es.docs) == [event.id for event in events]
        assert [doc["@timestamp"] for doc in es.docs_containing("doc ")] == [
            event.fields["@timestamp"] for event in events
        ]
        if compression == "gzip":
            assert es.requests[0].headers["Content-Encoding"] == "gzip"
            assert es.requests[0].wire_bytes < len(es.requests[0].body)


async def test_resend_with_create_counts_duplicates():
    """Re-sending with create answers 409 per item: counted as duplicates, nothing rejected."""
    events = make_events([f"again {i}" for i in range(5)])
    async with ElasticsearchReceiver() as es:
        config = es_config(es)
        await send(config, events)
        result = await send(config, events)
        assert (result.duplicates, result.rejected, result.retry) == (5, (), ())
        assert es.requests[0].body == es.requests[1].body


async def test_mixed_item_statuses_retry_alone_and_dead_letter_the_rest():
    """In a 200 with errors, 429/5xx items come back for retry alone, mapping errors rejected."""
    events = make_events(["fine 0", "throttled 1", "fine 2", "broken 3", "shard 4", "fine 5"])
    async with ElasticsearchReceiver() as es:
        es.item_rules = [
            ItemRule("throttled", (429,)),
            ItemRule("shard", (503,)),
            ItemRule("broken", (400,), forever=True),
        ]
        config = es_config(es)
        result = await send(config, events)
        assert result.retry == (1, 4)
        assert [(r.index, r.reason) for r in result.rejected] == [(3, "es_mapping")]
        assert "mapper_parsing_exception" in result.rejected[0].detail
        again = await send(config, [events[i] for i in result.retry])
        assert again == Outcome.delivered()
        assert sorted(es.docs) == sorted(
            e.id for e in events if "broken" not in e.fields["message"]
        )
        # the retry carried only the two items, not the whole bulk
        assert len(es.requests[1].body.splitlines()) == 4


async def test_index_action_on_a_data_stream_is_rejected_per_item():
    """A data stream refuses the index action item by item (400): dead-lettered as es_4xx."""
    async with ElasticsearchReceiver(index="logs-kmsg-default") as es:
        es.item_rules = [ItemRule("x", (403,))]
        result = await send(es_config(es, action="index"), make_events(["x", "y"]))
    assert [r.reason for r in result.rejected] == ["es_4xx", "es_4xx"]
    assert "security_exception" in result.rejected[0].detail
    assert "data streams" in result.rejected[1].detail


async def test_index_action_overwrites_on_a_plain_index():
    """With action = index on a plain index, a re-send overwrites and is no error."""
    events = make_events(["plain"])
    async with ElasticsearchReceiver(index="kmsg") as es:
        config = es_config(es, action="index")
        await send(config, events)
        result = await send(config, events)
        assert result == Outcome.delivered()
        assert es.item_statuses == [201, 200]


@pytest.mark.parametrize(
    ("reply", "verdict", "retry_after_s"),
    [
        (Reply(429, "{}", {"Retry-After": "3"}), Verdict.UNAVAILABLE, 3.0),
        (Reply(502, "bad gateway"), Verdict.UNAVAILABLE, None),
        (Reply(413, "too large"), Verdict.SPLIT, None),
        (Reply(401, "no auth"), Verdict.OPERATOR_NEEDED, None),
        (Reply(404, "no such path"), Verdict.OPERATOR_NEEDED, None),
        (Reply(200, "not json"), Verdict.UNAVAILABLE, None),
        (Reply(200, '{"errors": false, "items": []}'), Verdict.UNAVAILABLE, None),
    ],
)
async def test_whole_request_status_classes(reply, verdict, retry_after_s):
    """Whole-request answers map to split, retry or operator needed."""
    async with ElasticsearchReceiver() as es:
        es.script(reply)
        outcome = await send(es_config(es), make_events(["x"]))
    assert (outcome.verdict, outcome.retry_after_s) == (verdict, retry_after_s)


async def test_whole_request_4xx_dead_letters_the_batch():
    """A whole-request 400 (malformed bulk) rejects every event as es_request."""
    events = make_events(["x", "y"])
    async with ElasticsearchReceiver() as es:
        es.script(Reply(400, "malformed"))
        result = await send(es_config(es), events)
    assert [(r.index, r.reason) for r in result.rejected] == [(0, "es_request"), (1, "es_request")]


async def test_max_bulk_bytes_splits_before_sending():
    """A bulk body over max_bulk_bytes is answered 'too large' locally, so no request is made."""
    async with ElasticsearchReceiver() as es:
        outcome = await send(es_config(es, max_bulk_bytes=1024), make_events(["z" * 400] * 4))
        assert outcome.verdict is Verdict.SPLIT
        assert es.requests == []


async def test_api_key_from_file(tmp_path: Path):
    """api_key_file sends Authorization: ApiKey <key>."""
    key_file = tmp_path / "key"
    key_file.write_text("a2V5OnNlY3JldA==\n")
    async with ElasticsearchReceiver(authorization="ApiKey a2V5OnNlY3JldA==") as es:
        await send(es_config(es, api_key_file=str(key_file)), make_events(["authed"]))
        assert len(es.docs) == 1


async def test_wrong_credentials_are_a_configuration_error():
    """A 401 for bad credentials keeps the data and signals a configuration problem."""
    async with ElasticsearchReceiver(authorization="Bearer right") as es:
        outcome = await send(es_config(es, bearer_token="wrong"), make_events(["x"]))
    assert outcome.verdict is Verdict.OPERATOR_NEEDED


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"index": "Logs"}, "index must be lowercase"),
        ({"index": "_x"}, "index must be lowercase"),
        ({"api_key": "k", "bearer_token": "t"}, "one kind of authentication"),
        ({"headers": {"Content-Type": "text/plain"}}, "set by the sink"),
        ({"action": "update"}, "action"),
    ],
)
def test_config_errors(options, message):
    """Bad index names, two kinds of auth and reserved headers fail at config time."""
    raw = {
        "sinks": {"es": {"type": "elasticsearch", "endpoint": "http://127.0.0.1:9200", **options}}
    }
    with pytest.raises(ConfigError, match=message):
        parse_config(raw)


async def test_a_kernel_event_is_stored_under_its_id_and_a_resend_is_a_duplicate():
    """A kernel event's _id is its id (<boot_id>-<first_seq>-<class>): sent twice, stored once."""
    who = identity()
    events = [*make_events(["record"], who=who), make_kernel_event("hung_task", 100, who=who)]
    async with ElasticsearchReceiver() as es:
        config = es_config(es)
        assert await send(config, events) == Outcome.delivered()
        assert list(es.docs) == [events[0].id, f"{who.boot_id}-100-hung_task"]
        result = await send(config, events[1:])
        assert (result.duplicates, result.rejected) == (1, ())
