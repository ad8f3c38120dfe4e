"""``GET /v1/reconcile``: the first (start-up) and the latest reconcile pass, step by step.

``confirmed`` is true once a pass has checked every IOThread plan and every thin volume against
libvirt and found them as the agent recorded them; ``checked_at`` is when that full check last
ran (at start, then at every full pass: every ``full_reconcile_interval_s``); ``full_passes`` and
``last_full`` tell the full passes from the quick ones (``runtime.reconcile_schedule``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter

if TYPE_CHECKING:
    from blockplane.runtime.agent import Agent


def reconcile_router(agent: Agent) -> APIRouter:
    router = APIRouter()

    @router.get("/reconcile")
    def reconcile() -> dict[str, Any]:
        confirmer = agent.observe.confirmer
        return {
            **agent.observe.reconcile.to_json(),
            "checked_at": confirmer.checked_at,
            "disagreements": confirmer.last_disagreements,
        }

    return router
