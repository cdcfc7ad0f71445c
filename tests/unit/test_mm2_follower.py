"""OffsetsTopicFollower's plumbing with a fake Consumer (what librdkafka does is tested against the
stack in tests/integration/test_mm2.py): the offsets topic is assigned from its beginning once,
read to the end-of-partition events, then each sample takes only what is new without blocking;
a catch-up that outlasts the timeout is a "still reading" error and goes on at the next sample;
skipped records are counted once. Each test fails if the follower re-read the topic per sample
(tried: resetting the catch-up after each sample fails all four). The unknown offsets topic is
tested through the command in tests/integration/test_mm2_errors.py."""

from __future__ import annotations

import json
import logging
from typing import Any, cast

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException

from lag_exporter import mm2_follower
from lag_exporter.errors import SourceError
from lag_exporter.kafka_source import describe_kafka_error
from lag_exporter.mm2 import MirrorSettings
from lag_exporter.mm2_follower import BATCH, MIRROR_STATE, OffsetsTopicFollower
from lag_exporter.model import GroupOffsets, TopicPartition

OFFSETS_TOPIC = "mm2-offsets.source.internal"
TIMEOUT_S = 1.0
FETCH_S = 0.25


def position(topic: str, partition: int, offset: int | None,
             connector: str = "MirrorSourceConnector", alias: str = "source"
             ) -> tuple[bytes, bytes | None]:
    """A record as MirrorSourceConnector writes it into the offsets topic."""
    key = json.dumps([connector, {"cluster": alias, "partition": partition, "topic": topic}])
    return key.encode(), None if offset is None else json.dumps({"offset": offset}).encode()


class FakeMessage:
    def __init__(self, partition: int, key: bytes | None = None, value: bytes | None = None,
                 error: KafkaError | None = None) -> None:
        self._partition, self._key, self._value, self._error = partition, key, value, error

    def error(self) -> KafkaError | None:
        return self._error

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def partition(self) -> int:
        return self._partition


class FakeMetadata:
    def __init__(self, topics: dict[str, Any]) -> None:
        self.topics = topics


class FakeTopic:
    def __init__(self, partitions: int) -> None:
        self.error = None
        self.partitions = dict.fromkeys(range(partitions))


class FakeConsumer:
    """The offsets topic as lists of records per partition, consumed as librdkafka hands them
    out: from the assigned offset, an end-of-partition event each time the end is reached.
    `per_call` caps the records of one consume() (slow fetches); a consume() that may wait
    takes one fetch, FETCH_S, on the clock; one that may not takes no time."""

    def __init__(self, partitions: int, clock: list[float]) -> None:
        self.log: dict[int, list[tuple[bytes | None, bytes | None]]] = {
            p: [] for p in range(partitions)}
        self.clock = clock
        self.per_call: int | None = None
        self.errors: list[KafkaError] = []
        """Error events handed out by the next consume()."""
        self.calls: list[tuple[Any, ...]] = []
        self.delivered = 0
        self.position: dict[int, int] = {}
        self._eof_due: set[int] = set()

    def list_topics(self, topic: str, timeout: float) -> FakeMetadata:
        self.calls.append(("list_topics", topic))
        return FakeMetadata({OFFSETS_TOPIC: FakeTopic(len(self.log))} if topic == OFFSETS_TOPIC
                            else {})

    def assign(self, partitions: list[Any]) -> None:
        self.calls.append(("assign", [(tp.topic, tp.partition, tp.offset) for tp in partitions]))
        for tp in partitions:
            assert tp.offset == OFFSET_BEGINNING
            self.position[tp.partition] = 0
            self._eof_due.add(tp.partition)

    def consume(self, num_messages: int, timeout: float) -> list[FakeMessage]:
        self.calls.append(("consume", num_messages, timeout))
        if timeout > 0:
            self.clock[0] += FETCH_S
        out = [FakeMessage(0, error=error) for error in self.errors]
        self.errors = []
        left = min(num_messages, self.per_call or num_messages)
        for partition, records in self.log.items():
            start = self.position.get(partition)
            if start is None:
                continue
            taken = records[start:start + left]
            left -= len(taken)
            out += [FakeMessage(partition, key, value) for key, value in taken]
            self.delivered += len(taken)
            self.position[partition] = start + len(taken)
            if taken:
                self._eof_due.add(partition)
            if self.position[partition] == len(records) and partition in self._eof_due:
                out.append(FakeMessage(partition,
                                       error=KafkaError(KafkaError._PARTITION_EOF)))
                self._eof_due.discard(partition)
        return out

    def close(self) -> None:
        self.calls.append(("close",))

    def calls_since(self, n: int) -> list[tuple[Any, ...]]:
        return self.calls[n:]


def follower_of(consumer: FakeConsumer, clock: list[float],
                settings: list[dict[str, Any]] | None = None) -> OffsetsTopicFollower:
    def make_consumer(given: dict[str, Any]) -> Consumer:
        if settings is not None:
            settings.append(given)
        return cast(Consumer, consumer)

    return OffsetsTopicFollower(MirrorSettings("m", {"bootstrap.servers": "t:1"}), TIMEOUT_S,
                                make_consumer=make_consumer, clock=lambda: clock[0])


def committed(follower: OffsetsTopicFollower) -> dict[TopicPartition, int]:
    answer = follower.group_offsets()
    assert isinstance(answer, GroupOffsets), answer
    assert answer.state == MIRROR_STATE
    return dict(answer.committed_offsets)


