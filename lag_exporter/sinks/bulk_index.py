"""What the Elasticsearch and OpenSearch sinks share: the mapping and the index template, the
steps of creating the index, the bulk body and the reading of its answer.

Each sink wraps its own client in an `IndexServer` (a few calls, every client error already
turned into a lag-exporter error), so the rules live here once:
- "wide" documents go to `settings.index`, created from mapping.json, which is also installed
  as its index template (an index deleted while `watch` runs comes back with the mapping);
- "partition" documents go to an index template (partition_template.json) whose pattern is
  `settings.index`: a data stream where the server has them, else a plain index with the same
  mapping (the integ-test-zip builds of Elasticsearch lack the data-streams module);
- writes are bulk `create` with the documents' deterministic ids, so a retried batch is a no-op.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from importlib import resources
from typing import Any, Protocol

import orjson

from lag_exporter.config import ElasticsearchSettings
from lag_exporter.documents import Document
from lag_exporter.errors import SinkError, SinkUnavailable
from lag_exporter.sinks import DeliveryReport

log = logging.getLogger(__name__)

TLS_REASON = re.compile(r"certificate verify failed: ([^(]*?)\s*\(_ssl")
"""The reason inside a client's TLS error message, e.g. "self-signed certificate in
certificate chain" or "Hostname mismatch, certificate is not valid for '127.0.0.1'."."""

FIELD_LIMIT = re.compile(r"Limit of total fields \[(\d+)\]", re.IGNORECASE)
"""How Elasticsearch and OpenSearch say a document would add fields past
index.mapping.total_fields.limit (1,000 by default)."""


class AlreadyExists(SinkError):
    """The index, data stream or template is there already (another exporter made it first)."""


class IndexMissing(SinkError):
    """The index is gone (deleted while `watch` runs) and the server creates none on its own
    (action.auto_create_index false): it is to be created again, then the batch sent again."""


