"""Request and response bodies of adopt, release and disk planning (pydantic, at the edge)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from blockplane.api.schemas import Body, Size, VolumeDescriptor


class VMAdopt(Body):
    """``POST /v1/vms/{vm}/adopt``: ``pool_for`` items are ``PREFIX=POOL``."""

    pool_for: list[str] = Field(default_factory=list, max_length=32)


class PlanDisk(VolumeDescriptor):
    """``POST /v1/plan/disk``: a volume descriptor and the domain to plan it on.

    The domain: ``domain_xml`` (its current XML), or ``vcpus`` with ``iothread_ids``, or ``vm``
    alone (a managed VM, or a domain libvirt has). ``reserved_iothreads``: the IOThreads that
    are not blockplane's to use (default: every one the given domain already has).
    """

    vm: str | None = Field(default=None, max_length=64)
    domain_xml: str | None = Field(default=None, max_length=512 * 1024)
    vcpus: int | None = None
    iothread_ids: list[int] = Field(default_factory=list, max_length=1024)
    reserved_iothreads: list[int] | None = Field(default=None, max_length=1024)
    pool: str | None = Field(default=None, max_length=64)
    size: Size = "1G"


class AdoptAnswer(BaseModel):
    vm: str
    running: bool
    disks: list[dict[str, Any]]
    foreign: list[dict[str, Any]]
    reserved_iothreads: list[int]
    throttle_groups: list[dict[str, Any]]
    iotune: dict[str, dict[str, int]]
    checkpoints: list[str]
    jobs: list[str]
    seconds: float


class ReleaseAnswer(BaseModel):
    vm: str
    adopted: bool
    disks: list[str]
    volumes_forgotten: list[str]
    thresholds_cleared: list[str]
    domain_present: bool


class AdoptionAnswer(BaseModel):
    """``GET /v1/vms/{vm}/adoption``: what the domain had when it was adopted."""

    vm: str
    adopted_at: float
    gone_since: float | None
    reserved_iothreads: list[int]
    foreign_disks: list[dict[str, Any]]
    foreign_paths: list[str]
    report: dict[str, Any]


class PlanFragments(BaseModel):
    disk: str
    driver: str | None
    controller: str | None
    iothreadids: str
    throttlegroups: str


class PlanAnswer(BaseModel):
    vm: str
    target: str
    bus: str
    basis: str
    source_kind: str
    pool: str | None
    iothreads: dict[str, Any]
    iothreads_to_add: list[int]
    throttle: dict[str, Any] | None
    throttle_filters: list[str]
    throttle_groups_to_create: list[dict[str, Any]]
    notes: list[str]
    fallbacks: list[str]
    xml: PlanFragments
