"""``blockplane pool create|list|show|delete``."""

from __future__ import annotations

import click

from blockplane.cli.client import api_path
from blockplane.cli.context import CLIContext, json_option, pass_cli
from blockplane.cli.decode import fetch, fetch_list
from blockplane.cli.output import console, human_bytes, key_values, plain, print_json, table
from blockplane.storage.views import PoolDeleteResult, PoolView


@click.group("pool")
def pool_group() -> None:
    """Storage pools (dir, loop, lvm)."""


@pool_group.command("create")
@click.argument("name")
@click.option("--type", "pool_type", type=click.Choice(["loop", "lvm", "dir"]), required=True)
@click.option("--path", default=None, help="Directory (dir, loop) or volume group (lvm).")
@click.option("--capacity", default=None, help="Limit on the pool's physical use, e.g. 20G.")
@click.option("--chunk", default=None, help="Thin growth step (default 2.5G).")
@click.option(
    "--utilization",
    type=int,
    default=None,
    help="Percent of a chunk used before growing (default 20).",
)
@json_option
@pass_cli
def pool_create(
    context: CLIContext,
    name: str,
    pool_type: str,
    path: str | None,
    capacity: str | None,
    chunk: str | None,
    utilization: int | None,
    as_json: bool,
) -> None:
    """Create a pool."""
    pool = fetch(
        context.client,
        PoolView,
        "POST",
        "/v1/pools",
        {
            "name": name,
            "type": pool_type,
            "path": path,
            "capacity": capacity,
            "chunk": chunk,
            "utilization": utilization,
        },
    )
    if as_json:
        print_json(pool)
    else:
        console.print(f"pool {pool.name} ({pool.type}) created at {pool.path}")


@pool_group.command("list")
@json_option
@pass_cli
def pool_list(context: CLIContext, as_json: bool) -> None:
    """List pools."""
    pools = fetch_list(context.client, PoolView, "GET", "/v1/pools")
    if as_json:
        print_json(pools)
        return
    rows = [
        {**plain(pool), "used": human_bytes(pool.used_bytes),
         "capacity": human_bytes(pool.capacity_bytes), "chunk": human_bytes(pool.chunk_bytes)}
        for pool in pools
    ]
    table(
        rows,
        [
            ("name", "name"),
            ("type", "type"),
            ("path", "path"),
            ("volumes", "volumes"),
            ("used", "used"),
            ("capacity", "capacity"),
            ("chunk", "chunk"),
            ("utilization_pct", "util %"),
        ],
    )


@pool_group.command("show")
@click.argument("name")
@json_option
@pass_cli
def pool_show(context: CLIContext, name: str, as_json: bool) -> None:
    """Show one pool."""
    pool = fetch(context.client, PoolView, "GET", api_path("pools", name))
    if as_json:
        print_json(pool)
    else:
        key_values(pool, title=f"pool {name}")


@pool_group.command("set")
@click.argument("name")
@click.option("--capacity", required=True,
              help="New limit on the pool's physical use, e.g. 40G; 'none' removes it.")
@json_option
@pass_cli
def pool_set(context: CLIContext, name: str, capacity: str, as_json: bool) -> None:
    """Change a pool's capacity (thin extends it refused are retried)."""
    value = None if capacity.lower() == "none" else capacity
    pool = fetch(context.client, PoolView, "PATCH", api_path("pools", name), {"capacity": value})
    if as_json:
        print_json(pool)
    else:
        console.print(f"pool {name} capacity set to {human_bytes(pool.capacity_bytes)}")


@pool_group.command("delete")
@click.argument("name")
@json_option
@pass_cli
def pool_delete(context: CLIContext, name: str, as_json: bool) -> None:
    """Delete an empty pool."""
    result = fetch(context.client, PoolDeleteResult, "DELETE", api_path("pools", name))
    if as_json:
        print_json(result)
    else:
        console.print(f"pool {name} deleted")
