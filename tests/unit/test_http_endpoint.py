import json
import re
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from lag_exporter import http_endpoint
from lag_exporter.errors import ConfigError
from lag_exporter.http_endpoint import (
    CONTENT_SECURITY_POLICY,
    PAGE_ASSETS,
    HttpEndpoint,
    LagView,
    history_rows,
)
from lag_exporter.metrics import Health, LagMetrics
from lag_exporter.model import GroupLag, PartitionLag, Sample
from lag_exporter.view import LagHistory, rows_from_payload, sample_rows, view_payload

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


@pytest.fixture
def page() -> Iterator[HttpEndpoint]:
    server = HttpEndpoint("127.0.0.1", 0, LagMetrics(), Health(1.0), view=LagView())
    server.start()
    try:
        yield server
    finally:
        server.stop()


def fetch(endpoint: HttpEndpoint, path: str) -> tuple[int, dict[str, str], bytes]:
    url = f"http://127.0.0.1:{endpoint.port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, dict(error.headers), error.read()


def get(endpoint: HttpEndpoint, path: str) -> tuple[int, str, bytes]:
    status, headers, body = fetch(endpoint, path)
    return status, headers["Content-Type"], body


def sample_at(second: int, *groups: GroupLag, pending: tuple[str, ...] = ()) -> Sample:
    return Sample(taken_at=datetime(2026, 1, 2, tzinfo=UTC) + timedelta(seconds=second),
                  groups=groups, pending_clusters=pending)


def group(cluster: str, name: str, committed: int, end: int) -> GroupLag:
    return GroupLag(cluster, name, (PartitionLag("t", 0, committed, end, end - committed),))


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
    assert get(endpoint, "/")[0] == 404  # no view given: no page, as before
    assert get(endpoint, "/api/lag")[0] == 404
    assert get(endpoint, "/metrics/x")[0] == 404


def test_api_lag_before_the_first_sample(page: HttpEndpoint) -> None:
    status, headers, body = fetch(page, "/api/lag")
    assert (status, headers["Content-Type"]) == (200, "application/json")
    assert headers["Cache-Control"] == "no-cache"
    assert json.loads(body) == {"version": 1, "taken_at": None, "rows": []}


def test_api_lag_answers_304_until_a_new_sample(page: HttpEndpoint) -> None:
    assert page.view is not None
    page.view.observe(sample_at(0, group("c", "a", 5, 10)))
    _, headers, _ = fetch(page, "/api/lag")
    etag = headers["ETag"]

    def conditional() -> int:
        request = urllib.request.Request(f"http://127.0.0.1:{page.port}/api/lag",
                                         headers={"If-None-Match": etag})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return int(response.status)
        except urllib.error.HTTPError as error:
            with error:
                return error.code

    assert conditional() == 304
    page.view.observe(sample_at(1, group("c", "a", 5, 11)))
    assert conditional() == 200
    assert LagView().latest()[0] != LagView().latest()[0]  # not reused by a restarted exporter


def test_api_lag_is_the_view_payload_of_the_latest_sample(page: HttpEndpoint) -> None:
    assert page.view is not None
    first = sample_at(0, group("c", "a", 5, 10), group("c", "b", 0, 100))
    page.view.observe(first)
    status, _, body = get(page, "/api/lag")
    payload = json.loads(body)
    assert status == 200 and payload["taken_at"] == first.taken_at.timestamp()
    rows = rows_from_payload(payload)
    assert [(row.group, row.lag_total, spark) for row, spark in rows] == [
        ("b", 100, [100]), ("a", 5, [5])]
    assert [row for row, _ in rows] == sample_rows(first)
    page.view.observe(sample_at(5, group("c", "a", 5, 500), group("c", "b", 100, 100)))
    rows = rows_from_payload(json.loads(get(page, "/api/lag")[2]))
    assert [(row.group, row.lag_total, spark) for row, spark in rows] == [
        ("a", 495, [5, 495]), ("b", 0, [100, 0])]


def test_api_lag_rows_are_the_worst_that_many_with_the_total(page: HttpEndpoint) -> None:
    assert page.view is not None
    page.view.observe(sample_at(0, group("c", "a", 5, 10), group("c", "b", 0, 100),
                                group("c", "c", 0, 1)))
    whole = json.loads(get(page, "/api/lag")[2])
    worst = json.loads(get(page, "/api/lag?rows=2")[2])
    assert worst == {**whole, "rows": whole["rows"][:2], "rows_total": 3}
    assert [row["group"] for row in worst["rows"]] == ["b", "a"]
    assert fetch(page, "/api/lag")[1]["ETag"] != fetch(page, "/api/lag?rows=2")[1]["ETag"]
    for bad in ("0", "-1", "x", "1e3"):
        status, _, body = get(page, f"/api/lag?rows={bad}")
        assert (status, body) == (400, b"rows: a number of rows, e.g. /api/lag?rows=200\n")


