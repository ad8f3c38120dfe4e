"""Request and response bodies of the migration routes (pydantic, at the edge).

``MigrateStart`` is what ``vm migrate`` sends; ``IncomingBody`` is what a source agent sends a
destination (``migration.plan.MigrationRequest`` as JSON, checked again when it is decoded);
the answers are the job (the block jobs' shape, kind ``migrate``), the destination's plan and
the destination's view of one migration.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from blockplane.api.schemas import Body, Size
from blockplane.errors import InvalidInput
from blockplane.migration.destination import IncomingView
from blockplane.migration.plan import MigrationPlan, MigrationRequest
from blockplane.migration.source import MigrationJobView

MAX_XML = 1024 * 1024


class MigrateStart(Body):
    """``POST /v1/vms/{vm}/migrate``."""

    to: str = Field(max_length=64, description="The destination: a peer (`peer add`)")
    copy_storage: Literal["auto", "all", "none"] = Field(
        default="auto",
        description="auto: disks on storage both hosts share stay, the others are copied over "
        "NBD; all: copy every disk; none: copy nothing (every disk must be shared)")
    pool_map: dict[str, str] = Field(
        default_factory=dict, max_length=64,
        description="Source pool -> destination pool; unmapped pools keep their name")
    bandwidth: Size | None = Field(default=None, description="Bytes per second (or 8M); none: "
                                   "unlimited")
    max_downtime: int | None = Field(default=None, ge=0, le=3_600_000,
                                     description="Milliseconds the VM may pause at the switch")


class IncomingBody(Body):
    """A source agent's ``MigrationRequest`` (``POST /v1/migrations/incoming[/plan]``)."""

    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    vm: dict[str, Any]
    copy_storage: Literal["auto", "all", "none"] = "auto"
    disks: list[dict[str, Any]] = Field(max_length=64)
    live_xml: str = Field(max_length=MAX_XML)
    persistent_xml: str = Field(max_length=MAX_XML)
    checkpoints: list[str] = Field(default_factory=list, max_length=256)
    source_host: str = Field(default="", max_length=255)

    def request(self) -> MigrationRequest:
        try:
            return MigrationRequest.from_json(self.model_dump())
        except (KeyError, TypeError, ValueError) as error:
            raise InvalidInput(f"the migration request is malformed: {error!r}",
                               code="migration.invalid") from None


class MigrationJobOut(BaseModel):
    id: str
    vm: str
    target: str = Field(description="The VM's disks, comma separated")
    kind: Literal["migrate"]
    phase: str
    created_at: float
    updated_at: float
    pivot_requested: bool
    abort_requested: bool
    ready: bool
    progress: dict[str, int] | None = Field(
        description="libvirt's job statistics: cur/end bytes, memory and disks")
    libvirt_status: None
    outcome: str | None
    point_in_time_copy: bool
    error: str | None
    finished_at: float | None
    peer: str
    downtime_ms: int | None
    phase_seconds: dict[str, float] = Field(description="check, prepare, migrate, finish, "
                                            "cleanup, rollback: seconds in each")
    spec: dict[str, Any] = Field(description="The options, and per disk what it gets there")

    @classmethod
    def of(cls, view: MigrationJobView) -> MigrationJobOut:
        return cls.model_validate(view.to_json())


class PlanOut(BaseModel):
    disks: list[dict[str, Any]]
    iothread_ids: list[int]
    live_xml: str
    persistent_xml: str
    libvirt_uri: str
    migration_uri: str | None
    notes: list[str]

    @classmethod
    def of(cls, plan: MigrationPlan) -> PlanOut:
        return cls.model_validate(plan.to_json())


class IncomingOut(BaseModel):
    id: str
    vm: str
    phase: str = Field(description="preparing, prepared, finishing, done, rolling_back, "
                       "rolled_back, or unknown (no record of it here)")
    present: bool
    running: bool
    incoming: bool
    error: str | None
    downtime_ms: int | None

    @classmethod
    def of(cls, view: IncomingView) -> IncomingOut:
        return cls.model_validate(view.to_json())
