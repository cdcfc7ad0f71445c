"""The Elasticsearch sink against the real node: a re-sent batch is stored once (op_type=create,
the node answers 409 for what it has), and that is not a rejection."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from elasticsearch import Elasticsearch
from helpers import search_all

from lag_exporter.config import ElasticsearchSettings
from lag_exporter.documents import Document, sample_documents
from lag_exporter.model import GroupLag, PartitionLag, Sample
from lag_exporter.sinks.elasticsearch import ElasticsearchSink
from stack.stackctl import Stack

pytestmark = pytest.mark.integration


def documents_at(second: int) -> list[Document]:
    """The documents of one sample: one group on two topics."""
    partitions = (PartitionLag("a", 0, 1, 4, 3), PartitionLag("b", 0, 2, 2, 0))
    sample = Sample(datetime(2026, 1, 1, 0, 0, second, tzinfo=UTC),
                    (GroupLag("c", "g", partitions),))
    return sample_documents(sample)


@pytest.fixture
def sink(stack: Stack, unique_name: str) -> Iterator[ElasticsearchSink]:
    es_sink = ElasticsearchSink(ElasticsearchSettings((stack.es_url,), index=f"sink-{unique_name}"))
    try:
        yield es_sink
    finally:
        es_sink.close()


def test_a_batch_sent_twice_is_stored_once_and_nothing_is_rejected(
    stack: Stack, sink: ElasticsearchSink
) -> None:
    batch = documents_at(0)
    first = sink.write(batch)
    assert (first.stored, first.already_stored, first.rejected) == (2, 0, ())
    again = sink.write(batch)  # as after a timeout whose request had in fact succeeded
    assert (again.stored, again.already_stored, again.rejected) == (0, 2, ())

    # Half old, half new: only the new document is stored.
    mixed = sink.write([batch[0], documents_at(1)[0]])
    assert (mixed.stored, mixed.already_stored, mixed.rejected) == (1, 1, ())

    stored = search_all(stack.es_url, sink.settings.index)
    assert sorted(doc["_id"] for doc in stored) == sorted(
        [d.doc_id for d in batch] + [documents_at(1)[0].doc_id])
    client = Elasticsearch(stack.es_url)
    try:
        for document in batch:  # created once, never overwritten
            assert client.get(index=sink.settings.index, id=document.doc_id)["_version"] == 1
    finally:
        client.close()


def test_a_document_the_mapping_refuses_is_a_rejection_not_a_stored_one(
    sink: ElasticsearchSink
) -> None:
    good = documents_at(0)[0]
    bad = Document("bad-lag", {**good.source, "lag_total": "not a number"})
    report = sink.write([good, bad])
    assert (report.stored, report.already_stored) == (1, 0)
    (line,) = report.rejected
    assert line.startswith("400 "), line