def _package_json(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(
        resources.files("lag_exporter").joinpath(name).read_text())
    return loaded


def load_mapping() -> dict[str, Any]:
    """mapping.json: the wide `consumer_lag` shape."""
    return _package_json("mapping.json")


def partition_template(index: str, data_stream: bool) -> dict[str, Any]:
    """partition_template.json for `index`: a data stream's template, or a plain index's."""
    template = _package_json("partition_template.json")
    template["index_patterns"] = [index]
    if not data_stream:
        del template["data_stream"]
    return template


def wide_template(index: str) -> dict[str, Any]:
    """mapping.json as the index template of `index`: an index deleted while `watch` runs (by
    hand, by a clean-up job) is created again by the next bulk request, and without a template
    it would get dynamic types (`topic` as text: the dashboards' terms aggregations fail)."""
    return {"index_patterns": [index], "priority": 200,
            "_meta": {"managed_by": "lag-exporter", "document_shape": "wide"},
            "template": {"mappings": load_mapping()["mappings"]}}


def template_name(index: str) -> str:
    return f"lag-exporter-{index}"


EXPECTED_TYPES = {"@timestamp": {"date", "date_nanos"}, "lag_total": {"long"}, "lag_max": {"long"},
                  "partitions_unknown": {"long"}, "lag_seconds_max": {"float"},
                  "status": {"keyword"},
                  "cluster": {"keyword", "text"}, "group": {"keyword", "text"},
                  "topic": {"keyword", "text"}}
NUMERIC_TYPES = {"long", "integer", "short", "byte", "double", "float", "unsigned_long"}


def incompatible_mapping(properties: dict[str, Any]) -> list[str]:
    """Fields whose mapped type would make the server reject every wide document."""
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


def wrong_shape(properties: dict[str, Any], document_shape: str) -> str | None:
    """Why an existing index cannot take this shape's documents (it holds the other shape)."""
    wide = any(name in properties for name in ("group", "lag_total", "lag_max", "p0"))
    if document_shape == "partition" and wide:
        return "it holds the wide document shape (group, p0..pN)"
    if document_shape == "wide" and "kafka" in properties:
        return "it holds the per-partition document shape (kafka.*)"
    return None


def item_error_line(item: dict[str, Any]) -> str:
    error = item.get("error", {})
    if isinstance(error, dict):
        return f"{item.get('status')} {error.get('type')}: {error.get('reason')}"
    return f"{item.get('status')} {error}"


def bulk_operations(index: str, documents: Sequence[Document]) -> list[dict[str, Any]]:
    """`create` with the document's id: the server answers 409 for a document it already has."""
    operations: list[dict[str, Any]] = []
    for document in documents:
        operations.append({"create": {"_index": index, "_id": document.doc_id}})
        operations.append(document.source)
    return operations


def ndjson(operations: Sequence[dict[str, Any]]) -> bytes:
    """With orjson: at 10,000 partitions a sample's bulk body is ~1 MB, and the standard
    library's json spent ~20 ms of CPU a second on it (5x orjson)."""
    return b"".join(orjson.dumps(line) + b"\n" for line in operations)


def read_bulk_answer(product: str, items: Sequence[dict[str, Any]]) -> DeliveryReport:
    """Stored, already there (409: a retried batch) or rejected for good (the documents: a
    mapping conflict); overload, refused writes and a missing index raise (the batch is sent
    again later)."""
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
            raise SinkError(f"{product} is overloaded: {item_error_line(item)}")
        elif status == 404:  # index_not_found_exception
            raise IndexMissing(f"{product} has no index to write to: {item_error_line(item)}")
        elif status in (401, 403):
            # A write block (index.blocks.write or read_only, set by an operator for a while)
            # or a missing privilege: nothing is wrong with the documents, so they wait for the
            # index to take them again rather than being dropped.
            raise SinkError(f"{product} refuses writes to the index: {item_error_line(item)}")
        else:
            rejected.append(item_error_line(item))
    return DeliveryReport(stored=stored, already_stored=already, rejected=tuple(rejected))


def field_limit_advice(product: str, index: str, rejected: Sequence[str],
                       documents: Sequence[Document]) -> str | None:
    """One line saying what to do when the wide shape hits the total-fields limit, or None."""
    limit = next((m.group(1) for line in rejected if (m := FIELD_LIMIT.search(line))), None)
    if limit is None:
        return None
    widest = max(documents, key=len_of_source)
    return (f"{product} index {index}: documents with one field per partition exceed its "
            f"index.mapping.total_fields.limit ({limit}) (topic {widest.source.get('topic')!r} "
            f"has {len_of_source(widest)} fields); set document_shape = \"partition\" in "
            f"[{product.lower()}] (one document per partition), or raise the index's "
            "index.mapping.total_fields.limit")


def len_of_source(document: Document) -> int:
    return len(document.source) + sum(
        len(value) for value in document.source.values() if isinstance(value, dict))


class IndexServer(Protocol):
    """The calls each client makes its own way; they raise lag-exporter errors only:
    SinkUnavailable (unreachable: retry later), SinkError / ConfigError (stop), AlreadyExists."""

    product: str

    def exists(self, index: str) -> bool: ...

    def mapped_properties(self, index: str) -> dict[str, dict[str, Any]]:
        """Per concrete index (a data stream's backing indices), its mapping's properties."""
        ...

    def create_index(self, index: str, mappings: dict[str, Any]) -> None: ...

    def has_data_streams(self) -> bool: ...

    def put_index_template(self, name: str, body: dict[str, Any]) -> None: ...

    def create_data_stream(self, name: str) -> None: ...

    def bulk(self, operations: list[dict[str, Any]]) -> list[dict[str, Any]]: ...

    def close(self) -> None: ...


class BulkIndexSink:
    """ensure_index() and write() over an IndexServer; the sinks only build the server."""

    name = "index"

    def __init__(self, settings: ElasticsearchSettings, server: IndexServer) -> None:
        self.settings = settings
        self.server = server
        self._index_ready = False
        self._field_limit_reported = False

    def ensure_index(self) -> None:
        """Create what the document shape needs unless it exists; refuse an index that holds
        the other shape or an incompatible mapping."""
        index = self.settings.index
        try:
            if self.server.exists(index):
                self._check_existing_mapping()
                if self.settings.document_shape == "wide":
                    self._install_wide_template()
            elif self.settings.document_shape == "partition":
                self._create_for_partitions()
            else:
                self._install_wide_template()
                self.server.create_index(index, load_mapping()["mappings"])
                log.info("created index %s from mapping.json", index)
        except AlreadyExists:
            pass  # another exporter created it first
        self._index_ready = True

    def _install_wide_template(self) -> None:
        """The wide shape's index template; without it (a role that may not manage templates,
        a user's template of the same priority) the exporter works as before, with a warning."""
        name = template_name(self.settings.index)
        try:
            self.server.put_index_template(name, wide_template(self.settings.index))
        except SinkUnavailable:
            raise
        except SinkError as error:
            log.warning("could not install index template %s (%s): if index %s is deleted "
                        "while watch runs, the next documents create it again without the "
                        "mapping of mapping.json", name, error, self.settings.index)

    def _create_for_partitions(self) -> None:
        index = self.settings.index
        data_stream = self.server.has_data_streams()
        template = partition_template(index, data_stream)
        self.server.put_index_template(template_name(index), template)
        if data_stream:
            self.server.create_data_stream(index)
            log.info("created data stream %s from index template %s (partition_template.json)",
                     index, template_name(index))
        else:
            self.server.create_index(index, template["template"]["mappings"])
            log.info("%s has no data streams: created a plain index %s with the mapping of "
                     "index template %s (partition_template.json)", self.server.product, index,
                     template_name(index))

    def _check_existing_mapping(self) -> None:
        for index_name, properties in self.server.mapped_properties(self.settings.index).items():
            other_shape = wrong_shape(properties, self.settings.document_shape)
            if other_shape:
                raise SinkError(f"index {index_name} does not fit document_shape = "
                                f"\"{self.settings.document_shape}\": {other_shape}; give "
                                "each shape its own index")
            if self.settings.document_shape == "partition":
                continue
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
        items = self.server.bulk(bulk_operations(self.settings.index, documents))
        try:
            report = read_bulk_answer(self.server.product, items)
        except IndexMissing:
            self._index_ready = False  # created again before the batch is sent again
            raise
        if (report.rejected and not self._field_limit_reported
                and self.settings.document_shape == "wide"):  # the advice is the other shape
            advice = field_limit_advice(self.server.product, self.settings.index,
                                        report.rejected, documents)
            if advice:
                log.error("%s", advice)  # once: the same documents are rejected every tick
                self._field_limit_reported = True
        return report

    def close(self) -> None:
        self.server.close()
