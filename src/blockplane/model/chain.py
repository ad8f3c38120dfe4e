"""A disk's backing chain as blockplane shows it: elements top to base, and any block-job mirror.

Naming convention (the one users see, from SPEC "vda[0] top ... vda[n] base"):

- ``position`` is the depth in the chain: 0 is the active top, 1 its backing image, and so on down
  to the base. Users name elements by position: ``vda`` (= ``vda[0]``, the top), ``vda[1]``, ...,
  or by path. These names are stable for a given chain and read like ``virsh domblklist``'s order.
- ``libvirt_index`` is libvirt's own node index: the ``index`` attribute on the live XML's
  ``<source>`` (top) and ``<backingStore>`` elements. libvirt numbers nodes per *domain*, not per
  disk (vdb may hold 1 and vda's top 2), numbers afresh at each VM start, keeps an element's number
  while it stays in the chain, and gives each new overlay or copy target a fresh, larger number. So
  it does not tell depth: a snapshot of the chain 2, 3, 4 gives 5, 2, 3, 4. It is what libvirt's
  ``vda[N]`` means (``libvirt_name``, ``parse_libvirt_name``; bulk stats number their nodes the
  same way), so every libvirt call is given ``target[libvirt_index]`` (see
  ``chain.addressing.libvirt_name_of``), never the positional name (``element_name``), and a chain
  read before a restart must not be used to address libvirt after it.
- Inactive XML carries no ``index`` attributes (``libvirt_index`` is None) and may show only part
  of the chain (``complete`` is False).

Sizes are not in the domain XML; the parser leaves them None and a caller that measured them
(``qemu-img info``, block stats) fills them with ``Chain.with_sizes``.
Must not parse XML, call libvirt or touch the filesystem.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from blockplane.model.disk import SourceKind

_LIBVIRT_NAME = re.compile(r"(?P<target>[a-z]+)\[(?P<index>[0-9]+)\]")


@dataclass(frozen=True)
class ChainElement:
    position: int
    libvirt_index: int | None
    name: str
    path: str
    format: str | None
    backing_format: str | None
    source_kind: SourceKind
    virtual_bytes: int | None = None
    allocation_bytes: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "position": self.position,
            "libvirt_index": self.libvirt_index,
            "path": self.path,
            "format": self.format,
            "backing_format": self.backing_format,
            "source_kind": self.source_kind,
            "virtual_bytes": self.virtual_bytes,
            "allocation_bytes": self.allocation_bytes,
        }


@dataclass(frozen=True)
class Mirror:
    """The ``<mirror>`` of a copy or active-commit job: where the data is going.

    ``ready`` is libvirt's attribute as written: None while syncing, ``"yes"`` once the job can
    pivot, ``"pivot"`` or ``"abort"`` while one of those is under way.
    """

    job: str
    path: str | None
    format: str | None
    ready: str | None
    libvirt_index: int | None

    @property
    def is_ready(self) -> bool:
        return self.ready == "yes"

    def to_json(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "path": self.path,
            "format": self.format,
            "ready": self.ready,
            "libvirt_index": self.libvirt_index,
        }


@dataclass(frozen=True)
class Chain:
    """``elements`` run from the active top (position 0) to the base."""

    target: str
    elements: tuple[ChainElement, ...]
    complete: bool = True
    mirror: Mirror | None = None

    def __post_init__(self) -> None:
        if not self.elements:
            raise ValueError("a chain has at least its active element")
        if [e.position for e in self.elements] != list(range(len(self.elements))):
            raise ValueError("chain elements must be ordered by position from 0")

    @property
    def top(self) -> ChainElement:
        return self.elements[0]

    @property
    def base(self) -> ChainElement:
        return self.elements[-1]

    @property
    def live(self) -> bool:
        """True when libvirt numbered every element, i.e. this came from a running domain."""
        return all(e.libvirt_index is not None for e in self.elements)

    def paths(self) -> tuple[str, ...]:
        return tuple(e.path for e in self.elements)

    def with_sizes(self, sizes: Mapping[str, tuple[int | None, int | None]]) -> Chain:
        """A copy with (virtual, allocation) bytes filled in per path; other elements unchanged."""
        elements = tuple(
            replace(e, virtual_bytes=sizes[e.path][0], allocation_bytes=sizes[e.path][1])
            if e.path in sizes
            else e
            for e in self.elements
        )
        return replace(self, elements=elements)

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "complete": self.complete,
            "elements": [e.to_json() for e in self.elements],
            "mirror": self.mirror.to_json() if self.mirror else None,
        }


def element_name(target: str, position: int) -> str:
    """The user-facing name: the bare target for the top, ``target[position]`` below it."""
    return target if position == 0 else f"{target}[{position}]"


def libvirt_name(target: str, libvirt_index: int) -> str:
    """libvirt's name of a chain node: ``target[libvirt_index]``, never a position."""
    return f"{target}[{libvirt_index}]"


def parse_libvirt_name(name: str) -> tuple[str, int | None]:
    """libvirt's ``"vda[3]"`` -> ``("vda", 3)``; ``"vda"`` -> ``("vda", None)``."""
    match = _LIBVIRT_NAME.fullmatch(name)
    if match is None:
        return name, None
    return match["target"], int(match["index"])
