"""``blockplane vm ...``, ``blockplane disk ...`` and ``blockplane guest exec``."""

from __future__ import annotations

import base64
import sys

import click

from blockplane.cli.client import EXIT_INVALID, CLIError, api_path
from blockplane.cli.context import CLIContext, json_option, pass_cli
from blockplane.cli.decode import fetch, fetch_list
from blockplane.cli.output import console, human_bytes, key_values, plain, print_json, table
from blockplane.vms.views import (
    AttachResult,
    DetachResult,
    DiskView,
    GuestExecView,
    VMCreated,
    VMDeleteResult,
    VMView,
)

LIMIT_FIELDS = (
    *tuple(
        f"{scope}_{kind}_sec{suffix}"
        for kind in ("bytes", "iops")
        for scope in ("total", "read", "write")
        for suffix in ("", "_max", "_max_length")
    ),
    "size_iops_sec",
)


@click.group("vm")
def vm_group() -> None:
    """Virtual machines."""


@vm_group.command("create")
@click.argument("name")
@click.option("--vcpus", type=int, default=2, show_default=True)
@click.option("--memory", default="512M", show_default=True)
@click.option(
    "--guest",
    type=click.Choice(["none", "linux"]),
    default="none",
    show_default=True,
    help="none: no OS (firmware only); linux: the bundled test guest.",
)
@click.option(
    "--disk",
    "disks",
    multiple=True,
    metavar="pool=P,size=S[,queues=N,io_threads=K,bus=scsi,format=raw,thin,name=V]",
    help="A disk attached at define time (repeatable); all or nothing.",
)
@click.option("--start", is_flag=True, help="Start it (and wait for the guest agent).")
@json_option
@pass_cli
def vm_create(
    context: CLIContext,
    name: str,
    vcpus: int,
    memory: str,
    guest: str,
    disks: tuple[str, ...],
    start: bool,
    as_json: bool,
) -> None:
    """Create (define) a VM, optionally with disks."""
    vm = fetch(
        context.client,
        VMCreated,
        "POST",
        "/v1/vms",
        {
            "name": name,
            "vcpus": vcpus,
            "memory": memory,
            "guest": guest,
            "start": start,
            "disks": [parse_disk_spec(spec) for spec in disks],
        },
    )
    if as_json:
        print_json(vm)
        return
    console.print(f"VM {vm.name} created ({vm.state})")
    for disk in vm.disks or ():
        console.print(f"  {disk.target}: {disk.source}; {'; '.join(disk.notes)}")


DISK_SPEC_INTEGERS = ("queues", "io_threads")
#: The guest exec request's deadline: the command's own timeout plus time to collect its output.
GUEST_EXEC_GRACE_S = 10.0
DISK_SPEC_TEXT = ("pool", "size", "bus", "format", "name")


def parse_disk_spec(spec: str) -> dict[str, object]:
    """``pool=P,size=1G,queues=4,thin`` -> a volume descriptor for the API."""
    disk: dict[str, object] = {}
    for item in spec.split(","):
        key, has_value, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if key == "thin" and not has_value:
            disk["thin"] = True
        elif key in DISK_SPEC_INTEGERS and value.isdigit():
            disk[key] = int(value)
        elif key in DISK_SPEC_TEXT and value:
            disk[key] = value
        else:
            raise CLIError(f"--disk {spec!r}: cannot read {item!r}", EXIT_INVALID)
    if "pool" not in disk or "size" not in disk:
        raise CLIError(f"--disk {spec!r}: pool= and size= are required", EXIT_INVALID)
    return disk


def _lifecycle(verb: str, help_text: str) -> click.Command:
    @click.command(verb, help=help_text)
    @click.argument("name")
    @json_option
    @pass_cli
    def command(context: CLIContext, name: str, as_json: bool) -> None:
        vm = fetch(context.client, VMView, "POST", api_path("vms", name, verb))
        if as_json:
            print_json(vm)
        else:
            console.print(f"VM {name}: {vm.state}")

    return command


for _verb, _help in (
    ("start", "Start a VM."),
    ("stop", "Shut a VM down gracefully."),
    ("destroy", "Power a VM off at once."),
):
    vm_group.add_command(_lifecycle(_verb, _help))


@vm_group.command("delete")
@click.argument("name")
@json_option
@pass_cli
def vm_delete(context: CLIContext, name: str, as_json: bool) -> None:
    """Delete a stopped VM and the volumes of its disks."""
    result = fetch(context.client, VMDeleteResult, "DELETE", api_path("vms", name))
    if as_json:
        print_json(result)
    else:
        console.print(
            f"VM {name} deleted; volumes removed: {', '.join(result.volumes_deleted) or 'none'}"
        )


@vm_group.command("list")
@json_option
@pass_cli
def vm_list(context: CLIContext, as_json: bool) -> None:
    """List VMs."""
    vms = fetch_list(context.client, VMView, "GET", "/v1/vms")
    if as_json:
        print_json(vms)
        return
    table(
        [{**plain(vm), "memory": human_bytes(vm.memory_bytes)} for vm in vms],
        [
            ("name", "name"),
            ("state", "state"),
            ("vcpus", "vcpus"),
            ("memory", "memory"),
            ("guest", "guest"),
            ("managed", "managed"),
        ],
    )


