"""The ``lvm`` pool: each volume is a logical volume in one volume group, tagged as ours.

Owns the lvcreate/lvextend/lvchange/lvremove/lvs command lines and their parsing. Every command
goes through the injected ``CommandRunner``. Must not touch an LV that lacks the blockplane tag,
and must not create or remove the volume group itself.
"""

from __future__ import annotations

import builtins
import re
from pathlib import Path

from blockplane.errors import Conflict, InvalidInput, NotFound, OperationFailed
from blockplane.storage.backends.base import (
    Volume,
    check_requested_size,
    pool_lock,
    refuse_shrink,
    volume_exists,
    volume_not_found,
)
from blockplane.storage.capacity import PoolCapacity
from blockplane.storage.commands import CommandRunner, SubprocessRunner, check_result
from blockplane.storage.names import validate_volume_name

DEFAULT_TAG = "blockplane"
_VG_NAME = re.compile(r"[A-Za-z0-9_.+][A-Za-z0-9_.+-]{0,126}")
# LVM keeps these for its own hidden sub-volumes and refuses LV names that contain them.
_RESERVED = ("_cdata", "_cmeta", "_corig", "_cpool", "_cvol", "_imeta", "_iorig", "_mimage",
             "_mlog", "_pmspare", "_rimage", "_rmeta", "_tdata", "_tmeta", "_vdata", "_vorigin",
             "_wcorig")
_LVS = ["lvs", "--noheadings", "--units", "b", "--nosuffix", "--separator", "|",
        "-o", "lv_name,lv_size,lv_tags"]


class LvmBackend:
    kind = "lvm"
    is_block = True

    def __init__(
        self,
        volume_group: str,
        *,
        capacity: PoolCapacity | None = None,
        runner: CommandRunner | None = None,
        tag: str = DEFAULT_TAG,
    ) -> None:
        if _VG_NAME.fullmatch(volume_group) is None or volume_group in {".", ".."}:
            raise InvalidInput(f"volume group name {volume_group!r} is not valid",
                               code="pool.name_invalid")
        self.volume_group = volume_group
        self.capacity = capacity or PoolCapacity()
        self.tag = tag
        self._runner: CommandRunner = runner or SubprocessRunner()
        self._lock = pool_lock(f"lvm:{volume_group}")

    def path_of(self, name: str) -> Path:
        return Path("/dev") / self.volume_group / self._lv_name(name)

    def create(self, name: str, size_bytes: int) -> Volume:
        check_requested_size(size_bytes)
        lv = self._lv_name(name)
        with self._lock:
            managed = self._managed()
            if lv in managed:
                raise volume_exists(name, self._where)
            self.capacity.check_capacity(sum(managed.values()), size_bytes, volume=name,
                                         operation="create")
            self._change(["lvcreate", "--yes", "-n", lv, "-L", f"{size_bytes}b",
                          "--addtag", self.tag, self.volume_group], name)
            return Volume(name, self.path_of(name), self._size(lv))

    def grow(self, name: str, new_physical_bytes: int) -> int:
        """``lvextend`` (LVM rounds up to whole extents), refresh, and read the size back."""
        lv = self._lv_name(name)
        with self._lock:
            current = self._size(lv)
            if new_physical_bytes < current:
                raise refuse_shrink(name, current, new_physical_bytes)
            if new_physical_bytes == current:
                return current
            if self.capacity.limit_bytes is not None:
                self.capacity.check_capacity(self.used_bytes(), new_physical_bytes - current,
                                             volume=name)
            self._change(["lvextend", "-L", f"{new_physical_bytes}b", self._target(lv)], name)
            self._runner.run(["lvchange", "--refresh", self._target(lv)])
            return self._size(lv)

    def physical_size(self, name: str) -> int:
        return self._size(self._lv_name(name))

    def delete(self, name: str) -> None:
        lv = self._lv_name(name)
        with self._lock:
            self._size(lv)
            self._runner.run(["lvremove", "-y", self._target(lv)])

    def activate(self, name: str) -> Volume:
        lv = self._lv_name(name)
        size = self._size(lv)
        self._runner.run(["lvchange", "-ay", self._target(lv)])
        return Volume(name, self.path_of(name), size)

    def device_of(self, name: str) -> Path | None:
        """An LV is opened by its own path (``path_of``): no other path."""
        return None

    def list(self) -> builtins.list[str]:
        return sorted(self._managed())

    def used_bytes(self) -> int:
        return sum(self._managed().values())

    @property
    def _where(self) -> str:
        return f"volume group {self.volume_group}"

    def _target(self, lv: str) -> str:
        return f"{self.volume_group}/{lv}"

    def _lv_name(self, name: str) -> str:
        validate_volume_name(name)
        if name in {"snapshot", "pvmove"} or any(word in name for word in _RESERVED):
            raise InvalidInput(f"volume name {name!r} is reserved by LVM",
                               code="volume.name_invalid")
        return name

    def _managed(self) -> dict[str, int]:
        """Our LVs in the group, name to size in bytes."""
        return {name: size for name, size, tags in self._lvs(self.volume_group)
                if self.tag in tags}

    def _size(self, lv: str) -> int:
        rows = self._lvs(self._target(lv))
        if not rows:
            raise volume_not_found(lv, self._where)
        _, size, tags = rows[0]
        if self.tag not in tags:
            raise self._not_ours(lv)
        return size

    def _lvs(self, target: str) -> builtins.list[tuple[str, int, builtins.list[str]]]:
        result = self._runner.run([*_LVS, target], check=False)
        if not result.ok:
            if "not found" in result.stderr or "Failed to find" in result.stderr:
                if "/" in target:
                    return []
                raise NotFound(f"volume group {target} does not exist", code="pool.not_found")
            check_result(result)
        rows = []
        for line in result.stdout.splitlines():
            if not line.strip():
                continue
            name, size, tags = (field.strip() for field in line.split("|", 2))
            rows.append((name, _parse_bytes(size, line), [t for t in tags.split(",") if t]))
        return rows

    def _not_ours(self, lv: str) -> Conflict:
        return Conflict(
            f"logical volume {self._target(lv)} exists but lacks the {self.tag!r} tag: "
            "it was not created by blockplane, so it is left alone",
            code="volume.not_managed",
            volume=lv,
        )

    def _change(self, args: builtins.list[str], name: str) -> None:
        """Run an LV-changing command, turning LVM's known refusals into our error codes."""
        result = self._runner.run(args, check=False)
        if result.ok:
            return
        stderr = result.stderr
        if "insufficient free space" in stderr.lower():
            raise Conflict(
                f"volume group {self.volume_group} has no room for volume {name!r}: "
                f"{stderr.strip()}",
                code="pool.full",
                volume=name,
            )
        if "already exists" in stderr:
            raise volume_exists(name, self._where)
        check_result(result)


def _parse_bytes(text: str, line: str) -> int:
    try:
        return int(text.rstrip("Bb"))
    except ValueError as error:
        raise OperationFailed(f"cannot read an LV size from lvs output {line!r}",
                              code="storage.command_failed") from error
