"""One VM hangs, and only its own requests pay: a frozen guest agent and a stopped QEMU.

Two Linux guests on one agent. ``hung`` gets the faults: its qemu-guest-agent frozen with
SIGSTOP (from inside the guest, thawed by the same background job after a while), or its whole
QEMU process stopped with SIGSTOP from the host and continued later. ``busy`` writes to a thin
disk meanwhile. For every fault:
- the request to ``hung`` ends by its deadline, exit 1, with the code that names what it waited
  for (``timeout.guest_agent``, ``timeout.hypervisor``);
- requests for ``busy`` keep answering (well inside a deadline; they never wait for ``hung``);
- ``busy``'s thin disk is still extended on its threshold events, with no pause;
- afterwards ``hung`` works again, and the consistency check of ``tests/faults`` holds.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tests.faults.consistency import api_get, assert_consistent, store_rows, wait_for
from tests.harness import AgentUnderTest, requires_guest

pytestmark = [pytest.mark.faults, requires_guest]

HUNG, BUSY = "hung", "busy"
MIB = 1 << 20
#: The deadline the tests ask of each request to the hung VM (Request-Timeout).
DEADLINE_S = 20.0
#: The agent answers by the deadline plus its grace (api/request_deadlines.py: 5 s), and the
#: CLI's own start-up under TCG load adds a little.
ANSWER_BY_S = DEADLINE_S + 8.0
#: A request that does not wait on the hung VM answers well inside this, even on a loaded host.
OTHER_VM_BOUND_S = 8.0


@pytest.fixture(scope="module")
def vms(agent: AgentUnderTest) -> dict[str, str]:
    agent.ok("pool", "create", "hp", "--type", "loop", "--chunk", "16M", "--utilization", "50")
    disks = {}
    for vm, vcpus, memory in ((HUNG, "2", "512M"), (BUSY, "1", "384M")):
        agent.ok("vm", "create", vm, "--vcpus", vcpus, "--memory", memory, "--guest", "linux",
                 "--start")
        disk = agent.json("disk", "attach", vm, "--pool", "hp", "--size", "1G", "--thin")
        disks[vm] = disk["target"]
    for vm, target in disks.items():
        check = f"test -b /dev/{target} && echo yes || true"
        wait_for(lambda vm=vm, check=check: "yes" in sh(agent, vm, check),  # type: ignore[misc]
                 f"{vm}'s disk", 60)
    return disks


def sh(agent: AgentUnderTest, vm: str, script: str) -> str:
    return agent.ok("guest", "exec", vm, "--", "/bin/sh", "-c", script)


def timed(agent: AgentUnderTest, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    result = agent.cli(*args, timeout=120)
    return result, time.monotonic() - started


def cli_start_up_s(agent: AgentUnderTest, at_once: int) -> float:
    """The longest of ``at_once`` CLI runs started together that ask the agent nothing: what a
    loaded host adds to every timed answer below before a request even leaves."""
    with concurrent.futures.ThreadPoolExecutor(at_once) as pool:
        runs = list(pool.map(lambda _: timed(agent, "--help"), range(at_once)))
    assert all(result.returncode == 0 for result, _ in runs)
    return max(seconds for _, seconds in runs)


def freeze_guest_agent(agent: AgentUnderTest, seconds: int) -> None:
    """SIGSTOP ``hung``'s qemu-guest-agent from inside the guest; a background job of the
    guest (its own session, so it outlives the exec) sends SIGCONT after ``seconds``. Returns
    once the agent is frozen."""
    job = (f"sleep 1; kill -STOP $(pidof qemu-ga); sleep {seconds}; "
           "kill -CONT $(pidof qemu-ga)")
    sh(agent, HUNG, f"setsid /bin/sh -c '{job}' </dev/null >/dev/null 2>&1 &")
    time.sleep(2.5)


def qemu_pid(agent: AgentUnderTest, vm: str) -> int:
    return int((agent.home / "libvirt" / "run" / "qemu" / f"{vm}.pid").read_text())


@contextmanager
def qemu_stopped(agent: AgentUnderTest, vm: str) -> Iterator[None]:
    pid = qemu_pid(agent, vm)
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def thin_extends(agent: AgentUnderTest, vm: str) -> int:
    return sum(int(row["extends"]) for row in api_get(agent, "/thin", vm=vm))


def start_busy_writes(agent: AgentUnderTest, target: str, offset_mib: int) -> None:
    """``busy`` writes 48 MiB (three 16 MiB chunks) in the background, 1 MiB every 0.3 s, so
    that the writes (and the extends they cause) span the fault."""
    write = (f"dd if=/dev/urandom of=/dev/{target} bs=1M seek=$(({offset_mib}+i)) count=1 "
             "oflag=direct conv=notrunc 2>/dev/null || exit 1")
    script = (f"i=0; while [ $i -lt 48 ]; do {write}; i=$((i+1)); sleep 0.3; done; "
              "echo 0 >/tmp/busy.rc")
    sh(agent, BUSY, f"rm -f /tmp/busy.rc; setsid /bin/sh -c '{script}' </dev/null "
       ">/dev/null 2>&1 &")


def busy_writes_done(agent: AgentUnderTest) -> bool:
    return sh(agent, BUSY, "cat /tmp/busy.rc 2>/dev/null || true").strip() == "0"


def assert_other_vm_answers(agent: AgentUnderTest) -> None:
    for args in (("vm", "show", BUSY, "--json"), ("disk", "list", BUSY, "--json"),
                 ("thin", "status", BUSY, "--json")):
        result, seconds = timed(agent, *args)
        assert result.returncode == 0, result.stderr
        assert seconds < OTHER_VM_BOUND_S, (args, seconds)


@contextmanager
def busy_keeps_going(agent: AgentUnderTest, vms: dict[str, str], offset_mib: int) -> Iterator[None]:
    """Around a fault of ``hung``: ``busy`` writes three chunks meanwhile; afterwards its reads
    answered quickly, its thin disk was extended on the way, and it never paused."""
    extends_before = thin_extends(agent, BUSY)
    start_busy_writes(agent, vms[BUSY], offset_mib)
    yield
    assert_other_vm_answers(agent)
    wait_for(lambda: busy_writes_done(agent), "busy's writes", 60)
    assert thin_extends(agent, BUSY) >= extends_before + 2
    assert not any(row["paused"] for row in api_get(agent, "/thin", vm=BUSY))


def assert_hung_vm_recovered(agent: AgentUnderTest, vms: dict[str, str]) -> None:
    wait_for(lambda: agent.cli("guest", "exec", HUNG, "--", "true").returncode == 0,
             "the guest agent of hung to answer again", 90)
    assert api_get(agent, "/agent")["abandoned_calls"] == []
    for vm in (HUNG, BUSY):
        assert_consistent(agent, vm)


def test_guest_exec_while_the_guest_agent_is_frozen(
    agent: AgentUnderTest, vms: dict[str, str]
) -> None:
    with busy_keeps_going(agent, vms, 0):
        freeze_guest_agent(agent, 45)
        result, seconds = timed(agent, "--timeout", str(DEADLINE_S), "guest", "exec", HUNG,
                                "--timeout", str(DEADLINE_S), "--", "true")
        assert result.returncode == 1, result.stderr
        assert "timeout.guest_agent" in result.stderr, result.stderr
        assert seconds < ANSWER_BY_S, seconds
    assert_hung_vm_recovered(agent, vms)


def test_quiesced_snapshot_while_the_guest_agent_is_frozen(
    agent: AgentUnderTest, vms: dict[str, str]
) -> None:
    chain_before = agent.json("chain", HUNG, vms[HUNG])
    with busy_keeps_going(agent, vms, 48):
        freeze_guest_agent(agent, 40)
        result, seconds = timed(agent, "--timeout", str(DEADLINE_S), "snapshot", "create",
                                HUNG, "--quiesce")
        assert result.returncode == 1, result.stderr
        assert "timeout.guest_agent" in result.stderr, result.stderr
        assert seconds < ANSWER_BY_S, seconds
    assert_hung_vm_recovered(agent, vms)
    # Refused before anything was made: the chain is as it was, no snapshot recorded.
    assert agent.json("chain", HUNG, vms[HUNG]) == chain_before
    assert agent.json("snapshot", "list", HUNG) == []


def test_vm_stop_while_the_guest_agent_is_frozen(
    agent: AgentUnderTest, vms: dict[str, str]
) -> None:
    with busy_keeps_going(agent, vms, 96):
        freeze_guest_agent(agent, 40)
        result, seconds = timed(agent, "--timeout", str(DEADLINE_S), "vm", "stop", HUNG)
        assert result.returncode == 1, result.stderr
        assert "timeout.guest_agent" in result.stderr, result.stderr
        assert seconds < ANSWER_BY_S, seconds
        assert agent.json("vm", "show", HUNG)["state"] == "running"

    # The shutdown was handed to the guest agent before libvirt gave up on it: once thawed, the
    # guest may carry it out (the user's stop, once and late). Then it starts as usual.
    def settled() -> bool:
        if agent.json("vm", "show", HUNG)["state"] == "shutoff":
            return True
        return agent.cli("--timeout", "10", "guest", "exec", HUNG, "--", "true").returncode == 0

    wait_for(settled, "the guest agent to thaw", 90)
    time.sleep(3)  # a late shutdown takes a moment once the agent has read it
    if agent.json("vm", "show", HUNG)["state"] != "running":
        agent.ok("vm", "start", HUNG)
        wait_for(lambda: "yes" in sh(agent, HUNG, f"test -b /dev/{vms[HUNG]} && echo yes || true"),
                 "hung's disk after the restart", 60)
    assert_hung_vm_recovered(agent, vms)


def test_sixteen_requests_while_the_guest_agent_hangs(
    agent: AgentUnderTest, vms: dict[str, str]
) -> None:
    requests = [("guest", "exec", HUNG, "--timeout", str(DEADLINE_S), "--", "true")] * 12 + [
        ("vm", "show", HUNG, "--json"), ("disk", "list", HUNG, "--json"),
        ("thin", "status", HUNG, "--json"), ("iothreads", HUNG, "--json"),
    ]
    with busy_keeps_going(agent, vms, 144):
        freeze_guest_agent(agent, 50)
        start_up_s = cli_start_up_s(agent, len(requests))
        with concurrent.futures.ThreadPoolExecutor(len(requests)) as pool:
            answers = list(pool.map(
                lambda args: timed(agent, "--timeout", str(DEADLINE_S), *args), requests))
    for args, (result, seconds) in zip(requests, answers, strict=True):
        assert seconds < ANSWER_BY_S + start_up_s, (args, seconds, start_up_s)
        if args[0] == "guest":
            assert result.returncode == 1 and "timeout." in result.stderr, result.stderr
        else:  # reads that need no guest agent answer at once
            assert result.returncode == 0, (args, result.stderr)
            assert seconds < OTHER_VM_BOUND_S + start_up_s, (args, seconds, start_up_s)
    assert_hung_vm_recovered(agent, vms)


def test_a_stopped_qemu_costs_its_own_requests_only(
    agent: AgentUnderTest, vms: dict[str, str]
) -> None:
    with busy_keeps_going(agent, vms, 192), qemu_stopped(agent, HUNG):
        result, seconds = timed(agent, "--timeout", "8", "throttle", "set", HUNG, "gold",
                                "--total-iops-sec", "500")
        assert result.returncode == 1, result.stderr
        assert "timeout.hypervisor" in result.stderr, result.stderr
        assert seconds < 8 + 8, seconds
        status = api_get(agent, "/agent")
        # The throttle change's call, and maybe a reconcile's read of the same VM: no other VM.
        assert {call["vm"] for call in status["abandoned_calls"]} == {HUNG}, status
        # A second change to the same VM does not queue behind the first: it fails at once.
        again, seconds = timed(agent, "--timeout", "8", "throttle", "set", HUNG, "gold",
                               "--total-iops-sec", "600")
        assert again.returncode == 1 and "timeout.hypervisor" in again.stderr, again.stderr
        assert seconds < OTHER_VM_BOUND_S, seconds
        # Reads of the stopped VM that need no answer from QEMU keep answering.
        shown, seconds = timed(agent, "vm", "show", HUNG, "--json")
        assert shown.returncode == 0 and seconds < OTHER_VM_BOUND_S, (shown.stderr, seconds)
        # A change begins (its intent recorded) only once its read of the VM answered: one
        # stuck in that read, or refused behind a reconcile's, must have changed nothing.
        begun = _begun_iops(agent)
    # Continued: the abandoned call returns, and the change it made is finished (the group holds
    # the one value that was applied, live and persistent alike) or undone, never half-done.
    wait_for(lambda: api_get(agent, "/agent")["abandoned_calls"] == [],
             "the abandoned call to return", 60)
    wait_for(lambda: not _pending(agent), "the interrupted change to be reconciled", 60)
    if not begun:
        untouched = agent.cli("throttle", "info", HUNG, "gold", "--json")
        assert untouched.returncode == 2 and "group.not_found" in untouched.stderr, (
            untouched.stdout, untouched.stderr)
    else:
        info = json.loads(agent.ok("throttle", "info", HUNG, "gold", "--json"))
        assert "differs" not in info, info
        assert info["limits"]["total_iops_sec"] in begun, (info, begun)
    assert_hung_vm_recovered(agent, vms)


def _begun_iops(agent: AgentUnderTest) -> set[int]:
    """The total_iops_sec of each throttle change on HUNG whose intent is recorded."""
    rows = store_rows(agent, "SELECT data_json FROM pending_ops WHERE vm = ?", HUNG)
    return {change["limits"]["total_iops_sec"]
            for (data,) in rows for change in json.loads(data)["changes"]}


def _pending(agent: AgentUnderTest) -> list[Any]:
    return store_rows(agent, "SELECT id FROM pending_ops")
