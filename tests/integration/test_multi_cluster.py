"""One process, both clusters of the stack, several groups (one found by regex): discovery,
isolation of failures, /metrics against Elasticsearch, and SIGHUP reload."""

from __future__ import annotations

import itertools
import re
import signal
import time
import urllib.request
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient
from helpers import (
    ExporterProcess,
    SteadyProducer,
    commit,
    create_topic,
    doc_time,
    document_stamps,
    free_port,
    metric_values,
    produce,
    scrape_metrics,
    search_all,
    wait_for,
    wait_until_kafka_serves,
)

from stack.stackctl import Stack

pytestmark = pytest.mark.integration


def stamps_by_group(documents: list[dict[str, Any]]) -> dict[tuple[str, str], list[float]]:
    found: dict[tuple[str, str], list[float]] = defaultdict(list)
    for doc in documents:
        found[(doc["cluster"], doc["group"])].append(doc_time(doc))
    return {key: sorted(set(values)) for key, values in found.items()}


def largest_gap(stamps: list[float]) -> float:
    return max((b - a for a, b in itertools.pairwise(stamps)), default=0.0)


def ticks_skipped_by(stderr: str, cluster: str) -> int:
    """Ticks the cluster had no sample for (its previous one still running), from the closing
    line "stopped after N samples (... skipped by slow clusters: src 1, tgt 2, ...)"."""
    found = re.search(rf"skipped by slow clusters: (?:[^,)]+, )*{re.escape(cluster)} (\d+)",
                      stderr)
    return int(found.group(1)) if found else 0


def group_with_lag(bootstrap: str, topic: str, group: str, partitions: int = 2) -> None:
    create_topic(bootstrap, topic, partitions)
    produce(bootstrap, topic, {p: 6 for p in range(partitions)})
    commit(bootstrap, group, {(topic, p): 2 for p in range(partitions)})



def test_two_clusters_discovery_and_failures_stay_apart(
    stack: Stack, unique_name: str, tmp_path: Path, restart_source: None
) -> None:
    u = unique_name
    group_with_lag(stack.source_bootstrap, f"fleet.{u}.a", f"src-a-{u}")
    group_with_lag(stack.source_bootstrap, f"fleet.{u}.gone", f"src-gone-{u}")
    group_with_lag(stack.target_bootstrap, f"fleet.{u}.t", f"tgt-{u}")
    index, port = f"fleet-{u}", free_port()
    config = tmp_path / "lag-exporter.toml"
    config.write_text(f"""
interval = 1
discovery_interval = 3
http_host = "127.0.0.1"
http_port = {port}
[elasticsearch]
urls = ["{stack.es_url}"]
index = "{index}"
[[cluster]]
name = "src"
bootstrap_servers = "{stack.source_bootstrap}"
groups = ["src-a-{u}", "src-gone-{u}"]
group_patterns = ["disc-{u}-.*"]
[[cluster]]
name = "tgt"
bootstrap_servers = "{stack.target_bootstrap}"
groups = ["tgt-{u}"]
""")
    exporter = ExporterProcess("--config", str(config), "--spool-dir", str(tmp_path / "spool"))

    def stamps(cluster: str, group: str, after: float = 0.0) -> list[float]:
        return [s for s in document_stamps(stack.es_url, index, cluster=cluster, group=group)
                if s > after]

    wait_for(lambda: len(stamps("src", f"src-a-{u}")) >= 2 and len(stamps("tgt", f"tgt-{u}")) >= 2,
             timeout=60, what="both clusters' documents", exporter=exporter)
    running = time.time()  # from here on no tick may be lost (the first may be slow)
    # a group matching the regex appears while watch runs
    group_with_lag(stack.source_bootstrap, f"fleet.{u}.disc", f"disc-{u}-1")
    created = time.time()
    wait_for(lambda: len(stamps("src", f"disc-{u}-1")) >= 1, timeout=30,
             what="the discovered group's first document", exporter=exporter)
    # a topic a group has commits on is deleted
    admin = AdminClient({"bootstrap.servers": stack.source_bootstrap})
    admin.delete_topics([f"fleet.{u}.gone"])[f"fleet.{u}.gone"].result(timeout=30)
    deleted = time.time()
    wait_for(lambda: len(stamps("src", f"src-a-{u}", after=deleted)) >= 3, timeout=30,
             what="3 samples after the topic deletion", exporter=exporter)
    # the source broker goes away: the target cluster's samples go on
    stack.stop("kafka-source")
    stopped = time.time()

    def source_down() -> bool:
        up = metric_values(port, "lag_exporter_group_up", cluster_name="src")
        return bool(up) and not any(up)

    wait_for(source_down, timeout=60, what="the source cluster's groups reported down",
             exporter=exporter)
    wait_for(lambda: len(stamps("tgt", f"tgt-{u}", after=stopped)) >= 8, timeout=60,
             what="8 target samples during the outage", exporter=exporter)
    stack.start("kafka-source")
    restarted = wait_until_kafka_serves(stack.source_bootstrap)
    wait_for(lambda: len(stamps("src", f"src-a-{u}", after=restarted)) >= 2, timeout=60,
             what="source samples after the restart", exporter=exporter)
    code, _ = exporter.stop(signal.SIGTERM)
    assert code == 0, exporter.stderr

    by_group = stamps_by_group(search_all(stack.es_url, index))
    target = by_group[("tgt", f"tgt-{u}")]
    assert largest_gap([s for s in target if s > running - 1]) < 1.5  # none lost in the outage
    assert len(target) >= exporter.samples_taken() - 1
    discovered = by_group[("src", f"disc-{u}-1")]
    assert discovered[0] - created < 3 + 2  # within one discovery period (+ a tick)
    source_a = by_group[("src", f"src-a-{u}")]
    before_outage = [s for s in source_a if running - 1 < s < stopped - 1]
    assert largest_gap(before_outage) < 1.5  # the deleted topic broke nothing
    assert any(s > restarted for s in source_a), exporter.stderr  # back after the outage
    assert exporter.stderr.count("cluster src: cannot sample") == 1, exporter.stderr
    # The source's outage says nothing about the target (its one start-up line aside).
    assert [line for line in exporter.stderr.splitlines() if "cluster tgt" in line
            and "committed offsets followed in" not in line] == [], exporter.stderr
    assert f"watching group disc-{u}-1" in exporter.stderr


