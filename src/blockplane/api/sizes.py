"""Sizes at the API edge: ``512M``, ``1G`` or plain bytes."""

from __future__ import annotations

from blockplane.errors import InvalidInput
from blockplane.storage.sizes import parse_size


def size(value: int | str, field: str) -> int:
    if isinstance(value, bool):
        raise InvalidInput(f"{field} must be a size such as 512M, 1G or bytes", code="size.invalid")
    if isinstance(value, int):
        if value <= 0:
            raise InvalidInput(f"{field} must be positive, got {value}", code="size.invalid")
        return parse_size(value)  # the upper bound: SQLite and libvirt hold 64-bit sizes
    return parse_size(value)


def optional_size(value: int | str | None, field: str) -> int | None:
    return None if value is None else size(value, field)
