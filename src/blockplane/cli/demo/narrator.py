"""How the tour speaks: step headers, what it does and sees, figures, progress bars, and the
summary table. With ``--json`` all of it goes to stderr and only the summary's JSON to stdout.

Owns presentation only: it decides nothing and measures nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from blockplane.cli.demo.figures import Figure, Phase, StepReport, TourReport

MARKS = {True: "[green]✓[/green]", False: "[red]✗[/red]", None: ""}
STATUS_STYLE = {"ok": "green", "failed": "red", "skipped": "yellow", "interrupted": "yellow"}


@dataclass
class Narrator:
    console: Console

    @classmethod
    def for_output(cls, as_json: bool) -> Narrator:
        return cls(Console(stderr=as_json, highlight=False))

    def header(self, number: int, total: int, label: str) -> None:
        self.console.print()
        self.console.print(f"[bold cyan]==> {number}/{total} {escape(label)}[/bold cyan]")

    def say(self, text: str) -> None:
        self.console.print(f"    {escape(text)}")

    def note(self, text: str) -> None:
        self.console.print(f"    [dim]{escape(text)}[/dim]")

    def warn(self, text: str) -> None:
        self.console.print(f"    [yellow]{escape(text)}[/yellow]")

    def figure(self, figure: Figure) -> None:
        bounds = figure.bounds_text()
        within = f"  [dim]({escape(bounds)})[/dim] {MARKS[figure.within]}" if bounds else ""
        self.console.print(f"    {escape(figure.name)}: [bold]{escape(figure.value_text())}"
                           f"[/bold]{within}")

    def rows(self, columns: Sequence[str], rows: Sequence[Sequence[str]], title: str = "") -> None:
        table = Table(title=title or None, title_justify="left", padding=(0, 1))
        for column in columns:
            table.add_column(column)
        for row in rows:
            table.add_row(*[escape(cell) for cell in row])
        self.console.print(table)

    def done(self, report: StepReport) -> None:
        style = STATUS_STYLE[report.status]
        line = f"    [{style}]{report.status}[/{style}] {escape(report.title)}"
        self.console.print(f"{line}  [dim]({report.seconds:.1f} s)[/dim]")
        if report.error:
            self.console.print(f"    [red]{escape(report.error)}[/red]")

    @contextmanager
    def progress(self, label: str) -> Iterator[ProgressBar]:
        columns = (TextColumn("    {task.description}"), BarColumn(), TaskProgressColumn(),
                   TimeElapsedColumn())
        with Progress(*columns, console=self.console, transient=False) as progress:
            yield ProgressBar(progress, progress.add_task(escape(label), total=1.0))

    def summary(self, report: TourReport) -> None:
        table = Table(title="blockplane demo: summary", title_justify="left")
        for column in ("step", "status", "what it showed", "key figure", "seconds"):
            table.add_column(column, justify="right" if column == "seconds" else "left")
        table.add_row("set-up", _phase_status(report.setup, "failed"),
                      escape("; ".join(report.setup.did + report.setup.left) or "nothing needed"),
                      "", f"{report.setup.seconds:.1f}")
        for step in report.steps:
            key = step.key_figure()
            key_text = f"{key.name}: {key.value_text()}" if key else ""
            if key is not None and key.within is not None:
                key_text += " " + ("✓" if key.within else "✗")
            style = STATUS_STYLE[step.status]
            shown = step.title + (f" — {step.showed}" if step.showed else "")
            if step.error:
                shown += f" [{step.error}]"
            table.add_row(escape(step.label), f"[{style}]{step.status}[/{style}]",
                          escape(shown), escape(key_text), f"{step.seconds:.1f}")
        table.add_row("clean-up", _phase_status(report.cleanup, "left things"),
                      escape("; ".join(report.cleanup.did + report.cleanup.left) or "nothing"),
                      "", f"{report.cleanup.seconds:.1f}")
        self.console.print()
        self.console.print(table)
        verdict = "[green]every step ok[/green]" if report.ok else "[red]not every step ok[/red]"
        if report.interrupted:
            verdict = "[yellow]interrupted; cleaned up what the tour had made[/yellow]"
        host = report.extra.get("host", {})
        load = (f" (this host: {host['cpus']} CPUs, load average {host['load_average_start']}"
                f" at the start, {host['load_average_end']} at the end)" if host else "")
        self.console.print(f"{verdict}: {report.seconds:.1f} s in all{load}")


def _phase_status(phase: Phase, failed: str) -> str:
    return f"[red]{failed}[/red]" if phase.left else "[green]ok[/green]"


@dataclass
class ProgressBar:
    progress: Progress
    task: object

    def update(self, fraction: float, label: str | None = None) -> None:
        self.progress.update(self.task, completed=max(0.0, min(fraction, 1.0)),  # type: ignore[arg-type]
                             description=escape(label) if label else None)


def print_json(report: TourReport) -> None:
    print(json.dumps(report.to_json(), indent=2, sort_keys=False, default=str))
