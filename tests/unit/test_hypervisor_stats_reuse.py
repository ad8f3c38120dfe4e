"""Which kept bulk stats answer may serve which caller (``hypervisor.stats_reuse``)."""

from __future__ import annotations

import time

from blockplane.hypervisor.stats_reuse import StatsReuse, StatsSnapshot

BLOCK = 1


def snapshot(domains: list[str] | None, *, nowait: bool = False, age_s: float = 0.0,
             names: tuple[str, ...] = ("a", "b", "c")) -> StatsSnapshot:
    kept = names if domains is None else tuple(domains)
    return StatsSnapshot(time.monotonic() - age_s, BLOCK, [(name, {}) for name in kept],
                         None if domains is None else frozenset(domains), nowait)


def test_nothing_is_reused_outside_a_scope() -> None:
    reuse = StatsReuse()
    reuse.keep(snapshot(None))
    assert reuse.reusable(BLOCK) is None
    with reuse.scope(5.0):
        assert reuse.reusable(BLOCK) is not None


def test_an_answer_for_every_domain_serves_any_caller_cut_to_what_it_asked() -> None:
    reuse = StatsReuse()
    reuse.keep(snapshot(None))
    some = reuse.reusable(BLOCK, 5.0, ["b"], nowait=True)
    assert some is not None and [name for name, _ in some.records] == ["b"]
    assert reuse.reusable(BLOCK, 5.0) is not None


def test_an_answer_for_some_domains_serves_only_those() -> None:
    reuse = StatsReuse()
    reuse.keep(snapshot(["a", "b"]))
    assert reuse.reusable(BLOCK, 5.0) is None
    assert reuse.reusable(BLOCK, 5.0, ["a", "c"]) is None
    kept = reuse.reusable(BLOCK, 5.0, ["a"])
    assert kept is not None and [name for name, _ in kept.records] == ["a"]


def test_an_answer_that_did_not_wait_serves_only_callers_that_accept_one() -> None:
    reuse = StatsReuse()
    reuse.keep(snapshot(None, nowait=True))
    assert reuse.reusable(BLOCK, 5.0) is None  # top, metrics: they want every counter
    assert reuse.reusable(BLOCK, 5.0, nowait=True) is not None


def test_the_newest_fitting_answer_wins_and_old_ones_expire() -> None:
    reuse = StatsReuse()
    reuse.keep(snapshot(None, age_s=3.0))
    reuse.keep(snapshot(["a"], age_s=1.0))
    newest = reuse.reusable(BLOCK, 5.0, ["a"])
    assert newest is not None and newest.domains == frozenset({"a"})
    assert reuse.reusable(BLOCK, 2.0, ["b"]) is None
