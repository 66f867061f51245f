"""Protobuf wire-format pieces shared by the hand-written encoders (Loki push, OTLP logs).

See https://protobuf.dev/programming-guides/encoding/ (varints).
"""

from __future__ import annotations

from typing import Final

ONE_BYTE: Final = tuple(bytes((value,)) for value in range(0x80))
"""The varint of each value below 0x80 (one byte), ready made."""


def varint(value: int) -> bytes:
    """An unsigned protobuf varint."""
    # Unrolled up to 5 bytes (< 2**35): lengths, nanoseconds and today's Unix seconds.
    if value < 0x80:
        return ONE_BYTE[value]
    if value < 0x4000:
        return bytes((value & 0x7F | 0x80, value >> 7))
    if value < 0x20_0000:
        return bytes((value & 0x7F | 0x80, value >> 7 & 0x7F | 0x80, value >> 14))
    if value < 0x1000_0000:
        return bytes(
            (value & 0x7F | 0x80, value >> 7 & 0x7F | 0x80, value >> 14 & 0x7F | 0x80, value >> 21)
        )
    if value < 0x8_0000_0000:
        return bytes(
            (
                value & 0x7F | 0x80,
                value >> 7 & 0x7F | 0x80,
                value >> 14 & 0x7F | 0x80,
                value >> 21 & 0x7F | 0x80,
                value >> 28,
            )
        )
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)
