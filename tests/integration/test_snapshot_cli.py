"""`lag-exporter snapshot` driven as a real subprocess against the real stack."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka import Producer
from elasticsearch import Elasticsearch
from helpers import (
    commit,
    create_topic,
    one_line_error,
    produce,
    run_exporter,
    search_all,
)

from stack.stackctl import Stack

pytestmark = pytest.mark.integration


@pytest.fixture
def lagging_group(stack: Stack, unique_name: str) -> tuple[str, str]:
    topic, group = f"snap.{unique_name}", f"snap-group-{unique_name}"
    create_topic(stack.source_bootstrap, topic, 3)
    produce(stack.source_bootstrap, topic, {0: 10, 1: 20, 2: 30})
    commit(stack.source_bootstrap, group, {(topic, 0): 10, (topic, 1): 5})
    return topic, group


def test_unknown_group_is_one_line_and_exit_1(stack: Stack, unique_name: str) -> None:
    done = run_exporter("snapshot", "--bootstrap-server", stack.source_bootstrap,
                        "--group", f"missing-{unique_name}")
    assert done.returncode == 1
    assert one_line_error(done) == (
        f"lag-exporter: error: consumer group 'missing-{unique_name}' does not exist")


def test_unreachable_cluster_fails_within_the_timeout() -> None:
    started = time.monotonic()
    done = run_exporter("snapshot", "--bootstrap-server", "127.0.0.1:1", "--group", "g",
                        "--timeout", "3")
    assert done.returncode == 1
    assert time.monotonic() - started < 10
    line = one_line_error(done)
    assert "no answer from Kafka at 127.0.0.1:1 within 3 s" in line
    assert "Connection refused" in line


def test_sasl_login_through_a_java_properties_file(
    stack: Stack, lagging_group: tuple[str, str]
) -> None:
    _, group = lagging_group
    done = run_exporter("snapshot", "--bootstrap-server", stack.source_sasl_bootstrap,
                        "--command-config", stack.sasl_properties, "--group", group)
    assert done.returncode == 0, done.stderr
    assert [line.split()[5] for line in done.stdout.splitlines()[1:]] == ["0", "15"]


def test_wrong_sasl_password_is_refused_without_leaking_it(
    stack: Stack, lagging_group: tuple[str, str], tmp_path: Path
) -> None:
    wrong = tmp_path / "consumer.properties"
    wrong.write_text(Path(stack.sasl_properties).read_text().replace(
        stack.sasl_password, "not-the-password-42"))
    done = run_exporter("snapshot", "--bootstrap-server", stack.source_sasl_bootstrap,
                        "--command-config", str(wrong), "--group", lagging_group[1],
                        "--timeout", "5")
    assert done.returncode == 1
    line = one_line_error(done)
    assert "refused the credentials" in line and "Authentication failed" in line, line
    assert "not-the-password-42" not in done.stderr + done.stdout


def test_snapshot_writes_one_document_per_topic_to_elasticsearch(
    stack: Stack, lagging_group: tuple[str, str], unique_name: str
) -> None:
    topic, group = lagging_group
    index = f"lag-{unique_name}"
    done = run_exporter("snapshot", "--bootstrap-server", stack.source_bootstrap,
                        "--group", group, "--es-url", stack.es_url, "--es-index", index)
    assert done.returncode == 0, done.stderr
    (document,) = search_all(stack.es_url, index)
    assert document["topic"] == topic and document["group"] == group
    assert (document["p0"], document["p1"]) == (0, 15)
    assert "p2" not in document  # no commit: no lag, not 0
    assert document["lag_total"] == 15 and document["lag_max"] == 15
    mapping = Elasticsearch(stack.es_url).indices.get_mapping(index=index)[index]["mappings"]
    assert mapping["properties"]["p1"]["type"] == "long"
    assert mapping["properties"]["topic"]["type"] == "keyword"


def test_old_pipeline_mapping_is_left_alone_with_one_warning(
    stack: Stack, lagging_group: tuple[str, str], unique_name: str
) -> None:
    index = f"old-{unique_name}"
    client = Elasticsearch(stack.es_url)
    client.indices.create(index=index, mappings={"properties": {
        "@timestamp": {"type": "date"}, "topic": {"type": "text"},
        **{f"p{n}": {"type": "integer"} for n in range(18)}}})
    done = run_exporter("snapshot", "--bootstrap-server", stack.source_bootstrap,
                        "--group", lagging_group[1], "--es-url", stack.es_url,
                        "--es-index", index)
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if "old mapping" in line]
    assert len(warnings) == 2, done.stderr
    assert "'topic' is text" in warnings[0] and "2^31-1" in warnings[1]
    mapping = client.indices.get_mapping(index=index)[index]["mappings"]["properties"]
    assert mapping["topic"]["type"] == "text"  # left alone


def test_elasticsearch_credentials_come_from_the_environment(
    stack: Stack, lagging_group: tuple[str, str], unique_name: str
) -> None:
    index = f"auth-{unique_name}"
    args = ("snapshot", "--bootstrap-server", stack.source_bootstrap, "--group",
            lagging_group[1], "--es-url", stack.es_auth_url, "--es-index", index,
            "--es-username", stack.es_auth_username, "--es-ca-file", stack.es_auth_ca_file)
    refused = run_exporter(*args, env={"LAG_EXPORTER_ES_PASSWORD": "wrong-es-pass-7"})
    assert refused.returncode == 1
    assert "refused the credentials" in one_line_error(refused)
    assert "wrong-es-pass-7" not in refused.stderr + refused.stdout
    accepted = run_exporter(*args, env={"LAG_EXPORTER_ES_PASSWORD": stack.es_auth_password})
    assert accepted.returncode == 0, accepted.stderr
    assert stack.es_auth_password not in accepted.stderr + accepted.stdout


@pytest.mark.parametrize(("args", "message"), [
    (("--interval", "0"), "--interval must be greater than 0"),
    (("--es-url", "localhost:9200"), "malformed Elasticsearch URL"),
    (("--es-url", "http://127.0.0.1:1", "--es-index", "Bad*Index"),
     "invalid Elasticsearch index name"),
])
def test_bad_watch_options_exit_2_with_one_line(args: tuple[str, ...], message: str) -> None:
    done = run_exporter("watch", "--bootstrap-server", "127.0.0.1:1", "--group", "g", *args)
    assert done.returncode == 2
    assert message in one_line_error(done)


def test_a_commit_past_the_high_watermark_is_warned_as_watch_does(
    stack: Stack, unique_name: str
) -> None:
    topic, group = f"past.{unique_name}", f"past-{unique_name}"
    create_topic(stack.source_bootstrap, topic, 1)
    produce(stack.source_bootstrap, topic, {0: 5})
    commit(stack.source_bootstrap, group, {(topic, 0): 100})
    done = run_exporter("snapshot", "--bootstrap-server", stack.source_bootstrap,
                        "--group", group)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [
        f"lag-exporter: warning: group {group}: committed offset 100 of {topic}/0 is beyond "
        "the high watermark 5 (log truncated?); lag reported as 0"]
    assert done.stdout.splitlines()[1].split() == [group, topic, "0", "100", "5", "0", "0.0"]


def test_tsv_format_makes_cut_f_6_the_lag_column(
    stack: Stack, lagging_group: tuple[str, str]
) -> None:
    _, group = lagging_group
    done = subprocess.run(
        f"{sys.executable} -m lag_exporter snapshot --bootstrap-server "
        f"{stack.source_bootstrap} --group {group} --format tsv | cut -f 6",
        shell=True, capture_output=True, text=True, check=True, timeout=60)
    assert done.stdout.splitlines() == ["LAG", "0", "15"]


def test_an_unnamed_cluster_is_called_by_its_bootstrap_servers(
    stack: Stack, lagging_group: tuple[str, str]
) -> None:
    """Two single-cluster exporters writing one index must be told apart ('default' did not)."""
    _, group = lagging_group
    done = run_exporter("snapshot", "--bootstrap-server", stack.source_bootstrap,
                        "--group", group, "--format", "json")
    assert done.returncode == 0, done.stderr
    assert {json.loads(line)["cluster"] for line in done.stdout.splitlines()} == {
        stack.source_bootstrap}
    named = run_exporter("snapshot", "--bootstrap-server", stack.source_bootstrap,
                         "--group", group, "--format", "json", "--cluster-name", "dc1")
    assert {json.loads(line)["cluster"] for line in named.stdout.splitlines()} == {"dc1"}


def test_check_config_matches_whole_names_and_lists_what_matched(
    stack: Stack, unique_name: str, tmp_path: Path
) -> None:
    u = unique_name
    topic, other_topic = f"mirror.{u}", f"qa-mirror.{u}"
    create_topic(stack.source_bootstrap, topic, 1)
    create_topic(stack.source_bootstrap, other_topic, 1)
    for group in (f"mirror-{u}", f"mirror-{u}-2", f"qa-mirror-{u}-tmp"):
        commit(stack.source_bootstrap, group, {(topic, 0): 0, (other_topic, 0): 0})
    config = tmp_path / "c.toml"
    config.write_text(f'[[cluster]]\nname = "src"\nbootstrap_servers = '
                      f'"{stack.source_bootstrap}"\ngroup_patterns = ["mirror-{u}.*"]\n'
                      f'topic_patterns = ["mirror\\\\..*"]\n')
    done = run_exporter("check-config", "--config", str(config))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "  (patterns match whole names, as Java's Pattern.matches)" in lines
    assert f"  group patterns match 2 group(s): mirror-{u}, mirror-{u}-2" in lines
    assert (f"  group mirror-{u}: 1 topic(s), 1 partition(s) with commits: {topic} "
            "(1 other committed topic(s) not selected)") in lines
    assert f"qa-mirror-{u}-tmp" not in done.stdout


def test_global_options_work_after_the_subcommand(stack: Stack) -> None:
    debug = run_exporter("snapshot", "--bootstrap-server", "127.0.0.1:1", "--group", "g",
                         "--timeout", "1", "--debug")
    assert debug.returncode == 1 and "Traceback" in debug.stderr, debug.stderr
    logged = run_exporter("snapshot", "--bootstrap-server", "127.0.0.1:1", "--group", "g",
                          "--timeout", "1", "--log-level", "debug", "--log-format", "json")
    assert logged.returncode == 1, logged.stderr
    lines = logged.stderr.splitlines()
    assert lines[-1].startswith("lag-exporter: error: no answer from Kafka")
    assert lines[:-1] and all(json.loads(line)["level"] for line in lines[:-1]), lines


def test_lag_seconds_of_a_lagging_partition_is_the_age_of_the_record_at_the_commit(
    stack: Stack, unique_name: str
) -> None:
    """A snapshot has no history: it must read the CreateTime of the record at the committed
    offset from the broker (issue 11), not print 0 or nothing for a partition behind."""
    topic, group = f"secs.{unique_name}", f"secs-{unique_name}"
    create_topic(stack.source_bootstrap, topic, 2)
    now_ms = int(time.time() * 1000)
    producer = Producer({"bootstrap.servers": stack.source_bootstrap})
    for n in range(10):  # partition 0: records stamped 100 s ago, 99 s ago, ... 91 s ago
        producer.produce(topic, value=b"x", partition=0, timestamp=now_ms - (100 - n) * 1000)
    producer.produce(topic, value=b"x", partition=1, timestamp=now_ms - 50_000)
    assert producer.flush(30) == 0
    commit(stack.source_bootstrap, group, {(topic, 0): 3, (topic, 1): 1})  # p0 at the -97 s one
    done = run_exporter("snapshot", "--bootstrap-server", stack.source_bootstrap,
                        "--group", group, "--format", "tsv")
    assert done.returncode == 0, done.stderr
    header, *rows = [line.split("\t") for line in done.stdout.splitlines()]
    seconds_column = header.index("LAG-SECONDS")
    by_partition = {int(row[2]): row for row in rows}
    assert by_partition[0][5] == "7"
    age = float(by_partition[0][seconds_column])
    # the record's age when the snapshot ran: 97 s at the commit, plus the seconds since then
    assert 97.0 <= age <= 97.0 + (time.time() * 1000 - now_ms) / 1000 + 1.0, age
    assert (by_partition[1][5], by_partition[1][seconds_column]) == ("0", "0.0")  # caught up
