import math
import random
import tracemalloc
from bisect import bisect_right
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lag_exporter.seconds import WatermarkHistory

Producer = Callable[[random.Random, int], list[float]]
"""Write times (seconds) of the records produced during second s."""


def steady(rate: int) -> Producer:
    return lambda rnd, s: [s + (k + 0.5) / rate for k in range(rate)]


def bursty(rnd: random.Random, s: int) -> list[float]:
    return [s + 0.05] * 500 if s % 10 == 0 else []


def errors(producer: Producer, behind_s: int, duration_s: int, seed: int = 1) -> list[float]:
    """|estimate - truth| for a consumer held `behind_s` behind, sampled every second."""
    rnd = random.Random(seed)
    writes: list[float] = []
    for s in range(duration_s):
        writes += sorted(producer(rnd, s))
    history: WatermarkHistory[str] = WatermarkHistory()
    found = []
    for s in range(duration_s):
        high_watermark = bisect_right(writes, s)
        history.record("p", high_watermark, float(s))
        if s > behind_s:
            committed = bisect_right(writes, s - behind_s)
            if committed < high_watermark:
                estimate = history.seconds_behind("p", committed, high_watermark, float(s))
                assert estimate is not None
                found.append(abs(estimate - (s - writes[committed])))
    assert found
    return found


def test_steady_rate_is_exact_within_a_record_interval() -> None:
    for behind in (5, 60, 600):
        assert max(errors(steady(10), behind, 1500)) <= 0.1


def test_steady_topic_keeps_few_points_for_hours() -> None:
    history: WatermarkHistory[str] = WatermarkHistory()
    for s in range(4 * 3600):
        history.record("p", 1000 * s, float(s))
    assert len(history.points("p")) == 2
    assert history.seconds_behind("p", 1000 * 3600, 1000 * 14399, 14399.0) == 10799.0 - 0.0005


def test_bursts_every_10_s_within_one_interval() -> None:
    for behind in (5, 60, 600):
        assert max(errors(bursty, behind, 2000)) <= 1.0


