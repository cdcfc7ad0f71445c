"""The spool through the real CLI and Elasticsearch: what a killed exporter left is delivered,
in order and once, by the next one."""

from __future__ import annotations

import signal
from collections import Counter
from pathlib import Path

import pytest
from elasticsearch import NotFoundError
from helpers import (
    ExporterProcess,
    commit,
    create_topic,
    free_port,
    produce,
    search_all,
    wait_for,
)

from lag_exporter.outbox import read_spool
from stack.stackctl import Stack

pytestmark = pytest.mark.integration


@pytest.fixture
def group(stack: Stack, unique_name: str) -> str:
    topic, group = f"spool.{unique_name}", f"spool-{unique_name}"
    create_topic(stack.source_bootstrap, topic, 2)
    produce(stack.source_bootstrap, topic, {0: 5, 1: 5})
    commit(stack.source_bootstrap, group, {(topic, 0): 2, (topic, 1): 3})
    return group


def stored_ids(es_url: str, index: str) -> Counter[str]:
    try:
        return Counter(doc["_id"] for doc in search_all(es_url, index))
    except NotFoundError:
        return Counter()


def test_a_killed_exporters_spool_is_delivered_in_order_and_once_after_a_restart(
    stack: Stack, group: str, unique_name: str, tmp_path: Path
) -> None:
    index = f"spool-{unique_name}"
    common = ("--bootstrap-server", stack.source_bootstrap, "--group", group, "--es-index", index,
              "--interval", "1", "--spool-dir", str(tmp_path))
    # Elasticsearch unreachable (nothing listens there): every sample waits in the spool.
    first = ExporterProcess(*common, "--es-url", f"http://127.0.0.1:{free_port()}")
    wait_for(lambda: len(read_spool(tmp_path)) >= 5, 60, "5 samples in the spool",
             exporter=first)
    first.kill()  # SIGKILL: no shutdown code runs
    spooled = read_spool(tmp_path)
    assert [b.sequence for b in spooled] == sorted(b.sequence for b in spooled)
    stamps = [b.documents[0].source["@timestamp"] for b in spooled]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    spooled_ids = {d.doc_id for b in spooled for d in b.documents}

    second = ExporterProcess(*common, "--es-url", stack.es_url)
    wait_for(lambda: spooled_ids <= set(stored_ids(stack.es_url, index)), 60,
             "the spooled samples in Elasticsearch", exporter=second)
    code, _ = second.stop(signal.SIGTERM)
    assert code == 0, second.stderr
    assert f"restored {len(spooled)} undelivered sample(s)" in second.stderr
    assert set(stored_ids(stack.es_url, index).values()) == {1}  # none twice
    assert read_spool(tmp_path) == []  # delivered, or flushed at SIGTERM
    assert not (tmp_path / "quarantine").exists()
    assert "Traceback" not in second.stderr
