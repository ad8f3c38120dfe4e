"""The agent SIGKILLed in the middle of ``vm adopt`` and of ``vm release``, then restarted.

Whatever step it died at, the VM keeps running and blockplane either manages it fully (its VM,
disk, volume, chain, adoption and thin-monitor rows all there, the thin volume armed again) or
not at all (no row of it anywhere, its files untouched): never half.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.adopt_support import PlatformHost, platform_disks, platform_domain_xml
from tests.faults.consistency import (
    api_get,
    restart_with_failpoints,
    run_until_killed,
    store_rows,
    wait_for,
)
from tests.harness import AgentUnderTest

pytestmark = pytest.mark.faults

VM = "plat"


@pytest.fixture(scope="module")
def platform_vm(agent: AgentUnderTest, tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[PlatformHost]:
    agent.ok("pool", "create", "pd", "--type", "dir")
    agent.ok("pool", "create", "pl", "--type", "loop", "--chunk", "64M")
    pools = {p["name"]: p["path"] for p in agent.json("pool", "list")}
    host = PlatformHost(agent, system=False)
    disks = platform_disks(agent, VM, Path(pools["pd"]), Path(pools["pl"]))
    host.define_and_start(platform_domain_xml(VM, disks), VM,
                          tmp_path_factory.mktemp("adopt-faults"))
    try:
        yield host
    finally:
        host.remove(VM)


TABLES = ("disks", "adopted_vms", "chain_volumes", "thin_monitor", "chain_jobs")


def rows_of(agent: AgentUnderTest) -> dict[str, int]:
    """How many rows of the VM each table holds (and how many volumes the pools hold)."""
    counts = {table: store_rows(agent, f"SELECT COUNT(*) FROM {table} WHERE vm = ?", VM)[0][0]
              for table in TABLES}
    counts["vms"] = store_rows(agent, "SELECT COUNT(*) FROM vms WHERE name = ?", VM)[0][0]
    counts["volumes"] = store_rows(agent, "SELECT COUNT(*) FROM volumes")[0][0]
    return counts


def assert_all_or_nothing(agent: AgentUnderTest) -> bool:
    """True if fully managed, False if not at all; fails on anything in between."""
    shown = api_get(agent, f"/vms/{VM}")
    assert shown["state"] == "running", shown
    counts = rows_of(agent)
    if counts["vms"] == 0:
        assert counts == dict.fromkeys(counts, 0), counts
        assert shown["managed"] is False
        assert agent.json("pool", "show", "pd")["volumes"] == 0
        return False
    assert shown["managed"] is True and shown["adopted"] is True
    assert counts["disks"] == 2 and counts["adopted_vms"] == 1, counts
    assert counts["chain_volumes"] == 3 and counts["volumes"] == 3, counts
    wait_for(lambda: any(row["state"] == "set" for row in api_get(agent, "/thin", vm=VM)),
             "the adopted thin volume to be armed", 30)
    assert rows_of(agent)["thin_monitor"] == 1
    return True


def killed_at(agent: AgentUnderTest, failpoint: str, *request: str) -> None:
    env = restart_with_failpoints(agent, failpoint)
    run_until_killed(agent, env, *request)
    subprocess.run([*agent.command, "agent", "start"], env=agent.env, check=True,
                   capture_output=True)


@pytest.mark.parametrize(("failpoint", "managed"), [
    ("adopt.before_records", False),
    ("adopt.in_records", False),  # inside the one transaction: rolled back by SQLite
    ("adopt.after_records", True),  # recorded, not yet armed: the restart arms it
])
def test_killed_during_adopt(
    agent: AgentUnderTest, platform_vm: PlatformHost, failpoint: str, managed: bool
) -> None:
    assert assert_all_or_nothing(agent) is False
    killed_at(agent, failpoint, "vm", "adopt", VM)
    assert assert_all_or_nothing(agent) is managed
    if managed:
        agent.ok("vm", "release", VM)
    assert agent.json("vm", "adopt", VM)["disks"]  # nothing left half-done in the way
    agent.ok("vm", "release", VM)


@pytest.mark.parametrize(("failpoint", "managed"), [
    ("release.after_disarm", True),  # monitor let go, rows kept: the restart re-arms
    ("release.in_records", True),  # inside the one transaction: rolled back by SQLite
    ("release.after_records", False),
])
def test_killed_during_release(
    agent: AgentUnderTest, platform_vm: PlatformHost, failpoint: str, managed: bool
) -> None:
    agent.ok("vm", "adopt", VM)
    assert assert_all_or_nothing(agent) is True
    killed_at(agent, failpoint, "vm", "release", VM)
    assert assert_all_or_nothing(agent) is managed
    if managed:
        agent.ok("vm", "release", VM)
    assert assert_all_or_nothing(agent) is False
