"""MirrorMaker 2 offsets-topic records: parsed into positions, everything else counted."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lag_exporter import mm2 as mm2_module
from lag_exporter.mm2 import _NOT_JSON as NOT_PARSED
from lag_exporter.mm2 import (
    NOT_JSON,
    OTHER_CLUSTER,
    OTHER_CONNECTOR,
    OTHER_KEY_SHAPE,
    OTHER_VALUE_SHAPE,
    TOMBSTONE,
    TOPIC_NOT_SELECTED,
    MirrorPositions,
    Position,
    default_label,
    default_offsets_topic,
    parse_key,
    parse_record,
    parse_value,
)
from lag_exporter.mm2 import _json as parse_json
from lag_exporter.model import TopicPartition
from lag_exporter.selection import TopicSelection


def key(topic: str = "orders", partition: object = 0, cluster: object = "source",
        connector: str = "MirrorSourceConnector") -> bytes:
    return json.dumps([connector, {"cluster": cluster, "partition": partition,
                                   "topic": topic}]).encode()


def value(offset: object) -> bytes:
    return json.dumps({"offset": offset}).encode()


def parse(k: bytes | None, v: bytes | None) -> Position | str:
    return parse_record(k, v, "MirrorSourceConnector", "source")


def test_a_position_as_mirrormaker_2_writes_it() -> None:
    real_key = (b'["MirrorSourceConnector",{"cluster":"source","partition":3,'
                b'"topic":"mm2.t61235563c0"}]')
    assert parse(real_key, b'{"offset":4}') == Position(TopicPartition("mm2.t61235563c0", 3), 4)


def test_key_order_and_spacing_do_not_matter() -> None:
    spaced = b'[ "MirrorSourceConnector" , {"topic": "a", "partition": 1, "cluster": "source"} ]'
    assert parse(spaced, b'{ "offset" : 7 }') == Position(TopicPartition("a", 1), 7)


def test_a_tombstone_is_a_position_without_offset() -> None:
    assert parse(key(), None) == Position(TopicPartition("orders", 0), None)


def test_other_records_say_why() -> None:
    heartbeat = b'["MirrorHeartbeatConnector",{"sourceClusterAlias":"source",' \
                b'"targetClusterAlias":"target"}]'
    assert parse(heartbeat, b'{"offset":0}') == OTHER_CONNECTOR
    assert parse(key(connector="other"), value(1)) == OTHER_CONNECTOR
    assert parse(key(cluster="east"), value(1)) == OTHER_CLUSTER
    assert parse(b"\xff\xfe", value(1)) == NOT_JSON
    assert parse(None, value(1)) == NOT_JSON
    assert parse(b"[1, 2", value(1)) == NOT_JSON
    assert parse(key(), b"{oops") == NOT_JSON
    assert parse(b'{"a": 1}', value(1)) == OTHER_KEY_SHAPE
    assert parse(b'["MirrorSourceConnector"]', value(1)) == OTHER_KEY_SHAPE
    assert parse(key(partition="0"), value(1)) == OTHER_KEY_SHAPE
    assert parse(key(partition=-1), value(1)) == OTHER_KEY_SHAPE
    assert parse(key(partition=True), value(1)) == OTHER_KEY_SHAPE
    assert parse(key(topic=""), value(1)) == OTHER_KEY_SHAPE
    assert parse(key(cluster=None), value(1)) == OTHER_KEY_SHAPE
    for bad in (b"[]", b'{"offset": "4"}', b'{"offset": 4.0}', b'{"offset": -1}',
                b'{"offset": true}', b'{}', b"null"):
        assert parse(key(), bad) == OTHER_VALUE_SHAPE, bad


def test_defaults_follow_dedicated_mode() -> None:
    assert default_offsets_topic("east") == "mm2-offsets.east.internal"
    assert default_label("east", "west") == "mm2:east->west"


def test_positions_keep_the_latest_and_count_the_rest() -> None:
    positions = MirrorPositions()
    positions.add(key(partition=0), value(4))
    positions.add(key(partition=1), value(9))
    positions.add(key(partition=0), value(10))
    positions.add(key(connector="MirrorCheckpointConnector"), value(99))
    positions.add(key(cluster="other"), value(99))
    positions.add(b"junk", b"junk")
    assert positions.stored == {TopicPartition("orders", 0): 10, TopicPartition("orders", 1): 9}
    # lag is computed as for a group: the next record to copy is stored + 1
    assert positions.committed_offsets() == {TopicPartition("orders", 0): 11,
                                             TopicPartition("orders", 1): 10}
    positions.add(key(partition=1), None)
    assert positions.committed_offsets() == {TopicPartition("orders", 0): 11}
    assert positions.records == 7
    assert positions.skipped == {OTHER_CONNECTOR: 1, OTHER_CLUSTER: 1, NOT_JSON: 1,
                                 TOMBSTONE: 1}
    assert positions.describe_skipped() == ("skipped: 1 not JSON, 1 other connector, "
                                            "1 other source alias, 1 tombstone")
    assert MirrorPositions().describe_skipped() == "none skipped"


def test_a_tombstone_for_an_unknown_partition_changes_nothing() -> None:
    positions = MirrorPositions()
    positions.add(key(partition=0), value(4))
    positions.add(key(topic="never-mirrored"), None)
    assert positions.stored == {TopicPartition("orders", 0): 4}
    assert positions.skipped == {TOMBSTONE: 1}


def test_a_position_comes_back_after_its_tombstone() -> None:
    positions = MirrorPositions()
    positions.add(key(), value(4))
    positions.add(key(), None)
    positions.add(key(), value(0))
    assert positions.stored == {TopicPartition("orders", 0): 0}


def test_connector_and_alias_are_chosen() -> None:
    positions = MirrorPositions(connector="east-mirror", source_alias="east")
    positions.add(key(connector="east-mirror", cluster="east"), value(3))
    positions.add(key(cluster="east"), value(5))  # MirrorSourceConnector: another connector
    positions.add(key(connector="east-mirror"), value(5))  # alias "source": another flow
    assert positions.stored == {TopicPartition("orders", 0): 3}
    assert positions.skipped == {OTHER_CONNECTOR: 1, OTHER_CLUSTER: 1}


def test_topic_selection_full_match_and_exclusions() -> None:
    selection = TopicSelection(patterns=(re.compile(r"mm2\..*"),),
                               exclude=(re.compile(r"mm2\.private.*"),))
    positions = MirrorPositions(topics=selection)
    for topic in ("mm2.a", "mm2.private-x", "xmm2.a", "mm2"):
        positions.add(key(topic=topic), value(1))
    positions.add(key(topic="xmm2.a"), None)  # not selected: not even its tombstone counts
    assert positions.stored == {TopicPartition("mm2.a", 0): 1}
    assert positions.skipped == {TOPIC_NOT_SELECTED: 4}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(["cluster", "partition", "topic", "offset", "x"]) | st.text(),
                      children, max_size=4),
    max_leaves=12)


@given(st.one_of(st.none(), st.binary()), st.one_of(st.none(), st.binary()))
def test_random_bytes_never_raise(k: bytes | None, v: bytes | None) -> None:
    positions = MirrorPositions()
    positions.add(k, v)
    assert positions.records == 1
    assert len(positions.stored) + sum(positions.skipped.values()) <= 1


@given(json_values, st.one_of(st.none(), json_values))
def test_random_json_never_raises_and_positions_are_sane(k: object, v: object) -> None:
    encoded_key = json.dumps(["MirrorSourceConnector", k]).encode()
    encoded_value = None if v is None else json.dumps(v).encode()
    answer = parse(encoded_key, encoded_value)
    if isinstance(answer, Position):
        assert isinstance(k, dict) and k["cluster"] == "source"
        assert answer.partition == TopicPartition(k["topic"], k["partition"])
        assert answer.partition.partition >= 0
        assert answer.offset is None or answer.offset >= 0


@given(st.lists(st.tuples(st.sampled_from(["a", "b"]), st.integers(0, 2),
                          st.one_of(st.none(), st.integers(0, 10**12))), max_size=30))
def test_the_latest_record_per_partition_wins(records: list[tuple[str, int, int | None]]
                                              ) -> None:
    positions = MirrorPositions()
    latest: dict[TopicPartition, int | None] = {}
    for topic, partition, offset in records:
        positions.add(key(topic=topic, partition=partition),
                      None if offset is None else value(offset))
        latest[TopicPartition(topic, partition)] = offset
    assert positions.stored == {tp: o for tp, o in latest.items() if o is not None}


KEY_POOL = [key(), key(partition=1), key(connector="Other"), key(cluster="east"), b"junk",
            key(topic="never"), b'["MirrorSourceConnector", 5]']
VALUE_POOL = [None, value(0), value(7), b"junk", b'{"offset": -3}']


@given(st.lists(st.tuples(st.sampled_from(KEY_POOL), st.sampled_from(VALUE_POOL)), max_size=40))
def test_remembered_keys_give_what_parsing_each_record_gives(
        records: list[tuple[bytes, bytes | None]]) -> None:
    selection = TopicSelection(exclude=(re.compile("never"),))
    positions = MirrorPositions(topics=selection)
    stored: dict[TopicPartition, int] = {}
    skipped: dict[str, int] = {}
    for k, v in records:
        positions.add(k, v)
        tp = parse_key(k, "MirrorSourceConnector", "source")
        # a topic not selected is skipped whatever its value
        answer = (TOPIC_NOT_SELECTED if isinstance(tp, TopicPartition)
                  and not selection.allows(tp.topic) else parse(k, v))
        if isinstance(answer, str):
            skipped[answer] = skipped.get(answer, 0) + 1
        elif answer.offset is None:
            skipped[TOMBSTONE] = skipped.get(TOMBSTONE, 0) + 1
            stored.pop(answer.partition, None)
        else:
            stored[answer.partition] = answer.offset
    assert positions.stored == stored
    assert positions.skipped == skipped
    assert positions.records == len(records)


def value_by_json(raw: bytes) -> int | str:
    """parse_value's answer without its shortcut: json.loads, then the shape check."""
    parsed = parse_json(raw)
    if parsed is NOT_PARSED:
        return NOT_JSON
    offset = parsed.get("offset") if isinstance(parsed, dict) else None
    if isinstance(offset, int) and not isinstance(offset, bool) and offset >= 0:
        return offset
    return OTHER_VALUE_SHAPE


