#!/usr/bin/env python3
"""Side-by-side benchmark of lag-exporter and its peers on scale.py's estates (issue 13).

    benchmarks/peers/build.sh                    # Burrow, KMinion, kafka_exporter from source
    .venv/bin/python benchmarks/peers.py --scale b --seconds 120

ONE TOOL AT A TIME, against the estate benchmarks/scale.py builds on the TARGET cluster
(127.0.0.1:29092; built here with scale.py's own code when missing), each driven once a second
for --seconds after it is ready and a short warm-up:

- Burrow 1.9.5 (follows __consumer_offsets; end offsets every --burrow-offset-refresh seconds,
  1 by default; it has no topic filter, so it fetches those of every topic): its HTTP lag endpoint
  asked for every group of the estate, one after the other; latency = the whole set.
- KMinion 2.3.5 (--kminion-mode, adminApi by default): /metrics scraped; latency = the scrape.
- kafka_exporter 1.9.0: /metrics scraped; latency = the scrape.
- lag-exporter `watch` (the commit --rev, exported with git archive as scale.py does), writing
  to Elasticsearch as in scale.py, with offsets_source admin and topic, each without and with a
  /metrics scrape every second; latency = the sample's own duration (its log line, written every
  sample with --summary-interval 1) and the scrape's.

Measured per tool, over the window only: CPU % of one core (utime+stime from /proc/<pid>/stat,
summed over the tool's process and all its descendants, exited children included through
cutime+cstime), RSS (max over the window of VmRSS summed over those processes), latency p50/p99,
ticks that could not be driven on time (for lag-exporter: also the seconds of the window
without a sample), and agreement: each tool's partition lags against
`kafka-consumer-groups --describe` on a few groups and against the lags the estate was built
with on every partition. The machine is shared: its load average and busy % are recorded per
tool; the numbers compare tools within one run. Never stops or starts a stack component.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import re
import shlex
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import scale  # benchmarks/scale.py: the estates, the exported source, the machine's load

from stack import stackctl  # importable once scale.py put the repository on sys.path

REPO = scale.REPO
PEERS_DIR = REPO / "benchmarks" / "peers"
BIN_DIR = REPO / ".cache" / "peers" / "bin"
TARGET = scale.TARGET
WARMUP_S = 5
READY_TIMEOUT_S = 300
TOOLS = ("burrow", "kminion", "kafka_exporter", "lag-exporter-admin",
         "lag-exporter-admin-scraped", "lag-exporter-topic", "lag-exporter-topic-scraped")

Lags = dict[tuple[str, str, int], int]
"""(group, topic, partition) -> lag"""


@dataclass
class Tool:
    name: str
    command: list[str]
    drive: Callable[[], float | None]
    """Once a second: the latency (s) to report, or None (nothing asked)."""
    ready: Callable[[], bool]
    lags: Callable[[], Lags]
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    sample_log: Path | None = None
    """lag-exporter: the log whose 'last took N ms' lines give the sample durations."""


# ---------------------------------------------------------------- processes, from /proc


def proc_stat(pid: int) -> tuple[int, float] | None:
    """(ppid, CPU seconds of the process and its reaped children) of a live process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    ticks = sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return int(fields[1]), ticks / os.sysconf("SC_CLK_TCK")


def process_tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := proc_stat(int(entry.name))):
            children.setdefault(stat[0], []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo += children.get(pid, [])
    return tree


def tree_cpu_s(root: int) -> float:
    return sum(stat[1] for pid in process_tree(root) if (stat := proc_stat(pid)))


def tree_rss_kb(root: int) -> int:
    return sum(stackctl.memory_kb(pid).get("VmRSS", 0) for pid in process_tree(root))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------- HTTP and parsing (pure)


def http_get(port: int, path: str, timeout_s: float = 30) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout_s) as answer:
        body: bytes = answer.read()
        return body


def timed_get(port: int, path: str) -> float:
    started = time.perf_counter()
    http_get(port, path)
    return time.perf_counter() - started


def prometheus_lags(text: str, metric: str, group: str, topic: str, partition: str) -> Lags:
    """Pure: the per-partition lag series of `metric` with those label names."""
    lags: Lags = {}
    for line in text.splitlines():
        if not line.startswith(metric + "{"):
            continue
        labels_text, _, value = line[len(metric) + 1:].rpartition("} ")
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', labels_text))
        try:
            lags[(labels[group], labels[topic], int(labels[partition]))] = int(float(value))
        except (KeyError, ValueError):
            continue
    return lags


