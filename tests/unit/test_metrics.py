import math
import threading
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from lag_exporter import metrics as metrics_module
from lag_exporter.app import make_service
from lag_exporter.config import ClusterConfig, ExporterConfig, KafkaSettings
from lag_exporter.documents import Document
from lag_exporter.metrics import DeliveryState, Health, LagMetrics
from lag_exporter.model import GroupLag, PartitionLag, Sample
from lag_exporter.offsets_topic import FollowerState
from lag_exporter.selection import GroupSelection, TopicSelection

Series = dict[tuple[str, frozenset[tuple[str, str]]], float]
T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def sample(*groups: GroupLag, duration_s: float = 0.02, taken_at: datetime = T0) -> Sample:
    return Sample(taken_at=taken_at, groups=groups, duration_s=duration_s)


def group(name: str, *partitions: PartitionLag, cluster: str = "default",
          error: str | None = None) -> GroupLag:
    return GroupLag(cluster=cluster, group=name, partitions=partitions, error=error)


def part(topic: str, partition: int, committed: int | None, hwm: int | None) -> PartitionLag:
    lag = None if committed is None or hwm is None else max(0, hwm - committed)
    return PartitionLag(topic, partition, committed, hwm, lag)


def series(metrics: LagMetrics) -> Series:
    out: Series = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for s in family.samples:
            key = (s.name, frozenset(s.labels.items()))
            assert key not in out, f"duplicate series {key}"
            out[key] = s.value
    return out


def named(all_series: Series, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: value for (n, labels), value in all_series.items() if n == name}


def labels(**kv: str) -> frozenset[tuple[str, str]]:
    return frozenset(kv.items())


def lp(group: str, topic: str, partition: int, cluster: str = "default") -> frozenset[
        tuple[str, str]]:
    return labels(cluster_name=cluster, group=group, topic=topic, partition=str(partition))


def test_lag_offset_and_aggregates_use_kafka_lag_exporter_names() -> None:
    m = LagMetrics()
    m.observe(sample(
        group("g1", part("a", 0, 10, 15), part("a", 1, 20, 20), part("b", 0, 0, 7)),
        group("g2", part("a", 0, 12, 15), cluster="other"),
    ))
    s = series(m)
    assert named(s, "kafka_consumergroup_group_lag") == {
        lp("g1", "a", 0): 5, lp("g1", "a", 1): 0, lp("g1", "b", 0): 7,
        lp("g2", "a", 0, "other"): 3,
    }
    assert named(s, "kafka_consumergroup_group_offset") == {
        lp("g1", "a", 0): 10, lp("g1", "a", 1): 20, lp("g1", "b", 0): 0,
        lp("g2", "a", 0, "other"): 12,
    }
    assert named(s, "kafka_consumergroup_group_max_lag") == {
        labels(cluster_name="default", group="g1"): 7,
        labels(cluster_name="other", group="g2"): 3,
    }
    assert named(s, "kafka_consumergroup_group_sum_lag") == {
        labels(cluster_name="default", group="g1"): 12,
        labels(cluster_name="other", group="g2"): 3,
    }
    assert named(s, "kafka_consumergroup_group_topic_sum_lag") == {
        labels(cluster_name="default", group="g1", topic="a"): 5,
        labels(cluster_name="default", group="g1", topic="b"): 7,
        labels(cluster_name="other", group="g2", topic="a"): 3,
    }
    assert named(s, "kafka_partition_latest_offset") == {
        labels(cluster_name="default", topic="a", partition="0"): 15,
        labels(cluster_name="default", topic="a", partition="1"): 20,
        labels(cluster_name="default", topic="b", partition="0"): 7,
        labels(cluster_name="other", topic="a", partition="0"): 15,
    }


def test_latest_offset_is_one_series_per_partition_across_groups() -> None:
    m = LagMetrics()
    # the second group read the watermark a moment later
    m.observe(sample(group("g1", part("t", 0, 1, 100)), group("g2", part("t", 0, 2, 101))))
    assert named(series(m), "kafka_partition_latest_offset") == {
        labels(cluster_name="default", topic="t", partition="0"): 101,
    }


