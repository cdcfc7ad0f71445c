"""Issue 11 wiring (pure): seconds and status reach the lags, the documents, /metrics and the
log; record timestamps are asked for sparingly (fakes for Kafka only)."""

import dataclasses
import logging
from collections.abc import Mapping
from datetime import UTC, datetime

import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_sampler import Clock, FakeKafka

from lag_exporter.documents import sample_documents
from lag_exporter.errors import SourceError
from lag_exporter.estimates import Estimates
from lag_exporter.metrics import LagMetrics
from lag_exporter.model import (
    GroupLag,
    GroupOffsets,
    PartitionLag,
    Sample,
    TopicPartition,
    aged_partitions,
)
from lag_exporter.partition_documents import partition_documents
from lag_exporter.report import format_tsv
from lag_exporter.sampler import Sampler
from lag_exporter.service import Watch
from lag_exporter.status import StatusRules
from lag_exporter.view import group_rows

TP = TopicPartition
MOMENT = datetime(2026, 1, 1, tzinfo=UTC)


def test_judge_fills_in_seconds_from_the_watermark_history_and_a_status() -> None:
    estimates = Estimates()
    for second in range(10):  # one record a second: watermark = second
        estimates.observe_watermarks({TP("t", 0): second}, at=1000.0 + second)
    [judged] = estimates.judge("g", [PartitionLag("t", 0, 4, 9, 5)], frozenset(),
                               wall_now=1009.0, now=0.0)
    assert judged.seconds == pytest.approx(5.0, abs=1.0)  # record 4 was written at ~1004
    assert judged.status == "OK"


def test_a_snapshot_has_seconds_but_no_status() -> None:
    estimates = Estimates(judge_status=False)
    estimates.observe_watermarks({TP("t", 0): 9}, at=1000.0)
    [judged] = estimates.judge("g", [PartitionLag("t", 0, 9, 9, 0)], frozenset(), 1000.0, 0.0)
    assert (judged.seconds, judged.status) == (0.0, None)


def test_record_times_are_asked_for_at_most_every_10_s_and_the_oldest_offset_first() -> None:
    estimates = Estimates()
    estimates.observe_watermarks({TP("t", 0): 100, TP("t", 1): 50}, at=1000.0)
    behind = [(TP("t", 0), 40, 60), (TP("t", 0), 20, 80), (TP("t", 1), 50, 0)]
    assert estimates.record_time_requests(behind, now=0.0) == {TP("t", 0): 20}
    assert estimates.record_time_requests(behind, now=9.9) == {}
    assert estimates.record_time_requests(behind, now=10.0) == {TP("t", 0): 20}


def test_a_record_time_read_from_the_broker_gives_seconds_beyond_the_history() -> None:
    estimates = Estimates()
    estimates.observe_watermarks({TP("t", 0): 100}, at=1000.0)  # history starts here
    lag = [PartitionLag("t", 0, 20, 100, 80)]
    [unknown] = estimates.judge("g", lag, frozenset(), 1000.0, 0.0)
    assert unknown.seconds is None  # never a guess, never NaN
    estimates.remember_record_times({TP("t", 0): (20, 20, 400.0)})
    [known] = estimates.judge("g", lag, frozenset(), 1000.0, 1.0)
    assert known.seconds == 600.0


def test_retain_forgets_partitions_and_groups_no_longer_reported() -> None:
    estimates = Estimates()
    estimates.observe_watermarks({TP("t", 0): 1, TP("gone", 0): 1}, at=1.0)
    estimates.judge("g", [PartitionLag("t", 0, 1, 1, 0)], frozenset(), 1.0, 1.0)
    estimates.judge("old", [PartitionLag("t", 0, 1, 1, 0)], frozenset(), 1.0, 1.0)
    estimates.judge("down", [PartitionLag("t", 0, 1, 1, 0)], frozenset(), 1.0, 1.0)
    estimates.retain({"g"}, {"down"}, {TP("t", 0)}, {(TP("t", 0), 1)})
    assert len(estimates.history) == 1 and len(estimates.status) == 2


