"""I/O: committed offsets followed in `__consumer_offsets` instead of asked for every sample.

Every offset commit is a record of Kafka's internal topic `__consumer_offsets` (decoded by
offsets_topic.py). A Consumer of this process reads it from the beginning with
isolation.level=read_committed (a transactional commit counts once its transaction commits; an
aborted one never does), in a thread of its own, and keeps the latest offset per group and
partition (tombstones applied). A sample then needs no OffsetFetch or FindCoordinator per group:
FollowedSource answers committed offsets from the follower and sends everything else (end
offsets, group descriptions, discovery, record times) to the wrapped Admin API source.

Never a stale offset as current: at each sample, the end offsets of the offsets-topic partitions
holding the sampled groups are read first (one ListOffsets request), and a group is answered
from the follower only if the follower has read its partition up to that end (waiting up to
CATCH_UP_WAIT_S for a partition it is following live). So, as with OffsetFetch, a sample
includes every commit made before it started. The groups of a partition the follower has not
reached (the first read of a big topic, a follower held up) are asked through the Admin API
for that sample, and counted (`admin_groups`, `behind_partitions`).

Group descriptions driven by membership records: every join, leave, rebalance, assignment and
deletion of a group is itself a record of `__consumer_offsets` (group metadata of the classic
protocol, Kafka 4's consumer-group records), counted per group by the follower. A group whose
partition the follower has read up to this sample's start, and which wrote no such record since
its last description, is answered from that description instead of asking Kafka again
(FindCoordinator + DescribeGroups + ConsumerGroupDescribe), for at most DESCRIPTION_REUSE_S.

Modes (`offsets_source`): "admin" (no follower), "topic" (the follower; a topic that cannot be
read makes the groups fail, saying why), "auto" (the follower when the topic can be read, else
the Admin API, logged once; an authorization error is final, other errors are retried every
RETRY_S).
"""

from __future__ import annotations

import logging
import threading
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException
from confluent_kafka import TopicPartition as KafkaTopicPartition

from lag_exporter.errors import SourceError
from lag_exporter.kafka_source import describe_kafka_error
from lag_exporter.model import GroupOffsets, TopicPartition
from lag_exporter.offsets_topic import CommitStore, FollowerState, offsets_partition_of
from lag_exporter.sampler import OffsetSource, WrappedSource

log = logging.getLogger(__name__)

OFFSETS_TOPIC = "__consumer_offsets"
MODES = ("auto", "topic", "admin")
BATCH = 10_000
"""Records taken from the consumer's queue per call."""
CATCH_UP_WAIT_S = 0.5
"""How long a sample waits for the follower to read what was committed before it started, on
partitions it follows live (normally milliseconds: the broker answers a waiting fetch as soon as
a commit arrives)."""
RETRY_S = 10.0
"""How often a topic that could not be read is tried again (not after an authorization error in
"auto" mode: ACLs do not change by themselves)."""
DESCRIPTION_REUSE_S = 600.0
"""The longest a group description is reused while its group writes no membership record. The
records cover every change of members and assignments; not the passing states of a classic
rebalance (PreparingRebalance is not written, its end is), nor what the follower could miss (a
record type a later Kafka adds, counted as an unknown key version): this bounds how long such a
change can go unseen, as librdkafka's metadata.max.age.ms (15 min) bounds its metadata. Each
group's period is spread between half and all of it (reuse_period_s), so that the groups
described together at start-up are not all described again in the same 30 s. Cost at 500 groups
(~3.6 requests per description: FindCoordinator, DescribeGroups, ConsumerGroupDescribe): about
500 / 450 s = 1.1 descriptions a second, ~4 requests per sample, within issue 13's budget of 10
requests beyond ListOffsets; 300 s would be ~8, and every 30 s as before ~62."""
REUSABLE_STATES = frozenset({"STABLE", "EMPTY"})
"""Descriptions that are reused: states a group stays in until it writes a record. A group in a
rebalance, dead or in an unknown state (librdkafka's name for KIP-848's Assigning and
Reconciling) is described at each of the sampler's turns, as before, and at once when it writes
a record (membership_changed)."""
AUTHORIZATION_ERRORS = {
    KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.GROUP_AUTHORIZATION_FAILED,
    KafkaError.CLUSTER_AUTHORIZATION_FAILED, KafkaError._AUTHENTICATION,
}


