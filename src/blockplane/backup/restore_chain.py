"""Whether backups given to ``restore --from DIR [--from DIR ...]`` form one chain for a disk.

The rule: the first is a full backup of the disk; each one after it is an incremental of the
disk whose base (``incremental``) is the checkpoint the previous one created; every one has the
same virtual size. A full backup later in the list is refused (restore from it onward). Pure:
the caller read the manifests and checks the files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from blockplane.backup.layout import BackupManifest
from blockplane.errors import InvalidInput


@dataclass(frozen=True)
class RestoreStep:
    directory: str
    file: str
    mode: str
    size: int
    checkpoint: str | None
    incremental: str | None


def pick_target(manifests: Sequence[tuple[str, BackupManifest]], requested: str | None) -> str:
    """The disk to restore: ``requested``, or the only disk of the first backup."""
    first_dir, first = manifests[0]
    if requested is not None:
        return requested
    targets = [disk.target for disk in first.disks]
    if len(targets) != 1:
        raise InvalidInput(f"{first_dir} holds disks {', '.join(targets)}: name one with --disk",
                           code="restore.invalid")
    return targets[0]


def verify_chain(target: str, manifests: Sequence[tuple[str, BackupManifest]]
                 ) -> list[RestoreStep]:
    steps: list[RestoreStep] = []
    previous: BackupManifest | None = None
    for directory, manifest in manifests:
        disk = manifest.disk(target)
        if disk is None:
            raise _broken(f"{directory} holds no backup of disk {target}")
        if previous is None:
            if disk.mode != "full":
                raise _broken(f"{directory} is an incremental backup of {target}; the first "
                              "--from must be a full backup")
        else:
            if disk.mode == "full":
                raise _broken(f"{directory} is a full backup of {target}: restore from it "
                              "onward (leave out the backups before it)")
            if manifest.incremental is None or manifest.incremental != previous.checkpoint:
                raise _broken(
                    f"{directory} is an incremental from checkpoint {manifest.incremental}, but "
                    f"the backup before it created {previous.checkpoint}: give the backups in "
                    "order, with none missing")
            if disk.size != steps[0].size:
                raise _broken(f"{directory}: disk {target} is {disk.size} bytes, the full backup "
                              f"{steps[0].size}")
        steps.append(RestoreStep(directory, disk.file, disk.mode, disk.size,
                                 manifest.checkpoint, manifest.incremental))
        previous = manifest
    return steps


def _broken(message: str) -> InvalidInput:
    return InvalidInput(message, code="restore.chain_broken")