def test_the_sampler_reads_record_times_for_consumers_beyond_its_history() -> None:
    kafka, clock = FakeKafka(), Clock()
    kafka.committed["g"] = GroupOffsets("g", {TP("t", 0): 20})
    kafka.watermarks = {TP("t", 0): 100}
    kafka.record_time_answers = {TP("t", 0): (20, 21, 400.0)}  # 20 was compacted away
    sampler = Sampler(kafka, ["g"], clock=clock, wall_clock=lambda: 1000.0)
    [partition] = sampler.sample().groups[0].partitions
    assert kafka.calls.count("record_times:1") == 1
    assert partition.seconds == 600.0 and partition.status == "OK"


class ReadsInTheBackground(FakeKafka):
    """As the watch's Kafka client process: a read's answers come with a later call."""

    def __init__(self) -> None:
        super().__init__()
        self.reading: dict[TopicPartition, int] = {}

    def record_times(self, requests: Mapping[TopicPartition, int]
                     ) -> dict[TopicPartition, tuple[int, int, float] | SourceError]:
        finished = super().record_times(self.reading)
        self.reading = dict(requests) if requests else {}
        return finished


def test_record_times_read_in_the_background_are_used_when_they_arrive() -> None:
    kafka, clock = ReadsInTheBackground(), Clock()
    kafka.committed["g"] = GroupOffsets("g", {TP("t", 0): 20})
    kafka.watermarks = {TP("t", 0): 100}
    kafka.record_time_answers = {TP("t", 0): (20, 20, 400.0)}
    sampler = Sampler(kafka, ["g"], clock=clock, wall_clock=lambda: 1000.0)
    [first] = sampler.sample().groups[0].partitions
    assert first.seconds is None and kafka.reading == {TP("t", 0): 20}  # asked; not read yet
    clock.now += 1  # the next sample asks for nothing, and gets the read
    [second] = sampler.sample().groups[0].partitions
    assert second.seconds == 600.0 and not kafka.reading


def stopped_group(status: str | None, seconds: float | None = 12.5) -> GroupLag:
    return GroupLag("c", "g", (PartitionLag("t", 0, 5, 9, 4, seconds, status),
                               PartitionLag("t", 1, 9, 9, 0, 0.0, "OK")))


def test_documents_carry_seconds_and_status() -> None:
    [document] = sample_documents(Sample(MOMENT, (stopped_group("STOP"),)))
    assert document.source["lag_seconds"] == {"p0": 12.5, "p1": 0.0}
    assert document.source["lag_seconds_max"] == 12.5
    assert document.source["status"] == "ERR"
    # only the partitions that are not OK (documents.py): p1, left out, is OK
    assert document.source["partition_status"] == {"p0": "STOP"}


def test_no_maximum_in_seconds_over_part_of_a_topic() -> None:
    [document] = sample_documents(Sample(MOMENT, (stopped_group(None, seconds=None),)))
    assert document.source["lag_seconds"] == {"p1": 0.0}
    assert "lag_seconds_max" not in document.source  # p0 has a lag and no seconds


def test_metrics_have_seconds_and_the_status() -> None:
    metrics = LagMetrics()
    metrics.observe(Sample(MOMENT, (stopped_group("STALL"),)))
    series = {(s.name, tuple(sorted(s.labels.items()))): s.value
              for family in text_string_to_metric_families(metrics.render().decode())
              for s in family.samples}
    group = (("cluster_name", "c"), ("group", "g"))
    assert series[("kafka_consumergroup_group_max_lag_seconds", group)] == 12.5
    assert series[("kafka_consumergroup_group_lag_seconds",
                   (*group, ("partition", "0"), ("topic", "t")))] == 12.5
    assert series[("lag_exporter_group_topic_status",
                   (*group, ("status", "ERR"), ("topic", "t")))] == 1


class OneGroupAtATime:
    """A fleet whose samples come from a list."""

    def __init__(self, samples: list[Sample]) -> None:
        self.samples = samples
        self.ticks_skipped: dict[str, int] = {}

    def sample(self, wait_s: float | None = None) -> Sample:
        return self.samples.pop(0)

    def close(self) -> None:
        pass


class NullSink:
    name = "null"

    def write(self, documents: list[object]) -> object:
        raise AssertionError("not started")

    def close(self) -> None:
        pass


