"""The telemetry catalogue: each event logs once and counts once; without metrics it only logs."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from forwarder.sinks.outcome import Rejection
from forwarder.telemetry.events import CLOCK_DRIFT_WARN_NS, Emitter
from forwarder.telemetry.metrics import Metrics


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    """One sample of ``metrics`` (None when it was never set)."""
    return metrics.registry.get_sample_value(f"kmsg_forwarder_{name}", labels)


def test_records_lost_logs_one_warning_and_counts_the_lost_records():
    """records_lost adds ``lost`` to records_lost_total{reason} and logs one warning with the range."""
    metrics = Metrics()
    with capture_logs() as logs:
        Emitter(metrics).records_lost("overwritten", 10, 14, 5)
    assert sample(metrics, "records_lost_total", reason="overwritten") == 5
    assert logs == [
        {
            "event": "records_lost",
            "log_level": "warning",
            "reason": "overwritten",
            "first_seq": 10,
            "last_seq": 14,
            "lost": 5,
        }
    ]


def test_sink_retry_counts_one_retry_and_logs_it():
    """sink_retry counts one retry for the sink and logs its verdict, error and wait."""
    metrics = Metrics()
    with capture_logs() as logs:
        Emitter(metrics).sink_retry("es", "unavailable", "503", 0.12345)
    assert sample(metrics, "sink_retries_total", sink="es") == 1
    (entry,) = logs
    assert entry["event"] == "sink_retry"
    assert (entry["sink"], entry["verdict"], entry["error"], entry["wait_s"]) == (
        "es",
        "unavailable",
        "503",
        0.123,
    )


def test_rejections_count_per_reason_and_log_once_per_answer():
    """rejected_by_receiver counts each refused event under its reason, in one error line."""
    metrics = Metrics()
    rejections = [
        Rejection(0, "mapping", "bad field"),
        Rejection(3, "mapping", "x"),
        Rejection(4, "size", "y"),
    ]
    with capture_logs() as logs:
        Emitter(metrics).rejected_by_receiver("es", rejections)
    assert sample(metrics, "records_dead_lettered_total", sink="es", reason="mapping") == 2
    assert sample(metrics, "records_dead_lettered_total", sink="es", reason="size") == 1
    (entry,) = logs
    assert (entry["events"], entry["reasons"], entry["first_detail"]) == (
        3,
        ["mapping", "size"],
        "bad field",
    )


def test_records_read_counts_by_facility_and_level():
    """records_read turns prefixes (facility << 3 | level) into records_read_total{facility,level}."""
    metrics = Metrics()
    Emitter(metrics).records_read([0 << 3 | 4, 0 << 3 | 4, 3 << 3 | 2])
    assert sample(metrics, "records_read_total", facility="kern", level="warning") == 2
    assert sample(metrics, "records_read_total", facility="daemon", level="crit") == 1


@pytest.mark.parametrize(
    ("drift_ns", "warned"), [(CLOCK_DRIFT_WARN_NS, False), (-CLOCK_DRIFT_WARN_NS - 1, True)]
)
def test_the_clock_offset_check_warns_only_beyond_a_second(drift_ns, warned):
    """The start-up drift always sets the gauge; only a drift beyond one second is logged."""
    metrics = Metrics()
    with capture_logs() as logs:
        Emitter(metrics).boot_clock_offset_checked(drift_ns)
    assert sample(metrics, "clock_offset_drift_seconds") == drift_ns / 1e9
    assert [entry["event"] for entry in logs] == (["clock_offset_changed"] if warned else [])


def test_without_metrics_events_still_log_and_nothing_is_counted():
    """An emitter without metrics (no listener) logs the same lines and needs no registry."""
    emit = Emitter(None)
    with capture_logs() as logs:
        emit.records_lost("reboot", 1, 9, 9)
        emit.parse_error(ValueError("not a record"))
        emit.records_read([6])
        emit.checkpoint("out", 9)
        emit.dead_lettered("out", "too_large", "413", 1)
    assert [entry["event"] for entry in logs] == ["records_lost", "parse_error", "dead_lettered"]
