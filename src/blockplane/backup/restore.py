"""``RestoreService``: ``restore --from DIR [--from DIR ...] --pool P --name N [--attach VM]``.

Rebuilds one disk's volume from a full backup followed by its incrementals, in order:
- reads each directory's manifest (``layout``), or, for a push backup, the job that wrote it;
- checks the chain (``restore_chain``: a full first, each incremental based on the checkpoint
  the one before it created, one virtual size) and each file (a regular file, qcow2, of that
  size) before anything is created;
- creates the volume in the pool: thin on a loop or lvm pool, sized by ``storage.fill_size``
  from ``qemu-img measure`` of the chain, so it never waits on an extend while being filled;
- copies the chain into it with one ``qemu-img convert``, the incrementals laid over the full
  backup by naming each one's backing at open (``json:`` image options), so no backup file is
  touched;
- answers with the sha256 of the restored disk's content (its virtual size, read back through
  ``qemu-nbd`` and ``nbdcopy``), and attaches it to a VM if asked.
A failure after the volume was created deletes it. Must not touch the backup files.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from blockplane.backup.layout import BackupDisk, BackupManifest, read_manifest
from blockplane.backup.restore_chain import RestoreStep, pick_target, verify_chain
from blockplane.chain.jobs.state import JobKind, JobPhase
from blockplane.chain.jobs.store import JobStore
from blockplane.errors import BlockplaneError, InvalidInput, NotFound, OperationFailed
from blockplane.storage.fill_size import fill_size
from blockplane.storage.images import run_qemu_img
from blockplane.storage.names import validate_volume_name
from blockplane.storage.pools import PoolService
from blockplane.storage.qcow2 import qcow2_max_physical
from blockplane.storage.volumes import VolumeService
from blockplane.store.events import EventPublisher
from blockplane.store.records import Records, VolumeRecord
from blockplane.vms.disks import AttachRequest, DiskService

COPY_TIMEOUT_S = 6 * 3600.0
READ_CHUNK = 4 << 20


@dataclass(frozen=True)
class RestoreRequest:
    sources: tuple[str, ...]
    pool: str
    name: str
    disk: str | None = None
    attach: str | None = None


@dataclass(frozen=True)
class RestoredBackup:
    directory: str
    mode: str
    checkpoint: str | None
    incremental: str | None


@dataclass(frozen=True)
class RestoreResult:
    pool: str
    volume: str
    path: str
    disk: str
    virtual_bytes: int
    physical_bytes: int
    thin: bool
    sha256: str
    chain: tuple[RestoredBackup, ...]
    attached_to: str | None = None
    attached_as: str | None = None


class RestoreService:
    def __init__(self, jobs: JobStore, volumes: VolumeService, pools: PoolService,
                 disks: DiskService, records: Records, events: EventPublisher) -> None:
        self._jobs = jobs
        self._volumes = volumes
        self._pools = pools
        self._disks = disks
        self._records = records
        self._events = events

    def restore(self, request: RestoreRequest) -> RestoreResult:
        if not request.sources:
            raise InvalidInput("give at least one --from DIR", code="restore.invalid")
        pool = self._pools.get(request.pool)
        name = validate_volume_name(request.name)
        if request.attach is not None and self._records.vm(request.attach) is None:
            raise NotFound(f"no VM named {request.attach!r} is managed by blockplane",
                           code="vm.not_found")
        manifests = [(str(directory), self._manifest(directory))
                     for directory in (_directory(source) for source in request.sources)]
        target = pick_target(manifests, request.disk)
        steps = verify_chain(target, manifests)
        paths = [_checked_file(step) for step in steps]
        size = steps[0].size
        spec = chain_spec(paths)
        thin = self._volumes.is_block(pool)
        physical = None
        if thin:
            measured = json.loads(run_qemu_img(
                ["measure", "--output=json", "-O", "qcow2", spec]).stdout)["required"]
            physical = fill_size(int(measured), chunk_bytes=pool.chunk_bytes,
                                 ceiling_bytes=qcow2_max_physical(size))
        volume = self._volumes.create(pool, name, size, "qcow2", thin, initial_bytes=physical)
        try:
            run_qemu_img(["convert", "-n", "--target-is-zero", "-O", "qcow2", spec,
                          volume.path], timeout_s=COPY_TIMEOUT_S)
            digest = content_sha256(volume.path)
            attached = self._attach(request, volume) if request.attach else None
        except BaseException:
            self._volumes.delete(pool.name, name)
            raise
        self._events.publish("backup.restored", request.attach, pool=pool.name, volume=name,
                             disk=target, sha256=digest, backups=len(steps))
        refreshed = self._records.volume(pool.name, name) or volume
        return RestoreResult(
            pool=pool.name, volume=name, path=volume.path, disk=target, virtual_bytes=size,
            physical_bytes=refreshed.physical_bytes, thin=thin, sha256=digest,
            chain=tuple(RestoredBackup(s.directory, s.mode, s.checkpoint, s.incremental)
                        for s in steps),
            attached_to=request.attach, attached_as=attached,
        )

    def _attach(self, request: RestoreRequest, volume: VolumeRecord) -> str:
        assert request.attach is not None
        answer = self._disks.attach(AttachRequest(
            vm=request.attach, pool=volume.pool, size_bytes=volume.virtual_bytes,
            name=volume.name, thin=volume.thin, existing=True))
        return answer.target

    def _manifest(self, directory: Path) -> BackupManifest:
        manifest = read_manifest(directory)
        if manifest is not None:
            return manifest
        pushed = self._push_manifest(directory)
        if pushed is None:
            raise InvalidInput(f"{directory} has no manifest.json and no push backup of this "
                               "agent wrote it", code="restore.invalid")
        return pushed

    def _push_manifest(self, directory: Path) -> BackupManifest | None:
        """The facts of a push backup, from the job that wrote it."""
        for stored in reversed(self._jobs.all(limit=100000)):
            spec = stored.spec
            if (stored.state.kind is not JobKind.BACKUP or spec.mode != "push"
                    or spec.backup_dir is None
                    or os.path.realpath(spec.backup_dir) != str(directory)):
                continue
            if stored.state.phase is not JobPhase.DONE:
                raise InvalidInput(f"the push backup into {directory} did not succeed "
                                   f"(job {stored.id}, {stored.state.phase.value})",
                                   code="restore.invalid")
            mode = "incremental" if spec.incremental else "full"
            disks = tuple(
                BackupDisk(target, os.path.basename(path), _virtual_size(path), mode)
                for target, path in spec.backup_files.items())
            return BackupManifest(stored.state.vm, spec.checkpoint, spec.incremental, disks,
                                  stored.state.finished_at)
        return None


def chain_spec(paths: Sequence[str]) -> str:
    """``json:`` options opening ``paths[-1]`` on ``paths[-2]`` ... on ``paths[0]`` (which has
    no backing), whatever backing each file names itself."""
    spec: dict[str, Any] | None = None
    for path in paths:
        layer: dict[str, Any] = {"driver": "qcow2", "read-only": True,
                                 "file": {"driver": "file", "filename": path}}
        layer["backing"] = spec
        spec = layer
    return "json:" + json.dumps(spec)


def content_sha256(path: str, image_format: str = "qcow2") -> str:
    """The sha256 of an image's guest-visible content, all of its virtual size."""
    command = ["nbdcopy", "--", "[", "qemu-nbd", "-r", "-f", image_format, path, "]", "-"]
    try:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except FileNotFoundError as error:
        raise OperationFailed("nbdcopy is not installed (Debian package libnbd-bin)",
                              code="restore.tool_missing") from error
    digest = hashlib.sha256()
    assert process.stdout is not None
    while chunk := process.stdout.read(READ_CHUNK):
        digest.update(chunk)
    _, errors = process.communicate()
    if process.returncode != 0:
        raise OperationFailed(f"reading {path} back failed: {errors.decode().strip()}",
                              code="image.failed")
    return digest.hexdigest()