def test_a_status_change_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="lag_exporter")
    statuses = ["OK", "OK", "STOP", "STOP", "STOP", "OK", "OK"]
    fleet = OneGroupAtATime([Sample(MOMENT, (stopped_group(s),)) for s in statuses])
    from lag_exporter.outbox import Outbox

    watch = Watch(fleet, Outbox(), NullSink(), summary_every_s=3600)  # type: ignore[arg-type]
    for _ in statuses:
        watch._take_sample()
    watch.outbox.close()
    lines = [r.getMessage() for r in caplog.records if "status" in r.getMessage()]
    assert lines == ["cluster c group g topic t: status OK -> ERR (p0 STOP)",
                     "cluster c group g topic t: status ERR -> OK"]


def test_status_rules_reach_the_tracker() -> None:
    estimates = Estimates(StatusRules(window_s=30, allowed_lag=0, stop_after_s=5))
    assert estimates.status.rules.stop_after_s == 5


def test_unchanged_offsets_reuse_the_write_time_and_seconds_grow_with_the_clock() -> None:
    estimates = Estimates()
    estimates.observe_watermarks({TP("t", 0): 0}, at=1000.0)
    estimates.observe_watermarks({TP("t", 0): 10}, at=1010.0)  # then the topic goes quiet
    lag = [PartitionLag("t", 0, 5, 10, 5)]
    [first] = estimates.judge("g", lag, frozenset(), wall_now=1010.0, now=0.0)
    [later] = estimates.judge("g", lag, frozenset(), wall_now=1070.0, now=60.0)
    assert first.seconds is not None and later.seconds == pytest.approx(first.seconds + 60.0)
    fresh = Estimates()
    fresh.observe_watermarks({TP("t", 0): 0}, at=1000.0)
    fresh.observe_watermarks({TP("t", 0): 10}, at=1010.0)
    [computed] = fresh.judge("g", lag, frozenset(), wall_now=1070.0, now=60.0)
    assert later.seconds == pytest.approx(computed.seconds)  # the shortcut changes nothing


def test_records_arriving_after_an_unmoved_commit_leave_its_write_time_as_computed() -> None:
    """A commit that does not move while records arrive reuses its record's write time (the
    history brackets it): the seconds equal a fresh computation at every tick."""
    cached, lags = Estimates(), []
    for second in range(60):  # one record a second; the consumer stays at offset 4
        cached.observe_watermarks({TP("t", 0): second}, at=1000.0 + second)
        lag = [PartitionLag("t", 0, 4, second, max(0, second - 4))]
        [judged] = cached.judge("g", lag, frozenset(), 1000.0 + second, float(second))
        lags.append((second, lag, judged.seconds))
    for second, lag, seconds in lags[10::7]:
        fresh = Estimates()
        for earlier in range(second + 1):
            fresh.observe_watermarks({TP("t", 0): earlier}, at=1000.0 + earlier)
        [computed] = fresh.judge("g", lag, frozenset(), 1000.0 + second, float(second))
        assert seconds == pytest.approx(computed.seconds, abs=0.01)
        assert seconds == pytest.approx(second - 4.5, abs=0.01)  # record 4: between 4 and 5 s


def test_a_write_time_estimated_past_the_history_is_computed_again_when_it_is_known() -> None:
    """Judged before its end offset reached the history (the record at the commit was written
    after the last point), the estimate is a guess between that point and now: once the history
    brackets the record, the bracket answers, not the guess."""
    estimates = Estimates()
    estimates.observe_watermarks({TP("t", 0): 0}, at=1000.0)
    estimates.observe_watermarks({TP("t", 0): 10}, at=1010.0)
    [guess] = estimates.judge("g", [PartitionLag("t", 0, 12, 20, 8)], frozenset(), 1020.0, 0.0)
    assert guess.seconds == pytest.approx(7.5)  # record 12 between 1010 and 1020
    estimates.observe_watermarks({TP("t", 0): 20}, at=1011.0)  # a burst: 10 records in 1 s
    estimates.observe_watermarks({TP("t", 0): 30}, at=1030.0)
    [known] = estimates.judge("g", [PartitionLag("t", 0, 12, 30, 18)], frozenset(), 1030.0,
                              1.0)
    assert known.seconds == pytest.approx(1030.0 - 1010.25)


