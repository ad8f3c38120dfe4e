"""Data the guest writes, and the checksum of what its disk must then hold.

A region is ``yes WORD`` output cut to a length, written at an offset with O_DIRECT: easy to
produce in a busybox guest, and reproducible here to the byte, so the expected checksum is
computed by the tour and not taken from the guest it is checking. Pure: no I/O.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

MIB = 1 << 20


@dataclass(frozen=True)
class Region:
    word: str
    offset_mib: int
    length_mib: int

    def data(self) -> bytes:
        line = f"{self.word}\n".encode()
        length = self.length_mib * MIB
        return (line * (length // len(line) + 1))[:length]

    def guest_write(self, device: str) -> str:
        """The guest's shell command that writes this region (flushed to the disk)."""
        return (f"yes {self.word} | head -c {self.length_mib * MIB} | dd of={device} bs=1M "
                f"seek={self.offset_mib} oflag=direct conv=fsync,notrunc 2>/dev/null")


def expected_checksum(regions: list[Region], span_mib: int) -> str:
    """sha256 of the first ``span_mib`` MiB of a disk that was zero and then got ``regions``
    written, in order."""
    image = bytearray(span_mib * MIB)
    for region in regions:
        start = region.offset_mib * MIB
        data = region.data()
        image[start:start + len(data)] = data[:max(0, len(image) - start)]
    return hashlib.sha256(image).hexdigest()


def guest_checksum(device: str, span_mib: int) -> str:
    """The guest's shell command printing sha256 of the first ``span_mib`` MiB of ``device``,
    read past its page cache into a file (under TCG a pipe is many times slower than a file)."""
    copy = f"/tmp/demo-read-{device.rsplit('/', 1)[-1]}"
    return (f"dd if={device} of={copy} bs=1M count={span_mib} iflag=direct 2>/dev/null && "
            f"sha256sum {copy} | cut -d' ' -f1 && rm -f {copy}")
