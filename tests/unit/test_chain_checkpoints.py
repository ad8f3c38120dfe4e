"""Checkpoint XML parsing and the rule for when a checkpoint may not be deleted."""

from __future__ import annotations

from dataclasses import replace

from blockplane.chain.checkpoints import checkpoint_user, checkpoint_view
from blockplane.chain.jobs.spec import JobSpec
from blockplane.chain.jobs.state import JobKind, JobPhase, new_job
from blockplane.chain.jobs.store import StoredJob
from blockplane.cli.decode import encode
from blockplane.xml.chain import CheckpointDisk, CheckpointDocument, parse_checkpoint

LIBVIRT_XML = """<domaincheckpoint>
  <name>bp-2</name>
  <parent><name>bp-1</name></parent>
  <creationTime>1700000000</creationTime>
  <disks>
    <disk name='vda' checkpoint='bitmap' bitmap='bp-2' size='1048576'/>
    <disk name='vdb' checkpoint='no'/>
  </disks>
</domaincheckpoint>"""

CHECKPOINT = CheckpointDocument("bp-2", "bp-1", 1700000000,
                                (CheckpointDisk("vda", "bp-2", None),
                                 CheckpointDisk("vdb", None, None)))


def job(kind: JobKind, targets: tuple[str, ...], *, vm: str = "web",
        phase: JobPhase = JobPhase.RUNNING, incremental: str | None = None,
        checkpoint: str | None = None) -> StoredJob:
    state = replace(new_job("j1", vm, ",".join(targets), kind, now=0.0), phase=phase)
    return StoredJob(state, JobSpec(targets=targets, incremental=incremental,
                                    checkpoint=checkpoint))


def test_parse_reads_name_parent_time_and_bitmaps() -> None:
    parsed = parse_checkpoint(LIBVIRT_XML)
    assert (parsed.name, parsed.parent, parsed.created_at) == ("bp-2", "bp-1", 1700000000)
    assert parsed.disks == (CheckpointDisk("vda", "bp-2", 1048576),
                            CheckpointDisk("vdb", None, None))


def test_parse_without_parent_or_bitmap_attribute_uses_the_checkpoint_name() -> None:
    parsed = parse_checkpoint("<domaincheckpoint><name>c</name><disks>"
                              "<disk name='vda' checkpoint='bitmap'/></disks>"
                              "</domaincheckpoint>")
    assert parsed.parent is None and parsed.created_at is None
    assert parsed.disks == (CheckpointDisk("vda", "c", None),)


def test_backup_starting_from_or_creating_it_uses_it() -> None:
    starting = job(JobKind.BACKUP, ("vdb",), incremental="bp-2", checkpoint="bp-3")
    creating = job(JobKind.BACKUP, ("vdb",), incremental=None, checkpoint="bp-2")
    other = job(JobKind.BACKUP, ("vda",), incremental="bp-1", checkpoint="bp-3")
    assert checkpoint_user(CHECKPOINT, "web", [starting]) is starting
    assert checkpoint_user(CHECKPOINT, "web", [creating]) is creating
    assert checkpoint_user(CHECKPOINT, "web", [other]) is None


def test_block_job_on_a_tracked_disk_uses_it() -> None:
    on_vda = job(JobKind.ACTIVE_COMMIT, ("vda",))
    on_vdb = job(JobKind.PULL, ("vdb",))  # vdb has no bitmap in this checkpoint
    assert checkpoint_user(CHECKPOINT, "web", [on_vdb, on_vda]) is on_vda
    assert checkpoint_user(CHECKPOINT, "web", [on_vdb]) is None


def test_ended_jobs_and_other_vms_do_not_count() -> None:
    ended = job(JobKind.BACKUP, ("vda",), phase=JobPhase.CLEANUP, incremental="bp-2")
    done = job(JobKind.COPY, ("vda",), phase=JobPhase.DONE)
    elsewhere = job(JobKind.COPY, ("vda",), vm="db")
    assert checkpoint_user(CHECKPOINT, "web", [ended, done, elsewhere]) is None
    preparing = job(JobKind.COPY, ("vda",), phase=JobPhase.PREPARING)
    assert checkpoint_user(CHECKPOINT, "web", [preparing]) is preparing


def test_json_names_the_job_using_it() -> None:
    data = encode(checkpoint_view(CHECKPOINT, "web", [job(JobKind.COPY, ("vda",))]))
    assert data["used_by_job"] == "j1" and data["parent"] == "bp-1"
    assert data["disks"][1] == {"target": "vdb", "bitmap": None, "dirty_bytes": None}
