"""The foundation on real embedded libvirt and QEMU: agent, VMs, pools, disks, bad input."""

from __future__ import annotations

import stat
import time
from typing import Any

import pytest
from lxml import etree

from tests.harness import AgentUnderTest

pytestmark = pytest.mark.integration


def live_disks(agent: AgentUnderTest, vm: str) -> dict[str, etree._Element]:
    root = etree.fromstring(agent.ok("vm", "show", vm, "--xml").encode())
    disks = {}
    for node in root.findall("devices/disk"):
        target = node.find("target")
        assert target is not None
        disks[target.get("dev", "")] = node
    return disks


def state_snapshot(agent: AgentUnderTest, vm: str) -> dict[str, Any]:
    return {
        "vms": agent.json("vm", "list"),
        "pools": agent.json("pool", "list"),
        "disks": agent.json("disk", "list", vm),
        "xml": agent.ok("vm", "show", vm, "--xml"),
    }


@pytest.fixture(scope="module")
def running_vm(agent: AgentUnderTest) -> str:
    agent.ok("pool", "create", "loops", "--type", "loop")
    agent.ok("pool", "create", "files", "--type", "dir")
    started = time.monotonic()
    vm = agent.json("vm", "create", "nos", "--vcpus", "2", "--memory", "256M", "--start")
    print(f"no-OS VM create-to-running: {time.monotonic() - started:.2f} s")
    assert vm["state"] == "running"
    return "nos"


def test_home_is_private(agent: AgentUnderTest) -> None:
    for name in ("agent.sock", "token", "state.db"):
        mode = stat.S_IMODE((agent.home / name).stat().st_mode)
        assert mode == 0o600, f"{name} has mode {oct(mode)}"
    assert not stat.S_IMODE(agent.home.stat().st_mode) & stat.S_IWOTH


def test_facts_report_versions_and_kvm(agent: AgentUnderTest) -> None:
    facts = agent.json("facts")
    assert facts["qemu"]["version"].startswith("10.")
    assert facts["libvirt"]["version"].startswith("11.")
    assert isinstance(facts["kvm"]["usable"], bool) and facts["kvm"]["reason"]
    assert facts["capabilities"]["iothread_vq_mapping"]["supported"] is True
    assert facts["cpus"] >= 1 and facts["memory_bytes"] > 0


def test_hotplug_then_detach_on_stopped_vm(agent: AgentUnderTest, running_vm: str) -> None:
    qcow = agent.json("disk", "attach", running_vm, "--pool", "loops", "--size", "256M")
    raw = agent.json(
        "disk",
        "attach",
        running_vm,
        "--pool",
        "files",
        "--size",
        "64M",
        "--format",
        "raw",
        "--name",
        "scratch",
    )
    assert qcow["live"] is True and raw["live"] is True
    disks = live_disks(agent, running_vm)
    assert disks[qcow["target"]].get("type") == "block"
    assert disks[qcow["target"]].find("driver").get("type") == "qcow2"  # type: ignore[union-attr]
    assert disks[raw["target"]].find("source").get("file").endswith("/scratch")  # type: ignore[union-attr]

    # A no-OS guest cannot answer an unplug request, so detach from the stopped VM.
    agent.ok("vm", "destroy", running_vm)
    agent.ok("disk", "detach", running_vm, raw["target"])
    agent.ok("vm", "start", running_vm)
    disks = live_disks(agent, running_vm)
    assert raw["target"] not in disks and qcow["target"] in disks
    assert not (agent.home / "pools" / "files" / "scratch").exists()


@pytest.mark.parametrize(
    ("args", "expected_code"),
    [
        (("disk", "attach", "no-such-vm", "--pool", "loops", "--size", "1G"), "vm.not_found"),
        (("disk", "attach", "nos", "--pool", "loops", "--size", "-1G"), "size"),
        (
            (
                "disk",
                "attach",
                "nos",
                "--pool",
                "loops",
                "--size",
                "1G",
                "--name",
                "../../etc/passwd",
            ),
            "volume name",
        ),
        (
            ("disk", "attach", "nos", "--pool", "files", "--size", "1G", "--name", "/etc/passwd"),
            "volume name",
        ),
        (("disk", "attach", "nos", "--pool", "nope", "--size", "1G"), "pool"),
        (("vm", "create", "nos"), "already exists"),
        (("pool", "create", "loops", "--type", "loop"), "already exists"),
    ],
)
def test_bad_input_exits_2_and_changes_nothing(
    agent: AgentUnderTest, running_vm: str, args: tuple[str, ...], expected_code: str
) -> None:
    before = state_snapshot(agent, running_vm)
    result = agent.cli(*args)
    assert result.returncode == 2, result.stderr
    assert expected_code.split(".")[0] in result.stderr
    assert state_snapshot(agent, running_vm) == before
    assert not (agent.home.parent / "etc" / "passwd").exists()


def test_duplicate_volume_name_refused(agent: AgentUnderTest, running_vm: str) -> None:
    agent.ok("disk", "attach", running_vm, "--pool", "loops", "--size", "64M", "--name", "dup")
    before = state_snapshot(agent, running_vm)
    result = agent.cli(
        "disk", "attach", running_vm, "--pool", "loops", "--size", "64M", "--name", "dup"
    )
    assert result.returncode == 2
    assert "already exists" in result.stderr
    assert state_snapshot(agent, running_vm) == before


def test_api_requires_token(agent: AgentUnderTest) -> None:
    with agent.http(token=None) as client:
        assert client.get("/v1/health").status_code == 200
        refused = client.get("/v1/vms")
        assert refused.status_code == 401
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert refused.json()["code"] == "auth.required"
    with agent.http(token="wrong") as client:
        assert client.get("/v1/facts").status_code == 401
    with agent.http() as client:
        assert client.get("/v1/vms").status_code == 200
        assert client.get("/v1/openapi.json").json()["info"]["title"] == "blockplane"
    log = (agent.home / "agent.log").read_text()
    assert agent.token not in log and "wrong" not in log.replace("wrong token", "")


def test_problem_json_for_unknown_vm(agent: AgentUnderTest) -> None:
    with agent.http() as client:
        response = client.get("/v1/vms/ghost")
    assert response.status_code == 404
    body = response.json()
    assert set(body) >= {"type", "title", "status", "detail", "code"}
    assert body["code"] == "vm.not_found"


def test_events_are_logged(agent: AgentUnderTest, running_vm: str) -> None:
    events = agent.json("events", "--vm", running_vm)
    types = [event["type"] for event in events]
    assert "vm.created" in types and "disk.attached" in types


def test_agent_survives_kill_9(agent: AgentUnderTest, running_vm: str) -> None:
    agent.kill_9()
    assert agent.cli("--no-autostart", "vm", "list").returncode == 3
    vms = {vm["name"]: vm for vm in agent.json("vm", "list")}  # autostarts the agent
    assert vms[running_vm]["state"] == "running"
    assert len(agent.json("disk", "list", running_vm)) >= 1