@vm_group.command("show")
@click.argument("name")
@click.option("--xml", "as_xml", is_flag=True, help="Print the live libvirt domain XML.")
@click.option("--inactive", is_flag=True, help="With --xml: the persistent definition.")
@json_option
@pass_cli
def vm_show(context: CLIContext, name: str, as_xml: bool, inactive: bool, as_json: bool) -> None:
    """Show a VM."""
    if as_xml:
        path = api_path("vms", name, "xml") + ("?inactive=true" if inactive else "")
        sys.stdout.write(context.client.text(path))
        return
    vm = fetch(context.client, VMView, "GET", api_path("vms", name))
    if as_json:
        print_json(vm)
    else:
        key_values(vm, title=f"VM {name}")


@click.group("disk")
def disk_group() -> None:
    """VM disks: attach (hotplug), detach, list."""


def _limit_options(function: click.decorators.FC) -> click.decorators.FC:
    for field in reversed(LIMIT_FIELDS):
        function = click.option(
            "--" + field.replace("_", "-"),
            field,
            type=int,
            default=None,
            hidden=False,
            help=f"Per-disk {field} limit.",
        )(function)
    return function


@disk_group.command("attach")
@click.argument("vm")
@click.option("--pool", required=True)
@click.option("--size", required=True, help="Virtual size, e.g. 1G.")
@click.option("--name", default=None, help="Volume name (default VM-TARGET).")
@click.option("--thin", is_flag=True, help="Thin qcow2 on a growable block volume.")
@click.option("--format", "image_format", type=click.Choice(["qcow2", "raw"]), default=None,
              help="Image format (default: raw on rbd pools, qcow2 elsewhere).")
@click.option("--bus", type=click.Choice(["virtio", "scsi"]), default="virtio")
@click.option("--queues", type=int, default=None)
@click.option("--io-threads", type=int, default=None)
@click.option("--throttle-groups", default=None, help="Ordered, comma-separated group names.")
@_limit_options
@json_option
@pass_cli
def disk_attach(
    context: CLIContext,
    /,
    vm: str,
    pool: str,
    size: str,
    name: str | None,
    thin: bool,
    image_format: str | None,
    bus: str,
    queues: int | None,
    io_threads: int | None,
    throttle_groups: str | None,
    as_json: bool,
    **limits: int | None,
) -> None:
    """Create a volume and attach it (hotplug when the VM runs)."""
    body = {
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
    disk = fetch(context.client, AttachResult, "POST", api_path("vms", vm, "disks"), body)
    if as_json:
        print_json(disk)
    else:
        console.print(
            f"attached {disk.target} to {vm}: {disk.source} "
            f"({disk.format}, {human_bytes(disk.virtual_bytes)})"
        )
        for line in disk.notes:
            console.print(f"  {line}")


@disk_group.command("detach")
@click.argument("vm")
@click.argument("target")
@json_option
@pass_cli
def disk_detach(context: CLIContext, vm: str, target: str, as_json: bool) -> None:
    """Detach a disk and delete its volume."""
    result = fetch(context.client, DetachResult, "DELETE", api_path("vms", vm, "disks", target))
    if as_json:
        print_json(result)
    else:
        console.print(f"detached {target} from {vm}; volume {result.volume_deleted} deleted")


@disk_group.command("list")
@click.argument("vm")
@json_option
@pass_cli
def disk_list(context: CLIContext, vm: str, as_json: bool) -> None:
    """List a VM's disks."""
    disks = fetch_list(context.client, DiskView, "GET", api_path("vms", vm, "disks"))
    if as_json:
        print_json(disks)
        return
    table(
        [{**plain(disk), "size": human_bytes(disk.virtual_bytes)} for disk in disks],
        [
            ("target", "target"),
            ("bus", "bus"),
            ("format", "format"),
            ("size", "size"),
            ("pool", "pool"),
            ("volume", "volume"),
            ("source", "source"),
        ],
    )


@click.group("guest")
def guest_group() -> None:
    """Talk to a guest through qemu-guest-agent."""


@guest_group.command("exec", context_settings={"ignore_unknown_options": True})
@click.argument("vm")
@click.argument("argv", nargs=-1, required=True, type=click.UNPROCESSED)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True, max=3600),
    default=120.0,
    show_default=True,
    help="How long CMD may run; past it: exit 1, code timeout.guest_exec (CMD keeps running).",
)
@json_option
@pass_cli
def guest_exec(
    context: CLIContext, vm: str, argv: tuple[str, ...], timeout: float, as_json: bool
) -> None:
    """Run CMD in the guest; print its output and exit with its status."""
    result = fetch(context.client, GuestExecView, "POST", api_path("vms", vm, "exec"),
                   {"argv": list(argv), "timeout": timeout}, timeout_s=timeout + GUEST_EXEC_GRACE_S)
    stdout = base64.b64decode(result.stdout_base64)
    stderr = base64.b64decode(result.stderr_base64)
    if as_json:
        print_json(
            {
                "exit_code": result.exit_code,
                "stdout": stdout.decode(errors="replace"),
                "stderr": stderr.decode(errors="replace"),
            }
        )
    else:
        sys.stdout.buffer.write(stdout)
        sys.stdout.flush()
        sys.stderr.buffer.write(stderr)
        sys.stderr.flush()
    raise click.exceptions.Exit(result.exit_code)
