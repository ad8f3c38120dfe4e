"""The one sizing rule for thin volumes filled by copying (storage/fill_size.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blockplane.storage.fill_size import MIB, fill_size

CHUNK = 64 * MIB
CEILING = 1100 * MIB


def test_what_is_copied_plus_one_chunk() -> None:
    assert fill_size(40 * MIB, chunk_bytes=CHUNK, ceiling_bytes=CEILING) == 104 * MIB


def test_rounded_up_to_a_mebibyte() -> None:
    assert fill_size(40 * MIB + 1, chunk_bytes=CHUNK, ceiling_bytes=CEILING) == 105 * MIB


def test_never_above_the_qcow2_ceiling() -> None:
    assert fill_size(1090 * MIB, chunk_bytes=CHUNK, ceiling_bytes=CEILING) == CEILING


@pytest.mark.parametrize(("required", "chunk", "ceiling"), [(-1, CHUNK, CEILING),
                                                            (0, 0, CEILING), (0, CHUNK, 0)])
def test_nonsense_refused(required: int, chunk: int, ceiling: int) -> None:
    with pytest.raises(ValueError):
        fill_size(required, chunk_bytes=chunk, ceiling_bytes=ceiling)


@given(st.integers(0, 1 << 40), st.integers(1, 1 << 30), st.integers(1, 1 << 41))
def test_room_for_the_copy_and_a_chunk_or_the_ceiling(
    required: int, chunk: int, ceiling: int
) -> None:
    size = fill_size(required, chunk_bytes=chunk, ceiling_bytes=ceiling)
    assert size <= ceiling
    assert size == ceiling or size >= required + chunk
    assert size == ceiling or size - (required + chunk) < MIB
