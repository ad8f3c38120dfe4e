"""Per-second rates of one disk between two samples of its counters.

Pure arithmetic. A counter that went backwards means QEMU restarted between the samples; its
rate is then unknown and reported as 0 rather than as a huge negative or positive spike.
"""

from __future__ import annotations

from dataclasses import dataclass

from blockplane.hypervisor.bulk_stats import DiskSample


@dataclass(frozen=True)
class DiskRates:
    read_iops: float = 0.0
    write_iops: float = 0.0
    read_bytes_per_s: float = 0.0
    write_bytes_per_s: float = 0.0

    @property
    def iops(self) -> float:
        return self.read_iops + self.write_iops

    @property
    def bytes_per_s(self) -> float:
        return self.read_bytes_per_s + self.write_bytes_per_s


def disk_rates(before: DiskSample | None, after: DiskSample, seconds: float) -> DiskRates:
    if before is None or seconds <= 0:
        return DiskRates()
    return DiskRates(
        read_iops=_rate(before.read_ops, after.read_ops, seconds),
        write_iops=_rate(before.write_ops, after.write_ops, seconds),
        read_bytes_per_s=_rate(before.read_bytes, after.read_bytes, seconds),
        write_bytes_per_s=_rate(before.write_bytes, after.write_bytes, seconds),
    )


def _rate(before: int, after: int, seconds: float) -> float:
    return (after - before) / seconds if after >= before else 0.0
