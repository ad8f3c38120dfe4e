"""The suite's own layout: pytest imports test modules by their base name (``rootdir``-relative
packages only where a directory has an ``__init__.py``), so two modules of one name in two
directories stop the whole run at collection ("import file mismatch")."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_no_two_test_modules_share_a_name() -> None:
    names = Counter(path.name for path in TESTS.rglob("test_*.py"))
    assert [name for name, count in names.items() if count > 1] == []
    assert len(names) > 50  # it found the suite
