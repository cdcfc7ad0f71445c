"""I/O: follow MirrorMaker 2's offsets topic on the target cluster, and answer a mirror as a
memberless consumer group of the source cluster.

The follower reads the compacted offsets topic from its beginning once (the catch-up), then on
each sample takes only what arrived since, without blocking: its Consumer fetches in the
background, so a sample costs no request beyond the consumer's own fetches. It uses no consumer
group (assign(), nothing committed). It runs in the exporter's process, not in the isolated
Kafka client process: it is one Consumer per mirror with a bounded queue.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException
from confluent_kafka import TopicPartition as KafkaTopicPartition

from lag_exporter.errors import SourceError
from lag_exporter.kafka_source import describe_kafka_error
from lag_exporter.mm2 import MirrorPositions, MirrorSettings
from lag_exporter.model import GroupOffsets, TopicPartition
from lag_exporter.sampler import OffsetSource, WrappedSource

log = logging.getLogger(__name__)

BATCH = 10_000
"""Records taken from the consumer's queue per call."""
MAX_BATCHES_PER_SAMPLE = 50
"""A sample reads at most this many batches; the rest waits for the next one (a busy Connect
offsets topic must not stall the sample)."""
MIRROR_STATE = "MIRROR"
"""The group state a mirror is reported with: it has no Kafka group, hence no members."""


class _DebugOnlyLogger:
    """librdkafka's own log lines (connection refused, ...) only at debug level; errors that
    matter come back as answers."""

    def log(self, level: int, msg: str, *args: Any) -> None:
        log.debug(msg, *args)


def consumer_settings(mirror: MirrorSettings, timeout_s: float) -> dict[str, Any]:
    settings: dict[str, Any] = dict(mirror.target_settings)
    settings.setdefault("client.id", "lag-exporter-mm2")
    settings.setdefault("socket.timeout.ms", int(timeout_s * 1000))
    settings.setdefault("reconnect.backoff.max.ms", 1000)
    settings.update({
        "group.id": "lag-exporter-mm2",  # required by librdkafka; never joined or committed
        "enable.auto.commit": False, "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest", "isolation.level": "read_uncommitted",
        "enable.partition.eof": True,  # tells when the catch-up reached the end
        "allow.auto.create.topics": False,
        "fetch.wait.max.ms": 100,  # new positions within a tenth of a second
        "queued.max.messages.kbytes": 4096,
        "logger": _DebugOnlyLogger(),
    })
    return settings


