"""Direct kernel calls on loop devices for the hot path of a thin extend.

``losetup -c`` and ``blockdev --getsize64`` are the ioctls LOOP_SET_CAPACITY and BLKGETSIZE64
behind two forks; the monitor grows volumes while a guest writes flat out, so it calls them here
without forking (tens of microseconds instead of milliseconds, and no slowdown when the host is
busy). Owns only those ioctls and the sysfs backing-file lookup. Must not attach or detach loop
devices: ``losetup`` does that in the loop backend.
"""

from __future__ import annotations

import fcntl
import os
import struct
from pathlib import Path

from blockplane.errors import OperationFailed

LOOP_SET_CAPACITY = 0x4C07
BLKGETSIZE64 = 0x80081272


def block_device_size(device: Path) -> int:
    """Size in bytes of a block device, as ``blockdev --getsize64`` prints it."""
    fd = _open(device)
    try:
        raw = fcntl.ioctl(fd, BLKGETSIZE64, bytes(8))
    except OSError as error:
        raise _failed("read the size of", device, error) from error
    finally:
        os.close(fd)
    size: int = struct.unpack("=Q", raw)[0]
    return size


def set_loop_capacity(device: Path) -> None:
    """Make a loop device take its backing file's current size (``losetup -c``)."""
    fd = _open(device)
    try:
        fcntl.ioctl(fd, LOOP_SET_CAPACITY, 0)
    except OSError as error:
        raise _failed("resize", device, error) from error
    finally:
        os.close(fd)


def sysfs_backing_file(device: Path) -> str | None:
    """The backing file the kernel records for ``/dev/loopN``, or None if it is not attached."""
    if not device.name.startswith("loop"):
        return None
    try:
        return (Path("/sys/block") / device.name / "loop" / "backing_file").read_text().rstrip("\n")
    except OSError:
        return None


def _open(device: Path) -> int:
    try:
        return os.open(device, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as error:
        raise _failed("open", device, error) from error


def _failed(action: str, device: Path, error: OSError) -> OperationFailed:
    return OperationFailed(f"cannot {action} {device}: {error.strerror}",
                           code="storage.io_failed", device=str(device))


def loop_devices_by_backing_file() -> dict[str, list[Path]] | None:
    """Every attached loop device, by backing file, from one pass over sysfs (no fork); None
    when the kernel exposes no loop devices in sysfs, so the caller must ask ``losetup``."""
    sysfs = Path("/sys/block")
    if not sysfs.is_dir():
        return None
    found: dict[str, list[Path]] = {}
    for entry in sysfs.glob("loop*"):
        try:
            backing = (entry / "loop" / "backing_file").read_text().rstrip("\n")
        except OSError:
            continue
        found.setdefault(backing, []).append(Path("/dev") / entry.name)
    return {backing: sorted(devices) for backing, devices in found.items()}


def loop_devices_backed_by(backing: Path) -> list[Path] | None:
    """Loop devices whose backing file is ``backing`` (see ``loop_devices_by_backing_file``)."""
    every = loop_devices_by_backing_file()
    return None if every is None else every.get(str(backing), [])
