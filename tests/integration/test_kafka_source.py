"""KafkaSource against the real broker: certain failures reported at once, errors forgotten once
over, metadata refreshed when partitions are added."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._scram import (  # not re-exported for mypy
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialDeletion,
    UserScramCredentialUpsertion,
)
from helpers import commit, create_topic, produce, run_exporter

from lag_exporter.errors import SourceError
from lag_exporter.kafka_source import KafkaSource
from lag_exporter.model import TopicPartition
from stack.stackctl import Stack

pytestmark = pytest.mark.integration
T = TypeVar("T")


def sasl_settings(stack: Stack, username: str, password: str) -> dict[str, str]:
    return {"bootstrap.servers": stack.source_sasl_bootstrap,
            "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": stack.sasl_mechanism,
            "sasl.username": username, "sasl.password": password}


def timed(call: Callable[[], T]) -> tuple[T, float]:
    started = time.monotonic()
    answer = call()
    return answer, time.monotonic() - started


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Seconds until condition() held (asked every 0.25 s)."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, f"{what} not within {timeout} s"
        time.sleep(0.25)
    return time.monotonic() - started


@pytest.fixture
def source_factory() -> Iterator[Callable[..., KafkaSource]]:
    sources: list[KafkaSource] = []

    def make(settings: dict[str, str], timeout_s: float) -> KafkaSource:
        sources.append(KafkaSource("c", settings, timeout_s))
        return sources[-1]

    yield make
    for source in sources:
        source.close()


def test_wrong_password_is_reported_within_2_s_not_after_the_timeout(
    stack: Stack, source_factory: Callable[..., KafkaSource]
) -> None:
    source = source_factory(sasl_settings(stack, stack.sasl_username, "wrong-password"), 10.0)
    answer, seconds = timed(lambda: source.committed_offsets(["g"])["g"])
    assert isinstance(answer, SourceError)
    assert str(answer).startswith(
        f"Kafka at {stack.source_sasl_bootstrap} refused the credentials: "), answer
    assert "(_AUTHENTICATION)" in str(answer)
    assert seconds < 2, seconds


def test_refused_connection_is_reported_within_2_s_not_after_the_timeout(
    source_factory: Callable[..., KafkaSource]
) -> None:
    source = source_factory({"bootstrap.servers": "127.0.0.1:1"}, 10.0)
    answer, seconds = timed(lambda: source.committed_offsets(["g"])["g"])
    assert isinstance(answer, SourceError)
    assert str(answer).startswith("no answer from Kafka at 127.0.0.1:1 within 10 s: "), answer
    assert "Connection refused" in str(answer)
    assert seconds < 2, seconds


def test_snapshot_reports_a_refused_connection_at_once() -> None:
    done, seconds = timed(lambda: run_exporter(
        "snapshot", "--bootstrap-server", "127.0.0.1:1", "--group", "g", "--timeout", "10"))
    assert done.returncode == 1, done.stderr
    assert "no answer from Kafka at 127.0.0.1:1 within 10 s: " in done.stderr
    assert "Connection refused" in done.stderr
    assert seconds < 5, seconds  # the whole process, Python start-up included


@pytest.fixture
def scram_user(stack: Stack, unique_name: str) -> Iterator[tuple[str, Callable[[str], None]]]:
    """(user name, create(password)); the user is deleted afterwards."""
    admin = AdminClient({"bootstrap.servers": stack.source_bootstrap})
    user = f"user-{unique_name}"
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096)

    def create(password: str) -> None:
        upsert = UserScramCredentialUpsertion(user, info, password.encode())
        admin.alter_user_scram_credentials([upsert])[user].result(timeout=30)

    yield user, create
    admin.alter_user_scram_credentials(
        [UserScramCredentialDeletion(user, ScramMechanism.SCRAM_SHA_512)])[user].result(timeout=30)


def test_a_credentials_error_is_forgotten_once_requests_succeed(
    stack: Stack, unique_name: str, scram_user: tuple[str, Callable[[str], None]],
    source_factory: Callable[..., KafkaSource]
) -> None:
    user, create_user = scram_user
    source = source_factory(sasl_settings(stack, user, "pw-4711"), 3.0)
    failed = source.committed_offsets(["g"])["g"]  # the user does not exist yet
    assert isinstance(failed, SourceError) and "refused the credentials" in str(failed)
    create_user("pw-4711")
    wait_for(lambda: not isinstance(source.committed_offsets(["g"])["g"], SourceError), 30,
             "a successful request after the user was created")
    missing = f"missing.{unique_name}"
    answer = source.high_watermarks([TopicPartition(missing, 0)])[TopicPartition(missing, 0)]
    assert isinstance(answer, SourceError)
    assert "refused the credentials" not in str(answer), answer  # was: every later error
    # The metadata refresh for the unknown topic must not create it (auto.create.topics is on).
    topics = AdminClient({"bootstrap.servers": stack.source_bootstrap}).list_topics(timeout=10)
    assert missing not in topics.topics


def test_partitions_added_to_a_topic_are_answered_within_seconds(
    stack: Stack, unique_name: str, source_factory: Callable[..., KafkaSource]
) -> None:
    topic, group = f"grow.{unique_name}", f"grow-{unique_name}"
    create_topic(stack.source_bootstrap, topic, 2)
    produce(stack.source_bootstrap, topic, {0: 3, 1: 3})
    source = source_factory({"bootstrap.servers": stack.source_bootstrap}, 5.0)
    old = [TopicPartition(topic, p) for p in (0, 1)]
    assert source.high_watermarks(old) == {tp: 3 for tp in old}  # the client's cache knows 2
    client = source._admin
    done = stack.run_tool("kafka-topics", "--bootstrap-server", stack.source_bootstrap,
                          "--alter", "--topic", topic, "--partitions", "4")
    assert done.returncode == 0, done.stderr
    produce(stack.source_bootstrap, topic, {2: 5, 3: 7})
    commit(stack.source_bootstrap, group, {(topic, 2): 1, (topic, 3): 2})
    committed = source.committed_offsets([group])[group]
    assert not isinstance(committed, SourceError)
    new = [TopicPartition(topic, p) for p in (2, 3)]
    assert set(new) <= set(committed.committed_offsets)

    def all_answered() -> bool:
        return source.high_watermarks(old + new) == {old[0]: 3, old[1]: 3, new[0]: 5, new[1]: 7}

    # Without a metadata refresh, _UNKNOWN_PARTITION for up to metadata.max.age.ms (15 min).
    assert wait_for(all_answered, 10, "end offsets of the new partitions") < 5
    assert source._admin is client  # refreshed, not replaced (a cold client costs handshakes)


def test_a_topic_whose_metadata_is_refreshed_is_not_asked_again_every_call(
    stack: Stack, unique_name: str, source_factory: Callable[..., KafkaSource]
) -> None:
    source = source_factory({"bootstrap.servers": stack.source_bootstrap}, 5.0)
    missing = TopicPartition(f"gone.{unique_name}", 0)
    assert isinstance(source.high_watermarks([missing])[missing], SourceError)
    refreshed_at = source._metadata_refreshed[missing.topic]
    assert isinstance(source.high_watermarks([missing])[missing], SourceError)
    assert source._metadata_refreshed[missing.topic] == refreshed_at



def test_the_record_time_reader_builds_no_statistics_nobody_serves(
    stack: Stack, unique_name: str, source_factory: Callable[..., KafkaSource]
) -> None:
    """The consumer reading record times is polled only when it reads (every 10 s at most):
    librdkafka statistics set on the client (as the scale benchmark does) would be built for
    every partition it saw and queued between reads. Found by the scale benchmark at estate c:
    the Kafka client process grew by ~7 MB/s and doubled its CPU."""
    create_topic(stack.source_bootstrap, unique_name, 2)
    produce(stack.source_bootstrap, unique_name, {0: 3, 1: 3})
    client_types: list[str] = []

    def on_statistics(report: str) -> None:
        client_types.append(json.loads(report)["type"])

    source = source_factory({"bootstrap.servers": stack.source_bootstrap,
                             "statistics.interval.ms": "100", "stats_cb": on_statistics}, 10.0)
    wanted = {TopicPartition(unique_name, 0): 1, TopicPartition(unique_name, 1): 0}
    first = source.record_times(wanted)
    assert {tp: answer[:2] for tp, answer in first.items()  # type: ignore[index]
            } == {TopicPartition(unique_name, 0): (1, 1), TopicPartition(unique_name, 1): (0, 0)}
    time.sleep(0.5)  # statistics intervals pass; the next read serves what was queued
    source.record_times(wanted)
    source.committed_offsets(["nobody-" + unique_name])  # its poll(0) serves the admin's own
    assert client_types and "consumer" not in client_types


def test_client_callbacks_are_served_when_only_end_offsets_are_asked(
    stack: Stack, unique_name: str
) -> None:
    """Following `__consumer_offsets`, a sample asks only for end offsets: the client's queued
    events (errors, statistics) must still be served, or they pile up in librdkafka (statistics
    unserved grew a process by ~7 MB/s) and errors are never logged."""
    topic = f"callbacks.{unique_name}"
    create_topic(stack.source_bootstrap, topic, 1)
    statistics: list[str] = []
    source = KafkaSource("c", {"bootstrap.servers": stack.source_bootstrap,
                               "statistics.interval.ms": "200",
                               "stats_cb": statistics.append}, 10.0)  # type: ignore[dict-item]
    try:
        deadline = time.monotonic() + 10
        while not statistics and time.monotonic() < deadline:
            assert source.high_watermarks([(topic, 0)]) == {TopicPartition(topic, 0): 0}
            time.sleep(0.3)
        assert statistics, "no statistics event served in 10 s of end-offset requests"
        assert "brokers" in json.loads(statistics[0])  # librdkafka statistics JSON
    finally:
        source.close()


def test_every_record_time_read_fetches_once_per_leader(
    stack: Stack, unique_name: str, source_factory: Callable[..., KafkaSource],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue 11: at most one batched Fetch per leader for a read. A reader kept between reads
    sent 2-3 for 100 partitions (the first Fetch left before every partition was started); a
    reader of its own per read assigns them all before it is connected."""
    create_topic(stack.source_bootstrap, unique_name, 100)
    produce(stack.source_bootstrap, unique_name, {p: 2 for p in range(100)})
    source = source_factory({"bootstrap.servers": stack.source_bootstrap, "debug": "protocol"},
                            10.0)
    wanted = {TopicPartition(unique_name, p): 1 for p in range(100)}
    caplog.set_level(logging.DEBUG, logger="lag_exporter.librdkafka")
    for read in range(3):
        caplog.clear()
        answers = source.record_times(wanted)
        assert sorted({answer[1] for answer in answers.values()}) == [1]  # type: ignore[index]
        fetches = [r for r in caplog.records if "Sent FetchRequest" in r.getMessage()]
        assert len(fetches) == 1, f"read {read}: {len(fetches)} Fetch requests"
