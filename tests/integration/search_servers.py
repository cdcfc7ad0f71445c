"""The stack's search servers (Elasticsearch 8.19, Elasticsearch 9, OpenSearch 2.19) for tests
that run the same checks against each, and a plain-HTTP reader that works with all three (the
elasticsearch client refuses OpenSearch)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from lag_exporter.config import ElasticsearchSettings
from lag_exporter.sinks.bulk_index import BulkIndexSink
from lag_exporter.sinks.elasticsearch import ElasticsearchSink
from lag_exporter.sinks.opensearch import OpenSearchSink
from stack.stackctl import Stack


@dataclass(frozen=True)
class SearchServer:
    label: str
    component: str
    """The stack component to stop and start."""
    url: str
    section: str
    """Its table in the config file: [elasticsearch] or [opensearch]."""

    def sink(self, index: str, document_shape: str = "wide", timeout_s: float = 10.0
             ) -> BulkIndexSink:
        settings = ElasticsearchSettings((self.url,), index=index, timeout_s=timeout_s,
                                         document_shape=document_shape)  # type: ignore[arg-type]
        if self.section == "opensearch":
            return OpenSearchSink(settings)
        return ElasticsearchSink(settings)


SERVER_LABELS = ("elasticsearch-8.19", "elasticsearch-9", "opensearch")


def search_server(stack: Stack, label: str) -> SearchServer:
    if label == "elasticsearch-8.19":
        return SearchServer(label, "elasticsearch", stack.es_url, "elasticsearch")
    if label == "elasticsearch-9":
        return SearchServer(label, "elasticsearch9", stack.es9_url, "elasticsearch")
    return SearchServer(label, "opensearch", stack.opensearch_url, "opensearch")


def request(url: str, method: str = "GET", body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    message = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(message, timeout=30) as answer:
        return json.loads(answer.read() or b"null")


def exists(url: str, index: str) -> bool:
    try:
        request(f"{url}/{index}", "HEAD")
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return False
        raise
    return True


def search(url: str, index: str, query: dict[str, Any] | None = None, size: int = 10_000
           ) -> list[dict[str, Any]]:
    """The matching documents' sources, each with its `_id`, after a refresh."""
    request(f"{url}/{index}/_refresh", "POST")
    answer = request(f"{url}/{index}/_search", "POST",
                     {"size": size, "query": query or {"match_all": {}}})
    return [hit["_source"] | {"_id": hit["_id"]} for hit in answer["hits"]["hits"]]


def version(url: str) -> str:
    """The server's version number (ES integ-test-zip answers 405 on GET /: asks _nodes)."""
    nodes = request(f"{url}/_nodes/_local")["nodes"]
    return str(next(iter(nodes.values()))["version"])
