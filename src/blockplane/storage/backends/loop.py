"""The ``loop`` pool: one sparse backing file ``<pool>/<name>.img`` per volume, exposed as a loop
device, so a qcow2 can live on a growable block device the way it does on an LV.

Owns attaching, finding (by backing file), resizing and detaching those loop devices. Must never
detach a loop device whose backing file is not one of this pool's volume files, and must not run
anything through a shell.
"""

from __future__ import annotations

import builtins
import os
import threading
from pathlib import Path

from blockplane.errors import OperationFailed
from blockplane.storage.backends.base import Volume, pool_lock, volume_not_found
from blockplane.storage.backends.dir import SparseFiles
from blockplane.storage.backends.loop_devices import (
    block_device_size,
    loop_devices_backed_by,
    loop_devices_by_backing_file,
    set_loop_capacity,
    sysfs_backing_file,
)
from blockplane.storage.capacity import PoolCapacity
from blockplane.storage.commands import CommandRunner, SubprocessRunner

# Loop devices expose whole 512-byte sectors; 4 KiB keeps direct I/O aligned as well.
LOOP_ALIGNMENT = 4096
BACKING_SUFFIX = ".img"


class LoopBackend:
    kind = "loop"
    is_block = True

    def __init__(
        self,
        root: Path,
        *,
        capacity: PoolCapacity | None = None,
        runner: CommandRunner | None = None,
        direct_io: bool = False,
    ) -> None:
        self.files = SparseFiles(root, suffix=BACKING_SUFFIX, alignment=LOOP_ALIGNMENT)
        self.capacity = capacity or PoolCapacity()
        self.direct_io = direct_io
        self._runner: CommandRunner = runner or SubprocessRunner()
        self._lock = pool_lock(f"loop:{self.files.root}")
        self._devices: dict[str, Path] = {}
        self._learning = threading.Lock()

    def create(self, name: str, size_bytes: int) -> Volume:
        with self._lock:
            backing = self.files.create(name, size_bytes, self.capacity)
            try:
                device = self._attach(backing)
            except BaseException:
                self.files.remove(name)
                raise
            self._devices[name] = device
            return Volume(name, device, block_device_size(device))

    def grow(self, name: str, new_physical_bytes: int) -> int:
        """Truncate the backing file, set the loop capacity (``losetup -c``), read it back."""
        with self._lock:
            file_size = self.files.grow(name, new_physical_bytes, self.capacity)
            device = self._device_for(name)
            if device is None:
                return file_size
            set_loop_capacity(device)
            size = block_device_size(device)
            if size != file_size:
                raise OperationFailed(
                    f"{device} reports {size} bytes after growing its backing file "
                    f"to {file_size}",
                    code="storage.resize_failed",
                    volume=name,
                )
            return size

    def physical_size(self, name: str) -> int:
        """The size QEMU sees: the device's if attached, else the backing file's."""
        file_size = self.files.size_of(name)
        device = self._device_for(name)
        return file_size if device is None else block_device_size(device)

    def delete(self, name: str) -> None:
        with self._lock:
            backing = self.files.path_of(name)
            if not backing.is_file():
                raise volume_not_found(name, f"loop pool {self.files.root}")
            for device in self._devices_for(backing):
                self._runner.run(["losetup", "-d", str(device)])
            self._devices.pop(name, None)
            self.files.remove(name)

    def activate(self, name: str) -> Volume:
        """Reattach the backing file if no loop device has it; repair a half-done grow."""
        with self._lock:
            file_size = self.files.size_of(name)
            backing = self.files.path_of(name)
            devices = self._devices_for(backing)
            device = devices[0] if devices else self._attach(backing)
            self._devices[name] = device
            size = block_device_size(device)
            if size < file_size:
                # The agent stopped between truncate and ``losetup -c``: finish that grow.
                set_loop_capacity(device)
                size = block_device_size(device)
            return Volume(name, device, size)

    def device_of(self, name: str) -> Path | None:
        """The loop device attached to ``name``'s backing file, or None; changes nothing."""
        return self._device_for(name)

    def list(self) -> builtins.list[str]:
        return self.files.names()

    def used_bytes(self) -> int:
        return self.files.total()

    def _attach(self, backing: Path) -> Path:
        args = ["losetup", "--find", "--show"]
        if self.direct_io:
            args.append("--direct-io=on")
        output = self._runner.run([*args, str(backing)]).stdout.strip()
        if not output.startswith("/dev/loop"):
            raise OperationFailed(
                f"losetup attached {backing} but printed {output!r} instead of a device",
                code="storage.command_failed",
            )
        return Path(output)

    def _device_for(self, name: str) -> Path | None:
        """The device last seen on ``name``'s backing file, checked against sysfs so the
        extend path forks nothing; ``losetup -j`` when sysfs shows no loop devices."""
        backing = self.files.path_of(name)
        known = self._known_device(name, backing)
        if known is not None:
            return known
        with self._learning:
            # Another thread may have learnt every device while this one waited.
            known = self._known_device(name, backing)
            if known is not None:
                return known
            if self._learn_devices():
                return self._devices.get(name)
        devices = self._devices_for(backing)
        if not devices:
            self._devices.pop(name, None)
            return None
        self._devices[name] = devices[0]
        return devices[0]

    def _known_device(self, name: str, backing: Path) -> Path | None:
        known = self._devices.get(name)
        if known is not None and sysfs_backing_file(known) == str(backing):
            return known
        return None

    def _learn_devices(self) -> bool:
        """Note the device of every volume of this pool from one sysfs pass, so that after a
        restart the first extend of each volume does not scan every loop device again.
        False when sysfs shows no loop devices (the caller asks ``losetup``)."""
        every = loop_devices_by_backing_file()
        if every is None:
            return False
        learnt = {}
        for name in self.files.names():
            devices = every.get(str(self.files.path_of(name)))
            if devices:
                learnt[name] = devices[0]
        self._devices = learnt
        return True

    def _devices_for(self, backing: Path) -> builtins.list[Path]:
        """Loop devices whose backing file is ``backing`` (losetup matches device and inode)."""
        if not backing.is_file():
            return []
        from_sysfs = loop_devices_backed_by(backing)
        if from_sysfs is not None:
            return from_sysfs
        result = self._runner.run(["losetup", "--noheadings", "--output", "NAME",
                                   "--associated", os.fspath(backing)])
        return sorted(Path(line.strip()) for line in result.stdout.splitlines() if line.strip())