def test_unknown_lag_has_no_series_and_no_zero() -> None:
    m = LagMetrics()
    m.observe(sample(
        group("g", part("t", 0, None, 50), part("t", 1, 5, None), part("u", 0, None, 9)),
    ))
    s = series(m)
    assert named(s, "kafka_consumergroup_group_lag") == {}
    assert named(s, "kafka_consumergroup_group_offset") == {lp("g", "t", 1): 5}
    assert named(s, "kafka_consumergroup_group_max_lag") == {}
    assert named(s, "kafka_consumergroup_group_sum_lag") == {}
    assert named(s, "kafka_consumergroup_group_topic_sum_lag") == {}
    assert named(s, "kafka_partition_latest_offset") == {
        labels(cluster_name="default", topic="t", partition="0"): 50,
        labels(cluster_name="default", topic="u", partition="0"): 9,
    }
    text = m.render().decode()
    assert "NaN" not in text
    assert " -1" not in text


def test_topic_sum_only_for_topics_with_a_known_lag() -> None:
    m = LagMetrics()
    m.observe(sample(group("g", part("known", 0, 1, 4), part("unknown", 0, None, 4))))
    assert named(series(m), "kafka_consumergroup_group_topic_sum_lag") == {
        labels(cluster_name="default", group="g", topic="known"): 3,
    }


def test_series_of_vanished_partitions_and_groups_disappear() -> None:
    m = LagMetrics()
    m.observe(sample(group("g1", part("t", 0, 1, 2), part("t", 1, 1, 3)),
                     group("g2", part("t", 0, 0, 2))))
    assert len(named(series(m), "kafka_consumergroup_group_lag")) == 3
    m.observe(sample(group("g1", part("t", 0, 2, 2))))
    s = series(m)
    assert named(s, "kafka_consumergroup_group_lag") == {lp("g1", "t", 0): 0}
    assert named(s, "kafka_consumergroup_group_max_lag") == {
        labels(cluster_name="default", group="g1"): 0,
    }
    assert named(s, "lag_exporter_group_up") == {labels(cluster_name="default", group="g1"): 1}
    assert named(s, "kafka_partition_latest_offset") == {
        labels(cluster_name="default", topic="t", partition="0"): 2,
    }


def test_failed_group_has_no_lag_series_is_down_and_counted() -> None:
    m = LagMetrics()
    m.observe(sample(group("ok", part("t", 0, 1, 2)), group("bad", part("t", 0, 1, 5))))
    m.observe(sample(group("ok", part("t", 0, 1, 2)), group("bad", error="coordinator gone")))
    m.observe(sample(group("ok", part("t", 0, 1, 2)), group("bad", error="coordinator gone")))
    s = series(m)
    assert named(s, "kafka_consumergroup_group_lag") == {lp("ok", "t", 0): 1}
    assert named(s, "kafka_consumergroup_group_offset") == {lp("ok", "t", 0): 1}
    assert labels(cluster_name="default", group="bad") not in named(
        s, "kafka_consumergroup_group_sum_lag")
    assert named(s, "lag_exporter_group_up") == {
        labels(cluster_name="default", group="ok"): 1,
        labels(cluster_name="default", group="bad"): 0,
    }
    assert named(s, "lag_exporter_group_errors_total") == {
        labels(cluster_name="default", group="ok"): 0,
        labels(cluster_name="default", group="bad"): 2,
    }
    assert named(s, "lag_exporter_samples_total") == {frozenset(): 3}
    # recovery: back up, the counter keeps its count
    m.observe(sample(group("ok", part("t", 0, 1, 2)), group("bad", part("t", 0, 4, 5))))
    s = series(m)
    assert named(s, "lag_exporter_group_up")[labels(cluster_name="default", group="bad")] == 1
    assert named(s, "lag_exporter_group_errors_total")[
        labels(cluster_name="default", group="bad")] == 2
    assert named(s, "kafka_consumergroup_group_lag")[lp("bad", "t", 0)] == 1


