"""Pure: MirrorMaker 2's source positions, read from its Kafka Connect offsets topic.

MirrorMaker 2 commits nothing on the source cluster: MirrorSourceConnector stores, per source
partition, the offset of the last record it copied, as a Connect source offset in a compacted
topic on the TARGET cluster (`mm2-offsets.<source alias>.internal` in dedicated mode, the
worker's `offset.storage.topic` in a Connect cluster). One record per flush
(`offset.flush.interval.ms`, 60 s by default):

    key   ["MirrorSourceConnector", {"cluster": "source", "partition": 0, "topic": "orders"}]
    value {"offset": 41}          (null: the position was reset)

The next record the mirror will copy is offset + 1: that is the "committed offset" lag is
computed from, as for a consumer group.
Other connectors (heartbeats, checkpoints, anything in a shared Connect offsets topic) write
other keys to the same topic: they and anything malformed are skipped and counted, never fatal.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

from lag_exporter.model import TopicPartition
from lag_exporter.selection import TopicSelection

DEFAULT_CONNECTOR = "MirrorSourceConnector"
DEFAULT_SOURCE_ALIAS = "source"
DEFAULT_TARGET_ALIAS = "target"
ALL_TOPICS = TopicSelection()

ReplicationPolicy = Literal["default", "identity"]
REPLICATION_POLICIES: tuple[ReplicationPolicy, ...] = ("default", "identity")
"""MirrorMaker 2's `replication.policy.class`: DefaultReplicationPolicy or
IdentityReplicationPolicy (org.apache.kafka.connect.mirror)."""
DEFAULT_SEPARATOR = "."
"""MirrorMaker 2's `replication.policy.separator`."""
HEARTBEATS_TOPIC = "heartbeats"


def replicated_topic(topic: str, source_alias: str, policy: ReplicationPolicy = "default",
                     separator: str = DEFAULT_SEPARATOR) -> str:
    """The source topic's name on the target, as the policy's formatRemoteTopic gives it: the
    default policy prefixes the source alias and the separator; the identity policy keeps the
    name, except for heartbeat topics (names ending in "heartbeats"), which it formats as the
    default policy does so that they stay apart."""
    if policy == "identity" and not topic.endswith(HEARTBEATS_TOPIC):
        return topic
    return f"{source_alias}{separator}{topic}"


def describe_policy(policy: ReplicationPolicy, separator: str = DEFAULT_SEPARATOR) -> str:
    if policy == "identity":
        return "the identity replication policy"
    if separator != DEFAULT_SEPARATOR:
        return f"the default replication policy, separator {separator!r}"
    return "the default replication policy"


def default_offsets_topic(source_alias: str) -> str:
    """Where dedicated-mode MirrorMaker 2 (connect-mirror-maker) stores its source offsets."""
    return f"mm2-offsets.{source_alias}.internal"


def default_label(source_alias: str, target_alias: str) -> str:
    return f"mm2:{source_alias}->{target_alias}"


@dataclass(frozen=True)
class MirrorSettings:
    """One MirrorMaker 2 flow (source alias -> target), watched as a group of the source
    cluster named `label`; its offsets topic lives on the target cluster."""

    label: str
    target_settings: dict[str, str] = field(repr=False)
    """librdkafka settings of the target cluster; may hold secrets, so never shown."""
    offsets_topic: str = default_offsets_topic(DEFAULT_SOURCE_ALIAS)
    source_alias: str = DEFAULT_SOURCE_ALIAS
    target_alias: str = DEFAULT_TARGET_ALIAS
    connector: str = DEFAULT_CONNECTOR
    topics: TopicSelection = ALL_TOPICS
    """Which source topics to report (full-match patterns, as everywhere)."""
    replication_policy: ReplicationPolicy = "default"
    replication_separator: str = DEFAULT_SEPARATOR
    """How MirrorMaker 2 names the replicated topics on the target: shown only (lag is the
    source topic's high watermark minus the stored position, whatever the target's name)."""

    @property
    def target_bootstrap(self) -> str:
        return self.target_settings.get("bootstrap.servers", "?")

    def replicated_topic(self, topic: str) -> str:
        """The topic's name on the target under the mirror's replication policy."""
        return replicated_topic(topic, self.source_alias, self.replication_policy,
                                self.replication_separator)

    def describe_policy(self) -> str:
        return describe_policy(self.replication_policy, self.replication_separator)


# Reasons a record of the offsets topic is not a position (keys of MirrorPositions.skipped).
NOT_JSON = "not JSON"
OTHER_KEY_SHAPE = "other key shape"
OTHER_CONNECTOR = "other connector"
OTHER_CLUSTER = "other source alias"
OTHER_VALUE_SHAPE = "other value shape"
TOPIC_NOT_SELECTED = "topic not selected"
TOMBSTONE = "tombstone"


@dataclass(frozen=True)
class Position:
    """A parsed record: `offset` None for a tombstone (the position is removed)."""

    partition: TopicPartition
    offset: int | None