def test_api_lag_body_is_built_once_per_sample() -> None:
    view = LagView()
    view.observe(sample_at(0, group("c", "a", 5, 10)))
    first = view.body()
    assert view.body() is first  # cached, not rebuilt
    view.observe(sample_at(1, group("c", "a", 5, 11)))
    second = view.body()
    assert second is not first and json.loads(second)["rows"][0]["lag_total"] == 6
    assert view.body() is second


def test_a_slow_body_is_kept_a_while_so_building_takes_a_tenth_of_the_time() -> None:
    now = [0.0]
    view = LagView(clock=lambda: now[0])
    view.observe(sample_at(0, group("c", "a", 5, 10)))

    def slow_payload(sample: Sample | None, history: LagHistory | None) -> dict[str, Any]:
        now[0] += 2.0  # this payload takes 2 s to build
        return view_payload(sample, history)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(http_endpoint, "view_payload", slow_payload)
        first_etag, first = view.latest()
        assert now[0] == 2.0
        view.observe(sample_at(1, group("c", "a", 5, 11)))
        now[0] = 21.9  # less than 2 s / 10 % after the build: the same body, no build
        assert view.latest() == (first_etag, first)
        now[0] = 22.0
        etag, body = view.latest()
    assert etag != first_etag and json.loads(body)["rows"][0]["lag_total"] == 6


def partition_lags() -> st.SearchStrategy[tuple[PartitionLag, ...]]:
    def one(topic: str, number: int, committed: int | None, end: int | None) -> PartitionLag:
        lag = None if committed is None or end is None else max(0, end - committed)
        return PartitionLag(topic, number, committed, end, lag)

    parts = st.builds(one, st.sampled_from(["a", "b", "c"]), st.integers(0, 3),
                      st.none() | st.integers(0, 50), st.none() | st.integers(0, 50))
    # Sorted by topic and partition, as the sampler hands them on.
    return st.lists(parts, max_size=8, unique_by=lambda p: (p.topic, p.partition)).map(
        lambda lags: tuple(sorted(lags, key=lambda p: (p.topic, p.partition))))


@given(st.lists(st.builds(GroupLag, st.just("c"), st.sampled_from(["g", "h", "i"]),
                          partition_lags(), error=st.none() | st.just("timed out")),
                max_size=3, unique_by=lambda g: g.group))
def test_history_rows_have_the_keys_and_totals_of_the_view(groups: list[GroupLag]) -> None:
    the_sample = sample_at(0, *groups)
    cheap = {row.key: row.lag_total for row in history_rows(the_sample)}
    full = {row.key: row.lag_total for row in sample_rows(the_sample)}
    # The view may also show a group waiting for its first commit (no lag to chart).
    assert cheap == {key: total for key, total in full.items()
                     if key[2] or any(g.error for g in groups if g.group == key[1])}


def test_history_gets_one_point_per_step() -> None:
    view = LagView(history_step_s=5.0)
    for second in range(12):
        view.observe(sample_at(second, group("c", "a", 0, second)))
    assert [lag for _, lag in view.history.series(("c", "a", "t"))] == [0, 5, 10]
    # The table is always the latest sample, whatever the history's step.
    assert json.loads(view.body())["rows"][0]["lag_total"] == 11


def test_a_pending_cluster_keeps_its_last_rows_until_its_sample_comes() -> None:
    view = LagView()
    view.observe(sample_at(0, group("fast", "a", 0, 1), group("slow", "b", 0, 7)))
    view.observe(sample_at(1, group("fast", "a", 0, 2), pending=("slow",)))
    rows = json.loads(view.body())["rows"]
    assert sorted((row["cluster"], row["lag_total"]) for row in rows) == [("fast", 2),
                                                                           ("slow", 7)]
    view.observe(sample_at(2, group("fast", "a", 0, 3)))
    assert [row["cluster"] for row in json.loads(view.body())["rows"]] == ["fast"]


def test_page_and_assets_with_their_types_and_a_policy_against_external_loads(
        page: HttpEndpoint) -> None:
    for path, (_, content_type) in PAGE_ASSETS.items():
        status, headers, body = fetch(page, path)
        assert (status, headers["Content-Type"]) == (200, content_type), path
        assert headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert body
    assert "default-src 'none'" in CONTENT_SECURITY_POLICY
    assert "http" not in CONTENT_SECURITY_POLICY and "*" not in CONTENT_SECURITY_POLICY
    html = get(page, "/")[2].decode()
    assert 'src="page.js"' in html and 'href="page.css"' in html
    assert get(page, "/index.html")[0] == 404  # only the listed paths, no file serving
    assert get(page, "/../view.py")[0] == 404


def test_page_weight_is_small_and_loads_nothing_from_elsewhere() -> None:
    files = {name: (resources.files("lag_exporter") / "web" / name).read_bytes()
             for name, _ in PAGE_ASSETS.values()}
    assert sum(len(body) for body in files.values()) < 30_000
    for name, body in files.items():
        body = body.replace(b"http://www.w3.org/2000/svg", b"")  # a name, not a request
        # No absolute or protocol-relative URL (a CDN, a font): only this origin's paths.
        assert not re.search(rb"https?:|[\"'(=]\s*//", body, re.I), name


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
