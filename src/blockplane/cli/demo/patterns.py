"""Data the guest writes, and the checksum of what its disk must then hold.

A region is one byte repeated (``tr`` over ``/dev/zero``), written at a MiB offset with
O_DIRECT in whole MiB: cheap for a busybox guest under TCG (``yes | head`` costs several times
more guest CPU), and reproducible here to the byte, so the expected checksum is computed by the
tour and not taken from the guest it checks. Distinct bytes per region make a region written in
the wrong place, lost, or read from the wrong layer of a chain show. Pure: no I/O.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

MIB = 1 << 20


@dataclass(frozen=True)
class Region:
    letter: str
    offset_mib: int
    length_mib: int

    def data(self) -> bytes:
        return self.letter.encode() * (self.length_mib * MIB)

    def guest_write(self, device: str) -> str:
        """The guest's shell command that writes this region through to the disk: built in a
        file first, so the disk gets whole 1 MiB direct writes."""
        staged = f"/tmp/demo-region-{self.letter}"
        return (f"dd if=/dev/zero bs=1M count={self.length_mib} 2>/dev/null | "
                f"tr '\\000' '{self.letter}' > {staged} && dd if={staged} of={device} bs=1M "
                f"seek={self.offset_mib} oflag=direct conv=fsync,notrunc 2>/dev/null && "
                f"rm -f {staged}")


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


#: A chunk the writing guest stamps: 1 MiB of this byte whose first bytes are ``stamp(index)``.
CHUNK_FILL = "w"


def stamp(index: int) -> str:
    """What chunk ``index`` starts with: its own number, so a chunk written in the wrong place
    or an old one read back shows."""
    return f"bp-{index:06d}\n"


def stamped_chunks_checksum(count: int) -> str:
    """sha256 of the first ``count`` MiB of a disk whose chunks 0..count-1 were each stamped
    (``stamp``) and written whole."""
    digest = hashlib.sha256()
    fill = CHUNK_FILL.encode() * MIB
    for index in range(count):
        head = stamp(index).encode()
        digest.update(head + fill[len(head):])
    return digest.hexdigest()
