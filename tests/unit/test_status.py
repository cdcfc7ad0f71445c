import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lag_exporter.status import (
    ERR,
    GROUP_STATUSES,
    OK,
    PARTITION_STATUSES,
    REWIND,
    STALL,
    STOP,
    WARN,
    PartitionStatusTracker,
    StatusRules,
    group_status,
    status_changes,
    worst_status,
)

Tracker = PartitionStatusTracker[str]


def feed(tracker: Tracker, at: float, committed: int | None, high_watermark: int | None,
         assigned: bool = True) -> str:
    lag = None if committed is None or high_watermark is None else max(
        0, high_watermark - committed)
    tracker.update("p", at, committed, high_watermark, lag, assigned)
    return tracker.evaluate("p", at)


def test_quiet_caught_up_topic_is_ok_not_stop() -> None:
    tracker: Tracker = PartitionStatusTracker()
    statuses = {feed(tracker, s, 100, 100, assigned=False) for s in range(3600)}
    assert statuses == {OK}


def test_transactional_lag_1_is_ok_under_allowed_lag_1() -> None:
    tracker: Tracker = PartitionStatusTracker(StatusRules(allowed_lag=1))
    assert {feed(tracker, s, 99, 100, assigned=False) for s in range(3600)} == {OK}
    strict: Tracker = PartitionStatusTracker(StatusRules(allowed_lag=0))
    assert feed(strict, 0, 99, 100, assigned=False) == OK
    assert feed(strict, 400, 99, 100, assigned=False) == STOP


def test_mirrormaker1_committing_every_60_s_is_never_stop_or_stall_between_commits() -> None:
    """Steady producer, 1-s samples, commits every 60 s: a saw-tooth from 0 to 600 lag."""
    for rules in (StatusRules(), StatusRules(stop_after_s=30)):
        tracker: Tracker = PartitionStatusTracker(rules)
        committed = 0
        statuses = []
        for s in range(3600):
            high_watermark = 10 * s
            if s % 60 == 0:
                committed = high_watermark
            statuses.append(feed(tracker, s, committed, high_watermark))
        # With a 30-s floor the threshold is 3 x 60 s once two commits have been seen.
        assert set(statuses[130:]) == {OK}
        if rules.stop_after_s == 300:
            assert set(statuses) == {OK}


def test_memberless_group_with_lag_and_no_movement_is_stop_after_the_threshold() -> None:
    tracker: Tracker = PartitionStatusTracker()
    assert feed(tracker, 0, 50, 100, assigned=False) == OK  # too little history to say
    assert feed(tracker, 300, 50, 100, assigned=False) == OK
    assert feed(tracker, 301, 50, 100, assigned=False) == STOP


def test_stop_waits_for_3_times_the_observed_commit_interval() -> None:
    tracker: Tracker = PartitionStatusTracker()
    for commit in range(5):  # a commit every 200 s, lag 10 each time (first one: no interval)
        feed(tracker, commit * 200, commit * 100, commit * 100 + 10, assigned=False)
    last = 4 * 200
    assert feed(tracker, last + 599, 400, 410, assigned=False) == OK
    assert feed(tracker, last + 601, 400, 410, assigned=False) == STOP


def test_assigned_member_with_records_arriving_and_fixed_offset_is_stall() -> None:
    tracker: Tracker = PartitionStatusTracker()
    for s in range(302):
        status = feed(tracker, s, 50, 100 + s, assigned=True)
    assert status == STALL


def test_assigned_member_on_a_quiet_topic_with_a_fixed_residual_lag_is_ok() -> None:
    tracker: Tracker = PartitionStatusTracker()
    assert {feed(tracker, s, 50, 100, assigned=True) for s in range(1000)} == {OK}