def test_a_consumer_keeping_5_s_behind_stays_5_s_behind() -> None:
    estimates = Estimates()
    for second in range(40):  # a record a second, two partitions, commits every second
        high_watermarks = {TP("t", 0): second, TP("t", 1): second}
        estimates.observe_watermarks(high_watermarks, at=1000.0 + second)
        committed = max(0, second - 5)
        lags = [PartitionLag("t", p, committed, second, second - committed) for p in (0, 1)]
        judged = estimates.judge("g", lags, frozenset(), 1000.0 + second, float(second))
        if second >= 10:
            assert [p.seconds for p in judged] == [pytest.approx(4.5), pytest.approx(4.5)]


def test_seconds_are_0_when_the_log_is_truncated_below_an_unmoved_commit() -> None:
    estimates = Estimates()
    for second in range(70):  # a record a second; then the log is cut at 10 (commit at 50)
        high_watermark = second if second < 62 else 10  # 62: not a 5 s evaluation tick
        estimates.observe_watermarks({TP("t", 0): high_watermark}, at=1000.0 + second)
        lag = [PartitionLag("t", 0, 50, high_watermark, max(0, high_watermark - 50))]
        [judged] = estimates.judge("g", lag, frozenset(), 1000.0 + second, float(second))
        assert second < 62 or judged.seconds == 0.0, second


def test_seconds_are_never_negative_when_the_wall_clock_steps_back() -> None:
    estimates = Estimates()
    seen = []
    for second in range(30):  # NTP steps the wall clock back 20 s at second 22
        wall = 1000.0 + second - (20.0 if second >= 22 else 0.0)
        high_watermark = second
        estimates.observe_watermarks({TP("t", 0): high_watermark}, at=wall)
        lag = [PartitionLag("t", 0, 3, high_watermark, max(0, high_watermark - 3))]
        [judged] = estimates.judge("g", lag, frozenset(), wall, float(second))
        seen.append(judged.seconds)
    assert all(seconds is None or seconds >= 0.0 for seconds in seen), seen


def test_a_lag_grown_by_new_records_alone_reaches_the_verdict() -> None:
    """The end offset moves while the commit does not: the tracker learns the new lag at the
    next evaluation, so a consumer that stopped at lag 1 (OK) is STOP once records pile up."""
    estimates = Estimates(StatusRules(stop_after_s=30, allowed_lag=1))
    statuses = []
    for second in range(60):
        # Lag 0, then 1 (OK for good), then 10 from a burst between two evaluations.
        high_watermark = 100 if second < 2 else 101 if second < 6 else 110
        estimates.observe_watermarks({TP("t", 0): high_watermark}, at=1000.0 + second)
        lag = [PartitionLag("t", 0, 100, high_watermark, max(0, high_watermark - 100))]
        [judged] = estimates.judge("g", lag, frozenset(), 1000.0 + second, float(second))
        statuses.append(judged.status)
    assert statuses[:30] == ["OK"] * 30 and statuses[-1] == "STOP"


def test_a_quiet_group_reuses_its_verdict_until_one_is_due_then_stops_on_time() -> None:
    estimates = Estimates(StatusRules(stop_after_s=30))
    statuses = []
    for second in range(45):  # records for 5 s, then nothing moves: only the time passes
        high_watermark = min(50, 10 * second)
        estimates.observe_watermarks({TP("t", 0): high_watermark}, 1000.0 + second)
        lag = [PartitionLag("t", 0, 10, high_watermark, max(0, high_watermark - 10))]
        [judged] = estimates.judge("g", lag, frozenset(), 1000.0 + second, float(second))
        assert second < 2 or judged.seconds == pytest.approx(second - 1.05)
        statuses.append(judged.status)
    # Evaluated every 5 s: the first evaluation after 30 s without a move says STOP.
    assert statuses.index("STOP") == 35 and set(statuses[35:]) == {"STOP"}


def test_every_group_of_a_tick_gets_its_status_evaluated() -> None:
    """Found by the integration test: the first group's call used up the tick's evaluation and
    every other group kept its first status (OK) for ever."""
    estimates = Estimates(StatusRules(stop_after_s=5))
    lag = [PartitionLag("t", 0, 10, 50, 40)]
    statuses = []
    for tick in range(12):
        estimates.observe_watermarks({TP("t", 0): 50}, 1000.0 + tick)
        statuses = [estimates.judge(group, lag, frozenset(), 1000.0 + tick, float(tick))[0].status
                    for group in ("first", "second")]
    assert statuses == ["STOP", "STOP"]


