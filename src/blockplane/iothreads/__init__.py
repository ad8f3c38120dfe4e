"""IOThread virtqueue mapping: policy, planner and placement (pure), applying and state.

Owns deciding how each disk's queues are served by IOThreads and which IOThreads a VM needs
(``policy``, ``planner``, ``placement``: they must not import libvirt, read facts or touch XML;
callers pass capabilities in as ``MappingSupport``), reading a VM's IOThreads from its XML
(``state``) and applying a plan to a domain through its ``DomainHandle`` (``apply``). This face
re-exports the pure part only.
"""

from blockplane.iothreads.model import (
    Decision,
    DiskMapping,
    IOThreadPlan,
    IOThreadRequest,
    MappingSupport,
    VMIOThreads,
)
from blockplane.iothreads.placement import Gap, hosts_that_can_run, migration_gaps
from blockplane.iothreads.planner import apply_plan, plan_attach, plan_detach, plan_vm
from blockplane.iothreads.policy import decide, validate_request

__all__ = [
    "Decision",
    "DiskMapping",
    "Gap",
    "IOThreadPlan",
    "IOThreadRequest",
    "MappingSupport",
    "VMIOThreads",
    "apply_plan",
    "decide",
    "hosts_that_can_run",
    "migration_gaps",
    "plan_attach",
    "plan_detach",
    "plan_vm",
    "validate_request",
]
