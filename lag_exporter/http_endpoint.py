"""The HTTP side of the Prometheus endpoint: GET /metrics and GET /healthz, nothing else.

Standard library only: a ThreadingHTTPServer in a daemon thread, so a slow scraper never holds up
sampling and a stuck connection never holds up exit.
"""

from __future__ import annotations

import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import CONTENT_TYPE_LATEST

from lag_exporter.errors import ConfigError
from lag_exporter.metrics import Health, LagMetrics

log = logging.getLogger(__name__)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    metrics: LagMetrics
    health: Health

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
        else:
            self._reply(404, b"not found: try /metrics or /healthz\n", "text/plain")

    def _reply(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """No access log: Prometheus scrapes every few seconds."""


class HttpEndpoint:
    """Serves `metrics` at /metrics and `health` at /healthz on host:port."""

    def __init__(self, host: str, port: int, metrics: LagMetrics, health: Health) -> None:
        self.host = host
        self._port = port
        self.metrics = metrics
        self.health = health
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
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="http-endpoint", daemon=True)
        self._thread.start()
        log.info("serving /metrics and /healthz on %s", self.address)

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
