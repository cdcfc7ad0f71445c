"""What the Elasticsearch and OpenSearch sinks share (sinks/bulk_index.py), over a fake of the
sinks' own small IndexServer interface: no server needed."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import pytest

from lag_exporter.config import ElasticsearchSettings
from lag_exporter.documents import Document
from lag_exporter.errors import ConfigError, SinkError, SinkUnavailable
from lag_exporter.sinks.bulk_index import (
    AlreadyExists,
    BulkIndexSink,
    field_limit_advice,
    load_mapping,
    ndjson,
    partition_template,
    read_bulk_answer,
    wrong_shape,
)

ROOT = Path(__file__).resolve().parents[2]
LIMIT_REASON = ("400 document_parsing_exception: [1:9000] failed to parse: Limit of total "
                "fields [1000] has been exceeded while adding new fields [3]")


class FakeServer:
    """Records what the sink asks; answers as configured."""

    product = "Elasticsearch"

    def __init__(self, data_streams: bool = True, existing: dict[str, Any] | None = None,
                 answer: list[dict[str, Any]] | None = None) -> None:
        self.data_streams = data_streams
        self.existing = existing
        self.answer = answer or []
        self.calls: list[tuple[str, Any]] = []

    def exists(self, index: str) -> bool:
        return self.existing is not None

    def mapped_properties(self, index: str) -> dict[str, dict[str, Any]]:
        return {index: self.existing or {}}

    def create_index(self, index: str, mappings: dict[str, Any]) -> None:
        self.calls.append(("create_index", mappings))

    def has_data_streams(self) -> bool:
        return self.data_streams

    def put_index_template(self, name: str, body: dict[str, Any]) -> None:
        self.calls.append(("put_index_template", (name, body)))

    def create_data_stream(self, name: str) -> None:
        self.calls.append(("create_data_stream", name))
        raise AlreadyExists("resource_already_exists")  # another exporter was first

    def bulk(self, operations: list[dict[str, Any]]) -> list[dict[str, Any]]:
        self.calls.append(("bulk", operations))
        return self.answer

    def close(self) -> None:
        self.calls.append(("close", None))


def settings(shape: str = "wide") -> ElasticsearchSettings:
    return ElasticsearchSettings(("http://127.0.0.1:1",), index="lag", document_shape=shape)  # type: ignore[arg-type]


def wide_document(partitions: int) -> Document:
    return Document("id1", {"@timestamp": "2026-01-01T00:00:00.000Z", "cluster": "c",
                            "group": "g", "topic": "wide",
                            **{f"p{n}": 0 for n in range(partitions)}})


def test_the_two_mapping_json_files_are_identical() -> None:
    assert (ROOT / "mapping.json").read_text() == (ROOT / "lag_exporter/mapping.json").read_text()
    assert load_mapping() == json.loads((ROOT / "mapping.json").read_text())


def test_partition_template_is_a_data_stream_only_where_the_server_has_them() -> None:
    with_stream = partition_template("lag_p", data_stream=True)
    plain = partition_template("lag_p", data_stream=False)
    assert with_stream["index_patterns"] == plain["index_patterns"] == ["lag_p"]
    assert with_stream["data_stream"] == {} and "data_stream" not in plain
    consumer_group = plain["template"]["mappings"]["properties"]["kafka"]["properties"][
        "consumergroup"]["properties"]
    assert {name: spec["type"] for name, spec in consumer_group.items()} == {
        "id": "keyword", "consumer_lag": "long", "offset": "long",
        "consumer_lag_seconds": "float", "consumer_lag_unknown": "boolean", "status": "keyword"}


def test_bulk_answer_counts_stored_already_there_and_rejected_and_raises_on_overload() -> None:
    items: list[dict[str, Any]] = [{"create": {"status": 201}}, {"create": {"status": 409}},
             {"create": {"status": 400, "error": {"type": "x", "reason": "y"}}}]
    report = read_bulk_answer("OpenSearch", items)
    assert (report.stored, report.already_stored, report.rejected) == (1, 1, ("400 x: y",))
    with pytest.raises(SinkError, match=r"^OpenSearch is overloaded: 429"):
        read_bulk_answer("OpenSearch", [{"create": {"status": 429, "error": "busy"}}])


@pytest.mark.parametrize("error", [
    {"type": "cluster_block_exception",
     "reason": "index [lag] blocked by: [FORBIDDEN/8/index write (api)];"},
    {"type": "security_exception", "reason": "action [indices:data/write/bulk[s]] is unauthorized"},
])
def test_a_write_block_or_a_missing_privilege_is_retried_not_a_rejection(
        error: dict[str, str]) -> None:
    """index.blocks.write (or read_only) answers each item 403 cluster_block_exception, a role
    without the index privilege 403 security_exception: the documents are fine and must wait
    for the index to take them, not be dropped."""
    refused = {"create": {"status": 403, "error": error}}
    with pytest.raises(SinkError) as caught:
        read_bulk_answer("Elasticsearch", [{"create": {"status": 201}}, refused])
    assert str(caught.value) == ("Elasticsearch refuses writes to the index: 403 "
                                 f"{error['type']}: {error['reason']}")
    mapping_conflict = {"create": {"status": 400, "error": {
        "type": "document_parsing_exception", "reason": "failed to parse field [p0]"}}}
    assert read_bulk_answer("Elasticsearch", [mapping_conflict]).rejected == (
        "400 document_parsing_exception: failed to parse field [p0]",)


def test_an_index_deleted_where_the_server_creates_none_is_created_again_then_written() -> None:
    """action.auto_create_index false and the index deleted: each document answers 404
    index_not_found_exception. The batch fails (and is sent again by the delivery thread); the
    next write creates the index from mapping.json first."""
    missing = {"create": {"status": 404, "error": {
        "type": "index_not_found_exception", "reason": "no such index [lag]"}}}
    server = FakeServer(existing={}, answer=[missing])
    sink = BulkIndexSink(settings(), server)
    with pytest.raises(SinkError, match=r"^Elasticsearch has no index to write to: 404 "
                                        r"index_not_found_exception: no such index \[lag\]$"):
        sink.write([wide_document(1)])
    server.existing, server.answer = None, [{"create": {"status": 201}}]
    assert sink.write([wide_document(1)]).stored == 1
    assert [call for call, _ in server.calls] == [
        "put_index_template", "bulk", "put_index_template", "create_index", "bulk"]


def test_ndjson_is_one_line_per_operation_ending_in_a_newline() -> None:
    body = ndjson([{"create": {"_id": "a"}}, {"t": "é", "n": 2**62}])
    assert body.endswith(b"\n") and body.count(b"\n") == 2
    assert [json.loads(line) for line in body.splitlines()] == [
        {"create": {"_id": "a"}}, {"t": "é", "n": 2**62}]


def test_field_limit_advice_names_the_limit_the_topic_and_both_remedies() -> None:
    advice = field_limit_advice("Elasticsearch", "lag", [LIMIT_REASON],
                                [wide_document(3), wide_document(1200)])
    assert advice is not None and "\n" not in advice
    assert "index.mapping.total_fields.limit (1000)" in advice
    assert "topic 'wide' has 1204 fields" in advice
    assert 'document_shape = "partition" in [elasticsearch]' in advice
    assert field_limit_advice("Elasticsearch", "lag", ["400 x: y"], [wide_document(3)]) is None


def test_field_limit_is_logged_once_however_often_it_comes_back(
        caplog: pytest.LogCaptureFixture) -> None:
    rejected = {"create": {"status": 400, "error": {
        "type": "document_parsing_exception",
        "reason": LIMIT_REASON.split(": ", 1)[1]}}}
    sink = BulkIndexSink(settings(), FakeServer(existing={}, answer=[rejected]))
    with caplog.at_level(logging.ERROR):
        for _ in range(5):
            assert len(sink.write([wide_document(1200)]).rejected) == 1
    lines = [r.getMessage() for r in caplog.records if "total_fields" in r.getMessage()]
    assert len(lines) == 1
    caplog.clear()
    partition_sink = BulkIndexSink(settings("partition"), FakeServer(existing={},
                                                                     answer=[rejected]))
    with caplog.at_level(logging.ERROR):
        partition_sink.write([wide_document(1200)])
    assert caplog.records == []  # no advice to switch to the shape it already has


def test_partition_shape_installs_the_template_then_a_data_stream() -> None:
    server = FakeServer(data_streams=True)
    BulkIndexSink(settings("partition"), server).ensure_index()
    (name, body), stream = server.calls[0][1], server.calls[1]
    assert name == "lag-exporter-lag" and "data_stream" in body
    assert stream == ("create_data_stream", "lag")


def test_partition_shape_without_data_streams_is_a_plain_index_with_the_same_mapping() -> None:
    server = FakeServer(data_streams=False)
    BulkIndexSink(settings("partition"), server).ensure_index()
    (_, body) = server.calls[0][1]
    assert "data_stream" not in body
    assert server.calls[1] == ("create_index", body["template"]["mappings"])


def test_wide_shape_creates_the_index_from_mapping_json_and_installs_it_as_template() -> None:
    server = FakeServer()
    BulkIndexSink(settings("wide"), server).ensure_index()
    template = ("lag-exporter-lag", {
        "index_patterns": ["lag"], "priority": 200,
        "_meta": {"managed_by": "lag-exporter", "document_shape": "wide"},
        "template": {"mappings": load_mapping()["mappings"]}})
    assert server.calls == [("put_index_template", template),
                            ("create_index", load_mapping()["mappings"])]
    existing = FakeServer(existing={"group": {"type": "keyword"}})
    BulkIndexSink(settings("wide"), existing).ensure_index()  # installed by an older version
    assert existing.calls == [("put_index_template", template)]


@pytest.mark.parametrize("exists", [True, False])
def test_a_refused_wide_template_is_one_warning_and_the_sink_goes_on(
        exists: bool, caplog: pytest.LogCaptureFixture) -> None:
    server = FakeServer(existing={} if exists else None)

    def refuse(name: str, body: dict[str, Any]) -> None:
        raise SinkError("Elasticsearch refused the credentials (403)")

    server.put_index_template = refuse  # type: ignore[method-assign]
    sink = BulkIndexSink(settings("wide"), server)
    with caplog.at_level(logging.WARNING):
        sink.ensure_index()
    assert [r.getMessage() for r in caplog.records] == [
        "could not install index template lag-exporter-lag (Elasticsearch refused the "
        "credentials (403)): if index lag is deleted while watch runs, the next documents "
        "create it again without the mapping of mapping.json"]
    assert server.calls == ([] if exists else [("create_index", load_mapping()["mappings"])])


def test_an_unreachable_server_while_installing_the_wide_template_is_retried_later() -> None:
    server = FakeServer()

    def unreachable(name: str, body: dict[str, Any]) -> None:
        raise SinkUnavailable("Elasticsearch unreachable at http://x:9200: ConnectionError")

    server.put_index_template = unreachable  # type: ignore[method-assign]
    sink = BulkIndexSink(settings("wide"), server)
    with pytest.raises(SinkUnavailable):
        sink.ensure_index()
    assert server.calls == []


def test_an_index_of_the_other_shape_is_refused_in_one_line() -> None:
    with pytest.raises(SinkError, match=r'^index lag does not fit document_shape = "partition"'):
        BulkIndexSink(settings("partition"),
                      FakeServer(existing={"group": {"type": "keyword"}})).ensure_index()
    with pytest.raises(SinkError, match="per-partition document shape"):
        BulkIndexSink(settings("wide"), FakeServer(existing={"kafka": {}})).ensure_index()
    assert wrong_shape({"kafka": {}}, "partition") is None
    assert wrong_shape({"group": {}}, "wide") is None


def test_bulk_creates_with_the_documents_ids_into_the_index() -> None:
    server = FakeServer(existing={}, answer=[{"create": {"status": 201}}])
    sink = BulkIndexSink(settings(), server)
    sink.write([wide_document(1)])
    assert server.calls[-1] == ("bulk", [{"create": {"_index": "lag", "_id": "id1"}},
                                         wide_document(1).source])


def test_opensearch_sink_without_opensearch_py_is_one_config_line(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from lag_exporter.sinks.opensearch import OpenSearchSink

    monkeypatch.setitem(sys.modules, "opensearchpy", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"pip install 'lag-exporter\[opensearch\]'$"):
        OpenSearchSink(settings())


def test_opensearch_refuses_an_api_key_in_one_line() -> None:
    from lag_exporter.sinks.opensearch import OpenSearchSink

    with pytest.raises(ConfigError, match="not an Elasticsearch API key"):
        OpenSearchSink(ElasticsearchSettings(("http://127.0.0.1:1",), api_key="k"))