class OffsetsTopicFollower:
    """The positions of one mirror, kept current from its offsets topic."""

    def __init__(self, mirror: MirrorSettings, timeout_s: float,
                 make_consumer: Callable[[dict[str, Any]], Consumer] = Consumer,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.mirror = mirror
        self.timeout_s = timeout_s
        self.positions = MirrorPositions(mirror.connector, mirror.source_alias, mirror.topics)
        self._make_consumer = make_consumer
        self._clock = clock
        self._consumer: Consumer | None = None
        self._not_at_end: set[int] | None = None
        """Partitions of the offsets topic the catch-up has not read to the end; None before
        the topic was found, empty once caught up."""
        self._last_error: str | None = None

    @property
    def caught_up(self) -> bool:
        return self._not_at_end == set()

    def group_offsets(self) -> GroupOffsets | SourceError:
        """The mirror's positions as a memberless group's commits (stored + 1), read up to now."""
        error = self.read_new()
        if error is not None:
            return error
        committed = self.positions.committed_offsets()
        if not committed:
            return SourceError(f"no position of {self.mirror.connector} for source alias "
                               f"'{self.mirror.source_alias}' in {self.where()} "
                               f"({self.positions.records} records read, "
                               f"{self.positions.describe_skipped()})")
        return GroupOffsets(self.mirror.label, committed, state=MIRROR_STATE)

    def where(self) -> str:
        return f"offsets topic {self.mirror.offsets_topic} on {self.mirror.target_bootstrap}"

    def read_new(self) -> SourceError | None:
        """Catch up (up to the timeout, continued at the next call) or take what is new."""
        if self._not_at_end is None:
            found = self._assign()
            if found is not None:
                return found
        consumer = self._consumer
        assert consumer is not None and self._not_at_end is not None
        catching_up = bool(self._not_at_end)
        deadline = self._clock() + self.timeout_s
        batches = 0
        while True:
            # While catching up, wait for fetches; afterwards only take what is already here.
            wait_s = min(0.2, max(0.0, deadline - self._clock())) if catching_up else 0.0
            messages = consumer.consume(BATCH, wait_s)
            batches += 1
            for message in messages:
                error = message.error()
                if error is None:
                    self.positions.add(message.key(), message.value())
                elif error.code() == KafkaError._PARTITION_EOF:
                    self._not_at_end.discard(message.partition() or 0)
                else:
                    self._remember_error(describe_kafka_error(KafkaException(error)))
            if catching_up and not self._not_at_end:
                log.info("mirror %s: read %s: %d records, %d source partitions, %s",
                         self.mirror.label, self.where(), self.positions.records,
                         len(self.positions.stored), self.positions.describe_skipped())
                catching_up = False
                continue
            if catching_up and self._clock() >= deadline:
                return SourceError(f"still reading {self.where()} after {self.timeout_s:g} s "
                                   f"({self.positions.records} records so far"
                                   + (f"; {self._last_error}" if self._last_error else "")
                                   + ")")
            if not catching_up and (len(messages) < BATCH or batches >= MAX_BATCHES_PER_SAMPLE):
                return None

    def _assign(self) -> SourceError | None:
        if self._consumer is None:
            self._consumer = self._make_consumer(consumer_settings(self.mirror, self.timeout_s))
        topic = self.mirror.offsets_topic
        try:
            metadata = self._consumer.list_topics(topic, timeout=self.timeout_s)
        except KafkaException as error:
            return SourceError(f"cannot read {self.where()}: {describe_kafka_error(error)}")
        described = metadata.topics.get(topic)
        if described is None or described.error is not None or not described.partitions:
            why = describe_kafka_error(KafkaException(described.error)) \
                if described is not None and described.error is not None else "no partitions"
            return SourceError(f"unknown {self.where()} ({why}): check the target cluster "
                               "and the offsets topic's name")
        numbers = sorted(described.partitions)
        self._consumer.assign([KafkaTopicPartition(topic, n, OFFSET_BEGINNING) for n in numbers])
        self._not_at_end = set(numbers)
        return None

    def _remember_error(self, error: str) -> None:
        if error != self._last_error:
            log.warning("mirror %s: %s: %s", self.mirror.label, self.where(), error)
        self._last_error = error

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None


class MirroredSource(WrappedSource):
    """A source cluster's OffsetSource that also answers its mirrors' labels as groups: their
    positions from the followers, no members (a mirror whose position stops while records
    arrive becomes STOP after the threshold, as a memberless group). Everything else goes to
    the cluster's own source."""

    def __init__(self, inner: OffsetSource, followers: Sequence[OffsetsTopicFollower]) -> None:
        super().__init__(inner)
        self.followers = {f.mirror.label: f for f in followers}

    def committed_offsets(self, groups: Sequence[str]) -> dict[str, GroupOffsets | SourceError]:
        others = [g for g in groups if g not in self.followers]
        answers = self.inner.committed_offsets(others) if others else {}
        for group in groups:
            if group in self.followers:
                answers[group] = self.followers[group].group_offsets()
        return answers

    def group_members(self, groups: Sequence[str]
                      ) -> dict[str, tuple[str, frozenset[TopicPartition]] | SourceError]:
        others = [g for g in groups if g not in self.followers]
        answers = self.inner.group_members(others) if others else {}
        for group in groups:
            if group in self.followers:
                answers[group] = (MIRROR_STATE, frozenset())
        return answers

    def close(self) -> None:
        try:
            self.inner.close()
        finally:
            for follower in self.followers.values():
                follower.close()
