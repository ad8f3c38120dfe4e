"""Version numbers of QEMU and libvirt, parsed from whatever form a host reports them in.

Owns the ``Version`` value type and the parsers for upstream strings (``10.0.2``), Debian and
RPM package versions (``1:10.0.2+ds-2+deb13u1~bpo12+1``, ``qemu-kvm-9.1.0-15.el9``), the first
line of ``qemu-system-x86_64 --version`` and libvirt's integer encoding (``11003000``).
Pure: no probing, no libvirt import. Garbage raises ``InvalidInput``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from blockplane.errors import InvalidInput

# QEMU's own banner; RHEL prints "QEMU emulator version 9.1.0 (qemu-kvm-9.1.0-15.el9)".
_QEMU_BANNER = re.compile(r"^QEMU emulator version (?P<version>\S+)(?:\s+\(.*\))?$")

# [name-][epoch:]MAJOR.MINOR[.MICRO[.more...]][suffix], where the suffix starts with one of the
# separators packagers use (+ds, -11.el9_4, ~bpo12+1, _rc1).
_PACKAGE = re.compile(
    r"^(?:(?P<name>[A-Za-z][A-Za-z0-9+._-]*?)-)?"
    r"(?:(?P<epoch>\d+):)?"
    r"v?(?P<major>\d+)\.(?P<minor>\d+)(?:\.(?P<micro>\d+))?(?:\.\d+)*"
    r"(?P<suffix>[-+~_][A-Za-z0-9+.~_:-]*)?$"
)

_LIBVIRT_INT_MAX = 999_999_999


@dataclass(frozen=True, order=True)
class Version:
    """An upstream release number; ordered, so ``Version(9, 0, 0) <= host_version`` works."""

    major: int
    minor: int = 0
    micro: int = 0

    def __post_init__(self) -> None:
        for part in (self.major, self.minor, self.micro):
            if isinstance(part, bool) or not isinstance(part, int) or part < 0:
                raise InvalidInput(f"version parts must be non-negative integers, got {part!r}")

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.micro}"

    def short(self) -> str:
        """``9.0`` for 9.0.0, ``2.11`` for 2.11.0, ``10.0.2`` when micro matters."""
        if self.micro == 0:
            return f"{self.major}.{self.minor}"
        return str(self)


def parse_version(text: str) -> Version:
    """Parse an upstream, package or ``--version`` string into a ``Version``.

    Only the first non-empty line is read, so the whole ``qemu-system-x86_64 --version`` output
    can be passed in.
    """
    if not isinstance(text, str):
        raise InvalidInput(f"version must be a string, got {type(text).__name__}")
    line = next((candidate.strip() for candidate in text.splitlines() if candidate.strip()), "")
    if not line:
        raise InvalidInput("version string is empty")
    banner = _QEMU_BANNER.match(line)
    if banner:
        line = banner.group("version")
    match = _PACKAGE.match(line)
    if match is None:
        raise InvalidInput(
            f"not a version: {line!r} (expected e.g. 10.0.2, 1:10.0.2+ds-2 or 8.2.0-11.el9_4)"
        )
    micro = match.group("micro")
    return Version(int(match.group("major")), int(match.group("minor")), int(micro or 0))


def version_from_libvirt_int(number: int) -> Version:
    """Decode libvirt's ``major * 1,000,000 + minor * 1,000 + micro`` (``getLibVersion()``)."""
    if isinstance(number, bool) or not isinstance(number, int):
        raise InvalidInput(f"libvirt version must be an integer, got {type(number).__name__}")
    if number <= 0 or number > _LIBVIRT_INT_MAX:
        raise InvalidInput(f"not a libvirt version number: {number}")
    return Version(number // 1_000_000, (number // 1_000) % 1_000, number % 1_000)