def _json(data: bytes) -> object:
    try:
        return json.loads(data)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return _NOT_JSON


_NOT_JSON = object()


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_key(key: bytes | None, connector: str, source_alias: str) -> TopicPartition | str:
    """The source partition a key stores the position of, or why it is not one of ours."""
    parsed_key = _json(key) if key is not None else _NOT_JSON
    if parsed_key is _NOT_JSON:
        return NOT_JSON
    if not (isinstance(parsed_key, list) and len(parsed_key) == 2
            and isinstance(parsed_key[0], str) and isinstance(parsed_key[1], dict)):
        return OTHER_KEY_SHAPE
    name, partition_key = parsed_key
    if name != connector:
        return OTHER_CONNECTOR
    topic, number = partition_key.get("topic"), partition_key.get("partition")
    if not (isinstance(topic, str) and topic and _is_int(number) and number >= 0
            and isinstance(partition_key.get("cluster"), str)):
        return OTHER_KEY_SHAPE
    if partition_key["cluster"] != source_alias:
        return OTHER_CLUSTER
    return TopicPartition(topic, number)


_OFFSET_PREFIX = b'{"offset":'
"""How Connect's JsonConverter writes every value: `{"offset":N}`, no spaces."""


def parse_value(value: bytes) -> int | str:
    """The stored offset, or why the value is not one."""
    if value.startswith(_OFFSET_PREFIX) and value.endswith(b"}"):
        # The converter's own shape, read without json.loads: at 10,000 positions a second
        # this is most of the cost of following a mirror. Anything else takes the JSON path.
        digits = value[len(_OFFSET_PREFIX):-1]
        if digits.isdigit() and (digits[0] != 0x30 or len(digits) == 1):  # no leading 0
            return int(digits)
    parsed_value = _json(value)
    if parsed_value is _NOT_JSON:
        return NOT_JSON
    if not (isinstance(parsed_value, dict) and _is_int(parsed_value.get("offset"))
            and parsed_value["offset"] >= 0):
        return OTHER_VALUE_SHAPE
    offset: int = parsed_value["offset"]
    return offset


def parse_record(key: bytes | None, value: bytes | None, connector: str, source_alias: str
                 ) -> Position | str:
    """One offsets-topic record: its Position, or why it is not one (a reason above)."""
    tp = parse_key(key, connector, source_alias)
    if isinstance(tp, str):
        return tp
    if value is None:
        return Position(tp, None)
    offset = parse_value(value)
    return offset if isinstance(offset, str) else Position(tp, offset)


KEYS_REMEMBERED = 1_000_000
"""Parsed keys kept (about 200 bytes each): a mirror's keys repeat at every flush, and parsing
them is most of the cost of reading the topic."""


class MirrorPositions:
    """The latest stored offset per source partition, fed the offsets topic in order."""

    def __init__(self, connector: str = DEFAULT_CONNECTOR,
                 source_alias: str = DEFAULT_SOURCE_ALIAS,
                 topics: TopicSelection = ALL_TOPICS) -> None:
        self.connector = connector
        self.source_alias = source_alias
        self.topics = topics
        self.stored: dict[TopicPartition, int] = {}
        """Offset of the last record copied, per source partition."""
        self.records = 0
        self.skipped: Counter[str] = Counter()
        self._allowed: dict[str, bool] = {}  # per topic: regexes once, not once per record
        self._keys: dict[bytes, TopicPartition | str] = {}

    def add(self, key: bytes | None, value: bytes | None) -> None:
        self.records += 1
        tp = self._keys.get(key) if key is not None else NOT_JSON
        if tp is None:
            tp = parse_key(key, self.connector, self.source_alias)
            if isinstance(tp, TopicPartition) and not self._allowed_topic(tp.topic):
                tp = TOPIC_NOT_SELECTED
            if len(self._keys) < KEYS_REMEMBERED and key is not None:
                self._keys[key] = tp
        if isinstance(tp, str):
            self.skipped[tp] += 1
        elif value is None:
            self.skipped[TOMBSTONE] += 1
            self.stored.pop(tp, None)
        else:
            offset = parse_value(value)
            if isinstance(offset, str):
                self.skipped[offset] += 1
            else:
                self.stored[tp] = offset

    def _allowed_topic(self, topic: str) -> bool:
        allowed = self._allowed.get(topic)
        if allowed is None:
            allowed = self._allowed[topic] = self.topics.allows(topic)
        return allowed

    def committed_offsets(self) -> dict[TopicPartition, int]:
        """As a consumer group's commits: the next offset the mirror will copy (stored + 1)."""
        return {tp: offset + 1 for tp, offset in self.stored.items()}

    def describe_skipped(self) -> str:
        if not self.skipped:
            return "none skipped"
        return "skipped: " + ", ".join(f"{count} {reason}"
                                       for reason, count in sorted(self.skipped.items()))

