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
    └── OutputClosedError          a sink's output is gone for good (stdout closed):
                                   the forwarder stops (exit 1)

What a receiver answers about a batch is no exception: ``Sink.send`` returns one
:class:`forwarder.sinks.outcome.Outcome` (delivered, items to retry, rejections,
duplicates, too large, operator needed). Any other exception out of a sink means "no
answer"; the sink's ``classify`` maps it to an Outcome and the delivery worker retries.
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
