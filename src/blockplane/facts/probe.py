"""Side-effecting probes of this host: QEMU binary and version, package versions, CPUs, memory, KVM.

Each probe is small, runs programs with argument lists and a timeout (never a shell), and returns
``None`` (or a ``KvmProbe`` with a reason) instead of raising when the host cannot tell. The KVM
probe proves a vCPU really runs guest code: QEMU boots a 64 KiB firmware whose reset vector writes
to an ``isa-debug-exit`` port, so QEMU exits with status 3 only after the guest executed.
Decisions (capabilities, accelerator) are made elsewhere, by pure code.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from blockplane.errors import InvalidInput
from blockplane.facts.accel import KvmProbe, resolve_accel
from blockplane.facts.kernel_probe import ProbeKernel, probe_kernel_boots
from blockplane.facts.versions import Version, parse_version

__all__ = [
    "KvmProbe",
    "find_qemu_binary",
    "parse_meminfo_total",
    "probe_cpu_count",
    "probe_guest_runs",
    "probe_kvm",
    "probe_libvirt_package_version",
    "probe_memory_bytes",
    "probe_package_version",
    "probe_qemu_package_version",
    "probe_qemu_version",
    "resolve_accel",
]

QEMU_BINARY_PATHS: tuple[str, ...] = ("/usr/bin/qemu-system-x86_64", "/usr/libexec/qemu-kvm")
QEMU_BINARY_NAME = "qemu-system-x86_64"
QEMU_DPKG_PACKAGES: tuple[str, ...] = ("qemu-system-x86",)
QEMU_RPM_PACKAGES: tuple[str, ...] = ("qemu-kvm", "qemu-system-x86")
LIBVIRT_DPKG_PACKAGES: tuple[str, ...] = ("libvirt-daemon", "libvirt0")
LIBVIRT_RPM_PACKAGES: tuple[str, ...] = ("libvirt", "libvirt-daemon", "libvirt-libs")

KVM_DEVICE = "/dev/kvm"
KVM_PROBE_TIMEOUT = 5.0
COMMAND_TIMEOUT = 5.0
# Without isa-debug-exit in the binary we can only watch QEMU stay up this long.
LIVENESS_SECONDS = 1.0

_DEBUG_EXIT_PORT = 0xF4
_DEBUG_EXIT_STATUS = (1 << 1) | 1  # isa-debug-exit exits with (value << 1) | 1; we write 1.
_BIOS_SIZE = 64 * 1024
_RESET_VECTOR = _BIOS_SIZE - 16
# mov al, 1 ; out 0xf4, al ; hlt ; jmp $   (real mode, at the reset vector 0xFFFFFFF0)
_RESET_CODE = bytes((0xB0, 0x01, 0xE6, _DEBUG_EXIT_PORT, 0xF4, 0xEB, 0xFE))


def find_qemu_binary(preferred: str | None = None) -> str | None:
    """The QEMU system emulator to probe: ``preferred`` (e.g. domcaps ``<path>``) if it exists,
    else /usr/bin/qemu-system-x86_64, else ``qemu-system-x86_64`` on PATH, else qemu-kvm."""
    if preferred and os.access(preferred, os.X_OK):
        return preferred
    if os.access(QEMU_BINARY_PATHS[0], os.X_OK):
        return QEMU_BINARY_PATHS[0]
    on_path = shutil.which(QEMU_BINARY_NAME)
    if on_path:
        return on_path
    for path in QEMU_BINARY_PATHS[1:]:
        if os.access(path, os.X_OK):
            return path
    return None


def probe_qemu_version(binary: str, timeout: float = COMMAND_TIMEOUT) -> Version | None:
    """``BINARY --version`` parsed, or ``None`` when it cannot be run or read."""
    result = _run([binary, "--version"], timeout)
    if result is None or result.returncode != 0:
        return None
    try:
        return parse_version(result.stdout)
    except InvalidInput:
        return None


def probe_package_version(
    dpkg_names: Sequence[str], rpm_names: Sequence[str], timeout: float = COMMAND_TIMEOUT
) -> str | None:
    """The installed version of the first named package found, via dpkg-query, else rpm."""
    if shutil.which("dpkg-query"):
        for name in dpkg_names:
            version = _dpkg_version(name, timeout)
            if version:
                return version
    if shutil.which("rpm"):
        for name in rpm_names:
            version = _rpm_version(name, timeout)
            if version:
                return version
    return None


def probe_qemu_package_version(timeout: float = COMMAND_TIMEOUT) -> str | None:
    return probe_package_version(QEMU_DPKG_PACKAGES, QEMU_RPM_PACKAGES, timeout)


def probe_libvirt_package_version(timeout: float = COMMAND_TIMEOUT) -> str | None:
    return probe_package_version(LIBVIRT_DPKG_PACKAGES, LIBVIRT_RPM_PACKAGES, timeout)


def probe_cpu_count() -> int:
    """CPUs this process may run on (the affinity mask), else the host's count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def parse_meminfo_total(text: str) -> int:
    """Bytes of ``MemTotal`` in /proc/meminfo text."""
    for line in text.splitlines():
        if line.startswith("MemTotal:"):
            fields = line.split()
            if len(fields) >= 2 and fields[1].isdigit():
                unit = fields[2].lower() if len(fields) > 2 else "kb"
                return int(fields[1]) * (1024 if unit == "kb" else 1)
            break
    raise InvalidInput("no readable MemTotal line in /proc/meminfo")


