"""fio in the guest, as the steps run it: short random reads for a rate, a flat-out write.

Owns the fio command lines and reading their JSON; no policy, no bounds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from blockplane.cli.demo.session import TourFailure, TourSession

#: How long a rate is measured: the run reads ``limit x RATE_SECONDS`` blocks. A count, not a
#: time: a time-based fio run counts the wait for the I/Os still in flight at its end but not
#: those I/Os (32 in flight at 50 IOPS read 17% low). QEMU lets a tenth of a second's worth
#: through at once at the start, so the rate reads a few percent high instead.
RATE_SECONDS = 3


@dataclass(frozen=True)
class FioResult:
    iops: float
    bytes_done: int
    bandwidth_bytes: float
    runtime_s: float
    errors: int


def _fio(tour: TourSession, arguments: list[str], timeout: float,
         detached: bool = False) -> FioResult:
    argv = ["fio", "--output-format=json", "--direct=1", "--ioengine=libaio", *arguments]
    result = tour.run_detached(argv, timeout) if detached else tour.run(argv, timeout=timeout)
    if result.code != 0:
        raise TourFailure(f"fio exited {result.code}: {(result.stderr or result.stdout)[-400:]}")
    try:
        job: dict[str, Any] = json.loads(result.stdout)["jobs"][0]
    except (ValueError, KeyError, IndexError) as error:
        raise TourFailure(f"fio printed no report: {result.stdout[-400:]}") from error
    side = job["read"] if job["read"]["io_bytes"] else job["write"]
    return FioResult(float(side["iops"]), int(side["io_bytes"]), float(side["bw_bytes"]),
                     float(side["runtime"]) / 1000, int(job.get("error", 0)))


def random_read_rate(tour: TourSession, device: str, limit_iops: float) -> FioResult:
    """4 KiB random reads, 32 in flight, ``limit_iops x RATE_SECONDS`` of them: the rate a
    limit lets through (a TCG guest stalls now and then on a busy host; the queue in flight
    keeps the limit busy meanwhile)."""
    count = max(int(limit_iops * RATE_SECONDS), 1)
    return _fio(tour, ["--name=rate", f"--filename={device}", "--rw=randread", "--bs=4k",
                       "--iodepth=32", f"--io_size={count * 4096}"], timeout=120)


def flat_out_write(tour: TourSession, device: str, size_bytes: int) -> FioResult:
    """``size_bytes`` written sequentially in 1 MiB blocks, 8 in flight, as fast as it goes
    (in the background: should the VM pause, the tour sees it in the figures, not as a failed
    exec)."""
    return _fio(tour, ["--name=fill", f"--filename={device}", "--rw=write", "--bs=1M",
                       "--iodepth=8", f"--size={size_bytes}"], timeout=300, detached=True)
