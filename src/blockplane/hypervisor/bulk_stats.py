"""Reading libvirt's bulk block stats (``block.N.*``) as chain elements, and chain target names.

Pure parsing of the dict that ``virConnectGetAllDomainStats`` returns for one domain, with
backing chain elements included: each ``block.N`` is one element, named by its disk target
(``block.N.name``) and its chain index (``block.N.backingIndex``). Owns ``vda[3]`` parsing too.
Must not call libvirt (``Hypervisor.bulk_stats`` makes the call) or decide anything.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class BlockStats:
    """One volume's ``block.N.allocation``, ``block.N.physical`` and ``block.N.threshold``
    (None when absent: never armed, or already fired)."""

    allocation: int
    physical: int
    threshold: int | None = None


_INDEXED = re.compile(r"(?P<name>[a-z]+)\[(?P<index>[0-9]+)\]")


@dataclass(frozen=True)
class ChainElement:
    name: str
    index: int | None
    path: str
    stats: BlockStats

    @property
    def indexed_name(self) -> str:
        """``vda[1]``: the name thresholds are armed on; the bare name if libvirt gave no index."""
        return self.name if self.index is None else indexed(self.name, self.index)


def indexed(name: str, index: int) -> str:
    return f"{name}[{index}]"


def split_target(target: str) -> tuple[str, int | None]:
    """``"vda[3]"`` -> ``("vda", 3)``; ``"vda"`` -> ``("vda", None)``."""
    match = _INDEXED.fullmatch(target)
    if match is None:
        return target, None
    return match["name"], int(match["index"])


def chain_elements(stats: Mapping[str, Any]) -> list[ChainElement]:
    """Every ``block.N`` of one domain's stats, in libvirt's order (top of each disk first)."""
    elements = []
    for number in range(_int(stats.get("block.count"), 0)):
        prefix = f"block.{number}."
        name = stats.get(prefix + "name")
        if not isinstance(name, str):
            continue
        index = stats.get(prefix + "backingIndex")
        threshold = stats.get(prefix + "threshold")
        elements.append(
            ChainElement(
                name=name,
                index=index if isinstance(index, int) else None,
                path=str(stats.get(prefix + "path", "")),
                stats=BlockStats(
                    allocation=_int(stats.get(prefix + "allocation"), 0),
                    physical=_int(stats.get(prefix + "physical"), 0),
                    threshold=threshold if isinstance(threshold, int) and threshold > 0 else None,
                ),
            )
        )
    return elements


def find_element(
    elements: Iterable[ChainElement], target: str, path: str, index: int | None = None
) -> ChainElement | None:
    """The element of disk ``target`` holding ``path``; by ``index`` when the path is unknown."""
    candidates = [element for element in elements if element.name == target]
    for element in candidates:
        if path and element.path == path:
            return element
    if index is not None:
        for element in candidates:
            if element.index == index:
                return element
    return None


def domain_state(stats: Mapping[str, Any]) -> tuple[int, int] | None:
    """``(state.state, state.reason)`` as libvirt's numbers, if the stats carry them."""
    state, reason = stats.get("state.state"), stats.get("state.reason")
    if isinstance(state, int) and isinstance(reason, int):
        return state, reason
    return None


def _int(value: object, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default
