"""The rbd multiqueue gate: which QEMU versions carry 89d22536d1a1, and what the module probe
may add (a backport), never take away."""

from __future__ import annotations

from pathlib import Path

import pytest

from blockplane.facts.capabilities import capability_matrix
from blockplane.facts.rbd_capability import (
    FIX_SYMBOL,
    RbdDriverProbe,
    probe_rbd_driver,
    rbd_multi_iothread,
    version_has_fix,
)
from blockplane.facts.versions import Version, parse_version


@pytest.mark.parametrize(
    ("qemu", "fixed"),
    [
        ("9.0.0", False), ("9.2.4", False),
        ("10.0.2", False), ("10.0.6", False), ("10.0.7", True), ("10.0.12", True),
        ("10.1.0", False), ("10.1.2", False), ("10.1.3", True),
        ("10.2.0", True), ("10.2.1", True), ("11.0.0", True),
        ("1:10.0.2+ds-2+deb13u1~bpo12+1", False), ("1:10.0.7+ds-1", True),
    ],
)
def test_the_fixed_releases(qemu: str, fixed: bool) -> None:
    assert version_has_fix(parse_version(qemu)) is fixed
    assert capability_matrix(parse_version(qemu), Version(11, 3))[
        "rbd_multi_iothread"].supported is fixed


def test_the_reason_names_the_fix_and_the_needs_the_backports() -> None:
    verdict = capability_matrix(Version(10, 0, 2), Version(11, 3))["rbd_multi_iothread"]
    assert not verdict.supported
    assert "89d22536d1a1" in verdict.reason and "QEMU 10.0.2" in verdict.reason
    assert "10.2.0" in verdict.needs and "10.1.3" in verdict.needs and "10.0.7" in verdict.needs


def test_a_backported_module_enables_an_older_version_and_never_disables_a_fixed_one() -> None:
    backport = RbdDriverProbe("/usr/lib/qemu/block-rbd.so", True)
    unpatched = RbdDriverProbe("/usr/lib/qemu/block-rbd.so", False)
    supported, reason = rbd_multi_iothread(Version(10, 0, 2), backport)
    assert supported and "backport" in reason
    assert not rbd_multi_iothread(Version(10, 0, 2), unpatched)[0]
    assert rbd_multi_iothread(Version(10, 2, 0), unpatched)[0]
    assert not rbd_multi_iothread(None, None)[0]


def test_the_probe_reads_the_modules_imports(tmp_path: Path) -> None:
    fixed = tmp_path / "a" / "block-rbd.so"
    fixed.parent.mkdir()
    fixed.write_bytes(b"\x7fELF...qemu_coroutine_self\x00" + FIX_SYMBOL + b"\x00")
    old = tmp_path / "b" / "block-rbd.so"
    old.parent.mkdir()
    old.write_bytes(b"\x7fELF...qemu_coroutine_self\x00aio_co_wake\x00")
    assert probe_rbd_driver((str(fixed),)) == RbdDriverProbe(str(fixed), True)
    assert probe_rbd_driver((str(old),)) == RbdDriverProbe(str(old), False)
    assert probe_rbd_driver((str(tmp_path / "none" / "*.so"),)) == RbdDriverProbe(None, None)
