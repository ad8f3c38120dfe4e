"""Volume names and their confinement to the pool directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blockplane.errors import InvalidInput, PathEscape
from blockplane.storage.names import confine, validate_name, validate_volume_name


@pytest.fixture
def pool(tmp_path: Path) -> Path:
    root = tmp_path / "pool"
    root.mkdir()
    return root


@pytest.mark.parametrize("name", ["vdb", "vm1-disk.0", "A", "a_b-c.d", "9" * 128, "x.qcow2"])
def test_valid_names_stay_in_the_pool(pool: Path, name: str) -> None:
    path = confine(pool, name)
    assert path == pool.resolve() / name
    assert path.parent == pool.resolve()


@pytest.mark.parametrize(
    "name",
    [
        "../../etc/passwd",
        "..",
        ".",
        "/etc/passwd",
        "/",
        "a/b",
        "a\x00b",
        "\x00",
        "",
        ".hidden",
        "-rf",
        "_x",
        "a..b",
        "vdb\n",
        "v db",
        "vdb\\..\\x",
        "d\u00fcsk",
        "a" * 129,
    ],
)
def test_bad_names_are_refused_before_touching_the_disk(pool: Path, name: str) -> None:
    with pytest.raises(PathEscape) as caught:
        confine(pool, name)
    assert caught.value.code == "path.escape"
    assert caught.value.exit_code == 2
    assert "is not allowed" in caught.value.message
    assert list(pool.iterdir()) == []


@pytest.mark.parametrize("name", [None, 5, b"vdb", ["vdb"]])
def test_non_strings_are_refused(name: object) -> None:
    with pytest.raises(PathEscape):
        validate_volume_name(name)


def test_planted_symlink_to_a_file_outside_is_refused(pool: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("keep out")
    (pool / "vdb").symlink_to(secret)
    with pytest.raises(PathEscape) as caught:
        confine(pool, "vdb")
    assert "outside its pool directory" in caught.value.message
    assert str(secret) in caught.value.message


def test_planted_symlink_to_etc_passwd_is_refused(pool: Path) -> None:
    (pool / "passwd").symlink_to("/etc/passwd")
    with pytest.raises(PathEscape):
        confine(pool, "passwd")


def test_dangling_symlink_pointing_outside_is_refused(pool: Path, tmp_path: Path) -> None:
    (pool / "later").symlink_to(tmp_path / "does-not-exist-yet")
    with pytest.raises(PathEscape):
        confine(pool, "later")


def test_relative_symlink_climbing_out_is_refused(pool: Path) -> None:
    (pool / "up").symlink_to("../../../../../../../tmp")
    with pytest.raises(PathEscape):
        confine(pool, "up")


def test_symlink_to_the_pool_root_itself_is_refused(pool: Path) -> None:
    (pool / "self").symlink_to(".")
    with pytest.raises(PathEscape):
        confine(pool, "self")


def test_symlink_loop_is_refused(pool: Path) -> None:
    (pool / "a").symlink_to("b")
    (pool / "b").symlink_to("a")
    with pytest.raises(PathEscape) as caught:
        confine(pool, "a")
    assert "cannot be resolved" in caught.value.message


def test_symlink_within_the_pool_resolves_to_its_target(pool: Path) -> None:
    (pool / "real").write_bytes(b"")
    (pool / "alias").symlink_to("real")
    assert confine(pool, "alias") == pool.resolve() / "real"


def test_pool_root_behind_a_symlink_is_resolved(pool: Path, tmp_path: Path) -> None:
    link = tmp_path / "pool-link"
    link.symlink_to(pool)
    assert confine(link, "vdb") == pool.resolve() / "vdb"


def test_sibling_directory_with_a_common_prefix_is_outside(tmp_path: Path) -> None:
    pool = tmp_path / "pool"
    pool.mkdir()
    (tmp_path / "pool2").mkdir()
    (pool / "vdb").symlink_to(tmp_path / "pool2" / "vdb")
    with pytest.raises(PathEscape):
        confine(pool, "vdb")


def test_suffix_is_appended(pool: Path) -> None:
    assert confine(pool, "vdb", suffix=".img") == pool.resolve() / "vdb.img"
    with pytest.raises(ValueError):
        confine(pool, "vdb", suffix="/../x")


@given(st.text(max_size=200))
def test_any_text_is_either_refused_or_lands_directly_in_the_pool(name: str) -> None:
    root = Path(os.path.realpath("/nonexistent-blockplane-pool"))
    try:
        path = confine(root, name)
    except PathEscape:
        return
    assert path.parent == root
    assert path.name == name


@pytest.mark.parametrize("kind", ["pool", "vm"])
def test_object_names(kind: str) -> None:
    assert validate_name(kind, "web-01.prod") == "web-01.prod"
    assert validate_name(kind, "a" * 64) == "a" * 64
    for bad in ["a" * 65, "", "../x", "a/b", "-x", "a b", "a\x00"]:
        with pytest.raises(InvalidInput) as caught:
            validate_name(kind, bad)
        assert caught.value.code == f"{kind}.name_invalid"
        assert caught.value.exit_code == 2
        assert not isinstance(caught.value, PathEscape)