def test_the_status_change_line_names_the_most_severe_partition(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="lag_exporter")
    from lag_exporter.outbox import Outbox

    mixed = GroupLag("c", "g", (PartitionLag("t", 0, 5, 9, 4, 1.0, "STOP"),
                                PartitionLag("t", 1, 5, 9, 4, 1.0, "WARN"),
                                PartitionLag("t", 2, 5, 9, 4, 1.0, "REWIND")))
    fleet = OneGroupAtATime([Sample(MOMENT, (stopped_group("OK"),)), Sample(MOMENT, (mixed,))])
    watch = Watch(fleet, Outbox(), NullSink(), summary_every_s=3600)  # type: ignore[arg-type]
    watch._take_sample()
    watch._take_sample()
    watch.outbox.close()
    assert [r.getMessage() for r in caplog.records if "status" in r.getMessage()] == [
        "cluster c group g topic t: status OK -> ERR (p0 STOP)"]


def test_an_unchanged_group_is_passed_on_as_the_same_lags_with_their_age() -> None:
    estimates = Estimates()
    estimates.observe_watermarks({TP("t", 0): 0}, at=1000.0)
    estimates.observe_watermarks({TP("t", 0): 10}, at=1010.0)  # then the topic goes quiet
    lags = [PartitionLag("t", 0, 5, 10, 5), PartitionLag("t", 1, 3, 3, 0)]
    first, first_age = estimates.judge_as_of("g", lags, frozenset(), wall_now=1010.0, now=0.0)
    second, second_age = estimates.judge_as_of("g", lags, frozenset(), wall_now=1011.0, now=1.0)
    third, third_age = estimates.judge_as_of("g", lags, frozenset(), wall_now=1013.5, now=2.0)
    assert second is first and third is first  # passed on, not rebuilt
    assert (first_age, second_age, third_age) == (0.0, 1.0, 3.5)  # since they were judged
    assert first[0].seconds is not None and first[1].seconds == 0.0
    fresh = Estimates()
    fresh.observe_watermarks({TP("t", 0): 0}, at=1000.0)
    fresh.observe_watermarks({TP("t", 0): 10}, at=1010.0)
    computed = fresh.judge("g", lags, frozenset(), wall_now=1013.5, now=2.0)
    assert [p.seconds for p in aged_partitions(third, third_age)] == pytest.approx(
        [p.seconds for p in computed])


def test_the_sampler_hands_on_the_age_of_passed_on_seconds() -> None:
    kafka, clock = FakeKafka(), Clock()
    kafka.committed["g"] = GroupOffsets("g", {TP("t", 0): 20, TP("t", 1): 100})
    kafka.watermarks = {TP("t", 0): 100, TP("t", 1): 100}
    kafka.record_time_answers = {TP("t", 0): (20, 20, 400.0)}
    wall = [1000.0]
    sampler = Sampler(kafka, ["g"], clock=clock, wall_clock=lambda: wall[0])
    first = sampler.sample().groups[0]
    clock.now, wall[0] = 1.0, 1002.0
    later = sampler.sample().groups[0]
    assert later.partitions is first.partitions and later.seconds_age == 2.0
    assert [p.seconds for p in later.current_partitions()] == [602.0, 0.0]


def aged_group(seconds_age: float) -> GroupLag:
    return dataclasses.replace(stopped_group("STOP"), seconds_age=seconds_age)


def test_documents_add_the_age_of_passed_on_seconds() -> None:
    [document] = sample_documents(Sample(MOMENT, (aged_group(2.0),)))
    assert document.source["lag_seconds"] == {"p0": 14.5, "p1": 0.0}  # caught up stays 0
    assert document.source["lag_seconds_max"] == 14.5


def test_snapshot_rows_web_rows_and_partition_documents_add_the_age() -> None:
    sample = Sample(MOMENT, (aged_group(2.0),))
    assert [line.split("\t")[-1] for line in format_tsv(sample).splitlines()[1:]] == [
        "14.5", "0.0"]
    [row] = group_rows(aged_group(2.0))
    assert row.seconds_max == 14.5 and [p.seconds for p in row.partitions] == [14.5, 0.0]
    assert [d.source["kafka"]["consumergroup"]["consumer_lag_seconds"]
            for d in partition_documents(sample)] == [14.5, 0.0]
