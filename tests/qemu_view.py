"""QEMU's own view of a VM, for tests: throttle filter chains and throttle group limits.

Only one process may hold an embedded libvirt root, and libvirt keeps holding it until that
process exits. So ``qemu_session`` stops the agent (its VMs keep running), runs this module in a
child process that opens the root and performs the actions, then starts the agent again.
Reading QMP through ``DomainHandle.monitor_command`` is for tests only.

    python -m tests.qemu_view ROOT VM '[{"qmp": {"execute": "query-block"}}, ...]'
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from blockplane.hypervisor.connection import Hypervisor
from tests.harness import AgentUnderTest

REPO = Path(__file__).resolve().parent.parent


def qemu_session(agent: AgentUnderTest, vm: str, actions: list[dict[str, Any]]) -> list[Any]:
    """Run ``actions`` against ``vm`` with the agent stopped; one result per action.

    ``{"qmp": REQUEST}`` gives the reply's ``return``; ``{"resize": [TARGET, BYTES]}`` grows a
    disk through libvirt (virDomainBlockResize) and gives ``None``.
    """
    agent.ok("agent", "stop")
    try:
        result = subprocess.run(
            [sys.executable, "-m", "tests.qemu_view", str(agent.home / "libvirt"), vm,
             json.dumps(actions)],
            cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
        )
    finally:
        agent.ok("agent", "start")
    assert result.returncode == 0, result.stderr
    replies: list[Any] = json.loads(result.stdout)
    return replies


def throttle_chain(query_block: list[Any], named_nodes: list[Any], target: str) -> list[str]:
    """The throttle groups above disk ``target``'s format node, outermost (first hit) first.

    ``query_block`` and ``named_nodes`` are the returns of ``query-block`` and
    ``query-named-block-nodes`` (flat).
    """
    device = f"/machine/peripheral/ua-bp-{target}/"
    top = next(
        block["inserted"]["node-name"]
        for block in query_block
        if block.get("qdev", "").startswith(device)
    )
    node = next(node for node in named_nodes if node["node-name"] == top)
    if node["drv"] != "throttle":
        return []
    spec = json.loads(str(node["file"]).removeprefix("json:"))
    chain = []
    while spec.get("driver") == "throttle":
        chain.append(str(spec["throttle-group"]).removeprefix("throttle-"))
        spec = spec["file"]
    return chain


def limits_request(group: str) -> dict[str, Any]:
    """The QMP request for QEMU's ``limits`` of group object ``throttle-<group>``."""
    return {
        "qmp": {
            "execute": "qom-get",
            "arguments": {"path": f"/objects/throttle-{group}", "property": "limits"},
        }
    }


GRAPH_REQUESTS: list[dict[str, Any]] = [
    {"qmp": {"execute": "query-block"}},
    {"qmp": {"execute": "query-named-block-nodes", "arguments": {"flat": True}}},
]


def _main(root: str, vm: str, actions_json: str) -> None:
    hypervisor = Hypervisor(f"qemu:///embed?root={root}")
    hypervisor.open()
    domain = hypervisor.lookup(vm)
    results: list[Any] = []
    for action in json.loads(actions_json):
        if "qmp" in action:
            results.append(domain.monitor_command(action["qmp"])["return"])
        else:
            target, size = action["resize"]
            hypervisor.connection.lookupByName(vm).blockResize(target, int(size), 1)
            results.append(None)
    hypervisor.close()
    print(json.dumps(results))


if __name__ == "__main__":
    _main(*sys.argv[1:4])
