"""The QoS part of a volume descriptor (``DiskAttach``), as throttle values.

Owns only the translation from request bodies to ``throttle`` types; validation is ``throttle``'s.
"""

from __future__ import annotations

from blockplane.api.schemas import ScaledLimitBody, VolumeDescriptor
from blockplane.errors import InvalidInput
from blockplane.throttle.disk_spec import scaled_limit, vm_group_spec
from blockplane.throttle.tiers import CapacityScaling, GroupSpec, ScaledLimit


def attach_throttle(
    body: VolumeDescriptor,
) -> tuple[tuple[str, ...], CapacityScaling | None, GroupSpec | None]:
    """(named groups in chain order, capacity scaling, VM aggregate group) of a descriptor.

    A ``vm_group`` without limits joins an existing group: it goes last in the chain, as a
    named group, and must exist.
    """
    groups = tuple(body.throttle_groups)
    vm_group: GroupSpec | None = None
    if body.vm_group is not None:
        if body.vm_group.limits:
            vm_group = vm_group_spec(body.vm_group.name, body.vm_group.limits)
        elif body.vm_group.name:
            groups = (*groups, body.vm_group.name)
        else:
            raise InvalidInput(
                "vm_group needs limits (to create it) or a name (to join it)",
                code="tier.vm_group_invalid",
            )
    scaling = CapacityScaling(
        total_iops_sec_per_gb=_scaled("total_iops_sec_per_gb", body.total_iops_sec_per_gb),
        total_bytes_sec_per_gb=_scaled("total_bytes_sec_per_gb", body.total_bytes_sec_per_gb),
    )
    return groups, (scaling if scaling.targets() else None), vm_group


def _scaled(field: str, body: ScaledLimitBody | None) -> ScaledLimit | None:
    return None if body is None else scaled_limit(field, body.model_dump())
