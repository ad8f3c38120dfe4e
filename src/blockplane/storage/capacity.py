"""The configured size limit of a pool and the refusal of changes that would pass it.

Owns the arithmetic and the ``pool.full`` message. Must not measure anything itself: backends
pass in the physical total they read from their medium.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from blockplane.errors import Conflict
from blockplane.storage.sizes import format_size

Operation = Literal["create", "extend"]


@dataclass(frozen=True)
class PoolCapacity:
    """``limit_bytes`` caps the sum of the physical sizes of a pool's volumes; None: no limit."""

    limit_bytes: int | None = None

    def __post_init__(self) -> None:
        if self.limit_bytes is not None and self.limit_bytes <= 0:
            raise ValueError(f"pool capacity must be positive, got {self.limit_bytes}")

    def free_bytes(self, current_physical_total: int) -> int | None:
        if self.limit_bytes is None:
            return None
        return max(self.limit_bytes - current_physical_total, 0)

    def check_capacity(
        self,
        current_physical_total: int,
        extra: int,
        *,
        volume: str = "a volume",
        operation: Operation = "extend",
    ) -> None:
        """Raise Conflict ``pool.full`` if adding ``extra`` bytes would pass the limit."""
        if extra < 0:
            raise ValueError(f"extra bytes must not be negative, got {extra}")
        if self.limit_bytes is None or current_physical_total + extra <= self.limit_bytes:
            return
        action = (
            f"creating {volume} with {format_size(extra)}"
            if operation == "create"
            else f"extending {volume} by {format_size(extra)}"
        )
        free = self.limit_bytes - current_physical_total
        raise Conflict(
            f"{action} would use {format_size(current_physical_total + extra)} of the pool's "
            f"{format_size(self.limit_bytes)} limit ({format_size(max(free, 0))} free)",
            code="pool.full",
            volume=volume,
            limit_bytes=self.limit_bytes,
            used_bytes=current_physical_total,
            requested_bytes=extra,
        )
