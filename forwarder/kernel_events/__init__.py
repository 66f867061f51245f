"""Kernel events: classify and group kernel log records into typed reports.

See /work/shared/kernel-events/SPEC.md (shipped as the README's "Kernel events" section):
22 classes, the grouping state machine, the event envelope.
"""

from forwarder.kernel_events.catalogue import CLASSES
from forwarder.kernel_events.classifier import KernelEventClassifier
from forwarder.kernel_events.model import KernelEvent
from forwarder.kernel_events.rules import UserRule

__all__ = ["CLASSES", "KernelEvent", "KernelEventClassifier", "UserRule"]