def test_assigned_from_the_beginning_once_then_only_new_records_without_blocking() -> None:
    clock = [0.0]
    consumer = FakeConsumer(partitions=2, clock=clock)
    consumer.log[0] += [position("a", 0, 5), position("a", 0, 9)]
    consumer.log[1] += [position("a", 1, 3)]
    settings: list[dict[str, Any]] = []
    follower = follower_of(consumer, clock, settings)

    assert committed(follower) == {TopicPartition("a", 0): 10, TopicPartition("a", 1): 4}
    assert follower.caught_up
    given, = settings  # one consumer, no group joined, nothing committed, EOFs asked for
    assert (given["enable.auto.commit"], given["enable.partition.eof"]) == (False, True)
    assignments = [call for call in consumer.calls if call[0] == "assign"]
    assert assignments == [("assign", [(OFFSETS_TOPIC, 0, OFFSET_BEGINNING),
                                       (OFFSETS_TOPIC, 1, OFFSET_BEGINNING)])]
    assert consumer.delivered == 3 and follower.positions.records == 3

    # samples with nothing new: one non-blocking look at the queue each, nothing re-read
    for _ in range(3):
        before = len(consumer.calls)
        assert committed(follower) == {TopicPartition("a", 0): 10, TopicPartition("a", 1): 4}
        assert consumer.calls_since(before) == [("consume", BATCH, 0.0)]
    # a flush: exactly the new records are taken, without waiting
    consumer.log[1] += [position("a", 1, 8)]
    consumer.log[0] += [position("a", 0, 12)]
    before = len(consumer.calls)
    assert committed(follower) == {TopicPartition("a", 0): 13, TopicPartition("a", 1): 9}
    assert consumer.calls_since(before) == [("consume", BATCH, 0.0)]
    assert consumer.delivered == 5 and follower.positions.records == 5
    assert [call for call in consumer.calls if call[0] in ("assign", "list_topics")] == [
        ("list_topics", OFFSETS_TOPIC), assignments[0]]
    assert clock == [FETCH_S]  # only the catch-up's first look waited
    follower.close()
    assert consumer.calls[-1] == ("close",)


def test_still_reading_after_the_timeout_then_the_catch_up_goes_on() -> None:
    clock = [0.0]
    consumer = FakeConsumer(partitions=1, clock=clock)
    consumer.log[0] += [position("a", 0, n) for n in range(12)]
    consumer.per_call = 2  # slow fetches: 2 records per 0.25 s, 1 s timeout
    consumer.errors = [KafkaError(KafkaError._TRANSPORT, "Connection refused")]
    follower = follower_of(consumer, clock)

    answer = follower.group_offsets()
    assert isinstance(answer, SourceError)
    transport = describe_kafka_error(KafkaException(
        KafkaError(KafkaError._TRANSPORT, "Connection refused")))
    assert str(answer) == (f"still reading offsets topic {OFFSETS_TOPIC} on t:1 after 1 s "
                           f"(8 records so far; {transport})")
    assert not follower.caught_up and clock == [1.0]

    # the next sample goes on where the catch-up stopped: no new assign, nothing read twice
    assert committed(follower) == {TopicPartition("a", 0): 12}
    assert follower.caught_up
    assert [call[0] for call in consumer.calls].count("assign") == 1
    assert consumer.delivered == 12 and follower.positions.records == 12


def test_skipped_records_are_counted_once_and_an_error_after_catch_up_keeps_the_positions(
        caplog: pytest.LogCaptureFixture) -> None:
    clock = [0.0]
    consumer = FakeConsumer(partitions=1, clock=clock)
    consumer.log[0] += [
        position("a", 0, 5), position("a", 0, 1, connector="MirrorCheckpointConnector"),
        position("a", 0, 1, alias="elsewhere"), position("b", 0, None), (b"{", b"{}"),
        position("b", 1, 7)]
    follower = follower_of(consumer, clock)
    assert committed(follower) == {TopicPartition("a", 0): 6, TopicPartition("b", 1): 8}
    skipped = {"other connector": 1, "other source alias": 1, "tombstone": 1, "not JSON": 1}
    assert dict(follower.positions.skipped) == skipped

    for _ in range(3):  # samples with nothing new count nothing again
        committed(follower)
    consumer.log[0] += [position("a", 0, 6, connector="MirrorHeartbeatConnector"),
                        position("b", 1, None)]  # the tombstone removes b-1's position
    assert committed(follower) == {TopicPartition("a", 0): 6}
    assert dict(follower.positions.skipped) == {**skipped, "other connector": 2,
                                                "tombstone": 2}
    assert follower.positions.records == 8

    # after the catch-up, a broken connection is warned once; the last positions stand
    consumer.errors = [KafkaError(KafkaError._TRANSPORT, "Connection refused")]
    with caplog.at_level(logging.WARNING, logger=mm2_follower.__name__):
        assert committed(follower) == {TopicPartition("a", 0): 6}
        consumer.errors = [KafkaError(KafkaError._TRANSPORT, "Connection refused")]
        assert committed(follower) == {TopicPartition("a", 0): 6}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [f"mirror m: offsets topic {OFFSETS_TOPIC} on t:1: Connection refused "
                        "(_TRANSPORT)"]


def test_a_busy_topic_does_not_stall_a_sample(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mm2_follower, "BATCH", 2)
    monkeypatch.setattr(mm2_follower, "MAX_BATCHES_PER_SAMPLE", 3)
    clock = [0.0]
    consumer = FakeConsumer(partitions=1, clock=clock)
    consumer.log[0] += [position("a", 0, 0)]
    follower = follower_of(consumer, clock)
    assert committed(follower) == {TopicPartition("a", 0): 1}
    consumer.log[0] += [position("a", 0, n) for n in range(1, 11)]
    before = len(consumer.calls)
    assert committed(follower) == {TopicPartition("a", 0): 7}  # 3 batches of 2
    assert consumer.calls_since(before) == [("consume", 2, 0.0)] * 3
    assert committed(follower) == {TopicPartition("a", 0): 11}  # the rest at the next sample

