"""Smoke tests: each component of the local stack does its one job."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaException
from confluent_kafka.admin import AdminClient
from elasticsearch import AuthenticationException, Elasticsearch

from stack.stackctl import Stack

pytestmark = pytest.mark.integration


def eventually(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(1)


def consume(bootstrap: str, topic: str, count: int, timeout: float) -> list[str]:
    """Read `count` values of `topic` from the beginning (a fresh group)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{topic}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    values: list[str] = []
    deadline = time.monotonic() + timeout
    try:
        while len(values) < count and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is not None and msg.error() is None:  # topic may not exist yet
                values.append((msg.value() or b"").decode())
    finally:
        consumer.close()
    return values


def produce_lines(stack: Stack, topic: str, lines: list[str]) -> None:
    done = stack.run_tool("kafka-console-producer", "--bootstrap-server", stack.source_bootstrap,
                          "--topic", topic, input="\n".join(lines) + "\n")
    assert done.returncode == 0, done.stderr


def committed(stack: Stack, group: str, topic: str) -> int:
    """Sum of the group's committed offsets on `topic`, from kafka-consumer-groups."""
    out = stack.run_tool("kafka-consumer-groups", "--bootstrap-server", stack.source_bootstrap,
                         "--describe", "--group", group)
    total = 0
    for line in out.stdout.splitlines():
        cols = line.split()
        if len(cols) > 3 and cols[0] == group and cols[1] == topic and cols[3].isdigit():
            total += int(cols[3])
    return total


def test_mm1_mirrors_oasis_topic_and_commits_offsets(stack: Stack, unique_name: str) -> None:
    topic = f"oasis.{unique_name}"
    made = stack.run_tool("kafka-topics", "--bootstrap-server", stack.source_bootstrap,
                          "--create", "--topic", topic, "--partitions", "2")
    assert made.returncode == 0, made.stderr
    lines = [f"m{i}" for i in range(10)]
    produce_lines(stack, topic, lines)
    assert sorted(consume(stack.target_bootstrap, topic, 10, 90)) == sorted(lines)
    eventually(lambda: committed(stack, stack.mm1_group, topic) == 10, 60,
               f"{stack.mm1_group} to commit 10 offsets on {topic}")


def test_mm2_mirrors_to_prefixed_topic(stack: Stack, unique_name: str) -> None:
    topic = f"mm2.{unique_name}"
    lines = [f"r{i}" for i in range(5)]
    produce_lines(stack, topic, lines)
    assert sorted(consume(stack.target_bootstrap, f"source.{topic}", 5, 120)) == sorted(lines)


def sasl_admin(stack: Stack, password: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": stack.source_sasl_bootstrap,
                        "security.protocol": "SASL_PLAINTEXT",
                        "sasl.mechanisms": stack.sasl_mechanism,
                        "sasl.username": stack.sasl_username, "sasl.password": password})


def test_sasl_login_right_and_wrong_password(stack: Stack) -> None:
    metadata = sasl_admin(stack, stack.sasl_password).list_topics(timeout=20)
    assert metadata.brokers
    with pytest.raises(KafkaException):
        sasl_admin(stack, "wrong-password").list_topics(timeout=5)
    listed = stack.run_tool("kafka-consumer-groups", "--bootstrap-server",
                            stack.source_sasl_bootstrap, "--command-config",
                            stack.sasl_properties, "--list")
    assert listed.returncode == 0, listed.stderr


def test_elasticsearch_bulk_and_search(stack: Stack, unique_name: str) -> None:
    es = Elasticsearch(stack.es_url)
    docs: list[dict[str, Any]] = []
    for i in range(3):
        docs += [{"index": {"_index": unique_name}}, {"n": i, "group": "g"}]
    try:
        result = es.bulk(operations=docs, refresh=True)
        assert not result["errors"]
        hits = es.search(index=unique_name, query={"term": {"group": "g"}})["hits"]
        assert hits["total"]["value"] == 3
    finally:
        es.indices.delete(index=unique_name, ignore_unavailable=True)
        es.close()


def test_elasticsearch_data_survives_restart(stack: Stack, unique_name: str) -> None:
    es = Elasticsearch(stack.es_url)
    es.index(index=unique_name, document={"kept": True}, refresh=True)
    stack.stop("elasticsearch")
    stack.start("elasticsearch")
    assert es.count(index=unique_name)["count"] == 1
    es.indices.delete(index=unique_name)
    es.close()


def test_elasticsearch_auth_accepts_right_password_only(stack: Stack) -> None:
    good = Elasticsearch(stack.es_auth_url, ca_certs=stack.es_auth_ca_file,
                         basic_auth=(stack.es_auth_username, stack.es_auth_password))
    assert good.cluster.health()["status"] in ("green", "yellow")
    bad = Elasticsearch(stack.es_auth_url, ca_certs=stack.es_auth_ca_file,
                        basic_auth=(stack.es_auth_username, "wrong"))
    with pytest.raises(AuthenticationException):
        bad.cluster.health()
    good.close()
    bad.close()
