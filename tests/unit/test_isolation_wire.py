"""What crosses the pipe to the Kafka client process comes back equal (pure)."""

import pickle
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from lag_exporter.errors import SourceError
from lag_exporter.kafka_child import AskedBefore, answer_from_wire, answer_to_wire, request_to_wire
from lag_exporter.model import GroupOffsets, TopicPartition


def round_trip(method: str, keys: list[Any], answer: Any) -> Any:
    """keys: what the parent asks about; answer: what KafkaSource says in the child."""
    request = pickle.loads(pickle.dumps(request_to_wire(method, keys)))
    answer = pickle.loads(pickle.dumps(answer_to_wire(method, request, answer)))
    return answer_from_wire(method, keys, answer)


def test_partitions_are_sent_as_plain_tuples() -> None:
    request = request_to_wire("high_watermarks", [TopicPartition("t", 0)])
    assert request == [("t", 0)] and type(request[0]) is tuple


def test_high_watermarks_survive_the_pipe() -> None:
    keys = [TopicPartition("t", 0), TopicPartition("t", 1)]
    answer = {TopicPartition("t", 1): SourceError("gone"), TopicPartition("t", 0): 5}
    back = round_trip("high_watermarks", keys, answer)
    assert isinstance(back, dict) and list(back) == keys
    assert all(isinstance(tp, TopicPartition) for tp in back)
    assert back[TopicPartition("t", 0)] == 5 and str(back[TopicPartition("t", 1)]) == "gone"


def test_a_partition_missing_from_the_answer_gets_an_error() -> None:
    back = round_trip("high_watermarks", [TopicPartition("t", 0)], {})
    assert isinstance(back[TopicPartition("t", 0)], SourceError)


def test_committed_offsets_survive_the_pipe() -> None:
    answer = {"g": GroupOffsets("g", {TopicPartition("t", 3): 7}), "h": SourceError("timed out")}
    back = round_trip("committed_offsets", ["g", "h"], answer)
    assert isinstance(back, dict) and back["g"] == answer["g"]
    assert all(isinstance(tp, TopicPartition) for tp in back["g"].committed_offsets)
    assert isinstance(back["h"], SourceError)


def test_other_answers_pass_unchanged() -> None:
    assert round_trip("topic_partitions", ["t"], {"t": [0, 1]}) == {"t": [0, 1]}


partition_lists = st.lists(st.builds(TopicPartition, st.sampled_from("abc"), st.integers(0, 3)),
                           max_size=10)


@given(st.lists(partition_lists, max_size=40))
def test_lists_asked_again_travel_as_their_length_and_arrive_whole(sent: list[Any]) -> None:
    """Both ends keep an AskedBefore; every list the parent asks arrives in the child as asked,
    and a list equal to the last one of its length travels without its partitions."""
    parent, child = AskedBefore(), AskedBefore()
    last_of_length: dict[int, list[Any]] = {}
    for partitions in sent:
        length, whole = parent.shorten(partitions)
        shortened = whole is None
        wire = None if whole is None else request_to_wire("high_watermarks", whole)
        arrived = child.expand(*pickle.loads(pickle.dumps((length, wire))))
        assert arrived == [tuple(tp) for tp in partitions]
        if len(last_of_length) < AskedBefore.LIMIT or length in last_of_length:
            assert shortened == (last_of_length.get(length) == partitions)
        else:
            assert not shortened  # a ninth length: both ends started over
            last_of_length = {}
        last_of_length[length] = partitions


def test_a_list_asked_again_is_not_sent_again() -> None:
    parent = AskedBefore()
    groups = [TopicPartition("t", n) for n in range(3)]
    offsets_topic = [TopicPartition("__consumer_offsets", 7)]
    assert parent.shorten(groups) == (3, groups)
    assert parent.shorten(offsets_topic) == (1, offsets_topic)
    assert parent.shorten(list(groups)) == (3, None)  # alternating lists are both kept
    assert parent.shorten(offsets_topic) == (1, None)
    moved = [TopicPartition("t", 0), TopicPartition("t", 1), TopicPartition("t", 3)]
    assert parent.shorten(moved) == (3, moved)  # same length, other partitions: sent whole
