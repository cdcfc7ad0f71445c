"""The web page of `lag-exporter watch --http-port`, in a real browser: headless Chromium (Debian's
package) loads it from a running watch on the stack; the test reads the DOM the page built (the
group's row, its lag equal to `kafka-consumer-groups --describe`, its partitions, a drawn chart)
and keeps a screenshot.

The screenshots (desktop and phone widths) go to the test's tmp dir and build/test-artifacts/
(page.png, page-phone.png: CI keeps that folder); with LAG_EXPORTER_UPDATE_SCREENSHOTS=1 the
desktop one also to docs/page.png, the README's picture.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.request
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    ExporterProcess,
    commit,
    create_topic,
    describe_group,
    free_port,
    lags_by_partition,
    produce,
    wait_for,
)

from stack.stackctl import Stack

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("LAG_EXPORTER_TEST_ARTIFACTS", REPO / "build" / "test-artifacts"))


class Element:
    def __init__(self, tag: str, attrs: dict[str, str], parent: Element | None) -> None:
        self.tag, self.attrs, self.parent = tag, attrs, parent
        self.children: list[Element] = []
        self.text = ""

    def find_all(self, tag: str, **attrs: str) -> list[Element]:
        found = [self] if self.tag == tag and all(
            self.attrs.get(name.replace("_", "-")) == value for name, value in attrs.items()
        ) else []
        for child in self.children:
            found += child.find_all(tag, **attrs)
        return found

    def all_text(self) -> str:
        return self.text + "".join(child.all_text() for child in self.children)


VOID = frozenset({"meta", "link", "br", "img", "input", "hr", "line", "path"})
"""Elements without an end tag (or, for SVG's, without children)."""


class Dom(HTMLParser):
    """The DOM Chromium dumped, as a small tree (no third-party parser needed)."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.root = self.current = Element("#document", {}, None)
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {k: v or "" for k, v in attrs}, self.current)
        self.current.children.append(element)
        if tag not in VOID:
            self.current = element

    def handle_endtag(self, tag: str) -> None:
        node: Element | None = self.current
        while node is not None and node.tag != tag:
            node = node.parent
        if node is not None and node.parent is not None:
            self.current = node.parent

    def handle_data(self, data: str) -> None:
        self.current.text += data


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "Chromium is needed: apt-get install chromium (scripts/bootstrap installs it)"
    return found


def browse(url: str, profile: Path, *how: str) -> subprocess.CompletedProcess[str]:
    """Headless Chromium on url; root needs --no-sandbox; a throwaway profile. The virtual time
    budget lets the page's script fetch /api/lag and draw before the DOM or picture is taken."""
    return subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         f"--user-data-dir={profile}", "--virtual-time-budget=5000", *how, url],
        capture_output=True, text=True, timeout=40, check=True)


def api_rows(port: int) -> list[dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/lag", timeout=5) as response:
            rows: list[dict[str, Any]] = json.load(response)["rows"]
            return rows
    except OSError:
        return []  # not listening yet


def test_the_page_shows_the_groups_row_its_partitions_and_a_chart(
        stack: Stack, unique_name: str, tmp_path: Path) -> None:
    group, topic = f"web-{unique_name}", f"web.{unique_name}"
    behind = f"web-{unique_name}-behind"  # further behind: its row comes first
    create_topic(stack.source_bootstrap, topic, 3)
    produce(stack.source_bootstrap, topic, {0: 10, 1: 20, 2: 5})
    commit(stack.source_bootstrap, group, {(topic, 0): 4, (topic, 1): 20, (topic, 2): 0})
    commit(stack.source_bootstrap, behind, {(topic, 0): 0, (topic, 1): 0, (topic, 2): 0})
    port = free_port()
    watch = ExporterProcess("--bootstrap-server", stack.source_bootstrap, "--group", group,
                            "--group", behind, "--interval", "1", "--http-port", str(port))
    try:
        def row() -> dict[str, Any] | None:
            return next((r for r in api_rows(port) if r["group"] == group), None)

        wait_for(lambda: (r := row()) is not None and r["lag_total"] == 11, timeout=40,
                 what="the group's row with lag 11 in /api/lag", exporter=watch)
        produce(stack.source_bootstrap, topic, {0: 7})  # lag 11 -> 18: the chart goes up
        wait_for(lambda: (r := row()) is not None and r["lag_total"] == 18
                 and len(r["history"]) >= 2, timeout=40,
                 what="lag 18 and two points of history in /api/lag", exporter=watch)
        expected = lags_by_partition(describe_group(stack, group))
        assert expected == {(topic, 0): 13, (topic, 1): 0, (topic, 2): 5}

        url = f"http://127.0.0.1:{port}/#group={group}"  # opens the group's partitions
        dom = Dom(browse(url, tmp_path / "profile", "--dump-dom").stdout).root
        screenshot = tmp_path / "page.png"
        browse(url, tmp_path / "profile", "--hide-scrollbars", "--window-size=1000,760",
               f"--screenshot={screenshot}")
        phone = tmp_path / "page-phone.png"
        browse(url, tmp_path / "profile", "--hide-scrollbars", "--window-size=390,844",
               f"--screenshot={phone}")
    finally:
        watch.kill()

    table_rows = [tr.attrs["data-group"] for tr in dom.find_all("tr") if "data-group" in tr.attrs]
    assert table_rows == [behind, group]  # worst first (lag 42, then 18)
    rows = dom.find_all("tr", data_group=group, data_topic=topic)
    assert len(rows) == 1, "the group's row is not on the page"
    [lag_cell] = [td for td in rows[0].find_all("td") if "lag" in td.attrs.get("class", "")]
    assert lag_cell.attrs["data-lag"] == str(sum(v or 0 for v in expected.values())) == "18"
    assert lag_cell.all_text() == "18"

    # Its partitions, opened by the #group= link: partition, committed, end, lag per line.
    [detail] = dom.find_all("tr", **{"class": "detail"})
    [partitions] = detail.find_all("tbody")
    cells = [[td.all_text() for td in tr.find_all("td")] for tr in partitions.find_all("tr")]
    assert {(int(c[0]), int(c[3])) for c in cells} == {
        (partition, lag) for (_, partition), lag in expected.items()}

    # The chart: a line for the group with the history's points and the latest.
    [chart] = dom.find_all("svg", id="chart")
    assert chart.attrs["data-series"] == "2"
    lines = [p for p in chart.find_all("path")
             if json.loads(p.attrs["data-key"]) == [stack.source_bootstrap, group, topic]]
    assert len(lines) == 1
    points = lines[0].attrs["d"].split("L")
    assert len(points) >= 3, lines[0].attrs["d"]  # two points of history and the latest

    assert screenshot.stat().st_size > 10_000  # a picture, not an empty page
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(screenshot, ARTIFACTS / "page.png")
    shutil.copy(phone, ARTIFACTS / "page-phone.png")
    if os.environ.get("LAG_EXPORTER_UPDATE_SCREENSHOTS") == "1":
        (REPO / "docs").mkdir(exist_ok=True)
        shutil.copy(screenshot, REPO / "docs" / "page.png")
