"""The fleet with fake clusters: isolation of slow clusters, discovery, reload (pure logic)."""

import logging
import re
import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

import pytest

from lag_exporter.config import ClusterConfig, KafkaSettings
from lag_exporter.documents import sample_documents
from lag_exporter.errors import SourceError
from lag_exporter.fleet import ClusterWatch, Fleet
from lag_exporter.model import GroupOffsets, TopicPartition
from lag_exporter.selection import GroupSelection, TopicSelection

TP = TopicPartition


class FakeCluster:
    def __init__(self, name: str, groups: list[str]) -> None:
        self.cluster = name
        self.groups = groups
        self.block = threading.Event()
        self.slow = False

    def committed_offsets(self, groups: Sequence[str]) -> dict[str, GroupOffsets | SourceError]:
        if self.slow:
            self.block.wait(5)
        return {g: GroupOffsets(g, {TP("t", 0): 1}) for g in groups}

    def group_members(
        self, groups: Sequence[str]
    ) -> dict[str, tuple[str, frozenset[TopicPartition]] | SourceError]:
        return {g: ("EMPTY", frozenset()) for g in groups}

    def topic_partitions(self, topics: Sequence[str]) -> dict[str, list[int] | SourceError]:
        return {}

    def high_watermarks(
        self, partitions: Sequence[TopicPartition]
    ) -> dict[TopicPartition, int | SourceError]:
        return {tp: 5 for tp in partitions}

    def list_groups(self) -> list[str] | SourceError:
        return list(self.groups)

    def record_times(
        self, requests: Mapping[TopicPartition, int]
    ) -> dict[TopicPartition, tuple[int, int, float] | SourceError]:
        return {tp: SourceError("no record") for tp in requests}

    def close(self) -> None:
        self.block.set()


def config(name: str, names: tuple[str, ...] = (), pattern: str | None = None) -> ClusterConfig:
    return ClusterConfig(name, KafkaSettings(name, {"bootstrap.servers": f"{name}:9092"}),
                         GroupSelection(names, (re.compile(pattern),) if pattern else ()),
                         TopicSelection())


def finished_in_background(watch: ClusterWatch, taken_at: datetime) -> None:
    """Start the cluster's sample for this tick and wait until it is done, so that a tick
    that then waits 0 s finds it finished whatever the machine's load (no wall-time race)."""
    watch.start(taken_at)
    in_flight = watch.in_flight()
    assert in_flight is not None
    in_flight.result(timeout=10)


def test_a_slow_cluster_does_not_hold_up_the_others_and_its_sample_arrives_late(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="lag_exporter")
    fast, slow = FakeCluster("fast", []), FakeCluster("slow", [])
    slow.slow = True
    fast_watch = ClusterWatch(config("fast", ("a",)), fast)
    slow_watch = ClusterWatch(config("slow", ("b",)), slow)
    fleet = Fleet([fast_watch, slow_watch])
    first_tick = datetime(2026, 1, 1, 0, 0, 0, tzinfo=UTC)
    finished_in_background(fast_watch, first_tick)
    first = fleet.sample(wait_s=0, taken_at=first_tick)  # slow blocks until released
    assert [(g.cluster, g.error) for g in first.groups] == [("fast", None)]
    second_tick = first_tick + timedelta(seconds=1)
    finished_in_background(fast_watch, second_tick)
    second = fleet.sample(wait_s=0, taken_at=second_tick)
    assert [g.cluster for g in second.groups] == ["fast"]  # slow skips ticks, no fake error
    slow.block.set()
    slow_in_flight = slow_watch.in_flight()
    assert slow_in_flight is not None
    slow_in_flight.result(timeout=10)
    third_tick = first_tick + timedelta(seconds=2)
    finished_in_background(fast_watch, third_tick)
    third = fleet.sample(wait_s=0, taken_at=third_tick)
    late = [g for g in third.groups if g.cluster == "slow"]
    assert len(late) == 1 and late[0].error is None and late[0].partitions[0].lag == 4
    assert late[0].taken_at == first_tick  # delivered with the time it was taken
    documents = sample_documents(third)
    assert {d.source["cluster"]: d.source["@timestamp"] for d in documents} == {
        "fast": "2026-01-01T00:00:02.000Z", "slow": "2026-01-01T00:00:00.000Z"}
    assert fleet.ticks_skipped == {"slow": 2}
    behind = [r for r in caplog.records if "takes longer than the interval" in r.getMessage()]
    assert [(r.name, r.levelno) for r in behind] == [("lag_exporter.fleet", logging.WARNING)]
    fleet.close()


def test_a_tick_waits_up_to_wait_s_for_a_cluster_still_sampling() -> None:
    kafka = FakeCluster("c", [])
    kafka.slow = True
    fleet = Fleet([ClusterWatch(config("c", ("g",)), kafka)])
    release = threading.Timer(0.05, kafka.block.set)
    release.start()
    # Released after 50 ms, so a 30 s budget is never used up, however loaded the machine.
    assert [g.group for g in fleet.sample(wait_s=30).groups] == ["g"]
    fleet.close()


def test_groups_found_by_regex_come_and_go_with_discovery() -> None:
    kafka = FakeCluster("c", ["mirror-1", "other"])
    watch = ClusterWatch(config("c", pattern="mirror-.*"), kafka, discovery_interval_s=0)
    fleet = Fleet([watch])
    assert [g.group for g in fleet.sample().groups] == ["mirror-1"]
    kafka.groups = ["mirror-2"]
    # one listing without mirror-1 could be a broker still loading: it stays one more round
    assert [g.group for g in fleet.sample().groups] == ["mirror-2", "mirror-1"]
    assert [g.group for g in fleet.sample().groups] == ["mirror-2"]
    fleet.close()


def test_reload_keeps_the_client_of_an_unchanged_connection() -> None:
    made: list[str] = []

    def make_source(cluster: ClusterConfig) -> FakeCluster:
        made.append(cluster.name)
        return FakeCluster(cluster.name, [])

    fleet = Fleet([ClusterWatch(config("a", ("g1",)), make_source(config("a")))])
    fleet.reconfigure([config("a", ("g1", "g2")), config("b", ("h",))], make_source, 30)
    assert made == ["a", "b"]  # "a" kept its client
    assert sorted((g.cluster, g.group) for g in fleet.sample().groups) == [
        ("a", "g1"), ("a", "g2"), ("b", "h")]
    fleet.close()
