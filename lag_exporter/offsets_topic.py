"""Pure: committed offsets read from Kafka's `__consumer_offsets` topic.

The group coordinator stores every offset commit as a record of this compacted topic; its key and
value are Kafka's own versioned formats (apache/kafka, group-coordinator/src/main/resources/
common/message/). Each starts with an int16 version; the key's version says what kind of record
it is:

    key version 0, 1   OffsetCommitKey: group (string), topic (string), partition (int32)
    value version 0    offset (int64), metadata (string), commitTimestamp (int64)
    value version 1    offset, metadata, commitTimestamp, expireTimestamp (int64)
    value version 2    offset, metadata, commitTimestamp
    value version 3    offset, leaderEpoch (int32), metadata, commitTimestamp
    value version 4    as 3, flexible: metadata is a compact string, tagged fields at the end
    value null         a tombstone: the offset was deleted (--delete-offsets, group deleted,
                       topic deleted, offsets expired)

    key version 2      group metadata (classic protocol, written at each generation and when
                       the group empties or is deleted): not an offset
    key version 3-23   the records of Kafka 4's consumer, share and streams groups (members,
                       assignments, regular expressions, topologies): not offsets

Key versions 2 to 23 are membership records: every one of their keys starts with the group id
(an int16-length string; GroupMetadataKey's "group", the others' "GroupId", in Kafka 3.9.1's and
4.1.1's schemas), the only part read of them. CommitStore counts them per group, so that a
group description can be reused until its group writes one (commit_follower.py).

Strings are int16-length UTF-8 (compact strings in flexible versions: unsigned varint length + 1).
A version this module does not know is skipped and counted, never guessed at; bytes that do not
parse as their version says (truncated, trailing bytes, bad UTF-8, a null where Kafka forbids it)
are counted as undecodable. Nothing here raises on any input.
"""

from __future__ import annotations

import struct
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

from lag_exporter.model import TopicPartition

# Why a record gives no offset (keys of CommitStore.skipped).
GROUP_METADATA = "group metadata"
GROUP_PROTOCOL_RECORD = "consumer/share/streams group record"
UNKNOWN_KEY_VERSION = "unknown key version"
UNKNOWN_VALUE_VERSION = "unknown value version"
UNDECODABLE = "undecodable"
NO_KEY = "no key"

OFFSET_COMMIT_KEY_VERSIONS = (0, 1)
GROUP_METADATA_KEY_VERSION = 2
GROUP_PROTOCOL_KEY_VERSIONS = range(3, 24)
"""Record types of Kafka 4.1's group coordinator (CoordinatorRecordType 3-23). A later Kafka
may add more: they are counted as unknown, as any version above these."""
HIGHEST_VALUE_VERSION = 4

_INT16 = struct.Struct(">h")
_INT32 = struct.Struct(">i")
_INT64 = struct.Struct(">q")
_KEY_HEAD = struct.Struct(">hh")  # version, length of the group


class Undecodable(Exception):
    """Internal: the bytes do not parse as the version says."""


@dataclass(frozen=True, slots=True)
class CommitValue:
    """An OffsetCommitValue of any version; fields a version lacks have Kafka's defaults."""

    offset: int
    metadata: str = ""
    commit_timestamp_ms: int = -1
    leader_epoch: int = -1
    expire_timestamp_ms: int = -1
    version: int = 3


@dataclass(frozen=True, slots=True)
class OffsetCommit:
    """One decoded commit record; `value` None is a tombstone (the offset was deleted)."""

    group: str
    partition: TopicPartition
    value: CommitValue | None


class _Reader:
    """Reads Kafka's primitive types from bytes; Undecodable past the end."""

    __slots__ = ("at", "data")

    def __init__(self, data: bytes, at: int = 0) -> None:
        self.data = data
        self.at = at

    def take(self, size: int) -> bytes:
        end = self.at + size
        if size < 0 or end > len(self.data):
            raise Undecodable
        chunk = self.data[self.at:end]
        self.at = end
        return chunk

    def int16(self) -> int:
        value: int = _INT16.unpack(self.take(2))[0]
        return value

    def int32(self) -> int:
        value: int = _INT32.unpack(self.take(4))[0]
        return value

    def int64(self) -> int:
        value: int = _INT64.unpack(self.take(8))[0]
        return value

    def uvarint(self) -> int:
        """Unsigned varint of at most 5 bytes (an int32), as Kafka's ByteUtils reads it."""
        value = 0
        for shift in range(0, 35, 7):
            byte = self.take(1)[0]
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                if value > 0xFFFFFFFF:
                    raise Undecodable
                return value
        raise Undecodable

    def string(self) -> str:
        """A non-nullable string (int16 length); a null (-1) is not allowed where it is read."""
        return self._utf8(self.int16())

    def compact_string(self) -> str:
        return self._utf8(self.uvarint() - 1)

    def _utf8(self, size: int) -> str:
        if size < 0:
            raise Undecodable  # null, or a negative length
        try:
            return self.take(size).decode()
        except UnicodeDecodeError:
            raise Undecodable from None

    def skip_tagged_fields(self) -> None:
        """Tagged fields carry optional data a version may add; none is used here."""
        for _ in range(self.uvarint()):
            self.uvarint()  # the tag
            self.take(self.uvarint())

    def end(self) -> None:
        if self.at != len(self.data):
            raise Undecodable


