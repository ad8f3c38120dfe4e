"""``blockplane pool create|list|show|delete``."""

from __future__ import annotations

import os

import click

from blockplane.cli.client import api_path
from blockplane.cli.context import CLIContext, json_option, pass_cli
from blockplane.cli.decode import fetch, fetch_list
from blockplane.cli.output import console, human_bytes, key_values, plain, print_json, table
from blockplane.storage.views import PoolDeleteResult, PoolView


@click.group("pool")
def pool_group() -> None:
    """Storage pools (dir, loop, lvm, rbd)."""


@pool_group.command("create")
@click.argument("name")
@click.option("--type", "pool_type", type=click.Choice(["loop", "lvm", "dir", "rbd"]),
              required=True)
@click.option("--path", default=None, help="Directory (dir, loop) or volume group (lvm).")
@click.option("--ceph-conf", default=None, help="rbd: the cluster's ceph.conf (absolute path).")
@click.option("--rbd-pool", default=None, help="rbd: the RADOS pool that holds the images.")
@click.option("--ceph-user", default=None, help="rbd: the cephx user, without client. "
              "(default admin).")
@click.option("--ceph-keyring", default=None,
              help="rbd: the user's keyring (default: where the ceph.conf says).")
@click.option("--secret-uuid", default=None, help="rbd: the libvirt secret's UUID (default: "
              "derived from the cluster's fsid and the user, the same on every host).")
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
    ceph_conf: str | None,
    rbd_pool: str | None,
    ceph_user: str | None,
    ceph_keyring: str | None,
    secret_uuid: str | None,
    as_json: bool,
) -> None:
    """Create a pool (an rbd pool is recorded only once its cluster took a test write)."""
    body: dict[str, object] = {
        "name": name,
        "type": pool_type,
        "path": path,
        "capacity": capacity,
        "chunk": chunk,
        "utilization": utilization,
    }
    rbd = {"ceph_conf": _absolute(ceph_conf), "rbd_pool": rbd_pool, "ceph_user": ceph_user,
           "ceph_keyring": _absolute(ceph_keyring), "secret_uuid": secret_uuid}
    body.update({key: value for key, value in rbd.items() if value is not None})
    pool = fetch(context.client, PoolView, "POST", "/v1/pools", body)
    if as_json:
        print_json(pool)
    else:
        console.print(f"pool {pool.name} ({pool.type}) created at {pool.path}")


def _absolute(path: str | None) -> str | None:
    """A path the agent (on this host, another working directory) can open."""
    return os.path.abspath(path) if path else None


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
        return
    shown = plain(pool)
    rbd = shown.pop("rbd", None)
    key_values(shown, title=f"pool {name}")
    if pool.rbd is not None and rbd is not None:
        health, cluster = pool.rbd.health, pool.rbd.cluster
        del rbd["health"], rbd["cluster"]
        rbd["monitors"] = ", ".join(f"{m.host}:{m.port}" if m.port else m.host
                                    for m in pool.rbd.monitors)
        key_values(rbd, title="ceph")
        state = {True: "healthy", False: "UNHEALTHY", None: "not probed yet"}[health.healthy]
        console.print(f"cluster: {state}: {health.reason}")
        if cluster is not None:
            console.print(f"provisioned {human_bytes(cluster.provisioned_bytes)}, used "
                          f"{human_bytes(cluster.used_bytes)}, may still take "
                          f"{human_bytes(cluster.max_avail_bytes)} "
                          f"({cluster.capacity_reason})")


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
