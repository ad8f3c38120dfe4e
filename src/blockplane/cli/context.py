"""What every CLI command receives: the settings and a client of the agent."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import click

from blockplane.cli.client import AgentClient
from blockplane.config import Settings

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class CLIContext:
    settings: Settings
    client: AgentClient


pass_cli = click.make_pass_decorator(CLIContext)


def json_option(function: F) -> F:
    decorated: F = click.option(
        "--json", "as_json", is_flag=True, help="Machine-readable JSON on stdout."
    )(function)
    return decorated
