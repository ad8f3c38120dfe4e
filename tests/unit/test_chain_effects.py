"""What the live chain proves about a job libvirt no longer reports, on the libvirt fixtures."""

from __future__ import annotations

from pathlib import Path

from blockplane.chain.jobs.effects import commit_effect, pivot_confirmed, pivot_effect, pull_effect
from blockplane.chain.jobs.phases import Effect
from blockplane.model.chain import Chain
from blockplane.xml.backing_chain import parse_chain

DATA = Path(__file__).parent / "data"
IMG = "/tmp/chainfix/img"
APPLIED, NOT_APPLIED, UNKNOWN = Effect.APPLIED, Effect.NOT_APPLIED, Effect.UNKNOWN


def load(name: str) -> Chain:
    return parse_chain((DATA / f"chain_{name}.xml").read_text(), "vda")


def test_active_commit_pivot() -> None:
    new_top, old_top = f"{IMG}/top.qcow2", f"{IMG}/snap1.qcow2"
    # READY: the mirror is still there and snap1 is still the top.
    assert not pivot_confirmed(load("active_commit_ready"), new_top)
    assert pivot_effect(load("active_commit_ready"), new_top, old_top) is NOT_APPLIED
    assert pivot_confirmed(load("active_commit_pivoted"), new_top)
    assert pivot_effect(load("active_commit_pivoted"), new_top, old_top) is APPLIED


def test_copy_pivot() -> None:
    dest, source = f"{IMG}/copy.qcow2", f"{IMG}/top.qcow2"
    for fixture in ("copy_running", "copy_ready"):
        assert not pivot_confirmed(load(fixture), dest)
        assert pivot_effect(load(fixture), dest, source) is NOT_APPLIED
    assert pivot_confirmed(load("copy_pivoted"), f"{IMG}/./copy.qcow2")
    # Neither image on top: something else happened to the disk.
    assert pivot_effect(load("pulled"), dest, source) is UNKNOWN


def test_intermediate_commit() -> None:
    # Committing snap1's backing top.qcow2 into mid.qcow2: before, top.qcow2 is still there.
    top, base = f"{IMG}/top.qcow2", f"{IMG}/mid.qcow2"
    assert commit_effect(load("snapshot"), top, base) is NOT_APPLIED
    # After an active commit of snap1 into top.qcow2, snap1 is gone and top.qcow2 stays.
    assert commit_effect(load("active_commit_pivoted"), f"{IMG}/snap1.qcow2", top) is APPLIED
    assert commit_effect(load("pulled"), f"{IMG}/snap1.qcow2", top) is UNKNOWN
    assert commit_effect(load("snapshot_inactive"), "/nowhere", top) is UNKNOWN


def test_pull() -> None:
    snap2 = f"{IMG}/snap2.qcow2"
    assert pull_effect(load("pulled"), snap2, None) is APPLIED
    snapshot = load("snapshot")
    snap1 = f"{IMG}/snap1.qcow2"
    assert pull_effect(snapshot, snap1, None) is NOT_APPLIED
    assert pull_effect(snapshot, snap1, f"{IMG}/top.qcow2") is APPLIED
    assert pull_effect(snapshot, snap1, "/dev/loop10") is NOT_APPLIED
    assert pull_effect(snapshot, snap1, "/elsewhere") is UNKNOWN
    assert pull_effect(load("pulled"), snap2, "/dev/loop10") is UNKNOWN
    assert pull_effect(snapshot, snap2, None) is UNKNOWN
    assert pull_effect(load("snapshot_inactive"), snap1, None) is UNKNOWN
