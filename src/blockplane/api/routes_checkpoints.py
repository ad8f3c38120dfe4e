"""Checkpoint routes: ``/v1/vms/{vm}/checkpoints`` (list) and
``/v1/vms/{vm}/checkpoints/{checkpoint}`` (delete).

Handlers translate between JSON and ``CheckpointService``; they hold no policy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter

if TYPE_CHECKING:
    from blockplane.runtime.agent import Agent


def checkpoints_router(agent: Agent) -> APIRouter:
    router = APIRouter()
    checkpoints = agent.chain.checkpoints

    @router.get("/vms/{vm}/checkpoints")
    def list_checkpoints(vm: str) -> list[dict[str, Any]]:
        """The VM's checkpoints (one per backup), parents first, with the dirty bytes of each
        bitmap while the VM runs."""
        return checkpoints.list(vm)

    @router.delete("/vms/{vm}/checkpoints/{checkpoint}")
    def delete_checkpoint(vm: str, checkpoint: str) -> dict[str, Any]:
        """Delete a checkpoint; its bitmaps merge into its parent's (a broken one's metadata
        only goes: it has no bitmap left). 404
        ``checkpoint.not_found``; 409 ``job.busy`` while a job uses it, ``vm.not_running``
        while the VM is off."""
        return agent.backups.checkpoints.delete(vm, checkpoint)

    return router
