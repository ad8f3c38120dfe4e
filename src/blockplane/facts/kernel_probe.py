"""The second half of the KVM probe: does a real Linux kernel boot to userspace under KVM?

A vCPU that runs a few real-mode instructions is not proof that KVM can run a guest. Seen on
these machines: under a paravirtual KVM (``kvm-pvm``) the firmware probe passes, then every Linux
guest stops in the kernel ("KVM internal error ... emulation failure" on ``lock cmpxchg16b``) or
spins there for ever. So where a Linux kernel and a busybox initramfs are at hand (the test
guest), the probe also boots that kernel with ``rdinit=/bin/busybox -- poweroff -f`` and counts
KVM usable only if the kernel powered the machine off.

The verdict is kept per boot of the host (``/proc/sys/kernel/random/boot_id``), per QEMU binary
and per kernel, in a small JSON file, because a failing boot costs the whole timeout and every
agent start asks. Nothing here decides which accelerator to use: ``facts.accel`` does.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from blockplane.facts.accel import KvmProbe

KERNEL_PROBE_TIMEOUT_S = 10.0
KVM_ARGS = ("-accel", "kvm", "-cpu", "host")
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
#: What QEMU prints when KVM stops the vCPU; no reason to wait out the timeout then.
KVM_FAILURE_MARKERS = ("KVM internal error", "emulation failure")


@dataclass(frozen=True)
class ProbeKernel:
    """A Linux kernel and an initramfs holding ``/bin/busybox``."""

    kernel: Path
    initrd: Path

    @classmethod
    def in_images(cls, images: Path) -> ProbeKernel | None:
        kernel, initrd = images / "vmlinuz", images / "initramfs.img"
        if kernel.is_file() and initrd.is_file():
            return cls(kernel, initrd)
        return None


def default_cache_dir() -> Path:
    if os.geteuid() == 0:
        return Path("/run/blockplane")
    return Path(os.environ.get("XDG_RUNTIME_DIR") or "/tmp") / "blockplane"


def probe_kernel_boots(
    binary: str,
    probe_kernel: ProbeKernel,
    *,
    timeout: float = KERNEL_PROBE_TIMEOUT_S,
    cache_dir: Path | None = None,
    accel_args: tuple[str, ...] = KVM_ARGS,
) -> KvmProbe:
    """Boot ``probe_kernel`` under ``accel_args``; usable only if it powered the VM off."""
    key = _key(binary, probe_kernel, accel_args)
    cache = (cache_dir or default_cache_dir()) / f"kvm-kernel-probe-{key}"
    kept = _read_kept(cache)
    if kept is not None:
        return kept
    verdict = _boot(binary, probe_kernel, timeout, accel_args)
    _keep(cache, verdict)
    return verdict


def _boot(
    binary: str, probe_kernel: ProbeKernel, timeout: float, accel_args: tuple[str, ...]
) -> KvmProbe:
    label = " ".join([Path(binary).name, *accel_args, "-kernel", probe_kernel.kernel.name])
    argv = [
        binary, *accel_args, "-smp", "1", "-m", "256",
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-serial", "none", "-monitor", "none",
        "-kernel", str(probe_kernel.kernel), "-initrd", str(probe_kernel.initrd),
        "-append", "console=ttyS0 quiet panic=-1 rdinit=/bin/busybox -- poweroff -f",
    ]  # fmt: skip
    started = time.monotonic()
    try:
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True,
        )
    except OSError as error:
        return KvmProbe(False, f"cannot run {binary}: {error.strerror or error}")
    try:
        _, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        _, stderr = process.communicate()
        failure = _failure_line(stderr)
        why = failure or f"the kernel did not power the VM off within {timeout:g} s"
        return KvmProbe(False, f"`{label}`: a Linux kernel does not boot here: {why}")
    elapsed = time.monotonic() - started
    failure = _failure_line(stderr)
    if process.returncode == 0 and not failure:
        return KvmProbe(True, f"`{label}`: a Linux kernel booted and powered off in {elapsed:.1f}s")
    why = failure or f"QEMU exited with status {process.returncode}"
    return KvmProbe(False, f"`{label}`: a Linux kernel does not boot here: {why}")


def _failure_line(stderr: str) -> str:
    for line in stderr.splitlines():
        if any(marker in line for marker in KVM_FAILURE_MARKERS):
            return line.strip()
    return ""


def _key(binary: str, probe_kernel: ProbeKernel, accel_args: tuple[str, ...]) -> str:
    try:
        boot_id = BOOT_ID.read_text().strip()
    except OSError:
        boot_id = "unknown-boot"
    parts = [boot_id, " ".join(accel_args)]
    for path in (Path(binary), probe_kernel.kernel, probe_kernel.initrd):
        try:
            stat = path.stat()
            parts.append(f"{path}:{stat.st_size}:{stat.st_mtime_ns}")
        except OSError:
            parts.append(f"{path}:missing")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _read_kept(cache: Path) -> KvmProbe | None:
    try:
        kept = json.loads(cache.read_text())
        return KvmProbe(bool(kept["usable"]), f"{kept['reason']} (this boot's kept verdict)")
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _keep(cache: Path, verdict: KvmProbe) -> None:
    try:
        cache.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        partial = cache.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(json.dumps(verdict.to_json()))
        partial.replace(cache)
    except OSError:
        pass  # a read-only /run costs the next agent start the probe again, nothing more
