"""Thin volumes on a real loop pool with real QEMU: thresholds, reconcile, refusals, commits.

A no-OS VM cannot write, so writes that must happen while the agent is away are issued
through QEMU's own ``qemu-io`` (HMP, from a probe process once the agent is stopped or killed).
Writes that must raise live events come from the Linux test guest (skipped without it).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from blockplane.config import DEFAULT_RECONCILE_INTERVAL_S
from blockplane.storage.images import measure_commit
from blockplane.thin.reconciler import SUSPECT_RECHECK_S
from tests.harness import AgentUnderTest, requires_guest

pytestmark = pytest.mark.integration

MIB = 1 << 20
CHUNK = 64 * MIB


def thin_row(agent: AgentUnderTest, vm: str, target: str) -> dict[str, Any]:
    rows: list[dict[str, Any]] = [row for row in agent.json("thin", "status", vm)
                                  if row["target"] == target]
    assert len(rows) == 1, rows
    return rows[0]


def thin_events(
    agent: AgentUnderTest, vm: str, kind: str, volume: str | None = None
) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = agent.json("events", "--vm", vm, "--type", kind)
    return [event for event in events if volume is None or event.get("volume") == volume]


def metric(agent: AgentUnderTest, name: str, **labels: str) -> float:
    with agent.http() as client:
        text = client.get("/v1/metrics").text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def wait_for(check: Callable[[], bool], what: str, timeout_s: float = 10.0) -> float:
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout_s, f"timed out waiting for {what}"
        time.sleep(0.1)
    return time.monotonic() - started


def probe(agent: AgentUnderTest, module: str, *args: str) -> str:
    """Run a probe on the embed root; the agent must not be running."""
    result = subprocess.run(
        [sys.executable, "-m", module, str(agent.home / "libvirt"), *args],
        capture_output=True, text=True, timeout=60, check=False, env=agent.env,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def qemu_io(agent: AgentUnderTest, vm: str, target: str, *commands: str) -> None:
    """QEMU writes into the disk itself (as a guest would), then flushes its qcow2 metadata."""
    device = f"/machine/peripheral/ua-bp-{target}/virtio-backend"
    requests = [{"execute": "human-monitor-command",
                 "arguments": {"command-line": f'qemu-io -d {device} "{command}"'}}
                for command in (*commands, "flush")]
    probe(agent, "tests.qmp_probe", vm, json.dumps(requests))


def host_reads_pattern(source: str, pattern: str, offset: int, length: int) -> bool:
    """Does the qcow2 on ``source`` hold ``pattern`` there, as read by the host?"""
    result = subprocess.run(
        ["qemu-io", "-U", "-r", "-f", "qcow2", "-c", f"read -P {pattern} {offset} {length}",
         source], capture_output=True, text=True, timeout=60, check=False,
    )
    return result.returncode == 0 and "Pattern verification failed" not in result.stdout


@pytest.fixture(scope="module")
def nos(agent: AgentUnderTest) -> str:
    agent.ok("pool", "create", "tp", "--type", "loop", "--chunk", "64M", "--utilization", "50")
    agent.ok("vm", "create", "nos", "--memory", "256M", "--start")
    return "nos"


@pytest.fixture(scope="module")
def armed_disk(agent: AgentUnderTest, nos: str) -> dict[str, Any]:
    disk: dict[str, Any] = agent.json("disk", "attach", nos, "--pool", "tp", "--size", "1G",
                                      "--thin")
    return disk


def test_a_thin_disk_is_armed_on_its_indexed_target(
    agent: AgentUnderTest, nos: str, armed_disk: dict[str, Any]
) -> None:
    # A status read while the VM's domain job is busy shows the recorded figures, which may not
    # carry the threshold yet (seen once in CI): read again until it does.
    wait_for(lambda: thin_row(agent, nos, armed_disk["target"])["threshold"] is not None,
             "the armed threshold in thin status", timeout_s=20)
    row = thin_row(agent, nos, armed_disk["target"])
    assert row["disk"] == f"{armed_disk['target']}[{row['index']}]"
    assert (row["state"], row["physical"], row["threshold"]) == ("set", CHUNK, CHUNK // 2)
    [armed] = thin_events(agent, nos, "thin.armed")
    assert armed["threshold"] == CHUNK // 2
    assert "thin volumes" in agent.ok("thin", "status")
    with agent.http() as client:
        assert client.get("/v1/thin", params={"vm": "nope"}).status_code == 404
        [row] = [r for r in client.get("/v1/thin").json() if r["target"] == row["target"]]
        assert row["state"] == "set"


def test_reconcile_after_sigkill_extends_what_fired_meanwhile(
    agent: AgentUnderTest, nos: str, armed_disk: dict[str, Any]
) -> None:
    target = armed_disk["target"]
    agent.kill_9()
    qemu_io(agent, nos, target, f"write -P 0xaa 0 {40 * MIB}")  # crosses 32 MiB unheard
    agent.ok("agent", "start")
    row = thin_row(agent, nos, target)  # start-up reconcile has run before the API answers
    assert (row["state"], row["extends"], row["physical"]) == ("set", 1, 2 * CHUNK)
    assert row["threshold"] == 2 * CHUNK - CHUNK // 2
    [extended] = thin_events(agent, nos, "thin.extended")
    assert (extended["cause"], extended["missed_event"]) == ("reconcile", True)
    assert metric(agent, "blockplane_thin_missed_events_total") == 1
    assert metric(agent, "blockplane_thin_physical_bytes", vm=nos, disk=target) == 2 * CHUNK
    assert host_reads_pattern(armed_disk["source"], "0xaa", 0, 40 * MIB)


def test_pool_overcommit_is_refused_and_retried_when_the_pool_grows(
    agent: AgentUnderTest, nos: str
) -> None:
    agent.ok("pool", "create", "small", "--type", "loop", "--chunk", "64M", "--utilization",
             "50", "--capacity", "96M")
    disk = agent.json("disk", "attach", nos, "--pool", "small", "--size", "1G", "--thin")
    agent.ok("agent", "stop")
    qemu_io(agent, nos, disk["target"], f"write -P 0xbb 0 {40 * MIB}")
    agent.ok("agent", "start")
    row = thin_row(agent, nos, disk["target"])
    assert (row["state"], row["refused"], row["refusals"], row["physical"]) == (
        "exceeded", True, 1, CHUNK)
    [refused] = thin_events(agent, nos, "thin.extend_refused")
    assert refused["code"] == "pool.full" and refused["pool"] == "small"
    assert "96 MiB" in refused["message"]
    assert metric(agent, "blockplane_thin_extend_refusals_total") == 1
    assert agent.json("pool", "show", "small")["used_bytes"] == CHUNK

    agent.ok("pool", "set", "small", "--capacity", "1G")
    waited = wait_for(lambda: thin_row(agent, nos, disk["target"])["state"] == "set",
                      "the refused extend to be retried", timeout_s=6)
    row = thin_row(agent, nos, disk["target"])
    assert (row["physical"], row["refused"], row["refusals"]) == (2 * CHUNK, False, 1)
    assert waited <= 4.0  # within about one reconcile period
    assert host_reads_pattern(disk["source"], "0xbb", 0, 40 * MIB)


def test_capacity_below_use_is_refused(agent: AgentUnderTest, nos: str) -> None:
    result = agent.cli("pool", "set", "small", "--capacity", "64M")
    assert result.returncode == 2 and "below" in result.stderr


def test_measure_commit_bounds_a_real_commit(tmp_path: Path) -> None:
    base, top = tmp_path / "base.qcow2", tmp_path / "top.qcow2"
    run = [("qemu-img", "create", "-q", "-f", "qcow2", str(base), "1G"),
           ("qemu-io", "-c", f"write -P 1 0 {100 * MIB}", str(base)),
           ("qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2",
            str(top)),
           ("qemu-io", "-c", f"write -P 2 {50 * MIB} {100 * MIB}",
            "-c", f"write -P 3 {500 * MIB} {10 * MIB}", str(top))]
    for command in run:
        subprocess.run(command, check=True, capture_output=True)
    needed = measure_commit(top, base)
    subprocess.run(["qemu-img", "commit", "-q", str(top)], check=True)
    check = json.loads(subprocess.run(["qemu-img", "check", "--output=json", str(base)],
                                      check=True, capture_output=True, text=True).stdout)
    assert check["image-end-offset"] <= needed < check["image-end-offset"] + 64 * MIB


# Live events need a guest that writes.

@pytest.fixture(scope="module")
def linux(agent: AgentUnderTest) -> Iterator[str]:
    agent.ok("vm", "create", "lin", "--vcpus", "2", "--memory", "512M", "--guest", "linux",
             "--start")
    yield "lin"


def guest_sh(agent: AgentUnderTest, vm: str, script: str, timeout: float = 120) -> str:
    return agent.ok("guest", "exec", vm, "--timeout", str(timeout), "--", "/bin/sh", "-c",
                    script, timeout=timeout + 30)


def guest_poll(agent: AgentUnderTest, vm: str, script: str) -> str:
    """A poll that may meet the VM paused (libvirt refuses the guest agent meanwhile)."""
    result = agent.cli("guest", "exec", vm, "--", "/bin/sh", "-c", script)
    return result.stdout.strip() if result.returncode == 0 else ""


def attach_visible(agent: AgentUnderTest, vm: str, *args: str) -> dict[str, Any]:
    disk: dict[str, Any] = agent.json("disk", "attach", vm, *args)
    device = f"/dev/{disk['target']}"
    wait_for(lambda: "yes" in guest_sh(agent, vm, f"test -b {device} && echo yes || true"),
             f"{device} in the guest", timeout_s=20)
    return disk


@requires_guest
def test_guest_writes_are_followed_by_event_driven_extends(
    agent: AgentUnderTest, linux: str
) -> None:
    disk = attach_visible(agent, linux, "--pool", "tp", "--size", "2G", "--thin")
    device = f"/dev/{disk['target']}"
    guest_sh(agent, linux, "rm -f /tmp/g.rc; "
             f"(dd if=/dev/zero of={device} bs=1M count=512 oflag=direct conv=fsync "
             ">/tmp/g.log 2>&1; echo $? >/tmp/g.rc) >/dev/null 2>&1 &")
    wait_for(lambda: guest_poll(agent, linux, "cat /tmp/g.rc 2>/dev/null") == "0",
             "the guest's dd to finish", timeout_s=60)
    assert "512+0 records out" in guest_sh(agent, linux, "cat /tmp/g.log")
    row = thin_row(agent, linux, disk["target"])
    assert row["physical"] >= 512 * MIB + CHUNK // 2
    # Each extend adds whole chunks, at least one (more for a fast writer: thin.adaptive), and
    # together they account for all the growth from the first chunk.
    extended = thin_events(agent, linux, "thin.extended", disk["volume"])
    assert row["extends"] == len(extended)
    assert all(e["step_bytes"] >= CHUNK and e["step_bytes"] % CHUNK == 0 for e in extended)
    assert sum(e["step_bytes"] for e in extended) == row["physical"] - CHUNK
    assert row["state"] == "set" and row["paused"] is False
    causes = {event["cause"] for event in extended}
    assert causes <= {"event", "enospc"}
    assert len(thin_events(agent, linux, "thin.resumed", disk["volume"])) == row["pauses"]
    assert row["last_extend_latency_s"] < 0.25


@requires_guest
def test_the_double_event_extends_only_once(agent: AgentUnderTest, linux: str) -> None:
    disk = attach_visible(agent, linux, "--pool", "tp", "--size", "2G", "--thin")
    target, device = disk["target"], f"/dev/{disk['target']}"
    armed = thin_row(agent, linux, target)["threshold"]
    agent.ok("agent", "stop")
    # Armed on the bare target (as an outside tool might), libvirt reports the crossing twice.
    probe(agent, "tests.thin_probe", linux, target, str(armed))
    agent.ok("agent", "start")
    events_before = metric(agent, "blockplane_hypervisor_events_total",
                           kind="BlockThresholdEvent")
    # Thresholds watch offsets in the qcow2 (clusters are allocated in write order), so pass
    # the mark by writing that much new data, staying below the end.
    guest_sh(agent, linux, f"dd if=/dev/zero of={device} bs=1M count={armed // MIB + 4} "
             "oflag=direct 2>/dev/null")
    wait_for(lambda: thin_row(agent, linux, target)["extends"] >= 1, "the extend")
    time.sleep(1.0)
    assert metric(agent, "blockplane_hypervisor_events_total",
                  kind="BlockThresholdEvent") - events_before == 2
    row = thin_row(agent, linux, target)
    assert (row["extends"], row["physical"], row["state"]) == (1, 2 * CHUNK, "set")
    extended = thin_events(agent, linux, "thin.extended", disk["volume"])
    assert len(extended) == 1 and extended[0]["cause"] == "event"


@requires_guest
def test_vm_paused_on_a_full_pool_resumes_when_the_pool_grows(
    agent: AgentUnderTest, linux: str
) -> None:
    agent.ok("pool", "create", "tight", "--type", "loop", "--chunk", "64M", "--utilization",
             "50", "--capacity", "128M")
    disk = attach_visible(agent, linux, "--pool", "tight", "--size", "1G", "--thin")
    device = f"/dev/{disk['target']}"
    guest_sh(agent, linux, "rm -f /tmp/tight.rc; "
             f"(dd if=/dev/zero of={device} bs=1M count=256 oflag=direct conv=fsync "
             ">/tmp/tight.log 2>&1; echo $? >/tmp/tight.rc) >/dev/null 2>&1 &")
    wait_for(lambda: agent.json("vm", "show", linux)["state"] == "paused",
             "the ENOSPC pause", timeout_s=20)
    time.sleep(2.5)  # a reconcile or two while still full: the VM must stay paused
    assert agent.json("vm", "show", linux)["state"] == "paused"
    row = thin_row(agent, linux, disk["target"])
    # Under load the guest can also outrun an extend before the pool is full: more pauses,
    # each of them counted and published once.
    assert (row["refused"], row["paused"], row["physical"]) == (True, True, 2 * CHUNK)
    assert row["pauses"] >= 1
    assert len(thin_events(agent, linux, "thin.paused", disk["volume"])) == row["pauses"]

    agent.ok("pool", "set", "tight", "--capacity", "1G")
    wait_for(lambda: agent.json("vm", "show", linux)["state"] == "running", "the resume",
             timeout_s=5)
    wait_for(lambda: guest_poll(agent, linux, "cat /tmp/tight.rc 2>/dev/null") == "0",
             "the guest's dd to finish", timeout_s=30)
    assert "256+0 records out" in guest_sh(agent, linux, "cat /tmp/tight.log")
    row = thin_row(agent, linux, disk["target"])
    assert (row["paused"], row["refused"]) == (False, False)
    assert len(thin_events(agent, linux, "thin.resumed", disk["volume"])) == row["pauses"]


#: The stated bound for a crossing whose event does not arrive (README "Missed events"): the
#: quick pass period, the moment given to an event on its way, and 1 s for the passes and the
#: extend themselves (a few VMs here).
MISSED_EVENT_BOUND_S = DEFAULT_RECONCILE_INTERVAL_S + SUSPECT_RECHECK_S + 1.0


@requires_guest
def test_a_crossing_while_event_delivery_is_held_is_extended_within_the_bound(
    agent: AgentUnderTest, linux: str
) -> None:
    agent.ok("pool", "create", "th", "--type", "loop", "--chunk", "64M", "--utilization", "50")
    disk = attach_visible(agent, linux, "--pool", "th", "--size", "2G", "--thin")
    target, device = disk["target"], f"/dev/{disk['target']}"
    armed = thin_row(agent, linux, target)["threshold"]
    agent.ok("agent", "stop")
    # The agent takes every event from the first threshold event on, and sits on them.
    held = {"BLOCKPLANE_FAILPOINTS": "events.dispatch.BlockThresholdEvent=sleep:600"}
    subprocess.run([*agent.command, "agent", "start"], env={**agent.env, **held}, check=True,
                   capture_output=True)
    try:
        guest_sh(agent, linux, f"dd if=/dev/zero of={device} bs=1M count={armed // MIB + 4} "
                 "oflag=direct 2>/dev/null")
        written = time.time()  # the crossing was a few MiB before the dd ended
        wait_for(lambda: thin_row(agent, linux, target)["extends"] >= 1, "the safety net",
                 timeout_s=MISSED_EVENT_BOUND_S + 10)
        [extended] = thin_events(agent, linux, "thin.extended", disk["volume"])
        assert (extended["cause"], extended["missed_event"]) == ("reconcile", True)
        assert extended["at"] - written <= MISSED_EVENT_BOUND_S
        row = thin_row(agent, linux, target)
        assert (row["state"], row["physical"]) == ("set", 2 * CHUNK)
        with agent.http() as client:
            last = client.get("/v1/reconcile").json()["last"]
        assert last["kind"] == "quick"  # not the start-up pass, nor a full one
    finally:
        agent.ok("agent", "stop")
        agent.ok("agent", "start")


@requires_guest
def test_the_adaptive_step_shows_in_thin_status(agent: AgentUnderTest, linux: str) -> None:
    agent.ok("pool", "create", "tq", "--type", "loop", "--chunk", "64M", "--utilization", "90")
    disk = attach_visible(agent, linux, "--pool", "tq", "--size", "2G", "--thin")
    target, device = disk["target"], f"/dev/{disk['target']}"
    # In the background and polled: a first crossing faster than VDSM's reserve may pause the
    # guest for an extend, and libvirt refuses the guest agent while it is paused.
    guest_sh(agent, linux, "rm -f /tmp/adaptive.rc; "
             f"(dd if=/dev/zero of={device} bs=1M count=768 oflag=direct 2>/dev/null; "
             "echo $? >/tmp/adaptive.rc) >/dev/null 2>&1 &")
    wait_for(lambda: guest_poll(agent, linux, "cat /tmp/adaptive.rc 2>/dev/null") == "0",
             "the guest's dd to finish", timeout_s=240)
    row = thin_row(agent, linux, target)
    assert row["paused"] is False
    assert len(thin_events(agent, linux, "thin.resumed", disk["volume"])) == row["pauses"]
    base_reserve = CHUNK // 10
    assert row["write_rate"] > 0 and row["step"] % CHUNK == 0 and row["step"] >= CHUNK
    # A writer this fast needs more room above the threshold than VDSM's 6.4 MiB.
    assert row["reserve"] > base_reserve
    assert row["physical"] - row["armed_threshold"] == row["reserve"]
    extended = thin_events(agent, linux, "thin.extended", disk["volume"])
    assert {e["reserve_bytes"] for e in extended} - {base_reserve}
    assert all(e["step_bytes"] % CHUNK == 0 for e in extended)
    wide = subprocess.run([*agent.command, "thin", "status", linux], capture_output=True,
                          text=True, check=True, env={**agent.env, "COLUMNS": "250"}).stdout
    assert all(column in wide for column in ("rate", "step", "reserve", "MiB/s"))
