"""The `consumer_lag` index: created from mapping.json when missing, one bulk request per sample.

Writes use deterministic ids and op_type=create, so a batch retried after a timeout is stored
once: Elasticsearch answers 409 for the documents it already has.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from importlib import resources
from typing import Any

import orjson
from elastic_transport import TlsError
from elasticsearch import ApiError, AuthenticationException, Elasticsearch, TransportError
from elasticsearch.serializer import NdjsonSerializer

from lag_exporter.config import ElasticsearchSettings
from lag_exporter.documents import Document
from lag_exporter.errors import ConfigError, SinkError, SinkUnavailable
from lag_exporter.sinks import DeliveryReport

log = logging.getLogger(__name__)

_TLS_REASON = re.compile(r"certificate verify failed: ([^(]*?)\s*\(_ssl")
"""The reason inside elastic_transport's TlsError message, e.g. "self-signed certificate in
certificate chain" or "Hostname mismatch, certificate is not valid for '127.0.0.1'."."""


def load_mapping() -> dict[str, Any]:
    text = resources.files("lag_exporter").joinpath("mapping.json").read_text()
    mapping: dict[str, Any] = json.loads(text)
    return mapping


EXPECTED_TYPES = {"@timestamp": {"date", "date_nanos"}, "lag_total": {"long"}, "lag_max": {"long"},
                  "partitions_unknown": {"long"}, "lag_seconds_max": {"float"},
                  "status": {"keyword"},
                  "cluster": {"keyword", "text"}, "group": {"keyword", "text"},
                  "topic": {"keyword", "text"}}
NUMERIC_TYPES = {"long", "integer", "short", "byte", "double", "float", "unsigned_long"}


def incompatible_mapping(properties: dict[str, Any]) -> list[str]:
    """Fields whose mapped type would make Elasticsearch reject every document."""
    problems = []
    for name, spec in sorted(properties.items()):
        field_type = spec.get("type", "object")
        if name in EXPECTED_TYPES and field_type not in EXPECTED_TYPES[name] | (
                NUMERIC_TYPES if name.startswith(("lag_", "partitions_")) else set()):
            problems.append(f"'{name}' is {field_type}, expected "
                            f"{'/'.join(sorted(EXPECTED_TYPES[name]))}")
        elif name.startswith("p") and name[1:].isdigit() and field_type not in NUMERIC_TYPES:
            problems.append(f"'{name}' is {field_type}, expected long")
    return problems


def old_mapping_problems(properties: dict[str, Any]) -> list[str]:
    """What an existing index's mapping breaks (the 2022 pipeline's mapping.json, say)."""
    problems = []
    for field_name in ("topic", "group", "cluster"):
        field_type = properties.get(field_name, {}).get("type")
        if field_type not in (None, "keyword"):
            problems.append(f"'{field_name}' is {field_type}, so Kibana cannot aggregate by it")
    narrow = sorted(
        (name for name, spec in properties.items()
         if name.startswith("p") and name[1:].isdigit() and spec.get("type") == "integer"),
        key=lambda name: int(name[1:]),
    )
    if narrow:
        problems.append(
            f"{', '.join(narrow[:3])}{'...' if len(narrow) > 3 else ''} are integer: a lag past "
            "2^31-1 rejects the whole document"
        )
    return problems


def item_error_line(item: dict[str, Any]) -> str:
    error = item.get("error", {})
    if isinstance(error, dict):
        return f"{item.get('status')} {error.get('type')}: {error.get('reason')}"
    return f"{item.get('status')} {error}"


class OrjsonNdjsonSerializer(NdjsonSerializer):
    """Bulk bodies and their answers with orjson: at 10,000 partitions a sample's body is
    ~1 MB, and the standard library's json spent ~20 ms of CPU a second on it (5x orjson)."""

    def json_dumps(self, data: Any) -> bytes:
        return orjson.dumps(data, default=self.default)

    def json_loads(self, data: bytes) -> Any:
        return orjson.loads(data)


