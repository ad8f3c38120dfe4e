"""IOThread virtqueue mapping on real QEMU 10 and libvirt 11.3: hotplug, QEMU's view, detach,
rollback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from blockplane.config import load_settings
from blockplane.errors import BlockplaneError
from blockplane.runtime.services import build_services
from blockplane.store.records import VolumeRecord
from blockplane.vms.disks import AttachRequest
from blockplane.xml.domain import parse_iothread_ids
from tests.harness import AgentUnderTest

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def mapped_vm(agent: AgentUnderTest) -> dict[str, Any]:
    agent.ok("pool", "create", "iot", "--type", "loop")
    agent.ok("vm", "create", "iov", "--vcpus", "4", "--memory", "256M", "--start")
    disks = {
        "four": agent.json(
            "disk",
            "attach",
            "iov",
            "--pool",
            "iot",
            "--size",
            "64M",
            "--queues",
            "4",
            "--io-threads",
            "2",
        ),
        "two": agent.json(
            "disk", "attach", "iov", "--pool", "iot", "--size", "64M", "--queues", "2"
        ),
        "scsi": agent.json(
            "disk",
            "attach",
            "iov",
            "--pool",
            "iot",
            "--size",
            "64M",
            "--bus",
            "scsi",
            "--queues",
            "4",
            "--io-threads",
            "2",
        ),
        "plain": agent.json(
            "disk", "attach", "iov", "--pool", "iot", "--size", "64M", "--io-threads", "0"
        ),
    }
    return disks


def test_every_queue_mapped_once_and_balanced(
    agent: AgentUnderTest, mapped_vm: dict[str, Any]
) -> None:
    report = agent.json("iothreads", "iov")
    assert [entry["id"] for entry in report["iothreads"]] == [101, 102]
    for disk in report["disks"]:
        served = sorted(q for _thread, queues in disk["mapping"] for q in queues)
        if disk["mode"] == "mapped":
            assert served == list(range(disk["queues"])), disk
        else:
            assert disk["mode"] == "none" and served == []
    loads = [sum(len(s["queues"]) for s in entry["serves"]) for entry in report["iothreads"]]
    assert max(loads) - min(loads) <= 1
    assert report["disagreements"] == []
    assert "io_threads=0: automatic mapping disabled" in mapped_vm["plain"]["notes"]


def test_live_xml_and_qemu_agree(agent: AgentUnderTest, mapped_vm: dict[str, Any]) -> None:
    report = agent.json("iothreads", "iov")
    expected = {
        disk["target"]: [{"iothread": f"iothread{t}", "vqs": q} for t, q in disk["mapping"]]
        for disk in report["disks"]
        if disk["mode"] == "mapped"
    }
    scsi_index = agent.json("disk", "list", "iov")
    scsi_target = mapped_vm["scsi"]["target"]
    assert any(d["target"] == scsi_target for d in scsi_index)
    devices = {
        target: "ua-bp-scsi0" if target == scsi_target else f"ua-bp-{target}" for target in expected
    }
    threads, *mappings = agent.qmp(
        "iov",
        {"execute": "query-iothreads"},
        *[
            {
                "execute": "qom-get",
                "arguments": {
                    "path": f"/machine/peripheral/{device}",
                    "property": "iothread-vq-mapping",
                },
            }
            for device in devices.values()
        ],
    )
    assert sorted(t["id"] for t in threads) == ["iothread101", "iothread102"]
    assert dict(zip(devices, mappings, strict=True)) == expected


def test_detach_frees_exactly_the_orphaned_iothreads(agent: AgentUnderTest) -> None:
    agent.ok("vm", "create", "iod", "--vcpus", "2", "--memory", "256M")
    first = agent.json(
        "disk",
        "attach",
        "iod",
        "--pool",
        "iot",
        "--size",
        "64M",
        "--queues",
        "4",
        "--io-threads",
        "2",
    )
    solo = agent.json("disk", "attach", "iod", "--pool", "iot", "--size", "64M", "--queues", "1")
    assert agent.json("iothreads", "iod")["iothreads"][0]["id"] == 101
    # The one-queue disk shares 101 with the first disk: nothing is orphaned by its detach.
    assert agent.json("disk", "detach", "iod", solo["target"])["iothreads_removed"] == []
    result = agent.json("disk", "detach", "iod", first["target"])
    assert result["iothreads_removed"] == [101, 102]
    assert parse_iothread_ids(agent.ok("vm", "show", "iod", "--xml")) == ()


def test_failed_hotplug_leaves_nothing_behind(tmp_path: Path) -> None:
    home = Path("/tmp") / f"bp-rb-{tmp_path.name[-12:]}"
    services = build_services(load_settings(home=home))
    try:
        services.pools.create("rb", "dir", None, None, None, None)
        services.vms.create("rbv", 2, 256 * 2**20, "none", start=True)
        real_create = services.volumes.create

        def broken_source(*args: Any) -> VolumeRecord:
            record = real_create(*args)
            return VolumeRecord(
                record.pool,
                record.name,
                "/nonexistent/disk.qcow2",
                record.format,
                record.virtual_bytes,
                record.physical_bytes,
                record.thin,
            )

        services.volumes.create = broken_source  # type: ignore[method-assign,assignment]
        before = services.vms.live_xml("rbv")
        with pytest.raises(BlockplaneError):
            services.disks.attach(
                AttachRequest(vm="rbv", pool="rb", size_bytes=2**26, queues=2, io_threads=2)
            )
        assert parse_iothread_ids(services.vms.live_xml("rbv")) == parse_iothread_ids(before) == ()
        assert parse_iothread_ids(services.vms.domain("rbv").xml(inactive=True)) == ()
        assert services.records.disks("rbv") == []
        assert services.records.volumes("rb") == []
    finally:
        for domain in services.hypervisor.domains():
            if domain.is_active():
                domain.destroy()
            domain.undefine()
        services.hypervisor.close()
        import shutil

        shutil.rmtree(home, ignore_errors=True)


def test_define_time_disks_start_with_their_mapping(
    agent: AgentUnderTest, mapped_vm: dict[str, Any]
) -> None:
    vm = agent.json(
        "vm",
        "create",
        "iodef",
        "--vcpus",
        "2",
        "--memory",
        "256M",
        "--start",
        "--disk",
        "pool=iot,size=64M,queues=2,io_threads=2",
        "--disk",
        "pool=iot,size=64M,queues=2,bus=scsi",
    )
    assert vm["state"] == "running" and [d["target"] for d in vm["disks"]] == ["vda", "sda"]
    inactive_ids = parse_iothread_ids(agent.ok("vm", "show", "iodef", "--xml"))
    assert inactive_ids == (101, 102)
    report = agent.json("iothreads", "iodef")
    assert {d["target"]: d["mode"] for d in report["disks"]} == {"vda": "mapped", "sda": "mapped"}
    (scsi_mapping,) = agent.qmp(
        "iodef",
        {
            "execute": "qom-get",
            "arguments": {
                "path": "/machine/peripheral/ua-bp-scsi0",
                "property": "iothread-vq-mapping",
            },
        },
    )
    assert sorted(q for entry in scsi_mapping for q in entry["vqs"]) == [0, 1]


def test_define_time_failure_leaves_nothing(
    agent: AgentUnderTest, mapped_vm: dict[str, Any]
) -> None:
    before = agent.json("pool", "show", "iot")["volumes"]
    result = agent.cli(
        "vm",
        "create",
        "iobad",
        "--disk",
        "pool=iot,size=64M",
        "--disk",
        "pool=no-such-pool,size=64M",
    )
    assert result.returncode == 2
    assert "iobad" not in [vm["name"] for vm in agent.json("vm", "list")]
    assert agent.json("pool", "show", "iot")["volumes"] == before