def probe_memory_bytes(path: str = "/proc/meminfo") -> int | None:
    try:
        return parse_meminfo_total(Path(path).read_text(encoding="ascii", errors="replace"))
    except (OSError, InvalidInput):
        return None


def probe_kvm(
    binary: str | None = None,
    *,
    device: str = KVM_DEVICE,
    timeout: float = KVM_PROBE_TIMEOUT,
    linux: ProbeKernel | None = None,
) -> KvmProbe:
    """Can KVM run a guest here? Checks ``device``, boots a test vCPU with -cpu host, then,
    given a ``linux`` kernel, boots that too (``facts.kernel_probe``)."""
    if not os.path.exists(device):
        return KvmProbe(
            False, f"{device} does not exist (KVM module not loaded, or not passed to this host)"
        )
    try:
        descriptor = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except OSError as error:
        return KvmProbe(False, f"cannot open {device} read-write: {error.strerror or error}")
    os.close(descriptor)
    qemu = binary or find_qemu_binary()
    if qemu is None:
        return KvmProbe(False, "no QEMU binary found to try KVM with")
    vcpu = probe_guest_runs(qemu, ("-accel", "kvm", "-cpu", "host"), timeout=timeout)
    if not vcpu.usable or linux is None:
        return vcpu
    return probe_kernel_boots(qemu, linux)


def probe_guest_runs(
    binary: str, accel_args: Sequence[str], *, timeout: float = KVM_PROBE_TIMEOUT
) -> KvmProbe:
    """Boot the exit-on-reset firmware under ``accel_args``; usable only if the guest ran."""
    label = " ".join([Path(binary).name, *accel_args])
    with tempfile.TemporaryDirectory(prefix="blockplane-probe-") as workdir:
        firmware = Path(workdir) / "exit-on-reset.bin"
        firmware.write_bytes(_exit_firmware())
        argv = [binary, *accel_args, *_machine_args(firmware)]
        argv += ["-device", f"isa-debug-exit,iobase={_DEBUG_EXIT_PORT:#x},iosize=0x04"]
        started = time.monotonic()
        try:
            result = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return KvmProbe(False, f"`{label}`: the test vCPU ran no guest code in {timeout:g} s")
        except OSError as error:
            return KvmProbe(False, f"cannot run {binary}: {error.strerror or error}")
        elapsed = time.monotonic() - started
        if result.returncode == _DEBUG_EXIT_STATUS:
            return KvmProbe(True, f"`{label}`: a test vCPU ran guest code in {elapsed:.2f} s")
        error_text = _qemu_error(result.stderr) or _describe_status(result.returncode)
        if "isa-debug-exit" in error_text and "not a valid device" in error_text:
            return _stays_up(binary, label, [binary, *accel_args, *_machine_args(firmware)])
        return KvmProbe(False, f"`{label}` failed: {error_text}")


def _stays_up(binary: str, label: str, argv: list[str]) -> KvmProbe:
    """Fallback for QEMU builds without isa-debug-exit: up for a second without error counts."""
    try:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
    except OSError as error:
        return KvmProbe(False, f"cannot run {binary}: {error.strerror or error}")
    try:
        _, stderr = process.communicate(timeout=LIVENESS_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        return KvmProbe(
            True, f"`{label}`: QEMU ran a vCPU for {LIVENESS_SECONDS:g} s without error"
        )
    error_text = _qemu_error(stderr) or _describe_status(process.returncode)
    return KvmProbe(False, f"`{label}` failed: {error_text}")


def _machine_args(firmware: Path) -> list[str]:
    return [
        "-machine", "q35", "-m", "16", "-nodefaults", "-no-user-config",
        "-display", "none", "-no-reboot", "-bios", str(firmware),
    ]  # fmt: skip


def _exit_firmware() -> bytes:
    image = bytearray(b"\xf4" * _BIOS_SIZE)  # hlt everywhere else
    image[_RESET_VECTOR : _RESET_VECTOR + len(_RESET_CODE)] = _RESET_CODE
    return bytes(image)


def _qemu_error(stderr: str) -> str:
    """QEMU's most telling stderr line, without the ``qemu-system-x86_64: error:`` prefix."""
    lines = [_strip_program(line) for line in stderr.splitlines() if line.strip()]
    if not lines:
        return ""
    errors = [line for line in lines if line.lower().startswith("error")]
    chosen = (
        errors[0]
        if errors
        else next((line for line in lines if not line.lower().startswith("warning")), lines[0])
    )
    return chosen.removeprefix("error:").strip()


def _strip_program(line: str) -> str:
    head, separator, rest = line.partition(": ")
    if separator and "qemu" in head and " " not in head.strip():
        return rest.strip()
    return line.strip()


def _describe_status(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"QEMU was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"QEMU was killed by signal {-returncode}"
    return f"QEMU exited with status {returncode}"


def _dpkg_version(name: str, timeout: float) -> str | None:
    result = _run(["dpkg-query", "-W", "-f", "${db:Status-Status} ${Version}\n", name], timeout)
    if result is None or result.returncode != 0:
        return None
    for line in result.stdout.splitlines():
        status, _, version = line.partition(" ")
        if status == "installed" and version.strip():
            return version.strip()
    return None


def _rpm_version(name: str, timeout: float) -> str | None:
    result = _run(["rpm", "-q", "--qf", "%{VERSION}-%{RELEASE}\n", name], timeout)
    if result is None or result.returncode != 0:
        return None
    lines = [line.strip() for line in result.stdout.splitlines() if line.strip()]
    return lines[0] if lines else None


def _run(argv: list[str], timeout: float) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env={**os.environ, "LC_ALL": "C"},
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