def test_metric_types() -> None:
    m = LagMetrics()
    m.observe(sample(group("g", part("t", 0, 1, 2))))
    m.observe_delivery(queued=1, dropped_total=0, failures_total=0)
    types = {f.name: f.type for f in text_string_to_metric_families(m.render().decode())}
    assert types == {
        "kafka_consumergroup_group_lag": "gauge",
        "kafka_consumergroup_group_offset": "gauge",
        "kafka_consumergroup_group_max_lag": "gauge",
        "kafka_consumergroup_group_sum_lag": "gauge",
        "kafka_consumergroup_group_topic_sum_lag": "gauge",
        "kafka_partition_latest_offset": "gauge",
        "lag_exporter_partitions_unknown": "gauge",
        "lag_exporter_documents_rejected": "counter",
        "lag_exporter_outbox_oldest_age_seconds": "gauge",
        "kafka_consumergroup_group_lag_seconds": "gauge",
        "kafka_consumergroup_group_max_lag_seconds": "gauge",
        "lag_exporter_group_topic_status": "gauge",
        "lag_exporter_sample_duration_seconds": "histogram",
        "lag_exporter_samples": "counter",
        "lag_exporter_group_errors": "counter",
        "lag_exporter_group_up": "gauge",
        "lag_exporter_last_sample_timestamp_seconds": "gauge",
        "lag_exporter_outbox_queued": "gauge",
        "lag_exporter_outbox_dropped": "counter",
        "lag_exporter_delivery_failures": "counter",
    }


def test_sample_duration_timestamp_and_count() -> None:
    m = LagMetrics()
    m.observe(sample(duration_s=0.02))
    m.observe(sample(duration_s=3.0, taken_at=datetime(2026, 1, 2, 3, 4, 6, tzinfo=UTC)))
    s = series(m)
    assert s[("lag_exporter_sample_duration_seconds_count", frozenset())] == 2
    assert s[("lag_exporter_sample_duration_seconds_sum", frozenset())] == pytest.approx(3.02)
    assert s[("lag_exporter_sample_duration_seconds_bucket", labels(le="0.025"))] == 1
    assert s[("lag_exporter_sample_duration_seconds_bucket", labels(le="5.0"))] == 2
    assert s[("lag_exporter_last_sample_timestamp_seconds", frozenset())] == (
        T0.timestamp() + 1)
    assert s[("lag_exporter_samples_total", frozenset())] == 2


def test_duration_buckets_are_inclusive_and_cumulative_up_to_inf() -> None:
    m = LagMetrics()
    for duration in (0.01, 0.0100001, 45.0, -1.0):
        m.observe(sample(duration_s=duration))
    buckets = named(series(m), "lag_exporter_sample_duration_seconds_bucket")
    assert buckets[labels(le="0.01")] == 2  # 0.01 (le is inclusive) and the clamped -1
    assert buckets[labels(le="0.025")] == 3
    assert buckets[labels(le="30.0")] == 3
    assert buckets[labels(le="+Inf")] == 4
    assert list(buckets.values()) == sorted(buckets.values())


def test_naive_taken_at_is_read_as_utc() -> None:
    m = LagMetrics()
    m.observe(sample(taken_at=T0.replace(tzinfo=None)))
    assert series(m)[("lag_exporter_last_sample_timestamp_seconds", frozenset())] == (
        T0.timestamp())


def test_before_any_sample_only_zero_counters() -> None:
    s = series(LagMetrics())
    assert s[("lag_exporter_samples_total", frozenset())] == 0
    assert s[("lag_exporter_sample_duration_seconds_count", frozenset())] == 0
    assert named(s, "lag_exporter_last_sample_timestamp_seconds") == {}
    assert named(s, "lag_exporter_group_up") == {}
    assert named(s, "lag_exporter_outbox_queued") == {}


