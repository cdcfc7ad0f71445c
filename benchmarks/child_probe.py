"""The librdkafka statistics probe of benchmarks/scale.py, in a module of its own so that the Kafka
client process can unpickle it: that process is a plain `python -m lag_exporter.kafka_child`
since 54ab618 (it does not run scale.py as its main module, as multiprocessing's spawn did), and
finds this module through PYTHONPATH, which the worker extends with this directory."""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections import Counter
from typing import Any


class ChildProbe:
    """librdkafka stats_cb, picklable (module level), so it also works when watch runs the Kafka
    client in a child process (lag_exporter/isolation.py). On each statistics event (served by
    the poll(0) KafkaSource makes once per sample) it appends one JSON line to `path`: time, total
    requests sent (`tx`, all brokers) and, in protocol mode, the requests counted by API from
    librdkafka's protocol debug log (the stats `req` object misses admin OffsetFetch requests)."""

    def __init__(self, path: str, protocol: bool) -> None:
        self.path = path
        self.protocol = protocol
        self.sent: Counter[str] = Counter()
        self.installed = False

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "protocol": self.protocol}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"], state["protocol"])  # type: ignore[misc]

    def __call__(self, text: str) -> None:
        if self.protocol and not self.installed:
            self.installed = True
            sent = self.sent

            class CountRequests(logging.Handler):
                def emit(self, record: logging.LogRecord) -> None:
                    match = re.search(r"Sent (\w+)Request", record.getMessage())
                    if match:
                        sent[match.group(1)] += 1

            rdkafka_log = logging.getLogger("lag_exporter.librdkafka")
            rdkafka_log.setLevel(logging.DEBUG)
            rdkafka_log.propagate = False
            rdkafka_log.addHandler(CountRequests())
        data = json.loads(text)
        tx = sum(int(b.get("tx", 0)) for b in data.get("brokers", {}).values())
        with open(self.path, "a") as out:
            out.write(json.dumps({"t": time.monotonic(), "pid": os.getpid(), "tx": tx,
                                  "sent": dict(self.sent)}) + "\n")
