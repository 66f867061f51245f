"""kmsg-forwarder: ship the Linux kernel log with checkpoints, gap reports and retry.

The packages follow the data flow::

    source/ (capture, parse) -> encoding/ -> routing -> delivery/ (batch, retry,
    checkpoint) -> sinks/; telemetry/ (metrics, logs, status server) watches every
    stage, and the server (prepare, run, drain, shut down) wires them together.
"""
