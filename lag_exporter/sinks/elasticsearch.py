"""The Elasticsearch sink: the elasticsearch 8.19 client (talks to Elasticsearch 8 and 9) behind
bulk_index.py's IndexServer; what to create and how to write is shared with OpenSearch there.

Writes use deterministic ids and op_type=create, so a batch retried after a timeout is stored
once: Elasticsearch answers 409 for the documents it already has.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import orjson
from elastic_transport import TlsError
from elasticsearch import (
    ApiError,
    AuthenticationException,
    Elasticsearch,
    TransportError,
    UnsupportedProductError,
)
from elasticsearch.serializer import NdjsonSerializer

from lag_exporter.config import ElasticsearchSettings
from lag_exporter.errors import ConfigError, LagExporterError, SinkError, SinkUnavailable
from lag_exporter.sinks.bulk_index import (
    TLS_REASON,
    AlreadyExists,
    BulkIndexSink,
    incompatible_mapping,
    load_mapping,
    old_mapping_problems,
)

__all__ = ["ElasticsearchSink", "OrjsonNdjsonSerializer", "incompatible_mapping",
           "load_mapping", "old_mapping_problems"]


class OrjsonNdjsonSerializer(NdjsonSerializer):
    """Bodies and their answers with orjson (bulk answers are ~1 MB at 10,000 partitions)."""

    def json_dumps(self, data: Any) -> bytes:
        return orjson.dumps(data, default=self.default)

    def json_loads(self, data: bytes) -> Any:
        return orjson.loads(data)


def tls_refused(product: str, urls: tuple[str, ...], message: str) -> SinkError:
    """A certificate that is not trusted does not become trusted by waiting: a SinkError
    (stop), not SinkUnavailable (retry), naming the reason TLS gave."""
    reason = TLS_REASON.search(message)
    where = "--es-ca-file / ca_file" if product == "Elasticsearch" else "ca_file in [opensearch]"
    return SinkError(
        f"{product} at {', '.join(urls)}: TLS refused the server's certificate "
        f"({reason.group(1) if reason else message}); check {where}: the CA there must have "
        "signed it")


class ElasticsearchServer:
    product = "Elasticsearch"

    def __init__(self, settings: ElasticsearchSettings) -> None:
        self.settings = settings
        tls: dict[str, Any] = {"ca_certs": settings.ca_file} if settings.ca_file else {}
        self.client = Elasticsearch(
            list(settings.urls),
            **tls,
            basic_auth=(settings.username, settings.password or "")
            if settings.username else None,
            api_key=settings.api_key,
            request_timeout=settings.timeout_s,
            max_retries=0,  # the outbox owns retries, in order, without blocking sampling
            serializers={"application/x-ndjson": OrjsonNdjsonSerializer()},
            retry_on_timeout=False,
            max_dead_node_backoff=5.0,  # notice a restarted node within seconds, not 30 s
        )

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """The client's exceptions as the outbox reads them (retry or stop), in one line."""
        try:
            yield
        except AuthenticationException as error:
            raise SinkError("Elasticsearch refused the credentials (401)") from error
        except ApiError as error:
            raise self._api_error(what, error) from error
        except TlsError as error:
            raise tls_refused(self.product, self.settings.urls, str(error.message)) from error
        except TransportError as error:
            raise SinkUnavailable(f"Elasticsearch unreachable at {', '.join(self.settings.urls)}"
                                  f": {type(error).__name__}") from error

    def _api_error(self, what: str, error: ApiError) -> LagExporterError:
        status, text = error.meta.status, str(error)
        if status == 400 and "resource_already_exists" in text:
            return AlreadyExists(text)
        if status in (401, 403):
            return SinkError(f"Elasticsearch refused the credentials ({status})")
        if status == 400 and "invalid_index_name" in text:
            return ConfigError(f"invalid index name '{self.settings.index}': {error.message}")
        if isinstance(error, UnsupportedProductError) or (
                status == 406 and "compatible-with" in text):
            return SinkError(f"{', '.join(self.settings.urls)} is not Elasticsearch 8 or 9 "
                               f"({status} to the Elasticsearch client); for OpenSearch write "
                               "an [opensearch] table instead of [elasticsearch]")
        if status >= 500:  # e.g. 503 while the node starts: worth waiting for
            return SinkUnavailable(f"Elasticsearch{what}: {status} {error.message}")
        return SinkError(f"Elasticsearch{what}: {status} {error.message}")

    def _call(self, what: str, request: Callable[[], Any]) -> Any:
        with self._errors(what):
            return request()

    def exists(self, index: str) -> bool:
        return bool(self._call("", lambda: self.client.indices.exists(index=index)))

    def mapped_properties(self, index: str) -> dict[str, dict[str, Any]]:
        answer = self._call("", lambda: self.client.indices.get_mapping(index=index))
        return {name: body.get("mappings", {}).get("properties", {})
                for name, body in answer.body.items()}

    def create_index(self, index: str, mappings: dict[str, Any]) -> None:
        self._call("", lambda: self.client.indices.create(index=index, mappings=mappings))

    def has_data_streams(self) -> bool:
        """The integ-test-zip builds lack the data-streams module: there GET /_data_stream
        reads as an index named "_data_stream" (400 invalid_index_name)."""
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
        self._call("", lambda: self.client.indices.put_index_template(name=name, **body))

    def create_data_stream(self, name: str) -> None:
        self._call("", lambda: self.client.indices.create_data_stream(name=name))

    def bulk(self, operations: list[dict[str, Any]]) -> list[dict[str, Any]]:
        answer = self._call(" bulk", lambda: self.client.bulk(operations=operations))
        items: list[dict[str, Any]] = answer.body.get("items", [])
        return items

    def close(self) -> None:
        self.client.close()


class ElasticsearchSink(BulkIndexSink):
    name = "elasticsearch"

    def __init__(self, settings: ElasticsearchSettings) -> None:
        self.es = ElasticsearchServer(settings)
        self._client = self.es.client
        super().__init__(settings, self.es)
