"""What crosses the pipe to the Kafka client process comes back equal (pure)."""

import pickle
from typing import Any

from lag_exporter.errors import SourceError
from lag_exporter.kafka_child import answer_from_wire, answer_to_wire, request_to_wire
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
