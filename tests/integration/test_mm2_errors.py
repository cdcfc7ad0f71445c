"""MirrorMaker 2's error paths through the real command (issue 12, README "MirrorMaker 2",
"Errors"): an offsets topic that does not exist, a connector name with no position, and
check-config on either. Each is one line and exit 1, never a traceback. The offsets topics are
this test's own, on the stack's target broker: the running MirrorMaker 2 is not involved."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from confluent_kafka import Producer
from helpers import create_topic, run_exporter

from stack.stackctl import Stack

pytestmark = pytest.mark.integration

LABEL = "mm2:source->target"


def write_offsets_topic(stack: Stack, topic: str, source_topic: str) -> None:
    """A one-partition offsets topic as dedicated-mode MirrorMaker 2 writes it: a position of
    MirrorSourceConnector for source alias `source`, and a heartbeat connector's record."""
    create_topic(stack.target_bootstrap, topic, 1)
    producer = Producer({"bootstrap.servers": stack.target_bootstrap})
    producer.produce(topic, key=json.dumps(["MirrorSourceConnector", {
        "cluster": "source", "partition": 0, "topic": source_topic}]).encode(),
                     value=b'{"offset": 41}')
    producer.produce(topic, key=json.dumps(["MirrorHeartbeatConnector", {
        "sourceClusterAlias": "source", "targetClusterAlias": "target"}]).encode(),
                     value=b'{"offset": 0}')
    assert producer.flush(30) == 0


def mirror_flags(stack: Stack, offsets_topic: str, *more: str) -> tuple[str, ...]:
    return ("--bootstrap-server", stack.source_bootstrap,
            "--mm2-target-bootstrap-server", stack.target_bootstrap,
            "--mm2-offsets-topic", offsets_topic, *more)


def one_error_line(stderr: str) -> str:
    """The command's only error line (INFO log lines may come before it)."""
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("lag-exporter: error: ")]
    assert len(errors) == 1, stderr
    return errors[0]


def test_snapshot_of_an_unknown_offsets_topic_is_one_line_and_exit_1(
        stack: Stack, unique_name: str) -> None:
    missing = f"{unique_name}-missing"
    done = run_exporter("snapshot", *mirror_flags(stack, missing))
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert one_error_line(done.stderr) == (
        f"lag-exporter: error: unknown offsets topic {missing} on {stack.target_bootstrap} "
        "(Broker: Unknown topic or partition (UNKNOWN_TOPIC_OR_PART)): check the target "
        "cluster and the offsets topic's name")
    assert done.stdout == ""


def test_a_connector_with_no_position_is_one_line_and_exit_1(
        stack: Stack, unique_name: str) -> None:
    offsets_topic = f"{unique_name}-offsets"
    write_offsets_topic(stack, offsets_topic, f"mm2.{unique_name}")
    done = run_exporter("snapshot", *mirror_flags(stack, offsets_topic, "--mm2-connector", "Foo"))
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert one_error_line(done.stderr) == (
        f"lag-exporter: error: no position of Foo for source alias 'source' in offsets topic "
        f"{offsets_topic} on {stack.target_bootstrap} (2 records read, skipped: 2 other "
        "connector)")
    # the same topic has the default connector's position: the name is what made it fail
    found = run_exporter("check-config", *mirror_flags(stack, offsets_topic))
    assert found.returncode == 0, (found.stdout, found.stderr)
    assert (f"  mirror {LABEL}: connector MirrorSourceConnector, source alias source, offsets "
            f"topic {offsets_topic} on {stack.target_bootstrap}: 1 source partition(s) of 1 "
            f"topic(s): mm2.{unique_name} (replicated as source.mm2.{unique_name}, ... under "
            "the default replication policy; 2 records read, skipped: 1 other connector)"
            ) in found.stdout.splitlines(), found.stdout


def test_check_config_says_a_mirror_cannot_be_read_and_exits_1(
        stack: Stack, unique_name: str) -> None:
    missing = f"{unique_name}-missing"
    done = run_exporter("check-config", *mirror_flags(stack, missing))
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    mirror_lines = [line for line in done.stdout.splitlines() if line.startswith("  mirror ")]
    assert mirror_lines == [
        f"  mirror {LABEL}: connector MirrorSourceConnector, source alias source: cannot read "
        f"its positions: unknown offsets topic {missing} on {stack.target_bootstrap} (Broker: "
        "Unknown topic or partition (UNKNOWN_TOPIC_OR_PART)): check the target cluster and "
        "the offsets topic's name"], done.stdout


def test_check_config_names_replicated_topics_under_the_configured_policy(
        stack: Stack, unique_name: str, tmp_path: Path) -> None:
    """The config file's replication_policy reaches check-config's line (the stack's
    MirrorMaker 2 runs the default policy: the offsets topic here is written by the test)."""
    offsets_topic = f"{unique_name}-offsets"
    write_offsets_topic(stack, offsets_topic, f"mm2.{unique_name}")
    config = tmp_path / "mm2.toml"
    config.write_text(f"""
[[cluster]]
name = "src"
bootstrap_servers = "{stack.source_bootstrap}"
[[cluster.mirror]]
target_bootstrap_servers = "{stack.target_bootstrap}"
offsets_topic = "{offsets_topic}"
label = "identity"
replication_policy = "identity"
[[cluster.mirror]]
target_bootstrap_servers = "{stack.target_bootstrap}"
offsets_topic = "{offsets_topic}"
label = "underscore"
replication_policy_separator = "_"
""")
    done = run_exporter("check-config", "--config", str(config))
    assert done.returncode == 0, (done.stdout, done.stderr)
    replicated = [line.split("(replicated as ")[1].split(";")[0]
                  for line in done.stdout.splitlines() if line.startswith("  mirror ")]
    assert replicated == [
        f"mm2.{unique_name}, ... under the identity replication policy",
        f"source_mm2.{unique_name}, ... under the default replication policy, separator '_'"
    ], done.stdout