def test_delivery_metrics() -> None:
    m = LagMetrics()
    m.observe_delivery(queued=4, dropped_total=2, failures_total=7)
    m.observe_delivery(queued=3, dropped_total=2, failures_total=9)
    s = series(m)
    assert s[("lag_exporter_outbox_queued", frozenset())] == 3
    assert s[("lag_exporter_outbox_dropped_total", frozenset())] == 2
    assert s[("lag_exporter_delivery_failures_total", frozenset())] == 9


def test_scrapes_during_observes_always_see_whole_samples() -> None:
    m = LagMetrics()
    stop = threading.Event()
    failures: list[str] = []

    def scrape() -> None:
        while not stop.is_set():
            s = series(m)
            lags = named(s, "kafka_consumergroup_group_lag")
            sums = named(s, "kafka_consumergroup_group_sum_lag")
            if sums and sum(lags.values()) != sum(sums.values()):
                failures.append(f"{lags} vs {sums}")

    scraper = threading.Thread(target=scrape)
    scraper.start()
    try:
        for n in range(2000):
            width = 1 + n % 5
            m.observe(sample(group("g", *(part("t", p, 0, n) for p in range(width)))))
    finally:
        stop.set()
        scraper.join()
    assert failures == []
    assert series(m)[("lag_exporter_samples_total", frozenset())] == 2000


