"""usb_device and kernel_taint (SPEC.md sections 3.21, 3.22).

USB: drivers/usb/core/hub.c (``usb <path>: ``); a connect groups the ``new ... device``
line with the same path's identity lines. Taint: kernel/module/main.c (kernel/module.c
before 5.19).
"""

from __future__ import annotations

import re
from typing import Final

from forwarder.kernel_events.report import Report, SingleReport, Verdict
from forwarder.kernel_events.values import Fields
from forwarder.source.parser import Record

_USB: Final = re.compile(r"usb (?P<path>\d+-[\d.]+): (?P<msg>.*)$")
_USB_NEW: Final = re.compile(
    r"new (?:(?P<speed>.+?) )?USB device number (?P<devnum>\d+) using (?P<hcd>\S+)"
)
_USB_DISCONNECT: Final = re.compile(r"USB disconnect, device number (?P<devnum>\d+)")
_USB_ID: Final = re.compile(
    r"New USB device found, idVendor=(?P<vendor_id>\w+), idProduct=(?P<product_id>\w+)"
    r"(?:, bcdDevice= ?(?P<bcd_device>\S+))?"
)
_USB_STRINGS: Final = re.compile(
    r"New USB device strings: Mfr=(?P<mfr>\d+), Product=(?P<product>\d+), "
    r"SerialNumber=(?P<serial>\d+)"
)
_USB_TEXT: Final = {
    "Product: ": "product",
    "Manufacturer: ": "manufacturer",
    "SerialNumber: ": "serial",
}
# How every line a connect's report takes begins after "usb <path>: " (the regexes below).
_JOINING: Final = ("New USB device found, ", "New USB device strings: ", *_USB_TEXT)
_TAINTS: Final = (
    (re.compile(r"(?P<module>\S+): loading out-of-tree module taints kernel\."), "O",
     "out_of_tree"),
    (re.compile(r"(?P<module>\S+): module verification failed: signature and/or required key "
                r"missing - tainting kernel"), "E", "unsigned"),
    (re.compile(r"(?P<module>\S+): module license '(?P<license>.*)' taints kernel\."), "P",
     "proprietary_license"),
    (re.compile(r"(?P<module>\S+): module license taints kernel\."), "P", "proprietary_license"),
    (re.compile(r"(?P<module>\S+): loading test module taints kernel\."), "N", "test"),
    (re.compile(r"(?P<module>\S+): tainting kernel with TAINT_LIVEPATCH"), "K", "livepatch"),
    (re.compile(r"(?P<module>\S+): module is from the staging directory"), "C", "staging"),
)  # fmt: skip


class UsbDevice(Report):
    """usb_device: a disconnect, or a connect with its identity lines."""

    class_name = "usb_device"

    def __init__(self, record: Record, fields: Fields, *, done: bool) -> None:
        super().__init__(record, fields, key=fields["path"], done=done)
        self.strings_left: set[str] | None = None
        self.head = self._head = f"usb {self.key}: "  # every line of this device starts so

    def offer(self, record: Record, text: str, previous_text: str) -> Verdict:
        """The same path's ``New USB device ...``, Product, Manufacturer, SerialNumber lines."""
        del record, previous_text
        # Most records: no regex at all. A member's message starts with one of _JOINING.
        if not text.startswith(self._head) or not text.startswith(_JOINING, len(self._head)):
            return Verdict.REJECT
        match = _USB.match(text)
        if match is None or match["path"] != self.key:
            return Verdict.REJECT
        message, fields = match["msg"], self.fields
        identity = _USB_ID.match(message)
        if identity:
            fields.update((k, v) for k, v in identity.groupdict().items() if v is not None)
            return Verdict.JOIN
        strings = _USB_STRINGS.match(message)
        if strings:
            self.strings_left = {k for k, v in strings.groupdict().items() if v != "0"}
            return Verdict.JOIN if self.strings_left else Verdict.DONE
        for prefix, name in _USB_TEXT.items():
            if message.startswith(prefix):
                fields[name] = message[len(prefix) :]
                left = self.strings_left
                if left is not None:
                    left.discard({"manufacturer": "mfr"}.get(name, name))
                return Verdict.DONE if left is not None and not left else Verdict.JOIN
        return Verdict.REJECT


class KernelTaint(SingleReport):
    """kernel_taint: a module tainted the kernel."""

    class_name = "kernel_taint"


def detect_usb_device(record: Record, text: str) -> UsbDevice | None:
    """``usb <path>: USB disconnect ...`` or ``new ... USB device number ...``."""
    match = _USB.match(text)
    if match is None:
        return None
    fields: Fields = {"path": match["path"]}
    disconnect = _USB_DISCONNECT.match(match["msg"])
    if disconnect:
        fields.update(action="disconnect", devnum=int(disconnect["devnum"]))
        return UsbDevice(record, fields, done=True)
    new = _USB_NEW.match(match["msg"])
    if new is None:
        return None
    fields.update(action="connect", devnum=int(new["devnum"]), hcd=new["hcd"])
    if new["speed"]:
        fields["speed"] = new["speed"]
    return UsbDevice(record, fields, done=False)


def detect_kernel_taint(record: Record, text: str) -> KernelTaint | None:
    """A module's ``... taints kernel`` / ``tainting kernel`` line."""
    for pattern, flag, reason in _TAINTS:
        match = pattern.match(text)
        if match:
            fields: Fields = {k: v for k, v in match.groupdict().items() if v is not None}
            return KernelTaint(record, {**fields, "flag": flag, "reason": reason})
    return None
