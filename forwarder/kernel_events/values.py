"""Field value conventions shared by every class (vectors.json ``field_conventions``).

Hex addresses become ``0x`` + lowercase digits without leading zeros, taint letters lose
their padding and ``G``, x86 page-fault error codes decode to named bits.
"""

from __future__ import annotations

import re
from typing import Any, Final

Fields = dict[str, Any]

_PF_EXTRA_BITS: Final = (
    (3, "reserved_bit"),
    (5, "protection_key"),
    (6, "shadow_stack"),
    (15, "sgx"),
)


def hex_address(digits: str) -> str:
    """``00007ffd2392`` or ``0x0000006a`` -> ``0x7ffd2392`` / ``0x6a`` (``0x0`` for zero)."""
    value = digits[2:] if digits[:2].lower() == "0x" else digits
    return "0x" + (value.lower().lstrip("0") or "0")


def hex_int(digits: str) -> int:
    """A hex code the conventions want as an integer (``error 4``, ``op 0x1``)."""
    return int(digits, 16)


def taint_letters(taint: str) -> str:
    """``Tainted: G        W  OE`` -> ``WOE``; ``Not tainted`` -> ``''``."""
    if not taint.startswith("Tainted:"):
        return ""
    return "".join(letter for letter in taint[8:] if letter.isalpha() and letter != "G")


def page_fault_flags(code: int) -> list[str]:
    """x86 page-fault error bits in the order [presence, access, mode, extras]."""
    flags = ["protection" if code & 1 else "not_present"]
    if code & 2:
        flags.append("write")
    elif code & 16:
        flags.append("instruction_fetch")
    else:
        flags.append("read")
    flags.append("user" if code & 4 else "kernel")
    flags.extend(name for bit, name in _PF_EXTRA_BITS if code >> bit & 1)
    return flags


def apply_match(fields: Fields, match: re.Match[str], converters: dict[str, Any]) -> None:
    """Copy the named groups that matched into ``fields``, converted by name.

    ``converters`` maps a group name to ``int``, :func:`hex_address`, ... (default: the
    text as printed); groups that did not take part are left out.
    """
    for name, value in match.groupdict().items():
        if value is not None:
            convert = converters.get(name)
            fields[name] = convert(value) if convert is not None else value
