"""The ``loki`` sink: push events to Grafana Loki, with Loki's partial-success semantics.

API: https://grafana.com/docs/loki/latest/reference/loki-http-api/#ingest-logs (body
shapes in :mod:`forwarder.sinks.loki.push`). Labels stay low-cardinality (host,
facility, level by default); seq, boot_id, id, subsystem and device travel as
structured metadata. Timestamps are the event's deterministic ``@timestamp``, so a
re-sent entry is identical and Loki drops it as a duplicate.

What Loki would refuse is refused here first (label rules, line size, age), so a
batch never fails for one bad entry. Answers: 2xx stored (260: stored nothing, by
policy: dead-lettered as ``loki_blocked``); 400 is a partial success, never retried:
the ignored entries are dead-lettered as ``loki_400`` with Loki's reason; 404 (wrong
endpoint) needs an operator; the rest as in :mod:`forwarder.sinks.http.client`
(other 4xx: ``loki_4xx``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from typing import Any, Final

import aiohttp
import cramjam
import structlog

from forwarder.encoding.chunk import Slice
from forwarder.encoding.reference import Event
from forwarder.sinks.base import Batch, Sink
from forwarder.sinks.http.client import HttpClient, classify_error, classify_reply, compress
from forwarder.sinks.loki import push as loki_push
from forwarder.sinks.loki.columns import ColumnEntries
from forwarder.sinks.loki.config import MAX_LABEL_VALUE_BYTES, LokiSinkConfig
from forwarder.sinks.loki.push import Entry, LabelSet, Stream
from forwarder.sinks.outcome import Outcome, Rejection, Verdict

_MAX_CACHED_LABEL_SETS: Final = 4096
_CONFIG: Final = frozenset({404})  # a wrong endpoint path: a configuration problem
_log = structlog.get_logger(__name__)
_Labelled = tuple[LabelSet, Entry, tuple[str, str] | None]


class LokiSink(Sink):
    """Pushes batches to Loki; partial 400s become per-entry rejections."""

    def __init__(
        self,
        name: str,
        config: LokiSinkConfig,
        *,
        session: aiohttp.ClientSession | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(name)
        self._config = config
        self._client: HttpClient = config.client(config.push_url(), session)
        self._clock = clock
        self._headers = {
            "Content-Type": "application/json"
            if config.encoding == "json"
            else "application/x-protobuf"
        }
        if config.tenant_id:
            self._headers["X-Scope-OrgID"] = config.tenant_id
        self._static = tuple(config.labels.items())
        self._label_sets: dict[tuple[Any, ...], tuple[LabelSet, tuple[str, str] | None]] = {}
        self._what = f"Loki {name}"
        self._columns = ColumnEntries(config.label_fields, config.structured_metadata)

    async def start(self) -> None:
        """Open the connection pool."""
        await self._client.start()

    async def send(self, batch: Batch) -> Outcome:
        """Push the batch; entries Loki (or our pre-check) refused come back as rejected."""
        now_ns = self._clock() * 1e9
        streams: list[Stream] | None = None
        fast = self._fast_body(batch, now_ns)
        if fast is not None:
            body, sent, rejected = fast
            headers = self._headers
        else:
            streams, index_of, rejected = self._streams(batch, now_ns)
            sent = list(index_of.values())
            body, headers = self._body(streams) if streams else (b"", self._headers)
        if not sent:
            return Outcome.answered(rejected=rejected)
        reply = await self._client.send(body, headers)
        if reply.status == 260:
            blocked = f"Loki blocked ingestion (HTTP 260): {reply.excerpt()}"
            rejected += [Rejection(index, "loki_blocked", blocked) for index in sent]
        elif reply.status == 400:
            # Which entries Loki names: the answer is matched against the entries sent.
            streams, index_of, _ = self._streams(batch, now_ns)
            ignored = loki_push.rejected_entries(reply.body.decode("utf-8", "replace"), streams)
            rejected += [
                Rejection(index_of[key], "loki_400", why) for key, (_, why) in ignored.items()
            ]
            _log.warning(
                "loki_partial_success",
                sink=self.name,
                ignored=len(ignored),
                sent=len(sent),
                reasons=sorted({why for _, why in ignored.values()})[:5],
            )
        else:
            outcome = classify_reply(
                reply, self._what, sent, reason="loki_4xx", config_statuses=_CONFIG
            )
            if outcome.verdict is not Verdict.ANSWERED:
                return outcome
            rejected += outcome.rejected
        return Outcome.answered(rejected=rejected)

    def _streams(
        self, batch: Batch, now_ns: float
    ) -> tuple[list[Stream], dict[int, int], list[Rejection]]:
        """Streams of entries (the slow, general path), ``id(entry)`` -> index, rejections."""
        rejected: list[Rejection] = []
        labelled: list[tuple[LabelSet, Entry]] = []
        index_of: dict[int, int] = {}  # id(entry) -> its index in the batch
        for index, (labels, entry, problem) in enumerate(self._entries(batch, now_ns)):
            if problem is not None:
                rejected.append(Rejection(index, problem[0], problem[1]))
            else:
                labelled.append((labels, entry))
                index_of[id(entry)] = index
        return loki_push.group_streams(labelled), index_of, rejected

    def _fast_body(
        self, batch: Batch, now_ns: float
    ) -> tuple[bytes, list[int], list[Rejection]] | None:
        """The snappy protobuf body of a batch of slices, from the chunks' columns.

        None when the general path applies: JSON bodies, a standalone event in the batch,
        metadata the columns do not hold.
        """
        config = self._config
        if config.encoding != "protobuf" or not self._columns.usable:
            return None
        if not all(isinstance(part, Slice) for part in batch.parts):
            return None
        oldest = now_ns - config.max_age_s * 1e9 if config.max_age_s else -math.inf
        newest = now_ns + config.max_future_s * 1e9 if config.max_future_s else math.inf
        grouped: dict[LabelSet, list[tuple[int, bytes]]] = {}
        sent: list[int] = []
        rejected: list[Rejection] = []
        base = 0
        for part in batch.parts:
            assert isinstance(part, Slice)
            for offset, labels, problem, timestamp_ns, entry in self._columns.protobuf(
                part, self._label_set_of, config.line == "message", config.max_line_bytes,
                oldest, newest,
            ):  # fmt: skip
                if problem is not None:
                    # The exact words come from the general path (a rare case).
                    _, _, words = self._entry(batch.event(base + offset), now_ns)
                    if words is not None:
                        rejected.append(Rejection(base + offset, *words))
                        continue
                grouped.setdefault(labels, []).append((timestamp_ns, entry))
                sent.append(base + offset)
            base += len(part)
        body = loki_push.protobuf_streams(grouped)
        return bytes(cramjam.snappy.compress_raw(body)), sent, rejected

    def _label_set_of(self, values: tuple[Any, ...]) -> tuple[LabelSet, tuple[str, str] | None]:
        cached = self._label_sets.get(values)
        return cached if cached is not None else self._label_set(values)

    def classify(self, error: Exception) -> Outcome:
        """No answer from Loki (see :func:`classify_error`)."""
        return classify_error(error, self._client.url)

    async def close(self) -> None:
        """Close the connection pool."""
        await self._client.close()

    def _body(self, streams: list[Stream]) -> tuple[bytes, dict[str, str]]:
        if self._config.encoding == "protobuf":
            raw = bytes(cramjam.snappy.compress_raw(loki_push.protobuf_body(streams)))
            return raw, self._headers
        body, encoding = compress(loki_push.json_body(streams), self._config.compression)
        return body, self._headers | encoding

    def _entries(self, batch: Batch, now_ns: float) -> Iterator[_Labelled]:
        """Labels, entry and problem of every record; a slice's come from its chunk's columns."""
        for part in batch.parts:
            if isinstance(part, Event):
                yield self._entry(part, now_ns)
                continue
            if not self._columns.usable:  # metadata the columns do not hold (flags, caller)
                for event in Batch([part]).events:
                    yield self._entry(event, now_ns)
                continue
            for values, entry in self._columns.entries(part, self._config.line == "message"):
                cached = self._label_sets.get(values)
                if cached is None:
                    cached = self._label_set(values)
                labels, problem = cached
                yield labels, entry, problem or self._entry_problem(entry, now_ns)

    def _entry(self, event: Event, now_ns: float) -> _Labelled:
        """Labels and entry of an event, or the reason Loki would refuse it."""
        fields = event.fields
        config = self._config
        key = tuple(fields.get(name) for name in config.label_fields)
        cached = self._label_sets.get(key)
        if cached is None:
            cached = self._label_set(key)
        labels, problem = cached
        metadata = tuple(
            (name, str(fields[name])) for name in config.structured_metadata if name in fields
        )
        if config.line == "message" and event.kind == "kmsg":
            line = str(fields["message"])
        else:
            line = event.json.decode()
        # The entry time is @timestamp exactly (microseconds), so sub-microsecond noise in
        # a re-measured clock offset cannot make a re-sent entry look new to Loki.
        timestamp_ns = event.timestamp_ns - event.timestamp_ns % 1000
        entry = Entry(timestamp_ns, line, metadata, event)
        if problem is None:
            problem = self._entry_problem(entry, now_ns)
        return labels, entry, problem

    def _label_set(self, values: tuple[Any, ...]) -> tuple[LabelSet, tuple[str, str] | None]:
        """The sorted label set for these field values, and what Loki would say against it.

        Label values are low-cardinality by design, so each set is built and checked once.
        """
        labels = [*self._static]
        labels += [
            (name, str(value))
            for name, value in zip(self._config.label_fields, values, strict=True)
            if value not in (None, "")
        ]
        labels.sort()
        problem = None
        if not labels:
            problem = "loki_labels", "the record has none of the label fields"
        elif too_long := [n for n, v in labels if _utf8_over(v, MAX_LABEL_VALUE_BYTES)]:
            problem = "loki_labels", f"label {too_long[0]} is over 2048 bytes"
        if len(self._label_sets) >= _MAX_CACHED_LABEL_SETS:
            self._label_sets.clear()
        self._label_sets[values] = result = (tuple(labels), problem)
        return result

    def _entry_problem(self, entry: Entry, now_ns: float) -> tuple[str, str] | None:
        # Structured metadata needs no size check: every field allowed in it is bounded
        # (ids, seq, device <= 47 bytes...), far below Loki's 64 KiB per entry.
        config = self._config
        if _utf8_over(entry.line, config.max_line_bytes):
            size = len(entry.line.encode())
            return "loki_line_too_long", f"line of {size} bytes > {config.max_line_bytes}"
        if config.max_age_s and entry.timestamp_ns < now_ns - config.max_age_s * 1e9:
            return "loki_too_old", f"timestamp older than max_age_s={config.max_age_s:g}"
        if config.max_future_s and entry.timestamp_ns > now_ns + config.max_future_s * 1e9:
            return "loki_too_new", f"timestamp beyond max_future_s={config.max_future_s:g}"
        return None


def _utf8_over(text: str, limit: int) -> bool:
    """Whether ``text`` is over ``limit`` bytes in UTF-8 (encoding only when it may be)."""
    return len(text) * 4 > limit and len(text.encode()) > limit
