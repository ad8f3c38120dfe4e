"""Shared fixtures: a real agent on a throwaway BLOCKPLANE_HOME."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
from xdist.remote import Producer
from xdist.scheduler import LoadScopeScheduling

from tests.failure_logs import keep_logs
from tests.harness import AgentUnderTest, cleanup_agent
from tests.lab_support import LAB_MODULES
from tests.lab_support import ceph_lab as ceph_lab  # ... and its lab with Ceph
from tests.lab_support import lab as lab  # the session's lab of simulated hosts

# libvirt probes QEMU's capabilities once per embed root (seconds under TCG) and caches the
# result under the root; every test module has a root of its own, so hand each the cache the
# first one made. libvirt re-validates it (binary, versions) and probes again if it is stale.
CAPABILITIES = Path("libvirt") / "cache" / "qemu" / "capabilities"


@pytest.fixture(scope="session")
def capabilities_cache() -> Iterator[Path]:
    cache = Path(tempfile.mkdtemp(prefix="bp-caps-", dir="/tmp"))
    try:
        yield cache
    finally:
        shutil.rmtree(cache, ignore_errors=True)


@pytest.fixture(scope="module")
def agent(capabilities_cache: Path) -> Iterator[AgentUnderTest]:
    # Short path: UNIX socket names are limited to 108 bytes.
    home = Path(tempfile.mkdtemp(prefix="bp-", dir="/tmp"))
    probed = home / CAPABILITIES
    if any(capabilities_cache.iterdir()):
        shutil.copytree(capabilities_cache, probed)
    under_test = AgentUnderTest(home)
    under_test.ok("agent", "start")
    if not any(capabilities_cache.iterdir()) and probed.is_dir():
        shutil.copytree(probed, capabilities_cache, dirs_exist_ok=True)
    try:
        yield under_test
    finally:
        cleanup_agent(under_test)


# Under pytest-xdist (`make test` runs two workers) each work unit is a whole module, since the
# agent fixture is module-scoped, and the modules that boot the Linux test guest form one unit
# that runs them one after another: two TCG guests at once on a small host would turn their
# timing into a test of the host. (xdist's own --dist loadgroup cannot do this under pytest 9:
# it renames node ids through an attribute pytest no longer reads.)
LINUX_GUEST_MODULES = (
    "tests/e2e/",
    "tests/faults/test_guest_under_faults.py",
    "tests/faults/test_concurrency.py",
    "tests/faults/test_hung_vm.py",
    "tests/faults/test_rbd_cluster_faults.py",
    "tests/integration/test_thin_monitor.py",
)


# The modules that use the system daemon (tests/system_daemon.py) form one unit: one of them
# kills and restarts libvirtd, and each stops the daemon it started at its end, which the others
# must not meet half-way.
SYSTEM_DAEMON_MODULES = (
    "tests/faults/test_libvirtd_restarted.py",
    "tests/integration/test_adopt.py",
    "tests/integration/test_plan_matches_attach.py",
    "tests/integration/test_rbd_system_daemon.py",
)


# The modules that use the lab (tests/lab_support.py) form one unit too, so one worker brings
# the session's lab up once. A lab module that boots the Linux guest belongs here rather than
# with LINUX_GUEST_MODULES: it may then run beside one of those.
class ModuleScheduling(LoadScopeScheduling):  # type: ignore[misc]  # xdist has no types
    def _split_scope(self, nodeid: str) -> str:
        module = nodeid.split("::", 1)[0]
        if module.startswith(LAB_MODULES):
            return "lab"
        if module.startswith(SYSTEM_DAEMON_MODULES):
            return "system-daemon"
        return "linux-guest" if module.startswith(LINUX_GUEST_MODULES) else module


def pytest_xdist_make_scheduler(config: pytest.Config, log: Producer) -> ModuleScheduling:
    return ModuleScheduling(config, log)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed:
        keep_logs(item, report)
    return report
