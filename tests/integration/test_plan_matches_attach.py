"""Property: what ``POST /v1/plan/disk`` says is exactly what ``disk attach`` then applies.

For generated domains (vCPUs, IOThreads of the platform's, a disk on one of them, a throttle
group), defined by hand on the system daemon and adopted, and generated volume descriptors
(bus, format, queues, io_threads, limits, groups): the plan asked for by VM name and the plan
asked for with the domain's XML agree, and after the attach the persistent definition holds
the planned device (driver, queues, IOThread mapping, filters or ``<iotune>``), exactly the
planned new IOThreads and throttle groups, and validates against libvirt's schema.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from blockplane.xml.disk import parse_disks
from blockplane.xml.domain import parse_iothread_ids
from blockplane.xml.throttle import parse_throttle_groups
from tests.harness import cleanup_agent, validate_domain_xml
from tests.system_daemon import SYSTEM_URI, SystemAgent, requires_system_daemon
from tests.system_daemon import daemons as daemons  # the module's system daemon

pytestmark = requires_system_daemon

PREFIX = f"bpplan{os.getpid()}x"
SERIAL = itertools.count()


def virsh(*args: str) -> str:
    result = subprocess.run(["virsh", "-q", "-c", SYSTEM_URI, *args], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, f"virsh {args}: {result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def planning_agent(daemons: None) -> Iterator[SystemAgent]:
    agent = SystemAgent(Path(tempfile.mkdtemp(prefix="bp-plan-", dir="/tmp")))
    agent.ok("agent", "start")
    agent.ok("pool", "create", "pp", "--type", "dir")
    try:
        yield agent
    finally:
        for name in virsh("list", "--all", "--name").split():
            if name.startswith(PREFIX):
                subprocess.run(["virsh", "-c", SYSTEM_URI, "undefine", name], check=False,
                               capture_output=True)
        cleanup_agent(agent)


def domain_xml(name: str, vcpus: int, ids: list[int], mapped_on: int | None, group: bool,
               image: Path) -> str:
    iothreads = ""
    if ids:
        iothreads = (f"<iothreads>{len(ids)}</iothreads><iothreadids>"
                     + "".join(f"<iothread id='{i}'/>" for i in ids) + "</iothreadids>")
    groups = ("<throttlegroups><throttlegroup><total_iops_sec>800</total_iops_sec>"
              "<group_name>gold</group_name></throttlegroup></throttlegroups>" if group else "")
    driver = f" iothread='{mapped_on}'" if mapped_on is not None else ""
    return (f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>128</memory>"
            f"<vcpu>{vcpus}</vcpu>{iothreads}{groups}"
            "<os><type arch='x86_64' machine='pc'>hvm</type></os><features><acpi/></features>"
            "<devices><emulator>/usr/bin/qemu-system-x86_64</emulator>"
            f"<disk type='file' device='disk'><driver name='qemu' type='qcow2'{driver}/>"
            f"<source file='{image}'/><target dev='vda' bus='virtio'/></disk>"
            "<controller type='usb' model='none'/><memballoon model='none'/>"
            "</devices></domain>")


def device_fields(xml: str, target: str) -> dict[str, Any]:
    (device,) = [d for d in parse_disks(xml) if d.target == target]
    return {
        "bus": device.bus, "format": device.format, "queues": device.queues,
        "iothread": device.iothread, "mapping": device.queue_mapping,
        "filters": device.throttle_groups, "iotune": device.iotune,
        "cache": device.cache, "io": device.io, "discard": device.discard,
        "error_policy": device.error_policy, "source_kind": device.source_kind,
    }


def groups(xml: str) -> set[tuple[str, str]]:
    return {(g.name, json.dumps(g.limits.to_dict(nonzero_only=True), sort_keys=True))
            for g in parse_throttle_groups(xml)}


descriptors = st.fixed_dictionaries({
    "bus": st.sampled_from(["virtio", "scsi"]),
    "format": st.sampled_from(["qcow2", "raw"]),
    "queues": st.one_of(st.none(), st.integers(1, 4)),
    "io_threads": st.one_of(st.none(), st.integers(0, 3)),
    "limits": st.sampled_from([{}, {"total_iops_sec": 300}]),
    "with_group": st.booleans(),
})


# Each example defines, adopts, plans, attaches and releases a domain (about a second): no
# shrinking, which would replay hundreds of them; the failing example is printed as found.
@settings(max_examples=16, deadline=None, derandomize=True,
          phases=[Phase.explicit, Phase.generate],
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(
    descriptor=descriptors,
    vcpus=st.integers(1, 4),
    ids=st.lists(st.sampled_from([1, 101, 102]), unique=True, max_size=2),
    map_existing=st.booleans(),
)
def test_the_plan_is_what_attach_applies(
    planning_agent: SystemAgent, descriptor: dict[str, Any], vcpus: int, ids: list[int],
    map_existing: bool,
) -> None:
    agent = planning_agent
    pool = Path(agent.json("pool", "show", "pp")["path"])
    name = f"{PREFIX}{next(SERIAL)}"  # a new domain per example, replays and shrinks too
    image = pool.parent / f"{name}-root.qcow2"  # outside the pool: foreign to blockplane
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "64M"], check=True)
    ids = sorted(ids)
    group = descriptor["with_group"]
    xml = domain_xml(name, vcpus, ids, ids[0] if map_existing and ids else None, group, image)
    path = agent.home / f"{name}.xml"
    path.write_text(xml)
    virsh("define", str(path))
    body = {key: value for key, value in descriptor.items() if key != "with_group"}
    body |= {"pool": "pp", "size": "64M", "throttle_groups": ["gold"] if group else []}
    try:
        with agent.http() as client:
            assert client.post(f"/v1/vms/{name}/adopt", json={}).status_code == 201
            before = virsh("dumpxml", "--inactive", name)
            by_vm = client.post("/v1/plan/disk", json={**body, "vm": name})
            by_xml = client.post("/v1/plan/disk", json={**body, "vm": name,
                                                        "domain_xml": before})
            attached = client.post(f"/v1/vms/{name}/disks", json=body)
            refused = by_vm.status_code >= 400
            assert refused == (attached.status_code >= 400), (by_vm.text, attached.text)
            if refused:
                # Refused alike, for the same reason, with nothing changed.
                assert by_vm.json()["code"] == attached.json()["code"], attached.text
                assert virsh("dumpxml", "--inactive", name) == before
                return
            assert attached.status_code == 201, attached.text
            plan, xml_plan = by_vm.json(), by_xml.json()
            for key in ("target", "iothreads", "iothreads_to_add", "throttle_filters",
                        "throttle_groups_to_create", "xml", "notes", "fallbacks"):
                assert plan[key] == xml_plan[key], key
            after = virsh("dumpxml", "--inactive", name)
        target = plan["target"]
        assert attached.json()["target"] == target
        fragments = plan["xml"]
        planned_domain = ("<domain><devices>" + (fragments["controller"] or "")
                          + fragments["disk"] + "</devices></domain>")
        assert device_fields(after, target) == device_fields(planned_domain, target)
        added = sorted(set(parse_iothread_ids(after)) - set(parse_iothread_ids(before)))
        assert added == plan["iothreads_to_add"]
        assert groups(after) - groups(before) == {
            (g["name"], json.dumps(g["limits"], sort_keys=True))
            for g in plan["throttle_groups_to_create"]}
        problem = validate_domain_xml(after, name)
        assert problem is None, problem
    finally:
        with agent.http() as client:
            client.post(f"/v1/vms/{name}/release")
        virsh("undefine", name)
        image.unlink(missing_ok=True)
        for leftover in pool.glob(f"{name}-*"):  # the attached volume, released with the VM
            leftover.unlink()