def describe_lags(output: str) -> Lags:
    """Pure: the LAG column of `kafka-consumer-groups --describe` (lines with a number)."""
    lags: Lags = {}
    for line in output.splitlines():
        cols = line.split()
        if len(cols) >= 6 and cols[2].isdigit() and cols[5].lstrip("-").isdigit():
            lags[(cols[0], cols[1], int(cols[2]))] = int(cols[5])
    return lags


def percentile(values: Sequence[float], q: float) -> float:
    return scale.percentile(values, q)


def agreement(tool: Lags, reference: Lags) -> tuple[int, int]:
    """(partitions of the reference the tool gives the same lag, partitions of the reference)."""
    return sum(1 for key, lag in reference.items() if tool.get(key) == lag), len(reference)


# ---------------------------------------------------------------- the tools


def template(name: str, workdir: Path, **values: str) -> Path:
    text = string.Template((PEERS_DIR / name).read_text()).substitute(
        workdir=str(workdir), bootstrap=TARGET, **values)
    path = workdir / name
    path.write_text(text)
    return path


def binary(name: str, bin_dir: Path) -> str:
    path = bin_dir / name
    if not os.access(path, os.X_OK):
        raise SystemExit(f"{path} missing: build the peers first (benchmarks/peers/build.sh)")
    return str(path)


def burrow(estate: scale.Estate, workdir: Path, bin_dir: Path, offset_refresh_s: int) -> Tool:
    port = free_port()
    groups_regex = f"^bench-{estate.scale}-[0-9]+$"
    template("burrow.toml", workdir, port=str(port), groups_regex=groups_regex,
             offset_refresh=str(offset_refresh_s))
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def lag_of(group: str) -> dict[str, Any]:
        connection.request("GET", f"/v3/kafka/bench/consumer/{group}/lag")
        answer = connection.getresponse()
        body = answer.read()
        if answer.status != 200:
            return {}
        status: dict[str, Any] = json.loads(body).get("status") or {}
        return status

    def drive() -> float:
        started = time.perf_counter()
        for group in estate.groups:
            lag_of(group)
        return time.perf_counter() - started

    def lags() -> Lags:
        return {(group, p["topic"], int(p["partition"])): int(p["current_lag"])
                for group in estate.groups for p in lag_of(group).get("partitions") or []}

    def ready() -> bool:
        try:
            return len(lags()) >= estate.group_partitions
        except (OSError, http.client.HTTPException):
            connection.close()
            return False

    return Tool(f"Burrow 1.9.5 (follows __consumer_offsets, offset-refresh {offset_refresh_s} s; "
                f"{len(estate.groups)} lag queries)",
                [binary("burrow", bin_dir), "--config-dir", str(workdir)], drive, ready, lags)


def kminion(estate: scale.Estate, workdir: Path, bin_dir: Path, mode: str) -> Tool:
    port = free_port()
    config = template("kminion.yaml", workdir, port=str(port), mode=mode,
                      groups_regex=f"^bench-{estate.scale}-[0-9]+$",
                      topics_regex=f"^bench[.]{estate.scale}[.][0-9]+$")

    def lags() -> Lags:
        return prometheus_lags(http_get(port, "/metrics").decode(),
                               "kminion_kafka_consumer_group_topic_partition_lag",
                               "group_id", "topic_name", "partition_id")

    def ready() -> bool:
        try:
            return len(lags()) >= estate.group_partitions
        except OSError:
            return False

    env = dict(os.environ, CONFIG_FILEPATH=str(config))
    return Tool(f"KMinion 2.3.5 (scrapeMode {mode})", [binary("kminion", bin_dir)],
                lambda: timed_get(port, "/metrics"), ready, lags, env)


