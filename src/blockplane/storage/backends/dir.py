"""The ``dir`` pool: each volume is a plain sparse file directly under the pool directory.

Owns ``SparseFiles`` (create, size, truncate, remove files confined to one directory, counted
against the pool capacity), which the loop backend reuses for its backing files. Must not write
image formats (qemu-img does that) and must not touch anything outside the pool directory.
"""

from __future__ import annotations

import builtins
import errno
import os
from pathlib import Path

from blockplane.errors import NotFound, OperationFailed
from blockplane.storage.backends.base import (
    Volume,
    align_up,
    check_requested_size,
    pool_lock,
    refuse_shrink,
    volume_exists,
    volume_not_found,
)
from blockplane.storage.capacity import PoolCapacity
from blockplane.storage.names import VOLUME_NAME, confine

_OPEN_FLAGS = os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC


class SparseFiles:
    """Files ``<root>/<name><suffix>``, sized with (f)truncate so they stay sparse."""

    def __init__(self, root: Path, *, suffix: str = "", alignment: int = 1) -> None:
        self.root = Path(os.path.realpath(root))
        self.suffix = suffix
        self.alignment = alignment

    def path_of(self, name: str) -> Path:
        return confine(self.root, name, suffix=self.suffix)

    def names(self) -> builtins.list[str]:
        try:
            entries = list(os.scandir(self.root))
        except FileNotFoundError as error:
            raise self._missing_root() from error
        names = []
        for entry in entries:
            if not entry.name.endswith(self.suffix) or not entry.is_file(follow_symlinks=False):
                continue
            name = entry.name[: len(entry.name) - len(self.suffix)]
            if VOLUME_NAME.fullmatch(name) and ".." not in name:
                names.append(name)
        return sorted(names)

    def total(self) -> int:
        return sum(self.size_of(name) for name in self.names())

    def size_of(self, name: str) -> int:
        path = self.path_of(name)
        try:
            return os.stat(path).st_size
        except FileNotFoundError as error:
            raise volume_not_found(name, f"pool directory {self.root}") from error

    def create(self, name: str, size_bytes: int, capacity: PoolCapacity) -> Path:
        check_requested_size(size_bytes)
        size = align_up(size_bytes, self.alignment)
        path = self.path_of(name)
        capacity.check_capacity(self.total(), size, volume=name, operation="create")
        try:
            fd = os.open(path, _OPEN_FLAGS | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError as error:
            raise volume_exists(name, f"pool directory {self.root}") from error
        except FileNotFoundError as error:
            raise self._missing_root() from error
        except OSError as error:
            raise _failed("create", path, error) from error
        try:
            os.ftruncate(fd, size)
        except OSError as error:
            os.close(fd)
            os.unlink(path)
            raise _failed("size", path, error) from error
        os.close(fd)
        return path

    def grow(self, name: str, new_size: int, capacity: PoolCapacity) -> int:
        """Truncate up to ``new_size`` (aligned) and return the file's new size."""
        current = self.size_of(name)
        if new_size < current:
            raise refuse_shrink(name, current, new_size)
        target = align_up(new_size, self.alignment)
        if target == current:
            return current
        if capacity.limit_bytes is not None:  # summing the pool costs a stat per volume
            capacity.check_capacity(self.total(), target - current, volume=name)
        path = self.path_of(name)
        try:
            fd = os.open(path, _OPEN_FLAGS)
        except OSError as error:
            raise _failed("open", path, error) from error
        try:
            os.ftruncate(fd, target)
            return os.fstat(fd).st_size
        except OSError as error:
            raise _failed("grow", path, error) from error
        finally:
            os.close(fd)

    def remove(self, name: str) -> None:
        path = self.path_of(name)
        try:
            os.unlink(path)
        except FileNotFoundError as error:
            raise volume_not_found(name, f"pool directory {self.root}") from error
        except OSError as error:
            raise _failed("remove", path, error) from error

    def _missing_root(self) -> NotFound:
        return NotFound(f"pool directory {self.root} does not exist", code="pool.not_found")


def _failed(action: str, path: Path, error: OSError) -> OperationFailed:
    reason = error.strerror or errno.errorcode.get(error.errno or 0, str(error))
    return OperationFailed(f"cannot {action} {path}: {reason}", code="storage.io_failed",
                           path=str(path))


class DirBackend:
    """Plain files; QEMU opens the file itself, so ``is_block`` is False."""

    kind = "dir"
    is_block = False

    def __init__(self, root: Path, *, capacity: PoolCapacity | None = None) -> None:
        self.files = SparseFiles(root)
        self.capacity = capacity or PoolCapacity()
        self._lock = pool_lock(f"dir:{self.files.root}")

    def create(self, name: str, size_bytes: int) -> Volume:
        with self._lock:
            path = self.files.create(name, size_bytes, self.capacity)
            return Volume(name, path, os.stat(path).st_size)

    def grow(self, name: str, new_physical_bytes: int) -> int:
        with self._lock:
            return self.files.grow(name, new_physical_bytes, self.capacity)

    def physical_size(self, name: str) -> int:
        return self.files.size_of(name)

    def delete(self, name: str) -> None:
        with self._lock:
            self.files.remove(name)

    def activate(self, name: str) -> Volume:
        return Volume(name, self.files.path_of(name), self.files.size_of(name))

    def device_of(self, name: str) -> Path | None:
        """QEMU opens the file itself: no other path."""
        return None

    def list(self) -> builtins.list[str]:
        return self.files.names()

    def used_bytes(self) -> int:
        return self.files.total()
