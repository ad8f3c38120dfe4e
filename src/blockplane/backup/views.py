"""What the backup services answer: frozen dataclasses the API and CLI share.

A pull backup's answer carries, per disk, what backup software needs to read it: the NBD URL
(``nbd+unix:///vda?socket=...``, or ``nbd://``/``nbds://`` over TCP), the export name, the meta
context of the changed extents for an incremental disk (``qemu:dirty-bitmap:backup-vda``), and
the size. Must not hold behaviour beyond formatting URLs.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from blockplane.backup.records import ExportedDiskRecord, PullExportRecord, TcpExport
from blockplane.chain.jobs.views import ScratchUsage

__all__ = ["ExportView", "PullBackupView", "ScratchUsage", "nbd_url"]

BITMAP_CONTEXT = "qemu:dirty-bitmap:"


def nbd_url(export: str, socket: str | None, tcp: TcpExport | None) -> str:
    if tcp is not None:
        scheme = "nbds" if tcp.tls else "nbd"
        host = f"[{tcp.host}]" if ":" in tcp.host else tcp.host
        return f"{scheme}://{host}:{tcp.port}/{quote(export)}"
    return f"nbd+unix:///{quote(export)}?socket={socket or ''}"


@dataclass(frozen=True)
class ExportView:
    target: str
    export: str
    url: str
    mode: str
    size: int
    bitmap: str | None
    reason: str | None
    scratch_pool: str
    scratch_volume: str
    scratch_thin: bool

    @classmethod
    def of(cls, disk: ExportedDiskRecord, record: PullExportRecord) -> ExportView:
        return cls(
            target=disk.target, export=disk.export,
            url=nbd_url(disk.export, record.socket, record.tcp), mode=disk.mode, size=disk.size,
            bitmap=f"{BITMAP_CONTEXT}{disk.bitmap}" if disk.bitmap else None,
            reason=disk.reason, scratch_pool=disk.scratch.pool,
            scratch_volume=disk.scratch.volume, scratch_thin=disk.scratch_thin,
        )


@dataclass(frozen=True)
class PullBackupView:
    """One pull backup. ``incremental``: the checkpoint its incremental disks start from;
    ``checkpoint``: the one it created (the base of the next incremental); ``fallback``: why
    it is less incremental than asked (``--incremental auto``, or a disk newer than the
    checkpoint)."""

    job: str
    vm: str
    kind: str
    mode: str
    phase: str
    outcome: str | None
    error: str | None
    checkpoint: str
    incremental: str | None
    requested: str | None
    fallback: str | None
    quiesced: bool
    quiesce_error: str | None
    socket: str | None
    timeout_s: float
    deadline: float
    disks: tuple[ExportView, ...]
    scratch: ScratchUsage | None = None
