"""The Ceph client's pure parts: JSON answers of ceph/rbd, failure mapping, names, arguments.

The samples are answers and messages Ceph 16.2.15 gave on this host (the df with pools is the
format a cluster with a manager reports).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from blockplane.errors import BlockplaneError, InvalidInput
from blockplane.storage.ceph import (
    CephConnection,
    ClusterUsage,
    ImageUsage,
    PoolDf,
    check_name,
    parse_df,
    parse_du,
    parse_image_info,
    parse_image_list,
    parse_snapshots,
)
from blockplane.storage.ceph_errors import (
    CephAuthFailed,
    CephConfInvalid,
    CephError,
    CephImageBusy,
    CephImageExists,
    CephImageNotFound,
    CephPoolMissing,
    CephSnapshotNotFound,
    CephUnreachable,
    classify_failure,
    redact,
)

KEY = "AQBuvjNpAAAAABAAgBcaDkFNRu8omPoe5jJXKg=="

DF_WITHOUT_MANAGER = (
    '{"stats":{"total_bytes":0,"total_avail_bytes":0,"total_used_bytes":0,'
    '"total_used_raw_bytes":0,"total_used_raw_ratio":0,"num_osds":0,"num_per_pool_osds":0,'
    '"num_per_pool_omap_osds":0},"stats_by_class":{},"pools":[]}'
)
DF_WITH_MANAGER = (
    '{"stats":{"total_bytes":2147483648,"total_avail_bytes":2000000000,'
    '"total_used_bytes":147483648,"total_used_raw_bytes":147483648,'
    '"total_used_raw_ratio":0.0687,"num_osds":1,"num_per_pool_osds":1,'
    '"num_per_pool_omap_osds":1},"stats_by_class":{"hdd":{"total_bytes":2147483648}},'
    '"pools":[{"name":"rbd","id":1,"stats":{"stored":8388608,"stored_data":8388608,'
    '"stored_omap":0,"objects":5,"kb_used":8192,"bytes_used":8388608,"data_bytes_used":8388608,'
    '"omap_bytes_used":0,"percent_used":0.004,"max_avail":1900000000,"quota_objects":0,'
    '"quota_bytes":0,"dirty":0,"rd":1,"rd_bytes":4096,"wr":10,"wr_bytes":8388608,'
    '"compress_bytes_used":0,"compress_under_bytes":0,"stored_raw":8388608,'
    '"avail_raw":1900000000}}]}'
)
DU_POOL = (
    '{"images":[{"name":"a","id":"101077fa437f","snapshot":"s1","snapshot_id":4,'
    '"provisioned_size":8388608,"used_size":4194304},{"name":"a","id":"101077fa437f",'
    '"provisioned_size":8388608,"used_size":4194304},{"name":"b","id":"101889465fba",'
    '"provisioned_size":4194304,"used_size":0}],"total_provisioned_size":12582912,'
    '"total_used_size":8388608}'
)
DU_IMAGE = (
    '{"images":[{"name":"a","id":"101077fa437f","snapshot":"s1","snapshot_id":4,'
    '"provisioned_size":8388608,"used_size":4194304},{"name":"a","id":"101077fa437f",'
    '"provisioned_size":8388608,"used_size":4194304}]}'
)
LS_LONG = (
    '[{"image":"a","id":"101077fa437f","size":8388608,"format":2},{"image":"a",'
    '"id":"101077fa437f","snapshot":"s1","snapshot_id":4,"size":8388608,"format":2,'
    '"protected":"false"},{"image":"b","id":"101889465fba","size":4194304,"format":2}]'
)
INFO = (
    '{"name":"img1","id":"101022acaa4b","size":67108864,"objects":16,"order":22,'
    '"object_size":4194304,"snapshot_count":0,"block_name_prefix":"rbd_data.101022acaa4b",'
    '"format":2,"features":["layering","exclusive-lock","object-map","fast-diff",'
    '"deep-flatten"],"op_features":[],"flags":[],"create_timestamp":"Sun Dec  6 02:32:26 2026",'
    '"access_timestamp":"Sun Dec  6 02:32:26 2026","modify_timestamp":"Sun Dec  6 02:32:26 2026"}'
)
SNAPS = (
    '[{"id":4,"name":"s1","size":67108864,"protected":"false","timestamp":"Sun Dec  6 02:43:54 '
    '2026"},{"id":5,"name":"gold","size":67108864,"protected":"true","timestamp":"Sun Dec  6 '
    '02:44:54 2026"}]'
)


def test_df_without_a_manager_reports_no_statistics() -> None:
    cluster, pools = parse_df(DF_WITHOUT_MANAGER)
    assert cluster == ClusterUsage(None, None, None)
    assert pools == {}


def test_df_with_a_manager_gives_pool_and_cluster_figures() -> None:
    cluster, pools = parse_df(DF_WITH_MANAGER)
    assert cluster == ClusterUsage(2147483648, 2000000000, 147483648)
    assert pools == {"rbd": PoolDf("rbd", 8388608, 8388608, 1900000000, 5)}


def test_du_of_a_pool_keeps_snapshot_rows_apart() -> None:
    usage = parse_du(DU_POOL)
    assert usage.images[0] == ImageUsage("a", "s1", 8388608, 4194304)
    assert usage.images[2] == ImageUsage("b", None, 4194304, 0)
    assert (usage.provisioned_bytes, usage.used_bytes) == (12582912, 8388608)


def test_du_of_one_image_has_no_totals_so_they_are_summed_as_rbd_sums_them() -> None:
    usage = parse_du(DU_IMAGE)
    assert (usage.provisioned_bytes, usage.used_bytes) == (8388608, 8388608)


def test_image_list_leaves_out_snapshot_rows() -> None:
    assert [(entry.name, entry.size_bytes) for entry in parse_image_list(LS_LONG)] == [
        ("a", 8388608),
        ("b", 4194304),
    ]
    assert parse_image_list("[]") == ()


def test_image_info() -> None:
    info = parse_image_info(INFO)
    assert (info.name, info.image_id, info.size_bytes, info.object_size_bytes) == (
        "img1",
        "101022acaa4b",
        67108864,
        4194304,
    )
    assert "exclusive-lock" in info.features and info.snapshot_count == 0


def test_snapshots_read_protected_from_its_string() -> None:
    snapshots = parse_snapshots(SNAPS)
    assert [(snap.snapshot_id, snap.name, snap.protected) for snap in snapshots] == [
        (4, "s1", False),
        (5, "gold", True),
    ]


@pytest.mark.parametrize(
    ("parse", "output"),
    [
        (parse_df, "not json"),
        (parse_df, "{}"),
        (parse_df, '{"stats": {"total_bytes": "many"}}'),
        (parse_du, '{"images": [{"name": "a"}]}'),
        (parse_du, "[1]"),
        (parse_image_list, '[{"image": "a"}]'),
        (parse_image_list, "[1]"),
        (parse_image_info, '{"name": "a", "id": "1", "size": true, "object_size": 4}'),
        (parse_snapshots, '[{"id": "4", "name": "s", "size": 1}]'),
    ],
)
def test_malformed_answers_are_ceph_errors_not_crashes(parse: Any, output: str) -> None:
    with pytest.raises(CephError) as malformed:
        parse(output)
    assert malformed.value.code == "ceph.failed"


# Messages seen from rbd (exit code = errno) and the ceph command on this host.
UNREACHABLE_RBD = (
    "2026-12-06T02:43:50.606+0000 7faf 0 monclient(hunting): authenticate timed out after 3\n"
    "rbd: couldn't connect to the cluster!\n"
    "rbd: listing images failed: (110) Connection timed out\n"
)
UNREACHABLE_RBD_WITHOUT_KEYRING = (
    "2026-12-06T02:43:50.690+0000 7f62 -1 auth: unable to find a keyring on /x: (2) No such file "
    "or directory\n" + UNREACHABLE_RBD
)
BAD_KEY_RBD = (
    "2026-12-06T02:43:53.714+0000 7fa6 -1 monclient(hunting): handle_auth_bad_method server "
    "allowed_methods [2] but i only support [2]\n"
    "rbd: couldn't connect to the cluster!\n"
    "rbd: listing images failed: (13) Permission denied\n"
)
BAD_KEY_CEPH = (
    "2026-12-06T02:43:53.798+0000 7fed -1 monclient(hunting): handle_auth_bad_method server "
    "allowed_methods [2] but i only support [2]\n"
    "[errno 13] RADOS permission denied (error connecting to the cluster)\n"
)
NO_KEYRING_RBD = (
    "2026-12-06T02:43:53.838+0000 7f92 -1 auth: unable to find a keyring on /nonexistent: (2) "
    "No such file or directory\n"
    "rbd: couldn't connect to the cluster!\n"
    "rbd: listing images failed: (2) No such file or directory\n"
)
NO_CAPS_RBD = (
    "2026-12-06T02:44:03.678+0000 7f87 -1 librbd::image::CreateRequest: 0x56 "
    "handle_add_image_to_directory: error adding image to directory: (1) Operation not permitted\n"
    "rbd: create error: (1) Operation not permitted\n"
)
NO_POOL_RBD = "rbd: error opening pool 'nopool': (2) No such file or directory\n"


@pytest.mark.parametrize(
    ("returncode", "stderr", "expected", "code"),
    [
        (110, UNREACHABLE_RBD, CephUnreachable, "ceph.unreachable"),
        (110, UNREACHABLE_RBD_WITHOUT_KEYRING, CephUnreachable, "ceph.unreachable"),
        (1, "timed out\n", CephUnreachable, "ceph.unreachable"),
        (13, BAD_KEY_RBD, CephAuthFailed, "ceph.auth"),
        (13, BAD_KEY_CEPH, CephAuthFailed, "ceph.auth"),
        (2, NO_KEYRING_RBD, CephAuthFailed, "ceph.auth"),
        (1, NO_CAPS_RBD, CephAuthFailed, "ceph.auth"),
        (2, NO_POOL_RBD, CephPoolMissing, "ceph.pool_missing"),
        (2, "Error ENOENT: unrecognized pool 'nopool'\n", CephPoolMissing, "ceph.pool_missing"),
        (2, "rbd: error opening image nope: (2) No such file or directory\n", CephImageNotFound,
         "ceph.image_not_found"),
        (2, "rbd: failed to remove snapshot: (2) No such file or directory\n",
         CephSnapshotNotFound, "ceph.snapshot_not_found"),
        (17, "rbd: create error: (17) File exists\n", CephImageExists, "ceph.image_exists"),
        (39, "rbd: image has snapshots - these must be deleted with 'rbd snap purge' before the "
         "image can be removed.\n", CephImageBusy, "ceph.image_busy"),
        (16, "rbd: error: image still has watchers\n", CephImageBusy, "ceph.image_busy"),
        (22, "rbd: shrinking an image is only allowed with the --allow-shrink flag\n", CephError,
         "ceph.failed"),
    ],
)  # fmt: skip
def test_failures_map_to_stable_codes(
    returncode: int, stderr: str, expected: type[BlockplaneError], code: str
) -> None:
    error = classify_failure("op", returncode, stderr, pool="nopool", timeout_s=3)
    assert type(error) is expected
    assert error.code == code


def test_messages_keep_the_tools_own_lines_and_no_key() -> None:
    error = classify_failure("listing", 13, BAD_KEY_RBD + f"key = {KEY}\n")
    assert "Permission denied" in str(error)
    assert KEY not in str(error) and "<key redacted>" in str(error)
    assert "2026-12-06T" not in str(error)


def test_exit_codes_follow_the_error_kind() -> None:
    assert classify_failure("op", 110, UNREACHABLE_RBD).exit_code == 1
    assert classify_failure("op", 13, BAD_KEY_RBD).exit_code == 2
    assert classify_failure("op", 2, NO_POOL_RBD).exit_code == 2


def test_redact_hides_every_key_shaped_string() -> None:
    assert redact(f"a {KEY} b {KEY}") == "a <key redacted> b <key redacted>"


@pytest.mark.parametrize("name", ["", "a/b", "a@b", "-rf", ".hidden", "a b", "é", "x" * 129, KEY])
def test_bad_names_are_refused_before_any_call(name: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        check_name(name, "image")
    assert refused.value.code == "ceph.name_invalid"
    assert KEY not in str(refused.value)


@pytest.mark.parametrize("name", ["rbd", "vm1-vda", "_x", "a.b_c-1"])
def test_plain_names_pass(name: str) -> None:
    assert check_name(name, "image") == name


def test_a_missing_conf_or_keyring_is_refused(tmp_path: Path) -> None:
    conf = tmp_path / "ceph.conf"
    with pytest.raises(CephConfInvalid):
        CephConnection(conf=conf).validate()
    conf.write_text("[global]\n")
    CephConnection(conf=conf).validate()
    with pytest.raises(CephConfInvalid) as refused:
        CephConnection(conf=conf, keyring=tmp_path / "missing.keyring").validate()
    assert refused.value.code == "ceph.conf_invalid" and refused.value.exit_code == 2


def test_arguments_carry_files_and_timeouts_never_a_key(tmp_path: Path) -> None:
    connection = CephConnection(
        conf=tmp_path / "ceph.conf", user="bp", keyring=tmp_path / "k", timeout_s=4
    )
    rbd = connection.arguments("rbd")
    assert rbd[:7] == ["rbd", "--conf", str(tmp_path / "ceph.conf"), "--id", "bp", "--keyring",
                       str(tmp_path / "k")]  # fmt: skip
    assert rbd[rbd.index("--client-mount-timeout") + 1] == "4"
    assert rbd[rbd.index("--rados-osd-op-timeout") + 1] == "4"
    ceph = connection.arguments("ceph")
    assert ceph[ceph.index("--connect-timeout") + 1] == "4"
    assert not any(
        argument.startswith(("--key=", "key=")) or argument == "--key" for argument in rbd + ceph
    )


@pytest.mark.parametrize(("timeout_s", "long_timeout_s"), [(0, 10), (-1, 10), (20, 10)])
def test_timeouts_must_be_positive_and_the_long_one_longer(
    tmp_path: Path, timeout_s: float, long_timeout_s: float
) -> None:
    conf = tmp_path / "ceph.conf"
    conf.write_text("[global]\n")
    with pytest.raises(InvalidInput):
        CephConnection(conf=conf, timeout_s=timeout_s, long_timeout_s=long_timeout_s).validate()
