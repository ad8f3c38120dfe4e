"""Naming chain elements (positional vda[N] or path), libvirt's names, commit and pull checks."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blockplane.chain.addressing import (
    libvirt_name_of,
    resolve_element,
    validate_commit,
    validate_pull,
)
from blockplane.errors import Conflict, InvalidInput, NotFound
from blockplane.model.chain import Chain, ChainElement
from blockplane.xml.backing_chain import parse_chain

DATA = Path(__file__).parent / "data"
IMG = "/tmp/chainfix/img"


def load(name: str, target: str = "vda") -> Chain:
    return parse_chain((DATA / f"chain_{name}.xml").read_text(), target)


# snap1 (node 5) -> top (2) -> mid (3) -> /dev/loop10 (4)
SNAP = load("snapshot")


@pytest.mark.parametrize(
    ("spec", "position"),
    [
        ("vda", 0),
        ("vda[0]", 0),
        ("vda[1]", 1),
        ("vda[3]", 3),
        (f"{IMG}/snap1.qcow2", 0),
        (f"{IMG}/mid.qcow2", 2),
        (f"{IMG}//./mid.qcow2", 2),
        ("/dev/loop10", 3),
    ],
)
def test_resolve(spec: str, position: int) -> None:
    assert resolve_element(SNAP, spec).position == position


@pytest.mark.parametrize(
    "spec",
    ["", "vda[", "vda[]", "vda[-1]", "vda[01]", "vda[1", "vda]1[", "vdb", "vdb[1]", "VDA",
     "vda[1][2]", "mid.qcow2", "vda [1]", " vda"],
)
def test_malformed_specs(spec: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        resolve_element(SNAP, spec)
    assert caught.value.code == "chain.address_invalid"
    assert caught.value.exit_code == 2


@pytest.mark.parametrize("spec", ["vda[4]", "vda[99]", "vda[12345678901234567890]",
                                  f"{IMG}/other.qcow2", "/"])
def test_unknown_elements(spec: str) -> None:
    with pytest.raises(NotFound) as caught:
        resolve_element(SNAP, spec)
    assert caught.value.code == "chain.element_not_found"


def test_paths_match_canonically_only_when_asked() -> None:
    links = {"/var/lib/vm/disk.qcow2": f"{IMG}/top.qcow2"}

    def canonical(path: str) -> str:
        return links.get(path, path)

    with pytest.raises(NotFound):
        resolve_element(SNAP, "/var/lib/vm/disk.qcow2")
    element = resolve_element(SNAP, "/var/lib/vm/disk.qcow2", canonical=canonical)
    assert element.name == "vda[1]"


def test_libvirt_names_use_node_indices_not_positions() -> None:
    names = [libvirt_name_of(SNAP, e) for e in SNAP.elements]
    assert names == ["vda[5]", "vda[2]", "vda[3]", "vda[4]"]


def test_libvirt_names_need_a_live_chain() -> None:
    inactive = load("snapshot_inactive")
    with pytest.raises(Conflict) as caught:
        libvirt_name_of(inactive, inactive.top)
    assert caught.value.code == "vm.not_running"


def test_active_commit_defaults_to_the_whole_chain() -> None:
    plan = validate_commit(SNAP)
    assert plan.active
    assert (plan.top.name, plan.base.name) == ("vda", "vda[3]")
    assert [e.name for e in plan.invalidated] == ["vda", "vda[1]", "vda[2]"]


def test_intermediate_commit() -> None:
    top = resolve_element(SNAP, "vda[1]")
    base = resolve_element(SNAP, "vda[2]")
    plan = validate_commit(SNAP, top, base)
    assert not plan.active
    assert [e.path for e in plan.invalidated] == [f"{IMG}/top.qcow2"]
    names = (libvirt_name_of(SNAP, plan.top), libvirt_name_of(SNAP, plan.base))
    assert names == ("vda[2]", "vda[3]")


def test_active_commit_into_the_next_element() -> None:
    plan = validate_commit(SNAP, SNAP.top, resolve_element(SNAP, "vda[1]"))
    assert plan.active and [e.name for e in plan.invalidated] == ["vda"]


@pytest.mark.parametrize(("top", "base"), [("vda[2]", "vda[1]"), ("vda[1]", "vda[1]"),
                                           ("vda[3]", None), ("vda", "vda")])
def test_commit_base_must_lie_below_top(top: str, base: str | None) -> None:
    with pytest.raises(InvalidInput) as caught:
        validate_commit(SNAP, resolve_element(SNAP, top),
                        resolve_element(SNAP, base) if base else None)
    assert caught.value.code == "chain.commit_invalid"


def test_nothing_to_commit_or_pull_in_a_flat_chain() -> None:
    flat = load("pulled")
    with pytest.raises(InvalidInput):
        validate_commit(flat)
    with pytest.raises(InvalidInput) as caught:
        validate_pull(flat)
    assert caught.value.code == "chain.pull_invalid"


def test_elements_from_another_chain_are_refused() -> None:
    stranger = load("running").elements[1]
    with pytest.raises(NotFound):
        validate_commit(SNAP, None, stranger)
    with pytest.raises(NotFound):
        validate_pull(SNAP, stranger)


def test_pull() -> None:
    everything = validate_pull(SNAP)
    assert everything.base is None
    assert [e.name for e in everything.invalidated] == ["vda[1]", "vda[2]", "vda[3]"]
    partial = validate_pull(SNAP, resolve_element(SNAP, "/dev/loop10"))
    assert [e.name for e in partial.invalidated] == ["vda[1]", "vda[2]"]


@pytest.mark.parametrize("base", ["vda", "vda[1]"])
def test_pull_base_must_leave_something_to_pull(base: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        validate_pull(SNAP, resolve_element(SNAP, base))
    assert caught.value.code == "chain.pull_invalid"


def test_jobs_need_the_full_chain() -> None:
    partial = load("snapshot_inactive")
    with pytest.raises(Conflict):
        validate_commit(partial)
    with pytest.raises(Conflict):
        validate_pull(partial)


def _chain(depth: int) -> Chain:
    return Chain("vda", tuple(
        ChainElement(p, 100 - p, "vda" if p == 0 else f"vda[{p}]", f"/img/{p}.qcow2", "qcow2",
                     "qcow2" if p < depth - 1 else None, "file")
        for p in range(depth)
    ))


@given(st.integers(1, 12), st.text(max_size=12))
def test_any_spec_resolves_or_raises_a_user_error(depth: int, spec: str) -> None:
    chain = _chain(depth)
    try:
        element = resolve_element(chain, spec)
    except (InvalidInput, NotFound) as error:
        assert error.exit_code == 2 and error.code.startswith("chain.")
    else:
        assert element in chain.elements


@given(st.integers(1, 12), st.data())
def test_names_round_trip(depth: int, data: st.DataObject) -> None:
    chain = _chain(depth)
    position = data.draw(st.integers(0, depth - 1))
    element = chain.elements[position]
    assert resolve_element(chain, element.name) == element
    assert resolve_element(chain, f"vda[{position}]") == element
    assert resolve_element(chain, element.path) == element
    assert libvirt_name_of(chain, element) == f"vda[{100 - position}]"
