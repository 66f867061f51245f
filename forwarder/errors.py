"""The one exception tree of kmsg-forwarder.

Each branch means something different to the caller::

    ForwarderError                 anything this package raises on purpose
    ├── ConfigError                the config file or a CLI option is wrong (exit 2)
    ├── StartupError               the environment refuses us before reading (exit 3)
    │   ├── DeviceError            /dev/kmsg (or the dump) cannot be opened
    │   └── StateError             the state dir or a checkpoint is unusable
    │       └── CheckpointCorruptError
    ├── RecordParseError           one raw record is malformed (also a ValueError);
    │                              the pipeline counts it and goes on
    ├── OutputClosedError          a sink's output is gone for good (stdout closed):
    │                              the forwarder stops (exit 1)
    └── SinkError                  a sink could not deliver a batch
        ├── RetryableSinkError     transient: the pipeline retries with backoff
        │   └── SinkConfigError    auth / unknown topic: retried, shown on /readyz
        ├── BatchTooLargeError     the receiver refused the size: the pipeline splits
        └── FatalSinkError         permanent for this batch: dead-lettered, never retried

Sinks only classify failures into these branches; the pipeline alone decides what
to do about them (retry, split, dead-letter).
"""

from __future__ import annotations


class ForwarderError(Exception):
    """Base of every error kmsg-forwarder raises on purpose."""


class ConfigError(ForwarderError):
    """The configuration is invalid; the message names the key path."""


class StartupError(ForwarderError):
    """The environment is not usable; raised before anything is read."""


class DeviceError(StartupError):
    """The kmsg device or dump file cannot be opened or read."""


class StateError(StartupError):
    """The state directory or a checkpoint file cannot be used."""


class CheckpointCorruptError(StateError):
    """A checkpoint file exists but does not hold a valid checkpoint."""


class RecordParseError(ForwarderError, ValueError):
    """One raw kmsg record is malformed; the message says what is wrong."""


class OutputClosedError(ForwarderError):
    """A sink's output is gone for good (its reader closed stdout): the forwarder stops."""


class SinkError(ForwarderError):
    """A sink could not deliver a batch."""


class RetryableSinkError(SinkError):
    """A transient failure; ``retry_after_s`` carries a server's Retry-After."""

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class SinkConfigError(RetryableSinkError):
    """The receiver refuses us for a configuration reason (auth, unknown topic).

    Retried with backoff (data is kept) and reported as not ready.
    """


class BatchTooLargeError(SinkError):
    """The receiver refused the batch for its size; the pipeline splits it."""


class FatalSinkError(SinkError):
    """The batch can never be delivered as it is; it goes to the dead-letter file."""
