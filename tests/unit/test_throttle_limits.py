"""Parsing throttle limits from the CLI, the API and volume descriptors."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blockplane.errors import InvalidInput
from blockplane.model.throttle_limits import FIELD_NAMES, ThrottleLimits, field_name
from blockplane.throttle.validation import validate_limits


def test_field_names_are_the_dataclass_fields_in_libvirt_order() -> None:
    assert tuple(f.name for f in dataclasses.fields(ThrottleLimits)) == FIELD_NAMES
    assert len(FIELD_NAMES) == 19
    assert FIELD_NAMES[:6] == (
        "total_bytes_sec",
        "read_bytes_sec",
        "write_bytes_sec",
        "total_iops_sec",
        "read_iops_sec",
        "write_iops_sec",
    )
    assert FIELD_NAMES[12] == "size_iops_sec"
    assert all(name.endswith("_max_length") for name in FIELD_NAMES[13:])


def test_defaults_are_all_unlimited() -> None:
    limits = ThrottleLimits()
    assert limits.is_zero()
    assert set(limits.to_dict().values()) == {0}
    assert limits.to_dict(nonzero_only=True) == {}


def test_limits_are_frozen() -> None:
    limits = ThrottleLimits()
    with pytest.raises(dataclasses.FrozenInstanceError):
        limits.total_iops_sec = 5  # type: ignore[misc]


@pytest.mark.parametrize("name", FIELD_NAMES)
def test_every_field_parses_in_both_spellings(name: str) -> None:
    dashed = name.replace("_", "-")
    assert getattr(ThrottleLimits.from_mapping({name: 7}), name) == 7
    assert getattr(ThrottleLimits.from_mapping({dashed: "7"}), name) == 7
    assert field_name(dashed) == name


def test_cli_strings_of_digits_are_numbers() -> None:
    limits = ThrottleLimits.from_mapping(
        {"total-iops-sec": "300", "total-iops-sec-max": "0400", "total-iops-sec-max-length": "60"}
    )
    assert limits.to_dict(nonzero_only=True) == {
        "total_iops_sec": 300,
        "total_iops_sec_max": 400,
        "total_iops_sec_max_length": 60,
    }


@pytest.mark.parametrize(
    "value",
    [True, False, 1.5, 300.0, None, "1.5", "3e2", "", " 300", "300 ", "+300", "0x10", "٣", [1]],
)
def test_non_integers_are_refused(value: object) -> None:
    with pytest.raises(InvalidInput) as caught:
        ThrottleLimits.from_mapping({"total_iops_sec": value})
    assert caught.value.code == "throttle.not_integer"
    assert "total_iops_sec" in caught.value.message


@pytest.mark.parametrize("value", [-1, "-1", -(10**20)])
def test_negatives_are_refused(value: object) -> None:
    with pytest.raises(InvalidInput) as caught:
        ThrottleLimits.from_mapping({"read-bytes-sec": value})
    assert caught.value.code == "throttle.negative"
    assert "read_bytes_sec=-" in caught.value.message


def test_unknown_keys_are_refused_with_a_suggestion() -> None:
    with pytest.raises(InvalidInput) as caught:
        ThrottleLimits.from_mapping({"total-iops-sex": 5})
    assert caught.value.code == "throttle.unknown_field"
    assert "total-iops-sex" in caught.value.message
    assert "did you mean total_iops_sec" in caught.value.message


def test_unknown_keys_without_a_close_match_list_the_known_ones() -> None:
    with pytest.raises(InvalidInput) as caught:
        ThrottleLimits.from_mapping({"group_name": "gold"})
    assert caught.value.code == "throttle.unknown_field"
    assert "size_iops_sec" in caught.value.message


def test_a_string_of_thousands_of_digits_is_refused_not_crashed_on() -> None:
    with pytest.raises(InvalidInput) as caught:
        ThrottleLimits.from_mapping({"total_iops_sec": "9" * 5000})
    assert caught.value.code == "throttle.value_too_large"


@given(st.one_of(st.text(max_size=30), st.integers(), st.floats(), st.none(), st.booleans()))
def test_any_value_parses_or_is_refused_as_bad_input(value: object) -> None:
    try:
        limits = ThrottleLimits.from_mapping({"write-iops-sec": value})
    except InvalidInput as error:
        assert error.code in {"throttle.not_integer", "throttle.negative"}
        assert error.details["fields"] == ["write_iops_sec"]
    else:
        assert limits.write_iops_sec == int(value)  # type: ignore[call-overload]


def test_the_same_limit_in_both_spellings_is_refused() -> None:
    with pytest.raises(InvalidInput) as caught:
        ThrottleLimits.from_mapping({"total_iops_sec": 1, "total-iops-sec": 2})
    assert caught.value.code == "throttle.duplicate_field"


def test_parse_errors_are_bad_input_for_the_cli_and_api() -> None:
    with pytest.raises(InvalidInput) as caught:
        ThrottleLimits.from_mapping({"total_iops_sec": -1})
    assert caught.value.exit_code == 2
    assert caught.value.http_status == 400


def test_to_dict_keeps_libvirt_order_and_can_drop_zeros() -> None:
    limits = ThrottleLimits(write_iops_sec=3, total_bytes_sec=1, size_iops_sec=4096)
    assert list(limits.to_dict()) == list(FIELD_NAMES)
    assert list(limits.to_dict(nonzero_only=True).items()) == [
        ("total_bytes_sec", 1),
        ("write_iops_sec", 3),
        ("size_iops_sec", 4096),
    ]
    assert not limits.is_zero()


def test_an_update_replaces_only_the_fields_it_names_as_libvirt_does() -> None:
    current = ThrottleLimits(
        total_iops_sec=150, total_iops_sec_max=300, total_iops_sec_max_length=60
    )
    after = current.updated({"total-bytes-sec": "5", "total_iops_sec_max": 0})
    assert after == ThrottleLimits(
        total_bytes_sec=5, total_iops_sec=150, total_iops_sec_max_length=60
    )
    assert current.updated({}) == current
    # The kept burst length now has no burst rate: QEMU refuses this update, so must we.
    with pytest.raises(InvalidInput) as caught:
        validate_limits(after)
    assert caught.value.code == "throttle.max_length_without_max"


def test_an_update_is_parsed_like_any_input() -> None:
    with pytest.raises(InvalidInput) as caught:
        ThrottleLimits().updated({"total_iops_sec": -3})
    assert caught.value.code == "throttle.negative"


@given(st.fixed_dictionaries({}, optional={name: st.integers(0, 10**16) for name in FIELD_NAMES}))
def test_round_trip_through_a_mapping(values: dict[str, int]) -> None:
    limits = ThrottleLimits.from_mapping(values)
    assert limits.to_dict(nonzero_only=True) == {k: v for k, v in values.items() if v}
    assert ThrottleLimits.from_mapping(limits.to_dict()) == limits
    dashed = {k.replace("_", "-"): str(v) for k, v in values.items()}
    assert ThrottleLimits.from_mapping(dashed) == limits
