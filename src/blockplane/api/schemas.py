"""Request bodies of the HTTP API (pydantic lives here, at the edge, and nowhere else)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

Size = int | str


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PoolCreate(Body):
    """``type: rbd`` takes ``ceph_conf`` and ``rbd_pool`` (and optionally ``ceph_user``,
    ``ceph_keyring``, ``secret_uuid``) instead of ``path``/``chunk``/``utilization``: paths on
    the agent's host; the key is read from the keyring there and never travels in a request."""

    name: str = Field(max_length=64)
    type: str = Field(max_length=16)
    path: str | None = Field(default=None, max_length=4096)
    capacity: Size | None = None
    chunk: Size | None = None
    utilization: int | None = None
    ceph_conf: str | None = Field(default=None, max_length=4096)
    rbd_pool: str | None = Field(default=None, max_length=128)
    ceph_user: str | None = Field(default=None, max_length=128)
    ceph_keyring: str | None = Field(default=None, max_length=4096)
    secret_uuid: str | None = Field(default=None, max_length=36)


class PoolUpdate(Body):
    """``PATCH /v1/pools/{name}``: ``capacity`` null removes the limit."""

    capacity: Size | None


class ScaledLimitBody(Body):
    """A capacity-scaled limit, like Cinder's ``*_per_gb`` QoS specs."""

    per_gb: int
    floor: int = 0
    cap: int = 0


class VMGroupBody(Body):
    """The VM-level aggregate group; without limits the disk joins an existing group."""

    name: str | None = Field(default=None, max_length=64)
    limits: dict[str, int | str] = Field(default_factory=dict)


class ThrottleSet(Body):
    """``PUT /v1/vms/{vm}/throttle-groups/{group}``: fields left out keep their value."""

    limits: dict[str, int | str] = Field(default_factory=dict)
    live: bool | None = None
    config: bool | None = None


class VolumeDescriptor(Body):
    """What every disk request carries of a platform's volume descriptor."""

    name: str | None = Field(default=None, max_length=128)
    thin: bool = False
    #: None: the pool's default (raw on rbd pools, qcow2 elsewhere).
    format: str | None = Field(default=None, max_length=8)
    bus: str = Field(default="virtio", max_length=8)
    queues: int | None = None
    io_threads: int | None = None
    throttle_groups: list[str] = Field(default_factory=list, max_length=16)
    limits: dict[str, int | str] = Field(default_factory=dict)
    total_iops_sec_per_gb: ScaledLimitBody | None = None
    total_bytes_sec_per_gb: ScaledLimitBody | None = None
    vm_group: VMGroupBody | None = None


class DiskAttach(VolumeDescriptor):
    """A volume descriptor, as a cloud platform sends it."""

    pool: str = Field(max_length=64)
    size: Size


class VMCreate(Body):
    name: str = Field(max_length=64)
    vcpus: int = 2
    memory: Size = "512M"
    guest: str = Field(default="none", max_length=16)
    start: bool = False
    disks: list[DiskAttach] = Field(
        default_factory=list,
        max_length=16,
        description="Disks attached at define time, before the first start (all or nothing).",
    )


class GuestExec(Body):
    argv: list[str] = Field(min_length=1, max_length=256)
    timeout: float = Field(default=120.0, gt=0, le=3600)


class VMStop(Body):
    timeout: float = Field(default=30.0, gt=0, le=3600)


class MigrateCheck(Body):
    """Another host: its ``blockplane facts --json`` document, or a peer whose live facts are
    fetched (exactly one of the two)."""

    facts: dict[str, Any] | None = None
    peer: str | None = Field(default=None, max_length=64)