def _directory(source: str) -> Path:
    if not os.path.isabs(source) or "\x00" in source:
        raise InvalidInput(f"--from {source!r} must be an absolute directory",
                           code="restore.invalid")
    resolved = Path(os.path.realpath(source))
    if not resolved.is_dir():
        raise NotFound(f"no backup directory {source}", code="restore.not_found")
    return resolved


def _checked_file(step: RestoreStep) -> str:
    path = os.path.join(step.directory, step.file)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError as error:
        raise NotFound(f"{path} is missing", code="restore.not_found") from error
    if not stat.S_ISREG(mode):
        raise InvalidInput(f"{path} is not a regular file", code="restore.invalid")
    info = json.loads(run_qemu_img(["info", "--output=json", "-f", "qcow2", path]).stdout)
    if int(info.get("virtual-size", -1)) != step.size:
        raise InvalidInput(f"{path} is {info.get('virtual-size')} bytes, the chain "
                           f"{step.size}", code="restore.chain_broken")
    return path


def _virtual_size(path: str) -> int:
    try:
        return int(json.loads(run_qemu_img(["info", "-U", "--output=json", path]).stdout)
                   ["virtual-size"])
    except (BlockplaneError, KeyError, ValueError) as error:
        raise InvalidInput(f"cannot read the backup file {path}: {error}",
                           code="restore.invalid") from error
