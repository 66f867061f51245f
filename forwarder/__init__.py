"""kmsg-forwarder: ship the Linux kernel log with checkpoints, gap reports and retry.

The packages follow the data flow::

    source/ (capture, parse) -> reader (encoding/, routing: one chunk per window, fanned
    out) -> delivery/ (batch, retry, checkpoint) -> sinks/; telemetry/ (named events,
    metrics, logs, health, status server) watches every stage, and server (prepare, run,
    drain, shut down) wires them together.
"""