def test_600_s_behind_a_rate_changing_every_37_s_is_within_1_s_plus_one_interval() -> None:
    def on_off(rnd: random.Random, s: int) -> list[float]:
        return [s + rnd.random() for _ in range(50 if (s // 37) % 2 else 5)]

    assert max(errors(on_off, 600, 3000)) <= 2.0


def test_random_rate_60_s_behind_within_1_s_plus_one_interval() -> None:
    def random_rate(rnd: random.Random, s: int) -> list[float]:
        return [s + rnd.random() for _ in range(rnd.randint(0, 100))]

    assert max(errors(random_rate, 60, 2000)) <= 2.0


def test_burst_drained() -> None:
    """10,000 records at t=100.5; the consumer drains them by t=200, reading 100 per second."""
    history: WatermarkHistory[str] = WatermarkHistory()
    for s in range(300):
        history.record("p", 0 if s <= 100 else 10_000, float(s))
        if 101 <= s < 200:
            committed = (s - 100) * 100
            seconds = history.seconds_behind("p", committed, 10_000, float(s))
            assert seconds is not None
            assert abs(seconds - (s - 100.5)) <= 0.5 + 1e-9
    assert history.seconds_behind("p", 10_000, 10_000, 299.0) == 0.0


def test_caught_up_is_zero_and_unknowns_are_none() -> None:
    history: WatermarkHistory[str] = WatermarkHistory()
    history.record("p", 10, 0.0)
    assert history.seconds_behind("p", 10, 10, 5.0) == 0.0
    assert history.seconds_behind("p", 12, 10, 5.0) == 0.0  # commit past a truncated log
    assert history.seconds_behind("p", None, 10, 5.0) is None
    assert history.seconds_behind("p", 3, None, 5.0) is None
    assert history.seconds_behind("unseen", 3, 10, 5.0) is None


def test_quiet_topic_behind_keeps_growing_with_time() -> None:
    history: WatermarkHistory[str] = WatermarkHistory()
    history.record("p", 0, 0.0)
    history.record("p", 0, 9.0)
    history.record("p", 1, 10.0)  # record 0 was written in (9, 10]
    for now in (10.0, 11.0, 100.0, 1000.0):
        history.record("p", 1, now)
        assert history.seconds_behind("p", 0, 1, now) == now - 9.5


def test_still_unchanged_time_bounds_the_next_record() -> None:
    """Without the 'still 5 at t=99' point, record 5 would be placed between 0 and 100."""
    history: WatermarkHistory[str] = WatermarkHistory()
    for s in range(100):
        history.record("p", 5, float(s))
    history.record("p", 6, 100.0)
    assert history.seconds_behind("p", 5, 6, 100.0) == 0.5


def test_watermark_seen_after_the_last_point_uses_it_as_the_upper_bound() -> None:
    history: WatermarkHistory[str] = WatermarkHistory()
    history.record("p", 0, 0.0)
    history.record("p", 10, 10.0)
    # The caller's watermark (20) was read after the last record(): 10..19 written in (10, 12].
    assert history.seconds_behind("p", 10, 20, 12.0) == pytest.approx(2.0 - 0.1)


def test_older_than_history_uses_the_record_time_else_none() -> None:
    history: WatermarkHistory[str] = WatermarkHistory()
    history.record("p", 100, 1000.0)
    assert history.needs_record_time("p", 40)
    assert not history.needs_record_time("p", 100)
    assert not history.needs_record_time("p", None)
    assert history.seconds_behind("p", 40, 100, 1010.0) is None
    assert history.seconds_behind("p", 40, 100, 1010.0, record_time=(40, 900.0)) == 110.0
    # Compacted: the first record at or after 40 is 55.
    assert history.seconds_behind("p", 40, 100, 1010.0, record_time=(55, 950.0)) == 60.0
    # Fetched for an earlier commit: says nothing about 40.
    assert history.seconds_behind("p", 40, 100, 1010.0, record_time=(39, 900.0)) is None
    # A producer clock ahead of ours: record 40 existed when the watermark was 100.
    assert history.seconds_behind("p", 40, 100, 1010.0, record_time=(40, 5000.0)) == 10.0
    # 40..99 compacted away and record 100 written after the watermark was seen at 100.
    assert history.seconds_behind("p", 40, 101, 1010.0, record_time=(100, 900.0)) == 10.0


def test_record_time_without_history() -> None:
    history: WatermarkHistory[str] = WatermarkHistory()
    assert history.needs_record_time("p", 3)
    assert history.seconds_behind("p", 3, 10, 50.0, record_time=(3, 20.0)) == 30.0
    assert history.seconds_behind("p", 3, 10, 50.0, record_time=(2, 20.0)) is None
    assert history.seconds_behind("p", 3, 10, 50.0, record_time=(3, 80.0)) == 0.0


def test_remembered_record_time_is_exact_for_its_offset_and_bounds_the_later_ones() -> None:
    history: WatermarkHistory[str] = WatermarkHistory()
    history.record("p", 100, 1000.0)
    history.remember_record_time("p", 0, 0, 900.0)
    assert not history.needs_record_time("p", 0)
    assert history.seconds_behind("p", 0, 100, 1010.0) == 110.0
    # 1..99 written in [900, 1000]: record 50 at 950.5; still worth a read.
    assert history.seconds_behind("p", 50, 100, 1010.0) == pytest.approx(1010.0 - 950.5)
    assert history.needs_record_time("p", 50)
    # Before the remembered record: nothing bounds it from below.
    history.remember_record_time("p", 20, 20, 920.0)
    assert history.seconds_behind("p", 10, 100, 1010.0) is None


def test_remembered_compacted_range_gives_the_next_record_time() -> None:
    history: WatermarkHistory[str] = WatermarkHistory()
    history.record("p", 100, 1000.0)
    history.remember_record_time("p", 40, 55, 950.0)
    for committed in (40, 47, 55):
        assert not history.needs_record_time("p", committed)
        assert history.seconds_behind("p", committed, 100, 1010.0) == 60.0
    history.remember_record_time("p", 40, 39, 950.0)  # inconsistent: ignored
    assert history.seconds_behind("p", 47, 100, 1010.0) == 60.0


def test_record_time_refines_a_thinned_stretch() -> None:
    history: WatermarkHistory[str] = WatermarkHistory(max_points=8)
    rnd = random.Random(5)
    writes: list[float] = []
    for s in range(100):
        writes += sorted(s + rnd.random() for _ in range(rnd.randint(0, 100)))
        history.record("p", len(writes), float(s + 1))
    committed = bisect_right(writes, 10.0)
    assert history.needs_record_time("p", committed)  # thinned: not at full resolution
    history.remember_record_time("p", committed, committed, writes[committed])
    assert not history.needs_record_time("p", committed)
    seconds = history.seconds_behind("p", committed, len(writes), 100.0)
    assert seconds == pytest.approx(100.0 - writes[committed])
    assert not history.needs_record_time("p", len(writes) - 1)  # recent: full resolution


def test_random_rate_600_s_behind_with_a_record_read_every_10_s() -> None:
    rnd = random.Random(1)
    writes: list[float] = []
    for s in range(2000):
        writes += sorted(s + rnd.random() for _ in range(rnd.randint(0, 100)))
    history: WatermarkHistory[str] = WatermarkHistory()
    found, last_read = [], -100
    for s in range(2000):
        high_watermark = bisect_right(writes, s)
        history.record("p", high_watermark, float(s))
        if s > 605:
            committed = bisect_right(writes, s - 600)
            if history.needs_record_time("p", committed) and s - last_read >= 10:
                history.remember_record_time("p", committed, committed, writes[committed])
                last_read = s
            seconds = history.seconds_behind("p", committed, high_watermark, float(s))
            assert seconds is not None
            found.append(abs(seconds - (s - writes[committed])))
    assert sum(found) / len(found) < 1.5
    assert max(found) < 8.0


def test_watermark_going_backwards_restarts_the_history() -> None:
    history: WatermarkHistory[str] = WatermarkHistory()
    history.record("p", 1000, 0.0)
    history.record("p", 2000, 10.0)
    history.remember_record_time("p", 1, 1, 5.0)
    history.record("p", 5, 20.0)  # topic re-created
    assert history.points("p") == [(5, 20.0)]
    # The old record time went with the history.
    assert history.needs_record_time("p", 1)
    assert history.seconds_behind("p", 1, 5, 30.0) is None


def test_out_of_order_and_nan_times_are_ignored() -> None:
    history: WatermarkHistory[str] = WatermarkHistory()
    history.record("p", 10, 10.0)
    history.record("p", 20, 5.0)
    history.record("p", 30, math.nan)
    assert history.points("p") == [(10, 10.0)]


def test_retain_and_forget() -> None:
    history: WatermarkHistory[tuple[str, int]] = WatermarkHistory()
    for partition in range(4):
        history.record(("t", partition), 1, 0.0)
    history.retain(lambda key: key[1] < 2)
    history.forget(("t", 0))
    assert len(history) == 1
    assert ("t", 1) in history


def test_history_stays_bounded() -> None:
    history: WatermarkHistory[str] = WatermarkHistory(max_points=120)
    rnd = random.Random(3)
    high_watermark = 0
    for s in range(10_000):
        history.record("p", high_watermark, float(s))
        high_watermark += rnd.randint(0, 100)
    points = history.points("p")
    assert len(points) <= 120
    assert points[0] == (0, 0.0)  # the coverage never shrinks
    assert [o for o, _ in points] == sorted(o for o, _ in points)


def test_memory_of_10000_full_histories_is_under_50_mb() -> None:
    """Measured on 1,000 partitions (memory is linear in partitions; 10,000 take 18 s under
    tracemalloc on a busy machine, and measured 27.2 MB)."""
    tracemalloc.start()
    try:
        history: WatermarkHistory[tuple[str, str, int]] = WatermarkHistory(max_points=120)
        keys = [("cluster", f"topic-{n // 20}", n % 20) for n in range(1_000)]
        for s in range(120):  # alternating rates: no point merges, every history is full
            for key in keys:
                history.record(key, s * 50 + (s % 2) * 40, float(s))
        assert {len(history.points(key)) for key in keys} == {120}
        used, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert used * 10 < 50_000_000


# Property-based: arbitrary (watermark step, time step) sequences.
samples = st.lists(
    st.tuples(st.integers(0, 50), st.floats(0.0, 30.0)), min_size=1, max_size=300
)


facts = st.one_of(
    st.none(), st.tuples(st.integers(0, 16_000), st.integers(0, 50), st.floats(-1e4, 2e4)))
"""A remembered record time: (requested, offset - requested, CreateTime)."""


def built(steps: list[tuple[int, float]], fact: tuple[int, int, float] | None = None,
          max_points: int = 8) -> tuple[WatermarkHistory[str], int, float]:
    history: WatermarkHistory[str] = WatermarkHistory(max_points=max_points)
    high_watermark, at = 0, 0.0
    for step, dt in steps:
        high_watermark += step
        at += dt
        history.record("p", high_watermark, at)
    if fact is not None:
        history.remember_record_time("p", fact[0], fact[0] + fact[1], fact[2])
    return history, high_watermark, at


@settings(max_examples=300, deadline=None)
@given(samples, facts, st.integers(-5, 16_000), st.floats(0.0, 1e5), st.integers(0, 100))
def test_result_is_none_or_finite_and_not_negative(
    steps: list[tuple[int, float]], fact: tuple[int, int, float] | None, committed: int,
    later: float, extra: int
) -> None:
    history, high_watermark, at = built(steps, fact)
    for record_time in (None, (committed, at - later), (committed + extra, at)):
        seconds = history.seconds_behind("p", committed, high_watermark + extra, at + later,
                                         record_time)
        assert seconds is None or (math.isfinite(seconds) and seconds >= 0.0)


@settings(max_examples=500, deadline=None)
@given(samples, facts, st.integers(0, 16_000), st.integers(0, 16_000), st.floats(0.0, 1e4),
       st.integers(0, 100))
def test_a_larger_committed_offset_never_gives_more_seconds(
    steps: list[tuple[int, float]], fact: tuple[int, int, float] | None, a: int, b: int,
    later: float, extra: int
) -> None:
    history, high_watermark, at = built(steps, fact)
    low, high = sorted((a, b))
    now = at + later
    older = history.seconds_behind("p", low, high_watermark + extra, now)
    newer = history.seconds_behind("p", high, high_watermark + extra, now)
    if older is not None and newer is not None:
        assert newer <= older + 1e-9 * max(1.0, abs(now))


@settings(max_examples=500, deadline=None)
@given(samples, facts, st.integers(0, 16_000), st.floats(0.0, 1e4), st.floats(0.0, 1e4),
       st.integers(0, 100))
def test_seconds_never_decrease_as_now_grows(
    steps: list[tuple[int, float]], fact: tuple[int, int, float] | None, committed: int,
    first: float, second: float, extra: int
) -> None:
    history, high_watermark, at = built(steps, fact)
    earlier, later = sorted((first, second))
    before = history.seconds_behind("p", committed, high_watermark + extra, at + earlier)
    after = history.seconds_behind("p", committed, high_watermark + extra, at + later)
    assert (before is None) == (after is None)
    if before is not None and after is not None:
        assert after >= before - 1e-9 * max(1.0, abs(at + later))


@settings(max_examples=200, deadline=None)
@given(samples, facts, st.integers(0, 100), st.floats(0.0, 1e4))
def test_caught_up_is_always_zero(
    steps: list[tuple[int, float]], fact: tuple[int, int, float] | None, beyond: int,
    later: float
) -> None:
    history, high_watermark, at = built(steps, fact)
    assert history.seconds_behind("p", high_watermark + beyond, high_watermark, at + later) == 0.0


@pytest.mark.parametrize("max_points, tolerance_s, message", [
    (3, 0.5, "max_points must be at least 4"),
    (120, -0.1, "tolerance_s must be >= 0"),
    (120, math.nan, "tolerance_s must be >= 0"),
])
def test_invalid_settings_are_refused_with_their_reason(max_points: int, tolerance_s: float,
                                                        message: str) -> None:
    with pytest.raises(ValueError) as refused:
        WatermarkHistory(max_points, tolerance_s)
    assert str(refused.value) == message


def test_the_default_and_smallest_settings() -> None:
    default: WatermarkHistory[str] = WatermarkHistory()
    assert (default.max_points, default.tolerance_s) == (120, 0.5)
    smallest: WatermarkHistory[str] = WatermarkHistory(4, 0.0)
    assert (smallest.max_points, smallest.tolerance_s) == (4, 0.0)


def test_covers_says_whether_stored_points_lie_on_both_sides_of_an_offset() -> None:
    history: WatermarkHistory[str] = WatermarkHistory()
    assert not history.covers("p", 5)  # no history
    history.record("p", 10, 0.0)
    history.record("p", 20, 10.0)
    assert [history.covers("p", offset) for offset in (9, 10, 19, 20)] == [
        False, True, True, False]  # from the first point (inclusive) to the last (exclusive)
    assert not history.covers("p", None)
    assert not history.covers("q", 15)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from("abc"), st.integers(0, 30), max_size=3),
                min_size=1, max_size=25),
       st.lists(st.sampled_from([0.0, 0.5, 1.0, 2.0, -1.0, math.nan]), min_size=25,
                max_size=25))
