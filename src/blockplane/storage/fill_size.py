"""How big to make a thin volume that blockplane fills by copying into it.

One rule for every such volume: a copy's destination, a commit's base (pre-extended before the
commit), a migration's destination, a pull backup's scratch image. Start it at what will be
copied (``qemu-img measure``'s ``required``, which counts allocated clusters, not the virtual
size) plus one growth chunk, so that the copy itself never waits on an extend, and never above
the qcow2 ceiling (``storage.qcow2.qcow2_max_physical``). From there the thin monitor grows it
on write-threshold events like any other thin volume. Pure arithmetic: the caller measures.
"""

from __future__ import annotations

MIB = 1 << 20


def fill_size(required_bytes: int, *, chunk_bytes: int, ceiling_bytes: int) -> int:
    """Initial physical size: ``required_bytes`` + one chunk, rounded up to a MiB, capped."""
    if required_bytes < 0 or chunk_bytes <= 0 or ceiling_bytes <= 0:
        raise ValueError(
            f"sizes must be positive: required {required_bytes}, chunk {chunk_bytes}, "
            f"ceiling {ceiling_bytes}"
        )
    wanted = -(-(required_bytes + chunk_bytes) // MIB) * MIB
    return min(wanted, ceiling_bytes)
