"""The bulk body is written with orjson (pure: no Elasticsearch needed to build the client)."""

import json

from elasticsearch.serializer import NdjsonSerializer

from lag_exporter.config import ElasticsearchSettings
from lag_exporter.sinks.elasticsearch import ElasticsearchSink, OrjsonNdjsonSerializer

BULK = [{"create": {"_index": "consumer_lag", "_id": "abc"}},
        {"@timestamp": "2026-11-26T06:00:00.000Z", "topic": "t-é", "p0": 2**62, "p1": 0,
         "lag_seconds": {"p0": 12.345, "p1": 0.0}, "partition_status": {"p0": "STOP"}}]


def test_the_bulk_body_says_what_the_standard_library_would() -> None:
    fast = OrjsonNdjsonSerializer().dumps(BULK)
    plain = NdjsonSerializer().dumps(BULK)
    assert fast.endswith(b"\n") and fast.count(b"\n") == 2
    assert [json.loads(line) for line in fast.splitlines()] == \
        [json.loads(line) for line in plain.splitlines()] == BULK


def test_the_sink_sends_bulk_bodies_through_orjson() -> None:
    sink = ElasticsearchSink(ElasticsearchSettings(urls=("http://127.0.0.1:1",)))
    serializers = sink._client.transport.serializers
    for mimetype in ("application/x-ndjson", "application/vnd.elasticsearch+x-ndjson"):
        assert isinstance(serializers.get_serializer(mimetype), OrjsonNdjsonSerializer)
