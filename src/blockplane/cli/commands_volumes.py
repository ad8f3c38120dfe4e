"""``blockplane volume list|delete``: a pool's volumes, and deleting one nothing uses (such as
the point-in-time copy a job aborted after READY leaves)."""

from __future__ import annotations

import click

from blockplane.cli.client import api_path
from blockplane.cli.context import CLIContext, json_option, pass_cli
from blockplane.cli.decode import fetch, fetch_list
from blockplane.cli.output import console, human_bytes, plain, print_json, table
from blockplane.storage.views import VolumeDeleteResult, VolumeView


@click.group("volume")
def volume_group() -> None:
    """Volumes of a pool."""


@volume_group.command("list")
@click.argument("pool")
@json_option
@pass_cli
def volume_list(context: CLIContext, pool: str, as_json: bool) -> None:
    """A pool's volumes and who uses each (disks, backing chains, jobs)."""
    volumes = fetch_list(context.client, VolumeView, "GET", api_path("pools", pool, "volumes"))
    if as_json:
        print_json(volumes)
        return
    rows = [{**plain(v), "virtual": human_bytes(v.virtual_bytes),
             "physical": human_bytes(v.physical_bytes),
             "users": ", ".join(v.used_by) or "-"} for v in volumes]
    table(rows, [("name", "name"), ("path", "path"), ("format", "format"),
                 ("virtual", "virtual"), ("physical", "physical"), ("thin", "thin"),
                 ("users", "used by")], title=f"volumes of {pool}")


@volume_group.command("delete")
@click.argument("pool")
@click.argument("name")
@json_option
@pass_cli
def volume_delete(context: CLIContext, pool: str, name: str, as_json: bool) -> None:
    """Delete a volume nothing uses and free its space."""
    result = fetch(context.client, VolumeDeleteResult, "DELETE",
                   api_path("pools", pool, "volumes", name))
    if as_json:
        print_json(result)
    else:
        console.print(f"volume {name} of pool {pool} deleted"
                      f" ({human_bytes(result.freed_bytes)} freed)")
