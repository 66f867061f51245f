"""The catalogue of Prometheus metrics (exposition by ``prometheus_client``).

One registry per forwarder instance (not the global one), so tests and embedded uses
never share counters. Names follow Prometheus conventions: ``_total`` counters, base
units (seconds, bytes). ``records_read_total{facility,level}`` gives dmesg_exporter
parity: alert on ``level="crit"``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

PREFIX = "kmsg_forwarder"


class Metrics:
    """Every metric the forwarder exports."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.records_read = Counter(
            f"{PREFIX}_records_read", "Kernel records read, by facility and level.",
            ["facility", "level"], registry=registry,
        )  # fmt: skip
        self.records_lost = Counter(
            f"{PREFIX}_records_lost", "Kernel records lost before they could be read, by reason.",
            ["reason"], registry=registry,
        )  # fmt: skip
        self.overruns = Counter(
            f"{PREFIX}_overruns", "Times read() reported overwritten records (EPIPE).",
            registry=registry,
        )  # fmt: skip
        self.parse_errors = Counter(
            f"{PREFIX}_parse_errors", "Raw records that could not be parsed (skipped).",
            registry=registry,
        )  # fmt: skip
        self.records_rejected = Counter(
            f"{PREFIX}_records_rejected",
            "Dump records no kernel writes (a raw NUL, too long), dropped by capture, by reason.",
            ["reason"], registry=registry,
        )  # fmt: skip
        self.records_failed = Counter(
            f"{PREFIX}_records_failed",
            "Records whose handling failed unexpectedly, written to the source dead-letter file.",
            registry=registry,
        )
        self.records_sent = Counter(
            f"{PREFIX}_records_sent", "Events confirmed by a sink.", ["sink"], registry=registry
        )
        self.records_filtered = Counter(
            f"{PREFIX}_records_filtered",
            "Events a sink does not take (min_level, its events selection); checkpointed.",
            ["sink"], registry=registry,
        )  # fmt: skip
        self.records_duplicate = Counter(
            f"{PREFIX}_records_duplicate", "Events a sink already had (e.g. Elasticsearch 409).",
            ["sink"], registry=registry,
        )  # fmt: skip
        self.records_dead_lettered = Counter(
            f"{PREFIX}_records_dead_lettered", "Events refused for good, written to dead-letter.",
            ["sink", "reason"], registry=registry,
        )  # fmt: skip
        self.sink_retries = Counter(
            f"{PREFIX}_sink_retries", "Failed send attempts that will be retried.",
            ["sink"], registry=registry,
        )  # fmt: skip
        self.batch_splits = Counter(
            f"{PREFIX}_batch_splits",
            "Batches split in two because the receiver found them too large.",
            ["sink"], registry=registry,
        )  # fmt: skip
        self.gap_events = Counter(
            f"{PREFIX}_gap_events", "Gap events emitted to a sink, by reason.",
            ["sink", "reason"], registry=registry,
        )  # fmt: skip
        self.kernel_events = Counter(
            f"{PREFIX}_kernel_events",
            "Kernel events (classified reports) emitted, by class, kind and (hw_error) severity.",
            ["class", "kind", "severity"], registry=registry,
        )  # fmt: skip
        self.kernel_event_errors = Counter(
            f"{PREFIX}_kernel_event_errors",
            "Records or flushes the kernel-event classifier failed on (a bug; logged, skipped).",
            registry=registry,
        )
        self.kernel_events_dropped = Counter(
            f"{PREFIX}_kernel_events_dropped",
            "Kernel events dropped for a lagging sink: more than 10,000 waited for its cursor.",
            ["sink"], registry=registry,
        )  # fmt: skip
        self.batch_latency = Histogram(
            f"{PREFIX}_batch_latency_seconds",
            "Time from a batch's first send to its confirmation.",
            ["sink"], registry=registry,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )  # fmt: skip
        self.buffer_records = Gauge(
            f"{PREFIX}_buffer_records", "Records waiting in the forwarder for a sink.",
            ["sink"], registry=registry,
        )  # fmt: skip
        self.buffer_bytes = Gauge(
            f"{PREFIX}_capture_buffer_bytes", "Bytes received from capture and not yet parsed.",
            registry=registry,
        )  # fmt: skip
        self.checkpoint_seq = Gauge(
            f"{PREFIX}_checkpoint_seq", "Kernel seq up to which a sink confirmed delivery.",
            ["sink"], registry=registry,
        )  # fmt: skip
        self.checkpoint_lag = Gauge(
            f"{PREFIX}_checkpoint_lag_records", "Newest seq read minus the sink's checkpoint seq.",
            ["sink"], registry=registry,
        )  # fmt: skip
        self.last_seq_read = Gauge(
            f"{PREFIX}_last_seq_read", "Seq of the newest record read.", registry=registry
        )
        self.sink_up = Gauge(
            f"{PREFIX}_sink_up", "1 while the sink's last attempt succeeded, else 0.",
            ["sink"], registry=registry,
        )  # fmt: skip
        self.clock_offset_drift = Gauge(
            f"{PREFIX}_clock_offset_drift_seconds",
            "Current (realtime - monotonic) minus the boot's stored offset used for timestamps.",
            registry=registry,
        )

        self._spool_metrics(registry)

    def _spool_metrics(self, registry: CollectorRegistry) -> None:
        self.spool_bytes = Gauge(
            f"{PREFIX}_spool_bytes", "Bytes of the spool's segment files (bounded by max_bytes).",
            registry=registry,
        )  # fmt: skip
        self.spool_segments = Gauge(
            f"{PREFIX}_spool_segments", "Segment files in the spool.", registry=registry
        )
        self.spool_oldest_seq = Gauge(
            f"{PREFIX}_spool_oldest_seq", "Seq of the oldest record the spool holds (-1: none).",
            registry=registry,
        )  # fmt: skip
        self.spool_newest_seq = Gauge(
            f"{PREFIX}_spool_newest_seq", "Newest spooled seq of this boot (-1: none).",
            registry=registry,
        )  # fmt: skip
        self.spool_degraded = Gauge(
            f"{PREFIX}_spool_degraded",
            "1 while the spool's disk refuses writes (records held in memory, then the ring).",
            registry=registry,
        )
        self.spool_memory_bytes = Gauge(
            f"{PREFIX}_spool_memory_bytes", "Record bytes held in memory while the disk fails.",
            registry=registry,
        )  # fmt: skip
        self.spool_lag_records = Gauge(
            f"{PREFIX}_spool_lag_records", "Records a lagging sink has yet to read from the spool.",
            ["sink"], registry=registry,
        )  # fmt: skip
        self.spool_records_appended = Counter(
            f"{PREFIX}_spool_records_appended", "Records appended to the spool.", registry=registry
        )
        self.spool_write_errors = Counter(
            f"{PREFIX}_spool_write_errors", "Failed spool writes or syncs (ENOSPC, EIO, ...).",
            registry=registry,
        )  # fmt: skip
        self.spool_truncated_bytes = Counter(
            f"{PREFIX}_spool_truncated_bytes", "Torn tail bytes cut from the spool at start.",
            registry=registry,
        )  # fmt: skip
        self.spool_corrupt_segments = Counter(
            f"{PREFIX}_spool_corrupt_segments", "Spool segments quarantined as damaged.",
            registry=registry,
        )  # fmt: skip
        self.spool_fsyncs = Counter(
            f"{PREFIX}_spool_fsyncs", "fsync calls on the spool.", registry=registry
        )
        self.spool_fsync_seconds = Counter(
            f"{PREFIX}_spool_fsync_seconds", "Time spent in fsync of the spool.", registry=registry
        )

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric."""
        return generate_latest(self.registry)
