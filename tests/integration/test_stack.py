"""Smoke tests: each component of the local stack does its one job."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from confluent_kafka import Consumer, KafkaException
from confluent_kafka.admin import AdminClient
from elasticsearch import AuthenticationException, Elasticsearch
from opensearchpy import OpenSearch

from stack import stackctl
from stack.stackctl import Stack

if TYPE_CHECKING:
    from mypy_boto3_cloudwatch.type_defs import DimensionTypeDef

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


@pytest.mark.parametrize("component", ["elasticsearch-auth", "elasticsearch9-auth"])
def test_elasticsearch_auth_accepts_right_password_only(stack: Stack, component: str) -> None:
    url = stack.es_auth_url if component == "elasticsearch-auth" else stack.es9_auth_url
    good = Elasticsearch(url, ca_certs=stack.es_auth_ca_file,
                         basic_auth=(stack.es_auth_username, stack.es_auth_password))
    assert good.cluster.health()["status"] in ("green", "yellow")
    versions = {node["version"] for node in good.nodes.info()["nodes"].values()}
    dist = stackctl.ELASTICS[component].dist
    assert versions == {dist.version} and url.startswith("https://")
    bad = Elasticsearch(url, ca_certs=stack.es_auth_ca_file,
                        basic_auth=(stack.es_auth_username, "wrong"))
    with pytest.raises(AuthenticationException):
        bad.cluster.health()
    good.close()
    bad.close()


def test_elasticsearch9_is_a_9x_node_that_takes_bulk_writes(stack: Stack, unique_name: str) -> None:
    es = Elasticsearch(stack.es9_url)
    try:
        versions = {node["version"] for node in es.nodes.info()["nodes"].values()}
        assert versions == {stackctl.ES9_VERSION}
        assert stackctl.ES9_VERSION.startswith("9.")
        result = es.bulk(operations=[{"create": {"_index": unique_name, "_id": "a"}}, {"n": 1}],
                         refresh=True)
        assert not result["errors"]
        assert es.count(index=unique_name)["count"] == 1
    finally:
        es.indices.delete(index=unique_name, ignore_unavailable=True)
        es.close()


def test_opensearch_is_a_2_19_opensearch_node(stack: Stack, unique_name: str) -> None:
    client = OpenSearch(hosts=[stack.opensearch_url])
    try:
        version = client.info()["version"]
        assert version["distribution"] == "opensearch"
        assert version["number"].startswith("2.19.")
        client.index(index=unique_name, body={"n": 1}, id="a", refresh=True)
        assert client.count(index=unique_name)["count"] == 1
    finally:
        client.indices.delete(index=unique_name, ignore_unavailable=True)
        client.close()


def test_cloudwatch_endpoint_takes_and_lists_metrics(stack: Stack, unique_name: str) -> None:
    cloudwatch = boto3.client("cloudwatch", endpoint_url=stack.cloudwatch_endpoint,
                              region_name="eu-west-1", aws_access_key_id="dummy",
                              aws_secret_access_key="dummy")
    dimensions: list[DimensionTypeDef] = [{"Name": "ConsumerGroup", "Value": "g"},
                                          {"Name": "Topic", "Value": "t"}]
    cloudwatch.put_metric_data(Namespace=unique_name, MetricData=[
        {"MetricName": "SumOffsetLag", "Dimensions": dimensions, "Value": 42.0,
         "Timestamp": datetime.now(UTC)}])
    metrics = cloudwatch.list_metrics(Namespace=unique_name)["Metrics"]
    assert [(m["MetricName"], m["Dimensions"]) for m in metrics] == [("SumOffsetLag", dimensions)]


def test_cloudwatch_stops_and_starts(stack: Stack) -> None:
    port = int(stack.cloudwatch_endpoint.rsplit(":", 1)[1])
    stack.stop("cloudwatch")
    try:
        assert not stackctl.port_open(port)
    finally:
        stack.start("cloudwatch")
    assert stackctl.http_status(f"{stack.cloudwatch_endpoint}/moto-api/") == 200


# ---------------------------------------------------------------- failures are one line


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def scratch_stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """stackctl pointed at an empty repository and state under tmp_path, the cloudwatch
    component on a free port: nothing of the shared stack is touched."""
    monkeypatch.setattr(stackctl, "REPO", tmp_path / "repo")
    monkeypatch.setattr(stackctl, "STATE", tmp_path / "state")
    monkeypatch.setattr(stackctl, "RUN", tmp_path / "state" / "run")
    monkeypatch.setattr(stackctl, "LOGS", tmp_path / "state" / "logs")
    monkeypatch.setattr(stackctl, "ADDRESSES", tmp_path / "state" / "addresses.json")
    monkeypatch.setattr(stackctl, "MOTO_PORT", free_port())
    monkeypatch.delenv("CI", raising=False)
    return tmp_path / "repo"


def fake_moto_server(repo: Path, script: str) -> None:
    server = repo / ".venv" / "bin" / "moto_server"
    server.parent.mkdir(parents=True)
    server.write_text(f"#!/bin/sh\n{script}\n")
    server.chmod(0o755)


def one_line_failure(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """The failure line of `scripts/stack ARGV`: exit 1 and, after the "[stack] ..." progress
    lines, one line and nothing else (no traceback)."""
    assert stackctl.main(list(argv)) == 1
    err = capsys.readouterr().err
    failure = [line for line in err.splitlines() if not line.startswith("[stack] ")]
    assert len(failure) == 1, err
    assert err.endswith(f"{failure[0]}\n")
    assert failure[0].startswith("stack: ")
    return failure[0]


def test_missing_program_is_one_line(scratch_stack: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    line = one_line_failure(capsys, "up", "cloudwatch")
    assert line == (f"stack: cloudwatch: no {scratch_stack}/.venv/bin/moto_server "
                    f"(scripts/bootstrap installs it)")


def test_component_dying_at_start_is_one_line(scratch_stack: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    fake_moto_server(scratch_stack, "echo 'cannot start' >&2; exit 3")
    line = one_line_failure(capsys, "up", "cloudwatch")
    log = stackctl.log_file("cloudwatch")
    assert line == f"stack: cloudwatch: process exited during start-up (log: {log})"
    assert "cannot start" in log.read_text()


def test_os_error_is_one_line(scratch_stack: Path, tmp_path: Path,
                              capsys: pytest.CaptureFixture[str],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    fake_moto_server(scratch_stack, "exec sleep 60")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setattr(stackctl, "LOGS", blocker / "logs")  # mkdir fails even for root
    line = one_line_failure(capsys, "up", "cloudwatch")
    assert line == f"stack: [Errno 20] Not a directory: '{blocker / 'logs'}'"


def test_starting_and_stopping_wait_for_another_process_doing_it() -> None:
    """Two `up`s racing once left a dead JVM's pid file behind and blocked every later start."""
    with subprocess.Popen(
        [sys.executable, "-c", "import sys\nfrom stack import stackctl\n"
         "with stackctl.stack_lock():\n    print('locked', flush=True)\n    sys.stdin.read()"],
        cwd=stackctl.REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    ) as holder:
        assert holder.stdin is not None and holder.stdout is not None
        try:
            assert holder.stdout.readline() == "locked\n"
            stopper = threading.Thread(target=stackctl.stop, args=("no-such-component",))
            stopper.start()
            stopper.join(1.0)
            assert stopper.is_alive()  # waits for the other process
            holder.stdin.close()
            stopper.join(30)
            assert not stopper.is_alive()
        finally:
            holder.kill()


def test_a_component_that_execs_counts_as_running_throughout(scratch_stack: Path) -> None:
    """Its /proc environ reads empty for an instant during each exec; once that made a restarted
    OpenSearch (its launch script execs java) count as "exited during start-up"."""
    chain = scratch_stack / "chain.sh"
    chain.parent.mkdir(parents=True)
    chain.write_text('n=${1:-0}\n[ "$n" -lt 1000 ] && exec /bin/sh "$0" $((n + 1))\nexec sleep 5\n')
    stackctl.spawn("cloudwatch", ["/bin/sh", str(chain)])
    try:
        deadline = time.monotonic() + 1.5
        looks = 0
        while time.monotonic() < deadline:
            assert stackctl.running("cloudwatch"), f"seen gone after {looks} looks"
            looks += 1
    finally:
        stackctl.stop("cloudwatch")
    assert looks > 100 and not stackctl.running("cloudwatch")
