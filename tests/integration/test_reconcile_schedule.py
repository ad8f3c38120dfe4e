"""Reconcile passes on a real agent: quick ones that ask QEMU nothing when nothing changed, and
full ones only every full period (``runtime.reconcile_schedule``)."""

from __future__ import annotations

import subprocess
import time
from typing import Any

import pytest

from tests.harness import AgentUnderTest

pytestmark = pytest.mark.integration

FULL_PERIOD_S = 10.0


def report(agent: AgentUnderTest) -> dict[str, Any]:
    with agent.http() as client:
        answer: dict[str, Any] = client.get("/v1/reconcile").json()
    return answer


def restart_with(agent: AgentUnderTest, **env: str) -> float:
    """Restart the agent with ``env`` added; when its API answered (after its first pass)."""
    agent.ok("agent", "stop")
    subprocess.run([*agent.command, "agent", "start"], env={**agent.env, **env}, check=True,
                   capture_output=True)
    return time.monotonic()


@pytest.fixture(scope="module")
def idle_host(agent: AgentUnderTest) -> str:
    agent.ok("pool", "create", "rp", "--type", "loop", "--chunk", "16M", "--utilization", "50")
    agent.ok("vm", "create", "idle", "--memory", "128M", "--start")
    for _ in range(2):
        agent.json("disk", "attach", "idle", "--pool", "rp", "--size", "256M", "--thin")
    return "idle"


def test_an_idle_host_runs_no_full_pass_within_one_period(
    agent: AgentUnderTest, idle_host: str
) -> None:
    up = restart_with(agent, BLOCKPLANE_FULL_RECONCILE_S=str(FULL_PERIOD_S))
    first = report(agent)
    assert first["full_passes"] == 1 and first["first"]["kind"] == "full"
    assert first["confirmed"] is True
    time.sleep(max(FULL_PERIOD_S - 2.0 - (time.monotonic() - up), 0))
    quiet = report(agent)
    # Quick passes every 2 s, none of which asked QEMU about any VM; no second full pass.
    assert quiet["full_passes"] == 1 and quiet["passes"] >= 3
    last = quiet["last"]
    assert last["kind"] == "quick" and last["counts"]["thin_vms_looked_at"] == 0
    assert last["steps"][0]["name"] == "ThinMonitor.quick_reconcile"
    assert quiet["confirmed"] is True
    # The full period passes: one full pass, which looks at every VM.
    deadline = time.monotonic() + FULL_PERIOD_S
    while (later := report(agent))["full_passes"] < 2:
        assert time.monotonic() < deadline, "no full pass after the full period"
        time.sleep(0.5)
    assert later["last_full"]["counts"]["thin_vms_looked_at"] == 1
    assert later["last_full"]["started_at"] - later["first"]["started_at"] >= FULL_PERIOD_S


def test_a_full_period_within_the_quick_one_makes_every_pass_full(
    agent: AgentUnderTest, idle_host: str
) -> None:
    restart_with(agent, BLOCKPLANE_FULL_RECONCILE_S="0")
    time.sleep(4.5)
    answer = report(agent)
    assert answer["passes"] >= 2 and answer["full_passes"] == answer["passes"]
    assert answer["last"]["counts"]["thin_vms_looked_at"] == 1
    agent.ok("agent", "stop")
    agent.ok("agent", "start")
