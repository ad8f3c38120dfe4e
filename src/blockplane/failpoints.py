"""Failpoints: named spots where a test can make the agent die, to prove it recovers.

``BLOCKPLANE_FAILPOINTS=attach.after_iothreads,...`` in the agent's environment makes the agent
SIGKILL itself the first time it reaches each named spot. Nothing is enabled by default; a
production agent never sets the variable.
"""

from __future__ import annotations

import os
import signal

ENVIRONMENT_VARIABLE = "BLOCKPLANE_FAILPOINTS"


def _enabled() -> frozenset[str]:
    return frozenset(name for name in os.environ.get(ENVIRONMENT_VARIABLE, "").split(",") if name)


def failpoint(name: str) -> None:
    if name in _enabled():
        os.kill(os.getpid(), signal.SIGKILL)
