"""``blockplane demo``, run as a newcomer runs it: the whole tour and its JSON summary, one step
alone, and Ctrl-C in the middle of the tour, after which nothing the tour made may be left.

The summary is checked for what it promises: every step ok, every figure within the bounds it
states, and those bounds being the ones the tour claims (a rate within 10% of the limit read
back, no pauses, checksums equal to the data written, a restore identical to the disk, a
pull export that reads the same, and a Linux guest that kept writing while it migrated there and
back, with its mapping, groups and thin monitoring, no I/O error, and every chunk it wrote read
back the same by the guest and from the destination's volume).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from blockplane.cli.demo import STEP_NAMES
from tests.harness import AgentUnderTest, requires_guest

pytestmark = [pytest.mark.e2e, requires_guest]


def summary_of(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    try:
        summary: dict[str, Any] = json.loads(result.stdout)
    except ValueError:
        pytest.fail(f"no JSON summary (exit {result.returncode}):\n{result.stderr[-4000:]}")
    return summary


def figures(summary: dict[str, Any], step: str) -> dict[str, dict[str, Any]]:
    [found] = [entry for entry in summary["steps"] if entry["name"] == step]
    return {figure["name"]: figure for figure in found["figures"]}


def loop_devices_under(home: Path) -> list[str]:
    listing = subprocess.run(["losetup", "-a", "-O", "NAME,BACK-FILE", "-n"],
                             capture_output=True, text=True, check=True).stdout
    return [line for line in listing.splitlines()
            if len(line.split(None, 1)) == 2 and line.split(None, 1)[1].startswith(str(home))]


def assert_nothing_left(agent: AgentUnderTest, summary: dict[str, Any]) -> None:
    run = summary["run"]
    assert summary["cleanup"]["left"] == []
    assert [vm["name"] for vm in agent.json("vm", "list")] == []
    assert [pool["name"] for pool in agent.json("pool", "list")] == []
    assert loop_devices_under(agent.home) == []
    assert not Path(f"/tmp/bp-demo-lab-{run}").exists()
    assert list((agent.home / "demo").glob("*.json")) == []


@pytest.mark.timeout(900)
def test_the_whole_tour_shows_every_feature_within_its_bounds(agent: AgentUnderTest) -> None:
    result = agent.cli("demo", "--json", timeout=840)
    summary = summary_of(result)
    print(json.dumps({step["name"]: [step["status"], step["seconds"], step["title"]]
                      for step in summary["steps"]}, indent=1))
    print(f"tour: {summary['seconds']:.1f} s, set-up {summary['setup']['seconds']:.1f} s")
    assert [step["name"] for step in summary["steps"]] == list(STEP_NAMES)
    for step in summary["steps"]:
        assert step["status"] == "ok", (f"{step['name']}: {step['error']}\n"
                                        + result.stderr[-4000:])
        assert step["title"] and step["key_figure"], step
        for figure in step["figures"]:
            assert figure["within"] is not False, (step["name"], figure)
    assert summary["ok"] is True and result.returncode == 0, result.stderr[-3000:]

    for name, figure in figures(summary, "limits").items():
        assert figure["unit"] == "IOPS", name
        limit = figure["low"] / 0.9
        assert figure["high"] == pytest.approx(limit * 1.1), figure
        assert abs(figure["value"] - limit) <= 0.1 * limit, figure
    thin = figures(summary, "thin")
    assert thin["guest pauses"]["value"] == 0
    assert thin["written by the guest"]["value"] == 1024
    assert thin["chunks added"]["value"] >= thin["chunks added"]["low"] >= 1
    checksums = [f for name, f in figures(summary, "chains").items()
                 if name.startswith("checksum after")]
    assert len(checksums) == 4 and all(f["value"] == f["expected"] for f in checksums)
    backup = figures(summary, "backup")
    assert backup["restore vs the disk (qemu-img compare)"]["value"] == "identical"
    assert backup["checksum of the restore"]["value"] == backup["checksum of the restore"][
        "expected"]
    assert backup["restore chain"]["value"] == "full + incremental + incremental"
    assert backup["pull export mode"]["value"] == "incremental"
    nbd = backup["checksum of the NBD export (nbdcopy)"]
    assert nbd["value"] == nbd["expected"] == backup["checksum of the restore"]["expected"]
    hosts = figures(summary, "hosts")
    for hop in ("host1 -> host2", "host2 -> host1"):
        assert hosts[f"{hop} outcome"]["value"] == "succeeded"
        assert 0 <= hosts[f"{hop} downtime"]["value"] <= hosts[f"{hop} downtime"]["high"]
        assert hosts[f"MiB the guest wrote during {hop}"]["value"] >= 1
        assert hosts[f"guest I/O errors after {hop}"]["value"] == 0
    for host in ("host2", "host1"):
        checksum = hosts[f"checksum of vda on {host}"]
        in_guest = hosts[f"guest checksum of vda on {host}"]
        assert checksum["value"] == checksum["expected"] == in_guest["value"]
        assert hosts[f"thin pauses on {host}"]["value"] == 0
        assert hosts[f"thin monitoring on {host}"]["value"] == '{"vda": "set"}'
        mappings = hosts[f"IOThread mappings on {host}"]
        assert mappings["value"] == mappings["expected"] and '"vdb"' in mappings["value"]
    assert figures(summary, "iothreads")["queues the guest sees"]["value"] == 4
    assert_nothing_left(agent, summary)


def test_one_step_runs_alone(agent: AgentUnderTest) -> None:
    summary = summary_of(agent.cli("demo", "--step", "facts", "--json"))
    assert [step["name"] for step in summary["steps"]] == ["facts"]
    assert summary["steps"][0]["status"] == "ok"
    assert summary["setup"]["did"] == []  # no pool, no guest: the facts need neither
    assert summary["ok"] is True
    assert_nothing_left(agent, summary)


@pytest.mark.timeout(600)
def test_ctrl_c_mid_tour_leaves_no_vm_pool_loop_device_or_lab(agent: AgentUnderTest) -> None:
    """Interrupted once the guest, its mapped disk's loop device and a lab of two hosts all
    exist (the lab's peers answered)."""
    tour = subprocess.Popen([*agent.command, "demo", "--step", "iothreads", "--step", "hosts",
                             "--json"], env=agent.env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert tour.stderr is not None
    seen = []
    for line in tour.stderr:
        seen.append(line)
        if "-> peer host2" in line:
            break
    else:
        pytest.fail("the tour ended before its lab was up:\n" + "".join(seen[-40:]))
    [run] = {match.group(1) for line in seen
             if (match := re.search(r"/tmp/bp-demo-lab-([0-9a-f]+)", line))}
    narration = "".join(seen)
    assert "    ok vda" in narration, f"the first step did not succeed:\n{narration[-3000:]}"
    assert [vm["name"] for vm in agent.json("vm", "list")] == [f"demo-{run}"]
    assert loop_devices_under(agent.home) != []
    assert Path(f"/tmp/bp-demo-lab-{run}").is_dir()
    tour.send_signal(signal.SIGINT)
    stdout, stderr = tour.communicate(timeout=300)
    assert tour.returncode == 130, stderr[-3000:]
    summary = json.loads(stdout)
    assert summary["interrupted"] is True and summary["run"] == run
    assert [step["status"] for step in summary["steps"]] == ["ok", "interrupted"]
    removed = " ".join(summary["cleanup"]["did"])
    assert f"VM demo-{run}" in removed and f"lab /tmp/bp-demo-lab-{run}" in removed
    assert_nothing_left(agent, summary)
