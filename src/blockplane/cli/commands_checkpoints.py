"""``blockplane checkpoint list|delete``: the checkpoints (persistent dirty bitmaps) that backups
create as the bases of incrementals."""

from __future__ import annotations

import time

import click

from blockplane.chain.views import CheckpointDeleteResult, CheckpointView
from blockplane.cli.client import api_path
from blockplane.cli.context import CLIContext, json_option, pass_cli
from blockplane.cli.decode import fetch, fetch_list
from blockplane.cli.output import console, human_bytes, print_json, table


@click.group("checkpoint")
def checkpoint_group() -> None:
    """Backup checkpoints (the bases of incremental backups)."""


@checkpoint_group.command("list")
@click.argument("vm")
@json_option
@pass_cli
def checkpoint_list(context: CLIContext, vm: str, as_json: bool) -> None:
    """A VM's checkpoints, oldest first, with the bytes changed since each (VM running)."""
    checkpoints = fetch_list(context.client, CheckpointView, "GET",
                             api_path("vms", vm, "checkpoints"))
    if as_json:
        print_json(checkpoints)
        return
    rows = [{
        "name": c.name,
        "parent": c.parent,
        "created": _when(c.created_at),
        "disks": ", ".join(
            f"{d.target} ({human_bytes(d.dirty_bytes)} changed)"
            if d.dirty_bytes is not None else d.target
            for d in c.disks if d.bitmap is not None),
        "used_by_job": c.used_by_job,
    } for c in checkpoints]
    table(rows, [("name", "name"), ("parent", "parent"), ("created", "created"),
                 ("disks", "disks"), ("used_by_job", "used by job")],
          title=f"checkpoints of {vm}")


@checkpoint_group.command("delete")
@click.argument("vm")
@click.argument("name")
@json_option
@pass_cli
def checkpoint_delete(context: CLIContext, vm: str, name: str, as_json: bool) -> None:
    """Delete a checkpoint; its bitmaps merge into its parent's, so later incrementals stay
    exact."""
    result = fetch(context.client, CheckpointDeleteResult, "DELETE",
                   api_path("vms", vm, "checkpoints", name))
    if as_json:
        print_json(result)
    elif result.merged_into:
        console.print(f"checkpoint {name} of {vm} deleted; merged into {result.merged_into}")
    else:
        console.print(f"checkpoint {name} of {vm} deleted")


def _when(timestamp: int | None) -> str:
    if timestamp is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))
