"""Which pool volume, if any, an image path some platform chose is.

Owns the rules that turn a disk's path into (pool, volume): a file directly in a dir pool's
directory, a ``.img`` file of a loop pool or the loop device attached to one (by the backing file
the kernel records), an LV of an lvm pool's volume group; and ``--pool-for PREFIX=POOL``, which
says that paths under PREFIX are POOL's volumes under another name (a bind mount, a symlink farm,
``/dev/disk/by-*``), checked by identity (same device and inode), never assumed. Reads the
filesystem and sysfs only; must not create, change or delete anything.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from blockplane.errors import InvalidInput
from blockplane.storage.backends.loop import BACKING_SUFFIX
from blockplane.storage.backends.loop_devices import sysfs_backing_file
from blockplane.storage.names import VOLUME_NAME
from blockplane.store.records import PoolRecord

BackingFileOf = Callable[[Path], str | None]


@dataclass(frozen=True)
class PoolFor:
    """``--pool-for PREFIX=POOL``."""

    prefix: str
    pool: str


@dataclass(frozen=True)
class Location:
    """Where a path lies: a volume of ``pool`` (``volume`` set), outside every pool (both None),
    or matched to a pool it is not a volume of (``refusal`` says why)."""

    pool: str | None = None
    volume: str | None = None
    refusal: str | None = None

    @property
    def foreign(self) -> bool:
        return self.pool is None and self.refusal is None


def parse_pool_for(items: Sequence[str], pools: Sequence[PoolRecord]) -> tuple[PoolFor, ...]:
    """``PREFIX=POOL`` options, checked: an absolute prefix and a known pool (exit 2 if not)."""
    known = {pool.name for pool in pools}
    parsed = []
    for item in items:
        prefix, sign, pool = item.rpartition("=")
        if not sign or not prefix or not pool:
            raise InvalidInput(f"--pool-for {item!r}: use PREFIX=POOL", code="adopt.invalid")
        if not os.path.isabs(prefix) or "\x00" in prefix:
            raise InvalidInput(f"--pool-for {item!r}: the prefix must be an absolute path",
                               code="adopt.invalid")
        if pool not in known:
            raise InvalidInput(f"--pool-for {item!r}: no pool named {pool!r}",
                               code="pool.not_found")
        parsed.append(PoolFor(prefix, pool))
    return tuple(parsed)


class VolumeLocator:
    def __init__(
        self,
        pools: Sequence[PoolRecord],
        pool_for: Sequence[PoolFor] = (),
        backing_file_of: BackingFileOf = sysfs_backing_file,
    ) -> None:
        self._pools = {pool.name: pool for pool in pools}
        # The longest prefix wins, so a narrower --pool-for overrides a wider one.
        self._pool_for = sorted(pool_for, key=lambda item: -len(item.prefix))
        self._backing_file_of = backing_file_of

    def locate(self, path: str) -> Location:
        for rule in self._pool_for:
            if path.startswith(rule.prefix):
                return self._by_rule(path, rule)
        for pool in sorted(self._pools.values(), key=lambda p: -len(p.path)):
            name = self._in_pool(path, pool)
            if name is not None:
                return self._named(path, pool, name)
        return Location()

    def _named(self, path: str, pool: PoolRecord, name: str) -> Location:
        if VOLUME_NAME.fullmatch(name) is None or ".." in name:
            return Location(pool.name, None,
                            f"{path} lies in pool {pool.name}, but {name!r} cannot name a "
                            "volume (letters, digits, '_', '.', '-')")
        return Location(pool.name, name)

    def _in_pool(self, path: str, pool: PoolRecord) -> str | None:
        if pool.type == "lvm":
            return _lv_name(path, pool.path)
        root = os.path.realpath(pool.path)
        real = os.path.realpath(path)
        if pool.type == "loop" and _is_block(real):
            backing = self._backing_file_of(Path(real))
            if backing is None:
                return None
            real = backing
        if os.path.dirname(real) != root:
            return None
        base = os.path.basename(real)
        if pool.type == "loop":
            return base.removesuffix(BACKING_SUFFIX) if base.endswith(BACKING_SUFFIX) else None
        return base

    def _by_rule(self, path: str, rule: PoolFor) -> Location:
        pool = self._pools[rule.pool]
        name = path[len(rule.prefix):].lstrip("/")
        if pool.type == "loop":
            name = name.removesuffix(BACKING_SUFFIX)
        mismatch = Location(
            pool.name, None,
            f"{path} matches --pool-for {rule.prefix}={rule.pool}, but it is not volume "
            f"{name!r} of pool {pool.name}",
        )
        if "/" in name or not name:
            return mismatch
        expected = self._volume_path(pool, name)
        actual = path
        if pool.type == "loop" and _is_block(os.path.realpath(path)):
            backing = self._backing_file_of(Path(os.path.realpath(path)))
            if backing is None:
                return mismatch
            actual = backing
        try:
            same = os.path.samefile(actual, expected)
        except OSError:
            same = False
        return self._named(path, pool, name) if same else mismatch

    @staticmethod
    def _volume_path(pool: PoolRecord, name: str) -> str:
        if pool.type == "lvm":
            return f"/dev/{pool.path.removeprefix('/dev/').strip('/')}/{name}"
        suffix = BACKING_SUFFIX if pool.type == "loop" else ""
        return os.path.join(os.path.realpath(pool.path), name + suffix)


def _lv_name(path: str, volume_group: str) -> str | None:
    group = volume_group.removeprefix("/dev/").strip("/")
    prefix = f"/dev/{group}/"
    if path.startswith(prefix) and "/" not in path[len(prefix):]:
        return path[len(prefix):]
    real = os.path.realpath(path)
    directory = Path(prefix)
    if not real.startswith("/dev/dm-") or not directory.is_dir():
        return None
    for entry in directory.iterdir():
        if os.path.realpath(entry) == real:
            return entry.name
    return None


def _is_block(path: str) -> bool:
    try:
        return Path(path).is_block_device()
    except OSError:
        return False