def test_record_all_is_record_of_each(ticks: list[dict[str, int]], steps: list[float]) -> None:
    """The inline path for unchanged watermarks leaves the same history as `record` (times
    may step back or be NaN: ignored alike)."""
    one_by_one: WatermarkHistory[str] = WatermarkHistory(max_points=6)
    all_at_once: WatermarkHistory[str] = WatermarkHistory(max_points=6)
    at = 100.0
    for watermarks, step in zip(ticks, steps, strict=False):
        at = at + step if not math.isnan(step) else at
        moment = step if math.isnan(step) else at
        for key, high_watermark in watermarks.items():
            one_by_one.record(key, high_watermark, moment)
        all_at_once.record_all(watermarks, moment)
    for key in "abc":
        # repr: a NaN time (stored by record for a new key, alike) is unequal to itself
        assert repr(all_at_once.points(key)) == repr(one_by_one.points(key))
        assert repr(all_at_once.seconds_behind(key, 0, 30, at + 1.0)) == repr(
            one_by_one.seconds_behind(key, 0, 30, at + 1.0))


def test_a_record_time_at_the_brackets_upper_offset_bounds_the_offsets_below_it() -> None:
    # found by test_a_larger_committed_offset_never_gives_more_seconds: offset 0 got 0.75 s
    # while offset 1 (a record written at 0.0, read from the broker) got 1.0 s
    history: WatermarkHistory[str] = WatermarkHistory()
    history.record("p", 0, 0.0)
    history.remember_record_time("p", 1, 2, 0.0)
    assert history.seconds_behind("p", 1, 2, 1.0) == 1.0
    assert history.seconds_behind("p", 0, 2, 1.0) == 1.0
