"""Request bodies of the chain routes: snapshots, block jobs and backups (pydantic, at the edge).

``bandwidth`` is bytes per second, as a number or a size such as ``8M`` (8 MiB/s); 0 or absent
means unlimited.
"""

from __future__ import annotations

from pydantic import Field

from blockplane.api.schemas import Body, Size
from blockplane.errors import InvalidInput
from blockplane.storage.sizes import parse_size

ELEMENT = Field(default=None, max_length=4096)


class SnapshotCreate(Body):
    name: str | None = Field(default=None, max_length=64)
    disks: list[str] = Field(default_factory=list, max_length=64)
    quiesce: bool = False


class CommitStart(Body):
    top: str | None = ELEMENT
    base: str | None = ELEMENT
    pivot: bool = False
    bandwidth: Size | None = None


class PullStart(Body):
    base: str | None = ELEMENT
    bandwidth: Size | None = None


class CopyStart(Body):
    dest: str | None = ELEMENT
    pool: str | None = Field(default=None, max_length=64)
    shallow: bool = False
    sync_writes: bool = False
    pivot: bool = False
    bandwidth: Size | None = None


class BackupStart(Body):
    dest: str = Field(max_length=4096)
    incremental: str | None = Field(default=None, max_length=128)
    disks: list[str] = Field(default_factory=list, max_length=64)


class SpeedSet(Body):
    bandwidth: Size


def bandwidth(value: Size | None) -> int:
    """Bytes per second; None and 0 mean unlimited."""
    if value is None:
        return 0
    if isinstance(value, bool):
        raise InvalidInput(
            "bandwidth must be bytes per second or a size such as 8M", code="job.invalid_request"
        )
    if isinstance(value, int):
        if value < 0:
            raise InvalidInput(
                f"bandwidth must not be negative, got {value}", code="job.invalid_request"
            )
        return parse_size(value, minimum=0)  # the upper bound: libvirt takes 64-bit rates
    return parse_size(value, minimum=0)
