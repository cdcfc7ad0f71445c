"""The Elasticsearch sink against Elasticsearch 8.19 and 9, and the OpenSearch sink (the same
code, bulk_index.py) against OpenSearch 2.19, each the real node of the stack:
- the index is created from mapping.json (wide) or the shipped index template (per partition);
- a re-sent batch is stored once (op_type=create, the node answers 409 for what it has), and
  that is not a rejection; a document the mapping refuses is one;
- an outage is SinkUnavailable (the outbox keeps the batch) and the retried batch is stored
  once when the node is back;
- refused credentials and an untrusted certificate are one-line SinkErrors: on the nodes with
  security on, 8.19's elasticsearch-auth and 9's elasticsearch9-auth (the OpenSearch
  integ-test-zip has no security plugin).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from elasticsearch import Elasticsearch
from search_servers import SERVER_LABELS, SearchServer, request, search, search_server, version

from lag_exporter.config import ElasticsearchSettings
from lag_exporter.documents import Document, sample_documents
from lag_exporter.errors import SinkError, SinkUnavailable
from lag_exporter.model import GroupLag, PartitionLag, Sample
from lag_exporter.partition_documents import partition_documents
from lag_exporter.sinks import DeliveryReport
from lag_exporter.sinks.bulk_index import BulkIndexSink, load_mapping
from lag_exporter.sinks.elasticsearch import ElasticsearchSink
from stack.stackctl import Stack

pytestmark = pytest.mark.integration

VERSIONS = {"elasticsearch-8.19": "8.19.", "elasticsearch-9": "9.", "opensearch": "2.19."}
AUTH_NODES = {"elasticsearch-8.19": "elasticsearch-auth", "elasticsearch-9": "elasticsearch9-auth"}
"""The stack's Elasticsearch nodes with security on (HTTPS with the stack's CA, basic auth)."""


def sample_at(second: int) -> Sample:
    """One group on two topics."""
    partitions = (PartitionLag("a", 0, 1, 4, 3), PartitionLag("b", 0, 2, 2, 0))
    return Sample(datetime(2026, 1, 1, 0, 0, second, tzinfo=UTC),
                  (GroupLag("c", "g", partitions),))


def documents_at(second: int) -> list[Document]:
    return sample_documents(sample_at(second))


@pytest.fixture(params=SERVER_LABELS)
def server(request: pytest.FixtureRequest, stack: Stack) -> SearchServer:
    return search_server(stack, request.param)


@pytest.fixture
def sink(server: SearchServer, unique_name: str) -> Iterator[BulkIndexSink]:
    index_sink = server.sink(f"sink-{unique_name}")
    try:
        yield index_sink
    finally:
        index_sink.close()


def test_the_server_is_the_version_we_claim_to_test(server: SearchServer) -> None:
    number = version(server.url)
    print(f"{server.label}: {number}")
    assert number.startswith(VERSIONS[server.label])


def test_the_index_is_created_from_mapping_json(server: SearchServer, sink: BulkIndexSink
                                                ) -> None:
    sink.ensure_index()
    (mapping,) = request(f"{server.url}/{sink.settings.index}/_mapping").values()
    properties = mapping["mappings"]["properties"]
    assert properties == load_mapping()["mappings"]["properties"]


def test_a_batch_sent_twice_is_stored_once_and_nothing_is_rejected(
    server: SearchServer, sink: BulkIndexSink
) -> None:
    batch = documents_at(0)
    first = sink.write(batch)
    assert (first.stored, first.already_stored, first.rejected) == (2, 0, ())
    again = sink.write(batch)  # as after a timeout whose request had in fact succeeded
    assert (again.stored, again.already_stored, again.rejected) == (0, 2, ())

    # Half old, half new: only the new document is stored.
    mixed = sink.write([batch[0], documents_at(1)[0]])
    assert (mixed.stored, mixed.already_stored, mixed.rejected) == (1, 1, ())

    stored = search(server.url, sink.settings.index)
    assert sorted(doc["_id"] for doc in stored) == sorted(
        [d.doc_id for d in batch] + [documents_at(1)[0].doc_id])
    for document in batch:  # created once, never overwritten
        answer = request(f"{server.url}/{sink.settings.index}/_doc/{document.doc_id}")
        assert answer["_version"] == 1


def test_a_document_the_mapping_refuses_is_a_rejection_not_a_stored_one(
    sink: BulkIndexSink
) -> None:
    good = documents_at(0)[0]
    bad = Document("bad-lag", {**good.source, "lag_total": "not a number"})
    report = sink.write([good, bad])
    assert (report.stored, report.already_stored) == (1, 0)
    (line,) = report.rejected
    assert line.startswith("400 "), line


def test_per_partition_documents_go_to_the_shipped_template_once(
    server: SearchServer, unique_name: str
) -> None:
    index = f"partitions-{unique_name}"
    sink = server.sink(index, document_shape="partition")
    try:
        batch = partition_documents(sample_at(0))
        assert (sink.write(batch).stored, sink.write(batch).already_stored) == (2, 2)
    finally:
        sink.close()
    restarted = server.sink(index, document_shape="partition")  # finds what the first made
    try:
        assert restarted.write(batch).already_stored == 2
        wide = server.sink(index, document_shape="wide")
        with pytest.raises(SinkError, match="holds the per-partition document shape"):
            wide.ensure_index()
        wide.close()
    finally:
        restarted.close()
    template = request(f"{server.url}/_index_template/lag-exporter-{index}")
    (body,) = template["index_templates"]
    assert body["index_template"]["index_patterns"] == [index]
    concrete = list(request(f"{server.url}/{index}"))
    if server.section == "opensearch":  # OpenSearch has data streams: one backing index
        assert [name.startswith(f".ds-{index}-") for name in concrete] == [True]
    else:  # the integ-test-zips lack the data-streams module: a plain index
        assert concrete == [index]
    stored = search(server.url, index)
    assert sorted(d["_id"] for d in stored) == sorted(d.doc_id for d in batch)
    assert {d["kafka"]["topic"]["name"]: d["kafka"]["consumergroup"]["consumer_lag"]
            for d in stored} == {"a": 3, "b": 0}


def write_when_back(sink: BulkIndexSink, batch: list[Document]) -> DeliveryReport:
    """Retry as the outbox does until the node answers (it was just started)."""
    for _ in range(60):
        try:
            return sink.write(batch)
        except SinkUnavailable:
            time.sleep(0.5)
    raise AssertionError("the node did not take the batch within 30 s of being ready")


def test_outage_is_unavailable_and_the_retried_batch_is_stored_once(
    stack: Stack, server: SearchServer, unique_name: str
) -> None:
    sink = server.sink(f"outage-{unique_name}", timeout_s=3)
    try:
        assert sink.write(documents_at(0)).stored == 2
        stack.stop(server.component)
        try:
            with pytest.raises(SinkUnavailable):
                sink.write(documents_at(1))  # the outbox keeps the batch and retries it
        finally:
            stack.start(server.component)  # returns once the node answers
        resumed = write_when_back(sink, documents_at(1))
        assert (resumed.stored, resumed.already_stored, resumed.rejected) == (2, 0, ())
        again = sink.write(documents_at(0) + documents_at(1))  # a batch retried twice
        assert (again.stored, again.already_stored) == (0, 4)
    finally:
        sink.close()
    stored = search(server.url, f"outage-{unique_name}")
    assert len(stored) == len({d["_id"] for d in stored}) == 4


def auth_url(stack: Stack, label: str) -> str:
    return stack.es_auth_url if AUTH_NODES[label] == "elasticsearch-auth" else stack.es9_auth_url


@pytest.mark.parametrize("label", AUTH_NODES)
def test_refused_credentials_are_one_line_and_the_right_ones_write(
    stack: Stack, unique_name: str, label: str
) -> None:
    """On each node with security on (basic auth over HTTPS with the stack's CA)."""
    url = auth_url(stack, label)
    client = Elasticsearch(url, ca_certs=stack.es_auth_ca_file,
                           basic_auth=(stack.es_auth_username, stack.es_auth_password))
    try:
        (node,) = client.nodes.info(node_id="_local")["nodes"].values()
    finally:
        client.close()
    assert node["version"].startswith(VERSIONS[label])

    def auth_sink(password: str, ca_file: str | None) -> ElasticsearchSink:
        return ElasticsearchSink(ElasticsearchSettings(
            (url,), index=f"auth-{unique_name}", username=stack.es_auth_username,
            password=password, ca_file=ca_file))

    wrong = auth_sink("not-the-password", stack.es_auth_ca_file)
    with pytest.raises(SinkError) as refused:
        wrong.ensure_index()
    wrong.close()
    assert not isinstance(refused.value, SinkUnavailable)  # waiting will not help: stop
    assert str(refused.value) == "Elasticsearch refused the credentials (401)"

    untrusted = auth_sink(stack.es_auth_password, None)
    with pytest.raises(SinkError) as tls_refused:
        untrusted.ensure_index()
    untrusted.close()
    assert not isinstance(tls_refused.value, SinkUnavailable)
    assert "TLS refused the server's certificate (" in str(tls_refused.value)
    assert "\n" not in str(tls_refused.value)

    right = auth_sink(stack.es_auth_password, stack.es_auth_ca_file)
    try:
        assert right.write(documents_at(0)).stored == 2
    finally:
        right.close()
