"""The tour's ledger: what it records survives the process, and only the ledgers of tours that
are no longer running count as left behind."""

from __future__ import annotations

import subprocess
from pathlib import Path

from blockplane.cli.demo.ledger import Ledger, stale_ledgers


def test_a_name_is_on_disk_before_it_is_created_and_gone_once_removed(tmp_path: Path) -> None:
    ledger = Ledger.open(tmp_path, "abc123")
    ledger.record("vms", "demo-abc123")
    ledger.record("vms", "demo-abc123")
    ledger.record("pools", "demo-abc123")
    again = Ledger.load(tmp_path / "abc123.json")
    assert again.entries["vms"] == ["demo-abc123"]
    assert again.entries["pools"] == ["demo-abc123"]
    assert again.owner_alive  # this very process
    ledger.forget("vms", "demo-abc123")
    ledger.forget("pools", "demo-abc123")
    ledger.close()
    assert not (tmp_path / "abc123.json").exists()


def test_a_ledger_that_still_holds_something_is_kept(tmp_path: Path) -> None:
    ledger = Ledger.open(tmp_path, "keep01")
    ledger.record("labs", "/tmp/somewhere")
    ledger.close()
    assert (tmp_path / "keep01.json").exists()


def test_only_ledgers_of_tours_that_ended_are_stale(tmp_path: Path) -> None:
    mine = Ledger.open(tmp_path, "live01")
    mine.record("vms", "demo-live01")
    ended = subprocess.Popen(["true"])
    ended.wait()
    theirs = Ledger(tmp_path / "dead01.json", pid=ended.pid, started=1)
    theirs.record("vms", "demo-dead01")
    (tmp_path / "junk.json").write_text("{not json")
    assert [ledger.path.name for ledger in stale_ledgers(tmp_path)] == ["dead01.json"]
    assert list(stale_ledgers(tmp_path / "missing")) == []
