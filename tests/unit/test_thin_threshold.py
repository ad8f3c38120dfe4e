"""Threshold math and the qcow2 ceiling, checked against QEMU's own figures."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blockplane.storage.qcow2 import qcow2_fully_allocated_size, qcow2_max_physical
from blockplane.thin.threshold import next_physical, should_disable, threshold_for

MIB, GIB = 1 << 20, 1 << 30
CHUNK = 5 * GIB // 2

needs_qemu_img = pytest.mark.skipif(shutil.which("qemu-img") is None,
                                    reason="qemu-img is not installed")


def test_threshold_follows_vdsm_defaults() -> None:
    # One 2.5 GiB chunk at 20%: the mark sits 80% of a chunk (2 GiB) below the end.
    assert threshold_for(CHUNK, CHUNK, 20) == CHUNK - 2 * GIB
    assert threshold_for(10 * GIB, CHUNK, 20) == 8 * GIB
    assert threshold_for(10 * GIB, CHUNK, 50) == 10 * GIB - CHUNK // 2


def test_threshold_extremes() -> None:
    assert threshold_for(GIB, 256 * MIB, 100) == GIB
    assert threshold_for(GIB, 256 * MIB, 0) == GIB - 256 * MIB


def test_threshold_is_clamped_at_zero() -> None:
    assert threshold_for(100 * MIB, 256 * MIB, 0) == 0
    assert threshold_for(0, 256 * MIB, 20) == 0


def test_threshold_is_whole_bytes_rounded_towards_the_end() -> None:
    assert threshold_for(1000, 3, 50) == 1000 - 1


@pytest.mark.parametrize(("physical", "chunk", "pct"),
                         [(-1, 1, 20), (1, 0, 20), (1, -5, 20), (1, 1, -1), (1, 1, 101)])
def test_threshold_refuses_nonsense(physical: int, chunk: int, pct: int) -> None:
    with pytest.raises(ValueError):
        threshold_for(physical, chunk, pct)


@given(st.integers(0, 1 << 50), st.integers(1, 1 << 40), st.integers(0, 100))
def test_threshold_never_negative_and_never_past_the_end(physical: int, chunk: int,
                                                         pct: int) -> None:
    threshold = threshold_for(physical, chunk, pct)
    assert 0 <= threshold <= physical
    if threshold > 0:
        assert physical - threshold <= chunk


def test_next_physical_grows_by_one_chunk_up_to_the_cap() -> None:
    assert next_physical(GIB, 256 * MIB, 20 * GIB) == GIB + 256 * MIB
    assert next_physical(GIB, 256 * MIB, GIB + MIB) == GIB + MIB
    assert next_physical(2 * GIB, 256 * MIB, GIB) == 2 * GIB
    with pytest.raises(ValueError):
        next_physical(GIB, 0, 2 * GIB)


def test_should_disable_at_or_past_the_cap() -> None:
    assert not should_disable(GIB - 1, GIB)
    assert should_disable(GIB, GIB)
    assert should_disable(GIB + 1, GIB)


@given(st.integers(1, 1 << 40), st.integers(1, 1 << 30), st.integers(1, 1 << 41))
def test_growing_reaches_the_cap_and_stops(physical: int, chunk: int, cap: int) -> None:
    grown = next_physical(physical, chunk, cap)
    assert grown >= physical
    assert grown <= max(physical, cap)
    if grown == physical:
        assert should_disable(physical, cap)


def test_known_qcow2_sizes() -> None:
    # Figures printed by qemu-img 10.0.2 measure -O qcow2 --size N (fully-allocated).
    assert qcow2_fully_allocated_size(1) == 393216
    assert qcow2_fully_allocated_size(100 * MIB) == 105185280
    assert qcow2_fully_allocated_size(GIB) == 1074135040
    assert qcow2_fully_allocated_size(20 * GIB) == 21478375424
    assert qcow2_fully_allocated_size(1 << 40) == 1099679662080
    assert qcow2_fully_allocated_size(GIB, 2 * MIB) == 1084227584


def test_ceiling_is_mib_aligned_and_above_the_fully_allocated_size() -> None:
    for size in (MIB, 100 * MIB, GIB, 20 * GIB, 1 << 40):
        ceiling = qcow2_max_physical(size)
        assert ceiling % MIB == 0
        assert ceiling >= qcow2_fully_allocated_size(size)
        assert ceiling <= qcow2_fully_allocated_size(size) + size // 50 + 4 * MIB
    assert qcow2_max_physical(GIB, bitmaps=0) < qcow2_max_physical(GIB)


def test_bad_cluster_sizes_are_refused() -> None:
    for cluster in (0, 256, 65535, 3 * 65536):
        with pytest.raises(ValueError):
            qcow2_fully_allocated_size(GIB, cluster)


def _measure(size: str, *options: str) -> int:
    completed = subprocess.run(
        ["qemu-img", "measure", "-O", "qcow2", "--size", size, *options, "--output=json"],
        check=True, capture_output=True, text=True,
    )
    return int(json.loads(completed.stdout)["fully-allocated"])


@needs_qemu_img
@pytest.mark.parametrize("size", ["1", "64K", "100M", "1G", "3G", "20G", "100G", "12345678901"])
def test_formula_matches_qemu_img_measure(size: str) -> None:
    from blockplane.storage.sizes import parse_size

    measured = _measure(size)
    assert qcow2_fully_allocated_size(parse_size(size)) == measured
    assert qcow2_max_physical(parse_size(size)) >= measured


@needs_qemu_img
@pytest.mark.parametrize(("cluster", "bits"), [(4096, 16), (2 * MIB, 16), (65536, 64),
                                                (65536, 1)])
def test_formula_matches_qemu_img_measure_with_options(cluster: int, bits: int) -> None:
    measured = _measure("5G", "-o", f"cluster_size={cluster},refcount_bits={bits}")
    assert qcow2_fully_allocated_size(5 * GIB, cluster, bits) == measured


@pytest.mark.skipif(shutil.which("qemu-io") is None or shutil.which("qemu-img") is None,
                    reason="qemu-io or qemu-img is not installed")
def test_a_filled_qcow2_with_bitmaps_fits_under_the_ceiling(tmp_path: Path) -> None:
    image = tmp_path / "full.qcow2"
    size = 64 * MIB
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), str(size)],
                   check=True)
    for index in range(4):
        subprocess.run(["qemu-img", "bitmap", "--add", str(image), f"b{index}"], check=True)
    # Scattered writes first, so L2 tables and refcount blocks are allocated out of order.
    commands = [f"write -P {step} {offset} 64k"
                for step, offset in enumerate(range(size - 65536, 0, -4 * MIB), start=1)]
    commands.append(f"write -P 0xab 0 {size}")
    arguments = [arg for command in commands for arg in ("-c", command)]
    subprocess.run(["qemu-io", "-f", "qcow2", *arguments, str(image)], check=True,
                   capture_output=True)
    assert image.stat().st_size <= qcow2_max_physical(size)
