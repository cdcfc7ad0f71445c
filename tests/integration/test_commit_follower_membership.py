"""Group descriptions driven by the membership records of `__consumer_offsets`
(commit_follower.py, offsets_topic.py) against the stack's Kafka 4.1 broker: a consumer joining
a group described as Empty, and leaving it, shows at once (classic and KIP-848 consumer
protocols), while an idle group is described once, not at every turn of the sampler, until its
reuse period ends. Kafka is counted through a wrapper of the real Admin API source (plumbing:
every answer is Kafka's own). Kafka 3.9's classic records: test_commit_follower.py."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import pairwise

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer
from confluent_kafka import TopicPartition as KafkaTopicPartition
from helpers import commit, create_topic, produce, wait_for

from lag_exporter.commit_follower import CommitFollower, FollowedSource, reuse_period_s
from lag_exporter.errors import SourceError
from lag_exporter.kafka_source import KafkaSource
from lag_exporter.model import TopicPartition
from lag_exporter.offsets_topic import membership_group, offsets_partition_of
from lag_exporter.sampler import Sampler
from stack.stackctl import Stack

pytestmark = pytest.mark.integration

Members = tuple[str, frozenset[TopicPartition]]


class CountingKafkaSource(KafkaSource):
    """The real Admin API source, noting which groups it describes, and when (`clock`)."""

    def __init__(self, cluster: str, settings: dict[str, str], timeout_s: float) -> None:
        super().__init__(cluster, settings, timeout_s)
        self.described: list[str] = []
        self.described_at: list[tuple[str, float]] = []
        self.clock: Callable[[], float] = time.monotonic

    def group_members(self, groups: Iterable[str]) -> dict[str, Members | SourceError]:
        groups = list(groups)
        self.described += groups
        self.described_at += [(group, self.clock()) for group in groups]
        return super().group_members(groups)


def membership_key_versions(bootstrap: str, group: str) -> set[int]:
    """Key versions of the group's membership records, read straight from its partition of
    __consumer_offsets by a consumer of the test's own (membership_group finds the group id)."""
    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused",
                       "enable.auto.commit": False, "isolation.level": "read_uncommitted"})
    try:
        topics = reader.list_topics("__consumer_offsets", timeout=10).topics
        partition = offsets_partition_of(group, len(topics["__consumer_offsets"].partitions))
        _, end = reader.get_watermark_offsets(
            KafkaTopicPartition("__consumer_offsets", partition), timeout=10)
        reader.assign([KafkaTopicPartition("__consumer_offsets", partition, OFFSET_BEGINNING)])
        versions: set[int] = set()
        position = 0
        deadline = time.monotonic() + 30
        while position < end - 1 and time.monotonic() < deadline:
            for message in reader.consume(1000, 0.5):
                if message.error() is not None:
                    continue
                position = message.offset() or 0
                key = message.key()
                if key is not None and membership_group(key) == group:
                    versions.add(int.from_bytes(key[:2], "big", signed=True))
        return versions
    finally:
        reader.close()


@pytest.fixture
def followed(stack: Stack) -> Iterator[tuple[FollowedSource, CountingKafkaSource]]:
    settings = {"bootstrap.servers": stack.source_bootstrap}
    kafka = CountingKafkaSource("source", settings, 10.0)
    source = FollowedSource(kafka, CommitFollower("source", settings, 10.0), mode="topic")
    yield source, kafka
    source.close()


def members_now(source: FollowedSource, group: str) -> Members:
    """One sample's view of the group: committed offsets first (the follower is brought up to
    the partitions' ends), then its description."""
    source.committed_offsets([group])
    answer = source.group_members([group])[group]
    assert not isinstance(answer, SourceError), answer
    return answer


def wait_for_members(source: FollowedSource, group: str, expected: Members,
                     consumer: Consumer | None, timeout_s: float) -> float:
    """Seconds until the group's description is `expected` (polling the consumer meanwhile:
    a classic member joins only while polled)."""
    started = time.monotonic()

    def shows() -> bool:
        if consumer is not None:
            consumer.poll(0.05)
        return members_now(source, group) == expected

    wait_for(shows, timeout_s, f"{group} to be described as {expected}", poll_s=0.1)
    return time.monotonic() - started


def wait_until_followed(source: FollowedSource, *groups: str) -> None:
    """Until the follower has read the groups' partitions up to their ends once."""
    def from_topic() -> bool:
        source.committed_offsets(groups)
        return source.topic_groups == len(groups)

    wait_for(from_topic, 30, "the follower to read __consumer_offsets", poll_s=0.1)


