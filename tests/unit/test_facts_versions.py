"""Version parsing: upstream, Debian, RPM, QEMU banner and libvirt's integer form."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blockplane.errors import InvalidInput
from blockplane.facts.versions import Version, parse_version, version_from_libvirt_int


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("9.0.0", Version(9, 0, 0)),
        ("10.0.2", Version(10, 0, 2)),
        ("11.3.0", Version(11, 3, 0)),
        ("2.11", Version(2, 11, 0)),
        ("v9.1.0", Version(9, 1, 0)),
        ("  10.0.2\n", Version(10, 0, 2)),
        ("1:10.0.2+ds-2+deb13u1~bpo12+1", Version(10, 0, 2)),
        ("11.3.0-2~bpo12+1", Version(11, 3, 0)),
        ("1:7.2+dfsg-7+deb12u7", Version(7, 2, 0)),
        ("9.0.0-4+deb12u1", Version(9, 0, 0)),
        ("8.2.0-11.el9_4", Version(8, 2, 0)),
        ("10.0.0-6.el9_4.1", Version(10, 0, 0)),
        ("qemu-kvm-9.1.0-15.el9", Version(9, 1, 0)),
        ("libvirt-daemon-10.10.0-7.el9", Version(10, 10, 0)),
        ("9.2.0~rc1", Version(9, 2, 0)),
        ("1.2.3.4", Version(1, 2, 3)),
        (
            "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)",
            Version(10, 0, 2),
        ),
        ("QEMU emulator version 9.1.0 (qemu-kvm-9.1.0-15.el9)", Version(9, 1, 0)),
        ("QEMU emulator version 8.2.2", Version(8, 2, 2)),
        (
            "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)\n"
            "Copyright (c) 2003-2025 Fabrice Bellard and the QEMU Project developers\n",
            Version(10, 0, 2),
        ),
    ],
)
def test_parse_version(text: str, expected: Version) -> None:
    assert parse_version(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   \n ",
        "garbage",
        "9",
        "x.y.z",
        "10.0.2 (Debian)",
        "QEMU emulator version banana",
        "1:",
        "version 10.0.2",
        "10..2",
        "-10.0.2",
    ],
)
def test_parse_version_refuses_garbage(text: str) -> None:
    with pytest.raises(InvalidInput):
        parse_version(text)


def test_parse_version_refuses_non_strings() -> None:
    with pytest.raises(InvalidInput):
        parse_version(10)  # type: ignore[arg-type]


def test_str_and_short() -> None:
    version = parse_version("1:10.0.2+ds-2+deb13u1~bpo12+1")
    assert str(version) == "10.0.2"
    assert version.short() == "10.0.2"
    assert Version(9, 0, 0).short() == "9.0"
    assert str(Version(9)) == "9.0.0"


def test_versions_are_ordered_numerically() -> None:
    ordered = [Version(2, 3), Version(2, 11), Version(8, 2), Version(9, 0), Version(10, 0, 2)]
    assert sorted(reversed(ordered)) == ordered
    assert Version(9, 0, 0) <= parse_version("9.0.0")
    assert parse_version("8.2.0-11.el9_4") < Version(9, 0)


@pytest.mark.parametrize(
    ("number", "expected"),
    [
        (11003000, Version(11, 3, 0)),
        (10000000, Version(10, 0, 0)),
        (3002000, Version(3, 2, 0)),
        (9000001, Version(9, 0, 1)),
        (10000002, Version(10, 0, 2)),
    ],
)
def test_version_from_libvirt_int(number: int, expected: Version) -> None:
    assert version_from_libvirt_int(number) == expected


@pytest.mark.parametrize("number", [0, -1, 1_000_000_000])
def test_version_from_libvirt_int_refuses_out_of_range(number: int) -> None:
    with pytest.raises(InvalidInput):
        version_from_libvirt_int(number)


@pytest.mark.parametrize("value", [True, "11003000", 11.3])
def test_version_from_libvirt_int_refuses_non_integers(value: object) -> None:
    with pytest.raises(InvalidInput):
        version_from_libvirt_int(value)  # type: ignore[arg-type]


def test_version_refuses_negative_parts() -> None:
    with pytest.raises(InvalidInput):
        Version(1, -1, 0)


parts = st.integers(min_value=0, max_value=999)


@given(parts, parts, parts)
def test_str_round_trips(major: int, minor: int, micro: int) -> None:
    version = Version(major, minor, micro)
    assert parse_version(str(version)) == version


@given(parts, parts, parts, st.integers(min_value=0, max_value=9))
def test_debian_package_form_round_trips(major: int, minor: int, micro: int, epoch: int) -> None:
    text = f"{epoch}:{major}.{minor}.{micro}+ds-2+deb13u1~bpo12+1"
    assert parse_version(text) == Version(major, minor, micro)


@given(parts, parts, parts)
def test_libvirt_int_round_trips(major: int, minor: int, micro: int) -> None:
    number = major * 1_000_000 + minor * 1_000 + micro
    if number == 0:
        return
    assert version_from_libvirt_int(number) == Version(major, minor, micro)
