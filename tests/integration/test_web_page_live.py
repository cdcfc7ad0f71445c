"""The web page keeps itself up to date in a real browser: headless Chromium (Debian's package)
holds the page of a running `lag-exporter watch` open while the test changes the lag on the
stack, then hangs the watch (SIGSTOP) and stops it (SIGTERM), and reads the live DOM through the
DevTools protocol.

test_web_page.py loads the page once (`--dump-dom`); this one needs the same page over time, so
it speaks the DevTools protocol over `--remote-debugging-pipe` (JSON messages ending in a NUL
byte on file descriptors 3 and 4): no websocket client, nothing beyond the standard library.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import select
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import ExporterProcess, commit, create_topic, free_port, produce, wait_for

from stack.stackctl import Stack

pytestmark = pytest.mark.integration


class Browser:
    """Headless Chromium driven through the DevTools protocol on a pipe."""

    def __init__(self, profile: Path) -> None:
        browser = shutil.which("chromium") or shutil.which("chromium-browser")
        assert browser, "Chromium is needed: apt-get install chromium (scripts/bootstrap does)"
        to_browser_read, self._to_browser = os.pipe()
        self._from_browser, from_browser_write = os.pipe()

        def as_fds_3_and_4() -> None:
            # Via copies at 10 and up: a pipe may already sit at 3 or 4 (dup2 onto itself
            # would keep its close-on-exec flag).
            read_copy = fcntl.fcntl(to_browser_read, fcntl.F_DUPFD, 10)
            write_copy = fcntl.fcntl(from_browser_write, fcntl.F_DUPFD, 10)
            os.dup2(read_copy, 3)
            os.dup2(write_copy, 4)

        self.process = subprocess.Popen(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             f"--user-data-dir={profile}", "--remote-debugging-pipe", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=as_fds_3_and_4, close_fds=False)
        os.close(to_browser_read)
        os.close(from_browser_write)
        self._buffer = b""
        self._last_id = 0
        self.session = ""

    def call(self, method: str, params: dict[str, Any] | None = None, timeout: float = 20,
             session: bool = True) -> dict[str, Any]:
        """Send one command and return its result (events in between are skipped)."""
        self._last_id += 1
        message: dict[str, Any] = {"id": self._last_id, "method": method, "params": params or {}}
        if session and self.session:
            message["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" not in self._buffer:
                left = deadline - time.monotonic()
                ready, _, _ = select.select([self._from_browser], [], [], max(0.0, left))
                assert ready, f"Chromium did not answer {method} within {timeout:.0f} s"
                data = os.read(self._from_browser, 1 << 16)
                assert data, f"Chromium closed the pipe (exit {self.process.poll()})"
                self._buffer += data
            line, self._buffer = self._buffer.split(b"\0", 1)
            answer: dict[str, Any] = json.loads(line)
            if answer.get("id") == self._last_id:
                assert "error" not in answer, f"{method}: {answer['error']}"
                result: dict[str, Any] = answer["result"]
                return result

    def open(self, url: str, phone: tuple[int, int] | None = None) -> None:
        """A new tab on url, the one `evaluate` reads from then on; with phone=(width, height),
        as a phone's screen of that size (CSS pixels, touch, mobile viewport)."""
        target = self.call("Target.createTarget", {"url": "about:blank"}, session=False)
        attached = self.call("Target.attachToTarget",
                             {"targetId": target["targetId"], "flatten": True}, session=False)
        self.session = attached["sessionId"]
        if phone is not None:
            self.call("Emulation.setDeviceMetricsOverride", {
                "width": phone[0], "height": phone[1], "deviceScaleFactor": 2, "mobile": True})
        self.call("Page.navigate", {"url": url})

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (None when it throws)."""
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        return None if "exceptionDetails" in result else result["result"].get("value")

    def close(self) -> None:
        with contextlib.suppress(AssertionError, OSError):  # already gone: killed below
            self.call("Browser.close", session=False, timeout=5)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        os.close(self._to_browser)
        os.close(self._from_browser)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    opened = Browser(tmp_path / "profile")
    yield opened
    opened.close()


# What the page shows, read from its live DOM: the group's row (its data-lag), the state line
# at the top (text, and whether it is the red one), and whether it is still the same document.
def serves(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/lag", timeout=5) as response:
            return bool(json.load(response)["rows"])
    except OSError:
        return False  # not listening yet


PAGE_STATE = """(() => {
  const lag = document.querySelector('tr.row[data-group=%s] td.lag');
  const state = document.getElementById('state');
  return {lag: lag ? lag.getAttribute('data-lag') : null, state: state.textContent,
          stale: state.classList.contains('stale'),
          same_document: window.testMark === 'set before the change'};
})()"""


def test_the_open_page_redraws_on_each_new_sample_and_says_when_the_watch_is_gone(
        stack: Stack, unique_name: str, browser: Browser) -> None:
    group, topic = f"live-{unique_name}", f"live.{unique_name}"
    create_topic(stack.source_bootstrap, topic, 2)
    produce(stack.source_bootstrap, topic, {0: 10, 1: 5})
    commit(stack.source_bootstrap, group, {(topic, 0): 4, (topic, 1): 5})  # lag 6
    port = free_port()
    watch = ExporterProcess("--bootstrap-server", stack.source_bootstrap, "--group", group,
                            "--interval", "1", "--http-port", str(port),
                            "--http-host", "127.0.0.1")
    try:
        def page() -> dict[str, Any]:
            shown: dict[str, Any] | None = browser.evaluate(PAGE_STATE % json.dumps(group))
            return shown or {}  # not loaded yet

        seen: list[dict[str, Any]] = []

        def shows(check: Callable[[dict[str, Any]], object]) -> bool:
            seen.append(page())
            return bool(check(seen[-1]))

        def wait_page(check: Callable[[dict[str, Any]], object], what: str,
                      timeout: float = 30) -> dict[str, Any]:
            try:
                wait_for(lambda: shows(check), timeout=timeout, what=what, poll_s=0.25,
                         exporter=watch if watch.process.returncode is None else None)
            except AssertionError as error:
                raise AssertionError(f"{error}; the page showed: {seen[-3:]}") from None
            return seen[-1]

        wait_for(lambda: serves(port), timeout=40, what="the watch's HTTP endpoint",
                 exporter=watch)
        browser.open(f"http://127.0.0.1:{port}/")
        first = wait_page(lambda p: p.get("lag") == "6", "the group's row with lag 6", timeout=40)
        assert not first["stale"] and first["state"].startswith("sample of "), first

        # Marked, then the lag changed: the same document (no reload) must show it.
        browser.evaluate("window.testMark = 'set before the change'")
        produce(stack.source_bootstrap, topic, {1: 7})  # lag 6 -> 13
        later = wait_page(lambda p: p.get("lag") == "13", "the row redrawn with lag 13")
        assert later["same_document"], later
        # Each new sample redraws the state line's sample time too.
        wait_page(lambda p: p.get("state", "").startswith("sample of ")
                  and p.get("state") != later["state"], "a newer sample time in the state line")

        # A hung watch (stopped, its port still open: the connection is accepted, never
        # answered): red within the page's 5 s limit per request, normal again once it runs.
        watch.process.send_signal(signal.SIGSTOP)
        try:
            hung = wait_page(lambda p: p.get("stale"), "the red line while the watch hangs")
        finally:
            watch.process.send_signal(signal.SIGCONT)
        assert hung["state"] == "cannot reach the exporter (no answer within 5 s), retrying"
        assert hung["lag"] == "13" and hung["same_document"], hung  # the last rows stay
        wait_page(lambda p: p.get("stale") is False
                  and p.get("state", "").startswith("sample of "),
                  "the normal line again once the watch answers")

        # The watch gone (its port closed): red at the next request.
        watch.stop(signal.SIGTERM)
        assert watch.process.returncode == 0, watch.stderr
        gone = wait_page(lambda p: p.get("stale"), "the red line once the watch is gone")
        assert gone["state"].startswith("cannot reach the exporter ("), gone
        assert gone["lag"] == "13" and gone["same_document"], gone
    finally:
        if watch.process.poll() is None:
            watch.kill()


# Where the group's row and its cells are on a phone's screen (CSS pixels).
PHONE_LAYOUT = """(() => {
  const row = document.querySelector('tr.row[data-group=%s]');
  if (!row || !row.querySelector('td.lag').getAttribute('data-lag')) return null;
  const cells = [...row.querySelectorAll('td')].map((td) => {
    const box = td.getBoundingClientRect();
    return {text: td.textContent, left: box.left, right: box.right, shown: box.width > 0};
  });
  return {cells, viewport: window.innerWidth,
          page_width: document.documentElement.scrollWidth};
})()"""


def test_on_a_phone_long_names_wrap_and_lag_behind_status_stay_on_screen(
        stack: Stack, unique_name: str, browser: Browser) -> None:
    """390 x 844 CSS pixels (a phone held upright), names of 60 characters: the page does not
    scroll sideways, and the row's lag, behind and status are on screen without scrolling."""
    group = f"phone-{unique_name}-" + "g" * (60 - len(unique_name) - 7)
    topic = f"phone.{unique_name}." + "t" * (60 - len(unique_name) - 7)
    create_topic(stack.source_bootstrap, topic, 1)
    produce(stack.source_bootstrap, topic, {0: 12_345})
    commit(stack.source_bootstrap, group, {(topic, 0): 0})
    port = free_port()
    watch = ExporterProcess("--bootstrap-server", stack.source_bootstrap, "--group", group,
                            "--interval", "1", "--http-port", str(port),
                            "--http-host", "127.0.0.1")
    try:
        wait_for(lambda: serves(port), timeout=40, what="the watch's HTTP endpoint",
                 exporter=watch)
        browser.open(f"http://127.0.0.1:{port}/", phone=(390, 844))
        found: list[dict[str, Any]] = []

        def laid_out() -> bool:
            layout = browser.evaluate(PHONE_LAYOUT % json.dumps(group))
            if layout:
                found.append(layout)
            return bool(layout)

        wait_for(laid_out, timeout=30, what="the group's row on the phone", poll_s=0.25,
                 exporter=watch)
    finally:
        watch.kill()
    layout = found[-1]
    assert layout["viewport"] == 390 and layout["page_width"] <= 390, layout
    # cluster, group, topic, lag, max, behind, status: cluster and max are hidden on a phone
    cluster, name, topic_cell, lag_cell, max_cell, behind, status = layout["cells"]
    assert not cluster["shown"] and not max_cell["shown"], layout
    assert (name["text"], topic_cell["text"], lag_cell["text"]) == (group, topic, "12,345")
    for cell in (name, topic_cell, lag_cell, behind, status):
        assert cell["left"] >= 0 and cell["right"] <= 390, (cell, layout)
