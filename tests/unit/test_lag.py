from lag_exporter.lag import (
    commits_beyond_watermark,
    compute_lags,
    lag_max,
    lag_total,
    partition_lag,
    partitions_unknown,
)
from lag_exporter.model import TopicPartition


def test_lag_is_high_watermark_minus_committed_offset() -> None:
    assert partition_lag(committed_offset=40, high_watermark=100) == 60


def test_caught_up_is_zero() -> None:
    assert partition_lag(100, 100) == 0


def test_no_commit_has_no_lag_not_zero() -> None:
    assert partition_lag(None, 100) is None


def test_unknown_watermark_has_no_lag() -> None:
    assert partition_lag(5, None) is None


def test_commit_beyond_watermark_is_clamped_to_zero() -> None:
    assert partition_lag(120, 100) == 0


def test_no_overflow_past_32_bits() -> None:
    assert partition_lag(0, 2**40) == 2**40


def test_compute_lags_sorts_by_topic_then_partition_number() -> None:
    partitions = [TopicPartition("b", 0), TopicPartition("a", 10), TopicPartition("a", 2)]
    lags = compute_lags(partitions, {TopicPartition("a", 2): 1}, {TopicPartition("a", 2): 5})
    assert [(p.topic, p.partition) for p in lags] == [("a", 2), ("a", 10), ("b", 0)]
    assert [p.lag for p in lags] == [4, None, None]


def test_compute_lags_deduplicates_partitions() -> None:
    tp = TopicPartition("t", 0)
    assert len(compute_lags([tp, tp], {tp: 1}, {tp: 2})) == 1


def test_commits_beyond_watermark_finds_only_truncated_partitions() -> None:
    a, b = TopicPartition("t", 0), TopicPartition("t", 1)
    c, d, e = TopicPartition("t", 2), TopicPartition("t", 3), TopicPartition("t", 4)
    # c: committed exactly at the watermark (caught up); d: no commit; e: no watermark
    lags = compute_lags([a, b, c, d, e], {a: 10, b: 3, c: 7, e: 9}, {a: 7, b: 7, c: 7, d: 1})
    assert [(p.partition, p.lag) for p in commits_beyond_watermark(lags)] == [(0, 0)]


def test_partitions_unknown_counts_commits_whose_end_offset_is_missing() -> None:
    a, b, c, d = (TopicPartition("t", n) for n in range(4))
    # a: known; b, c: committed, end offset missing; d: neither (no lag expected anyway)
    lags = compute_lags([a, b, c, d], {a: 1, b: 2, c: 3}, {a: 5})
    assert partitions_unknown(lags) == 2
    assert partitions_unknown(compute_lags([a, d], {a: 1}, {a: 5, d: 3})) == 0


def test_totals_ignore_unknown_lags() -> None:
    a, b, c = (TopicPartition("t", n) for n in range(3))
    lags = compute_lags([a, b, c], {a: 1, b: 2}, {a: 5, b: 12, c: 9})
    assert lag_total(lags) == 14
    assert lag_max(lags) == 10


def test_totals_of_nothing_known_are_none() -> None:
    lags = compute_lags([TopicPartition("t", 0)], {}, {})
    assert lag_total(lags) is None
    assert lag_max(lags) is None
