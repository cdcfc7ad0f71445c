"""`lag-exporter top` as a person uses it: typed at a shell prompt in a real terminal (tmux, on a
socket of its own), keys sent with send-keys, the screen read back with capture-pane, and
asserted on what a person sees there; the lags compared with `kafka-consumer-groups --describe`.

The screen with a row's partitions open is kept (text, ANSI, SVG, and a PNG when Chromium is
installed) under build/test-artifacts/: the README's screenshot of top comes from there.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import ExporterProcess, commit, create_topics, describe_group, free_port, produce

from stack.stackctl import Stack

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("LAG_EXPORTER_TEST_ARTIFACTS", REPO / "build" / "test-artifacts"))
WIDTH, HEIGHT = 100, 30
PROMPT = "$ "


class Tmux:
    """One tmux server on a socket of its own (never the user's), one window running an
    interactive bash (without the user's rc files), as a person's terminal."""

    def __init__(self, tmp_path: Path, width: int = WIDTH, height: int = HEIGHT) -> None:
        self.socket = f"lagexp-top-{uuid.uuid4().hex[:8]}"
        bin_dir = str(Path(sys.executable).parent)  # where the lag-exporter command is
        self.env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}",
                    "HISTFILE": str(tmp_path / "history")}
        rc_file = tmp_path / "bashrc"
        rc_file.write_text(f"PS1='{PROMPT}'\n")
        self.tmux("new-session", "-d", "-x", str(width), "-y", str(height), "-s", "top",
                  f"bash --noprofile --rcfile {rc_file} -i")
        self.wait_for(lambda screen: screen.rstrip().endswith(PROMPT.rstrip()), "the prompt")

    def tmux(self, *args: str) -> str:
        done = subprocess.run(["tmux", "-L", self.socket, "-f", "/dev/null", *args],
                              capture_output=True, text=True, env=self.env, timeout=10,
                              check=False)
        assert done.returncode == 0, f"tmux {' '.join(args)}: {done.stderr}"
        return done.stdout

    def type(self, line: str) -> None:
        """Type a command line and press Enter."""
        self.tmux("send-keys", "-t", "top", "-l", line)
        self.tmux("send-keys", "-t", "top", "Enter")

    def press(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "top", *keys)

    def screen(self, ansi: bool = False) -> str:
        return self.tmux("capture-pane", "-p", "-t", "top", *(["-e"] if ansi else []))

    def wait_for(self, check: Callable[[str], bool], what: str, timeout: float = 30) -> str:
        """Poll the screen until `check` holds; fail with the screen as it was."""
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if check(screen):
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; "
                                     f"the screen:\n{screen}")
            time.sleep(0.2)

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True,
                       check=False, timeout=10)


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[Tmux]:
    assert shutil.which("tmux"), "tmux is not installed (scripts/bootstrap installs it)"
    tmux = Tmux(tmp_path)
    yield tmux
    tmux.close()


@dataclass(frozen=True)
class ScreenRow:
    selected: bool
    group: str
    topic: str
    lag: int | None


def rows_on(screen: str, groups: set[str]) -> list[ScreenRow]:
    """The view's rows of these groups, top to bottom, as the columns read."""
    rows = []
    for line in screen.splitlines():
        cells = line[2:].split()
        if len(cells) >= 6 and cells[0] in groups:
            lag = cells[2].replace(",", "")
            rows.append(ScreenRow(line.startswith(">"), cells[0], cells[1],
                                  int(lag) if lag.isdigit() else None))
    return rows


def partitions_on(screen: str, title: str) -> dict[int, tuple[int, int, int]]:
    """The detail under `title`: partition -> (committed, end, lag)."""
    lines = screen.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    found = {}
    for line in lines[start + 2:]:
        cells = line.replace(",", "").split()
        if len(cells) < 4 or not all(cell.isdigit() for cell in cells[:4]):
            break
        found[int(cells[0])] = (int(cells[1]), int(cells[2]), int(cells[3]))
    return found


def described(stack: Stack, group: str) -> tuple[int, dict[int, tuple[int, int, int]]]:
    """kafka-consumer-groups --describe: the group's total LAG, and per partition
    (CURRENT-OFFSET, LOG-END-OFFSET, LAG)."""
    rows = describe_group(stack, group)
    assert rows and all(r.lag is not None for r in rows), rows
    per_partition = {r.partition: (r.current_offset or 0, r.log_end_offset or 0, r.lag or 0)
                     for r in rows}
    return sum(r.lag or 0 for r in rows), per_partition


@dataclass(frozen=True)
class Groups:
    a: str
    topic_a: str
    b: str
    topic_b: str


@pytest.fixture
def two_groups(stack: Stack, unique_name: str) -> Groups:
    """Group a is 11 behind on 2 partitions, group b 6 on 3: a is the worse one."""
    groups = Groups(f"top-{unique_name}-a", f"top.{unique_name}.a",
                    f"top-{unique_name}-b", f"top.{unique_name}.b")
    create_topics(stack.source_bootstrap, {groups.topic_a: 2, groups.topic_b: 3})
    produce(stack.source_bootstrap, groups.topic_a, {0: 10, 1: 6})
    produce(stack.source_bootstrap, groups.topic_b, {0: 3, 1: 3, 2: 3})
    commit(stack.source_bootstrap, groups.a, {(groups.topic_a, 0): 4, (groups.topic_a, 1): 1})
    commit(stack.source_bootstrap, groups.b, {(groups.topic_b, p): 1 for p in range(3)})
    return groups


def quits_cleanly(terminal: Tmux) -> None:
    """After top: the shell's prompt again, exit status 0, the terminal as it was (line
    editing and echo on)."""
    terminal.wait_for(lambda screen: "LAST MINUTE" not in screen
                      and screen.rstrip().endswith(PROMPT.rstrip()), "the prompt after top")
    terminal.type('echo "exit status $?"; stty -a | grep -ow -e -icanon -e icanon -e -echo '
                  '-e echo | paste -sd " " | sed "s/^/tty: /"')
    screen = terminal.wait_for(lambda screen: any(line.startswith("tty: ")
                                                  for line in screen.splitlines()),
                               "stty's answer")
    lines = screen.splitlines()
    assert "exit status 0" in lines, screen
    assert "tty: icanon echo" in lines, screen  # not -icanon -echo (cbreak) left behind


def test_top_shows_the_groups_worst_first_their_partitions_and_q_quits(
    stack: Stack, two_groups: Groups, terminal: Tmux,
) -> None:
    g = two_groups
    names = {g.a, g.b}
    terminal.type(f"lag-exporter top --bootstrap-server {stack.source_bootstrap} "
                  f"--group {g.a} --group {g.b} --interval 0.5")
    # Worst first: a is further behind, in records and in seconds (its records are older).
    screen = terminal.wait_for(lambda s: [r.group for r in rows_on(s, names)] == [g.a, g.b],
                               "both groups' rows, a first")
    total_a, partitions_a = described(stack, g.a)
    total_b, partitions_b = described(stack, g.b)
    assert (total_a, total_b) == (11, 6)
    assert rows_on(screen, names) == [ScreenRow(True, g.a, g.topic_a, total_a),
                                      ScreenRow(False, g.b, g.topic_b, total_b)]
    assert screen.splitlines()[0].startswith(f"lag-exporter top  {stack.source_bootstrap}")

    # More records on b's topic: b's lag grows on screen.
    produce(stack.source_bootstrap, g.topic_b, {0: 20})
    total_b, partitions_b = described(stack, g.b)
    assert total_b == 26
    terminal.wait_for(lambda s: [r.lag for r in rows_on(s, names)] == [total_a, total_b],
                      "b's new lag")
    # a catches up: b is now the worse group and moves up; a stays selected.
    commit(stack.source_bootstrap, g.a, {(g.topic_a, 0): 10, (g.topic_a, 1): 6})
    total_a, partitions_a = described(stack, g.a)
    assert total_a == 0
    screen = terminal.wait_for(
        lambda s: [(r.group, r.lag) for r in rows_on(s, names)] == [(g.b, 26), (g.a, 0)],
        "b above a, a caught up")
    assert [r.selected for r in rows_on(screen, names)] == [False, True]

    # Up selects b, Enter shows its partitions: the offsets kafka-consumer-groups shows.
    terminal.press("Up")
    terminal.wait_for(lambda s: rows_on(s, names)[0].selected, "b selected")
    terminal.press("Enter")
    title_b = f"partitions of {g.b} / {g.topic_b}"
    screen = terminal.wait_for(lambda s: title_b in s and len(partitions_on(s, title_b)) == 3,
                               "b's partitions")
    assert partitions_on(screen, title_b) == partitions_b == {0: (1, 23, 22), 1: (1, 3, 2),
                                                              2: (1, 3, 2)}
    save_screenshot(terminal.screen(ansi=True))

    # j goes down to a: the detail follows the selection.
    terminal.press("j")
    title_a = f"partitions of {g.a} / {g.topic_a}"
    screen = terminal.wait_for(lambda s: title_a in s and len(partitions_on(s, title_a)) == 2,
                               "a's partitions")
    assert partitions_on(screen, title_a) == partitions_a == {0: (10, 10, 0), 1: (6, 6, 0)}
    terminal.press("Enter")
    terminal.wait_for(lambda s: "partitions of" not in s, "the detail closed")

    terminal.press("q")
    quits_cleanly(terminal)


def test_top_from_a_running_watch_says_when_it_is_down_and_ctrl_c_quits(
    stack: Stack, two_groups: Groups, terminal: Tmux,
) -> None:
    g = two_groups
    port = free_port()
    watch = ExporterProcess("--bootstrap-server", stack.source_bootstrap, "--group", g.a,
                            "--interval", "0.5", "--http-port", str(port),
                            "--http-host", "127.0.0.1")
    try:
        terminal.type(f"lag-exporter top --from http://127.0.0.1:{port} --interval 0.5")
        screen = terminal.wait_for(lambda s: [r.lag for r in rows_on(s, {g.a})] == [11],
                                   "a's row from the watch")
        assert described(stack, g.a)[0] == 11
        assert screen.splitlines()[0].startswith(
            f"lag-exporter top  from http://127.0.0.1:{port}")
        assert watch.stop()[0] == 0, watch.stderr
        # A refresh in flight while the watch shuts down may first read "Connection reset by
        # peer"; the next one finds the port closed.
        down = f"! cannot reach http://127.0.0.1:{port}/api/lag: Connection refused"
        screen = terminal.wait_for(lambda s: down in s, "the watch being down")
        assert [r.lag for r in rows_on(screen, {g.a})] == [11]  # the last rows stay
    finally:
        if watch.process.poll() is None:
            watch.kill()
    terminal.press("C-c")
    quits_cleanly(terminal)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_top_quits_cleanly_on_sigterm_and_sighup(
    stack: Stack, two_groups: Groups, terminal: Tmux, sig: signal.Signals,
) -> None:
    """`kill` and a closed SSH session (SIGHUP) end top as q does: exit 0, the terminal
    restored, no traceback."""
    g = two_groups
    terminal.type(f"lag-exporter top --bootstrap-server {stack.source_bootstrap} "
                  f"--group {g.a} --interval 0.5")
    terminal.wait_for(lambda s: [r.lag for r in rows_on(s, {g.a})] == [11], "a's row")
    shell = int(terminal.tmux("display-message", "-p", "-t", "top", "#{pane_pid}"))
    [top] = children_of(shell)
    os.kill(top, sig)
    quits_cleanly(terminal)
    assert "Traceback" not in terminal.screen(), terminal.screen()


def test_top_exits_when_its_terminal_goes_away(
    stack: Stack, two_groups: Groups, terminal: Tmux,
) -> None:
    """A real hang-up, as when an SSH connection drops: the terminal (tmux's server, holding
    the pty) goes away under the shell running top; top must not stay behind."""
    g = two_groups
    terminal.type(f"lag-exporter top --bootstrap-server {stack.source_bootstrap} "
                  f"--group {g.a} --interval 0.5")
    terminal.wait_for(lambda s: [r.lag for r in rows_on(s, {g.a})] == [11], "a's row")
    shell = int(terminal.tmux("display-message", "-p", "-t", "top", "#{pane_pid}"))
    [top] = children_of(shell)
    terminal.close()
    deadline = time.monotonic() + 15
    try:
        while running(top):
            assert time.monotonic() < deadline, f"top (pid {top}) still runs 15 s after the hang-up"
            time.sleep(0.2)
    finally:
        if running(top):
            os.kill(top, signal.SIGKILL)  # never leave it behind a failed test


def running(pid: int) -> bool:
    """pid is alive (a zombie counts as gone: it has exited)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def children_of(pid: int) -> list[int]:
    """The processes whose parent is pid (the commands a shell is running)."""
    found = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True,
                           text=True, timeout=10, check=False).stdout
    return [int(line) for line in found.split()]


def save_screenshot(ansi: str, directory: Path = ARTIFACTS, width: int = WIDTH) -> None:
    """A screen as a person sees it (`tmux capture-pane -e -p`): plain text, with colours
    (ANSI), as SVG via rich, and as PNG via headless Chromium when it is installed.
    docs/top.png is made with this, from a pane running scripts/demo (scripts/docs-images)."""
    from rich.console import Console
    from rich.text import Text

    directory.mkdir(parents=True, exist_ok=True)
    text = Text.from_ansi(ansi.rstrip("\n"))
    (directory / "top.txt").write_text(text.plain + "\n")
    (directory / "top.ans").write_text(ansi)
    console = Console(record=True, width=width, file=open(os.devnull, "w"),  # noqa: SIM115
                      force_terminal=True, color_system="truecolor")
    console.print(text, end="")
    svg = directory / "top.svg"
    console.save_svg(str(svg), title="lag-exporter top")
    console.file.close()
    # The SVG names a web font on a CDN: local fonts only (no request from a test, or a page).
    svg.write_text(re.sub(r',\s*url\([^)]*\) format\("[^"]*"\)', "", svg.read_text()))
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser:
        view_box = re.search(r'viewBox="0 0 ([\d.]+) ([\d.]+)"', svg.read_text())
        assert view_box, "rich's SVG has no viewBox"
        size = f"{math.ceil(float(view_box[1]))},{math.ceil(float(view_box[2]))}"
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu",
                        "--hide-scrollbars", f"--screenshot={directory / 'top.png'}",
                        f"--window-size={size}", svg.as_uri()],
                       capture_output=True, timeout=60, check=True)
