"""Failpoints: named spots where a test can make the agent die, to prove it recovers.

``BLOCKPLANE_FAILPOINTS=attach.after_iothreads,...`` in the agent's environment makes the agent
SIGKILL itself the first time it reaches each named spot. ``NAME=sleep:SECONDS`` instead holds
the agent there for that long (once), so that a test can break something else (restart the
libvirt daemon, kill QEMU) while an operation is known to be half-way; the agent logs
``failpoint NAME: sleeping`` when it gets there. ``failpoint_delay`` is the same hold for
asynchronous code, which must sleep without blocking its event loop (the agent's event dispatch:
``events.dispatch.BlockThresholdEvent=sleep:60`` holds every event from the first threshold
event on). Nothing is enabled by default; a production agent never sets the variable.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

ENVIRONMENT_VARIABLE = "BLOCKPLANE_FAILPOINTS"

log = logging.getLogger(__name__)

_slept: set[str] = set()
_slept_lock = threading.Lock()


def _enabled() -> dict[str, str]:
    """``{name: action}`` from the environment; the action is ``kill`` or ``sleep:SECONDS``."""
    enabled: dict[str, str] = {}
    for entry in os.environ.get(ENVIRONMENT_VARIABLE, "").split(","):
        name, _, action = entry.strip().partition("=")
        if name:
            enabled[name] = action or "kill"
    return enabled


def failpoint(name: str) -> None:
    action = _enabled().get(name)
    if action is None:
        return
    if action.startswith("sleep:"):
        seconds = failpoint_delay(name)
        if seconds:
            time.sleep(seconds)
            log.warning("failpoint %s: going on", name)
        return
    os.kill(os.getpid(), signal.SIGKILL)


def failpoint_delay(name: str) -> float:
    """Seconds to hold at ``name`` if it is set to ``sleep:SECONDS`` and has not held yet (the
    caller sleeps them); 0.0 otherwise. Only ``sleep`` actions apply here."""
    if ENVIRONMENT_VARIABLE not in os.environ:
        return 0.0
    action = _enabled().get(name)
    if action is None or not action.startswith("sleep:"):
        return 0.0
    with _slept_lock:
        if name in _slept:
            return 0.0
        _slept.add(name)
    seconds = float(action.removeprefix("sleep:"))
    log.warning("failpoint %s: sleeping %.1f s", name, seconds)
    return seconds
