"""``blockplane vm adopt``, ``blockplane vm release`` and ``blockplane plan disk``."""

from __future__ import annotations

from pathlib import Path

import click

from blockplane.api.adopt_schemas import AdoptAnswer, PlanAnswer, ReleaseAnswer
from blockplane.cli.client import EXIT_INVALID, CLIError, api_path
from blockplane.cli.commands_vms import _limit_options, vm_group
from blockplane.cli.context import CLIContext, json_option, pass_cli
from blockplane.cli.decode import fetch
from blockplane.cli.output import console, print_json


@vm_group.command("adopt")
@click.argument("name")
@click.option(
    "--pool-for",
    "pool_for",
    multiple=True,
    metavar="PREFIX=POOL",
    help="Disks whose path starts with PREFIX are volumes of POOL (checked); repeatable.",
)
@json_option
@pass_cli
def vm_adopt(context: CLIContext, name: str, pool_for: tuple[str, ...], as_json: bool) -> None:
    """Take a domain defined elsewhere under management, as it is (running or not)."""
    result = fetch(context.client, AdoptAnswer, "POST", api_path("vms", name, "adopt"),
                   {"pool_for": list(pool_for)})
    if as_json:
        print_json(result)
        return
    console.print(f"VM {name} adopted ({'running' if result.running else 'not running'})")
    for disk in result.disks:
        thin = ", thin (monitored)" if disk["thin"] else ""
        chain = len(disk["chain_volumes"])
        console.print(f"  {disk['target']}: volume {disk['volume']} of pool {disk['pool']}"
                      f"{thin}; chain of {chain + len(disk['foreign_chain'])}")
        if disk["iotune"]:
            console.print(f"    <iotune> on the disk: {disk['iotune']}")
    for disk in result.foreign:
        console.print(f"  {disk['target']}: foreign ({disk['reason']}): never written")
        if disk["iotune"]:
            console.print(f"    <iotune> on the disk: {disk['iotune']}")
    if result.reserved_iothreads:
        ids = ", ".join(str(i) for i in result.reserved_iothreads)
        console.print(f"  IOThreads kept as they are: {ids}")
    for group in result.throttle_groups:
        console.print(f"  throttle group {group['name']}: {group['limits']}")
    if result.checkpoints:
        console.print(f"  checkpoints: {', '.join(result.checkpoints)}")
    for job in result.jobs:
        console.print(f"  block job tracked: {job}")


@vm_group.command("release")
@click.argument("name")
@json_option
@pass_cli
def vm_release(context: CLIContext, name: str, as_json: bool) -> None:
    """Stop managing a VM; its domain and files are left exactly as they are."""
    result = fetch(context.client, ReleaseAnswer, "POST", api_path("vms", name, "release"))
    if as_json:
        print_json(result)
        return
    console.print(f"VM {name} released; its domain and files are left as they are "
                  f"(records dropped for {', '.join(result.disks) or 'no disks'})")


@click.group("plan")
def plan_group() -> None:
    """What blockplane would apply, computed without applying anything."""


@plan_group.command("disk")
@click.argument("vm", required=False)
@click.option("--domain-xml", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="Plan on this domain XML (e.g. `virsh dumpxml --inactive`).")
@click.option("--vcpus", type=int, default=None, help="Plan on a VM of N vCPUs ...")
@click.option("--iothread-ids", default=None, help="... that has these IOThreads (1,2,...).")
@click.option("--reserved-iothreads", default=None,
              help="IOThreads not to use (default: every one the domain already has; '' none).")
@click.option("--pool", default=None)
@click.option("--size", default="1G", show_default=True)
@click.option("--name", default=None, help="Volume name (checked against the pool).")
@click.option("--thin", is_flag=True)
@click.option("--format", "image_format", type=click.Choice(["qcow2", "raw"]), default="qcow2")
@click.option("--bus", type=click.Choice(["virtio", "scsi"]), default="virtio")
@click.option("--queues", type=int, default=None)
@click.option("--io-threads", type=int, default=None)
@click.option("--throttle-groups", default=None, help="Ordered, comma-separated group names.")
@_limit_options
@json_option
@pass_cli
def plan_disk(
    context: CLIContext,
    /,
    vm: str | None,
    domain_xml: Path | None,
    vcpus: int | None,
    iothread_ids: str | None,
    reserved_iothreads: str | None,
    pool: str | None,
    size: str,
    name: str | None,
    thin: bool,
    image_format: str,
    bus: str,
    queues: int | None,
    io_threads: int | None,
    throttle_groups: str | None,
    as_json: bool,
    **limits: int | None,
) -> None:
    """What `disk attach` would apply to VM (or to a domain XML, or to N vCPUs); changes
    nothing."""
    body: dict[str, object] = {
        "vm": vm,
        "domain_xml": domain_xml.read_text() if domain_xml is not None else None,
        "vcpus": vcpus,
        "iothread_ids": _ids(iothread_ids, "--iothread-ids") or [],
        "reserved_iothreads": _ids(reserved_iothreads, "--reserved-iothreads"),
        "pool": pool,
        "size": size,
        "name": name,
        "thin": thin,
        "format": image_format,
        "bus": bus,
        "queues": queues,
        "io_threads": io_threads,
        "throttle_groups": [g for g in (throttle_groups or "").split(",") if g],
        "limits": {key: value for key, value in limits.items() if value is not None},
    }
    plan = fetch(context.client, PlanAnswer, "POST", "/v1/plan/disk", body)
    if as_json:
        print_json(plan)
        return
    console.print(f"{plan.target} of {plan.vm} ({plan.basis}):")
    for note in plan.notes:
        console.print(f"  {note}")
    if plan.iothreads_to_add:
        console.print(f"  IOThreads to add: {plan.iothreads_to_add}")
    for group in plan.throttle_groups_to_create:
        console.print(f"  throttle group to create: {group['name']} {group['limits']}")
    console.print(plan.xml.disk, markup=False, highlight=False)


def _ids(text: str | None, option: str) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise CLIError(f"{option} {text!r}: use comma-separated numbers", EXIT_INVALID) from None