class _DebugOnlyLogger:
    def log(self, level: int, msg: str, *args: Any) -> None:
        log.debug(msg, *args)


def consumer_settings(client_settings: Mapping[str, str], timeout_s: float) -> dict[str, Any]:
    settings: dict[str, Any] = {key: value for key, value in client_settings.items()
                                if key not in ("statistics.interval.ms", "stats_cb")}
    settings.setdefault("client.id", "lag-exporter-commits")
    settings.setdefault("socket.timeout.ms", int(timeout_s * 1000))
    settings.setdefault("reconnect.backoff.max.ms", 1000)
    settings.update({
        "group.id": "lag-exporter-commits",  # required by librdkafka; never joined or committed
        "enable.auto.commit": False, "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest", "isolation.level": "read_committed",
        "enable.partition.eof": False, "allow.auto.create.topics": False,
        "fetch.wait.max.ms": 500,  # idle polls; a commit is answered at once (fetch.min.bytes 1)
        # Prefetch, per partition. Smaller (256 KiB) saved ~7 MB of RSS on the stack's
        # 48,000-record topic but made librdkafka postpone fetches by fetch.queue.backoff.ms
        # (1 s) whenever the queue was full: a fresh commit then came too late for a sample.
        "queued.max.messages.kbytes": 1024,
        "logger": _DebugOnlyLogger(),
    })
    return settings


