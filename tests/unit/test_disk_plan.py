"""The one disk planner (``vms.disk_plan``) and ``blockplane.plan``: IOThreads that are not
blockplane's are skipped, every fallback is explained, and the fragments, once placed in the
domain, are valid libvirt XML (``virt-xml-validate``)."""

from __future__ import annotations

import shutil
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from blockplane.errors import CapabilityMissing
from blockplane.facts.capabilities import Capability
from blockplane.iothreads import MappingSupport
from blockplane.iothreads.apply import HostIOThreadLimits
from blockplane.plan import plan_disk as public_plan
from blockplane.vms.disk_plan import (
    DiskDescriptor,
    HostPlanning,
    context_from_xml,
    plan_disk,
    stand_in_domain,
)
from tests.harness import validate_domain_xml

YES = MappingSupport(True, "supported")
DEADLOCK = MappingSupport(False, "QEMU 10.0.2 deadlocks a throttled disk in several IOThreads")
HOST = HostPlanning(HostIOThreadLimits(8, 16, YES, YES, DEADLOCK),
                    Capability(True, "throttle groups supported", "libvirt >= 11.2"))
GIB = 1 << 30

FACTS: dict[str, Any] = {
    "qemu": {"version": "10.0.2"}, "libvirt": {"version": "11.3.0"}, "cpus": 8,
}


def plan_on(xml: str, reserved: list[int] | None = None, **descriptor: Any) -> Any:
    context = context_from_xml(xml, reserved_iothreads=reserved)
    return plan_disk(context, DiskDescriptor(size_bytes=GIB, **descriptor), HOST, "file")


def test_the_domains_own_iothreads_are_skipped() -> None:
    plan = plan_on(stand_in_domain("vm", 4, [1, 101, 102]), queues=4, io_threads=2)
    assert plan.applied.plan.iothreads_to_add == (103, 104)
    assert {i for i, _ in plan.applied.plan.disk.mapping} == {103, 104}


def test_with_nothing_reserved_the_disk_shares_the_pool() -> None:
    plan = plan_on(stand_in_domain("vm", 4, [101, 102]), reserved=[], queues=4, io_threads=2)
    assert plan.applied.plan.iothreads_to_add == ()
    assert plan.applied.plan.disk.mapping == ((101, (0, 2)), (102, (1, 3)))


def test_a_throttled_disk_falls_back_to_one_iothread_and_says_why() -> None:
    xml = stand_in_domain("vm", 4, [])
    plan = plan_on(xml, queues=4, io_threads=2, limits={"total_iops_sec": 300})
    answer = plan.to_json()
    assert answer["iothreads_to_add"] == [101]
    assert answer["fallbacks"] == [plan.applied.plan.reason]
    assert "deadlocks" in answer["fallbacks"][0]
    driver = etree.fromstring(answer["xml"]["driver"])
    assert (driver.get("queues"), driver.get("iothread")) == ("4", "101")
    assert answer["throttle_filters"] == ["blockplane-disk-vda"]
    assert answer["throttle_groups_to_create"] == [{
        "name": "blockplane-disk-vda", "limits": {"total_iops_sec": 300},
        "definitions": ["config"]}]


def test_limits_without_throttle_support_are_refused() -> None:
    context = context_from_xml(stand_in_domain("vm", 2, []))
    with pytest.raises(CapabilityMissing):
        plan_disk(context, DiskDescriptor(size_bytes=GIB, limits={"total_iops_sec": 5}),
                  HostPlanning(HOST.iothreads, None), "file")


def test_the_public_entry_point_gives_the_same_plan() -> None:
    xml = stand_in_domain("vm", 4, [101])
    public = public_plan(FACTS, domain_xml=xml, queues=4, io_threads=2, size="1G")
    assert public.iothreads_to_add == (102, 103)
    assert public.target == "vda"
    assert 'queues="4"' in public.disk_xml
    assert public.document["iothreads"]["mapping"] == [[102, [0, 2]], [103, [1, 3]]]
    vcpus_only = public_plan(FACTS, vcpus=4, iothread_ids=[101], queues=4, io_threads=2)
    assert vcpus_only.disk_xml == public.disk_xml


def position(root: etree._Element, tag: str) -> int:
    node = root.find(tag)
    assert node is not None, tag
    return list(root).index(node)