def test_offset_going_backwards_is_rewind_for_the_window() -> None:
    tracker: Tracker = PartitionStatusTracker(StatusRules(window_s=600))
    for s in range(10):
        feed(tracker, s, 1000 + s, 1010 + s)
    assert feed(tracker, 10, 0, 1020) == REWIND
    assert feed(tracker, 610, 6000, 7000) == REWIND
    assert feed(tracker, 611, 6100, 7100) == OK


def test_rewind_while_caught_up_is_ok() -> None:
    tracker: Tracker = PartitionStatusTracker()
    feed(tracker, 0, 100, 100)
    assert feed(tracker, 1, 50, 50) == OK


def test_lag_growing_is_warn_after_five_trend_points() -> None:
    """Commits every second, the producer 10/s, the consumer 5/s: behind, falling further."""
    tracker: Tracker = PartitionStatusTracker()
    statuses = [feed(tracker, s, 5 * s, 10 * s + 20) for s in range(200)]
    # Trend points at 0, 30, 60, 90, 120 s: the fifth rise decides.
    assert set(statuses[:120]) == {OK}
    assert set(statuses[120:]) == {WARN}


def test_mirrormaker1_falling_behind_is_warn() -> None:
    tracker: Tracker = PartitionStatusTracker()
    committed, statuses = 0, []
    for s in range(600):
        if s % 60 == 0:
            committed = 5 * s  # it reads half of what arrives
        statuses.append(feed(tracker, s, committed, 10 * s + 20))
    assert statuses[-1] == WARN
    assert STOP not in statuses
    assert STALL not in statuses


def test_lag_equal_at_every_commit_is_ok() -> None:
    tracker: Tracker = PartitionStatusTracker()
    assert {feed(tracker, s, 10 * s, 10 * s + 20) for s in range(700)} == {OK}


