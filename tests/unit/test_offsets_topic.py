"""offsets_topic.py: the decoder of `__consumer_offsets` records against a test-only encoder
written from Kafka's schemas (OffsetCommitKey.json, OffsetCommitValue.json), bytes written by a
real Kafka 4.1 broker, and random bytes."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lag_exporter.model import TopicPartition
from lag_exporter.offsets_topic import (
    GROUP_METADATA,
    GROUP_PROTOCOL_RECORD,
    UNDECODABLE,
    UNKNOWN_KEY_VERSION,
    UNKNOWN_VALUE_VERSION,
    CommitStore,
    CommitValue,
    OffsetCommit,
    decode_key,
    decode_record,
    decode_value,
    java_string_hash,
    offsets_partition_of,
)

# -- a test-only encoder, field by field from the schemas -------------------------------------


def string(text: str) -> bytes:
    data = text.encode()
    return struct.pack(">h", len(data)) + data


def uvarint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def compact_string(text: str) -> bytes:
    data = text.encode()
    return uvarint(len(data) + 1) + data


def encode_key(group: str, topic: str, partition: int, version: int = 1) -> bytes:
    return struct.pack(">h", version) + string(group) + string(topic) + struct.pack(">i", partition)


def encode_value(value: CommitValue, tagged: list[tuple[int, bytes]] | None = None) -> bytes:
    v = value.version
    out = struct.pack(">hq", v, value.offset)
    if v >= 3:
        out += struct.pack(">i", value.leader_epoch)
    out += compact_string(value.metadata) if v >= 4 else string(value.metadata)
    out += struct.pack(">q", value.commit_timestamp_ms)
    if v == 1:
        out += struct.pack(">q", value.expire_timestamp_ms)
    if v >= 4:
        fields = tagged or []
        out += uvarint(len(fields)) + b"".join(uvarint(tag) + uvarint(len(data)) + data
                                                for tag, data in fields)
    return out


names = st.text(min_size=0, max_size=40)
int64 = st.integers(-(2**63), 2**63 - 1)
int32 = st.integers(-(2**31), 2**31 - 1)


@st.composite
def commit_values(draw: st.DrawFn) -> CommitValue:
    version = draw(st.integers(0, 4))
    return CommitValue(
        offset=draw(int64), metadata=draw(names), commit_timestamp_ms=draw(int64),
        leader_epoch=draw(int32) if version >= 3 else -1,
        expire_timestamp_ms=draw(int64) if version == 1 else -1, version=version)


# -- round trips ------------------------------------------------------------------------------


@given(names, names, int32, st.sampled_from([0, 1]))
def test_every_key_version_round_trips(group: str, topic: str, partition: int,
                                       version: int) -> None:
    assert decode_key(encode_key(group, topic, partition, version)) == (
        group, TopicPartition(topic, partition))


@given(commit_values(), st.lists(st.tuples(st.integers(0, 2**31 - 1), st.binary(max_size=20)),
                                 max_size=3))
def test_every_value_version_round_trips(value: CommitValue,
                                         tagged: list[tuple[int, bytes]]) -> None:
    assert decode_value(encode_value(value, tagged)) == value


@given(st.binary(max_size=64), st.one_of(st.none(), st.binary(max_size=64)))
@settings(max_examples=2000)
def test_random_bytes_never_raise(key: bytes, value: bytes | None) -> None:
    decoded = decode_record(key, value)
    assert isinstance(decoded, str | OffsetCommit)


@given(names, names, int32, commit_values(), st.data())
def test_truncated_or_extended_records_are_undecodable(
        group: str, topic: str, partition: int, value: CommitValue, data: st.DataObject) -> None:
    key, raw = encode_key(group, topic, partition), encode_value(value)
    cut = data.draw(st.integers(2, len(key) - 1))
    assert decode_key(key[:cut]) == UNDECODABLE
    assert decode_key(key + b"\0") == UNDECODABLE
    cut = data.draw(st.integers(2, len(raw) - 1))
    assert decode_value(raw[:cut]) == UNDECODABLE
    assert decode_value(raw + b"\0") == UNDECODABLE


# -- what real brokers write ------------------------------------------------------------------

# Bytes Kafka 4.1 (kafka-source of the stack) wrote for a consumer's commit of offset 5 on
# captopic/0 by group cap-1795680094 (read back from __consumer_offsets partition 2): key
# version 1, value version 4 (flexible: compact metadata string, empty tagged fields).
REAL_GROUP = "cap-1795680094"
REAL_KEY = bytes.fromhex("0001000e6361702d313739353638303039340008636170746f70696300000000")
REAL_VALUE = bytes.fromhex("00040000000000000005ffffffff01000001a216dfca3000")


def test_a_record_as_kafka_4_1_writes_it() -> None:
    assert decode_record(REAL_KEY, REAL_VALUE) == OffsetCommit(
        REAL_GROUP, TopicPartition("captopic", 0),
        CommitValue(5, "", 0x1A216DFCA30, -1, -1, 4))
    assert decode_record(REAL_KEY, None) == OffsetCommit(REAL_GROUP, TopicPartition("captopic", 0),
                                                         None)
    assert offsets_partition_of(REAL_GROUP, 10) == 2  # the stack has 10 offsets partitions


def test_other_record_types_are_skipped_by_kind() -> None:
    assert decode_record(struct.pack(">h", 2) + string("g"), b"\0\3anything") == GROUP_METADATA
    for version in (3, 8, 17, 23):  # consumer group, assignment, streams group records
        assert decode_record(struct.pack(">h", version) + string("g"), None) == \
            GROUP_PROTOCOL_RECORD
    for version in (24, 99, -1):
        assert decode_record(struct.pack(">h", version) + string("g"), b"") == \
            UNKNOWN_KEY_VERSION
    assert decode_record(REAL_KEY, struct.pack(">h", 5) + REAL_VALUE[2:]) == \
        UNKNOWN_VALUE_VERSION
    assert decode_record(REAL_KEY, struct.pack(">h", -1) + REAL_VALUE[2:]) == \
        UNKNOWN_VALUE_VERSION


def test_null_strings_and_bad_utf8_are_undecodable() -> None:
    null_group = struct.pack(">hh", 1, -1) + string("t") + struct.pack(">i", 0)
    assert decode_key(null_group) == UNDECODABLE
    assert decode_key(struct.pack(">hh", 1, 1) + b"\xff" + string("t") + b"\0\0\0\0") == \
        UNDECODABLE
    null_metadata = struct.pack(">hqh", 0, 5, -1) + struct.pack(">q", 0)
    assert decode_value(null_metadata) == UNDECODABLE
    compact_null = struct.pack(">hqi", 4, 5, -1) + b"\0" + struct.pack(">q", 0) + b"\0"
    assert decode_value(compact_null) == UNDECODABLE
    too_long_varint = struct.pack(">hqi", 4, 5, -1) + b"\xff" * 6
    assert decode_value(too_long_varint) == UNDECODABLE


# -- the group's partition --------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("", 0), ("a", 97), ("hello", 99162322), ("console-consumer-12345", 158455506),
    ("é€😀", 16752006),
])
def test_java_string_hash(text: str, expected: int) -> None:
    # Expected values from Java's "...".hashCode() (jshell, OpenJDK 17).
    assert java_string_hash(text) == expected


def test_offsets_partition_is_abs_hash_modulo() -> None:
    assert offsets_partition_of("hello", 50) == 99162322 % 50
    assert offsets_partition_of("a", 7) == 97 % 7
    # Where Kafka 4.1 (the stack's kafka-source, 10 offsets partitions) wrote these groups.
    assert offsets_partition_of("txn-1795680180", 10) == 8
    assert offsets_partition_of("cap-1795680094", 10) == 2
    assert java_string_hash("polygenelubricants") == -2**31  # Utils.abs, not abs()
    assert offsets_partition_of("polygenelubricants", 50) == 0


# -- the store --------------------------------------------------------------------------------


def value(offset: int, at_ms: int = 0) -> bytes:
    return encode_value(CommitValue(offset, "", at_ms))


def test_store_keeps_the_latest_offset_and_applies_tombstones() -> None:
    store = CommitStore()
    a0, a1, b0 = encode_key("g", "a", 0), encode_key("g", "a", 1), encode_key("g", "b", 0)
    store.add(a0, value(5))
    store.add(a1, value(7))
    store.add(encode_key("h", "a", 0, version=0), value(1))
    store.add(a0, value(9))
    assert store.committed_offsets("g") == {TopicPartition("a", 0): 9, TopicPartition("a", 1): 7}
    store.add(a1, None)  # kafka-consumer-groups --delete-offsets
    store.add(b0, None)  # a tombstone for an offset never seen
    assert store.committed_offsets("g") == {TopicPartition("a", 0): 9}
    store.add(a0, None)  # the group deleted: a tombstone per offset
    assert store.committed_offsets("g") == {}
    assert store.groups() == ["h"]
    assert store.committed_offsets("nobody") == {}
    assert store.tombstones == 3 and store.records == 7
    assert store.value_versions == {3: 4}


def test_store_counts_what_it_skips_and_a_negative_offset_is_no_commit() -> None:
    store = CommitStore()
    store.add(encode_key("g", "a", 0), value(3))
    store.add(encode_key("g", "a", 0), value(-1))
    store.add(struct.pack(">h", 2) + string("g"), b"x")
    store.add(struct.pack(">h", 7) + string("g"), b"x")
    store.add(struct.pack(">h", 77) + string("g"), b"x")
    store.add(b"\0", b"x")
    store.add(None, b"x")
    store.add(encode_key("g", "a", 1), b"\0\7")
    store.add(encode_key("g", "a", 1), b"\0\1")
    assert store.committed_offsets("g") == {}
    assert store.skipped == {GROUP_METADATA: 1, GROUP_PROTOCOL_RECORD: 1,
                             UNKNOWN_KEY_VERSION: 1, UNDECODABLE: 2, "no key": 1,
                             UNKNOWN_VALUE_VERSION: 1}
    assert store.describe_skipped().startswith("skipped: 1 consumer/share/streams")


def test_history_keeps_the_last_commits_that_moved_the_offset() -> None:
    store = CommitStore(history=3)
    key, tp = encode_key("g", "a", 0), TopicPartition("a", 0)
    for offset, at in [(1, 1000), (1, 2000), (4, 3000), (6, 4000), (6, 5000), (9, 6000)]:
        store.add(key, value(offset, at))
    assert store.commit_history("g", tp) == ((4, 3.0), (6, 4.0), (9, 6.0))
    assert store.committed_offsets("g") == {tp: 9}
    store.apply(OffsetCommit("g", tp, CommitValue(12, "", 7000)))
    assert store.commit_history("g", tp) == ((6, 4.0), (9, 6.0), (12, 7.0))
    store.apply(OffsetCommit("g", tp, None))
    assert store.commit_history("g", tp) == ()


@given(st.lists(st.tuples(st.sampled_from(["g", "h"]), st.integers(0, 2),
                          st.one_of(st.none(), st.integers(0, 50)))))
def test_store_equals_the_last_record_per_key(records: list[tuple[str, int, int | None]]
                                              ) -> None:
    store = CommitStore()
    expected: dict[tuple[str, int], int] = {}
    for group, partition, offset in records:
        store.add(encode_key(group, "t", partition), None if offset is None else value(offset))
        if offset is None:
            expected.pop((group, partition), None)
        else:
            expected[(group, partition)] = offset
    for group in ("g", "h"):
        assert store.committed_offsets(group) == {
            TopicPartition("t", p): o for (g, p), o in expected.items() if g == group}