def placed(domain_xml: str, answer: dict[str, Any]) -> str:
    """The plan's fragments put where a platform puts them, with a source added."""
    root = etree.fromstring(domain_xml.encode())
    fragments = answer["xml"]
    new_ids = etree.fromstring(fragments["iothreadids"])
    ids = root.find("iothreadids")
    if len(new_ids):
        if ids is None:
            ids = etree.Element("iothreadids")
            root.insert(position(root, "vcpu") + 1, ids)
        for node in new_ids:
            ids.append(node)
        count = root.find("iothreads")
        if count is None:
            count = etree.Element("iothreads")
            root.insert(list(root).index(ids), count)
        count.text = str(len(ids))
    groups = etree.fromstring(fragments["throttlegroups"])
    if len(groups):
        existing = root.find("throttlegroups")
        if existing is None:
            root.insert(position(root, "os"), groups)
        else:
            existing.extend(list(groups))
    disk = etree.fromstring(fragments["disk"])
    source_kind = answer.get("source_kind", "file")
    source = etree.Element("source", {"dev": "/dev/loop9"} if source_kind == "block"
                           else {"file": "/pool/new.qcow2"})
    disk.insert(1, source)
    devices = root.find("devices")
    assert devices is not None
    if fragments["controller"]:
        devices.append(etree.fromstring(fragments["controller"]))
    devices.append(disk)
    return etree.tostring(root, encoding="unicode")


def full_domain(vcpus: int, ids: list[int], group: bool) -> str:
    groups = ("<throttlegroups><throttlegroup><total_iops_sec>900</total_iops_sec>"
              "<group_name>gold</group_name></throttlegroup></throttlegroups>" if group else "")
    iothreads = ""
    if ids:
        iothreads = (f"<iothreads>{len(ids)}</iothreads><iothreadids>"
                     + "".join(f"<iothread id='{i}'/>" for i in ids) + "</iothreadids>")
    return (f"<domain type='kvm'><name>plat</name><memory unit='MiB'>128</memory>"
            f"<vcpu>{vcpus}</vcpu>{iothreads}{groups}"
            "<os><type arch='x86_64' machine='pc'>hvm</type></os>"
            "<devices><emulator>/usr/bin/qemu-system-x86_64</emulator>"
            "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
            "<source file='/pool/root.qcow2'/><target dev='vda' bus='virtio'/></disk>"
            "</devices></domain>")


descriptors = st.fixed_dictionaries({
    "bus": st.sampled_from(["virtio", "scsi"]),
    "format": st.sampled_from(["qcow2", "raw"]),
    "queues": st.one_of(st.none(), st.integers(1, 8)),
    "io_threads": st.one_of(st.none(), st.integers(0, 6)),
    "limits": st.sampled_from([{}, {"total_iops_sec": 300},
                               {"read_bytes_sec": 10 << 20, "write_iops_sec": 50}]),
    "throttle_groups": st.sampled_from([(), ("gold",)]),
})


@pytest.mark.skipif(shutil.which("virt-xml-validate") is None,
                    reason="virt-xml-validate (libvirt-clients) is not installed")
@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(
    descriptor=descriptors,
    vcpus=st.integers(1, 8),
    ids=st.lists(st.sampled_from([1, 2, 101, 102, 105]), unique=True, max_size=3),
    reserve_none=st.booleans(),
    thin=st.booleans(),
)
def test_fragments_placed_in_the_domain_validate(
    descriptor: dict[str, Any], vcpus: int, ids: list[int], reserve_none: bool, thin: bool
) -> None:
    has_group = bool(descriptor["throttle_groups"])
    xml = full_domain(vcpus, sorted(ids), has_group)
    if thin:
        descriptor = {**descriptor, "format": "qcow2"}
    context = context_from_xml(xml, reserved_iothreads=[] if reserve_none else None)
    plan = plan_disk(context, DiskDescriptor(size_bytes=GIB, thin=thin, **descriptor), HOST,
                     "block" if thin else "file")
    answer = {**plan.to_json(), "source_kind": "block" if thin else "file"}
    reserved = set(context.reserved_iothreads) | {i for i in ids if i < 101}
    assert not reserved & set(answer["iothreads_to_add"])
    assert not reserved & {i for i, _ in plan.applied.plan.disk.mapping}
    problem = validate_domain_xml(placed(xml, answer), "planned domain")
    assert problem is None, problem
