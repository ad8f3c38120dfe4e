"""``scripts/lab up|exec|show|restart|down``: the lab's command line.

Prints JSON (the lab's public view, or what ``down`` did). Errors go to stderr with their
code; exit 2 for bad input (nothing changed), 1 for a failed operation, 3 for a host that is not
running. ``exec`` replaces this process with the command, so the command's status is the exit
status. Owns argument parsing only.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from blockplane.errors import BlockplaneError, StateUnavailable
from blockplane.lab.layout import DEFAULT_BASE_ADDRESS, DEFAULT_LAB_DIR

EXIT_UNREACHABLE = 3


def _default_dir() -> Path:
    return Path(os.environ.get("BLOCKPLANE_LAB_DIR") or DEFAULT_LAB_DIR)


dir_option = click.option(
    "--dir",
    "root",
    type=click.Path(path_type=Path),
    default=_default_dir,
    show_default=str(DEFAULT_LAB_DIR),
    help="The lab dir (env BLOCKPLANE_LAB_DIR).",
)


def _print(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))


def _fail(error: BlockplaneError) -> NoReturn:
    click.echo(f"lab: {error.message} [{error.code}]", err=True)
    for note in getattr(error, "__notes__", []):
        click.echo(f"lab: {note}", err=True)
    sys.exit(EXIT_UNREACHABLE if isinstance(error, StateUnavailable) else error.exit_code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def lab() -> None:
    """Simulated KVM hosts on this machine: each its own mount namespace, libvirtd,
    BLOCKPLANE_HOME and TLS agent, all peers of each other."""


@lab.command("up")
@click.option("--hosts", default=2, show_default=True, help="How many hosts (host1..hostN).")
@click.option("--ceph", is_flag=True, help="Also start a one-node Ceph cluster.")
@click.option(
    "--base-address",
    default=DEFAULT_BASE_ADDRESS,
    show_default=True,
    help="hostI listens on BASE+I; `auto` picks a free block (never the default one).",
)
@click.option("--no-agents", is_flag=True, help="Hosts without agents, CA or peers.")
@dir_option
def up_command(hosts: int, ceph: bool, base_address: str, no_agents: bool, root: Path) -> None:
    """Start the lab and print how to reach each host (JSON)."""
    from blockplane.lab.bringup import up

    try:
        state = up(root, hosts, base_address=base_address, agents=not no_agents, ceph=ceph)
    except BlockplaneError as error:
        _fail(error)
    _print(state.public())


@lab.command("show")
@dir_option
def show_command(root: Path) -> None:
    """Print a running lab's JSON, as `up` printed it."""
    from blockplane.lab.state import load

    try:
        _print(load(root).public())
    except BlockplaneError as error:
        _fail(error)


@lab.command("exec", context_settings={"ignore_unknown_options": True})
@dir_option
@click.argument("host")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def exec_command(root: Path, host: str, command: tuple[str, ...]) -> None:
    """Run COMMAND inside HOST's namespace with its environment: `exec host1 -- virsh list`."""
    from blockplane.lab.execution import host_command
    from blockplane.lab.state import load

    try:
        argv, environment = host_command(load(root), host, list(command))
    except BlockplaneError as error:
        _fail(error)
    sys.stdout.flush()
    os.execvpe(argv[0], argv, environment)


@lab.command("restart")
@dir_option
@click.argument("host")
@click.argument("daemon", type=click.Choice(["libvirtd", "agent"]))
def restart_command(root: Path, host: str, daemon: str) -> None:
    """Start HOST's libvirtd or agent again (stopping it first if it still runs)."""
    from blockplane.lab.bringup import restart

    try:
        state = restart(root, host, daemon)
    except BlockplaneError as error:
        _fail(error)
    _print(state.public())


@lab.command("down")
@dir_option
def down_command(root: Path) -> None:
    """Stop everything `up` started (by PID) and remove the lab dir; safe to repeat."""
    from blockplane.lab.teardown import down

    try:
        report = down(root)
    except BlockplaneError as error:
        _fail(error)
    _print(report.to_json())


def main() -> None:
    lab(prog_name="lab")