def test_metrics_agree_with_the_documents_of_the_same_tick(
    stack: Stack, unique_name: str, tmp_path: Path
) -> None:
    topic, group, index = f"metrics.{unique_name}", f"metrics-{unique_name}", f"m-{unique_name}"
    group_with_lag(stack.source_bootstrap, topic, group, partitions=3)
    port = free_port()
    with SteadyProducer(stack.source_bootstrap, topic, 3, rate=100):  # lag moves every tick
        exporter = ExporterProcess("--bootstrap-server", stack.source_bootstrap, "--group", group,
                                   "--es-url", stack.es_url, "--es-index", index,
                                   "--spool-dir", str(tmp_path), "--http-port", str(port))
        wait_for(lambda: len(metric_values(port, "kafka_consumergroup_group_lag", group=group))
                 == 3, timeout=60, what="lag series of the group on /metrics", exporter=exporter)
        metrics = scrape_metrics(port)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
            assert answer.status == 200
        (last,) = metrics["lag_exporter_last_sample_timestamp_seconds"]

        def scraped_tick_stored() -> bool:  # @timestamp keeps milliseconds
            return any(abs(s - last.value) < 0.002
                       for s in document_stamps(stack.es_url, index, group=group))

        wait_for(scraped_tick_stored, timeout=30, what="the document of the scraped tick",
                 exporter=exporter)
        code, _ = exporter.stop(signal.SIGTERM)
    assert code == 0, exporter.stderr
    # the document of the tick the scrape saw
    (doc,) = [d for d in search_all(stack.es_url, index) if abs(doc_time(d) - last.value) < 0.002]
    lags = {int(s.labels["partition"]): s.value for s in metrics["kafka_consumergroup_group_lag"]
            if s.labels["group"] == group}
    assert lags == {p: doc[f"p{p}"] for p in range(3)}
    (total,) = [s.value for s in metrics["kafka_consumergroup_group_topic_sum_lag"]
                if s.labels["topic"] == topic]
    assert total == doc["lag_total"]


def test_sighup_adds_a_group_without_a_gap_and_rejects_a_bad_config(
    stack: Stack, unique_name: str, tmp_path: Path
) -> None:
    u = unique_name
    group_with_lag(stack.source_bootstrap, f"hup.{u}.1", f"hup1-{u}")
    group_with_lag(stack.source_bootstrap, f"hup.{u}.2", f"hup2-{u}")
    index = f"hup-{u}"
    config = tmp_path / "lag-exporter.toml"
    body = f"""
[elasticsearch]
urls = ["{stack.es_url}"]
index = "{index}"
[[cluster]]
name = "src"
bootstrap_servers = "{stack.source_bootstrap}"
"""
    config.write_text(body + f'groups = ["hup1-{u}"]\n')
    exporter = ExporterProcess("--config", str(config), "--spool-dir", str(tmp_path / "spool"))

    def stamps(group: str, after: float = 0.0) -> list[float]:
        return [s for s in document_stamps(stack.es_url, index, group=group) if s > after]

    wait_for(lambda: len(stamps(f"hup1-{u}")) >= 3, timeout=60, what="the first documents",
             exporter=exporter)
    # No gap from the last two documents before the first SIGHUP on (how fast a fresh watch
    # starts is not this test's claim).
    measured_from = stamps(f"hup1-{u}")[-2]
    config.write_text(body + f'groups = ["hup1-{u}"]\ngroup_patterns = ["(broken"]\n')
    exporter.process.send_signal(signal.SIGHUP)
    rejected = time.time()
    # the reload is tried before the next tick: two ticks later it has been, and rejected
    wait_for(lambda: len(stamps(f"hup1-{u}", after=rejected)) >= 2, timeout=30,
             what="ticks after the first SIGHUP", exporter=exporter)
    config.write_text(body + f'groups = ["hup1-{u}", "hup2-{u}"]\n')
    exporter.process.send_signal(signal.SIGHUP)
    reloaded = time.time()
    wait_for(lambda: len(stamps(f"hup2-{u}")) >= 2, timeout=30,
             what="the added group's documents", exporter=exporter)
    code, _ = exporter.stop(signal.SIGTERM)
    assert code == 0, exporter.stderr
    assert exporter.stderr.count("config reload rejected") == 1
    assert "invalid regex '(broken'" in exporter.stderr
    by_group = stamps_by_group(search_all(stack.es_url, index))
    first, second = by_group[("src", f"hup1-{u}")], by_group[("src", f"hup2-{u}")]
    through_reloads = [s for s in first if s >= measured_from]
    assert largest_gap(through_reloads) < 1.5, through_reloads  # none through both reloads
    # Every sample's document stored: one per sample but the ticks its cluster was late for.
    assert len(first) == exporter.samples_taken() - ticks_skipped_by(exporter.stderr, "src")
    assert reloaded - 0.5 < second[0] < reloaded + 2.5
