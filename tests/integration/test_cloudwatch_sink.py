"""The CloudWatch sink against moto's standalone server, with a small proxy in front of it that
answers chosen requests with throttling, a 503 or a refusal (as CloudWatch does): a sample of
2,500 partitions is split into PutMetricData-sized requests, a throttled or failed request is
retried with backoff through the outbox, and a request already taken is never sent again."""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cloudwatch_helpers import (  # noqa: F401 - the fixture
    AWS_ENV,
    CloudWatchServer,
    cloudwatch_fixture,
    series,
)

from lag_exporter.cloudwatch_metrics import MAX_PAYLOAD_BYTES
from lag_exporter.config import CloudWatchSettings
from lag_exporter.documents import sample_documents
from lag_exporter.errors import SinkUnavailable
from lag_exporter.model import GroupLag, PartitionLag, Sample
from lag_exporter.outbox import Outbox
from lag_exporter.service import Delivery
from lag_exporter.sinks.cloudwatch import CloudWatchSink

pytestmark = pytest.mark.integration

ERROR_CODES = {"throttle": "Throttling", "invalid": "InvalidParameterValue"}


def error_answer(code: str, request_type: str) -> tuple[bytes, dict[str, str]]:
    """CloudWatch's error answer in the protocol of the request: {"__type": code, "message":
    "bad"} in JSON (what botocore 1.44 sends) or in CBOR (smithy-rpc-v2-cbor)."""
    if "cbor" in request_type:
        def text(value: str) -> bytes:  # a CBOR text string shorter than 24 bytes
            return bytes([0x60 + len(value)]) + value.encode()

        body = b"\xa2" + text("__type") + text(code) + text("message") + text("bad")
        return body, {"smithy-protocol": "rpc-v2-cbor", "Content-Type": "application/cbor"}
    return (json.dumps({"__type": code, "message": "bad"}).encode(),
            {"Content-Type": "application/x-amz-json-1.0"})


class FaultyProxy:
    """Forwards requests to moto, except those whose turn is in `faults` (1-based request
    number -> "throttle" or "503"); counts what it forwarded and the bodies' sizes."""

    def __init__(self, target: str, faults: dict[int, str]) -> None:
        self.target = target
        self.faults = faults
        self.requests = 0
        self.forwarded: list[int] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                proxy.requests += 1
                fault = proxy.faults.get(proxy.requests)
                if fault in ERROR_CODES:
                    self._answer(400, *error_answer(ERROR_CODES[fault],
                                                    self.headers.get("Content-Type", "")))
                    return
                if fault == "503":
                    self._answer(503, b"", {})
                    return
                proxy.forwarded.append(len(body))
                request = urllib.request.Request(proxy.target + self.path, data=body,
                                                 headers=dict(self.headers), method="POST")
                with urllib.request.urlopen(request, timeout=30) as answer:
                    self._answer(answer.status, answer.read(), dict(answer.headers))

            def _answer(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    if name.lower() not in ("content-length", "transfer-encoding", "connection",
                                            "date", "server"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in AWS_ENV.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def proxy(cloudwatch: CloudWatchServer) -> Iterator[FaultyProxy]:
    faulty = FaultyProxy(cloudwatch.endpoint, {})
    yield faulty
    faulty.close()


def wide_sample(group: str, partitions: int) -> Sample:
    lags = tuple(PartitionLag("wide", n, 0, n % 97, n % 97) for n in range(partitions))
    return Sample(datetime.now(UTC).replace(microsecond=0), (GroupLag("dc1", group, lags),))


def partition_series(cloudwatch: CloudWatchServer, namespace: str, group: str, partition: int,
                     stat: str = "Maximum") -> dict[float, float]:
    return series(cloudwatch.client(), namespace, "OffsetLag",
                  {"Cluster Name": "dc1", "Consumer Group": group, "Topic": "wide",
                   "Partition": str(partition)}, stat=stat)


def test_a_wide_sample_in_batches_a_failed_one_retried_and_none_sent_twice(
    aws: None, cloudwatch: CloudWatchServer, proxy: FaultyProxy, unique_name: str
) -> None:
    namespace, group = f"SinkTest/{unique_name}", f"g-{unique_name}"
    sink = CloudWatchSink(CloudWatchSettings(namespace=namespace, region="us-east-1",
                                             endpoint_url=proxy.url))
    documents = sample_documents(wide_sample(group, 2500))
    proxy.faults = {2: "503"}  # the second of three requests fails
    with pytest.raises(SinkUnavailable, match="503"):
        sink.write(documents)
    report = sink.write(documents)  # the retry: the first request is not sent again
    assert (report.stored, report.rejected) == (2502, ())  # 2,500 partitions, max and sum
    assert proxy.requests == 4 and len(proxy.forwarded) == 3
    assert all(size < MAX_PAYLOAD_BYTES for size in proxy.forwarded)
    for partition in (0, 999, 1000, 2499):  # from each of the three requests
        counts = partition_series(cloudwatch, namespace, group, partition, stat="SampleCount")
        assert list(counts.values()) == [1.0], partition
        assert list(partition_series(cloudwatch, namespace, group, partition).values()) == [
            float(partition % 97)]
    sink.close()


def test_throttling_is_retried_with_backoff_through_the_outbox(
    aws: None, cloudwatch: CloudWatchServer, proxy: FaultyProxy, unique_name: str
) -> None:
    namespace, group = f"SinkTest/{unique_name}", f"g-{unique_name}"
    sink = CloudWatchSink(CloudWatchSettings(namespace=namespace, region="us-east-1",
                                             endpoint_url=proxy.url))
    outbox = Outbox()
    outbox.put(sample_documents(wide_sample(group, 3)))
    proxy.faults = {1: "throttle", 2: "throttle"}
    with pytest.raises(SinkUnavailable, match="400 Throttling: bad"):
        sink.write(outbox.oldest(wait_s=1).documents)  # type: ignore[union-attr]
    delivery = Delivery(outbox, sink, max_backoff_s=0.5)
    delivery.start()
    assert delivery.finish(timeout_s=20)
    assert delivery.failures == 1 and delivery.delivered == 1
    assert delivery.failure is None
    assert [list(partition_series(cloudwatch, namespace, group, p).values())
            for p in range(3)] == [[0.0], [1.0], [2.0]]
    outbox.close()
    sink.close()


def test_a_request_refused_for_good_is_counted_as_rejected_and_the_queue_goes_on(
    aws: None, cloudwatch: CloudWatchServer, proxy: FaultyProxy, unique_name: str
) -> None:
    namespace, group = f"SinkTest/{unique_name}", f"g-{unique_name}"
    sink = CloudWatchSink(CloudWatchSettings(namespace=namespace, region="us-east-1",
                                             endpoint_url=proxy.url))
    proxy.faults = {1: "invalid"}
    refused = sink.write(sample_documents(wide_sample(group, 3)))
    assert refused.rejected == ("CloudWatch PutMetricData: 400 InvalidParameterValue: bad "
                                "(5 metric data left out)",)
    assert refused.stored == 0
    taken = sink.write(sample_documents(wide_sample(group, 3)))
    assert (taken.stored, taken.rejected) == (5, ())
    sink.close()
