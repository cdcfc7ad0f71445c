"""A topic too wide for one document per group x topic: 1,200 partitions, committed with a real
consumer, exported by the real `lag-exporter watch` from a config file.

- the wide shape (p0..p1199): the server's index.mapping.total_fields.limit (1,000) rejects the
  document every tick; the exporter says so, and what to do, in one line, once;
- the per-partition shape: every partition's lag equals `kafka-consumer-groups --describe`.
"""

from __future__ import annotations

import signal
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient
from helpers import (
    ExporterProcess,
    commit,
    create_topic,
    describe_group,
    free_port,
    lags_by_partition,
    metric_values,
    produce,
    wait_for,
)
from search_servers import SERVER_LABELS, SearchServer, exists, request, search, search_server

from stack.stackctl import Stack

pytestmark = pytest.mark.integration

PARTITIONS = 1200


@dataclass(frozen=True)
class WideGroup:
    topic: str
    group: str
    lags: dict[int, int | None]
    """kafka-consumer-groups' LAG per partition."""


@pytest.fixture(scope="module")
def wide_group(stack: Stack) -> Iterator[WideGroup]:
    name = uuid.uuid4().hex[:8]
    topic, group = f"wide.{name}", f"wide-{name}"
    create_topic(stack.source_bootstrap, topic, PARTITIONS)
    try:
        produce(stack.source_bootstrap, topic, {p: 1 + p % 5 for p in range(PARTITIONS)})
        commit(stack.source_bootstrap, group,
               {(topic, p): min(p % 3, 1 + p % 5) for p in range(PARTITIONS)})
        rows = describe_group(stack, group)
        lags = {partition: lag for (_, partition), lag in lags_by_partition(rows).items()}
        assert len(lags) == PARTITIONS and len(set(lags.values())) > 1
        yield WideGroup(topic, group, lags)
    finally:  # 1,200 partitions weigh on the shared broker: not left behind
        # Waited for: a dropped AdminClient never sent the request, and eight 1,200-partition
        # topics made every later broker restart take over a minute.
        admin = AdminClient({"bootstrap.servers": stack.source_bootstrap})  # kept until done
        for future in admin.delete_topics([topic]).values():
            future.result(timeout=60)


def write_config(path: Path, stack: Stack, server: SearchServer, index: str, shape: str,
                 group: str, http_port: int) -> Path:
    path.write_text(f"""interval = 1
spool_dir = "{path.parent / 'spool'}"
http_host = "127.0.0.1"
http_port = {http_port}

[{server.section}]
urls = ["{server.url}"]
index = "{index}"
document_shape = "{shape}"

[[cluster]]
name = "source"
bootstrap_servers = "{stack.source_bootstrap}"
groups = ["{group}"]
""")
    return path


@pytest.mark.parametrize("label", SERVER_LABELS)
def test_wide_shape_says_once_in_one_line_what_to_do(
        stack: Stack, wide_group: WideGroup, tmp_path: Path, label: str) -> None:
    server = search_server(stack, label)
    port = free_port()
    config = write_config(tmp_path / "wide.toml", stack, server, f"wide-{uuid.uuid4().hex[:8]}",
                          "wide", wide_group.group, port)
    exporter = ExporterProcess("--config", str(config))
    rejected_metric = "lag_exporter_documents_rejected_total"
    wait_for(lambda: sum(metric_values(port, rejected_metric)) >= 4, 60,
             "4 rejected documents (4 ticks)", exporter=exporter)
    code, _ = exporter.stop(signal.SIGTERM)
    assert code == 0, exporter.stderr
    advice = [line for line in exporter.stderr.splitlines() if "document_shape" in line]
    assert len(advice) == 1, exporter.stderr
    assert f"index.mapping.total_fields.limit (1000) (topic '{wide_group.topic}'" in advice[0]
    assert f'set document_shape = "partition" in [{server.section}]' in advice[0]


@pytest.mark.parametrize("label", SERVER_LABELS)
def test_per_partition_shape_has_every_partitions_lag_as_kafka_consumer_groups(
        stack: Stack, wide_group: WideGroup, tmp_path: Path, label: str) -> None:
    server = search_server(stack, label)
    index = f"partitions-{uuid.uuid4().hex[:8]}"
    config = write_config(tmp_path / "partition.toml", stack, server, index, "partition",
                          wide_group.group, free_port())
    exporter = ExporterProcess("--config", str(config))

    def documents_stored() -> int:
        if not exists(server.url, index):
            return 0
        request(f"{server.url}/{index}/_refresh", "POST")
        return int(request(f"{server.url}/{index}/_count")["count"])

    wait_for(lambda: documents_stored() >= 2 * PARTITIONS, 60, "two ticks' documents",
             exporter=exporter)
    code, _ = exporter.stop(signal.SIGTERM)
    assert code == 0, exporter.stderr
    assert "document_shape" not in exporter.stderr
    by_tick: dict[str, dict[int, int]] = defaultdict(dict)
    for document in search(server.url, index, size=10_000):
        kafka = document["kafka"]
        assert (document["cluster"], kafka["consumergroup"]["id"], kafka["topic"]["name"]) == (
            "source", wide_group.group, wide_group.topic)
        by_tick[document["@timestamp"]][kafka["partition"]["id"]] = kafka["consumergroup"][
            "consumer_lag"]
    (mapping,) = request(f"{server.url}/{index}/_mapping").values()  # from the template
    kafka_fields = mapping["mappings"]["properties"]["kafka"]["properties"]
    assert kafka_fields["consumergroup"]["properties"]["consumer_lag"] == {"type": "long"}
    assert kafka_fields["topic"]["properties"]["name"] == {"type": "keyword"}
    complete = [lags for lags in by_tick.values() if len(lags) == PARTITIONS]
    assert len(complete) >= 2
    for lags in complete:
        assert lags == wide_group.lags
