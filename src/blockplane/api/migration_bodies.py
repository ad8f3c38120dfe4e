"""Request and response bodies of the migration routes (pydantic, at the edge).

``MigrateStart`` is what ``vm migrate`` sends; ``IncomingBody`` is what a source agent sends a
destination (``migration.plan.MigrationRequest`` as JSON, checked again when it is decoded);
the destination's plan is answered as ``PlanOut`` (the job and the destination's view of one
migration are the services' views, ``api.models``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from blockplane.api.schemas import Body, Size
from blockplane.errors import InvalidInput
from blockplane.migration.plan import MigrationPlan, MigrationRequest

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
    snapshots: list[dict[str, Any]] = Field(default_factory=list, max_length=1024)

    def request(self) -> MigrationRequest:
        try:
            return MigrationRequest.from_json(self.model_dump())
        except (KeyError, TypeError, ValueError) as error:
            raise InvalidInput(f"the migration request is malformed: {error!r}",
                               code="migration.invalid") from None


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
