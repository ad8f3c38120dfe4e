"""``blockplane agent run|start|stop|status``."""

from __future__ import annotations

import logging

import click

from blockplane.cli.client import EXIT_UNREACHABLE, CLIError, agent_pid, start_agent, stop_agent
from blockplane.cli.context import CLIContext, json_option, pass_cli
from blockplane.cli.decode import fetch
from blockplane.cli.output import console, plain, print_json
from blockplane.observe.views import ReconcileReport
from blockplane.store.intents import UnknownIntent


@click.group("agent")
def agent_group() -> None:
    """Run and control the per-host agent."""


@agent_group.command("run")
@click.option(
    "--listen",
    default=None,
    metavar="HOST:PORT",
    help="Also serve the API on TCP (token required), e.g. 127.0.0.1:8640.",
)
@pass_cli
def agent_run(context: CLIContext, listen: str | None) -> None:
    """Run the agent in the foreground."""
    from dataclasses import replace

    from blockplane.runtime.agent import run_agent

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = context.settings if listen is None else replace(context.settings, listen=listen)
    if agent_pid(settings) is not None and context.client.is_up():
        raise CLIError(f"an agent is already running for {settings.paths.home}", 1)
    run_agent(settings)


@agent_group.command("start")
@click.option("--listen", default=None, metavar="HOST:PORT", help="Also serve on TCP.")
@json_option
@pass_cli
def agent_start(context: CLIContext, listen: str | None, as_json: bool) -> None:
    """Start the agent in the background; return once it answers."""
    from dataclasses import replace

    settings = context.settings if listen is None else replace(context.settings, listen=listen)
    if context.client.is_up():
        result = {"running": True, "pid": agent_pid(settings), "started": False}
    else:
        result = {"running": True, "pid": start_agent(settings), "started": True}
    if as_json:
        print_json(result)
    else:
        verb = "started" if result["started"] else "already running"
        console.print(f"agent {verb} (pid {agent_pid(settings)}), socket {settings.paths.socket}")


@agent_group.command("stop")
@json_option
@pass_cli
def agent_stop(context: CLIContext, as_json: bool) -> None:
    """Stop the agent (VMs keep running)."""
    stopped = stop_agent(context.settings)
    if as_json:
        print_json({"stopped": stopped})
    else:
        console.print("agent stopped" if stopped else "agent was not running")


@agent_group.command("status")
@json_option
@pass_cli
def agent_status(context: CLIContext, as_json: bool) -> None:
    """Is the agent running and answering?"""
    up = context.client.is_up()
    result: dict[str, object] = {
        "running": up,
        "pid": agent_pid(context.settings),
        "socket": str(context.settings.paths.socket),
    }
    kept = _unknown_intents(context) if up else []
    if up:
        result["unknown_intents"] = plain(kept)
    if as_json:
        print_json(result)
    else:
        console.print(
            f"agent {'running' if up else 'not running'}"
            + (f" (pid {result['pid']})" if up else "")
        )
        for intent in kept:
            console.print(f"[yellow]kept:[/yellow] intent {intent.id} of unknown kind "
                          f"{intent.kind} (VM {intent.vm}, {intent.target}); an agent that "
                          "knows it will finish it")
    if not up:
        raise click.exceptions.Exit(EXIT_UNREACHABLE)


def _unknown_intents(context: CLIContext) -> list[UnknownIntent]:
    """Intents the agent keeps because it does not know their kind (``GET /v1/reconcile``)."""
    try:
        report = fetch(context.client, ReconcileReport, "GET", "/v1/reconcile")
    except CLIError:
        return []
    return list(report.unknown_intents)
