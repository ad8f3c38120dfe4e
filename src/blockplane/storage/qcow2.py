"""The qcow2 size ceiling: the most a qcow2 of a given virtual size can ever occupy.

Pure functions of integers, as ``qemu-img measure`` computes them: the fully-allocated size, and
that plus room for persistent dirty bitmaps (the growth ceiling of a thin volume, and the size of
a fully provisioned qcow2 volume on a block pool). Must not call qemu-img or touch any file.
"""

from __future__ import annotations

DEFAULT_CLUSTER_SIZE = 65536
DEFAULT_REFCOUNT_BITS = 16
DEFAULT_BITMAPS = 8
MIB = 1 << 20


def qcow2_fully_allocated_size(
    virtual_size: int,
    cluster_size: int = DEFAULT_CLUSTER_SIZE,
    refcount_bits: int = DEFAULT_REFCOUNT_BITS,
) -> int:
    """Bytes a fully allocated qcow2 occupies: QEMU's ``qcow2_calc_prealloc_size``, which is
    the ``fully-allocated`` figure of ``qemu-img measure -O qcow2 --size N``."""
    if virtual_size < 0:
        raise ValueError(f"virtual size must not be negative, got {virtual_size}")
    if cluster_size < 512 or cluster_size & (cluster_size - 1):
        raise ValueError(f"cluster size must be a power of two >= 512, got {cluster_size}")
    entries_per_cluster = cluster_size // 8
    aligned = _round_up(virtual_size, cluster_size)
    header = cluster_size
    l2_entries = _round_up(aligned // cluster_size, entries_per_cluster)
    l1_entries = _round_up(l2_entries * 8 // cluster_size, entries_per_cluster)
    metadata = header + l2_entries * 8 + l1_entries * 8
    metadata += _refcount_metadata_size((metadata + aligned) // cluster_size, cluster_size,
                                        refcount_bits)
    return metadata + aligned


def qcow2_max_physical(
    virtual_size: int,
    cluster_size: int = DEFAULT_CLUSTER_SIZE,
    *,
    refcount_bits: int = DEFAULT_REFCOUNT_BITS,
    bitmaps: int = DEFAULT_BITMAPS,
) -> int:
    """The growth ceiling of a thin volume holding a qcow2 of ``virtual_size``.

    QEMU's fully-allocated size, plus room for ``bitmaps`` persistent dirty bitmaps (incremental
    backup stores them in the image), plus one cluster of slack for the refcounts of that room,
    rounded up to a MiB. Never below ``qemu-img measure``'s figure: a ceiling that is too low
    leaves a guest paused on ENOSPC with nothing left to grow.
    """
    size = qcow2_fully_allocated_size(virtual_size, cluster_size, refcount_bits)
    bitmap_bits = -(-virtual_size // cluster_size)
    bitmap_data = _round_up(-(-bitmap_bits // 8), cluster_size)
    bitmap_table = _round_up(bitmap_data // cluster_size * 8, cluster_size)
    directory = cluster_size if bitmaps else 0
    size += bitmaps * (bitmap_data + bitmap_table) + directory + cluster_size
    return _round_up(size, MIB)


def _refcount_metadata_size(clusters: int, cluster_size: int, refcount_bits: int) -> int:
    """Refcount table + blocks covering ``clusters`` and themselves: the fixed point QEMU's
    ``qcow2_refcount_metadata_size`` finds."""
    blocks_per_table_cluster = cluster_size // 8
    refcounts_per_block = cluster_size * 8 // refcount_bits
    table = blocks = 0
    total = -1
    while True:
        blocks = -(-(clusters + table + blocks) // refcounts_per_block)
        table = -(-blocks // blocks_per_table_cluster)
        if clusters + blocks + table == total:
            return (blocks + table) * cluster_size
        total = clusters + blocks + table


def _round_up(value: int, alignment: int) -> int:
    return -(-value // alignment) * alignment
