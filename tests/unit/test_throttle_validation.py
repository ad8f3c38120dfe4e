"""Throttle limit validation: every rule, its boundaries, and a property against a restatement."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import Phase, example, find, given, settings
from hypothesis import strategies as st

from blockplane.errors import InvalidInput
from blockplane.model.throttle_limits import FIELD_NAMES, ThrottleLimits
from blockplane.throttle.validation import (
    RULE_ORDER,
    Bucket,
    buckets_of,
    validate_buckets,
    validate_group_name,
    validate_limits,
)

TOP = 10**15
UINT_MAX = 4294967295


def code_of(limits: ThrottleLimits, *, allow_all_zero: bool = False) -> str | None:
    try:
        validate_limits(limits, allow_all_zero=allow_all_zero)
    except InvalidInput as error:
        return error.code
    return None


def refused(code: str, **values: Any) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        validate_limits(ThrottleLimits(**values))
    assert caught.value.code == code, caught.value.message
    return caught.value


def accepted(**values: Any) -> None:
    validate_limits(ThrottleLimits(**values))


# -- throttle.not_integer / throttle.negative ---------------------------------------------------


@pytest.mark.parametrize("value", [True, 1.5, 2.0, "3", None])
def test_non_integer_values_are_refused(value: object) -> None:
    error = refused("throttle.not_integer", total_iops_sec=value)
    assert "total_iops_sec" in error.message


@pytest.mark.parametrize("name", FIELD_NAMES)
def test_negative_values_are_refused_in_every_field(name: str) -> None:
    error = refused("throttle.negative", **{name: -1})
    assert f"{name}=-1" in error.message


# -- throttle.value_too_large -------------------------------------------------------------------


@pytest.mark.parametrize("name", FIELD_NAMES)
def test_one_above_1e15_is_refused_in_every_field(name: str) -> None:
    error = refused("throttle.value_too_large", **{name: TOP + 1})
    assert f"{name}={TOP + 1}" in error.message
    assert error.details["fields"] == [name]


@pytest.mark.parametrize("name", FIELD_NAMES[:6])
def test_exactly_1e15_is_accepted(name: str) -> None:
    accepted(**{name: TOP})
    accepted(**{name: TOP, f"{name}_max": TOP})


def test_size_iops_sec_of_1e15_is_accepted_but_not_more() -> None:
    accepted(total_iops_sec=1, size_iops_sec=TOP)
    refused("throttle.value_too_large", total_iops_sec=1, size_iops_sec=TOP + 1)


# -- throttle.all_zero --------------------------------------------------------------------------


def test_a_group_with_every_value_zero_is_refused() -> None:
    error = refused("throttle.all_zero")
    assert "at least one" in error.message


def test_all_zero_means_no_limit_where_that_is_allowed() -> None:
    validate_limits(ThrottleLimits(), allow_all_zero=True)


def test_one_nonzero_value_is_enough() -> None:
    accepted(write_bytes_sec=1)


# -- throttle.burst_length_too_large (UINT_MAX in throttle_limits_to_config) --------------------


def test_burst_length_of_uint_max_is_accepted_and_one_more_is_refused() -> None:
    accepted(total_iops_sec=1, total_iops_sec_max=1, total_iops_sec_max_length=UINT_MAX)
    error = refused(
        "throttle.burst_length_too_large",
        total_iops_sec=1,
        total_iops_sec_max=1,
        total_iops_sec_max_length=UINT_MAX + 1,
    )
    assert "total_iops_sec_max_length=4294967296" in error.message


# -- throttle.total_with_rw ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["bytes", "iops"])
@pytest.mark.parametrize("direction", ["read", "write"])
def test_total_average_with_read_or_write_average_is_refused(kind: str, direction: str) -> None:
    error = refused(
        "throttle.total_with_rw", **{f"total_{kind}_sec": 100, f"{direction}_{kind}_sec": 50}
    )
    assert f"total_{kind}_sec=100 cannot be combined with {direction}_{kind}_sec=50" in (
        error.message
    )


@pytest.mark.parametrize("kind", ["bytes", "iops"])
@pytest.mark.parametrize("direction", ["read", "write"])
def test_total_max_with_read_or_write_max_is_refused(kind: str, direction: str) -> None:
    error = refused(
        "throttle.total_with_rw",
        **{
            f"total_{kind}_sec": 100,
            f"total_{kind}_sec_max": 200,
            f"{direction}_{kind}_sec_max": 300,
        },
    )
    assert f"total_{kind}_sec_max=200 cannot be combined with {direction}_{kind}_sec_max=300" in (
        error.message
    )


def test_total_conflicts_are_checked_averages_first_then_bytes_before_iops() -> None:
    error = refused(
        "throttle.total_with_rw",
        total_bytes_sec=1,
        total_bytes_sec_max=2,
        write_bytes_sec_max=3,
        total_iops_sec=4,
        read_iops_sec=5,
    )
    assert error.message.startswith("total_iops_sec=4 cannot be combined with read_iops_sec=5")
    assert error.details["fields"] == ["total_iops_sec", "read_iops_sec", "write_iops_sec"]


def test_total_with_both_read_and_write_names_both() -> None:
    error = refused("throttle.total_with_rw", total_iops_sec=1, read_iops_sec=2, write_iops_sec=3)
    assert "read_iops_sec=2 or write_iops_sec=3" in error.message


def test_total_and_read_write_of_different_kinds_go_together() -> None:
    accepted(total_bytes_sec=1000, read_iops_sec=10, write_iops_sec=20)
    accepted(read_bytes_sec=1000, write_bytes_sec=1000, total_iops_sec=10)


def test_a_total_average_with_a_read_max_is_not_a_total_conflict() -> None:
    # QEMU pairs averages with averages and maxima with maxima only.
    refused("throttle.max_without_avg", total_iops_sec=100, read_iops_sec_max=200)


# -- throttle.size_without_iops -----------------------------------------------------------------


def test_size_iops_sec_needs_an_iops_average() -> None:
    error = refused("throttle.size_without_iops", size_iops_sec=4096, total_bytes_sec=10**6)
    assert "size_iops_sec=4096" in error.message
    accepted(size_iops_sec=4096, total_iops_sec=100)
    accepted(size_iops_sec=4096, read_iops_sec=100)
    accepted(size_iops_sec=4096, write_iops_sec=100)


def test_an_iops_max_alone_does_not_satisfy_size_iops_sec() -> None:
    refused("throttle.size_without_iops", size_iops_sec=4096, total_iops_sec_max=100)


# -- per bucket: max without avg, max below avg -------------------------------------------------


@pytest.mark.parametrize("bucket", FIELD_NAMES[:6])
def test_max_without_average_is_refused(bucket: str) -> None:
    error = refused("throttle.max_without_avg", **{f"{bucket}_max": 200})
    assert f"{bucket}_max=200 needs {bucket}" in error.message


@pytest.mark.parametrize("bucket", FIELD_NAMES[:6])
def test_max_equal_to_average_is_accepted_and_one_below_is_refused(bucket: str) -> None:
    accepted(**{bucket: 300, f"{bucket}_max": 300})
    accepted(**{bucket: 300, f"{bucket}_max": 301})
    error = refused("throttle.max_below_avg", **{bucket: 300, f"{bucket}_max": 299})
    assert f"{bucket}_max=299 cannot be lower than {bucket}=300" in error.message


# -- per bucket: burst length -------------------------------------------------------------------


@pytest.mark.parametrize("bucket", FIELD_NAMES[:6])
def test_max_length_above_one_without_max_is_refused(bucket: str) -> None:
    error = refused(
        "throttle.max_length_without_max", **{bucket: 100, f"{bucket}_max_length": 2}
    )
    assert f"{bucket}_max_length=2 needs {bucket}_max" in error.message


def test_max_length_of_one_without_max_is_accepted() -> None:
    accepted(total_iops_sec=100, total_iops_sec_max_length=1)


def test_max_length_zero_with_a_max_means_unset_as_in_libvirt() -> None:
    # libvirt omits a 0 length from QMP ("P:"), so QEMU runs its default of 1.
    accepted(total_iops_sec=100, total_iops_sec_max=200, total_iops_sec_max_length=0)
    assert buckets_of(ThrottleLimits(total_iops_sec_max_length=0))[3].burst_length == 1


def test_burst_length_zero_is_refused_at_qemus_level() -> None:
    buckets = list(buckets_of(ThrottleLimits(total_iops_sec=100, total_iops_sec_max=200)))
    buckets[3] = Bucket("total_iops_sec", avg=100, max=200, burst_length=0)
    with pytest.raises(InvalidInput) as caught:
        validate_buckets(buckets)
    assert caught.value.code == "throttle.burst_length_zero"
    assert "total_iops_sec" in caught.value.message


def test_burst_of_exactly_1e15_is_accepted_and_one_more_second_is_refused() -> None:
    # 250000 x 4000000000 = 10**15: the same pair QEMU 10.0 took over QMP; 4000000001 it refused.
    accepted(total_iops_sec=1, total_iops_sec_max=250_000, total_iops_sec_max_length=4_000_000_000)
    error = refused(
        "throttle.burst_too_large",
        total_iops_sec=1,
        total_iops_sec_max=250_000,
        total_iops_sec_max_length=4_000_000_001,
    )
    assert "total_iops_sec_max=250000 x total_iops_sec_max_length=4000000001" in error.message


def test_a_max_of_1e15_allows_only_a_one_second_burst() -> None:
    accepted(read_bytes_sec=1, read_bytes_sec_max=TOP, read_bytes_sec_max_length=1)
    refused(
        "throttle.burst_too_large",
        read_bytes_sec=1,
        read_bytes_sec_max=TOP,
        read_bytes_sec_max_length=2,
    )


def test_buckets_are_checked_in_qemus_order() -> None:
    # total_bytes_sec's bucket comes before read_iops_sec's, whatever the rule numbers say.
    assert (
        code_of(
            ThrottleLimits(
                total_bytes_sec=10,
                total_bytes_sec_max=5,
                read_iops_sec=1,
                read_iops_sec_max_length=5,
            )
        )
        == "throttle.max_below_avg"
    )


def test_rules_before_the_buckets_win() -> None:
    limits = ThrottleLimits(total_iops_sec=1, read_iops_sec=1, write_bytes_sec_max=9)
    assert code_of(limits) == "throttle.total_with_rw"
    assert code_of(ThrottleLimits(total_iops_sec=-1, read_iops_sec=TOP + 1)) == "throttle.negative"


def test_messages_carry_the_fields_for_the_api() -> None:
    error = refused("throttle.max_below_avg", total_iops_sec=300, total_iops_sec_max=200)
    assert error.details["fields"] == ["total_iops_sec_max", "total_iops_sec"]
    assert error.exit_code == 2


# -- the property: validate_limits against an independent statement of the rules ---------------

BUCKETS = [f"{d}_{k}_sec" for k in ("bytes", "iops") for d in ("total", "read", "write")]
EVERY = [*BUCKETS, *(b + "_max" for b in BUCKETS), "size_iops_sec"]
EVERY += [b + "_max_length" for b in BUCKETS]
def oracle(d: dict[str, Any], group: bool) -> str | None:
    """The rules again, as a flat list of (code, broken?); the first broken one is the answer."""
    if any(type(d[f]) is not int for f in EVERY):
        return "throttle.not_integer"
    rules: list[tuple[str, bool]] = [
        ("throttle.negative", min(d[f] for f in EVERY) < 0),
        ("throttle.value_too_large", max(d[f] for f in EVERY) > 10**15),
        ("throttle.all_zero", group and sum(d[f] for f in EVERY) == 0),
        ("throttle.burst_length_too_large", max(d[b + "_max_length"] for b in BUCKETS) >= 2**32),
    ]
    for sfx in ("", "_max"):
        for kind in ("bytes", "iops"):
            t, r, w = (d[f"{x}_{kind}_sec{sfx}"] for x in ("total", "read", "write"))
            rules.append(("throttle.total_with_rw", t > 0 and r + w > 0))
    iops = d["total_iops_sec"] + d["read_iops_sec"] + d["write_iops_sec"]
    rules.append(("throttle.size_without_iops", d["size_iops_sec"] > 0 and iops == 0))
    for b in BUCKETS:
        avg, mx = d[b], d[b + "_max"]
        length = d[b + "_max_length"] if d[b + "_max_length"] != 0 else 1
        rules += [
            ("throttle.burst_length_zero", length == 0),
            ("throttle.max_length_without_max", length >= 2 and mx == 0),
            ("throttle.burst_too_large", mx * length > 10**15),
            ("throttle.max_without_avg", mx > 0 and avg == 0),
            ("throttle.max_below_avg", 0 < mx < avg),
        ]
    return next((code for code, broken in rules if broken), None)


interesting = st.one_of(
    st.just(0),
    st.integers(1, 5),
    st.sampled_from([10, 100, 1000, 250_000, UINT_MAX, UINT_MAX + 1, 4_000_000_000, TOP, TOP + 1]),
    st.integers(0, 2 * TOP),
)
wrong = st.one_of(st.integers(-3, -1), st.booleans(), st.floats(allow_nan=False), st.just("7"))


@st.composite
def limit_sets(draw: st.DrawFn, bad_values: bool) -> dict[str, Any]:
    chosen = draw(st.lists(st.sampled_from(EVERY), max_size=6, unique=True))
    values: dict[str, Any] = dict.fromkeys(EVERY, 0)
    for name in chosen:
        use_wrong = bad_values and draw(st.integers(0, 9)) == 0
        values[name] = draw(wrong if use_wrong else interesting)
    return values


@st.composite
def plausible_limit_sets(draw: st.DrawFn) -> dict[str, Any]:
    """Limits built bucket by bucket around the boundaries, so that many are valid."""
    values: dict[str, Any] = dict.fromkeys(EVERY, 0)
    for b in draw(st.lists(st.sampled_from(BUCKETS), max_size=3, unique=True)):
        avg = draw(st.sampled_from([0, 1, 100, 300, TOP]))
        values[b] = avg
        values[b + "_max"] = draw(
            st.sampled_from([0, avg, avg + 1, max(avg - 1, 0), 250_000, TOP])
        )
        values[b + "_max_length"] = draw(st.sampled_from([0, 1, 2, 60, 4_000_000_000, UINT_MAX]))
    values["size_iops_sec"] = draw(st.sampled_from([0, 0, 4096]))
    return values


def check_against_oracle(values: dict[str, Any], group: bool) -> None:
    expected = oracle(values, group)
    try:
        validate_limits(ThrottleLimits(**values), allow_all_zero=not group)
    except InvalidInput as error:
        assert error.code == expected, (error.message, values)
        assert error.code in RULE_ORDER
        assert all(field in error.message for field in error.details.get("fields", [])[:1])
    else:
        assert expected is None, (expected, values)


@settings(max_examples=200)
@given(limit_sets(bad_values=True), st.booleans())
@example(dict.fromkeys(EVERY, 0), True)
@example(dict.fromkeys(EVERY, 0), False)
def test_random_limit_sets_agree_with_the_oracle(values: dict[str, Any], group: bool) -> None:
    check_against_oracle(values, group)


@settings(max_examples=200)
@given(plausible_limit_sets(), st.booleans())
def test_plausible_limit_sets_agree_with_the_oracle(values: dict[str, Any], group: bool) -> None:
    check_against_oracle(values, group)


def test_the_plausible_strategy_finds_valid_and_invalid_sets() -> None:
    quick = settings(database=None, phases=[Phase.generate])
    valid = find(plausible_limit_sets(), lambda v: oracle(v, True) is None, settings=quick)
    invalid = find(plausible_limit_sets(), lambda v: oracle(v, True) is not None, settings=quick)
    assert oracle(valid, True) is None
    assert oracle(invalid, True) is not None


def test_rule_order_lists_every_code_once() -> None:
    assert len(RULE_ORDER) == len(set(RULE_ORDER)) == 12


# -- group names --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["a", "gold", "Tier-1.b_c", "z" * 64, "vm1-total", "1gold", "_x", "-x", ".x", "9"]
)
def test_valid_group_names(name: str) -> None:
    validate_group_name(name)


@pytest.mark.parametrize(
    "name",
    ["", "z" * 65, "has space", "ümlaut", "é", "a/b", "a\n", "a:b", "a,b", None, 5],
)
def test_invalid_group_names(name: object) -> None:
    with pytest.raises(InvalidInput) as caught:
        validate_group_name(name)
    assert caught.value.code == "throttle.name_invalid"
    assert repr(name) in caught.value.message


def test_generated_names_are_reserved_for_blockplane() -> None:
    with pytest.raises(InvalidInput) as caught:
        validate_group_name("blockplane-disk-vda")
    assert caught.value.code == "throttle.name_reserved"
    validate_group_name("blockplane-disk-vda", generated=True)


def name_oracle(name: str) -> bool:
    def allowed(c: str) -> bool:
        return c.isascii() and (c.isalnum() or c in "_.-")

    return 1 <= len(name) <= 64 and all(allowed(c) for c in name)


@given(st.text(alphabet=st.sampled_from("aZ09_.-/ é\n:"), max_size=70))
def test_group_names_agree_with_the_oracle(name: str) -> None:
    try:
        validate_group_name(name, generated=True)
    except InvalidInput as error:
        assert error.code == "throttle.name_invalid"
        assert not name_oracle(name)
    else:
        assert name_oracle(name)