def key_version(key: bytes) -> int | None:
    return _INT16.unpack_from(key)[0] if len(key) >= 2 else None


def decode_key(key: bytes | None) -> tuple[str, TopicPartition] | str:
    """(group, partition) of an offset commit's key, or why the record is not one."""
    if key is None:
        return NO_KEY
    version = key_version(key)
    if version is None:
        return UNDECODABLE
    if version == GROUP_METADATA_KEY_VERSION:
        return GROUP_METADATA
    if version in GROUP_PROTOCOL_KEY_VERSIONS:
        return GROUP_PROTOCOL_RECORD
    if version not in OFFSET_COMMIT_KEY_VERSIONS:
        return UNKNOWN_KEY_VERSION
    reader = _Reader(key, 2)
    try:
        group, topic, partition = reader.string(), reader.string(), reader.int32()
        reader.end()
    except Undecodable:
        return UNDECODABLE
    return group, TopicPartition(topic, partition)


def membership_group(key: bytes) -> str | None:
    """The group id of a membership record's key (key version 2 to 23), or None when the key
    is not one or its group does not parse. The rest of the key (member id, topic) and the value
    are not read."""
    version = key_version(key)
    if version != GROUP_METADATA_KEY_VERSION and version not in GROUP_PROTOCOL_KEY_VERSIONS:
        return None
    try:
        return _Reader(key, 2).string()
    except Undecodable:
        return None


def decode_value(value: bytes) -> CommitValue | str:
    """An OffsetCommitValue of version 0 to 4, or why it is not one."""
    if len(value) < 2:
        return UNDECODABLE
    version = _INT16.unpack_from(value)[0]
    if not 0 <= version <= HIGHEST_VALUE_VERSION:
        return UNKNOWN_VALUE_VERSION
    reader = _Reader(value, 2)
    try:
        offset = reader.int64()
        leader_epoch = reader.int32() if version >= 3 else -1
        metadata = reader.compact_string() if version >= 4 else reader.string()
        commit_timestamp = reader.int64()
        expire_timestamp = reader.int64() if version == 1 else -1
        if version >= 4:
            reader.skip_tagged_fields()
        reader.end()
    except Undecodable:
        return UNDECODABLE
    return CommitValue(offset, metadata, commit_timestamp, leader_epoch, expire_timestamp,
                       version)


def decode_record(key: bytes | None, value: bytes | None) -> OffsetCommit | str:
    """One record of `__consumer_offsets`: the commit (or tombstone) it holds, or why it holds
    none (one of the reasons above)."""
    decoded_key = decode_key(key)
    if isinstance(decoded_key, str):
        return decoded_key
    group, partition = decoded_key
    if value is None:
        return OffsetCommit(group, partition, None)
    decoded_value = decode_value(value)
    if isinstance(decoded_value, str):
        return decoded_value
    return OffsetCommit(group, partition, decoded_value)


def java_string_hash(text: str) -> int:
    """Java's String.hashCode (over UTF-16 code units, int32 arithmetic)."""
    encoded = text.encode("utf-16-be", "surrogatepass")
    value = 0
    for index in range(0, len(encoded), 2):
        value = (31 * value + (encoded[index] << 8 | encoded[index + 1])) & 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


@lru_cache(maxsize=10_000)  # asked for every group several times a sample
def offsets_partition_of(group: str, partitions: int) -> int:
    """The partition of `__consumer_offsets` holding a group's commits (Kafka's
    Utils.abs(group.hashCode) % offsets.topic.num.partitions, where Utils.abs maps
    Integer.MIN_VALUE to 0)."""
    hashed = java_string_hash(group)
    return (0 if hashed == -(2**31) else abs(hashed)) % partitions


@dataclass(frozen=True)
class FollowerState:
    """Where one cluster's committed offsets came from in its last sample (for /metrics)."""

    cluster: str
    path: str
    """"topic" (followed in __consumer_offsets) or "admin" (OffsetFetch per group)."""
    topic_groups: int = 0
    admin_groups: int = 0
    """Groups asked through the Admin API in the last sample (all of them in "admin" mode)."""
    behind_partitions: int = 0
    records: int = 0
    skipped: tuple[tuple[str, int], ...] = ()


HISTORY = 4
"""Commits remembered per group and partition, newest last (the latest offset included)."""
KEYS_REMEMBERED = 500_000
"""Decoded keys kept: a group's keys repeat at each of its commits, and decoding them is most of
the cost of a record (about 250 bytes each, so at most ~125 MB; in practice one per group and
partition with commits)."""


