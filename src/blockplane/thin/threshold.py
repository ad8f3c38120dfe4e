"""Thin-provisioning arithmetic: where to arm the write threshold, how far to grow, when to stop.

Pure functions of integers. Owns the VDSM threshold formula; the ceiling a volume grows to is the
qcow2 size ceiling (``storage.qcow2``). Must not call QEMU, libvirt or the pool backends.
"""

from __future__ import annotations


def threshold_for(physical: int, chunk: int, utilization_pct: int) -> int:
    """``physical - (100 - utilization_pct)/100 * chunk`` in whole bytes (VDSM's formula).

    The threshold is armed so that ``(100 - utilization_pct)%`` of a chunk is still free when it
    fires. Clamped at 0: a volume smaller than that reserve should be extended at once, and 0
    must never be armed as such, because QEMU reads a threshold of 0 as "disarm".
    """
    if physical < 0:
        raise ValueError(f"physical size must not be negative, got {physical}")
    return max(physical - base_reserve(chunk, utilization_pct), 0)


def base_reserve(chunk: int, utilization_pct: int) -> int:
    """``(100 - utilization_pct)/100 * chunk``: the room left when a VDSM threshold fires."""
    _check_policy(chunk, utilization_pct)
    return (100 - utilization_pct) * chunk // 100


def next_physical(physical: int, chunk: int, cap: int) -> int:
    """One chunk more, but never past ``cap``; at or beyond ``cap`` the size stays as it is."""
    if chunk <= 0:
        raise ValueError(f"chunk must be positive, got {chunk}")
    if physical >= cap:
        return physical
    return min(physical + chunk, cap)


def should_disable(physical: int, cap: int) -> bool:
    """A volume at its ceiling can never need more: stop monitoring it."""
    return physical >= cap


def _check_policy(chunk: int, utilization_pct: int) -> None:
    if chunk <= 0:
        raise ValueError(f"chunk must be positive, got {chunk}")
    if not 0 <= utilization_pct <= 100:
        raise ValueError(f"utilization must be 0 to 100 percent, got {utilization_pct}")

