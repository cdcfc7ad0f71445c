"""Scale out and fail over on Kafka's own consumer-group protocol (`--ha-group NAME`).

N exporters started with the same NAME join, per cluster, one Kafka consumer group NAME that
subscribes to the topic deciding ownership: `__consumer_offsets` when this exporter may describe
it, else (offsets_source = "admin", or the topic is not readable) a small topic of its own,
`lag-exporter-ha.<NAME>` (created if missing, HA_TOPIC_PARTITIONS partitions), used only for
its assignments. The partitions assigned to an instance decide which consumer groups it reports:
a group belongs to partition `offsets_partition_of(group, partitions)` (where Kafka keeps its
commits when the topic is `__consumer_offsets`). Kafka moves the partitions of an instance that
stopped or died to the others after session.timeout.ms.

The membership consumer never reads a record and never commits: each assigned partition is
assigned at its end and paused at once. Revoked partitions stop being reported at the next
sample; assigned ones are reported from the next sample on (committed offsets from the commit
follower when it has read that partition up to the sample's end offset, else the Admin API).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

from confluent_kafka import OFFSET_END, Consumer, KafkaError, KafkaException
from confluent_kafka import TopicPartition as KafkaTopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from lag_exporter.kafka_source import describe_kafka_error
from lag_exporter.offsets_topic import offsets_partition_of

log = logging.getLogger(__name__)

OFFSETS_TOPIC = "__consumer_offsets"
HA_TOPIC_PARTITIONS = 50
"""Partitions of the own topic (Kafka's default for __consumer_offsets): the unit of sharing."""
DEFAULT_SESSION_TIMEOUT_S = 10.0
"""How long a dead instance keeps its share before the others take it over (the broker's
group.min.session.timeout.ms, 6 s by default, is the lower bound)."""
ASSIGNOR = "cooperative-sticky"
"""Only the partitions that move are revoked in a rebalance; the others keep being reported."""


def ha_topic(name: str) -> str:
    return f"lag-exporter-ha.{name}"


def owned_groups(groups: Iterable[str], owned: Collection[int], partitions: int) -> list[str]:
    """The groups an instance reports: those whose partition it is assigned (none before the
    partition count is known)."""
    if partitions <= 0:
        return []
    return [group for group in groups if offsets_partition_of(group, partitions) in owned]


def membership_settings(client_settings: Mapping[str, str], group: str,
                        session_timeout_s: float) -> dict[str, Any]:
    settings: dict[str, Any] = {key: value for key, value in client_settings.items()
                                if key not in ("statistics.interval.ms", "stats_cb")}
    settings.setdefault("client.id", f"lag-exporter-ha-{group}")
    settings.update({
        "group.id": group,
        "partition.assignment.strategy": ASSIGNOR,
        "session.timeout.ms": int(session_timeout_s * 1000),
        # The survivors learn of a rebalance at their next heartbeat: keep it short.
        "heartbeat.interval.ms": max(100, min(1000, int(session_timeout_s * 1000) // 20)),
        # The rebalance timeout: how long a rebalance may wait for a member to rejoin (we poll
        # every 0.2 s; the default 300 s would hold a rebalance up that long for a stuck one).
        "max.poll.interval.ms": int(session_timeout_s * 3000),
        "enable.auto.commit": False, "enable.auto.offset.store": False,
        "auto.offset.reset": "latest", "allow.auto.create.topics": False,
        "enable.partition.eof": False,
    })
    return settings


class HaMembership:
    """One cluster's membership of the HA group: which partitions this instance owns now."""

    def __init__(self, cluster: str, client_settings: Mapping[str, str], group: str,
                 session_timeout_s: float, timeout_s: float, use_offsets_topic: bool = True,
                 make_consumer: Callable[[dict[str, Any]], Consumer] = Consumer) -> None:
        self.cluster = cluster
        self.group = group
        self.timeout_s = timeout_s
        self.use_offsets_topic = use_offsets_topic
        self._client_settings: dict[str, str | int | float | bool] = dict(client_settings)
        self._settings = membership_settings(client_settings, group, session_timeout_s)
        self._make_consumer = make_consumer
        self.topic = OFFSETS_TOPIC if use_offsets_topic else ha_topic(group)
        self.partitions = 0
        self._owned: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._consumer: Consumer | None = None
        self.failure: str | None = None
        self.followers: list[Callable[[set[int]], None]] = []
        """Told the owned partitions of __consumer_offsets whenever they change (the commit
        follower then reads only those); not called when the own topic decides."""

    def describe(self) -> str:
        return (f"HA group {self.group}: ownership decided by the partitions of {self.topic} "
                f"assigned to this instance ({ASSIGNOR}, session.timeout.ms "
                f"{self._settings['session.timeout.ms']})")

    def start(self) -> None:
        """Choose the topic, join the group in a thread; never raises (failures are logged,
        and retried by the thread)."""
        self._thread = threading.Thread(target=self._run, name=f"ha-{self.cluster}",
                                        daemon=True)
        self._thread.start()

    def owned(self) -> tuple[frozenset[int], int]:
        """(partitions owned now, partition count of the topic)."""
        with self._lock:
            return frozenset(self._owned), self.partitions

    def owns_groups(self, groups: Sequence[str]) -> list[str]:
        owned, partitions = self.owned()
        return owned_groups(groups, owned, partitions)

    def _choose_topic(self, consumer: Consumer) -> int:
        """The partition count of the topic deciding ownership (creating the own one)."""
        if self.use_offsets_topic:
            metadata = consumer.list_topics(OFFSETS_TOPIC, timeout=self.timeout_s)
            described = metadata.topics.get(OFFSETS_TOPIC)
            if described is not None and described.error is None and described.partitions:
                self.topic = OFFSETS_TOPIC
                return len(described.partitions)
            why = ("it does not exist yet" if described is None or described.error is None
                   else describe_kafka_error(KafkaException(described.error)))
            log.warning("cluster %s: HA group %s: cannot describe %s (%s); ownership decided "
                        "by %s instead", self.cluster, self.group, OFFSETS_TOPIC, why,
                        ha_topic(self.group))
        self.topic = ha_topic(self.group)
        metadata = consumer.list_topics(self.topic, timeout=self.timeout_s)
        described = metadata.topics.get(self.topic)
        if described is not None and described.error is None and described.partitions:
            return len(described.partitions)
        admin = AdminClient(self._client_settings)
        future = admin.create_topics([NewTopic(self.topic, HA_TOPIC_PARTITIONS)],
                                     operation_timeout=self.timeout_s)[self.topic]
        try:
            future.result(timeout=self.timeout_s * 2)
            log.info("cluster %s: HA group %s: created topic %s (%d partitions)", self.cluster,
                     self.group, self.topic, HA_TOPIC_PARTITIONS)
        except KafkaException as error:
            if error.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:  # another instance
                raise
        # Subscribing before the new topic's metadata reached the brokers only logs errors.
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline and not self._stop.is_set():
            described = consumer.list_topics(self.topic, timeout=self.timeout_s).topics.get(
                self.topic)
            if described is not None and described.error is None and described.partitions:
                return len(described.partitions)
            self._stop.wait(0.2)
        return HA_TOPIC_PARTITIONS

    def _run(self) -> None:
        consumer = self._consumer = self._make_consumer(self._settings)
        while not self._stop.is_set():
            try:
                partitions = self._choose_topic(consumer)
                break
            except KafkaException as error:
                why = describe_kafka_error(error)
                if why != self.failure:
                    log.error("cluster %s: HA group %s: %s; retrying", self.cluster, self.group,
                              why)
                self.failure = why
                self._stop.wait(2.0)
        else:
            return
        self.failure = None
        with self._lock:
            self.partitions = partitions
        consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
                           on_lost=self._on_revoke)
        log.info("cluster %s: %s", self.cluster, self.describe())
        while not self._stop.is_set():
            try:
                message = consumer.poll(0.2)  # serves the rebalance callbacks
            except (KafkaException, RuntimeError):  # RuntimeError: closed meanwhile
                continue
            if message is not None and message.error() is not None:
                why = describe_kafka_error(KafkaException(message.error()))
                if why != self.failure:
                    log.warning("cluster %s: HA group %s: %s", self.cluster, self.group, why)
                self.failure = why

    def _on_assign(self, consumer: Consumer, assigned: list[KafkaTopicPartition]) -> None:
        at_end = [KafkaTopicPartition(tp.topic, tp.partition, OFFSET_END) for tp in assigned]
        consumer.incremental_assign(at_end)
        if at_end:
            consumer.pause(at_end)  # only the assignment matters, never a record
        self._change(added={tp.partition for tp in assigned}, removed=set())

    def _on_revoke(self, consumer: Consumer, revoked: list[KafkaTopicPartition]) -> None:
        self._change(added=set(), removed={tp.partition for tp in revoked})
        consumer.incremental_unassign(revoked)

    def _change(self, added: set[int], removed: set[int]) -> None:
        if not added and not removed:
            return
        with self._lock:
            self._owned = (self._owned - removed) | added
            owned = len(self._owned)
            partitions = set(self._owned)
        if self.topic == OFFSETS_TOPIC:
            for follow in self.followers:
                follow(partitions)
        log.info("cluster %s: HA group %s: %s; owns %d of %d partitions of %s", self.cluster,
                 self.group, f"+{len(added)}" if added else f"-{len(removed)}", owned,
                 self.partitions, self.topic)

    def close(self) -> None:
        """Leave the group at once (the others take over without waiting for the session
        timeout)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None
        if self._consumer is not None:
            with contextlib.suppress(KafkaException, RuntimeError):
                self._consumer.close()
            self._consumer = None


def describe_ownership(cluster: str, client_settings: Mapping[str, str], group: str,
                       session_timeout_s: float, use_offsets_topic: bool,
                       timeout_s: float) -> str:
    """check-config's line: the HA group and the topic that would decide ownership now."""
    topic = ha_topic(group)
    why = "offsets_source = admin"
    if use_offsets_topic:
        try:
            settings: dict[str, str | int | float | bool] = dict(client_settings)
            metadata = AdminClient(settings).list_topics(OFFSETS_TOPIC,
                                                                      timeout=timeout_s)
            described = metadata.topics.get(OFFSETS_TOPIC)
            if described is not None and described.error is None and described.partitions:
                topic, why = OFFSETS_TOPIC, f"{len(described.partitions)} partitions"
            else:
                why = (f"{OFFSETS_TOPIC} does not exist yet" if described is None
                       or described.error is None else
                       f"{OFFSETS_TOPIC}: {describe_kafka_error(KafkaException(described.error))}")
        except KafkaException as error:
            why = f"cannot describe {OFFSETS_TOPIC}: {describe_kafka_error(error)}"
    if topic != OFFSETS_TOPIC:
        why += f"; created if missing with {HA_TOPIC_PARTITIONS} partitions"
    return (f"  HA group {group}: this instance reports the consumer groups of the partitions "
            f"of {topic} it is assigned ({why}; {ASSIGNOR}, session timeout "
            f"{session_timeout_s:g} s; needs Read on group {group} and Describe on {topic})")
