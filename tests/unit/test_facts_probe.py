"""The real probes, run on this host: QEMU, packages, CPUs, memory and the KVM probe."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from blockplane.errors import InvalidInput
from blockplane.facts import probe
from blockplane.facts.accel import resolve_accel
from blockplane.facts.host import LibvirtRuntime, gather_host_facts
from blockplane.facts.versions import Version, parse_version

QEMU = probe.find_qemu_binary()
GOLDEN = Path(__file__).parent / "data" / "domcaps_qemu_x86_64_pc.xml"

needs_qemu = pytest.mark.skipif(QEMU is None, reason="no QEMU system emulator on this host")


def qemu() -> str:
    assert QEMU is not None
    return QEMU


@needs_qemu
def test_qemu_binary_and_version() -> None:
    assert os.access(qemu(), os.X_OK)
    version = probe.probe_qemu_version(qemu())
    assert version is not None
    assert version >= Version(10, 0)


def test_unrunnable_binary_has_no_version(tmp_path: Path) -> None:
    assert probe.probe_qemu_version(str(tmp_path / "no-such-qemu")) is None


def test_preferred_binary_wins_only_when_executable(tmp_path: Path) -> None:
    assert probe.find_qemu_binary(str(tmp_path / "missing")) == probe.find_qemu_binary()


@needs_qemu
def test_package_versions_match_the_binary() -> None:
    qemu_package = probe.probe_qemu_package_version()
    libvirt_package = probe.probe_libvirt_package_version()
    if qemu_package is None or libvirt_package is None:
        pytest.skip("no dpkg/rpm package database for QEMU and libvirt here")
    assert parse_version(qemu_package) == probe.probe_qemu_version(qemu())
    assert parse_version(libvirt_package) >= Version(11, 2)


def test_unknown_package_is_none() -> None:
    assert probe.probe_package_version(["blockplane-no-such-package"], ["no-such"]) is None


def test_cpu_count() -> None:
    cpus = probe.probe_cpu_count()
    assert 1 <= cpus <= (os.cpu_count() or cpus)


def test_memory_bytes() -> None:
    memory = probe.probe_memory_bytes()
    assert memory is not None
    assert memory > 64 * 1024 * 1024
    assert probe.probe_memory_bytes("/nonexistent/meminfo") is None


def test_parse_meminfo_total() -> None:
    text = "MemTotal:       24683656 kB\nMemFree:        24025516 kB\n"
    assert probe.parse_meminfo_total(text) == 24683656 * 1024
    with pytest.raises(InvalidInput):
        probe.parse_meminfo_total("MemFree: 1 kB\n")
    with pytest.raises(InvalidInput):
        probe.parse_meminfo_total("MemTotal: lots kB\n")


@needs_qemu
def test_kvm_probe_on_this_host() -> None:
    result = probe.probe_kvm()
    assert isinstance(result.usable, bool)
    assert result.reason.strip()
    if not result.usable and os.path.exists(probe.KVM_DEVICE):
        # QEMU's own error, e.g. "failed to set MSR 0x10a to 0xc000069" on the project hosts.
        assert "failed" in result.reason or "cannot open" in result.reason
    selected, reason = resolve_accel("auto", result)
    assert selected == ("kvm" if result.usable else "tcg")
    assert result.reason in reason


@needs_qemu
def test_a_working_accelerator_is_usable() -> None:
    result = probe.probe_guest_runs(qemu(), ("-accel", "tcg"), timeout=10)
    assert result.usable, result.reason
    assert "ran guest code" in result.reason


@needs_qemu
def test_qemu_error_becomes_the_reason() -> None:
    result = probe.probe_guest_runs(qemu(), ("-accel", "tcg", "-cpu", "no-such-model"))
    assert not result.usable
    assert "no-such-model" in result.reason
    assert result.reason.startswith("`qemu")


@needs_qemu
def test_guest_that_never_runs_is_not_usable() -> None:
    started = time.monotonic()
    result = probe.probe_guest_runs(qemu(), ("-accel", "tcg", "-S"), timeout=1)
    assert not result.usable
    assert "ran no guest code in 1 s" in result.reason
    assert time.monotonic() - started < 5


@needs_qemu
def test_liveness_fallback() -> None:
    base = [qemu(), "-accel", "tcg", "-machine", "q35", "-m", "16", "-nodefaults"]
    base += ["-display", "none"]
    assert probe._stays_up(qemu(), "tcg", base).usable
    failed = probe._stays_up(qemu(), "tcg", [*base, "-cpu", "no-such-model"])
    assert not failed.usable
    assert "no-such-model" in failed.reason


def test_missing_device() -> None:
    result = probe.probe_kvm(device="/nonexistent/kvm")
    assert not result.usable
    assert result.reason.startswith("/nonexistent/kvm does not exist")


def test_unopenable_device(tmp_path: Path) -> None:
    result = probe.probe_kvm(device=str(tmp_path))
    assert not result.usable
    assert result.reason.startswith(f"cannot open {tmp_path} read-write")


def test_missing_binary(tmp_path: Path) -> None:
    result = probe.probe_guest_runs(str(tmp_path / "qemu"), ("-accel", "tcg"))
    assert not result.usable
    assert result.reason.startswith("cannot run")


@pytest.mark.parametrize(
    ("stderr", "reason"),
    [
        (
            "qemu-system-x86_64: error: failed to set MSR 0x10a to 0xc000069\n"
            "qemu-system-x86_64: target/i386/kvm/kvm.c:3849: kvm_buf_set_msrs: Assertion "
            "`ret == cpu->kvm_msr_buf->nmsrs' failed.\n",
            "failed to set MSR 0x10a to 0xc000069",
        ),
        (
            "/usr/bin/qemu-system-x86_64: warning: host doesn't support requested feature\n"
            "/usr/bin/qemu-system-x86_64: Could not access KVM kernel module: No such file\n",
            "Could not access KVM kernel module: No such file",
        ),
        ("", ""),
    ],
)
def test_qemu_error_extraction(stderr: str, reason: str) -> None:
    assert probe._qemu_error(stderr) == reason


def test_exit_status_descriptions() -> None:
    assert probe._describe_status(-6) == "QEMU was killed by SIGABRT"
    assert probe._describe_status(1) == "QEMU exited with status 1"


@needs_qemu
def test_gather_host_facts() -> None:
    runtime = LibvirtRuntime("11.3.0", "11003000", "qemu:///embed?root=/tmp/blockplane-test")
    started = time.monotonic()
    facts = gather_host_facts(runtime, GOLDEN.read_text())
    elapsed = time.monotonic() - started
    assert elapsed < 10
    assert facts.qemu.version is not None and facts.qemu.version >= Version(10, 0)
    assert facts.qemu.binary is not None
    assert facts.libvirt.version == Version(11, 3, 0)
    assert facts.accel.selected == ("kvm" if facts.kvm.usable else "tcg")
    doc = facts.to_json()
    assert isinstance(doc["kvm"]["usable"], bool)
    assert doc["kvm"]["reason"]
    assert doc["cpus"] >= 1
    assert doc["capabilities"]["iothread_vq_mapping"]["supported"] is True
