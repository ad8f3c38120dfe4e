"""Where a pull backup's export lives: its scratch images and its NBD socket.

Scratch images: one qcow2 per exported disk, created by blockplane in the chosen pool and handed
to libvirt as they are (``REUSE_EXTERNAL``): QEMU copies there each cluster the guest is about
to overwrite while the export runs (copy-before-write), so it starts empty. On a loop or lvm
pool it is thin, sized by the one rule for volumes filled by copying (``storage.fill_size``:
what will be copied, nothing yet but the qcow2 metadata, plus one chunk), and watched by the
thin monitor on libvirt's index of it (``vda[N]``, from the backup's description: libvirt puts
the write threshold on the scratch node and reports its BLOCK_THRESHOLD as ``vda[N]`` with the
scratch's path), so a busy guest never waits on it. On a dir pool it is a sparse file.

The socket: ``$BLOCKPLANE_HOME/nbd/<job>/nbd.sock``. QEMU creates it (as its own user, e.g.
libvirt-qemu), so the job's directory belongs to that user, mode 0700, under ``nbd/`` (0711,
root's); once the export runs the socket is made 0600. Only root and QEMU's user reach it.
Must not call libvirt.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from blockplane.chain.jobs.spec import VolumeRef
from blockplane.chain.ports import ThinHook
from blockplane.chain.volumes import ChainVolumes
from blockplane.storage.fill_size import fill_size
from blockplane.storage.images import measure_new
from blockplane.storage.names import validate_volume_name
from blockplane.storage.qcow2 import qcow2_max_physical
from blockplane.storage.volumes import VolumeService
from blockplane.store.records import PoolRecord, Records

SOCKET_NAME = "nbd.sock"


class ScratchImages:
    def __init__(self, volumes: VolumeService, chain_volumes: ChainVolumes, records: Records,
                 thin: ThinHook | None) -> None:
        self._volumes = volumes
        self._chain_volumes = chain_volumes
        self._records = records
        self._thin = thin

    def create(self, vm: str, target: str, pool: PoolRecord, job_id: str,
               virtual_bytes: int) -> tuple[VolumeRef, bool]:
        """A fresh scratch qcow2 for ``vm``'s disk ``target``; (its reference, thin)."""
        name = validate_volume_name(f"{vm}-{target}-scratch-{job_id[:8]}")
        thin = self._volumes.is_block(pool)
        physical = None
        if thin:
            physical = fill_size(measure_new(virtual_bytes), chunk_bytes=pool.chunk_bytes,
                                 ceiling_bytes=qcow2_max_physical(virtual_bytes))
        record = self._volumes.create(pool, name, virtual_bytes, "qcow2", thin,
                                      initial_bytes=physical)
        return VolumeRef(record.pool, record.name, record.path), thin

    def watch(self, vm: str, target: str, ref: VolumeRef, libvirt_index: int) -> None:
        """Let the thin monitor grow the scratch image (libvirt's ``target[libvirt_index]``)."""
        record = self._records.volume(ref.pool, ref.volume)
        if record is not None and record.thin and self._thin is not None:
            self._thin.track(vm, target, record, libvirt_index=libvirt_index)

    def discard(self, refs: Iterable[VolumeRef]) -> None:
        for ref in refs:
            self._chain_volumes.discard(ref)


class SocketRoom:
    """The per-job directories of the NBD sockets under ``$BLOCKPLANE_HOME/nbd``."""

    def __init__(self, home: Path) -> None:
        self.root = home / "nbd"

    def directory(self, job_id: str) -> Path:
        return self.root / job_id

    def socket(self, job_id: str) -> Path:
        return self.directory(job_id) / SOCKET_NAME

    def prepare(self, job_id: str, owner: tuple[int, int] | None) -> Path:
        """The job's directory, writable by QEMU's user only; the socket path inside it."""
        self.root.mkdir(mode=0o711, exist_ok=True)
        os.chmod(self.root, 0o711)
        directory = self.directory(job_id)
        directory.mkdir(mode=0o700, exist_ok=True)
        if owner is not None:
            os.chown(directory, *owner)
        return self.socket(job_id)

    def lock_down(self, job_id: str) -> None:
        """Once QEMU listens: the socket answers root and QEMU's user only."""
        socket = self.socket(job_id)
        if socket.exists():
            os.chmod(socket, 0o600)

    def remove(self, job_id: str) -> None:
        shutil.rmtree(self.directory(job_id), ignore_errors=True)

    def sweep(self, live_jobs: set[str]) -> list[str]:
        """Remove the directories of jobs that no longer run (left by a crash, or ended)."""
        if not self.root.is_dir():
            return []
        removed = []
        for entry in self.root.iterdir():
            if entry.name not in live_jobs and entry.is_dir():
                with contextlib.suppress(OSError):
                    shutil.rmtree(entry)
                    removed.append(entry.name)
        return removed
