"""Throttle groups and filter chains on real embedded libvirt 11.3 and QEMU 10 (no-OS VMs).

What a user sees: the CLI's answers and exit codes, the live domain XML, QEMU's own block
graph and throttle group objects (read with the agent stopped, see ``tests.qemu_view``), and
the state store.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest
from lxml import etree

from tests.harness import AgentUnderTest
from tests.qemu_view import GRAPH_REQUESTS, limits_request, qemu_session, throttle_chain

pytestmark = pytest.mark.integration

GIB = 1024**3


@pytest.fixture(scope="module")
def vm(agent: AgentUnderTest) -> str:
    agent.ok("pool", "create", "files", "--type", "dir")
    assert agent.json("vm", "create", "tq", "--memory", "256M", "--start")["state"] == "running"
    return "tq"


def live_root(agent: AgentUnderTest, vm: str) -> etree._Element:
    return etree.fromstring(agent.ok("vm", "show", vm, "--xml").encode())


def xml_groups(root: etree._Element) -> dict[str, dict[str, int]]:
    groups = {}
    for node in root.findall("throttlegroups/throttlegroup"):
        groups[node.findtext("group_name", "")] = {
            child.tag: int(child.text or "0") for child in node if child.tag != "group_name"
        }
    return groups


def xml_chain(root: etree._Element, target: str) -> list[str]:
    disk = root.find(f"devices/disk/target[@dev='{target}']/..")
    assert disk is not None, target
    return [f.get("group", "") for f in disk.findall("throttlefilters/throttlefilter")]


def store_rows(agent: AgentUnderTest) -> dict[str, list[Any]]:
    """The rows a QoS change could touch; events of other features are left out."""
    uri = f"file:{agent.home / 'state.db'}?mode=ro"
    with sqlite3.connect(uri, uri=True) as connection:
        return {
            "disk_qos": connection.execute("SELECT * FROM disk_qos ORDER BY 1, 2").fetchall(),
            "disks": connection.execute("SELECT vm, target FROM disks ORDER BY 1, 2").fetchall(),
            "volumes": connection.execute("SELECT pool, name FROM volumes").fetchall(),
            "events": connection.execute(
                "SELECT id, type FROM events WHERE type LIKE 'throttle.%' OR type LIKE 'disk.%'"
            ).fetchall(),
        }


def test_group_is_created_updated_live_and_deleted(agent: AgentUnderTest, vm: str) -> None:
    created = agent.json("throttle", "set", vm, "gold", "--total-iops-sec", "500")
    assert created["created"] is True and created["changed"] == ["live", "config"]
    assert xml_groups(live_root(agent, vm))["gold"] == {"total_iops_sec": 500}

    updated = agent.json(
        "throttle", "set", vm, "gold", "--total-bytes-sec", "10485760", "--live"
    )
    assert updated["created"] is False and updated["changed"] == ["live"]
    # Fields left out are kept: the update added a bytes limit to the iops limit.
    assert xml_groups(live_root(agent, vm))["gold"] == {
        "total_bytes_sec": 10485760,
        "total_iops_sec": 500,
    }
    info = agent.json("throttle", "info", vm, "gold")
    assert info["differs"] == {"config": {"total_iops_sec": 500}}
    assert [g["group"] for g in agent.json("throttle", "list", vm)] == ["gold"]

    assert agent.json("throttle", "del", vm, "gold")["definitions"] == ["live", "config"]
    assert "gold" not in xml_groups(live_root(agent, vm))
    missing = agent.cli("throttle", "info", vm, "gold")
    assert missing.returncode == 2 and "no throttle group 'gold'" in missing.stderr


def test_two_deep_chain_in_the_xml_and_in_qemu(agent: AgentUnderTest, vm: str) -> None:
    agent.ok("throttle", "set", vm, "vm-agg", "--total-iops-sec", "400")
    disk = agent.json(
        "disk", "attach", vm, "--pool", "files", "--size", "64M",
        "--total-iops-sec", "300", "--throttle-groups", "vm-agg",
    )
    target = disk["target"]
    per_disk = f"blockplane-disk-{target}"
    assert disk["throttle"]["mode"] == "filters"
    assert [tier["group"] for tier in disk["throttle"]["chain"]] == [per_disk, "vm-agg"]
    assert disk["throttle"]["tightest"] == {"total_iops_sec": 300}
    assert any("throttle filter chain" in note for note in disk["notes"])
    root = live_root(agent, vm)
    assert xml_chain(root, target) == [per_disk, "vm-agg"]
    assert xml_groups(root)[per_disk] == {"total_iops_sec": 300}

    # A live update reaches QEMU without detaching: same disk, same node chain.
    agent.ok("throttle", "set", vm, "vm-agg", "--total-iops-sec", "350")
    info = agent.json("throttle", "info", vm, "vm-agg")
    assert info["disks"] == [{"target": target, "position": 1, "chain": [per_disk, "vm-agg"]}]
    blocks, nodes, agg_limits, disk_limits = qemu_session(
        agent, vm, [*GRAPH_REQUESTS, limits_request("vm-agg"), limits_request(per_disk)]
    )
    # QEMU stacks the XML's first filter nearest the image: requests meet vm-agg first.
    assert throttle_chain(blocks, nodes, target) == ["vm-agg", per_disk]
    assert agg_limits["iops-total"] == 350 and disk_limits["iops-total"] == 300
    assert xml_chain(live_root(agent, vm), target) == [per_disk, "vm-agg"]


def test_deleting_a_group_in_use_is_refused_and_nothing_changes(
    agent: AgentUnderTest, vm: str
) -> None:
    listed = agent.json("disk", "list", vm)
    disks = [d["target"] for d in listed if "vm-agg" in d["throttle_groups"]]
    assert disks, "needs the chain from the previous test"
    before = agent.ok("vm", "show", vm, "--xml")
    refused = agent.cli("throttle", "del", vm, "vm-agg", "--json")
    assert refused.returncode == 2
    assert "is used by disk(s)" in refused.stderr and disks[0] in refused.stderr
    assert agent.ok("vm", "show", vm, "--xml") == before
    info = agent.json("throttle", "info", vm, "vm-agg")
    assert info["live"] is True and info["config"] is True


@pytest.mark.parametrize(
    "args",
    [
        ("throttle", "set", "tq", "vm-agg", "--read-iops-sec", "5"),
        ("throttle", "set", "tq", "vm-agg", "--total-iops-sec-max", "10"),
        ("throttle", "set", "tq", "fresh", "--total-iops-sec", "-1"),
        ("throttle", "set", "tq", "bad name", "--total-iops-sec", "1"),
        ("throttle", "set", "tq", "vm-agg", "--total-iops-sec", "1000000000000001"),
        ("disk", "attach", "tq", "--pool", "files", "--size", "64M", "--throttle-groups", "nope"),
        (
            "disk", "attach", "tq", "--pool", "files", "--size", "64M",
            "--total-iops-sec", "5", "--read-iops-sec", "5",
        ),
    ],
)
def test_invalid_requests_leave_xml_and_store_untouched(
    agent: AgentUnderTest, vm: str, args: tuple[str, ...]
) -> None:
    xml_before = agent.ok("vm", "show", vm, "--xml")
    rows_before = store_rows(agent)
    files_before = sorted(p.name for p in (agent.home / "pools" / "files").iterdir())
    result = agent.cli(*args)
    assert result.returncode == 2, result.stderr
    assert agent.ok("vm", "show", vm, "--xml") == xml_before
    assert store_rows(agent) == rows_before
    assert sorted(p.name for p in (agent.home / "pools" / "files").iterdir()) == files_before


def test_config_on_a_stopped_vm_and_a_chain_at_define_time(agent: AgentUnderTest) -> None:
    agent.ok("vm", "create", "tstop", "--memory", "256M")
    set_ = agent.json("throttle", "set", "tstop", "agg", "--config", "--total-iops-sec", "100")
    assert set_["changed"] == ["config"] and set_["definition"] == "config"
    live = agent.cli("throttle", "set", "tstop", "agg", "--live", "--total-iops-sec", "1")
    assert live.returncode == 2 and "not running" in live.stderr
    disk = agent.json(
        "disk", "attach", "tstop", "--pool", "files", "--size", "64M",
        "--write-bytes-sec", "1048576", "--throttle-groups", "agg",
    )
    assert disk["live"] is False
    agent.ok("vm", "start", "tstop")
    root = live_root(agent, "tstop")
    target = disk["target"]
    assert xml_chain(root, target) == [f"blockplane-disk-{target}", "agg"]
    assert xml_groups(root)["agg"] == {"total_iops_sec": 100}
    assert xml_groups(root)[f"blockplane-disk-{target}"] == {"write_bytes_sec": 1048576}
    agent.ok("vm", "destroy", "tstop")
    agent.ok("disk", "detach", "tstop", target)
    assert [g["group"] for g in agent.json("throttle", "list", "tstop")] == ["agg"]


def test_capacity_scaled_limits_follow_a_resize(agent: AgentUnderTest, vm: str) -> None:
    body = {
        "pool": "files",
        "size": "2G",
        "total_iops_sec_per_gb": {"per_gb": 50, "floor": 150, "cap": 1000},
        "vm_group": {"name": "vm-agg"},
    }
    with agent.http() as client:
        response = client.post(f"/v1/vms/{vm}/disks", json=body)
    assert response.status_code == 201, response.text
    disk = response.json()
    target = disk["target"]
    per_disk = f"blockplane-disk-{target}"
    assert disk["throttle"]["per_disk_limits"] == {"total_iops_sec": 150}
    assert [tier["group"] for tier in disk["throttle"]["chain"]] == [per_disk, "vm-agg"]

    qemu_session(agent, vm, [{"resize": [target, 10 * GIB]}])
    # The agent's reconcile on start saw the new size and rescaled, in place.
    info = agent.json("throttle", "info", vm, per_disk)
    assert info["limits"] == {"total_iops_sec": 500}
    assert xml_chain(live_root(agent, vm), target) == [per_disk, "vm-agg"]
    events = agent.json("events", "--vm", vm, "--type", "throttle.rescaled")
    assert events[-1]["target"] == target and events[-1]["size_bytes"] == 10 * GIB