class ElasticsearchSink:
    name = "elasticsearch"

    def __init__(self, settings: ElasticsearchSettings) -> None:
        self.settings = settings
        tls: dict[str, Any] = {"ca_certs": settings.ca_file} if settings.ca_file else {}
        self._client = Elasticsearch(
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
        self._index_ready = False

    def ensure_index(self) -> None:
        """Create the index from mapping.json unless it exists; warn once about an old mapping."""
        index = self.settings.index
        try:
            if not self._client.indices.exists(index=index):
                mapping = load_mapping()
                self._client.indices.create(index=index, mappings=mapping["mappings"])
                log.info("created index %s from mapping.json", index)
            else:
                self._warn_about_existing_mapping()
        except ApiError as error:
            if error.meta.status == 400 and "resource_already_exists" in str(error):
                pass  # another exporter created it first
            elif error.meta.status in (401, 403):
                raise SinkError(f"Elasticsearch refused the credentials ({error.meta.status})"
                                ) from error
            elif error.meta.status == 400 and "invalid_index_name" in str(error):
                raise ConfigError(f"invalid index name '{index}': {error.message}") from error
            else:
                raise SinkError(f"Elasticsearch: {error.meta.status} {error.message}") from error
        except TlsError as error:
            raise self._tls_refused(error) from error
        except TransportError as error:
            raise SinkUnavailable(f"Elasticsearch unreachable at {', '.join(self.settings.urls)}: "
                                  f"{type(error).__name__}") from error
        self._index_ready = True

    def _warn_about_existing_mapping(self) -> None:
        answer = self._client.indices.get_mapping(index=self.settings.index)
        for index_name, body in answer.body.items():
            properties = body.get("mappings", {}).get("properties", {})
            broken = incompatible_mapping(properties)
            if broken:
                raise SinkError(f"index {index_name} has an incompatible mapping: {broken[0]}; "
                                "use another --es-index or recreate it from mapping.json")
            for problem in old_mapping_problems(properties):
                log.warning("index %s has an old mapping: %s (recreate it from mapping.json)",
                            index_name, problem)

    def write(self, documents: list[Document]) -> DeliveryReport:
        if not documents:
            return DeliveryReport(stored=0)
        if not self._index_ready:
            self.ensure_index()
        operations: list[dict[str, Any]] = []
        for document in documents:
            operations.append({"create": {"_index": self.settings.index, "_id": document.doc_id}})
            operations.append(document.source)
        try:
            answer = self._client.bulk(operations=operations)
        except AuthenticationException as error:
            raise SinkError("Elasticsearch refused the credentials (401)") from error
        except ApiError as error:
            raise SinkError(f"Elasticsearch bulk: {error.meta.status} {error.message}") from error
        except TlsError as error:
            raise self._tls_refused(error) from error
        except TransportError as error:
            raise SinkUnavailable(f"Elasticsearch unreachable: {type(error).__name__}") from error
        return self._report(answer.body.get("items", []))

    def _tls_refused(self, error: TlsError) -> SinkError:
        """A certificate that is not trusted does not become trusted by waiting: a SinkError
        (stop), not SinkUnavailable (retry), naming the reason TLS gave."""
        reason = _TLS_REASON.search(str(error.message))
        return SinkError(
            f"Elasticsearch at {', '.join(self.settings.urls)}: TLS refused the server's "
            f"certificate ({reason.group(1) if reason else error.message}); check --es-ca-file "
            "/ ca_file: the CA there must have signed it")

    def _report(self, items: Sequence[dict[str, Any]]) -> DeliveryReport:
        stored = already = 0
        rejected: list[str] = []
        for entry in items:
            item = entry.get("create", {})
            status = item.get("status", 0)
            if status in (200, 201):
                stored += 1
            elif status == 409:
                already += 1
            elif status == 429 or status >= 500:
                raise SinkError(f"Elasticsearch is overloaded: {item_error_line(item)}")
            else:
                rejected.append(item_error_line(item))
        return DeliveryReport(stored=stored, already_stored=already, rejected=tuple(rejected))

    def close(self) -> None:
        self._client.close()
