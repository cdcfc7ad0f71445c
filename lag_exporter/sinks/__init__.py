"""Sinks take the documents of one sample and store or show them. Nothing else."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from lag_exporter.documents import Document


@dataclass(frozen=True)
class DeliveryReport:
    stored: int
    already_stored: int = 0
    """Documents the sink already had (a retried batch): not an error."""
    rejected: tuple[str, ...] = field(default=())
    """One line per document the sink refused for good (e.g. a mapping conflict)."""


class Sink(Protocol):
    name: str

    def write(self, documents: list[Document]) -> DeliveryReport:
        """Store every document or raise SinkError (then the whole batch is retried later)."""
        ...

    def close(self) -> None: ...


class IndexSink(Sink, Protocol):
    """Elasticsearch and OpenSearch: an index checked (or created) before the first write."""

    def ensure_index(self) -> None: ...
