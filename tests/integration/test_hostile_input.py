"""Hostile input: generated bad sizes, names, limits and chain addresses; path confinement;
oversized bodies and very long names on every mutating route.

The pure parsers take any input (hypothesis) and either return something inside their contract
or refuse with their stable code. Through the CLI and the API, every bad value is refused with
exit 2 / a 4xx problem, and nothing a user can observe changes: VMs, live XML, disks,
IOThreads, throttle groups, snapshots, pools, jobs and the files in each pool directory.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st

from blockplane.chain.addressing import resolve_element
from blockplane.errors import InvalidInput, NotFound, PathEscape
from blockplane.model.throttle_limits import FIELD_NAMES, ThrottleLimits, field_name
from blockplane.storage.names import confine, validate_name, validate_volume_name
from blockplane.storage.sizes import MAX_SIZE, parse_size
from blockplane.storage.volumes import MAX_VIRTUAL_BYTES
from blockplane.xml.backing_chain import parse_chain
from tests.faults.api_state import differences, observed_state
from tests.harness import AgentUnderTest

pytestmark = pytest.mark.integration

VM = "hvm"
DIR_POOL = "hdir"
LOOP_POOL = "hloop"
GROUP = "hgroup"
SECRET = b"outside the pool: must never change\n"
MAX_THROTTLE = 10**15
PURE = settings(max_examples=200, derandomize=True, database=None, deadline=None)
CLI = settings(
    max_examples=6,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: each example is a CLI run
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
# Arguments on a command line cannot hold NUL (execve) or lone surrogates (not encodable).
ARGUMENT_TEXT = st.text(
    st.characters(exclude_characters="\x00", exclude_categories=["Cs"]), max_size=24
)
HOSTILE_NAMES = st.sampled_from(
    [
        "..", ".", "../x", "../../etc/passwd", "/etc/passwd", "/", "a/b", "a\\b", "-rf", "--help",
        "a..b", ".hidden", " a", "a ", "ä", "a;rm -rf /", "$(reboot)", "`id`", "a|b", "a\nb",
        "x" * 65, "x" * 129, "x" * 5000, "",
    ]
)


# ---------------------------------------------------------------------------------------------
# The pure parsers, on any input
# ---------------------------------------------------------------------------------------------

SIZE_TEXT = st.one_of(
    st.text(max_size=24),
    st.text(alphabet="0123456789.kKmMgGtTpPiIbBeE -+_x\x00\u0661\uff10", max_size=14),
    st.from_regex(r"\s*[0-9]{1,30}(\.[0-9]{0,5})?\s*[kmgtpKMGTP]?(i?[bB])?\s*", fullmatch=True),
)


@PURE
@given(value=st.one_of(SIZE_TEXT, st.integers(), st.booleans()))
def test_parse_size_takes_any_input(value: str | int) -> None:
    try:
        size = parse_size(value)
    except InvalidInput as error:
        assert error.code == "size.invalid" and error.exit_code == 2
    else:
        assert type(size) is int and 1 <= size <= MAX_SIZE
        assert not isinstance(value, bool)


@PURE
@given(
    number=st.integers(1, 2**40),
    unit=st.sampled_from([("", 1), ("K", 1 << 10), ("M", 1 << 20), ("G", 1 << 30), ("T", 1 << 40)]),
    suffix=st.sampled_from(["", "B", "iB", "b"]),
)
def test_sizes_round_trip(number: int, unit: tuple[str, int], suffix: str) -> None:
    letter, factor = unit
    text = f"{number}{letter}{suffix if letter else ''}"
    if number * factor > MAX_SIZE:
        with pytest.raises(InvalidInput):
            parse_size(text)
    else:
        assert parse_size(text) == number * factor


NAMEISH = st.one_of(HOSTILE_NAMES, st.text(max_size=140), st.from_regex(r"[A-Za-z0-9._-]{0,130}"))


def _plain(name: str, longest: int) -> bool:
    return (
        1 <= len(name) <= longest
        and name.isascii()
        and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name) is not None
        and ".." not in name
    )


@PURE
@given(name=NAMEISH)
def test_names_are_plain_or_refused(name: str) -> None:
    for kind in ("pool", "vm", "snapshot"):
        try:
            assert validate_name(kind, name) == name
        except InvalidInput as error:
            assert error.code == f"{kind}.name_invalid" and error.exit_code == 2
            assert not _plain(name, 64)
        else:
            assert _plain(name, 64)
    try:
        validate_volume_name(name)
    except PathEscape as error:
        assert error.code == "path.escape" and not _plain(name, 128)
    else:
        assert _plain(name, 128)


@dataclass(frozen=True)
class Planted:
    """A pool directory with symlinks planted in it, and a directory outside it."""

    pool: Path
    outside: Path
    escaping: tuple[str, ...]
    inside: tuple[str, ...]


@pytest.fixture(scope="module")
def planted() -> Iterator[Planted]:
    root = Path(tempfile.mkdtemp(prefix="bp-planted-", dir="/tmp"))
    pool, outside = root / "pool", root / "outside"
    pool.mkdir()
    outside.mkdir()
    (outside / "secret").write_bytes(SECRET)
    (pool / "real.img").write_bytes(b"")
    links = {
        "relative.img": Path("../outside/secret"),
        "absolute.img": outside / "secret",
        "dangling.img": outside / "not-yet",
        "loop.img": Path("loop.img"),
        "parent.img": Path(".."),
        "root.img": Path("/"),
        "inner.img": Path("real.img"),
    }
    for name, destination in links.items():
        (pool / name).symlink_to(destination)
    try:
        yield Planted(
            pool,
            outside,
            ("relative", "absolute", "dangling", "loop", "parent", "root"),
            ("real", "inner", "new-volume"),
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_planted_symlinks_are_refused(planted: Planted) -> None:
    for name in planted.escaping:
        with pytest.raises(PathEscape):
            confine(planted.pool, name, suffix=".img")
    root = planted.pool.resolve()
    for name in planted.inside:
        assert confine(planted.pool, name, suffix=".img").parent == root


@PURE
@given(data=st.data())
def test_confine_never_leaves_the_pool(planted: Planted, data: st.DataObject) -> None:
    links = st.sampled_from([*planted.escaping, *planted.inside])
    name = data.draw(st.one_of(links, NAMEISH, links.map(lambda n: f"{n}/..")))
    suffix = data.draw(st.sampled_from(["", ".img"]))
    root = Path(os.path.realpath(planted.pool))
    try:
        path = confine(planted.pool, name, suffix=suffix)
    except PathEscape as error:
        assert error.exit_code == 2
    else:
        assert path != root and path.is_relative_to(root)
        assert name not in planted.escaping or suffix == ""
    assert (planted.outside / "secret").read_bytes() == SECRET
    assert not (planted.outside / "not-yet").exists()


LIMIT_KEYS = st.one_of(
    st.sampled_from(FIELD_NAMES),
    st.sampled_from(FIELD_NAMES).map(lambda name: name.replace("_", "-")),
    st.text(max_size=30),
)
LIMIT_VALUES = st.one_of(
    st.integers(),
    st.booleans(),
    st.floats(),
    st.none(),
    st.text(max_size=20),
    st.from_regex(r"\s?-?[0-9]{1,25}\s?", fullmatch=True),
    st.just("9" * 5000),
)
LIMIT_CODES = {
    "throttle.unknown_field",
    "throttle.duplicate_field",
    "throttle.not_integer",
    "throttle.negative",
    "throttle.value_too_large",
}


@PURE
@given(mapping=st.dictionaries(LIMIT_KEYS, LIMIT_VALUES, max_size=6))
def test_limits_parse_or_refuse(mapping: dict[str, object]) -> None:
    try:
        limits = ThrottleLimits.from_mapping(mapping)
    except InvalidInput as error:
        assert error.code in LIMIT_CODES and error.exit_code == 2
        return
    for key, value in mapping.items():
        assert not isinstance(value, bool)
        assert isinstance(value, int | str)
        assert getattr(limits, field_name(key)) == int(value) >= 0
    assert all(type(number) is int and number >= 0 for number in limits.to_dict().values())


CHAIN = parse_chain(
    (Path(__file__).parent.parent / "unit" / "data" / "chain_snapshot.xml").read_text(), "vda"
)
ADDRESSES = st.one_of(
    st.text(max_size=40),
    st.from_regex(r"vd[a-z]?(\[-?[0-9]{0,25}\]?)*", fullmatch=True),
    st.text(max_size=40).map(lambda text: "/" + text),
    st.sampled_from([element.path for element in CHAIN.elements]).map(
        lambda path: path.replace("/img/", "/img/../img//./")
    ),
    st.sampled_from(["/x\x00y", "vda\x00", "vda[1]\n", "vda[" + "9" * 5000 + "]", "/", "//"]),
)


@PURE
@given(spec=ADDRESSES)
def test_chain_addresses_resolve_or_refuse(spec: str) -> None:
    try:
        element = resolve_element(CHAIN, spec, canonical=os.path.realpath)
    except (InvalidInput, NotFound) as error:
        assert error.code in {"chain.address_invalid", "chain.element_not_found"}
        assert error.exit_code == 2
    else:
        assert element in CHAIN.elements


# ---------------------------------------------------------------------------------------------
# The same values end to end, through the CLI, against a real agent
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    agent: AgentUnderTest
    outside: Path

    def state(self) -> dict[str, Any]:
        with self.agent.http() as client:
            return observed_state(client, [self.outside])

    def refused(self, *args: str) -> str:
        """Run the CLI; it must exit 2 and change nothing. Returns stderr."""
        before = self.state()
        result = self.agent.cli(*args, timeout=120)
        after = self.state()
        assert result.returncode == 2, f"{args} -> {result.returncode}: {result.stderr}"
        assert differences(before, after) == [], args
        assert (self.outside / "secret").read_bytes() == SECRET
        return result.stderr


@pytest.fixture(scope="module")
def target(agent: AgentUnderTest) -> Iterator[Target]:
    outside = Path(tempfile.mkdtemp(prefix="bp-outside-", dir="/tmp"))
    (outside / "secret").write_bytes(SECRET)
    (outside / "dir").mkdir()
    agent.ok("pool", "create", DIR_POOL, "--type", "dir")
    agent.ok("pool", "create", LOOP_POOL, "--type", "loop")
    agent.ok("vm", "create", VM, "--memory", "256M", "--start")
    agent.ok("disk", "attach", VM, "--pool", DIR_POOL, "--size", "16M")
    agent.ok("throttle", "set", VM, GROUP, "--total-iops-sec", "1000")
    dir_pool = agent.home / "pools" / DIR_POOL
    loop_pool = agent.home / "pools" / LOOP_POOL
    (dir_pool / "evil").symlink_to(outside / "secret")
    (dir_pool / "ghost").symlink_to(outside / "new-file")
    (dir_pool / "up").symlink_to(outside / "dir")
    (loop_pool / "evil.img").symlink_to(outside / "secret")
    (loop_pool / "ghost.img").symlink_to(outside / "new-file")
    try:
        yield Target(agent, outside)
    finally:
        shutil.rmtree(outside, ignore_errors=True)


def _bad_size(text: str) -> bool:
    try:
        return parse_size(text) > MAX_VIRTUAL_BYTES
    except InvalidInput:
        return True


@CLI
@given(size=st.one_of(ARGUMENT_TEXT, st.sampled_from(["0", "-1", "1.5", "65T", "8E", "1e3"])))
def test_cli_refuses_bad_sizes(target: Target, size: str) -> None:
    assume(_bad_size(size))
    target.refused("disk", "attach", VM, "--pool", DIR_POOL, f"--size={size}")


@CLI
@given(name=st.one_of(HOSTILE_NAMES, ARGUMENT_TEXT))
def test_cli_refuses_bad_volume_names(target: Target, name: str) -> None:
    assume(name and "\x00" not in name)
    try:
        validate_volume_name(name)
        assume(False)
    except PathEscape:
        pass
    target.refused("disk", "attach", VM, "--pool", DIR_POOL, "--size", "1M", f"--name={name}")


@CLI
@given(name=st.one_of(HOSTILE_NAMES, ARGUMENT_TEXT))
def test_cli_refuses_bad_pool_names(target: Target, name: str) -> None:
    assume("\x00" not in name)
    try:
        validate_name("pool", name)
        assume(False)
    except InvalidInput:
        pass
    target.refused("pool", "create", "--type", "dir", "--", name)


@CLI
@given(
    flag=st.sampled_from(FIELD_NAMES).map(lambda name: name.replace("_", "-")),
    value=st.one_of(
        ARGUMENT_TEXT,
        st.sampled_from(["-1", "1.5", "1e3", " 5", "0x10", str(MAX_THROTTLE + 1), "9" * 5000]),
    ),
)
def test_cli_refuses_bad_limits(target: Target, flag: str, value: str) -> None:
    assume(re.fullmatch(r"[0-9]+", value) is None or int(value) > MAX_THROTTLE)
    target.refused("throttle", "set", VM, GROUP, f"--{flag}={value}")


@CLI
@given(
    command=st.sampled_from([("commit", "--top"), ("commit", "--base"), ("pull", "--base")]),
    address=st.one_of(
        ARGUMENT_TEXT,
        st.from_regex(r"vd[a-z](\[[0-9]{0,12}\]?)?", fullmatch=True),
        st.sampled_from(["vda[1]", "vdb[0]", "/etc/passwd", "/", "vda[-1]", "vda[01]"]),
    ),
)
def test_cli_refuses_bad_chain_addresses(
    target: Target, command: tuple[str, str], address: str
) -> None:
    # vda has a single element: no address makes a commit or a pull valid, so none may act.
    verb, option = command
    target.refused(verb, VM, "vda", f"{option}={address}")


# ---------------------------------------------------------------------------------------------
# Path confinement through the CLI and the API
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pool", "name"),
    [
        (DIR_POOL, "evil"),  # symlink to a file outside
        (DIR_POOL, "ghost"),  # dangling symlink to a path outside
        (DIR_POOL, "up"),  # symlink to a directory outside
        (LOOP_POOL, "evil"),  # evil.img, the loop pool's backing file, points outside
        (LOOP_POOL, "ghost"),
        (DIR_POOL, ".."),
        (DIR_POOL, "../../outside"),
        (DIR_POOL, "/etc/passwd"),
    ],
)
def test_attach_name_cannot_leave_the_pool(target: Target, pool: str, name: str) -> None:
    stderr = " ".join(
        target.refused("disk", "attach", VM, "--pool", pool, "--size", "1M", f"--name={name}")
        .split()
    )
    assert "outside" in stderr or "not allowed" in stderr
    assert not (target.outside / "new-file").exists()


def test_attach_name_with_nul_is_refused(target: Target) -> None:
    _refused_over_api(
        target, "POST", f"/v1/vms/{VM}/disks", {"pool": DIR_POOL, "size": "1M", "name": "a\x00b"}
    )


@pytest.mark.parametrize(
    "path",
    ["relative/dir", "/tmp/../etc", "/etc/passwd", "/proc/blockplane-pool",
     "/tmp/bp-hostile-missing/" + "x" * 300, "/dev/null"],
)
def test_pool_path_is_refused(target: Target, path: str) -> None:
    target.refused("pool", "create", "hostile", "--type", "dir", f"--path={path}")
    assert not Path("/tmp/bp-hostile-missing").exists()  # no parent left behind


def test_pool_path_through_a_symlink_is_resolved_and_refused(target: Target) -> None:
    link = target.outside / "to-etc"
    link.symlink_to("/etc")
    try:
        stderr = target.refused("pool", "create", "hostile", "--type", "dir", f"--path={link}")
        assert "/etc" in "".join(stderr.split())
    finally:
        link.unlink()


def test_pool_path_with_nul_is_refused(target: Target) -> None:
    _refused_over_api(target, "POST", "/v1/pools", {"name": "hostile", "type": "dir",
                                                    "path": "/tmp/a\x00b"})


def test_copy_dest_cannot_leave_a_pool(target: Target) -> None:
    pool_dir = target.agent.home / "pools" / DIR_POOL
    for dest in (
        target.outside / "copy.qcow2",
        pool_dir / ".." / ".." / "copy.qcow2",
        pool_dir / "evil",
        pool_dir / "ghost",
        pool_dir / "up" / "copy.qcow2",
        Path("relative.qcow2"),
    ):
        target.refused("copy", VM, "vda", f"--dest={dest}")
    assert not (target.outside / "new-file").exists()
    assert not (target.outside / "dir" / "copy.qcow2").exists()
    _refused_over_api(target, "POST", f"/v1/vms/{VM}/disks/vda/copy",
                      {"dest": f"{pool_dir}/a\x00b"})


def test_backup_dest_cannot_leave_a_pool(target: Target) -> None:
    pool_dir = target.agent.home / "pools" / DIR_POOL
    for dest in (target.outside, pool_dir / "up", pool_dir / ".." / "..", Path("rel")):
        target.refused("backup", VM, f"--dest={dest}")
    assert list((target.outside / "dir").iterdir()) == []
    _refused_over_api(target, "POST", f"/v1/vms/{VM}/backup", {"dest": f"{pool_dir}/a\x00b"})


def test_chain_address_with_nul_is_refused(target: Target) -> None:
    for verb, field in (("commit", "top"), ("commit", "base"), ("pull", "base")):
        _refused_over_api(target, "POST", f"/v1/vms/{VM}/disks/vda/{verb}", {field: "/x\x00y"})


def test_lone_surrogates_are_refused(target: Target) -> None:
    # pydantic refuses them in strings but not in mapping keys, which error details echo.
    for method, path, body in (
        ("PUT", f"/v1/vms/{VM}/throttle-groups/{GROUP}", {"limits": {"\ud800": 1}}),
        ("POST", f"/v1/vms/{VM}/disks", {"pool": DIR_POOL, "size": "1M",
                                         "limits": {"\udfff": 1}}),
        ("POST", "/v1/pools", {"name": "p", "type": "dir", "path": "/tmp/\ud800"}),
    ):
        _refused_over_api(target, method, path, body)


# ---------------------------------------------------------------------------------------------
# Oversized bodies and very long names, on every mutating route
# ---------------------------------------------------------------------------------------------

PATH_VALUES = {"vm": VM, "name": DIR_POOL, "group": GROUP, "target": "vda", "job_id": "nojob",
               "volume": "novolume", "checkpoint": "nocheckpoint"}
LONG = "n" * 5000


def _mutating_routes(client: httpx.Client) -> list[tuple[str, str]]:
    document = client.get("/v1/openapi.json").json()
    return [
        (method.upper(), path)
        for path, operations in document["paths"].items()
        for method in operations
        if method.upper() in ("POST", "PUT", "PATCH", "DELETE")
    ]


def _fill(path: str, **override: str) -> str:
    values = {**PATH_VALUES, **override}
    return re.sub(
        r"\{(\w+)\}", lambda match: quote(values[match.group(1)], safe=""), path
    )


def _refused_over_api(
    target: Target,
    method: str,
    path: str,
    body: Any = None,
    content: bytes | None = None,
    *,
    compare: bool = True,
) -> httpx.Response:
    """Send one request: it must get a 4xx problem and (``compare``) change nothing."""
    before = target.state() if compare else {}
    if content is None:
        # json.dumps escapes NUL and lone surrogates (\u0000, \ud800), so they reach the handler.
        content = json.dumps(body).encode()
    with target.agent.http() as client:
        response = client.request(
            method, path, content=content, headers={"content-type": "application/json"}
        )
    assert 400 <= response.status_code < 500, f"{method} {path}: {response.text[:300]}"
    assert response.headers["content-type"].startswith("application/problem+json")
    assert {"type", "title", "status", "detail", "code"} <= set(response.json())
    if compare:
        assert differences(before, target.state()) == [], f"{method} {path}"
    return response


def test_every_mutating_route_refuses_an_oversized_body(target: Target) -> None:
    oversized = b'{"name": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    with target.agent.http() as client:
        routes = _mutating_routes(client)
    assert len(routes) >= 20
    before = target.state()
    for method, path in routes:
        declared = _refused_over_api(
            target, method, _fill(path), content=oversized, compare=False
        )
        assert declared.status_code == 413 and declared.json()["code"] == "request.too_large"

        def chunks() -> Iterator[bytes]:  # no Content-Length: the limit counts what arrives
            for _ in range(20):
                yield b" " * 65536

        with target.agent.http() as client:
            streamed = client.request(method, _fill(path), content=chunks())
        assert streamed.status_code == 413, f"{method} {path}: {streamed.text[:200]}"
    assert differences(before, target.state()) == []
    print(f"\noversized bodies refused: {2 * len(routes)} over {len(routes)} mutating routes")


def test_every_mutating_route_refuses_very_long_names(target: Target) -> None:
    with target.agent.http() as client:
        routes = _mutating_routes(client)
    refused = 0
    before = target.state()
    for method, path in routes:
        for parameter in re.findall(r"\{(\w+)\}", path):
            _refused_over_api(
                target, method, _fill(path, **{parameter: LONG}), body={}, compare=False
            )
            refused += 1
    long_bodies = [
        ("POST", "/v1/pools", {"name": LONG, "type": "dir"}),
        ("POST", "/v1/vms", {"name": LONG}),
        ("POST", f"/v1/vms/{VM}/disks", {"pool": DIR_POOL, "size": "1M", "name": LONG}),
        ("POST", f"/v1/vms/{VM}/disks", {"pool": LONG, "size": "1M"}),
        ("POST", f"/v1/vms/{VM}/disks", {"pool": DIR_POOL, "size": "1M",
                                         "throttle_groups": [LONG]}),
        ("POST", f"/v1/vms/{VM}/snapshots", {"name": LONG}),
        ("POST", f"/v1/vms/{VM}/disks/vda/copy", {"pool": LONG}),
        ("POST", f"/v1/vms/{VM}/disks/vda/commit", {"top": LONG}),
        ("POST", f"/v1/vms/{VM}/backup", {"dest": "/" + LONG}),
        ("PUT", f"/v1/vms/{VM}/throttle-groups/{GROUP}", {"limits": {LONG: 1}}),
    ]
    for method, path, body in long_bodies:
        _refused_over_api(target, method, path, body, compare=False)
        refused += 1
    assert differences(before, target.state()) == []
    print(f"\nlong names refused: {refused} requests over {len(routes)} mutating routes")
