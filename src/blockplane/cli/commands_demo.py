"""``blockplane demo``: the guided tour of every feature, on this host."""

from __future__ import annotations

import click

from blockplane.cli.context import CLIContext, json_option, pass_cli
from blockplane.cli.demo import STEP_NAMES, run_tour


@click.command("demo")
@click.option("--step", "steps", multiple=True, type=click.Choice(STEP_NAMES),
              help="Run only this step (repeatable); the default is every step, in order.")
@click.option("--keep", is_flag=True,
              help="Keep the tour's VM and pool afterwards (the next tour removes them).")
@json_option
@pass_cli
def demo_command(context: CLIContext, steps: tuple[str, ...], keep: bool, as_json: bool) -> None:
    """Walk through every feature with the Linux test guest, on a throwaway pool and VM, and
    print a summary of what each step showed, its key figure and its time.

    Every figure is measured in the run. Ctrl-C stops the tour and removes what it made.
    Exit status: 0 every step ok, 1 a step failed or a figure fell outside its bounds,
    130 interrupted.
    """
    status = run_tour(context.client, context.settings.paths.home, steps=steps,
                      as_json=as_json, keep=keep)
    if status:
        raise click.exceptions.Exit(status)
