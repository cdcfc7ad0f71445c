"""End offsets are read as kafka-consumer-groups reads them (READ_UNCOMMITTED): with a
transaction left open, the log-end offset is past the last stable offset, and the lag counts the
uncommitted records too. Also: options come from LAG_EXPORTER_* environment variables."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from confluent_kafka import Producer
from helpers import commit, create_topic, describe_group, parse_table, produce, run_exporter

from stack.stackctl import Stack

pytestmark = pytest.mark.integration

COMMITTED_RECORDS = 5
OPEN_TRANSACTION_RECORDS = 7
GROUP_OFFSET = 2


@pytest.fixture
def open_transaction(stack: Stack, unique_name: str) -> Iterator[str]:
    """A fresh topic with 5 plain records, then 7 in a transaction that stays open during the
    test (last stable offset 5, log-end offset 12); a group committed at 2. Yields the topic."""
    topic = f"txn.{unique_name}"
    create_topic(stack.source_bootstrap, topic, 1)
    produce(stack.source_bootstrap, topic, {0: COMMITTED_RECORDS})
    producer = Producer({"bootstrap.servers": stack.source_bootstrap,
                         "transactional.id": f"txn-{unique_name}",
                         "transaction.timeout.ms": 300_000})
    producer.init_transactions(30)
    producer.begin_transaction()
    for n in range(OPEN_TRANSACTION_RECORDS):
        producer.produce(topic, value=f"uncommitted {n}".encode(), partition=0)
    assert producer.flush(30) == 0  # written to the log, transaction not committed
    commit(stack.source_bootstrap, f"txn-{unique_name}", {(topic, 0): GROUP_OFFSET})
    try:
        yield topic
    finally:
        producer.abort_transaction(30)


def test_log_end_offset_includes_an_open_transaction_as_kafka_consumer_groups_does(
    stack: Stack, unique_name: str, open_transaction: str
) -> None:
    group = f"txn-{unique_name}"
    # Bootstrap server and group only through the environment: a wrong prefix fails here.
    env = {"LAG_EXPORTER_BOOTSTRAP_SERVER": stack.source_bootstrap,
           "LAG_EXPORTER_GROUP": group}
    table = run_exporter("snapshot", env=env)
    assert table.returncode == 0, table.stderr
    reference = describe_group(stack, group)
    log_end = COMMITTED_RECORDS + OPEN_TRANSACTION_RECORDS
    assert [(r.topic, r.partition, r.log_end_offset) for r in reference] == [
        (open_transaction, 0, log_end)]  # the real tool: past the last stable offset (5)
    assert parse_table(table.stdout) == reference

    documents = run_exporter("snapshot", "--format", "json", env=env)
    assert documents.returncode == 0, documents.stderr
    (document,) = map(json.loads, documents.stdout.splitlines())
    assert (document["group"], document["p0"]) == (group, log_end - GROUP_OFFSET)
