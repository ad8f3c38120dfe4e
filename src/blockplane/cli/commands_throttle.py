"""``blockplane throttle set|info|list|del``: a VM's throttle groups."""

from __future__ import annotations

from typing import Any

import click

from blockplane.cli.client import api_path
from blockplane.cli.context import CLIContext, json_option, pass_cli
from blockplane.cli.decode import fetch, fetch_list
from blockplane.cli.output import console, plain, print_json, table
from blockplane.model.throttle_limits import FIELD_NAMES
from blockplane.throttle.views import (
    ThrottleGroupDeleteResult,
    ThrottleGroupSetResult,
    ThrottleGroupView,
)


@click.group("throttle")
def throttle_group() -> None:
    """Throttle groups shared by disks' filter chains."""


def _limit_flags(function: click.decorators.FC) -> click.decorators.FC:
    for name in reversed(FIELD_NAMES):
        function = click.option(
            "--" + name.replace("_", "-"),
            name,
            default=None,
            metavar="N",
            help=f"libvirt's {name}.",
        )(function)
    return function


@throttle_group.command("set")
@click.argument("vm")
@click.argument("group")
@click.option("--live", is_flag=True, help="Change the running VM only (with --config: both).")
@click.option("--config", is_flag=True, help="Change the persistent definition only.")
@_limit_flags
@json_option
@pass_cli
def throttle_set(
    context: CLIContext,
    /,
    vm: str,
    group: str,
    live: bool,
    config: bool,
    as_json: bool,
    **limits: str | None,
) -> None:
    """Create GROUP, or change the given limits in place (others are kept).

    Without --live or --config: the running VM and its persistent definition.
    """
    chosen = live or config
    body: dict[str, Any] = {
        "limits": {name: value for name, value in limits.items() if value is not None},
        "live": live if chosen else None,
        "config": config if chosen else None,
    }
    result = fetch(context.client, ThrottleGroupSetResult, "PUT",
                   api_path("vms", vm, "throttle-groups", group), body)
    if as_json:
        print_json(result)
        return
    verb = "created" if result.created else "updated"
    console.print(
        f"throttle group {group} of {vm} {verb} ({', '.join(result.changed)}): "
        f"{_limits_text(result.limits)}"
    )


@throttle_group.command("info")
@click.argument("vm")
@click.argument("group")
@json_option
@pass_cli
def throttle_info(context: CLIContext, vm: str, group: str, as_json: bool) -> None:
    """Show a group's limits and the disks whose filter chains use it."""
    result = fetch(context.client, ThrottleGroupView, "GET",
                   api_path("vms", vm, "throttle-groups", group))
    if as_json:
        print_json(result)
        return
    console.print(f"throttle group {group} of {vm} ({result.definition} definition)")
    for name, value in result.limits.items():
        console.print(f"  {name}: {value}")
    for kind, other in (result.differs or {}).items():
        console.print(f"  differs in the {kind} definition: {_limits_text(other)}")
    for disk in result.disks:
        chain = " -> ".join(disk.chain)
        console.print(f"  used by {disk.target} (filter {disk.position + 1}: {chain})")
    if not result.disks:
        console.print("  used by no disk")


@throttle_group.command("list")
@click.argument("vm")
@json_option
@pass_cli
def throttle_list(context: CLIContext, vm: str, as_json: bool) -> None:
    """List a VM's throttle groups."""
    groups = fetch_list(context.client, ThrottleGroupView, "GET",
                        api_path("vms", vm, "throttle-groups"))
    if as_json:
        print_json(groups)
        return
    rows = [
        {
            **plain(group),
            "limits_text": _limits_text(group.limits),
            "disks_text": ", ".join(disk.target for disk in group.disks) or "-",
        }
        for group in groups
    ]
    table(
        rows,
        [
            ("group", "group"),
            ("limits_text", "limits"),
            ("disks_text", "disks"),
            ("live", "live"),
            ("config", "config"),
        ],
    )


@throttle_group.command("del")
@click.argument("vm")
@click.argument("group")
@json_option
@pass_cli
def throttle_del(context: CLIContext, vm: str, group: str, as_json: bool) -> None:
    """Delete a group no disk uses."""
    result = fetch(context.client, ThrottleGroupDeleteResult, "DELETE",
                   api_path("vms", vm, "throttle-groups", group))
    if as_json:
        print_json(result)
    else:
        console.print(f"throttle group {group} of {vm} deleted")


def _limits_text(limits: dict[str, int]) -> str:
    return ", ".join(f"{name}={value}" for name, value in limits.items()) or "none"
