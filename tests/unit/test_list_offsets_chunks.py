"""ListOffsets chunks keep a topic's partitions together, so a failed chunk stays local (pure)."""

from confluent_kafka import KafkaError

from lag_exporter.kafka_source import STALE_CLIENT_ERRORS, STALE_METADATA_ERRORS, chunk_by_topic


def topics_of(chunk: list[tuple[str, int]]) -> set[str]:
    return {topic for topic, _ in chunk}


def test_a_topic_is_never_split_across_chunks_when_it_fits_in_one() -> None:
    partitions = [(t, p) for t in ("b", "a", "c", "d") for p in range(3)]
    chunks = chunk_by_topic(reversed(partitions), 7)
    assert [sorted(chunk) for chunk in chunks] == [
        [("a", 0), ("a", 1), ("a", 2), ("b", 0), ("b", 1), ("b", 2)],
        [("c", 0), ("c", 1), ("c", 2), ("d", 0), ("d", 1), ("d", 2)],
    ]


def test_every_partition_once_and_no_chunk_over_the_size() -> None:
    partitions = [(f"t{t}", p) for t in range(40) for p in range(t % 9 + 1)]
    chunks = chunk_by_topic(partitions + partitions[:10], 10)  # duplicates are asked once
    flat = [tp for chunk in chunks for tp in chunk]
    assert sorted(flat) == sorted(partitions)
    assert all(0 < len(chunk) <= 10 for chunk in chunks)
    for topic in {t for t, _ in partitions}:
        assert sum(topic in topics_of(chunk) for chunk in chunks) == 1


def test_only_a_topic_larger_than_a_chunk_is_split_into_chunks_of_its_own() -> None:
    partitions = [("big", p) for p in range(25)] + [("a", 0), ("z", 0), ("z", 1)]
    chunks = chunk_by_topic(partitions, 10)
    assert [sorted(chunk) for chunk in chunks] == [
        [("a", 0)],
        [("big", p) for p in range(10)],
        [("big", p) for p in range(10, 20)],
        [("big", p) for p in range(20, 25)],
        [("z", 0), ("z", 1)],
    ]


def test_no_partitions_no_chunks() -> None:
    assert chunk_by_topic([], 250) == []


def test_leader_errors_refresh_metadata_instead_of_replacing_the_client() -> None:
    """A reassignment's routine NOT_LEADER / LEADER_NOT_AVAILABLE must not cost a cold client
    (coordinator cache, SASL handshakes); the integration test checks the refresh itself."""
    for code in (KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
                 KafkaError._UNKNOWN_PARTITION):
        assert code in STALE_METADATA_ERRORS and code not in STALE_CLIENT_ERRORS
