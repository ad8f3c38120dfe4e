"""``blockplane demo``: the guided tour of every feature, on this host."""

from __future__ import annotations

import click

from blockplane.cli.context import CLIContext, pass_cli
from blockplane.cli.demo_tour import run_tour


@click.command("demo")
@click.option("--keep", is_flag=True, help="Keep the demo VM and pool afterwards.")
@pass_cli
def demo_command(context: CLIContext, keep: bool) -> None:
    """Walk through every feature on a throwaway pool and VM, then clean up."""
    run_tour(context.client, keep=keep)
