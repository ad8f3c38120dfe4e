"""Bulk block stats as chain nodes, libvirt's ``vda[N]`` names, and commit sizing from qemu-img."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from blockplane.errors import OperationFailed
from blockplane.hypervisor.bulk_stats import (
    BlockStats,
    chain_nodes,
    domain_state,
    find_node,
)
from blockplane.model.chain import parse_libvirt_name
from blockplane.storage.commands import CommandResult
from blockplane.storage.images import measure_commit

# What libvirt 11.3 returned for a VM with a thin vda (armed) and a snapshot overlay on vdb.
STATS = {
    "state.state": 1, "state.reason": 1, "block.count": 3,
    "block.0.name": "vda", "block.0.path": "/dev/loop6", "block.0.backingIndex": 1,
    "block.0.allocation": 84213760, "block.0.capacity": 1 << 30,
    "block.0.physical": 201326592, "block.0.threshold": 104857600,
    "block.1.name": "vdb", "block.1.path": "/p/top.qcow2", "block.1.backingIndex": 3,
    "block.1.allocation": 0, "block.1.physical": 200704,
    "block.2.name": "vdb", "block.2.path": "/dev/loop7", "block.2.backingIndex": 2,
    "block.2.physical": 67108864,
}


def test_nodes_carry_target_libvirt_index_path_and_sizes() -> None:
    vda, top, base = chain_nodes(STATS)
    assert (vda.libvirt_name, vda.path) == ("vda[1]", "/dev/loop6")
    assert vda.stats == BlockStats(84213760, 201326592, 104857600)
    assert base.stats == BlockStats(0, 67108864, None)
    assert (top.libvirt_index, base.libvirt_index) == (3, 2)


def test_nodes_are_found_by_path_then_libvirt_index() -> None:
    nodes = chain_nodes(STATS)
    assert find_node(nodes, "vdb", "/dev/loop7") is nodes[2]
    assert find_node(nodes, "vdb", "/gone", 3) is nodes[1]
    assert find_node(nodes, "vdb", "/gone") is None
    assert find_node(nodes, "vdc", "/dev/loop7", 2) is None


def test_broken_or_missing_fields_do_not_raise() -> None:
    assert chain_nodes({}) == []
    odd = {"block.count": 2, "block.0.name": 7, "block.1.name": "vda",
           "block.1.threshold": 0, "block.1.physical": True}
    [only] = chain_nodes(odd)
    assert (only.libvirt_index, only.stats) == (None, BlockStats(0, 0, None))
    assert only.libvirt_name == "vda"


def test_domain_state_is_read_when_present() -> None:
    assert domain_state(STATS) == (1, 1)
    assert domain_state({"state.state": 3}) is None


@pytest.mark.parametrize(("target", "expected"), [
    ("vda[1]", ("vda", 1)), ("sdb[12]", ("sdb", 12)), ("vda", ("vda", None)),
    ("vda[x]", ("vda[x]", None)), ("/dev/loop1", ("/dev/loop1", None)),
])
def test_parse_libvirt_name(target: str, expected: tuple[str, int | None]) -> None:
    assert parse_libvirt_name(target) == expected


class ScriptedRunner:
    def __init__(self, replies: dict[str, CommandResult]) -> None:
        self.replies = replies
        self.calls: list[tuple[str, ...]] = []

    def run(
        self, args: Sequence[str], *, check: bool = True, timeout: float | None = None
    ) -> CommandResult:
        self.calls.append(tuple(args))
        reply = self.replies[args[1]]
        if check and not reply.ok:
            raise OperationFailed("failed")
        return reply


def reply(returncode: int, data: object) -> CommandResult:
    return CommandResult((), returncode, json.dumps(data), "")


def test_measure_commit_adds_the_top_layers_to_the_base_end(tmp_path: Path) -> None:
    top, middle = tmp_path / "top.qcow2", tmp_path / "mid.qcow2"
    top.touch()
    middle.touch()
    runner = ScriptedRunner({
        "check": reply(3, {"image-end-offset": 105185280}),  # leaks while in use are fine
        "measure": reply(0, {"required": 115736576, "fully-allocated": 1 << 30}),
    })
    assert measure_commit(top, "/b", runner=runner) == 105185280 + 115736576
    measure = next(call for call in runner.calls if call[1] == "measure")
    spec = json.loads(measure[-1].removeprefix("json:"))
    assert spec["backing"] is None
    assert spec["file"] == {"driver": "file", "filename": str(top)}
    assert "-U" in measure
    assert measure_commit(top, "/b", between=[middle], runner=runner) == \
        105185280 + 2 * 115736576


def test_measure_commit_reports_a_failed_check() -> None:
    runner = ScriptedRunner({"check": CommandResult((), 1, "", "Could not open")})
    with pytest.raises(OperationFailed, match="Could not open"):
        measure_commit("/t", "/b", runner=runner)
