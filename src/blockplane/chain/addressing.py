"""Which chain element a user means, what libvirt calls it, and whether a commit or pull fits.

Users write ``vda`` (the active top), ``vda[N]`` (N = position, 0 at the top, see ``model.chain``)
or an absolute path. libvirt is always handed ``target[libvirt_index]`` from ``libvirt_name_of``,
because libvirt's ``vda[N]`` is its node index, which is not the depth. Input is validated here,
before any side effect. Must not call libvirt; paths are compared as strings unless the caller
passes a ``canonical`` function (the service passes ``os.path.realpath``), so this module does no
I/O.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass

from blockplane.errors import Conflict, InvalidInput, NotFound
from blockplane.model.chain import Chain, ChainElement, libvirt_name

_NAME = re.compile(r"(?P<target>[a-z]+)(?:\[(?P<position>0|[1-9][0-9]*)\])?")


def resolve_element(
    chain: Chain, spec: str, *, canonical: Callable[[str], str] | None = None
) -> ChainElement:
    """The element ``spec`` names; InvalidInput if malformed, NotFound if not in this chain."""
    if "\x00" in spec:  # no path holds one, and os.path.realpath raises ValueError on it
        raise InvalidInput(
            f"{spec!r} names no chain element: it contains a NUL byte", code="chain.address_invalid"
        )
    if spec.startswith("/"):
        return _by_path(chain, spec, canonical)
    match = _NAME.fullmatch(spec)
    if match is None:
        raise InvalidInput(
            f"{spec!r} names no chain element: use {chain.target}, {chain.target}[N] (N = 0 at"
            " the top) or an absolute path",
            code="chain.address_invalid",
        )
    if match["target"] != chain.target:
        raise InvalidInput(
            f"{spec!r} is not on disk {chain.target}", code="chain.address_invalid"
        )
    digits = match["position"] or "0"
    # Length first: int() of thousands of digits raises, and no chain is a million deep.
    if len(digits) > 6 or int(digits) >= len(chain.elements):
        raise NotFound(
            f"{chain.target} has {len(chain.elements)} chain elements"
            f" ({chain.target} .. {chain.base.name}); there is no {spec}",
            code="chain.element_not_found",
        )
    return chain.elements[int(digits)]


def _by_path(chain: Chain, path: str, canonical: Callable[[str], str] | None) -> ChainElement:
    wanted = os.path.normpath(path)
    for element in chain.elements:
        if os.path.normpath(element.path) == wanted:
            return element
    if canonical is not None:
        wanted = canonical(path)
        for element in chain.elements:
            if canonical(element.path) == wanted:
                return element
    raise NotFound(f"{path} is not in the chain of {chain.target}", code="chain.element_not_found")


def libvirt_name_of(chain: Chain, element: ChainElement) -> str:
    """``target[libvirt_index]``, the only form blockplane passes to libvirt's block-job calls."""
    if element.libvirt_index is None:
        raise Conflict(
            f"{chain.target}'s chain is not live: libvirt numbers chain elements only while the VM"
            " runs",
            code="vm.not_running",
        )
    return libvirt_name(chain.target, element.libvirt_index)


@dataclass(frozen=True)
class CommitPlan:
    """``invalidated``: the images a successful commit drops from the chain (top .. above base)."""

    top: ChainElement
    base: ChainElement
    active: bool
    invalidated: tuple[ChainElement, ...]


@dataclass(frozen=True)
class PullPlan:
    """``base`` None pulls everything into the top; ``invalidated`` are dropped on success."""

    base: ChainElement | None
    invalidated: tuple[ChainElement, ...]


def validate_commit(
    chain: Chain, top: ChainElement | None = None, base: ChainElement | None = None
) -> CommitPlan:
    """Commit ``top`` (default: the active top) into ``base`` (default: the chain's base)."""
    _require_complete(chain)
    top = _member(chain, top) if top is not None else chain.top
    base = _member(chain, base) if base is not None else chain.base
    if base.position <= top.position:
        raise InvalidInput(
            f"commit base {base.name} must lie below top {top.name} in {chain.target}'s chain",
            code="chain.commit_invalid",
        )
    invalidated = chain.elements[top.position : base.position]
    return CommitPlan(top, base, active=top.position == 0, invalidated=invalidated)


def validate_pull(chain: Chain, base: ChainElement | None = None) -> PullPlan:
    """Pull the data above ``base`` (default: everything) into the active top."""
    _require_complete(chain)
    if base is None:
        if len(chain.elements) == 1:
            raise InvalidInput(
                f"{chain.target} has no backing image to pull from", code="chain.pull_invalid"
            )
        return PullPlan(None, chain.elements[1:])
    base = _member(chain, base)
    if base.position == 0:
        raise InvalidInput(
            f"pull base {base.name} must lie below the active top", code="chain.pull_invalid"
        )
    if base.position == 1:
        raise InvalidInput(
            f"{base.name} already backs the active top: there is nothing to pull",
            code="chain.pull_invalid",
        )
    return PullPlan(base, chain.elements[1 : base.position])


def _member(chain: Chain, element: ChainElement) -> ChainElement:
    if element not in chain.elements:
        raise NotFound(
            f"{element.name} ({element.path}) is not in {chain.target}'s current chain",
            code="chain.element_not_found",
        )
    return element


def _require_complete(chain: Chain) -> None:
    if not chain.complete:
        raise Conflict(
            f"{chain.target}'s full chain is unknown while the VM is not running",
            code="vm.not_running",
        )
