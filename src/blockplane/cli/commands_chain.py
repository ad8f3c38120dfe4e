"""``blockplane chain``, ``snapshot create|list``, ``commit``, ``pull`` and ``copy``
(``backup`` is in ``commands_backup``).

Chain elements are named ``vda`` (the active top), ``vda[N]`` (N = depth, 0 at the top) or by
path. Job commands print the new job (``--json``) and, with ``--wait``, follow it to its end.
"""

from __future__ import annotations

from typing import Any

import click

from blockplane.chain.jobs.views import JobView
from blockplane.chain.views import ChainView, SnapshotCreated, SnapshotView
from blockplane.cli.client import api_path
from blockplane.cli.context import CLIContext, json_option, pass_cli
from blockplane.cli.decode import decode, fetch, fetch_list
from blockplane.cli.job_wait import wait_for_job
from blockplane.cli.output import console, human_bytes, plain, print_json, table


def bandwidth_option(function: Any) -> Any:
    return click.option("--bandwidth", metavar="BPS",
                        help="Bytes per second (or a size such as 8M); default unlimited.")(
        function)


def wait_option(function: Any) -> Any:
    return click.option("--wait", is_flag=True,
                        help="Follow the job until it ends (progress bar or JSON lines).")(
        function)


@click.command("chain")
@click.argument("vm")
@click.argument("target")
@json_option
@pass_cli
def chain_command(context: CLIContext, vm: str, target: str, as_json: bool) -> None:
    """A disk's backing chain: vda (top) ... vda[N] (base), with sizes."""
    chain = fetch(context.client, ChainView, "GET", api_path("vms", vm, "disks", target, "chain"))
    if as_json:
        print_json(chain)
        return
    rows = [{**plain(e), "virtual_h": human_bytes(e.virtual_bytes),
             "allocation_h": human_bytes(e.allocation_bytes)} for e in chain.elements]
    table(rows, [("name", "element"), ("libvirt_index", "libvirt index"), ("path", "path"),
                 ("format", "format"), ("virtual_h", "virtual"),
                 ("allocation_h", "allocation"), ("backing_format", "backing format")],
          title=f"{vm}/{target}")
    if chain.mirror is not None:
        console.print(f"mirror: {plain(chain.mirror)}")
    for snapshot in chain.rbd_snapshots or ():
        console.print(f"RBD snapshot {snapshot.name} ({snapshot.timestamp}): {snapshot.path}")


@click.group("snapshot")
def snapshot_group() -> None:
    """Disk-only snapshots: qcow2 overlays on local pools, RBD snapshots on rbd pools."""


@snapshot_group.command("create")
@click.argument("vm")
@click.option("--name", help="Snapshot name (default snap-<date>-<time>).")
@click.option("--disk", "disks", multiple=True, metavar="TARGET",
              help="Disk to snapshot (repeatable; default every managed disk).")
@click.option("--quiesce", is_flag=True, help="Freeze guest filesystems (needs the guest agent).")
@json_option
@pass_cli
def snapshot_create(context: CLIContext, vm: str, name: str | None, disks: tuple[str, ...],
                    quiesce: bool, as_json: bool) -> None:
    """Take an atomic external snapshot: a new qcow2 overlay per disk, in the disk's pool."""
    snapshot = fetch(context.client, SnapshotCreated, "POST", api_path("vms", vm, "snapshots"),
                     {"name": name, "disks": list(disks), "quiesce": quiesce})
    if as_json:
        print_json(snapshot)
        return
    overlays = ", ".join(f"{d.target} -> {d.path}" for d in snapshot.disks)
    console.print(f"snapshot {snapshot.name} of {vm} taken in {snapshot.seconds} s:"
                  f" {overlays}")


@snapshot_group.command("list")
@click.argument("vm")
@json_option
@pass_cli
def snapshot_list(context: CLIContext, vm: str, as_json: bool) -> None:
    """Snapshots of a VM and whether each overlay is still in its chain."""
    snapshots = fetch_list(context.client, SnapshotView, "GET", api_path("vms", vm, "snapshots"))
    if as_json:
        print_json(snapshots)
        return
    rows = [{"name": s.name, "state": s.state, "quiesced": s.quiesced,
             "disks": ", ".join(f"{d.target} ({d.status})" for d in s.disks)}
            for s in snapshots]
    table(rows, [("name", "name"), ("state", "state"), ("quiesced", "quiesced"),
                 ("disks", "disks")], title=f"snapshots of {vm}")


def _started(context: CLIContext, answer: Any, as_json: bool, wait: bool) -> None:
    job = decode(JobView, answer)
    if wait:
        raise click.exceptions.Exit(wait_for_job(context.client, job))
    if as_json:
        print_json(job)
    else:
        console.print(f"job {job.id}: {job.kind} on {job.vm}/{job.target} ({job.phase})")


@click.command("commit")
@click.argument("vm")
@click.argument("target")
@click.option("--top", help="Top element to commit (default: the active top).")
@click.option("--base", help="Element to commit into (default: the chain's base).")
@click.option("--pivot", is_flag=True, help="Active commit: pivot to the base once READY.")
@bandwidth_option
@wait_option
@json_option
@pass_cli
def commit_command(context: CLIContext, vm: str, target: str, top: str | None,
                   base: str | None, pivot: bool, bandwidth: str | None, wait: bool,
                   as_json: bool) -> None:
    """Commit (merge) the data of top .. above base into base."""
    job = context.client.request("POST", api_path("vms", vm, "disks", target, "commit"),
                                 {"top": top, "base": base, "pivot": pivot,
                                  "bandwidth": bandwidth})
    _started(context, job, as_json, wait)


@click.command("pull")
@click.argument("vm")
@click.argument("target")
@click.option("--base", help="Keep this element and what is below it (default: pull all).")
@bandwidth_option
@wait_option
@json_option
@pass_cli
def pull_command(context: CLIContext, vm: str, target: str, base: str | None,
                 bandwidth: str | None, wait: bool, as_json: bool) -> None:
    """Stream backing data into the active top."""
    job = context.client.request("POST", api_path("vms", vm, "disks", target, "pull"),
                                 {"base": base, "bandwidth": bandwidth})
    _started(context, job, as_json, wait)


@click.command("copy")
@click.argument("vm")
@click.argument("target")
@click.option("--dest", help="Destination path, directly inside a dir pool.")
@click.option("--pool", help="Destination pool (a new volume is made there).")
@click.option("--shallow", is_flag=True, help="Copy the top only; keep its backing chain.")
@click.option("--sync-writes", is_flag=True, help="Mirror guest writes synchronously.")
@click.option("--pivot", is_flag=True, help="Switch the disk to the copy once READY.")
@bandwidth_option
@wait_option
@json_option
@pass_cli
def copy_command(context: CLIContext, vm: str, target: str, dest: str | None, pool: str | None,
                 shallow: bool, sync_writes: bool, pivot: bool, bandwidth: str | None,
                 wait: bool, as_json: bool) -> None:
    """Copy a disk to a new image (storage migration)."""
    job = context.client.request(
        "POST", api_path("vms", vm, "disks", target, "copy"),
        {"dest": dest, "pool": pool, "shallow": shallow, "sync_writes": sync_writes,
         "pivot": pivot, "bandwidth": bandwidth})
    _started(context, job, as_json, wait)
