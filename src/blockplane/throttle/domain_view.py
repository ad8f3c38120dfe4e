"""What a domain's definitions say about throttling: groups, and each disk's filter chain.

Owns reading the live and the persistent definition of one domain into one view, and which
definitions a change touches (``affected``, virsh's defaults). It changes nothing; the narrow
``ThrottleDomain`` protocol is the part of ``DomainHandle`` the throttle services use, so that tests
can fake it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from blockplane.errors import Conflict, InvalidInput
from blockplane.model.throttle_limits import ThrottleLimits
from blockplane.throttle.views import DiskUse
from blockplane.xml.disk import parse_disks
from blockplane.xml.throttle import parse_throttle_groups

DefinitionKind = Literal["live", "config"]


class ThrottleDomain(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def unresponsive(self) -> bool: ...

    def is_active(self) -> bool: ...

    def is_persistent(self) -> bool: ...

    def xml(self, *, inactive: bool = False) -> str: ...

    def set_throttle_group(
        self, group: str, params: dict[str, int], *, live: bool, config: bool
    ) -> None: ...

    def del_throttle_group(self, group: str, *, live: bool, config: bool) -> None: ...

    def set_block_iotune(
        self,
        target: str,
        params: dict[str, int],
        *,
        group_name: str | None,
        live: bool,
        config: bool,
    ) -> None: ...

    def block_info(self, target: str) -> tuple[int, int, int]: ...


@dataclass(frozen=True)
class Definition:
    kind: DefinitionKind
    groups: dict[str, ThrottleLimits]
    #: Per disk target, its throttle filter chain (first filter first); disks without one omitted.
    chains: dict[str, tuple[str, ...]]

    def users(self, group: str) -> list[DiskUse]:
        return [
            DiskUse(target, chain.index(group), chain)
            for target, chain in sorted(self.chains.items())
            if group in chain
        ]


@dataclass(frozen=True)
class ThrottleView:
    running: bool
    persistent: bool
    live: Definition | None
    config: Definition | None

    @property
    def current(self) -> Definition:
        """The definition virsh shows: live when running, else the persistent one."""
        definition = self.live if self.running else self.config
        assert definition is not None
        return definition

    def definitions(self) -> list[Definition]:
        return [d for d in (self.live, self.config) if d is not None]

    def get(self, kind: DefinitionKind) -> Definition:
        definition = self.live if kind == "live" else self.config
        assert definition is not None, kind
        return definition

    def users(self, group: str) -> list[DiskUse]:
        """Disks using ``group`` in any definition (the current one's view of each disk first)."""
        seen: dict[str, DiskUse] = {}
        for definition in (self.current, *self.definitions()):
            for use in definition.users(group):
                seen.setdefault(use.target, use)
        return [seen[target] for target in sorted(seen)]

    def group_names(self) -> list[str]:
        names: dict[str, None] = {}
        for definition in (self.current, *self.definitions()):
            names.update(dict.fromkeys(definition.groups))
        return list(names)


def read_view(domain: ThrottleDomain) -> ThrottleView:
    running = domain.is_active()
    persistent = domain.is_persistent()
    return view_of(
        running,
        persistent,
        domain.xml() if running else None,
        domain.xml(inactive=True) if persistent else None,
    )


def view_of(
    running: bool, persistent: bool, live_xml: str | None, config_xml: str | None
) -> ThrottleView:
    """The view of definitions already read (``live_xml`` when running, ``config_xml`` when
    persistent); for planning without a domain handle."""
    live = _definition("live", live_xml) if running and live_xml is not None else None
    config = _definition("config", config_xml) if persistent and config_xml is not None else None
    return ThrottleView(running, persistent, live, config)


def affected(
    view: ThrottleView, vm: str, live: bool | None, config: bool | None
) -> tuple[DefinitionKind, ...]:
    """The definitions a change touches.

    Neither flag: the live definition when the VM runs and the persistent one when it has one
    (so a group set on a running VM survives a restart, and disks, which blockplane always
    attaches persistently, can use it). Otherwise exactly what was asked, refused where it
    cannot be done.
    """
    if live is None and config is None:
        live, config = view.running, view.persistent
    elif not live and not config:
        raise InvalidInput(
            "nothing to change: give --live, --config, or neither for the default",
            code="throttle.no_target",
        )
    if live and not view.running:
        raise Conflict(
            f"VM {vm} is not running, so it has no live definition to change; "
            "use --config (or neither flag) to change the persistent definition",
            code="vm.not_running",
        )
    if config and not view.persistent:
        raise Conflict(
            f"VM {vm} is transient: it has no persistent definition (--config)",
            code="vm.transient",
        )
    kinds: list[DefinitionKind] = []
    if live:
        kinds.append("live")
    if config:
        kinds.append("config")
    return tuple(kinds)


def _definition(kind: DefinitionKind, domain_xml: str) -> Definition:
    groups = {group.name: group.limits for group in parse_throttle_groups(domain_xml)}
    disks = parse_disks(domain_xml)
    chains = {disk.target: disk.throttle_groups for disk in disks if disk.throttle_groups}
    return Definition(kind, groups, chains)
