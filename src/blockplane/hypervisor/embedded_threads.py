"""What an embedded libvirt needs on every thread that may make QEMU read a disk's secret.

Why: libvirt's QEMU driver reads a disk's secret (a cephx key) on the calling thread, twice
relying on per-thread state that a daemon's RPC layer sets for each call and an embedded driver
(``qemu:///embed``) leaves unset (seen on libvirt 11.3, starting or hot-plugging an rbd disk with
``<auth>``):

- the caller's identity, elevated (``virIdentityElevateCurrent`` in
  ``qemuDomainSecretInfoSetupFromSecret``): unset, it fails with "No current identity to
  elevate". The process's own system identity (``virIdentityGetSystem``, what libvirtd itself
  runs as) is set as the thread's current one;
- the secret driver's connection (``virGetConnectSecret``, a thread-local cache): unset, libvirt
  opens ``secret:///system``, which the embedded secret driver refuses ("Missing URI parameter
  'root'"), and only one embedded secret driver may be open per process. The one connection
  ``hypervisor.secrets`` opened is set as the thread's (``virSetConnectSecret``).

These functions are libvirt's private ABI, exported by libvirt.so for its own driver modules;
where they are missing nothing is set, and rbd disks with cephx auth on an embedded libvirt fail
with libvirt's own message (a daemon, ``qemu:///system``, needs none of this). ``prepare_thread``
is cheap after its first run on a thread, so it runs before every call. Must be used only on
threads that call an embedded libvirt; must not change anything else.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
from typing import Any

log = logging.getLogger(__name__)

_state = threading.local()
_library: ctypes.CDLL | None = None
_loaded = False
_load_lock = threading.Lock()
#: The C pointer of the embedded secret connection (``register_secret_connection``).
_secret_connection: int | None = None


def _libvirt() -> ctypes.CDLL | None:
    global _library, _loaded
    with _load_lock:
        if not _loaded:
            _loaded = True
            try:
                library = ctypes.CDLL(ctypes.util.find_library("virt") or "libvirt.so.0")
                library.virIdentityGetSystem.restype = ctypes.c_void_p
                library.virIdentityGetCurrent.restype = ctypes.c_void_p
                library.virIdentitySetCurrent.argtypes = [ctypes.c_void_p]
                library.virIdentitySetCurrent.restype = ctypes.c_int
                library.virSetConnectSecret.argtypes = [ctypes.c_void_p]
                library.virSetConnectSecret.restype = ctypes.c_int
                _library = library
            except (OSError, AttributeError) as error:
                log.warning("libvirt's per-thread functions are not available (%s): rbd disks "
                            "with cephx auth will not start on an embedded libvirt", error)
        return _library


def register_secret_connection(connection: Any) -> None:
    """The embedded secret driver's connection (a libvirt-python ``virConnect``), or None."""
    global _secret_connection
    if connection is None:
        _secret_connection = None
        return
    get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
    get_pointer.restype = ctypes.c_void_p
    get_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
    _secret_connection = get_pointer(connection._o, b"virConnectPtr")


def prepare_thread() -> None:
    """Give this thread the process's identity and the embedded secret connection."""
    library = _libvirt()
    if library is None:
        return
    if not getattr(_state, "identity", False):
        if not library.virIdentityGetCurrent():
            identity = library.virIdentityGetSystem()
            if not identity or library.virIdentitySetCurrent(identity) != 0:
                log.warning("could not set libvirt's thread identity; rbd disks with cephx "
                            "auth may not start on this embedded libvirt")
                return
        _state.identity = True
    pointer = _secret_connection
    fresh = pointer is not None and getattr(_state, "secret", None) != pointer
    if fresh and library.virSetConnectSecret(pointer) == 0:
        _state.secret = pointer