def kafka_exporter(estate: scale.Estate, workdir: Path, bin_dir: Path) -> Tool:
    port = free_port()

    def lags() -> Lags:
        return prometheus_lags(http_get(port, "/metrics", 120).decode(), "kafka_consumergroup_lag",
                               "consumergroup", "topic", "partition")

    def ready() -> bool:
        try:
            return len(lags()) >= estate.group_partitions
        except OSError:
            return False

    command = [binary("kafka_exporter", bin_dir), f"--kafka.server={TARGET}",
               "--kafka.version=3.9.0", f"--web.listen-address=127.0.0.1:{port}",
               f"--topic.filter=^bench[.]{estate.scale}[.][0-9]+$",
               f"--group.filter=^bench-{estate.scale}-[0-9]+$"]
    return Tool("kafka_exporter 1.9.0", command, lambda: timed_get(port, "/metrics"), ready,
                lags)


def lag_exporter(estate: scale.Estate, workdir: Path, source: str, scraped: bool) -> Tool:
    port = free_port()
    log = workdir / "lag-exporter.log"
    index = f"bench-peers-{estate.scale}"
    if scale.es_request("DELETE", f"/{index}") is None:
        scale.say(f"could not delete index {index} (Elasticsearch down?): going on")
    command = [sys.executable, "-m", "lag_exporter", "watch", "--bootstrap-server", TARGET,
               "--cluster-name", "bench", "--offsets-source", source,
               "--es-url", scale.ES_URL, "--es-index", index,
               "--spool-dir", str(workdir / "spool"), "--interval", "1",
               "--summary-interval", "1", "--http-host", "127.0.0.1", "--http-port", str(port)]
    for group in estate.groups:
        command += ["--group", group]

    def lags() -> Lags:
        return prometheus_lags(http_get(port, "/metrics").decode(),
                               "kafka_consumergroup_group_lag", "group", "topic", "partition")

    def ready() -> bool:
        try:
            return len(lags()) >= estate.group_partitions
        except OSError:
            return False

    def drive() -> float | None:
        return timed_get(port, "/metrics") if scraped else None

    name = f"lag-exporter watch (offsets_source {source}" + \
           (", /metrics scraped every second)" if scraped else ", no scrape)")
    return Tool(name, command, drive, ready, lags, scale.source_env(), log)


# ---------------------------------------------------------------- one run


def sample_durations(log: Path, start: int, end: int) -> list[float]:
    """Seconds, from watch's 'N samples, last took X ms' lines between two file offsets."""
    with log.open("rb") as f:
        f.seek(start)
        text = f.read(end - start).decode(errors="replace")
    return [int(m) / 1000 for m in re.findall(r"\d+ samples, last took (\d+) ms", text)]


def run_tool(tool: Tool, seconds: int, workdir: Path, references: dict[str, Lags]
             ) -> dict[str, Any]:
    log_path = tool.sample_log or workdir / "tool.log"
    result: dict[str, Any] = {"tool": tool.name, "command": shlex.join(tool.command[:12])
                              + (" ..." if len(tool.command) > 12 else "")}
    with log_path.open("ab") as log:
        process = subprocess.Popen(tool.command, stdout=log, stderr=log, env=tool.env,
                                   cwd=workdir, start_new_session=True)
    try:
        started = time.monotonic()
        while not tool.ready():
            if process.poll() is not None:
                raise SystemExit(f"{tool.name} exited ({process.returncode}):\n"
                                 + log_path.read_text()[-3000:])
            if time.monotonic() - started > READY_TIMEOUT_S:
                raise SystemExit(f"{tool.name}: not all partition lags within "
                                 f"{READY_TIMEOUT_S} s (log {log_path})")
            time.sleep(1)
        result["ready_s"] = round(time.monotonic() - started, 1)
        for _ in range(WARMUP_S):
            tool.drive()
            time.sleep(1)
        scale.say(f"{tool.name}: ready in {result['ready_s']} s, measuring {seconds} s")
        load_before, ticks_before = os.getloadavg(), scale.cpu_ticks()
        log_start = log_path.stat().st_size
        cpu_start, t0 = tree_cpu_s(process.pid), time.monotonic()
        latencies: list[float] = []
        rss: list[int] = []
        missed = 0
        tick = 0
        while tick < seconds:
            latency = tool.drive()
            if latency is not None:
                latencies.append(latency)
            rss.append(tree_rss_kb(process.pid))
            after = math.floor(time.monotonic() - t0) + 1  # the next whole second
            missed += max(0, after - tick - 1)  # seconds the drive overran
            tick = max(tick + 1, after)
            time.sleep(max(0.0, t0 + tick - time.monotonic()))
        cpu_end, t1 = tree_cpu_s(process.pid), time.monotonic()
        result["processes"] = len(process_tree(process.pid))
        log_end = log_path.stat().st_size
        result.update(
            window_s=round(t1 - t0, 1), cpu_pct=100 * (cpu_end - cpu_start) / (t1 - t0),
            cpu_s=cpu_end - cpu_start, rss_max_kb=max(rss), rss_end_kb=rss[-1],
            rss_mb_every_10s=[round(kb / 1024) for kb in rss[::10]],
            latencies_s=latencies, ticks_missed=missed,
            load_before=[round(x, 2) for x in load_before],
            load_after=[round(x, 2) for x in os.getloadavg()],
            machine=scale.machine_load(ticks_before, scale.cpu_ticks()))
        if tool.sample_log is not None:
            durations = sample_durations(log_path, log_start, log_end)
            result["sample_durations_s"] = durations
            # lag-exporter's own ticks: a sample that overruns makes it skip the next tick.
            result["ticks_missed"] = max(missed, round(t1 - t0) - len(durations))
        lags = tool.lags()
        result["agreement"] = {name: agreement(lags, reference)
                               for name, reference in references.items()}
        result["partitions_reported"] = len(lags)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return result


