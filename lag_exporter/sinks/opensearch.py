"""The OpenSearch sink: the same documents, ids, mapping and index template as the Elasticsearch
sink (bulk_index.py), through opensearch-py, which OpenSearch accepts and the elasticsearch
client refuses (it checks the product header).

opensearch-py is an optional extra (`pip install 'lag-exporter[opensearch]'`), imported when
the sink is built.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from lag_exporter.config import ElasticsearchSettings
from lag_exporter.errors import ConfigError, LagExporterError, SinkError, SinkUnavailable
from lag_exporter.sinks.bulk_index import AlreadyExists, BulkIndexSink, ndjson
from lag_exporter.sinks.elasticsearch import tls_refused

if TYPE_CHECKING:
    from opensearchpy import OpenSearch
    from opensearchpy.exceptions import TransportError


def _client_module() -> Any:
    try:
        import opensearchpy
    except ImportError as error:
        raise ConfigError("the OpenSearch sink needs opensearch-py: "
                          "pip install 'lag-exporter[opensearch]'") from error
    return opensearchpy


class OpenSearchServer:
    product = "OpenSearch"

    def __init__(self, settings: ElasticsearchSettings) -> None:
        if settings.api_key:
            raise ConfigError("OpenSearch takes username and password, not an Elasticsearch "
                              "API key: leave api_key out of [opensearch]")
        opensearchpy = _client_module()
        # The client logs every request at INFO and every failed one at WARNING with a
        # traceback; the outbox's own line says what failed, once.
        logging.getLogger("opensearch").setLevel(logging.ERROR)
        self.settings = settings
        self.exceptions = opensearchpy.exceptions
        tls: dict[str, Any] = {"ca_certs": settings.ca_file} if settings.ca_file else {}
        self.client: OpenSearch = opensearchpy.OpenSearch(
            list(settings.urls),
            **tls,
            verify_certs=True,
            http_auth=(settings.username, settings.password or "")
            if settings.username else None,
            timeout=settings.timeout_s,
            max_retries=0,  # the outbox owns retries, in order, without blocking sampling
            retry_on_timeout=False,
            dead_timeout=5,  # notice a restarted node within seconds, not 60 s
        )

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """The client's exceptions as the outbox reads them (retry or stop), in one line."""
        exceptions = self.exceptions
        try:
            yield
        except exceptions.SSLError as error:
            raise tls_refused(self.product, self.settings.urls, str(error.info)) from error
        except exceptions.ConnectionError as error:  # also timeouts: status_code 'N/A'
            raise SinkUnavailable(f"OpenSearch unreachable at {', '.join(self.settings.urls)}: "
                                  f"{type(error).__name__}") from error
        except exceptions.TransportError as error:
            raise self._api_error(what, error) from error

    def _api_error(self, what: str, error: TransportError) -> LagExporterError:
        status, text = error.status_code, str(error)
        if status == 400 and "resource_already_exists" in text:
            return AlreadyExists(text)
        if status in (401, 403):
            return SinkError(f"OpenSearch refused the credentials ({status})")
        if status == 400 and "invalid_index_name" in text:
            return ConfigError(f"invalid index name '{self.settings.index}': {error.error}")
        if isinstance(status, int) and status >= 500:
            return SinkUnavailable(f"OpenSearch{what}: {status} {error.error}")
        return SinkError(f"OpenSearch{what}: {status} {error.error}")

    def _call(self, what: str, request: Callable[[], Any]) -> Any:
        with self._errors(what):
            return request()

    def exists(self, index: str) -> bool:
        return bool(self._call("", lambda: self.client.indices.exists(index=index)))

    def mapped_properties(self, index: str) -> dict[str, dict[str, Any]]:
        answer = self._call("", lambda: self.client.indices.get_mapping(index=index))
        return {name: body.get("mappings", {}).get("properties", {})
                for name, body in answer.items()}

    def create_index(self, index: str, mappings: dict[str, Any]) -> None:
        self._call("", lambda: self.client.indices.create(index=index,
                                                          body={"mappings": mappings}))

    def has_data_streams(self) -> bool:
        try:
            self._call("", lambda: self.client.indices.get_data_stream())
        except SinkUnavailable:
            raise
        except LagExporterError as error:
            if "refused the credentials (401)" in str(error):
                raise
            return False
        return True

    def put_index_template(self, name: str, body: dict[str, Any]) -> None:
        self._call("", lambda: self.client.indices.put_index_template(name=name, body=body))

    def create_data_stream(self, name: str) -> None:
        self._call("", lambda: self.client.indices.create_data_stream(name=name))

    def bulk(self, operations: list[dict[str, Any]]) -> list[dict[str, Any]]:
        answer = self._call(" bulk", lambda: self.client.bulk(body=ndjson(operations)))
        items: list[dict[str, Any]] = answer.get("items", [])
        return items

    def close(self) -> None:
        self.client.close()


class OpenSearchSink(BulkIndexSink):
    name = "opensearch"

    def __init__(self, settings: ElasticsearchSettings) -> None:
        super().__init__(settings, OpenSearchServer(settings))