@pytest.mark.parametrize("protocol", ["classic", "consumer"])
def test_a_member_joining_and_leaving_shows_at_once(
        stack: Stack, followed: tuple[FollowedSource, CountingKafkaSource], unique_name: str,
        protocol: str) -> None:
    source, kafka = followed
    topic, group = f"{unique_name}.t", f"{unique_name}-{protocol}"
    create_topic(stack.source_bootstrap, topic, 2)
    produce(stack.source_bootstrap, topic, {0: 3, 1: 3})
    commit(stack.source_bootstrap, group, {(topic, 0): 1})
    wait_until_followed(source, group)
    empty: Members = ("EMPTY", frozenset())
    assert members_now(source, group) == empty
    assert members_now(source, group) == empty
    assert kafka.described == [group]  # the second answer reused the first
    store = source.follower.store
    before = store.membership_seen(group)
    consumer = Consumer({"bootstrap.servers": stack.source_bootstrap, "group.id": group,
                         "group.protocol": protocol, "auto.offset.reset": "earliest",
                         "enable.auto.commit": False})
    try:
        consumer.subscribe([topic])
        everything = frozenset({TopicPartition(topic, 0), TopicPartition(topic, 1)})
        # Seconds, not the reuse period (at least DESCRIPTION_REUSE_S / 2 = 300 s).
        joined_s = wait_for_members(source, group, ("STABLE", everything), consumer, 30)
        assert joined_s < reuse_period_s(group) / 10
        assert store.membership_seen(group) > before
        joined = store.membership_seen(group)
        # The broker's records: the group id first in each key (classic: GroupMetadataKey,
        # version 2; consumer: Kafka 4's ConsumerGroup*Key records).
        versions = membership_key_versions(stack.source_bootstrap, group)
        if protocol == "classic":
            assert versions == {2}, versions
        else:  # the group a commit made (version 2) became a consumer group
            assert {3, 5, 6, 7, 8} <= versions, versions
    finally:
        consumer.close()
    left_s = wait_for_members(source, group, empty, None, 30)
    assert left_s < reuse_period_s(group) / 10
    assert store.membership_seen(group) > joined
    described = len(kafka.described)
    assert members_now(source, group) == empty
    assert len(kafka.described) == described  # settled again: reused


def test_an_idle_group_is_not_described_at_every_turn(
        stack: Stack, followed: tuple[FollowedSource, CountingKafkaSource],
        unique_name: str) -> None:
    """The sampler asks for each group's description every 30 s; Kafka is asked once per
    reuse period. A clock of the test's own plays 630 s of one-second samples."""
    source, kafka = followed
    topic, idle, active = f"{unique_name}.t", f"{unique_name}-idle", f"{unique_name}-active"
    create_topic(stack.source_bootstrap, topic, 2)
    produce(stack.source_bootstrap, topic, {0: 3, 1: 3})
    commit(stack.source_bootstrap, idle, {(topic, 0): 1, (topic, 1): 2})
    consumer = Consumer({"bootstrap.servers": stack.source_bootstrap, "group.id": active,
                         "group.protocol": "consumer", "auto.offset.reset": "earliest",
                         "enable.auto.commit": False})
    try:
        consumer.subscribe([topic])
        wait_until_followed(source, idle)
        everything = frozenset({TopicPartition(topic, 0), TopicPartition(topic, 1)})
        wait_for_members(source, active, ("STABLE", everything), consumer, 30)
        wait_until_followed(source, idle, active)
        now = [0.0]
        source._clock = kafka.clock = lambda: now[0]
        source._descriptions.clear()  # described from here on in the test's time
        kafka.described_at.clear()
        sampler = Sampler(source, [idle, active], metadata_refresh_s=30.0,
                          clock=lambda: now[0])
        asked: list[str] = []
        ask = source.group_members

        def counting(groups: Sequence[str]) -> dict[str, Members | SourceError]:
            asked.extend(groups)
            return ask(groups)

        source.group_members = counting  # type: ignore[method-assign]
        for second in range(631):
            now[0] = float(second)
            states = {g.group: g.state for g in sampler.sample().groups}
            assert states == {idle: "EMPTY", active: "STABLE"}, states
            if second % 10 == 0:
                consumer.poll(0)  # a member that polls, as a live one does
        for group in (idle, active):
            # The sampler asked at 0 s and then every 30 s.
            assert asked.count(group) >= 21
            # Kafka: at 0 s, then at the sampler's first turn after the group's reuse period.
            times = [at for described, at in kafka.described_at if described == group]
            period = reuse_period_s(group)
            assert times[0] == 0.0 and len(times) >= 2, times
            assert all(period <= later - earlier < period + 31
                       for earlier, later in pairwise(times)), (times, period)
    finally:
        consumer.close()