def make_tool(name: str, estate: scale.Estate, workdir: Path, args: argparse.Namespace) -> Tool:
    if name == "burrow":
        return burrow(estate, workdir, args.bin_dir, args.burrow_offset_refresh)
    if name == "kminion":
        return kminion(estate, workdir, args.bin_dir, args.kminion_mode)
    if name == "kafka_exporter":
        return kafka_exporter(estate, workdir, args.bin_dir)
    source = "topic" if "-topic" in name else "admin"
    return lag_exporter(estate, workdir, source, name.endswith("-scraped"))


def references_for(estate: scale.Estate, describe_groups: int) -> tuple[dict[str, Lags], str]:
    """The lags the estate was built with (every partition) and kafka-consumer-groups' on a few
    groups (an active one, the first idle one, the last one)."""
    built: Lags = {(g, t, p): scale.RECORDS_PER_PARTITION - scale.committed_offset(p)
                   for g, topics in estate.groups.items() for t in topics
                   for p in range(estate.topics[t])}
    names = list(estate.groups)
    chosen = list(dict.fromkeys([*estate.active[:1], names[len(estate.active)], names[-1],
                                 *names[1:]]))[:describe_groups]
    described: Lags = {}
    for group in chosen:
        command = stackctl.tool_command(
            "kafka-consumer-groups", ["--bootstrap-server", TARGET, "--describe", "--group", group])
        done = subprocess.run(command, capture_output=True, text=True, timeout=180,
                              stdin=subprocess.DEVNULL)
        described.update(describe_lags(done.stdout))
    return ({"kafka-consumer-groups": described, "estate": built},
            f"kafka-consumer-groups --describe on {', '.join(chosen)}")


# ---------------------------------------------------------------- report


def ms(seconds: float) -> str:
    if math.isnan(seconds):
        return "-"
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


def latency_cell(r: dict[str, Any]) -> str:
    cells = []
    if r.get("sample_durations_s"):
        d = r["sample_durations_s"]
        cells.append(f"sample {ms(percentile(d, 50))} / {ms(percentile(d, 99))}")
    if r["latencies_s"]:
        kind = "lag queries" if r["tool"].startswith("Burrow") else "scrape"
        lat = r["latencies_s"]
        cells.append(f"{kind} {ms(percentile(lat, 50))} / {ms(percentile(lat, 99))}")
    return "; ".join(cells) or "-"


