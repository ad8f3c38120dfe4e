"""``blockplane agent run|start|stop|status``."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import click

from blockplane.cli.client import EXIT_UNREACHABLE, CLIError, agent_pid, start_agent, stop_agent
from blockplane.cli.context import CLIContext, json_option, pass_cli
from blockplane.cli.decode import fetch
from blockplane.cli.output import console, plain, print_json, table
from blockplane.config import Settings
from blockplane.errors import BlockplaneError
from blockplane.observe.views import ReconcileReport
from blockplane.store.intents import UnknownIntent

F = TypeVar("F", bound=Callable[..., Any])


@click.group("agent")
def agent_group() -> None:
    """Run and control the per-host agent."""


def listen_options(function: F) -> F:
    """``--listen`` and the TLS that a listener outside loopback must have."""
    for option in reversed(
        (
            click.option(
                "--listen",
                default=None,
                metavar="HOST:PORT",
                help="Also serve the API on TCP (token required), e.g. 127.0.0.1:8640; outside "
                "127.0.0.0/8 only with --tls-cert and --tls-key.",
            ),
            click.option(
                "--tls-cert",
                type=click.Path(path_type=Path),
                default=None,
                help="PEM certificate (chain) of the TCP listener: it serves HTTPS.",
            ),
            click.option(
                "--tls-key", type=click.Path(path_type=Path), default=None,
                help="PEM private key of --tls-cert.",
            ),
        )
    ):
        function = option(function)
    return function


def listening_settings(
    settings: Settings, listen: str | None, tls_cert: Path | None, tls_key: Path | None
) -> Settings:
    """``settings`` with the TCP listener asked for, refused (exit 2) before anything starts."""
    from blockplane.api.listeners import check_listen

    cert = tls_cert.absolute() if tls_cert is not None else None
    key = tls_key.absolute() if tls_key is not None else None
    try:
        check_listen(listen, cert, key)
    except BlockplaneError as error:
        raise CLIError(error.message, error.exit_code, error.code) from None
    if listen is None:
        return settings
    return replace(settings, listen=listen, tls_cert=cert, tls_key=key)


@agent_group.command("run")
@listen_options
@pass_cli
def agent_run(
    context: CLIContext, listen: str | None, tls_cert: Path | None, tls_key: Path | None
) -> None:
    """Run the agent in the foreground."""
    from blockplane.runtime.agent import run_agent

    settings = listening_settings(context.settings, listen, tls_cert, tls_key)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if agent_pid(settings) is not None and context.client.is_up():
        raise CLIError(f"an agent is already running for {settings.paths.home}", 1)
    run_agent(settings)


@agent_group.command("start")
@listen_options
@json_option
@pass_cli
def agent_start(
    context: CLIContext,
    listen: str | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    as_json: bool,
) -> None:
    """Start the agent in the background; return once it answers."""
    settings = listening_settings(context.settings, listen, tls_cert, tls_key)
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
    """Is the agent running and answering? Lists the requests in flight and what each waits on."""
    up = context.client.is_up()
    result: dict[str, Any] = {
        "running": up,
        "pid": agent_pid(context.settings),
        "socket": str(context.settings.paths.socket),
    }
    if up:
        detail = context.client.request("GET", "/v1/agent", timeout_s=10)
        result.update(requests=detail["requests"], abandoned_calls=detail["abandoned_calls"],
                      uptime_s=detail["uptime_s"])
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
        _print_in_flight(result)
        for intent in kept:
            console.print(f"[yellow]kept:[/yellow] intent {intent.id} of unknown kind "
                          f"{intent.kind} (VM {intent.vm}, {intent.target}); an agent that "
                          "knows it will finish it")
    if not up:
        raise click.exceptions.Exit(EXIT_UNREACHABLE)


def _print_in_flight(result: dict[str, Any]) -> None:
    requests = [
        {**item, "age": f"{item['age_s']:.1f} s", "deadline": f"{item['deadline_in_s']:.1f} s"}
        for item in result.get("requests") or []
    ]
    if requests:
        table(requests, [("label", "request"), ("age", "age"), ("deadline", "deadline in"),
                         ("waiting_on", "waiting on")], title="requests in flight")
    calls = [
        {**call, "age": f"{call['age_s']:.0f} s"} for call in result.get("abandoned_calls") or []
    ]
    if calls:
        table(calls, [("vm", "VM"), ("what", "call"), ("waits_on", "waits on"), ("age", "for")],
              title="calls past their deadline, not returned yet")


def _unknown_intents(context: CLIContext) -> list[UnknownIntent]:
    """Intents the agent keeps because it does not know their kind (``GET /v1/reconcile``)."""
    try:
        report = fetch(context.client, ReconcileReport, "GET", "/v1/reconcile")
    except CLIError:
        return []
    return list(report.unknown_intents)
