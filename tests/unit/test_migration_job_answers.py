"""``/v1/jobs`` answers block jobs and migrations: each comes back as the view of its kind,
through the API's response model and the CLI's decoder, with the same JSON."""

from __future__ import annotations

import dataclasses

import pytest
from pydantic import TypeAdapter

from blockplane.api.job_answers import JOB_ANSWER, JOB_RESPONSE
from blockplane.chain.jobs.spec import JobSpec
from blockplane.chain.jobs.state import Progress
from blockplane.chain.jobs.views import JobView
from blockplane.cli.decode import encode
from blockplane.migration.phases import MigrationPhase, MigrationProgress, SourceJob
from blockplane.migration.views import MigrationJobView


def block_job() -> JobView:
    return JobView(
        id="j1", vm="web", target="vda", kind="copy", phase="ready", created_at=1.0,
        updated_at=2.0, pivot_requested=False, abort_requested=False, ready=True,
        progress=Progress(3, 4), libvirt_status=None, outcome=None, point_in_time_copy=False,
        error=None, finished_at=None, spec=JobSpec(targets=("vda",), bandwidth=5),
    )  # fmt: skip


def migration() -> MigrationJobView:
    job = SourceJob("m1", "web", "host-b", MigrationPhase.MIGRATING, 1.0, 2.0, 2.0,
                    progress=MigrationProgress(10, 40, 30, disk_processed=10, disk_total=20),
                    phase_seconds={"check": 0.5})
    return MigrationJobView.of(job, ("vda", "vdb"), {"copy_storage": "auto", "disks": []})


@pytest.mark.parametrize("view", [block_job(), migration()], ids=["copy", "migrate"])
def test_each_kind_decodes_as_its_own_view(view: JobView | MigrationJobView) -> None:
    sent = TypeAdapter(JOB_RESPONSE).validate_python(dataclasses.asdict(view))
    answer = sent.model_dump(mode="json")
    decoded = JOB_ANSWER.validate_python(answer)
    assert type(decoded) is type(view)
    assert decoded == view
    assert encode(decoded) == answer


def test_a_migration_reads_like_a_block_job() -> None:
    answer = encode(migration())
    assert answer["kind"] == "migrate" and answer["target"] == "vda,vdb"
    assert answer["progress"]["cur"] == 10 and answer["progress"]["end"] == 40
    assert answer["pivot_requested"] is False and answer["libvirt_status"] is None
    assert answer["peer"] == "host-b" and answer["phase"] == "migrating"
    assert JOB_ANSWER.validate_python(answer).progress.fraction == 0.25  # type: ignore[union-attr]


def test_an_answer_of_neither_shape_is_refused() -> None:
    with pytest.raises(ValueError):
        JOB_ANSWER.validate_python({"kind": "migrate", "id": "m1"})
