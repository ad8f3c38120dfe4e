"""Printing results: JSON for machines (``--json``), rich tables for people.

Results arrive decoded into the services' views (``cli.decode``); ``--json`` prints them as the
API sent them, and tables and key-value lists read the same keys.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from blockplane.cli.decode import encode

console = Console(highlight=False)
error_console = Console(stderr=True, highlight=False)


def print_json(data: Any) -> None:
    print(json.dumps(plain(data), indent=2, sort_keys=True, default=str))


def plain(data: Any) -> Any:
    """A view (or a list of views) as its JSON; anything else as it is."""
    if dataclasses.is_dataclass(data) and not isinstance(data, type):
        return encode(data)
    if isinstance(data, BaseModel):  # an API model the CLI decoded into (api/peer_bodies.py)
        return data.model_dump(mode="json")
    if isinstance(data, list | tuple) and any(
            dataclasses.is_dataclass(item) or isinstance(item, BaseModel) for item in data):
        return [plain(item) for item in data]
    return data


def human_bytes(value: int | None) -> str:
    if value is None:
        return "-"
    amount = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(amount) < 1024 or unit == "TiB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{value} B"


def table(rows: Sequence[Any], columns: Sequence[tuple[str, str]], title: str = "") -> None:
    """``rows``: views or dicts; ``columns``: (key, header) pairs."""
    view = Table(title=title or None, show_lines=False)
    for _key, header in columns:
        view.add_column(header)
    for row in rows:
        fields = plain(row)
        view.add_row(*[_cell(fields.get(key)) for key, _header in columns])
    console.print(view)


def key_values(data: Any, title: str = "") -> None:
    """``data``: a view or a dict, one row per key."""
    view = Table(title=title or None, show_header=False)
    view.add_column("field", style="bold")
    view.add_column("value")
    for key, value in plain(data).items():
        view.add_row(key, _cell(value))
    console.print(view)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict | list):
        return json.dumps(value, default=str)
    return str(value)
