"""What crosses the pipe to the Kafka client process comes back equal (pure)."""

import pickle

from lag_exporter.errors import SourceError
from lag_exporter.isolation import _from_wire, _to_wire
from lag_exporter.model import GroupOffsets, TopicPartition


def round_trip(method: str, answer: object) -> object:
    return _from_wire(method, pickle.loads(pickle.dumps(_to_wire(method, answer))))


def test_high_watermarks_survive_the_pipe() -> None:
    answer = {TopicPartition("t", 0): 5, TopicPartition("t", 1): SourceError("gone")}
    back = round_trip("high_watermarks", answer)
    assert isinstance(back, dict) and back.keys() == answer.keys()
    assert all(isinstance(tp, TopicPartition) for tp in back)
    assert back[TopicPartition("t", 0)] == 5 and str(back[TopicPartition("t", 1)]) == "gone"


def test_committed_offsets_survive_the_pipe() -> None:
    answer = {"g": GroupOffsets("g", {TopicPartition("t", 3): 7}), "h": SourceError("timed out")}
    back = round_trip("committed_offsets", answer)
    assert isinstance(back, dict) and back["g"] == answer["g"]
    assert isinstance(back["h"], SourceError)


def test_other_answers_pass_unchanged() -> None:
    assert round_trip("list_groups", ["a", "b"]) == ["a", "b"]