def test_small_lags_that_tie_or_wobble_are_not_warn() -> None:
    tracker: Tracker = PartitionStatusTracker()
    wobble = [2, 3, 3, 4, 4, 4, 3, 2, 4]
    statuses = {feed(tracker, s, 10 * s, 10 * s + wobble[(s // 30) % 9]) for s in range(2000)}
    assert statuses == {OK}


def test_one_burst_is_not_warn() -> None:
    """A burst of 3000 every 10 minutes, drained at 20/s by a consumer committing every s."""
    tracker: Tracker = PartitionStatusTracker()
    high_watermark, committed, statuses = 0, 0, []
    for s in range(3600):
        if s % 600 == 300:
            high_watermark += 3000
        high_watermark += 2
        committed = min(high_watermark - 2, committed + 20)
        statuses.append(feed(tracker, s, committed, high_watermark))
    assert set(statuses) == {OK}


def test_behind_but_catching_up_is_ok() -> None:
    tracker: Tracker = PartitionStatusTracker()
    statuses = [feed(tracker, s, 1000 + 20 * s, 5000 + 10 * s) for s in range(300)]
    assert set(statuses) == {OK}


def test_trend_points_older_than_the_window_do_not_count() -> None:
    tracker: Tracker = PartitionStatusTracker(StatusRules(window_s=300))
    for s in range(0, 300, 15):  # a rise every 15 s; trend points every 15 s
        feed(tracker, s, 5 * s, 10 * s + 20)
    assert tracker.evaluate("p", 299) == WARN
    # At 600 the trend points (0..285) are all older than the window.
    assert tracker.evaluate("p", 600) == OK


def test_unknown_watermark_keeps_the_last_lag() -> None:
    tracker: Tracker = PartitionStatusTracker()
    for s in range(301):
        feed(tracker, s, 50, 100, assigned=False)
    assert feed(tracker, 301, 50, None, assigned=False) == STOP


def test_no_commit_and_unseen_partitions_are_ok() -> None:
    tracker: Tracker = PartitionStatusTracker()
    assert tracker.evaluate("unseen", 0) == OK
    feed(tracker, 0, None, 100, assigned=False)
    assert feed(tracker, 1000, None, 100, assigned=False) == OK


def test_retain_and_forget() -> None:
    tracker: PartitionStatusTracker[tuple[str, int]] = PartitionStatusTracker()
    for partition in range(4):
        tracker.update(("t", partition), 0, 1, 2, 1, True)
    tracker.retain(lambda key: key[1] < 2)
    tracker.forget(("t", 0))
    assert len(tracker) == 1


def test_group_status_is_the_worst_partition() -> None:
    assert group_status([]) == OK
    assert group_status([OK, OK]) == OK
    assert group_status([OK, WARN]) == WARN
    for bad in (STOP, STALL, REWIND):
        assert group_status([OK, WARN, bad]) == ERR
    assert worst_status([OK, REWIND, WARN, STOP, STALL]) == STOP


def test_status_changes_once_per_change() -> None:
    previous = {"a": OK, "b": WARN, "c": STOP, "d": OK}
    current = {"a": STALL, "b": WARN, "d": OK, "e": OK, "f": WARN}
    assert status_changes(previous, current) == [
        ("a", OK, STALL), ("f", None, WARN), ("c", STOP, None)]
    assert status_changes(current, current) == []


def test_rules_are_validated() -> None:
    for bad in ({"window_s": 0}, {"allowed_lag": -1}, {"stop_after_s": -5},
                {"commits_kept": 1}, {"min_commits_for_warn": 11}):
        try:
            StatusRules(**bad)
        except ValueError:
            continue
        raise AssertionError(f"accepted {bad}")


sample = st.tuples(
    st.floats(0.0, 400.0),  # time step
    st.one_of(st.none(), st.integers(0, 1000)),  # committed
    st.one_of(st.none(), st.integers(0, 1000)),  # high watermark
    st.booleans(),  # assigned
)


@settings(max_examples=300, deadline=None)
@given(st.lists(sample, max_size=60), st.integers(0, 3))
def test_evaluate_never_raises_and_answers_in_the_vocabulary(
    samples: list[tuple[float, int | None, int | None, bool]], allowed_lag: int
) -> None:
    tracker: Tracker = PartitionStatusTracker(StatusRules(allowed_lag=allowed_lag,
                                                          stop_after_s=60, window_s=120))
    at = 0.0
    statuses = []
    for step, committed, high_watermark, assigned in samples:
        at += step
        status = feed(tracker, at, committed, high_watermark, assigned)
        assert status in PARTITION_STATUSES
        statuses.append(status)
        if committed is not None and high_watermark is not None and (
                high_watermark - committed <= allowed_lag):
            assert status == OK
    assert group_status(statuses) in GROUP_STATUSES


@settings(max_examples=400, deadline=None)
@given(st.lists(sample, min_size=1, max_size=40), st.integers(0, 2),
       st.lists(st.floats(0.0, 1.0), min_size=1, max_size=8), st.floats(0.0, 900.0))
def test_a_status_holds_until_the_time_evaluate_until_gives(
    samples: list[tuple[float, int | None, int | None, bool]], allowed_lag: int,
    fractions: list[float], wait: float
) -> None:
    """Estimates reuses a status until `until` without evaluating again: at every time before
    it, evaluate must give the same answer (after it, it may or may not differ)."""
    tracker: Tracker = PartitionStatusTracker(StatusRules(allowed_lag=allowed_lag,
                                                          stop_after_s=60, window_s=120,
                                                          commits_kept=6))
    at = 0.0
    for step, committed, high_watermark, assigned in samples:
        at += step
        feed(tracker, at, committed, high_watermark, assigned)
    now = at + wait
    status, until = tracker.evaluate_until("p", now)
    assert status == tracker.evaluate("p", now)
    assert until >= now - 1e-6
    horizon = min(until, now + 2000.0)
    for fraction in fractions:
        later = now + fraction * (horizon - now)
        if later < until:
            assert tracker.evaluate("p", later) == status, (later, until)


def test_a_stop_is_due_exactly_at_the_threshold_and_then_holds_forever() -> None:
    tracker: Tracker = PartitionStatusTracker(StatusRules(stop_after_s=300))
    tracker.update("p", 1000.0, 10, 50, 40, False)
    status, until = tracker.evaluate_until("p", 1000.0)
    assert status == OK and 1299.99 < until <= 1300.0
    assert tracker.evaluate_until("p", 1300.5) == (STOP, float("inf"))


def test_a_rewind_is_reported_until_the_window_ends() -> None:
    tracker: Tracker = PartitionStatusTracker(StatusRules(window_s=600, stop_after_s=300))
    tracker.update("p", 0.0, 100, 200, 100, True)
    tracker.update("p", 10.0, 50, 200, 150, True)
    status, until = tracker.evaluate_until("p", 20.0)
    assert status == REWIND and 609.99 < until <= 610.0
    assert tracker.evaluate("p", 610.5) == OK


def test_a_warning_is_reused_only_until_its_oldest_trend_point_leaves_the_window() -> None:
    rules = StatusRules(window_s=200, stop_after_s=300)
    tracker: Tracker = PartitionStatusTracker(rules)
    for step in range(5):  # the lag rises at each of 5 trend points, 30 s apart
        tracker.update("p", step * 30.0, step * 10, step * 10 + 100 + step, 100 + step, True)
    status, until = tracker.evaluate_until("p", 120.0)
    assert status == WARN and 199.99 < until <= 200.0
    assert tracker.evaluate("p", 199.9) == WARN
    assert tracker.evaluate("p", 200.5) == OK  # the point at 0 s left: 4 are too few


@given(st.lists(st.sampled_from(PARTITION_STATUSES)))
def test_group_status_is_worst_first(statuses: list[str]) -> None:
    if any(status in (STOP, STALL, REWIND) for status in statuses):
        assert group_status(statuses) == ERR
    elif WARN in statuses:
        assert group_status(statuses) == WARN
    else:
        assert group_status(statuses) == OK
    worst = worst_status(statuses)
    assert all(PARTITION_STATUSES.index(s) <= PARTITION_STATUSES.index(worst) for s in statuses)


@pytest.mark.parametrize("changes, message", [
    ({"window_s": 0.0}, "window_s, stop_after_s and interval_factor must be > 0"),
    ({"stop_after_s": 0.0}, "window_s, stop_after_s and interval_factor must be > 0"),
    ({"interval_factor": 0.0}, "window_s, stop_after_s and interval_factor must be > 0"),
    ({"window_s": float("nan")}, "window_s, stop_after_s and interval_factor must be > 0"),
    ({"allowed_lag": -1}, "allowed_lag must be >= 0"),
    ({"commits_kept": 1, "min_commits_for_warn": 1},
     "commits_kept and min_commits_for_warn must be >= 2, min_commits_for_warn <= commits_kept"),
    ({"min_commits_for_warn": 1},
     "commits_kept and min_commits_for_warn must be >= 2, min_commits_for_warn <= commits_kept"),
    ({"commits_kept": 4, "min_commits_for_warn": 5},
     "commits_kept and min_commits_for_warn must be >= 2, min_commits_for_warn <= commits_kept"),
])
def test_invalid_rules_are_refused_with_their_reason(changes: dict[str, float],
                                                      message: str) -> None:
    with pytest.raises(ValueError) as refused:
        StatusRules(**changes)  # type: ignore[arg-type]
    assert str(refused.value) == message


def test_the_smallest_valid_rules_are_accepted() -> None:
    rules = StatusRules(window_s=1e-9, stop_after_s=1e-9, interval_factor=1e-9, allowed_lag=0,
                        commits_kept=2, min_commits_for_warn=2)
    assert (rules.allowed_lag, rules.commits_kept, rules.min_commits_for_warn) == (0, 2, 2)
