"""Documents as JSON lines on standard output (watch without an Elasticsearch target)."""

from __future__ import annotations

import json
import sys
from typing import TextIO

from lag_exporter.documents import Document
from lag_exporter.sinks import DeliveryReport


class StdoutSink:
    name = "stdout"

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stdout

    def write(self, documents: list[Document]) -> DeliveryReport:
        for document in documents:
            self._stream.write(json.dumps(document.source, separators=(",", ":")) + "\n")
        self._stream.flush()
        return DeliveryReport(stored=len(documents))

    def close(self) -> None:
        self._stream.flush()
