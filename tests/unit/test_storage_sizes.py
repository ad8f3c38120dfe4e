"""Sizes as people write them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blockplane.errors import InvalidInput
from blockplane.storage.names import parse_size
from blockplane.storage.sizes import MAX_SIZE, format_size

KIB, MIB, GIB, TIB = 1 << 10, 1 << 20, 1 << 30, 1 << 40


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("512M", 512 * MIB),
        ("1G", GIB),
        ("2.5G", 5 * GIB // 2),
        ("1048576", MIB),
        ("10GiB", 10 * GIB),
        ("64k", 64 * KIB),
        ("64K", 64 * KIB),
        ("64KB", 64 * KIB),
        ("1T", TIB),
        ("1P", 1 << 50),
        ("4096B", 4096),
        (" 20 G ", 20 * GIB),
        ("1.5m", 3 * MIB // 2),
        ("0.1K", 102),
        (1024, 1024),
    ],
)
def test_valid_sizes(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "G", "-1G", "-5", "1.5", "1e9", "0x10", "1GG", "1 G B", "10iB", "1.G", ".5G", "1,5G",
     "ten", "1X", "NaN", "inf", "1Gb/s", "\u0661G"],
)
def test_garbage_is_refused(text: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_size(text)
    assert caught.value.code == "size.invalid"
    assert caught.value.exit_code == 2
    assert repr(text) in caught.value.message


@pytest.mark.parametrize("value", ["0", "0G", 0, -1, True, 1.5, None])
def test_zero_negative_and_wrong_types_are_refused_by_default(value: object) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_size(value)  # type: ignore[arg-type]
    assert caught.value.code == "size.invalid"


def test_minimum_and_maximum() -> None:
    assert parse_size("0", minimum=0) == 0
    with pytest.raises(InvalidInput, match="at least 1 MiB"):
        parse_size("512K", minimum=MIB)
    with pytest.raises(InvalidInput, match="at most 1 GiB"):
        parse_size("2G", maximum=GIB)
    with pytest.raises(InvalidInput):
        parse_size("8192P")
    assert parse_size("8191P") < MAX_SIZE


@pytest.mark.parametrize(
    ("size", "text"),
    [(0, "0 B"), (512, "512 B"), (KIB, "1 KiB"), (256 * MIB, "256 MiB"), (GIB, "1 GiB"),
     (int(1.2 * GIB), "1.2 GiB"), (GIB + 1, "1.0 GiB"), (3 * TIB // 2, "1.5 TiB"),
     (-MIB, "-1 MiB")],
)
def test_format_size(size: int, text: str) -> None:
    assert format_size(size) == text


@given(st.integers(min_value=1, max_value=1 << 62))
def test_formatted_sizes_parse_back_exactly_or_within_a_percent(size: int) -> None:
    text = format_size(size)
    parsed = parse_size(text)
    if "." in text:
        assert abs(parsed - size) <= size // 100
    else:
        assert parsed == size
