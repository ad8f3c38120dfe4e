"""A fake ``ThrottleDomain`` for the qos unit tests: libvirt's throttle rules, in memory.

It keeps a live and a persistent definition, renders them as domain XML with blockplane's own
XML builders (so the services parse what they would parse from libvirt), and behaves like
libvirt 11.3 where it matters: ``setThrottleGroup`` replaces the fields it is given,
``delThrottleGroup`` refuses a group a disk's filter uses, ``--live`` needs a running domain.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from blockplane.errors import HypervisorError
from blockplane.model.disk import DiskDevice
from blockplane.model.throttle import ThrottleGroup
from blockplane.model.throttle_limits import ThrottleLimits
from blockplane.xml.disk import disk_element, to_xml
from blockplane.xml.throttle import throttle_groups_element


@dataclass
class FakeDefinition:
    groups: dict[str, ThrottleLimits] = field(default_factory=dict)
    disks: dict[str, DiskDevice] = field(default_factory=dict)

    def xml(self, name: str) -> str:
        groups = [ThrottleGroup(n, limits) for n, limits in self.groups.items()]
        devices = "".join(to_xml(disk_element(disk)) for disk in self.disks.values())
        throttle = to_xml(throttle_groups_element(groups)) if groups else ""
        return f"<domain><name>{name}</name>{throttle}<devices>{devices}</devices></domain>"


@dataclass
class FakeDomain:
    vm: str = "web"
    running: bool = True
    persistent: bool = True
    live: FakeDefinition = field(default_factory=FakeDefinition)
    config: FakeDefinition = field(default_factory=FakeDefinition)
    capacity: dict[str, int] = field(default_factory=dict)
    calls: list[tuple[str, ...]] = field(default_factory=list)
    #: ``(method, definition)`` pairs that raise, to test rollbacks.
    fail_on: set[tuple[str, str]] = field(default_factory=set)
    #: A call to this domain left running past its deadline (the recovery waits for it).
    unresponsive: bool = False

    @property
    def name(self) -> str:
        return self.vm

    def is_active(self) -> bool:
        return self.running

    def is_persistent(self) -> bool:
        return self.persistent

    def xml(self, *, inactive: bool = False) -> str:
        definition = self.config if inactive or not self.running else self.live
        return definition.xml(self.vm)

    def add_group(self, name: str, limits: ThrottleLimits, *, live: bool = True) -> None:
        self.config.groups[name] = limits
        if live and self.running:
            self.live.groups[name] = limits

    def add_disk(self, target: str, chain: tuple[str, ...], *, live: bool = True) -> None:
        disk = DiskDevice(target, "virtio", f"/p/{target}", "file", "qcow2", throttle_groups=chain)
        self.config.disks[target] = disk
        if live and self.running:
            self.live.disks[target] = disk

    def _targets(self, live: bool, config: bool) -> list[tuple[str, FakeDefinition]]:
        if live and not self.running:
            raise HypervisorError("Requested operation is not valid: domain is not running")
        chosen = [("live", self.live)] if live else []
        return [*chosen, *([("config", self.config)] if config else [])]

    def set_throttle_group(
        self, group: str, params: dict[str, int], *, live: bool, config: bool
    ) -> None:
        for kind, definition in self._targets(live, config):
            self.calls.append(("set", group, kind))
            if ("set", kind) in self.fail_on:
                raise HypervisorError(f"injected failure setting {group} ({kind})")
            definition.groups[group] = ThrottleLimits.from_mapping(params)

    def del_throttle_group(self, group: str, *, live: bool, config: bool) -> None:
        for kind, definition in self._targets(live, config):
            self.calls.append(("del", group, kind))
            users = [t for t, d in definition.disks.items() if group in d.throttle_groups]
            if users:
                raise HypervisorError(f"throttle group '{group}' is still being used by disk")
            if group not in definition.groups:
                raise HypervisorError(f"object 'throttle-{group}' not found")
            del definition.groups[group]

    def set_block_iotune(
        self,
        target: str,
        params: dict[str, int],
        *,
        group_name: str | None,
        live: bool,
        config: bool,
    ) -> None:
        for kind, _definition in self._targets(live, config):
            self.calls.append(("iotune", target, kind))

    def block_info(self, target: str) -> tuple[int, int, int]:
        size = self.capacity[target]
        return size, size, size
