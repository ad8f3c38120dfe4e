"""What a job leaves behind once it ended, by kind and outcome (the CLEANUP phase).

Success: the images the job dropped from the chain are invalidated (deleted once nothing
references them) and the disk record follows the new top (a copy's destination, an active
commit's base). No success: a copy's destination is deleted, unless an abort after READY left a
consistent point-in-time copy, which is kept as a standalone volume; a backup's partial files are
deleted. A pull backup's scratch images are deleted whatever the outcome: they hold nothing but
the export's copy-before-write data. Every step is idempotent, because a restart may run it
again. Must not call libvirt.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

from blockplane.chain.jobs.spec import JobSpec
from blockplane.chain.jobs.state import JobKind, Outcome
from blockplane.chain.jobs.store import StoredJob
from blockplane.chain.volumes import ChainVolumes

#: Removes what a backup that did not succeed left outside its files (an rbd backup's RBD
#: snapshot, ``rbd_copies``).
FailedBackupHook = Callable[[str, JobSpec], None]


class JobCleanup:
    def __init__(self, volumes: ChainVolumes,
                 failed_backup: FailedBackupHook | None = None) -> None:
        self._volumes = volumes
        self._failed_backup = failed_backup

    def run(self, stored: StoredJob) -> None:
        job, spec = stored.state, stored.spec
        if job.kind is JobKind.BACKUP and spec.mode == "pull":
            for ref in spec.created:
                self._volumes.discard(ref)
            return
        if job.outcome is Outcome.SUCCEEDED:
            if job.kind is JobKind.ACTIVE_COMMIT and spec.new_top_path:
                self._volumes.top_of(job.vm, job.target, spec.new_top_path)
            if job.kind is JobKind.COPY and spec.destination is not None:
                self._volumes.placed_on_top(job.vm, job.target, spec.destination)
            if spec.invalidated:
                self._volumes.invalidate(job.vm, spec.invalidated)
            return
        if job.kind is JobKind.COPY and spec.destination is not None:
            if job.point_in_time_copy:
                self._volumes.keep_apart(spec.destination)
            else:
                self._volumes.discard(spec.destination)
        for ref in spec.created:
            if spec.destination is None or ref != spec.destination:
                self._volumes.discard(ref)
        if job.kind is JobKind.BACKUP:
            for path in spec.backup_files.values():
                with contextlib.suppress(FileNotFoundError):
                    Path(path).unlink()
            if self._failed_backup is not None:
                self._failed_backup(job.vm, spec)
