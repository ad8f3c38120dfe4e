"""``blockplane demo``: the guided tour of every feature, on this host, with the Linux test guest.

A client of the agent's API like any platform (it must not import services): ``runner`` runs
the steps (``steps/``, one module each) on a throwaway stage (``session``), keeps a ``ledger``
of everything it creates and removes exactly that at the end, even after Ctrl-C; ``figures``
holds what was measured and the bounds it must fall in; ``narrator`` prints it.
"""

from __future__ import annotations

from blockplane.cli.demo.runner import run_tour
from blockplane.cli.demo.steps import STEP_NAMES

__all__ = ["STEP_NAMES", "run_tour"]