def table(results: list[dict[str, Any]]) -> list[str]:
    out = ["| tool | CPU % of one core | RSS max (processes) | latency p50 / p99 "
           "| ticks missed | lags equal: kafka-consumer-groups; estate | load avg 1 min "
           "before → after; machine busy % |", "|" + "---|" * 7]
    for r in results:
        a = r["agreement"]
        kcg, built = a["kafka-consumer-groups"], a["estate"]
        out.append(
            f"| {r['tool']} | {r['cpu_pct']:.1f} | {r['rss_max_kb'] / 1024:.0f} MB "
            f"({r['processes']}) | {latency_cell(r)} | {r['ticks_missed']} | "
            f"{kcg[0]}/{kcg[1]}; {built[0]}/{built[1]} | {r['load_before'][0]:.2f} → "
            f"{r['load_after'][0]:.2f}; {r['machine']['busy_pct']} |")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", default="b", choices=sorted(scale.SCALES))
    parser.add_argument("--seconds", type=int, default=120, help="measured seconds per tool")
    parser.add_argument("--tools", default=",".join(TOOLS), help=f"of {','.join(TOOLS)}")
    parser.add_argument("--kminion-mode", default="adminApi", choices=("adminApi", "offsetsTopic"))
    parser.add_argument("--burrow-offset-refresh", type=int, default=1,
                        help="seconds between Burrow's end-offset fetches (its default: 10)")
    parser.add_argument("--bin-dir", type=Path, default=BIN_DIR,
                        help="where build.sh put burrow, kminion, kafka_exporter")
    parser.add_argument("--rev", default="HEAD", help="commit of lag_exporter/ to measure")
    parser.add_argument("--describe-groups", type=int, default=3)
    parser.add_argument("--out", type=Path, help="raw results [default: benchmarks/results/"
                        "<date>-peers-<scale>.txt]")
    args = parser.parse_args(argv)
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    unknown = [t for t in tools if t not in TOOLS]
    if unknown or args.seconds < 1:
        parser.error(f"unknown tools {unknown}" if unknown else "--seconds must be at least 1")

    command = shlex.join([".venv/bin/python", "benchmarks/peers.py",
                          *(sys.argv[1:] if argv is None else argv)])
    scale.check_stack()
    machine = scale.machine_info()
    workdir = Path(tempfile.mkdtemp(prefix="lag-exporter-peers-"))
    machine["lag_exporter commit"] = scale.export_source(args.rev, workdir)
    for peer in ("burrow", "kminion", "kafka_exporter"):
        version = args.bin_dir / f"{peer}.version"
        if version.exists():
            machine[peer] = version.read_text().strip()
    estate = scale.plan_estate(args.scale)
    scale.say(f"scale {args.scale}: estate {scale.build_estate(estate)}")
    references, described = references_for(estate, args.describe_groups)
    members = [scale.ActiveMember(g, estate.groups[g]) for g in estate.active]
    for member in members:
        member.start()
    results: list[dict[str, Any]] = []
    try:
        for member in members:
            if not member.assigned.wait(60):
                scale.say(f"warning: {member.name} got no assignment within 60 s")
        for name in tools:
            tool_dir = workdir / name
            tool_dir.mkdir()
            result = run_tool(make_tool(name, estate, tool_dir, args), args.seconds, tool_dir,
                              references)
            results.append(result)
            scale.say("\n".join(table([result])[2:]))
    finally:
        for member in members:
            member.halt.set()
        for member in members:
            member.join(10)

    lines = [f"command: {command}", "build: benchmarks/peers/build.sh",
             "machine: " + "; ".join(f"{k} {v}" for k, v in machine.items()),
             f"estate {args.scale}: {len(estate.topics)} topics, {estate.partitions} partitions, "
             f"{len(estate.groups)} groups ({len(estate.active)} with an active member), "
             f"{estate.group_partitions} group partitions; {args.seconds} s per tool after "
             f"{WARMUP_S} s of warm-up; references: {described} and the lags the estate was built "
             "with", "", *table(results), ""]
    for r in results:
        raw = {k: v for k, v in r.items() if k not in ("latencies_s", "sample_durations_s")}
        raw["latencies_ms"] = [round(x * 1000, 1) for x in r["latencies_s"]]
        if "sample_durations_s" in r:
            raw["sample_ms"] = [round(x * 1000) for x in r["sample_durations_s"]]
        lines.append(json.dumps(raw))
    report = "\n".join(lines) + "\n"
    print(report, flush=True)
    out = args.out or REPO / "benchmarks" / "results" / \
        f"{time.strftime('%Y-%m-%d', time.gmtime())}-peers-{args.scale}.txt"
    out.write_text(report)
    scale.say(f"raw results in {out}; logs in {workdir}")
    shutil.rmtree(workdir / "src", ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