class CommitFollower:
    """One cluster's `__consumer_offsets`, read in a background thread into a CommitStore."""

    def __init__(self, cluster: str, client_settings: Mapping[str, str], timeout_s: float,
                 topic: str = OFFSETS_TOPIC,
                 make_consumer: Callable[[dict[str, Any]], Consumer] = Consumer,
                 shared: bool = False) -> None:
        """shared (--ha-group): follow only the partitions given to follow() (those this
        instance owns), not all of them."""
        self.cluster = cluster
        self.shared = shared
        self._wanted: set[int] = set()
        """shared: the partitions to follow (set by the HA membership's thread)."""
        self._assigned: set[int] = set()
        """shared: the partitions the consumer is assigned (only the follower's thread)."""
        self.topic = topic
        self.timeout_s = timeout_s
        self.bootstrap = client_settings.get("bootstrap.servers", "?")
        self._settings = consumer_settings(client_settings, timeout_s)
        self._make_consumer = make_consumer
        self.store = CommitStore()
        self.partitions = 0
        """Partitions of the offsets topic (0 until it was opened)."""
        self.failure: str | None = None
        """Why the topic cannot be read (set by the thread on an authorization error)."""
        self.authorization_failed = False
        self._consumer: Consumer | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._changed = threading.Condition()
        self._positions: dict[int, int] = {}
        """Next offset to read per partition, everything before it applied to the store."""
        self._live: set[int] = set()
        """Partitions the follower has read up to an end offset once (no longer in its first
        read): worth waiting for at a sample."""
        self._last_error: str | None = None

    def where(self) -> str:
        return f"{self.topic} on {self.bootstrap}"

    @property
    def running(self) -> bool:
        return self._thread is not None and self.failure is None

    def open(self) -> str | None:
        """Start following from the beginning; why not, if the topic cannot be read."""
        if self._consumer is None:
            self._consumer = self._make_consumer(self._settings)
        try:
            metadata = self._consumer.list_topics(self.topic, timeout=self.timeout_s)
        except KafkaException as error:
            return f"cannot read {self.where()}: {describe_kafka_error(error)}"
        described = metadata.topics.get(self.topic)
        if described is not None and described.error is not None:
            code = described.error.code()
            self.authorization_failed = code in AUTHORIZATION_ERRORS
            return (f"cannot read {self.where()}: "
                    f"{describe_kafka_error(KafkaException(described.error))}")
        if described is None or not described.partitions:
            return f"no {self.where()} yet (no group has committed on this cluster)"
        numbers = sorted(described.partitions)
        self.partitions = len(numbers)
        if not self.shared:  # shared: the thread assigns what follow() asks for
            self._positions = dict.fromkeys(numbers, 0)
            self._consumer.assign([KafkaTopicPartition(self.topic, n, OFFSET_BEGINNING)
                                   for n in numbers])
        self._thread = threading.Thread(target=self._run, name=f"commits-{self.cluster}",
                                        daemon=True)
        self._thread.start()
        return None

    def _run(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        assignment = [KafkaTopicPartition(self.topic, n) for n in sorted(self._positions)]
        store = self.store
        while not self._stop.is_set():
            try:
                if self.shared:
                    assignment = self._follow_wanted(consumer)
                messages = consumer.consume(BATCH, 0.2)
                positions = consumer.position(assignment)
            except (KafkaException, RuntimeError) as error:  # RuntimeError: closed meanwhile
                if not self._stop.is_set():
                    self._remember_error(describe_kafka_error(error))
                    time.sleep(0.2)
                continue
            with self._changed:
                for message in messages:
                    problem = message.error()
                    if problem is None:
                        store.add(message.key(), message.value())
                    else:
                        self._on_error(problem)
                for kafka_tp in positions:
                    if kafka_tp.offset >= 0 and kafka_tp.partition in self._positions:
                        self._positions[kafka_tp.partition] = kafka_tp.offset
                self._changed.notify_all()

    def follow(self, partitions: set[int]) -> None:
        """shared: follow exactly these partitions from now on (from any thread; the
        follower's thread assigns them before its next read)."""
        with self._changed:
            self._wanted = set(partitions)

    def _follow_wanted(self, consumer: Consumer) -> list[KafkaTopicPartition]:
        """shared: bring the consumer's assignment to the wanted partitions, in the follower's
        thread (the only one using the consumer). An added partition is read from its
        beginning; a removed one's groups are forgotten (read again if it comes back)."""
        with self._changed:
            wanted = set(self._wanted)
        added, removed = wanted - self._assigned, self._assigned - wanted
        if removed:
            consumer.incremental_unassign([KafkaTopicPartition(self.topic, n)
                                           for n in sorted(removed)])
        if added:
            consumer.incremental_assign([KafkaTopicPartition(self.topic, n, OFFSET_BEGINNING)
                                         for n in sorted(added)])
        if added or removed:
            with self._changed:
                for number in added | removed:
                    self._positions.pop(number, None)
                    self._live.discard(number)
                for group in [g for g in self.store.commits
                              if self.partition_of(g) in added | removed]:
                    del self.store.commits[group]
                self._positions.update(dict.fromkeys(added, 0))
                self._changed.notify_all()
            self._assigned = wanted
            log.debug("cluster %s: following %d partitions of %s", self.cluster, len(wanted),
                      self.topic)
        return [KafkaTopicPartition(self.topic, n) for n in sorted(self._assigned)]

    def _on_error(self, error: KafkaError) -> None:
        why = describe_kafka_error(KafkaException(error))
        if error.code() in AUTHORIZATION_ERRORS:
            self.authorization_failed = True
            self.failure = f"cannot read {self.where()}: {why}"
            log.warning("cluster %s: %s", self.cluster, self.failure)
        self._remember_error(why)

    def _remember_error(self, error: str) -> None:
        """Connection trouble is reported by the samples (their end offsets fail too), so the
        consumer's own errors are debug lines: during an outage they repeat every second."""
        if error != self._last_error:
            log.debug("cluster %s: following %s: %s", self.cluster, self.where(), error)
        self._last_error = error

    def partition_of(self, group: str) -> int:
        return offsets_partition_of(group, self.partitions)

    def committed_offsets(self, groups: Sequence[str], ends: Mapping[int, int],
                          wait_s: float = CATCH_UP_WAIT_S
                          ) -> dict[str, dict[TopicPartition, int] | None]:
        """Each group's latest committed offsets, read up to `ends` (offsets-topic partition ->
        end offset read at the start of the sample); None for a group whose partition the
        follower has not read that far (or whose end is unknown). Waits up to wait_s for the
        partitions it follows live."""
        wanted = {group: self.partition_of(group) for group in groups}
        needed = {p for p in wanted.values() if p in ends}
        deadline = time.monotonic() + wait_s
        with self._changed:
            while True:
                behind = {p for p in needed if self._positions.get(p, 0) < ends[p]}
                self._live |= needed - behind
                waiting = behind & self._live
                left = deadline - time.monotonic()
                if not waiting or left <= 0 or self.failure is not None:
                    break
                self._changed.wait(min(left, 0.05))
            return {group: None if p in behind or p not in ends
                    else self.store.committed_offsets(group)
                    for group, p in wanted.items()}

    def commit_history(self, group: str, partition: TopicPartition
                       ) -> tuple[tuple[int, float], ...]:
        with self._changed:
            return self.store.commit_history(group, partition)

    def membership_seen(self, groups: Sequence[str]) -> dict[str, int]:
        """Per group, CommitStore.membership_seen: unchanged while it wrote no membership
        record (as far as the follower has read)."""
        with self._changed:
            return {group: self.store.membership_seen(group) for group in groups}

    def counts(self) -> tuple[int, tuple[tuple[str, int], ...]]:
        """(records read, records skipped per reason), from any thread."""
        with self._changed:
            return self.store.records, tuple(sorted(self.store.skipped.items()))

    def describe(self) -> str:
        with self._changed:
            store = self.store
            return (f"{self.where()}: {self.partitions} partitions, {store.records} records "
                    f"read, {len(store.commits)} groups with commits, {store.tombstones} "
                    f"tombstones, {store.describe_skipped()}")

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None


def reuse_period_s(group: str) -> float:
    """The group's own reuse period, in [DESCRIPTION_REUSE_S / 2, DESCRIPTION_REUSE_S):
    fixed per group (a hash of its name), so the spread survives restarts and is testable."""
    return DESCRIPTION_REUSE_S * (0.5 + zlib.crc32(group.encode()) / 2**33)


@dataclass(frozen=True, slots=True)
class _Description:
    """A group's description as Kafka gave it, and when."""

    answer: tuple[str, frozenset[TopicPartition]]
    membership_seen: int
    """The follower's membership_seen for the group just before Kafka was asked."""
    described_at: float
    reusable: bool
    """In one of REUSABLE_STATES. The others are kept too: a record of their group says when
    to describe it again (membership_changed)."""


class FollowedSource(WrappedSource):
    """An OffsetSource answering committed offsets from a CommitFollower, and group
    descriptions from the last one while the group's membership records say nothing changed
    (see the module's docstring); everything else goes to the wrapped Admin API source."""

    def __init__(self, inner: OffsetSource, follower: CommitFollower, mode: str = "auto",
                 clock: Callable[[], float] = time.monotonic,
                 open_in_background: bool = False) -> None:
        """open_in_background (auto mode): start following in a thread at once, asking the
        Admin API meanwhile, so that the first samples do not wait for the follower's
        connection (a first sample longer than the interval skipped a tick at start-up)."""
        if mode not in ("auto", "topic"):
            raise ValueError(f"offsets source mode {mode!r}: expected auto or topic")
        super().__init__(inner)
        self.follower = follower
        self.mode = mode
        self._clock = clock
        self._next_open = float("-inf")
        self._why_not: str | None = None
        """Why the follower is not used (None while it is, or before the first try)."""
        self._announced: str | None = None
        self.topic_groups = 0
        """Groups answered from the follower in the last sample."""
        self.admin_groups = 0
        """Groups asked through the Admin API in the last sample (the follower behind on
        their partition, or not in use)."""
        self.behind_partitions = 0
        """Offsets-topic partitions the follower had not read up to their end in the last
        sample."""
        self.described_groups = 0
        """Groups described through the Admin API in the last call of group_members."""
        self.reused_descriptions = 0
        """Groups answered from their last description in the last call of group_members."""
        self._descriptions: dict[str, _Description] = {}
        self._caught_up: set[int] = set()
        """Offsets-topic partitions the follower had read up to their end at the start of
        the last sample (so every membership record written before it is counted)."""
        self._opening: threading.Thread | None = None
        self._opened: list[str | None] = []
        """The answer of the background open, once it has one."""
        if open_in_background and mode == "auto":
            self._opening = threading.Thread(target=lambda: self._opened.append(follower.open()),
                                             name=f"open-commits-{self.cluster}", daemon=True)
            self._opening.start()

    @property
    def path(self) -> str:
        """"topic" while the follower answers, "admin" while the Admin API does."""
        return "topic" if self.follower.running else "admin"

    def describe(self) -> str:
        """One line for check-config and the log: which path and why."""
        if self.follower.running:
            return (f"committed offsets from {self.follower.describe()} "
                    f"(offsets_source = {self.mode})")
        why = self._why_not or "not tried yet"
        if self.mode == "topic":
            return f"committed offsets: {why} (offsets_source = topic)"
        return f"committed offsets through the Admin API (OffsetFetch per group): {why}"

    def committed_offsets(self, groups: Sequence[str]) -> dict[str, GroupOffsets | SourceError]:
        self._open_if_due()
        self._caught_up = set()
        if not self.follower.running:
            if self.follower.failure is not None:
                self._why_not = self.follower.failure
            self.topic_groups, self.admin_groups = 0, len(groups)
            self._announce()
            if self.mode == "topic":
                failure = SourceError(f"{self._why_not}; offsets_source = \"topic\" needs "
                                      f"Describe and Read on {self.follower.topic}")
                return dict.fromkeys(groups, failure)
            return self.inner.committed_offsets(groups) if groups else {}
        self._announce()
        follower = self.follower
        partitions = sorted({follower.partition_of(group) for group in groups})
        asked = self.inner.high_watermarks([TopicPartition(follower.topic, p)
                                            for p in partitions])
        ends = {tp.partition: end for tp, end in asked.items() if isinstance(end, int)}
        # Partitions whose end offset could not be read (a broker restarting, leaders moving)
        # leave their groups to the Admin API below, as before the follower: the groups'
        # own answers say whether the cluster is down (refused connections fail fast).
        found = follower.committed_offsets(groups, ends)
        self.behind_partitions = len({follower.partition_of(g) for g, o in found.items()
                                      if o is None})
        self._caught_up = {follower.partition_of(g) for g, o in found.items() if o is not None}
        if len(self._descriptions) > len(groups):  # groups no longer sampled
            kept = set(groups)
            self._descriptions = {group: description for group, description
                                  in self._descriptions.items() if group in kept}
        fallback = [group for group, offsets in found.items() if offsets is None]
        answers: dict[str, GroupOffsets | SourceError] = {
            group: GroupOffsets(group, offsets)
            for group, offsets in found.items() if offsets is not None}
        if fallback:
            answers.update(self.inner.committed_offsets(fallback))
        self.topic_groups, self.admin_groups = len(found) - len(fallback), len(fallback)
        return {group: answers[group] for group in groups}

    def group_members(self, groups: Sequence[str]
                      ) -> dict[str, tuple[str, frozenset[TopicPartition]] | SourceError]:
        """Each group's (state, assigned partitions): its last description while the follower
        has read its partition up to this sample's start, it wrote no membership record since,
        and the description is younger than its reuse_period_s; else asked through the Admin
        API. Called after committed_offsets in a sample (which reads the partitions' ends)."""
        if not self.follower.running:
            self._descriptions.clear()  # membership records are not being read
            self.described_groups, self.reused_descriptions = len(groups), 0
            return self.inner.group_members(groups)
        now = self._clock()
        # Read before asking: a record written while Kafka answers makes the next call ask again.
        seen = self.follower.membership_seen(groups)
        reused: dict[str, tuple[str, frozenset[TopicPartition]] | SourceError] = {}
        asked = []
        for group in groups:
            last = self._descriptions.get(group)
            if (last is not None and last.reusable and last.membership_seen == seen[group]
                    and now - last.described_at < reuse_period_s(group)
                    and self.follower.partition_of(group) in self._caught_up):
                reused[group] = last.answer
            else:
                asked.append(group)
        answers = self.inner.group_members(asked) if asked else {}
        for group in asked:
            answer = answers.get(group)
            if isinstance(answer, tuple):
                self._descriptions[group] = _Description(answer, seen[group], now,
                                                         answer[0] in REUSABLE_STATES)
            else:
                self._descriptions.pop(group, None)
        self.described_groups, self.reused_descriptions = len(asked), len(reused)
        answers.update(reused)
        return answers

    def membership_changed(self, groups: Sequence[str]) -> list[str]:
        """The groups described before (in any state) that wrote a membership record since: for
        the sampler, to describe them now rather than at their next turn (a member joining, a
        KIP-848 group done reconciling)."""
        if not self.follower.running or not self._descriptions:
            return []
        seen = self.follower.membership_seen([g for g in groups if g in self._descriptions])
        return [group for group, number in seen.items()
                if self._descriptions[group].membership_seen != number]

    def _open_if_due(self) -> None:
        follower = self.follower
        if self._opening is not None:
            if self._opening.is_alive():
                return  # the Admin API answers until the follower runs
            self._opening = None
            self._after_open(self._opened[0] if self._opened else "could not start")
            return
        if follower.running or self._clock() < self._next_open:
            return
        if follower.failure is not None:  # failed while running (an ACL on Fetch)
            if self.mode == "auto" and follower.authorization_failed:
                self._next_open = float("inf")
            else:
                self._next_open = self._clock() + RETRY_S
            return
        self._after_open(follower.open())

    def _after_open(self, why_not: str | None) -> None:
        self._why_not = why_not
        if why_not is None:
            return
        if self.mode == "auto" and self.follower.authorization_failed:
            self._next_open = float("inf")
        else:
            self._next_open = self._clock() + RETRY_S

    def _announce(self) -> None:
        """Log which path is used, once, and again when it changes."""
        if self._opening is not None:
            return  # not decided yet
        path = self.path
        if path == self._announced:
            return
        self._announced = path
        if path == "topic":
            log.info("cluster %s: committed offsets followed in %s (offsets_source = %s)",
                     self.cluster, self.follower.where(), self.mode)
        elif self.mode == "auto":
            log.warning("cluster %s: committed offsets through the Admin API (OffsetFetch per "
                        "group): %s", self.cluster, self._why_not)
        else:
            log.error("cluster %s: %s", self.cluster, self._why_not)

    def state(self) -> FollowerState:
        """For /metrics: which path, and how the last sample was answered."""
        records, skipped = self.follower.counts()
        return FollowerState(self.cluster, self.path, self.topic_groups, self.admin_groups,
                             self.behind_partitions, records, skipped)

    def commit_history(self, group: str, partition: TopicPartition
                       ) -> tuple[tuple[int, float], ...]:
        """(offset, commit time in seconds) of the group's last commits that moved its offset on
        the partition, oldest first; empty when not following or never committed."""
        if not self.follower.running:
            return ()
        return self.follower.commit_history(group, partition)

    def close(self) -> None:
        if self._opening is not None:  # let it finish, so that close() finds what it made
            self._opening.join(self.follower.timeout_s)
        try:
            self.follower.close()
        finally:
            self.inner.close()


def follower_state(source: OffsetSource, groups: int = 0) -> FollowerState:
    """Where a cluster's source reads committed offsets: its FollowedSource's state (also
    inside a MirroredSource), else the Admin API for all of its `groups`."""
    found: object = source
    while not isinstance(found, FollowedSource) and hasattr(found, "inner"):
        found = found.inner
    if isinstance(found, FollowedSource):
        return found.state()
    return FollowerState(source.cluster, "admin", admin_groups=groups)


PROBE_S = 2.0
"""check-config: how long the probe waits for the first records (a Read ACL shows only then)."""


def describe_offsets_source(cluster: str, client_settings: Mapping[str, str], timeout_s: float,
                            mode: str, topic: str = OFFSETS_TOPIC) -> tuple[str, bool]:
    """check-config's line on how `watch` would read committed offsets, and whether that
    works ("topic" mode with an unreadable topic does not)."""
    admin = "committed offsets: Admin API, one OffsetFetch per group"
    if mode == "admin":
        return f"  {admin} (offsets_source = admin)", True
    follower = CommitFollower(cluster, client_settings, timeout_s, topic=topic)
    try:
        why = follower.open()
        deadline = time.monotonic() + min(PROBE_S, timeout_s)
        while why is None and time.monotonic() < deadline:
            if follower.failure is not None:
                why = follower.failure
            elif follower.counts()[0] > 0:
                break
            time.sleep(0.05)
        records = follower.counts()[0]
    finally:
        follower.close()
    if why is None:
        return (f"  committed offsets: followed in {topic} (offsets_source = {mode}; "
                f"{follower.partitions} partitions, readable: {records} records read in the "
                f"probe)"), True
    if mode == "topic":
        return (f"  committed offsets: UNREADABLE: {why}; offsets_source = topic needs "
                f"Describe and Read on {topic}"), False
    return f"  {admin} (offsets_source = auto: {why})", True
