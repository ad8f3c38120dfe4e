"""From a backup request to its ``JobSpec`` and the backup and checkpoint XML.

A push backup writes ``<DIR>/<target>.qcow2`` per disk; ``DIR`` must lie inside a pool's
directory (so the agent writes nowhere else) and the files must not exist yet. Every backup
creates a checkpoint (a persistent dirty bitmap per disk) named ``bp-<job id>``, the base for the
next incremental; ``--incremental C`` copies only what changed since checkpoint ``C``, into a
qcow2 whose unchanged clusters are unallocated. Must not create anything but report what to
create; must not call libvirt.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from blockplane.chain.jobs.spec import JobSpec
from blockplane.errors import Conflict, InvalidInput, NotFound, PathEscape
from blockplane.store.records import PoolRecord
from blockplane.xml.chain import backup_xml, checkpoint_xml


@dataclass(frozen=True)
class BackupPlan:
    spec: JobSpec
    backup_xml: str
    checkpoint_xml: str


def plan_backup(
    job_id: str,
    all_targets: list[str],
    chosen: list[str],
    dest_dir: str,
    incremental: str | None,
    checkpoints: list[str],
    pools: list[PoolRecord],
) -> BackupPlan:
    targets = list(dict.fromkeys(chosen)) or list(all_targets)
    unknown = [t for t in targets if t not in all_targets]
    if unknown:
        raise NotFound(f"the VM has no disk {', '.join(unknown)}", code="disk.not_found")
    if not targets:
        raise InvalidInput("the VM has no disks to back up", code="backup.invalid")
    directory = backup_directory(dest_dir, pools)
    if incremental is not None and incremental not in checkpoints:
        known = ", ".join(checkpoints) or "none"
        raise NotFound(f"no checkpoint {incremental!r} (checkpoints: {known})",
                       code="checkpoint.not_found")
    files = {target: os.path.join(directory, f"{target}.qcow2") for target in targets}
    for path in files.values():
        if os.path.lexists(path):
            raise Conflict(f"{path} already exists; back up into a new directory",
                           code="backup.exists")
    skipped = [t for t in all_targets if t not in targets]
    checkpoint = f"bp-{job_id}"
    spec = JobSpec(targets=tuple(targets), backup_dir=directory, backup_files=files,
                   incremental=incremental, checkpoint=checkpoint)
    return BackupPlan(spec, backup_xml(files, skipped, incremental),
                      checkpoint_xml(checkpoint, targets, skipped))


def backup_directory(dest_dir: str, pools: list[PoolRecord]) -> str:
    """``dest_dir`` resolved; it must lie strictly inside a dir or loop pool's directory."""
    if not os.path.isabs(dest_dir) or "\x00" in dest_dir:
        raise InvalidInput("--dest must be an absolute directory", code="backup.invalid")
    resolved = os.path.realpath(dest_dir)
    for pool in pools:
        if pool.type == "lvm":
            continue
        root = os.path.realpath(pool.path)
        if resolved != root and resolved.startswith(root + os.sep):
            return resolved
    roots = ", ".join(p.path for p in pools if p.type != "lvm") or "none"
    raise PathEscape(f"--dest {dest_dir} is not inside a pool directory (pools: {roots})",
                     name=dest_dir)
