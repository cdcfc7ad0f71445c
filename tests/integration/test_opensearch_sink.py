"""OpenSearch 2.19 through the real `lag-exporter watch` and an [opensearch] config table: an
outage of the node loses and duplicates nothing (the outbox keeps the samples, the retried
batches are bulk `create`s). The sink-level checks (mapping, template, a batch stored once,
outage and resume) run against OpenSearch in test_elasticsearch_sink.py. Refused credentials
cannot be tested here: the OpenSearch integ-test-zip has no security plugin."""

from __future__ import annotations

import itertools
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import (
    ExporterProcess,
    commit,
    create_topic,
    doc_time,
    free_port,
    metric_values,
    produce,
    wait_for,
)
from search_servers import exists, request, search

from lag_exporter.config import ElasticsearchSettings
from lag_exporter.errors import SinkError, SinkUnavailable
from lag_exporter.sinks.elasticsearch import ElasticsearchSink
from lag_exporter.sinks.opensearch import OpenSearchSink
from stack.stackctl import Stack

pytestmark = pytest.mark.integration


@pytest.fixture
def restart_opensearch(stack: Stack) -> Iterator[None]:
    """For tests that stop OpenSearch: it runs again afterwards, even if the test failed."""
    yield
    stack.start("opensearch")


def count(url: str, index: str) -> int:
    if not exists(url, index):
        return 0
    request(f"{url}/{index}/_refresh", "POST")
    return int(request(f"{url}/{index}/_count")["count"])


def test_watch_into_opensearch_through_an_outage_loses_and_duplicates_nothing(
    stack: Stack, unique_name: str, tmp_path: Path, restart_opensearch: None
) -> None:
    topic, group, index = f"os.{unique_name}", f"os-{unique_name}", f"os-{unique_name}"
    create_topic(stack.source_bootstrap, topic, 2)
    produce(stack.source_bootstrap, topic, {0: 5, 1: 5})
    commit(stack.source_bootstrap, group, {(topic, 0): 2, (topic, 1): 3})
    port = free_port()
    config = tmp_path / "opensearch.toml"
    config.write_text(f"""interval = 1
spool_dir = "{tmp_path / 'spool'}"
http_host = "127.0.0.1"
http_port = {port}

[opensearch]
urls = ["{stack.opensearch_url}"]
index = "{index}"

[[cluster]]
name = "source"
bootstrap_servers = "{stack.source_bootstrap}"
groups = ["{group}"]
""")
    exporter = ExporterProcess("--config", str(config))
    wait_for(lambda: count(stack.opensearch_url, index) >= 3, 30, "3 documents",
             exporter=exporter)
    stack.stop("opensearch")
    wait_for(lambda: sum(metric_values(port, "lag_exporter_outbox_queued")) >= 5, 30,
             "5 samples queued while OpenSearch is down", exporter=exporter)
    stack.start("opensearch")  # returns once the node answers again
    wait_for(lambda: sum(metric_values(port, "lag_exporter_outbox_queued")) == 0, 30,
             "the queue delivered", exporter=exporter)
    code, _ = exporter.stop(signal.SIGTERM)
    assert code == 0, exporter.stderr
    samples = exporter.samples_taken()
    documents = search(stack.opensearch_url, index)
    assert len(documents) == samples  # one topic: one document per tick, none lost
    assert len({doc["_id"] for doc in documents}) == samples
    stamps = sorted(doc_time(doc) for doc in documents)
    assert len(set(stamps)) == samples
    assert max(b - a for a, b in itertools.pairwise(stamps)) < 1.5  # no gap
    assert {doc["p0"] for doc in documents} == {3} and {doc["p1"] for doc in documents} == {2}
    assert "Traceback" not in exporter.stderr, exporter.stderr
    assert exporter.stderr.count("opensearch: delivery failing") == 1, exporter.stderr
    assert exporter.stderr.count("opensearch: delivery recovered") == 1, exporter.stderr


def test_the_elasticsearch_sink_pointed_at_opensearch_says_to_use_opensearch(
    stack: Stack, unique_name: str
) -> None:
    sink = ElasticsearchSink(ElasticsearchSettings((stack.opensearch_url,),
                                                   index=f"wrong-{unique_name}"))
    try:
        with pytest.raises(SinkError) as refused:
            sink.ensure_index()
    finally:
        sink.close()
    assert not isinstance(refused.value, SinkUnavailable)  # waiting will not help: stop
    assert str(refused.value) == (
        f"{stack.opensearch_url} is not Elasticsearch 8 or 9 (406 to the Elasticsearch client); "
        "for OpenSearch write an [opensearch] table instead of [elasticsearch]")


def test_refused_credentials_and_an_untrusted_certificate_are_one_line_each(
    stack: Stack, unique_name: str
) -> None:
    """The OpenSearch sink's own error paths (opensearch-py's exceptions), against the stack's
    only node with HTTPS and basic auth: elasticsearch-auth (the OpenSearch integ-test-zip has
    no security plugin). A 401 and a TLS refusal read the same from either server."""
    def sink(password: str, ca_file: str | None) -> OpenSearchSink:
        return OpenSearchSink(ElasticsearchSettings(
            (stack.es_auth_url,), index=f"auth-{unique_name}", username=stack.es_auth_username,
            password=password, ca_file=ca_file, timeout_s=5))

    for password, ca_file, expected in (
            ("not-the-password", stack.es_auth_ca_file,
             "OpenSearch refused the credentials (401)"),
            (stack.es_auth_password, None,
             f"OpenSearch at {stack.es_auth_url}: TLS refused the server's certificate "
             "(self-signed certificate in certificate chain); check ca_file in [opensearch]")):
        refusing = sink(password, ca_file)
        try:
            with pytest.raises(SinkError) as refused:
                refusing.ensure_index()
        finally:
            refusing.close()
        assert not isinstance(refused.value, SinkUnavailable)  # waiting will not help: stop
        assert str(refused.value).startswith(expected) and "\n" not in str(refused.value)