class CommitStore:
    """The latest committed offset per group and partition, and its last few commits, fed the
    records of `__consumer_offsets` in order (one partition's order is enough: a group's
    records all live in one partition).

    Per group and partition it keeps a list [offset, commit time (ms), offset, time, ...] of
    the last HISTORY commits that moved the offset, newest last; a commit of the offset already
    newest is not added (a consumer idle at the end commits the same offset again and again),
    so each entry says when the group first committed that offset.
    """

    def __init__(self, history: int = HISTORY) -> None:
        self.history = history
        self.commits: dict[str, dict[TopicPartition, list[int]]] = {}
        self.records = 0
        self.skipped: Counter[str] = Counter()
        self.tombstones = 0
        self.value_versions: Counter[int] = Counter()
        """Offset commits read per value version (which format the brokers write)."""
        self._keys: dict[bytes, tuple[str, TopicPartition] | str] = {}
        self._membership: dict[str, int] = {}
        """Per group, the number (in self.records) of its last membership record."""
        self._membership_floor = 0
        """What membership_seen says of a group not in _membership (raised when it is
        cleared, so that no answer ever goes back)."""

    def add(self, key: bytes | None, value: bytes | None) -> None:
        self.records += 1
        decoded_key = self._keys.get(key) if key is not None else NO_KEY
        if decoded_key is None:
            assert key is not None
            decoded_key = decode_key(key)
            if len(self._keys) < KEYS_REMEMBERED:
                self._keys[key] = decoded_key
        if isinstance(decoded_key, str):
            self.skipped[decoded_key] += 1
            if key is not None and decoded_key in (GROUP_METADATA, GROUP_PROTOCOL_RECORD):
                self._membership_record(key)
            return
        group, partition = decoded_key
        if value is None:
            self.tombstones += 1
            self._forget(group, partition)
            return
        decoded_value = decode_value(value)
        if isinstance(decoded_value, str):
            self.skipped[decoded_value] += 1
            return
        self.value_versions[decoded_value.version] += 1
        if decoded_value.offset < 0:  # "no offset", as OffsetFetch reports it: no commit
            self._forget(group, partition)
            return
        self._remember(group, partition, decoded_value.offset, decoded_value.commit_timestamp_ms)

    def _membership_record(self, key: bytes) -> None:
        group = membership_group(key)
        if group is None:
            return
        if len(self._membership) >= KEYS_REMEMBERED and group not in self._membership:
            # Bounded like _keys (ephemeral groups come and go): forgetting them all at once
            # makes every group look changed, never unchanged.
            self._membership.clear()
            self._membership_floor = self.records
        self._membership[group] = self.records

    def membership_seen(self, group: str) -> int:
        """A number that grows with each membership record read for the group (joins, leaves,
        rebalances, assignments, deletion) and never goes back: equal at two moments means no
        such record was read in between."""
        return self._membership.get(group, self._membership_floor)

    def apply(self, commit: OffsetCommit) -> None:
        """A decoded record (tests, tools); add() is the fast path for raw records."""
        if commit.value is None or commit.value.offset < 0:
            self._forget(commit.group, commit.partition)
        else:
            self._remember(commit.group, commit.partition, commit.value.offset,
                           commit.value.commit_timestamp_ms)

    def _remember(self, group: str, partition: TopicPartition, offset: int,
                  commit_ms: int) -> None:
        partitions = self.commits.get(group)
        if partitions is None:
            partitions = self.commits[group] = {}
        entries = partitions.get(partition)
        if entries is None:
            partitions[partition] = [offset, commit_ms]
        elif entries[-2] != offset:
            entries += (offset, commit_ms)
            if len(entries) > 2 * self.history:
                del entries[:2]

    def _forget(self, group: str, partition: TopicPartition) -> None:
        partitions = self.commits.get(group)
        if partitions is not None and partitions.pop(partition, None) is not None \
                and not partitions:
            del self.commits[group]

    def committed_offsets(self, group: str) -> dict[TopicPartition, int]:
        """The group's latest committed offset per partition (empty: no commit at all)."""
        return {tp: entries[-2] for tp, entries in self.commits.get(group, {}).items()}

    def commit_history(self, group: str, partition: TopicPartition) -> tuple[tuple[int, float],
                                                                              ...]:
        """(offset, commit time in seconds) of the last commits that moved the group's offset
        on this partition, oldest first; empty when it has no commit."""
        entries = self.commits.get(group, {}).get(partition, [])
        return tuple((entries[i], entries[i + 1] / 1000) for i in range(0, len(entries), 2))

    def groups(self) -> list[str]:
        return sorted(self.commits)

    def describe_skipped(self) -> str:
        if not self.skipped:
            return "none skipped"
        return "skipped: " + ", ".join(f"{count} {reason}"
                                       for reason, count in sorted(self.skipped.items()))
