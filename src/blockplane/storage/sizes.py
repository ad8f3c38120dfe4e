"""Byte sizes as people write them ("512M", "2.5G", "10GiB", "1048576") and back.

Owns parsing and formatting only. All units are binary (1K = 1024), as in qemu-img and virsh.
Must not round sizes to device or cluster boundaries: callers align for their own medium.
"""

from __future__ import annotations

import re
from decimal import Decimal

from blockplane.errors import InvalidInput

MAX_SIZE = (1 << 63) - 1
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
_SIZE = re.compile(
    r"\s*(?P<number>[0-9]+(?:\.[0-9]+)?)\s*(?P<unit>[kmgtp]?)(?P<suffix>i?b)?\s*",
    re.IGNORECASE,
)
_HINT = "use bytes or a number with a unit K, M, G, T or P (binary, 1K = 1024), e.g. 512M or 2.5G"


def parse_size(value: str | int, *, minimum: int = 1, maximum: int = MAX_SIZE) -> int:
    """Return ``value`` in bytes, refusing garbage, negatives and anything below ``minimum``.

    Fractions are allowed with a unit and truncated to whole bytes, as QEMU does ("2.5G").
    """
    if isinstance(value, bool):
        raise _invalid(value, _HINT)
    if isinstance(value, int):
        size = value
    elif isinstance(value, str):
        size = _parse_text(value)
    else:
        raise _invalid(value, _HINT)
    if size < minimum:
        raise _invalid(value, f"it must be at least {format_size(max(minimum, 0))}")
    if size > maximum:
        raise _invalid(value, f"it must be at most {format_size(maximum)}")
    return size


def _parse_text(text: str) -> int:
    match = _SIZE.fullmatch(text)
    if match is None:
        raise _invalid(text, _HINT)
    unit = match["unit"].lower()
    if match["suffix"] is not None and match["suffix"].lower() == "ib" and not unit:
        raise _invalid(text, _HINT)
    number = Decimal(match["number"])
    if not unit and number != number.to_integral_value():
        raise _invalid(text, "a size in bytes cannot have a fraction")
    return int(number * _UNITS[unit])


def _invalid(value: object, why: str) -> InvalidInput:
    return InvalidInput(f"size {value!r} is not valid: {why}", code="size.invalid",
                        value=str(value))


def format_size(size: int) -> str:
    """``1073741824`` -> ``"1 GiB"``, ``1288490188`` -> ``"1.2 GiB"``, ``512`` -> ``"512 B"``."""
    sign = "-" if size < 0 else ""
    magnitude = abs(size)
    for name, unit in (("PiB", 1 << 50), ("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20),
                       ("KiB", 1 << 10)):
        if magnitude >= unit:
            if magnitude % unit == 0:
                return f"{sign}{magnitude // unit} {name}"
            text = f"{magnitude / unit:.2f}".rstrip("0")
            return f"{sign}{text}{'0' if text.endswith('.') else ''} {name}"
    return f"{sign}{magnitude} B"
