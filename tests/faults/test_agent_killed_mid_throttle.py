"""The agent SIGKILLed between the live and the persistent change of a throttle group.

A group change on a running VM touches two definitions, live first. Killed in between, the
live definition has the change and the persistent one does not. The restarted agent finishes
the change from its intent before it serves: afterwards live and config agree (``throttle
info`` reports no ``differs``), QEMU runs the new limits, the event log says what was
recovered, and the store still agrees with the live XML.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.faults.consistency import (
    assert_consistent,
    restart_with_failpoints,
    run_until_killed,
)
from tests.harness import AgentUnderTest
from tests.qemu_view import limits_request, qemu_session

pytestmark = pytest.mark.faults

VM = "fault-qos"


@pytest.fixture(scope="module")
def qos_vm(agent: AgentUnderTest) -> str:
    agent.ok("pool", "create", "qp", "--type", "loop")
    agent.ok("vm", "create", VM, "--memory", "128M", "--start")
    agent.ok("throttle", "set", VM, "gold", "--total-iops-sec", "1000")
    agent.json("disk", "attach", VM, "--pool", "qp", "--size", "64M", "--throttle-groups", "gold")
    return VM


def recovered(agent: AgentUnderTest) -> dict[str, Any]:
    events: list[dict[str, Any]] = agent.json("events", "--type", "throttle.recovered", "--vm", VM)
    return events[-1]


@pytest.mark.parametrize(
    ("group", "limits", "expected"),
    [
        ("gold", ("--total-iops-sec", "2000"), {"total_iops_sec": 2000}),
        ("silver", ("--total-bytes-sec", "8388608"), {"total_bytes_sec": 8388608}),
    ],
    ids=["update-in-use", "create"],
)
def test_killed_between_live_and_config(
    agent: AgentUnderTest,
    qos_vm: str,
    group: str,
    limits: tuple[str, str],
    expected: dict[str, int],
) -> None:
    env = restart_with_failpoints(agent, "throttle.set.after_live")
    run_until_killed(agent, env, "throttle", "set", VM, group, *limits)
    agent.ok("agent", "start")  # recovery runs before the API answers

    info = agent.json("throttle", "info", VM, group)
    assert info["limits"] == expected
    assert (info["live"], info["config"]) == (True, True)
    assert "differs" not in info, info["differs"]
    event = recovered(agent)
    assert (event["group"], event["outcome"]) == (group, "completed")
    assert event["definitions"] == ["live", "config"]
    assert_consistent(agent, VM)


def test_killed_between_live_and_config_delete(agent: AgentUnderTest, qos_vm: str) -> None:
    env = restart_with_failpoints(agent, "throttle.delete.after_live")
    run_until_killed(agent, env, "throttle", "del", VM, "silver")
    agent.ok("agent", "start")

    assert agent.cli("throttle", "info", VM, "silver").returncode == 2  # gone from both
    assert [g["group"] for g in agent.json("throttle", "list", VM)] == ["gold"]
    event = recovered(agent)
    assert (event["operation"], event["outcome"]) == ("throttle.delete", "completed")
    assert_consistent(agent, VM)


def test_qemu_runs_what_the_definitions_say(agent: AgentUnderTest, qos_vm: str) -> None:
    [gold] = qemu_session(agent, VM, [limits_request("gold")])
    assert gold["iops-total"] == 2000
