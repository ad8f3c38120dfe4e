"""Throttle limits: the value object for one set of I/O limits, and parsing it from user input.

Owns ``ThrottleLimits`` (libvirt's ``<iotune>`` field names, all integers, 0 = unset) and turning a
mapping from the CLI, the API or a volume descriptor into one. Parsing refuses what cannot be a
limit at all (unknown names, non-integers, negatives); the rules that relate limits to each other
live in ``throttle.validation``. Nothing here talks to libvirt, writes XML or does I/O.

Burst lengths (``*_max_length``) follow libvirt: 0 means "not set", which QEMU runs as its default
burst length of 1 second (libvirt 11.3 turned an explicit 0 into 1 on a live group).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Final

from blockplane.errors import InvalidInput

#: QEMU's throttle buckets, in QEMU's ``BucketType`` order (include/qemu/throttle.h).
BUCKET_NAMES: Final = (
    "total_bytes_sec",
    "read_bytes_sec",
    "write_bytes_sec",
    "total_iops_sec",
    "read_iops_sec",
    "write_iops_sec",
)
AVG_FIELDS: Final = BUCKET_NAMES
MAX_FIELDS: Final = tuple(f"{name}_max" for name in BUCKET_NAMES)
MAX_LENGTH_FIELDS: Final = tuple(f"{name}_max_length" for name in BUCKET_NAMES)
SIZE_FIELD: Final = "size_iops_sec"

#: Every limit, in libvirt's order (virDomainBlockIoTuneInfo). The CLI makes one flag of each,
#: ``--`` plus the name with dashes.
FIELD_NAMES: Final[tuple[str, ...]] = (*AVG_FIELDS, *MAX_FIELDS, SIZE_FIELD, *MAX_LENGTH_FIELDS)
_FIELD_SET: Final = frozenset(FIELD_NAMES)

_DIGITS = re.compile(r"[0-9]+")
_NEGATIVE_DIGITS = re.compile(r"-[0-9]+")


@dataclass(frozen=True)
class ThrottleLimits:
    """One set of limits, as ``<iotune>`` or a ``<throttlegroup>`` holds it. 0 means unlimited."""

    total_bytes_sec: int = 0
    read_bytes_sec: int = 0
    write_bytes_sec: int = 0
    total_iops_sec: int = 0
    read_iops_sec: int = 0
    write_iops_sec: int = 0
    total_bytes_sec_max: int = 0
    read_bytes_sec_max: int = 0
    write_bytes_sec_max: int = 0
    total_iops_sec_max: int = 0
    read_iops_sec_max: int = 0
    write_iops_sec_max: int = 0
    size_iops_sec: int = 0
    total_bytes_sec_max_length: int = 0
    read_bytes_sec_max_length: int = 0
    write_bytes_sec_max_length: int = 0
    total_iops_sec_max_length: int = 0
    read_iops_sec_max_length: int = 0
    write_iops_sec_max_length: int = 0

    @classmethod
    def from_mapping(cls, values: Mapping[str, object]) -> ThrottleLimits:
        """Build limits from ``{name: value}``.

        Names may be libvirt's (``total_iops_sec_max_length``) or the CLI's
        (``total-iops-sec-max-length``). Values must be ints or, as the CLI passes them, strings
        of ASCII digits. Refuses with ``throttle.unknown_field``, ``throttle.duplicate_field``,
        ``throttle.not_integer`` or ``throttle.negative`` (and ``throttle.value_too_large`` for a
        string of thousands of digits); ``throttle.validation`` checks the rest.
        """
        parsed: dict[str, int] = {}
        for key, value in values.items():
            name = field_name(key)
            if name in parsed:
                raise InvalidInput(
                    f"{name} is given twice (as {key!r} and in another spelling)",
                    code="throttle.duplicate_field",
                    fields=[name],
                )
            parsed[name] = _parse_value(name, value)
        return cls(**parsed)

    def to_dict(self, *, nonzero_only: bool = False) -> dict[str, int]:
        """``{libvirt name: value}`` in ``FIELD_NAMES`` order; optionally only the set limits."""
        values = asdict(self)
        return {
            name: values[name] for name in FIELD_NAMES if not nonzero_only or values[name] != 0
        }

    def is_zero(self) -> bool:
        """True when no limit at all is set."""
        return all(value == 0 for value in self.to_dict().values())

    def updated(self, values: Mapping[str, object]) -> ThrottleLimits:
        """These limits with the fields in ``values`` replaced, parsed as ``from_mapping`` does.

        This is what ``virDomainSetThrottleGroup`` does to an existing group: it keeps every field
        the call leaves out (libvirt 11.3: setting only ``total_bytes_sec`` kept
        ``total_iops_sec`` and a burst length of 60). Validate the result, not the request, and
        pass every field to libvirt so that what was validated is what runs.
        """
        parsed = ThrottleLimits.from_mapping(values)
        changed = {field_name(key) for key in values}
        return replace(self, **{name: getattr(parsed, name) for name in changed})


def field_name(key: str) -> str:
    """The libvirt name for ``key`` in either spelling; ``throttle.unknown_field`` if none."""
    name = key.replace("-", "_")
    if name in _FIELD_SET:
        return name
    close = difflib.get_close_matches(name, FIELD_NAMES, n=1)
    hint = f"; did you mean {close[0]}?" if close else f"; known limits: {', '.join(FIELD_NAMES)}"
    raise InvalidInput(
        f"unknown throttle limit {key!r}{hint}", code="throttle.unknown_field", fields=[key]
    )


def _parse_value(name: str, value: object) -> int:
    if isinstance(value, bool):
        # bool is an int subclass; True must not silently become a limit of 1.
        raise _not_integer(name, value)
    if isinstance(value, int):
        if value < 0:
            raise _negative(name, value)
        return value
    if isinstance(value, str):
        if _DIGITS.fullmatch(value):
            try:
                return int(value)
            except ValueError:  # past Python's 4300-digit limit on int(str)
                raise InvalidInput(
                    f"{name} has {len(value)} digits, far above any limit",
                    code="throttle.value_too_large",
                    fields=[name],
                ) from None
        if _NEGATIVE_DIGITS.fullmatch(value):
            raise _negative(name, value)
    raise _not_integer(name, value)


def _not_integer(name: str, value: object) -> InvalidInput:
    return InvalidInput(
        f"{name}={value!r} must be a whole number", code="throttle.not_integer", fields=[name]
    )


def _negative(name: str, value: object) -> InvalidInput:
    return InvalidInput(
        f"{name}={value} must not be negative", code="throttle.negative", fields=[name]
    )
