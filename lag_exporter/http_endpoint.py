"""The HTTP endpoint: GET /metrics and /healthz, and with a LagView the web page (/, its two
assets) and /api/lag, the JSON that the page and `lag-exporter top --from` read.

Standard library only: a ThreadingHTTPServer in a daemon thread, so a slow scraper never holds up
sampling and a stuck connection never holds up exit.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from itertools import groupby
from operator import attrgetter
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
from prometheus_client import CONTENT_TYPE_LATEST

from lag_exporter.errors import ConfigError
from lag_exporter.lag import lag_total, partitions_unknown
from lag_exporter.metrics import Health, LagMetrics
from lag_exporter.model import Sample
from lag_exporter.view import LagHistory, TopicRow, view_payload

log = logging.getLogger(__name__)

# The page's files, shipped in lag_exporter/web/: path -> (file name, content type).
PAGE_ASSETS = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/page.js": ("page.js", "text/javascript; charset=utf-8"),
    "/page.css": ("page.css", "text/css; charset=utf-8"),
}

# Everything from this origin, nothing from anywhere else (no CDN, no inline script or style).
CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; "
                           "img-src 'self'; connect-src 'self'; base-uri 'none'; "
                           "form-action 'none'; frame-ancestors 'none'")

HISTORY_WINDOW_S = 600.0
HISTORY_STEP_S = 5.0
"""The page's chart: the last 10 minutes, one point every 5 s per row (120 points)."""

BUILD_SHARE = 0.1
"""At most this share of the time goes to building /api/lag bodies: a body that took 1.6 s
(5,000 rows with their history) is rebuilt at most every 16 s, whatever the polling."""
BUILD_FREE_S = 0.05
"""Bodies built faster than this are rebuilt for every new sample."""


def history_rows(sample: Sample) -> list[TopicRow]:
    """The rows LagHistory needs (key and lag_total) as view.sample_rows has them, without the
    per-partition detail, statuses and sorting: ~10x cheaper, and it runs in the sampling
    thread. Groups with no commit at all are left out (their lag is None anyway)."""
    rows = []
    for group_lag in sample.groups:
        cluster, group = group_lag.cluster, group_lag.group
        if group_lag.error is not None:
            rows.append(TopicRow(cluster, group, "", None, None, None, None, 0, (),
                                 error=group_lag.error))
            continue
        for topic, partitions in groupby(group_lag.partitions, key=attrgetter("topic")):
            lags = list(partitions)
            if any(p.committed_offset is not None for p in lags):
                total = None if partitions_unknown(lags) else lag_total(lags)
                rows.append(TopicRow(cluster, group, topic, total, None, None, None, 0, ()))
    return rows


@dataclasses.dataclass
class _Built:
    """The payload of one sample and its JSON bodies, whole and cut to the worst N rows."""

    generation: int
    payload: dict[str, Any]
    finished_s: float
    took_s: float
    bodies: dict[int | None, bytes] = dataclasses.field(default_factory=dict)