def test_two_scrapes_of_one_sample_render_it_once(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[Sample | None] = []
    render = metrics_module._LagText.render

    def counted(self: metrics_module._LagText, observed: Sample | None) -> bytes:
        built.append(observed)
        return render(self, observed)

    monkeypatch.setattr(metrics_module._LagText, "render", counted)
    m = LagMetrics()
    queued = [3]
    m.read_delivery_from(lambda: DeliveryState(queued[0], 0, 0))
    m.observe(sample(group("g", part("t", 0, 1, 5))))
    first = m.render()
    queued[0] = 0  # delivered between the two scrapes
    second = m.render()
    assert len(built) == 1 and m.renders == 1
    assert b"lag_exporter_outbox_queued 3.0" in first
    assert b"lag_exporter_outbox_queued 0.0" in second  # the live part is read again
    assert first.replace(b"queued 3.0", b"queued 0.0") == second
    m.observe(sample(group("g", part("t", 0, 4, 5))))
    assert named(series(m), "kafka_consumergroup_group_lag") == {lp("g", "t", 0): 1}
    m.render()
    assert len(built) == 2 and m.renders == 2


@given(st.text(max_size=12), st.text(max_size=12), st.text(max_size=12),
       st.floats(allow_nan=True, allow_infinity=True))
def test_any_names_and_seconds_parse_back(cluster: str, group_name: str, topic: str,
                                          seconds: float) -> None:
    m = LagMetrics()
    m.observe(sample(GroupLag(cluster, group_name, (
        PartitionLag(topic, 3, 1, 9, 8, seconds, "WARN"),))))
    s = series(m)
    labels_ = lp(group_name, topic, 3, cluster)
    assert named(s, "kafka_consumergroup_group_lag") == {labels_: 8}
    assert named(s, "kafka_consumergroup_group_offset") == {labels_: 1}
    parsed = named(s, "kafka_consumergroup_group_lag_seconds")[labels_]
    assert parsed == seconds or (math.isnan(parsed) and math.isnan(seconds))
    assert named(s, "lag_exporter_group_topic_status") == {
        labels(cluster_name=cluster, group=group_name, topic=topic, status="WARN"): 1}
    assert named(s, "kafka_partition_latest_offset") == {
        labels(cluster_name=cluster, topic=topic, partition="3"): 9}
    group_labels = labels(cluster_name=cluster, group=group_name)
    assert named(s, "lag_exporter_group_up") == {group_labels: 1}
    assert named(s, "lag_exporter_group_errors_total") == {group_labels: 0}


@pytest.fixture
def formatted(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The groups whose lag lines are formatted (not taken from the last render), in order."""
    groups: list[str] = []
    group_lines = metrics_module._group_lines

    def counted(group_lag: GroupLag, watermarks: dict[tuple[str, int], int]
                ) -> tuple[dict[str, str], bool]:
        groups.append(group_lag.group)
        return group_lines(group_lag, watermarks)

    monkeypatch.setattr(metrics_module, "_group_lines", counted)
    return groups


def test_only_groups_that_changed_are_formatted_again(formatted: list[str]) -> None:
    m = LagMetrics()
    idle, busy = group("idle", part("t", 0, 5, 9)), group("busy", part("t", 0, 1, 9))
    m.observe(sample(idle, busy))
    m.render()
    moved = group("busy", part("t", 0, 4, 10))
    m.observe(sample(idle, moved, group("new", part("u", 1, 0, 3))))
    text = m.render()
    assert formatted == ["idle", "busy", "busy", "new"]
    fresh = LagMetrics()  # the same sample rendered from scratch
    fresh.observe(sample(idle, moved, group("new", part("u", 1, 0, 3))))
    lag_part = b"# HELP lag_exporter_sample_duration_seconds"  # the counters differ
    assert text.split(lag_part)[0] == fresh.render().split(lag_part)[0]
    assert named(series(m), "kafka_partition_latest_offset") == {
        labels(cluster_name="default", topic="t", partition="0"): 10,
        labels(cluster_name="default", topic="u", partition="1"): 3}


def test_end_offsets_of_a_group_gone_or_failing_go_while_the_others_are_reused(
        formatted: list[str]) -> None:
    idle, other = group("idle", part("t", 0, 5, 9)), group("other", part("u", 1, 0, 3))
    m = LagMetrics()
    m.observe(sample(idle, other))
    m.render()
    t0 = labels(cluster_name="default", topic="t", partition="0")
    m.observe(sample(idle))  # "other" no longer sampled, "idle" unchanged
    assert named(series(m), "kafka_partition_latest_offset") == {t0: 9}
    m.observe(sample(idle, replace(other, partitions=(), error="unreachable")))
    assert named(series(m), "kafka_partition_latest_offset") == {t0: 9}
    assert formatted == ["idle", "other"]


def test_a_group_passed_on_older_shows_its_seconds_aged_and_formats_only_them(
        formatted: list[str]) -> None:
    behind = part("t", 0, 5, 9)._replace(seconds=12.5)
    caught_up = part("t", 1, 9, 9)._replace(seconds=0.0)
    partitions = (behind, caught_up)
    m = LagMetrics()
    m.observe(sample(group("g", *partitions)))
    m.render()
    m.observe(sample(replace(group("g", *partitions), seconds_age=3.0)))
    aged = series(m)
    assert formatted == ["g"]  # the lag and offset lines were reused
    seconds = named(aged, "kafka_consumergroup_group_lag_seconds")
    assert seconds == {labels(cluster_name="default", group="g", topic="t", partition="0"): 15.5,
                       labels(cluster_name="default", group="g", topic="t", partition="1"): 0.0}
    assert named(aged, "kafka_consumergroup_group_max_lag_seconds") == {
        labels(cluster_name="default", group="g"): 15.5}
    fresh = LagMetrics()  # what a render from scratch says
    fresh.observe(sample(group("g", behind._replace(seconds=15.5), caught_up)))
    assert named(series(fresh), "kafka_consumergroup_group_lag_seconds") == seconds


def test_scrapes_waiting_for_one_render_reuse_it() -> None:
    m = LagMetrics()
    m.observe(sample(*(group(f"g{n}", *(part("t", p, 0, p) for p in range(200)))
                       for n in range(20))))
    bodies: list[bytes] = []
    scrapers = [threading.Thread(target=lambda: bodies.append(m.render())) for _ in range(8)]
    for scraper in scrapers:
        scraper.start()
    for scraper in scrapers:
        scraper.join()
    assert m.renders == 1 and len(set(bodies)) == 1


def test_where_committed_offsets_come_from() -> None:
    m = LagMetrics()
    followers = [FollowerState("a", "topic", topic_groups=498, admin_groups=2,
                               behind_partitions=1, records=12345,
                               skipped=(("group metadata", 7), ("unknown key version", 1))),
                 FollowerState("b", "admin", admin_groups=40)]
    m.read_offsets_sources_from(lambda: followers)
    m.observe(sample())
    s = series(m)
    assert named(s, "lag_exporter_offsets_source") == {
        labels(cluster_name="a", source="topic"): 1, labels(cluster_name="b", source="admin"): 1}
    assert named(s, "lag_exporter_offsets_source_groups") == {
        labels(cluster_name="a", source="topic"): 498, labels(cluster_name="a", source="admin"): 2,
        labels(cluster_name="b", source="topic"): 0, labels(cluster_name="b", source="admin"): 40}
    assert named(s, "lag_exporter_offsets_follower_behind_partitions") == {
        labels(cluster_name="a"): 1}
    assert named(s, "lag_exporter_offsets_follower_records_total") == {
        labels(cluster_name="a"): 12345}
    assert named(s, "lag_exporter_offsets_follower_skipped_total") == {
        labels(cluster_name="a", reason="group metadata"): 7,
        labels(cluster_name="a", reason="unknown key version"): 1}
    followers[0] = FollowerState("a", "admin", admin_groups=500)  # between two samples
    assert named(series(m), "lag_exporter_offsets_source") == {
        labels(cluster_name="a", source="admin"): 1, labels(cluster_name="b", source="admin"): 1}
    assert m.renders == 1


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_health_before_first_sample() -> None:
    assert Health(1.0, clock=FakeClock()).status() == (False, "no sample yet")


def test_health_limit_is_three_intervals_with_a_floor() -> None:
    assert Health(5.0).limit_s == 15.0
    assert Health(0.1).limit_s == 3.0


def test_health_ok_while_last_success_is_recent() -> None:
    clock = FakeClock()
    health = Health(2.0, clock=clock)
    health.observe(sample(group("g", part("t", 0, 1, 2))))
    assert health.status() == (True, "ok")
    clock.now += 6.0
    assert health.status() == (True, "ok")  # exactly 3 intervals


def test_health_tolerates_a_few_failed_ticks_then_names_the_group() -> None:
    clock = FakeClock()
    health = Health(1.0, clock=clock)
    health.observe(sample(group("g", part("t", 0, 1, 2)), group("h", part("t", 0, 1, 2))))
    for _ in range(3):
        clock.now += 1.0
        health.observe(sample(group("g", part("t", 0, 1, 2)), group("h", error="boom")))
        assert health.status() == (True, "ok")
    clock.now += 1.0
    health.observe(sample(group("g", part("t", 0, 1, 2)), group("h", error="boom")))
    assert health.status() == (
        False, "no successful sample for 4.0 s (limit 3.0 s): cluster default group h: boom")
    clock.now += 1.0
    health.observe(sample(group("g", part("t", 0, 1, 2)), group("h", part("t", 0, 1, 2))))
    assert health.status() == (True, "ok")


def test_health_unhealthy_when_sampling_stalls() -> None:
    clock = FakeClock()
    health = Health(1.0, clock=clock)
    health.observe(sample(group("g", part("t", 0, 1, 2))))
    clock.now += 12.34
    assert health.status() == (
        False, "no sample for 12.3 s (limit 3.0 s): sampling has stalled")


def test_health_unhealthy_when_nothing_ever_succeeded() -> None:
    health = Health(1.0, clock=FakeClock())
    health.observe(sample(group("g", error="unreachable"),
                          group("x", cluster="other", error="refused")))
    healthy, reason = health.status()
    assert not healthy
    assert reason == ("no successful sample yet: cluster default group g: unreachable; "
                      "cluster other group x: refused")


def test_health_reason_stays_one_bounded_line() -> None:
    health = Health(1.0, clock=FakeClock())
    health.observe(sample(*(group(f"g{n}", error="down") for n in range(10))))
    healthy, reason = health.status()
    assert not healthy
    assert reason.count("cluster default group") == 3
    assert reason.endswith("; and 7 more failing group(s)")
    assert "\n" not in reason


def test_empty_sample_counts_as_success() -> None:
    health = Health(1.0, clock=FakeClock())
    health.observe(sample())
    assert health.status() == (True, "ok")


def test_samples_the_outbox_dropped_are_on_metrics_of_a_built_service() -> None:
    # The wiring in app.make_service, not only LagMetrics: the counter must be the outbox's.
    cluster = ClusterConfig("c", KafkaSettings("c", {"bootstrap.servers": "127.0.0.1:1"}),
                            GroupSelection(("g",)), TopicSelection())
    service = make_service(ExporterConfig(clusters=(cluster,), http_port=0))
    try:  # no Kafka contact before the first sample, no HTTP before run()
        assert service.endpoint is not None
        outbox = service.watch.outbox
        outbox.memory_max_bytes = 1  # keeps only the newest batch in memory
        for n in range(3):  # never delivered: the delivery thread is not running
            outbox.put([Document(f"d{n}", {"lag_total": n})])
        assert outbox.dropped > 0
        for observe in service.watch.sample_observers:
            observe(sample(group("g", part("t", 0, 1, 2), cluster="c")))
        s = series(service.endpoint.metrics)
        assert s[("lag_exporter_outbox_dropped_total", frozenset())] == outbox.dropped
        assert s[("lag_exporter_outbox_queued", frozenset())] == len(outbox)
    finally:
        service.watch.fleet.close()
        service.watch.outbox.close()


def test_the_ha_share_is_a_gauge() -> None:
    metrics = LagMetrics()
    metrics.read_ha_from(lambda: [("c1", "exporters", "__consumer_offsets", 33, 17)])
    text = metrics.render().decode()
    assert 'lag_exporter_ha_owned_groups{cluster_name="c1",ha_group="exporters"} 33.0' in text
    assert ('lag_exporter_ha_owned_partitions{cluster_name="c1",ha_group="exporters",'
            'topic="__consumer_offsets"} 17.0') in text


def test_health_fails_once_unknown_partitions_outlast_the_limit_and_recovers() -> None:
    """Issue 10: a group x topic whose end offsets stay unreadable is written without totals;
    health must not keep saying ok about it."""
    clock = FakeClock()
    health = Health(1.0, clock=clock)
    whole = group("g", part("t", 0, 1, 2), part("t", 1, 1, 2), part("u", 0, 1, 2))
    holed = group("g", part("t", 0, 1, 2), part("t", 1, 1, None), part("u", 0, 1, 2))
    health.observe(sample(whole))
    for _ in range(4):  # 0, 1, 2, 3 s: within the limit, one bad tick is no verdict
        health.observe(sample(holed))
        assert health.status() == (True, "ok")
        clock.now += 1.0
    health.observe(sample(holed))  # 4 s after the hole appeared
    assert health.status() == (False, "lag not fully known (limit 3.0 s): cluster default "
                               "group g topic t: 1 partition(s) without end offset for 4.0 s")
    health.observe(sample(whole))
    assert health.status() == (True, "ok")
    health.observe(sample(holed))  # a new hole starts a new count
    assert health.status() == (True, "ok")


def test_health_ignores_partitions_without_commit_and_bounds_the_line() -> None:
    clock = FakeClock()
    health = Health(1.0, clock=clock)
    never_committed = group("g", part("t", 0, None, None), part("t", 1, 1, 2))
    holes = [group(f"h{n}", part("t", 0, 5, None), part("t", 1, 5, None)) for n in range(5)]
    health.observe(sample(never_committed, *holes))
    clock.now += 3.5
    health.observe(sample(never_committed, *holes))
    healthy, reason = health.status()
    assert not healthy
    assert "group g " not in reason
    assert reason.count("2 partition(s) without end offset for 3.5 s") == 3
    assert reason.endswith("; and 2 more") and "\n" not in reason
