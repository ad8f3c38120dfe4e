"""Translation of libvirt's exceptions into blockplane's error tree."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import libvirt

from blockplane.errors import HypervisorError, NotFound

T = TypeVar("T")


def translate(error: libvirt.libvirtError, action: str) -> HypervisorError | NotFound:
    code = error.get_error_code()
    message = error.get_error_message() or str(error)
    if code == libvirt.VIR_ERR_NO_DOMAIN:
        return NotFound(f"{action}: no such VM ({message})", code="vm.not_found")
    return HypervisorError(f"{action}: {message}", libvirt_code=code)


@contextmanager
def libvirt_errors(action: str) -> Iterator[None]:
    try:
        yield
    except libvirt.libvirtError as error:
        raise translate(error, action) from error


def call(action: str, function: Callable[[], T]) -> T:
    with libvirt_errors(action):
        return function()
