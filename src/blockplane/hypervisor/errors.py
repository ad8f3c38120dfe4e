"""Translation of libvirt's exceptions into blockplane's error tree."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import libvirt

from blockplane.errors import Conflict, DeadlineExceeded, HypervisorError, NotFound

T = TypeVar("T")
#: libvirt's words (qemu_domain_address.c) when a hotplug finds every PCI slot taken.
NO_FREE_SLOT = "No more available PCI slots"


#: libvirt gave up waiting on the guest agent, or on the domain's job another call holds.
AGENT_TIMEOUTS = frozenset({
    libvirt.VIR_ERR_AGENT_UNRESPONSIVE, libvirt.VIR_ERR_AGENT_COMMAND_TIMEOUT,
    libvirt.VIR_ERR_AGENT_UNSYNCED,
})


def translate(
    error: libvirt.libvirtError, action: str
) -> HypervisorError | NotFound | Conflict | DeadlineExceeded:
    code = error.get_error_code()
    message = error.get_error_message() or str(error)
    if code in AGENT_TIMEOUTS:
        return DeadlineExceeded(
            f"{action}: the guest agent did not answer in time ({message})",
            code="timeout.guest_agent", libvirt_code=code,
        )
    if code == libvirt.VIR_ERR_OPERATION_TIMEOUT:
        return DeadlineExceeded(
            f"{action}: libvirt timed out waiting for the VM's job ({message})",
            code="timeout.hypervisor", libvirt_code=code,
        )
    if code == libvirt.VIR_ERR_CHECKPOINT_INCONSISTENT:
        return Conflict(f"{action}: {message}", code="checkpoint.inconsistent")
    if code == libvirt.VIR_ERR_NO_DOMAIN:
        return NotFound(f"{action}: no such VM ({message})", code="vm.not_found")
    if NO_FREE_SLOT in message:
        # The VM is full, not the hypervisor broken: refused like any other conflict.
        return Conflict(
            f"{action}: the VM has no free PCI slot left ({message}); detach a disk first",
            code="vm.no_free_slot",
        )
    if error.get_error_domain() == libvirt.VIR_FROM_RPC:
        return HypervisorError(
            f"{action}: the connection to libvirt was lost ({message}); the agent reconnects "
            "on its own, then finishes or undoes this change; check, then retry if needed",
            code="hypervisor.disconnected",
            libvirt_code=code,
        )
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