SHORTCUT_EDGES = [b"", b"0", b"00", b"007", b"1e3", b"1.0", b"+1", b"-1", b"\xd9\xa3", b"1 ",
                  b" 1", b"12_3", b"true", b"null", b"{}", b"1}"]
converter_like = st.builds(
    lambda prefix, digits, suffix: prefix + digits + suffix,
    st.sampled_from([b'{"offset":', b'{"offset":', b'{"offset": ', b'{"offsets":']),
    st.one_of(st.integers(0, 10**20).map(lambda n: str(n).encode()),
              st.sampled_from(SHORTCUT_EDGES)),
    st.sampled_from([b"}", b"}", b" }", b"}}", b"", b',"x":1}', b"}\n"]))


@pytest.mark.parametrize("digits", SHORTCUT_EDGES)
def test_the_converter_shape_shortcut_takes_no_odd_digits(digits: bytes) -> None:
    raw = b'{"offset":' + digits + b"}"
    assert parse_value(raw) == value_by_json(raw)


@given(st.one_of(converter_like, st.binary(max_size=30)))
def test_the_converter_shape_shortcut_answers_what_json_answers(raw: bytes) -> None:
    assert parse_value(raw) == value_by_json(raw)


def test_connects_own_value_shape_is_read_without_json(monkeypatch: pytest.MonkeyPatch) -> None:
    """At 10,000 positions a second json.loads was most of the cost of following a mirror."""
    def no_json(data: bytes) -> object:
        raise AssertionError(f"json.loads of {data!r}")

    monkeypatch.setattr(mm2_module, "_json", no_json)
    assert [parse_value(b'{"offset":' + digits + b"}") for digits in (b"0", b"7", b"1234567")] \
        == [0, 7, 1234567]
