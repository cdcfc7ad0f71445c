"""The Kibana dashboard's heat map query (examples/kibana/consumer-lag.ndjson) run by the stack's
real Elasticsearch on documents the exporter writes, and its Vega-Lite transforms replayed in
Python: one cell per group / topic / partition with the largest lag of each time bucket.
Kibana itself cannot run here; tests/unit/test_kibana_dashboard.py checks the rest offline.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import Elasticsearch, helpers

from lag_exporter.documents import sample_documents
from lag_exporter.model import GroupLag, PartitionLag, Sample
from lag_exporter.sinks.bulk_index import load_mapping
from stack.stackctl import Stack

pytestmark = pytest.mark.integration

NDJSON = Path(__file__).resolve().parents[2] / "examples" / "kibana" / "consumer-lag.ndjson"
START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def heatmap_spec() -> dict[str, Any]:
    for line in NDJSON.read_text().splitlines():
        saved = json.loads(line)
        if saved["type"] == "visualization":
            spec: dict[str, Any] = json.loads(json.loads(saved["attributes"]["visState"])
                                              ["params"]["spec"])
            return spec
    raise AssertionError("no Vega visualization in the file")


def sample(second: int, lags: dict[tuple[str, str], list[int | None]]) -> Sample:
    groups = tuple(
        GroupLag("c1", group, tuple(
            PartitionLag(topic, number, None if lag is None else 100, 100 + (lag or 0), lag)
            for number, lag in enumerate(partition_lags)))
        for (group, topic), partition_lags in lags.items())
    return Sample(taken_at=START + timedelta(seconds=second), groups=groups)


@pytest.fixture
def client(stack: Stack) -> Iterator[Elasticsearch]:
    es = Elasticsearch(stack.es_url)
    try:
        yield es
    finally:
        es.close()


def test_the_heat_map_query_makes_one_cell_per_partition_with_its_largest_lag(
        client: Elasticsearch, unique_name: str) -> None:
    index = f"kibana-{unique_name}"
    client.indices.create(index=index, mappings=load_mapping()["mappings"])
    try:
        samples = [
            sample(0, {("orders", "o"): [5, 0, 12], ("billing", "o"): [1]}),
            sample(1, {("orders", "o"): [9, 0, 3], ("billing", "o"): [None]}),  # no commit: no p0
            sample(2, {("orders", "o"): [2, 0, 11], ("billing", "o"): [4]}),
        ]
        documents = [doc for s in samples for doc in sample_documents(s)]
        helpers.bulk(client, ({"_index": index, "_id": d.doc_id, "_source": d.source}
                              for d in documents), refresh="wait_for")
        spec = heatmap_spec()
        body = spec["data"]["url"]["body"]
        # What Kibana's Vega parser does for a one-minute time range: %context% and %timefield%
        # become a range query, {"%autointerval%": 60} a fixed_interval of 60 s / 60.
        query = {"bool": {"must": [{"range": {"@timestamp": {
            "gte": START.isoformat(), "lte": (START + timedelta(minutes=1)).isoformat(),
            "format": "strict_date_optional_time"}}}]}}
        histogram = body["aggs"]["groups"]["aggs"]["topics"]["aggs"]["time"]["date_histogram"]
        assert histogram.pop("interval") == {"%autointerval%": 60}
        histogram["fixed_interval"] = "1s"
        answer = client.search(index=index, query=query, **body)
        # The spec's transforms: flatten topics, then time buckets, fold p<N>, drop nulls.
        transform = spec["transform"]
        assert [next(iter(step)) for step in transform] == [
            "flatten", "flatten", "fold", "filter", "calculate", "calculate"]
        fold = transform[2]["fold"]
        cells: dict[tuple[str, float], int] = {}
        for group in answer["aggregations"]["groups"]["buckets"]:
            for topic in group["topics"]["buckets"]:
                for bucket in topic["time"]["buckets"]:
                    for field in fold:
                        name = field.removeprefix("bucket.").removesuffix(".value")
                        lag = bucket[name]["value"]
                        if lag is not None:
                            cell = f"{group['key']} / {topic['key']} / {name}"
                            cells[(cell, bucket["key"] / 1000)] = int(lag)
        at = [(START + timedelta(seconds=s)).timestamp() for s in range(3)]
        assert cells == {
            ("orders / o / p0", at[0]): 5, ("orders / o / p1", at[0]): 0,
            ("orders / o / p2", at[0]): 12, ("billing / o / p0", at[0]): 1,
            ("orders / o / p0", at[1]): 9, ("orders / o / p1", at[1]): 0,
            ("orders / o / p2", at[1]): 3,  # billing has no p0 then: no cell, not a zero
            ("orders / o / p0", at[2]): 2, ("orders / o / p1", at[2]): 0,
            ("orders / o / p2", at[2]): 11, ("billing / o / p0", at[2]): 4,
        }
        # The worst group first (the terms' order), as the heat map lists them.
        assert [g["key"] for g in answer["aggregations"]["groups"]["buckets"]] == [
            "orders", "billing"]
    finally:
        client.indices.delete(index=index)