class LagView:
    """What the page shows: the latest sample, each row's lag over the last minutes, and the
    /api/lag body, built once per sample (on the first request after it), not per request.

    `observe` is a sample observer (the sampling thread); `latest` is called by HTTP threads.
    """

    def __init__(self, history: LagHistory | None = None,
                 history_step_s: float = HISTORY_STEP_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.history = history if history is not None else LagHistory(
            window_s=HISTORY_WINDOW_S, max_points=int(HISTORY_WINDOW_S / HISTORY_STEP_S))
        self.history_step_s = history_step_s
        self._clock = clock
        self._last_recorded_s = float("-inf")
        self._sample: Sample | None = None
        self._generation = 0
        """Counts samples; with the start time it is the ETag (unique across restarts)."""
        self._started = f"{time.time_ns():x}"
        self._built: _Built | None = None
        self._lock = threading.Lock()
        self._build_lock = threading.Lock()

    def observe(self, sample: Sample) -> None:
        moment_s = sample.taken_at.timestamp()
        # Thinned to one point per step: the chart needs no more.
        if moment_s - self._last_recorded_s >= self.history_step_s:
            self.history.record(moment_s, history_rows(sample))
            self._last_recorded_s = moment_s
        with self._lock:
            previous = self._sample
            if previous is not None and sample.pending_clusters:
                # A slow cluster's sample comes late: keep showing its last rows meanwhile.
                kept = tuple(g for g in previous.groups if g.cluster in sample.pending_clusters)
                sample = dataclasses.replace(sample, groups=sample.groups + kept)
            self._sample = sample
            self._generation += 1

    def body(self, rows: int | None = None) -> bytes:
        return self.latest(rows)[1]

    def latest(self, rows: int | None = None) -> tuple[str, bytes]:
        """(ETag, JSON body) of view.view_payload for the latest sample; with `rows`, only the
        worst that many rows, and `rows_total` saying how many there are.

        The page polls with If-None-Match, so a poll between two samples costs a 304, not the
        whole body again. A payload that is slow to build is kept a while (BUILD_SHARE), so
        watching a large estate never takes the CPU from sampling."""
        with self._build_lock:  # one request builds it, the others wait and reuse it
            with self._lock:
                sample, generation = self._sample, self._generation
            built = self._built
            if built is None or not (built.generation == generation or (
                    built.took_s >= BUILD_FREE_S
                    and self._clock() - built.finished_s < built.took_s / BUILD_SHARE)):
                started = self._clock()
                payload = view_payload(sample, self.history)
                finished = self._clock()
                built = self._built = _Built(generation, payload, finished, finished - started)
            body = built.bodies.get(rows)
            if body is None:
                payload = built.payload
                if rows is not None:
                    payload = {**payload, "rows": payload["rows"][:rows],
                               "rows_total": len(payload["rows"])}
                body = orjson.dumps(payload)
                if len(built.bodies) < 4:  # the page's and top's; any other is built each time
                    built.bodies[rows] = body
            return f'"{self._started}-{built.generation}-{rows or "all"}"', body


def read_asset(name: str) -> bytes:
    return (resources.files("lag_exporter") / "web" / name).read_bytes()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    metrics: LagMetrics
    health: Health
    view: LagView | None
    assets: dict[str, tuple[bytes, str]]

    def handle_error(self, request: Any, client_address: Any) -> None:
        # The default prints a traceback to stderr, e.g. for every scraper that hangs up early.
        log.debug("HTTP request from %s failed", client_address, exc_info=True)


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/metrics":
            try:
                body = self.server.metrics.render()
            except Exception as error:  # a bug in a collector: say so, keep serving
                log.exception("rendering metrics failed")
                self._reply(500, f"cannot render metrics: {error}\n".encode(), "text/plain")
                return
            self._reply(200, body, CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            healthy, reason = self.server.health.status()
            self._reply(200 if healthy else 503, f"{reason}\n".encode(),
                        "text/plain; charset=utf-8")
        elif path == "/api/lag" and self.server.view is not None:
            rows = parse_qs(urlsplit(self.path).query).get("rows", [None])[-1]
            if rows is not None and not (rows.isdigit() and 0 < int(rows) <= 1_000_000):
                self._reply(400, b"rows: a number of rows, e.g. /api/lag?rows=200\n",
                            "text/plain")
                return
            etag, body = self.server.view.latest(None if rows is None else int(rows))
            if self.headers.get("If-None-Match") == etag:
                self.send_response(304)
                self.send_header("ETag", etag)
                self.end_headers()
                return
            self._reply(200, body, "application/json",
                        {"ETag": etag, "Cache-Control": "no-cache"})
        elif path in self.server.assets:
            body, content_type = self.server.assets[path]
            self._reply(200, body, content_type,
                        {"Content-Security-Policy": CONTENT_SECURITY_POLICY,
                         "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"})
        else:
            hint = "/metrics or /healthz" if self.server.view is None else "/, /api/lag or /metrics"
            self._reply(404, f"not found: try {hint}\n".encode(), "text/plain")

    def _reply(self, status: int, body: bytes, content_type: str,
               headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """No access log: Prometheus scrapes every few seconds."""


class HttpEndpoint:
    """Serves `metrics` at /metrics and `health` at /healthz on host:port; with a `view`, also the
    web page at / and its data at /api/lag."""

    def __init__(self, host: str, port: int, metrics: LagMetrics, health: Health,
                 view: LagView | None = None) -> None:
        self.host = host
        self._port = port
        self.metrics = metrics
        self.health = health
        self.view = view
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def port(self) -> int:
        """The port actually listened on (the one chosen by the OS when 0 was asked for)."""
        if self._server is not None:
            return int(self._server.server_address[1])
        return self._port

    def start(self) -> None:
        """Bind and serve in the background; ConfigError if host:port cannot be listened on."""
        server_class = _Server6 if ":" in self.host else _Server
        try:
            server = server_class((self.host, self._port), _Handler)
        except OSError as error:
            reason = error.strerror or str(error)
            raise ConfigError(f"cannot listen on {self.address} for /metrics: {reason}") from None
        server.metrics = self.metrics
        server.health = self.health
        server.view = self.view
        server.assets = {} if self.view is None else {
            path: (read_asset(name), content_type)
            for path, (name, content_type) in PAGE_ASSETS.items()}
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="http-endpoint", daemon=True)
        self._thread.start()
        log.info("serving %s/metrics and /healthz on %s",
                 "the page at /, /api/lag, " if self.view is not None else "", self.address)

    def stop(self, timeout_s: float = 2.0) -> None:
        """Stop accepting, close the socket; waits at most about timeout_s. Idempotent."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        if thread.is_alive():
            server.shutdown()  # returns within one poll interval once serve_forever runs
        thread.join(timeout_s)
        server.server_close()
        self._server = self._thread = None
        self._port = int(server.server_address[1])
