"""Shared fixtures: a real agent on a throwaway BLOCKPLANE_HOME."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import AgentUnderTest, cleanup_agent


@pytest.fixture(scope="module")
def agent() -> Iterator[AgentUnderTest]:
    # Short path: UNIX socket names are limited to 108 bytes.
    home = Path(tempfile.mkdtemp(prefix="bp-", dir="/tmp"))
    under_test = AgentUnderTest(home)
    under_test.ok("agent", "start")
    try:
        yield under_test
    finally:
        cleanup_agent(under_test)
