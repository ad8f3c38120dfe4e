"""The ``blockplane`` command: global options, error-to-exit-code mapping, sub-commands."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.markup import escape

from blockplane.cli.client import EXIT_FAILED, AgentClient, CLIError
from blockplane.cli.commands_adopt import plan_group
from blockplane.cli.commands_agent import agent_group
from blockplane.cli.commands_chain import (
    backup_command,
    chain_command,
    commit_command,
    copy_command,
    pull_command,
    snapshot_group,
)
from blockplane.cli.commands_checkpoints import checkpoint_group
from blockplane.cli.commands_demo import demo_command
from blockplane.cli.commands_host import events_command, facts_command
from blockplane.cli.commands_iothreads import iothreads_command, migrate_check_command
from blockplane.cli.commands_jobs import job_group
from blockplane.cli.commands_peers import peer_group
from blockplane.cli.commands_pools import pool_group
from blockplane.cli.commands_thin import thin_group
from blockplane.cli.commands_throttle import throttle_group
from blockplane.cli.commands_top import top_command
from blockplane.cli.commands_vms import disk_group, guest_group, vm_group
from blockplane.cli.commands_volumes import volume_group
from blockplane.cli.context import CLIContext
from blockplane.cli.output import error_console
from blockplane.config import AccelChoice, load_settings


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--home",
    type=click.Path(path_type=Path),
    envvar="BLOCKPLANE_HOME",
    help="State directory (default /var/lib/blockplane for root).",
)
@click.option(
    "--libvirt-uri",
    envvar="BLOCKPLANE_LIBVIRT_URI",
    help="Hypervisor URI (default: embedded libvirt under the home).",
)
@click.option(
    "--accel",
    type=click.Choice(["auto", "kvm", "tcg"]),
    default=None,
    help="Acceleration for new VMs (default auto: KVM only if it works).",
)
@click.option("--no-autostart", is_flag=True, help="Fail instead of starting the agent.")
@click.option(
    "--timeout",
    "request_timeout",
    type=click.FloatRange(min=0, min_open=True, max=3600),
    envvar="BLOCKPLANE_TIMEOUT",
    default=None,
    metavar="SECONDS",
    help="Deadline of each request to the agent (default: 30 s for reads, 90 s for changes, "
    "120 s for VM lifecycle; past it: exit 1, code timeout.<what it waited for>).",
)
@click.pass_context
def cli(
    context: click.Context,
    home: Path | None,
    libvirt_uri: str | None,
    accel: str | None,
    no_autostart: bool,
    request_timeout: float | None,
) -> None:
    """blockplane: the block-storage control plane for this KVM host."""
    chosen: AccelChoice | None = "kvm" if accel == "kvm" else "tcg" if accel == "tcg" else None
    if accel == "auto":
        chosen = "auto"
    settings = load_settings(home=home, libvirt_uri=libvirt_uri, accel=chosen)
    context.obj = CLIContext(
        settings,
        AgentClient(settings, autostart=not no_autostart, request_timeout_s=request_timeout),
    )


for command in (
    agent_group,
    facts_command,
    events_command,
    pool_group,
    volume_group,
    vm_group,
    disk_group,
    guest_group,
    demo_command,
    iothreads_command,
    throttle_group,
    thin_group,
    top_command,
    chain_command,
    snapshot_group,
    commit_command,
    pull_command,
    copy_command,
    backup_command,
    checkpoint_group,
    job_group,
    peer_group,
    plan_group,
):
    cli.add_command(command)
vm_group.add_command(migrate_check_command)


def main() -> None:
    try:
        # Without standalone mode click returns (not raises) the code of a Exit it caught.
        status = cli.main(standalone_mode=False)
    except CLIError as error:
        code = f" [{error.code}]" if error.code else ""
        error_console.print(f"[red]error:[/red] {escape(error.message + code)}")
        sys.exit(error.exit_code)
    except click.exceptions.Abort:
        sys.exit(EXIT_FAILED)
    except click.ClickException as error:
        error.show()
        sys.exit(error.exit_code)
    except click.exceptions.Exit as exit_:
        sys.exit(exit_.exit_code)
    if isinstance(status, int):
        sys.exit(status)
