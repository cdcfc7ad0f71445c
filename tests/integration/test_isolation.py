"""A librdkafka abort() in the Kafka client process costs one sample, not the exporter."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

import pytest
from helpers import commit, create_topic, produce

from lag_exporter.errors import SourceError
from lag_exporter.isolation import IsolatedKafkaSource
from lag_exporter.model import TopicPartition
from stack.stackctl import Stack

pytestmark = pytest.mark.integration


def test_aborted_client_process_is_replaced(stack: Stack, unique_name: str) -> None:
    topic, group = f"iso.{unique_name}", f"iso-{unique_name}"
    create_topic(stack.source_bootstrap, topic, 1)
    produce(stack.source_bootstrap, topic, {0: 3})
    commit(stack.source_bootstrap, group, {(topic, 0): 1})
    source = IsolatedKafkaSource("c", {"bootstrap.servers": stack.source_bootstrap}, 5.0)
    try:
        first = source.committed_offsets([group])[group]
        assert not isinstance(first, SourceError)
        assert first.committed_offsets == {TopicPartition(topic, 0): 1}
        child = source._process
        assert child is not None and child.pid is not None
        os.kill(child.pid, signal.SIGABRT)  # what librdkafka's failed assertion does
        child.join(5)
        after = source.committed_offsets([group])[group]  # a new child answers
        assert not isinstance(after, SourceError)
        assert source.high_watermarks([TopicPartition(topic, 0)]) == {TopicPartition(topic, 0): 3}
        assert source.restarts == 1
    finally:
        source.close()


def test_client_dying_mid_request_fails_that_call_only() -> None:
    # A port that accepts connections and never answers: requests stay in flight until timeout
    # (a refused connection is now reported at once).
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    port = silent.getsockname()[1]
    source = IsolatedKafkaSource("c", {"bootstrap.servers": f"127.0.0.1:{port}"}, 4.0)
    try:
        assert isinstance(source.committed_offsets(["g"])["g"], SourceError)  # child is up
        child = source._process
        assert child is not None and child.pid is not None
        timer = threading.Timer(1.0, os.kill, (child.pid, signal.SIGABRT))
        timer.start()
        answer = source.committed_offsets(["g"])["g"]  # in flight when the child aborts
        timer.join()
        assert isinstance(answer, SourceError)
        assert "crashed (exit code -6)" in str(answer)
        assert source.restarts == 1
        # The new child starts at once, not when the next sample needs it.
        assert source._process is not None and source._process.is_alive()
    finally:
        source.close()
        silent.close()


def test_end_offsets_asked_again_are_read_again(stack: Stack, unique_name: str) -> None:
    """The lists a sample asks every time travel once (AskedBefore) and their ListOffsets
    requests are built once (KafkaSource): each call still reads the end offsets anew."""
    topic = f"iso-again.{unique_name}"
    create_topic(stack.source_bootstrap, topic, 3)
    produce(stack.source_bootstrap, topic, {0: 1, 1: 2, 2: 3})
    first_two = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
    last_one = [TopicPartition(topic, 2)]
    source = IsolatedKafkaSource("c", {"bootstrap.servers": stack.source_bootstrap}, 5.0)
    try:
        assert source.high_watermarks(first_two) == dict(zip(first_two, [1, 2], strict=True))
        assert source.high_watermarks(last_one) == {last_one[0]: 3}
        produce(stack.source_bootstrap, topic, {0: 10, 1: 10, 2: 10})
        assert source.high_watermarks(list(first_two)) == dict(zip(first_two, [11, 12],
                                                                   strict=True))
        assert source.high_watermarks(last_one) == {last_one[0]: 13}
        other_two = [TopicPartition(topic, 2), TopicPartition(topic, 0)]  # same length
        assert source.high_watermarks(other_two) == dict(zip(other_two, [13, 11], strict=True))
        child = source._process
        assert child is not None and child.pid is not None
        os.kill(child.pid, signal.SIGKILL)
        child.join(5)
        source.committed_offsets(["any"])  # sees the child gone, starts another
        assert source.high_watermarks(other_two) == dict(zip(other_two, [13, 11], strict=True))
        assert source.restarts == 1
    finally:
        source.close()


def record_times_handed_over(source: IsolatedKafkaSource
                             ) -> dict[TopicPartition, tuple[int, int, float] | SourceError]:
    """Ask for nothing until a read started before hands over its answers."""
    deadline = time.monotonic() + 20
    while not (answers := source.record_times({})) and time.monotonic() < deadline:
        time.sleep(0.05)
    return answers


def test_record_times_are_read_in_the_background_and_handed_over_once(
    stack: Stack, unique_name: str
) -> None:
    """A sample does not wait for a record-time read (its connections close between reads, so
    a read waits to reconnect), but for the first: the child reads in a thread and a later call
    hands the answers over, once; a read lost with a killed child is asked for again."""
    topic = f"iso-times.{unique_name}"
    create_topic(stack.source_bootstrap, topic, 2)
    before = time.time()
    produce(stack.source_bootstrap, topic, {0: 3, 1: 3})
    wanted = {TopicPartition(topic, 0): 1, TopicPartition(topic, 1): 0}
    source = IsolatedKafkaSource("c", {"bootstrap.servers": stack.source_bootstrap}, 5.0)
    try:
        first = source.record_times(wanted)  # waited for
        assert {tp: answer[:2] for tp, answer in first.items()  # type: ignore[index]
                } == {TopicPartition(topic, 0): (1, 1), TopicPartition(topic, 1): (0, 0)}
        assert source.record_times(wanted) == {}  # started, not waited for
        answers = record_times_handed_over(source)
        assert {tp: answer[:2] for tp, answer in answers.items()  # type: ignore[index]
                } == {TopicPartition(topic, 0): (1, 1), TopicPartition(topic, 1): (0, 0)}
        assert all(before - 1 < answer[2] < time.time() + 1  # type: ignore[index]
                   for answer in answers.values())
        assert source.record_times({}) == {}  # once
        assert source.record_times(wanted) == {}
        child = source._process
        assert child is not None and child.pid is not None
        os.kill(child.pid, signal.SIGKILL)
        child.join(5)
        assert source.record_times({}) == {}  # the read died with the child
        assert source.restarts == 1
        assert source.record_times(wanted) == {}  # asked again of the new child
        assert set(record_times_handed_over(source)) == set(wanted)
    finally:
        source.close()
