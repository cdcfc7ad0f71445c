import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from lag_exporter.errors import ConfigError
from lag_exporter.http_endpoint import HttpEndpoint
from lag_exporter.metrics import Health, LagMetrics
from lag_exporter.model import GroupLag, PartitionLag, Sample

SAMPLE = Sample(
    taken_at=datetime(2026, 1, 2, tzinfo=UTC),
    groups=(GroupLag("default", "g", (PartitionLag("t", 0, 3, 10, 7),)),),
)


@pytest.fixture
def endpoint() -> Iterator[HttpEndpoint]:
    server = HttpEndpoint("127.0.0.1", 0, LagMetrics(), Health(1.0))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def get(endpoint: HttpEndpoint, path: str) -> tuple[int, str, bytes]:
    url = f"http://127.0.0.1:{endpoint.port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.headers["Content-Type"], error.read()


def test_port_zero_gets_a_real_port(endpoint: HttpEndpoint) -> None:
    assert endpoint.port > 0


def test_metrics(endpoint: HttpEndpoint) -> None:
    endpoint.metrics.observe(SAMPLE)
    status, content_type, body = get(endpoint, "/metrics")
    assert status == 200
    assert content_type == CONTENT_TYPE_LATEST
    lags = {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
        if s.name == "kafka_consumergroup_group_lag"
    }
    assert lags == {
        (("cluster_name", "default"), ("group", "g"), ("partition", "0"), ("topic", "t")): 7,
    }


def test_metrics_ignores_query_string(endpoint: HttpEndpoint) -> None:
    assert get(endpoint, "/metrics?format=x")[0] == 200


def test_healthz_503_then_200(endpoint: HttpEndpoint) -> None:
    assert get(endpoint, "/healthz") == (503, "text/plain; charset=utf-8", b"no sample yet\n")
    endpoint.health.observe(SAMPLE)
    assert get(endpoint, "/healthz") == (200, "text/plain; charset=utf-8", b"ok\n")


def test_other_paths_are_404(endpoint: HttpEndpoint) -> None:
    assert get(endpoint, "/")[0] == 404
    assert get(endpoint, "/metrics/x")[0] == 404


def test_port_in_use_is_a_config_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = HttpEndpoint("127.0.0.1", port, LagMetrics(), Health(1.0))
        with pytest.raises(ConfigError) as raised:
            server.start()
    message = str(raised.value)
    assert f"127.0.0.1:{port}" in message
    assert "\n" not in message
    server.stop()  # nothing started: a no-op


def test_stop_releases_the_port_and_is_idempotent() -> None:
    first = HttpEndpoint("127.0.0.1", 0, LagMetrics(), Health(1.0))
    first.start()
    port = first.port
    first.stop()
    first.stop()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)
    again = HttpEndpoint("127.0.0.1", port, LagMetrics(), Health(1.0))
    again.start()
    try:
        assert get(again, "/metrics")[0] == 200
    finally:
        again.stop()
