"""Printing results: JSON for machines (``--json``), rich tables for people."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

console = Console(highlight=False)
error_console = Console(stderr=True, highlight=False)


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


def human_bytes(value: int | None) -> str:
    if value is None:
        return "-"
    amount = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(amount) < 1024 or unit == "TiB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{value} B"


def table(
    rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]], title: str = ""
) -> None:
    view = Table(title=title or None, show_lines=False)
    for _key, header in columns:
        view.add_column(header)
    for row in rows:
        view.add_row(*[_cell(row.get(key)) for key, _header in columns])
    console.print(view)


def key_values(data: dict[str, Any], title: str = "") -> None:
    view = Table(title=title or None, show_header=False)
    view.add_column("field", style="bold")
    view.add_column("value")
    for key, value in data.items():
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
