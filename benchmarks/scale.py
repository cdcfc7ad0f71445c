#!/usr/bin/env python3
"""Scale benchmark of `lag-exporter watch` against the real local stack (issue 6).

    .venv/bin/python benchmarks/scale.py --scales a,b,c --ticks 120 --profile c --soak-minutes 15

What it does, per scale (a: 100 partitions / 5 groups, b: 2,000 / 100, c: 10,000 / 500):

1. Builds the estate on the TARGET cluster (127.0.0.1:29092) only, idempotently: topics
   `bench.<scale>.<n>` of 10 to 50 partitions summing to the partition total, 3 records per
   partition, groups `bench-<scale>-<n>` with committed offsets on their topics and no member
   (as MirrorMaker groups are between commits), plus a few groups with an active member (a
   consumer subscribed and polling in a thread of this process).
2. Runs the exporter's `watch` in a CHILD process (`scale.py --worker SPEC`), built exactly as the
   CLI builds it (`lag_exporter.app.make_watch`, same timeouts), into the index `bench-<scale>`,
   with a throw-away spool dir. The child only adds measurement: it wraps `Sampler.sample` (the
   Sample's own duration_s), the sink's `write` (bulk time), and sets librdkafka
   `statistics.interval.ms` + `stats_cb` to count the requests the AdminClient really sent, by API.
   CPU (os.times of the child: all its threads, librdkafka's included) and RSS (VmRSS) are the
   child's own, so the driver's producers and consumers never pollute them.
3. Baselines (scale a): `kafka-consumer-groups --describe --group G` vs `lag-exporter snapshot
   --group G` (wall time and CPU of the child process, median of --repeat runs) vs one warm
   sample of ALL groups inside `watch`.
4. Optional: py-spy profile of the worker (`--profile c`) and a soak of scale c (`--soak-minutes`).

Elasticsearch may be stopped for a while by other tests: the exporter queues (memory + spool) and
the benchmark reports bulk failures, the longest queue and what was left undelivered.
Never stops or starts a stack component.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import platform
import re
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

REPO = Path(__file__).resolve().parent.parent
sys.path.append(str(REPO))  # appended: the exported lag_exporter (PYTHONPATH) must win

from child_probe import ChildProbe  # noqa: E402  (benchmarks/, next to this file)

from stack import stackctl  # noqa: E402

TARGET = "127.0.0.1:29092"
ES_URL = "http://127.0.0.1:19200"
SCALES: dict[str, tuple[int, int]] = {"a": (100, 5), "b": (2_000, 100), "c": (10_000, 500)}
SIZE_PATTERN = (10, 20, 30, 40, 50, 15, 25, 35, 45)
RECORDS_PER_PARTITION = 3
ACTIVE_GROUPS = {"a": 1, "b": 3, "c": 5}
WARMUP_TICKS = 5
APIS = ("ListOffsets", "OffsetFetch", "FindCoordinator", "Metadata", "DescribeGroups",
        "ConsumerGroupDescribe")


# ---------------------------------------------------------------- the estate


def topic_sizes(total: int) -> list[int]:
    """Deterministic mix of 10..50-partition topics summing to `total` (>= 10)."""
    sizes: list[int] = []
    remaining = total
    i = 0
    while remaining > 0:
        size = SIZE_PATTERN[i % len(SIZE_PATTERN)]
        i += 1
        if remaining <= 50:
            size = remaining
        elif remaining - size < 10:
            size = remaining - 10
        sizes.append(size)
        remaining -= size
    return sizes


@dataclass(frozen=True)
class Estate:
    scale: str
    topics: dict[str, int]
    """topic -> partition count"""
    groups: dict[str, list[str]]
    """group -> the topics it has committed on"""
    active: list[str]
    """groups that get an active member during the run"""

    @property
    def partitions(self) -> int:
        return sum(self.topics.values())

    @property
    def group_partitions(self) -> int:
        return sum(self.topics[t] for topics in self.groups.values() for t in topics)


def plan_estate(scale: str) -> Estate:
    partitions, n_groups = SCALES[scale]
    sizes = topic_sizes(partitions)
    topics = {f"bench.{scale}.{n}": size for n, size in enumerate(sizes)}
    names = list(topics)
    groups: dict[str, list[str]] = {}
    for g in range(n_groups):
        mine = {t for t in range(len(names)) if t % n_groups == g} | {g % len(names)}
        groups[f"bench-{scale}-{g}"] = [names[t] for t in sorted(mine)]
    return Estate(scale, topics, groups, list(groups)[: ACTIVE_GROUPS[scale]])


def committed_offset(partition: int) -> int:
    """1..3 of the 3 records: lags of 2, 1 and 0."""
    return 1 + partition % RECORDS_PER_PARTITION


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def build_estate(estate: Estate) -> dict[str, float]:
    """Create what is missing; returns timings (s)."""
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic

    timings: dict[str, float] = {}
    admin = AdminClient({"bootstrap.servers": TARGET})
    existing = {name: len(t.partitions) for name, t in admin.list_topics(timeout=60).topics.items()}
    wrong = {t: n for t, n in estate.topics.items() if t in existing and existing[t] != n}
    if wrong:
        raise SystemExit(f"topics with an unexpected partition count: {wrong}")
    missing = [t for t in estate.topics if t not in existing]
    started = time.monotonic()
    if missing:
        say(f"scale {estate.scale}: creating {len(missing)} topics "
            f"({sum(estate.topics[t] for t in missing)} partitions)")
        for i in range(0, len(missing), 25):
            batch = missing[i:i + 25]
            futures = admin.create_topics(
                [NewTopic(t, estate.topics[t], 1) for t in batch], request_timeout=120)
            for topic, future in futures.items():
                try:
                    future.result(timeout=180)
                except Exception as error:
                    if "TOPIC_ALREADY_EXISTS" not in str(error):
                        raise SystemExit(f"cannot create {topic}: {error}") from error
        wait_for_leaders(admin, estate)
    timings["create_topics_s"] = time.monotonic() - started

    started = time.monotonic()
    if missing:
        producer = Producer({"bootstrap.servers": TARGET, "linger.ms": 20, "acks": "1"})
        for topic in missing:
            for partition in range(estate.topics[topic]):
                for _ in range(RECORDS_PER_PARTITION):
                    while True:
                        try:
                            producer.produce(topic, b"x", partition=partition)
                            break
                        except BufferError:
                            producer.poll(0.1)
            producer.poll(0)
        left = producer.flush(120)
        if left:
            raise SystemExit(f"{left} records not delivered to the target cluster")
    timings["produce_s"] = time.monotonic() - started

    started = time.monotonic()
    todo = [g for g in estate.groups if not group_complete(admin, estate, g)]
    if todo:
        say(f"scale {estate.scale}: committing offsets for {len(todo)} groups")

    def commit(group: str) -> None:
        consumer = Consumer({"bootstrap.servers": TARGET, "group.id": group,
                             "enable.auto.commit": False})
        try:
            consumer.commit(offsets=[TopicPartition(t, p, committed_offset(p))
                                     for t in estate.groups[group]
                                     for p in range(estate.topics[t])], asynchronous=False)
        finally:
            consumer.close()

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(commit, todo))
    timings["commit_s"] = time.monotonic() - started
    return timings


def wait_for_leaders(admin: Any, estate: Estate, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        topics = admin.list_topics(timeout=60).topics
        pending = [t for t, n in estate.topics.items()
                   if t not in topics or len(topics[t].partitions) != n
                   or any(p.leader < 0 for p in topics[t].partitions.values())]
        if not pending:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"{len(pending)} topics still without leaders: {pending[:5]}...")
        time.sleep(1)


def group_complete(admin: Any, estate: Estate, group: str) -> bool:
    from confluent_kafka import ConsumerGroupTopicPartitions

    future = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group]
    try:
        answer = future.result(timeout=30)
    except Exception:
        return False
    have = {(tp.topic, tp.partition) for tp in answer.topic_partitions if tp.offset >= 0}
    return all((t, p) in have for t in estate.groups[group] for p in range(estate.topics[t]))


class ActiveMember(threading.Thread):
    """A live member: subscribed, polling, never committing (the offsets stay as built)."""

    def __init__(self, group: str, topics: list[str]) -> None:
        super().__init__(name=f"member-{group}", daemon=True)
        from confluent_kafka import Consumer

        self.consumer = Consumer({"bootstrap.servers": TARGET, "group.id": group,
                                  "enable.auto.commit": False, "session.timeout.ms": 10_000})
        self.consumer.subscribe(topics)
        self.assigned = threading.Event()
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            self.consumer.poll(0.2)
            if self.consumer.assignment():
                self.assigned.set()
        self.consumer.close()


# ---------------------------------------------------------------- the worker (child process)


def proc_stat(pid: int) -> tuple[int, float] | None:
    """(ppid, user+system CPU seconds) of a live process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def exporter_pids() -> list[int]:
    """This process and its children (watch runs the Kafka client in a child process)."""
    me = os.getpid()
    pids = [me]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = proc_stat(int(entry.name))
            if stat and stat[0] == me:
                pids.append(int(entry.name))
    return pids


def exporter_usage() -> tuple[float, dict[int, int], dict[int, float]]:
    """(CPU seconds of this process and its live children, RSS kB by pid, CPU s by pid)."""
    rss = {pid: stackctl.memory_kb(pid).get("VmRSS", 0) for pid in exporter_pids()}
    cpu = {pid: (stat[1] if (stat := proc_stat(pid)) else 0.0) for pid in rss}
    return sum(cpu.values()), rss, cpu


def requests_per_sample(probe_path: Path, starts: list[float], window_start: float
                        ) -> tuple[dict[str, float], float]:
    """(by API, all) per sample between the first probe line in the window and the last."""
    try:
        lines = [json.loads(x) for x in probe_path.read_text().splitlines() if x.strip()]
    except OSError:
        return {}, math.nan
    lines = [x for x in lines if x["t"] >= window_start]
    if len(lines) < 2 or lines[0]["pid"] != lines[-1]["pid"]:
        return {}, math.nan
    first, last = lines[0], lines[-1]
    n = sum(1 for s in starts if first["t"] < s <= last["t"])
    if n == 0:
        return {}, math.nan
    by_api = {api: (count - first["sent"].get(api, 0)) / n
              for api, count in last["sent"].items() if count > first["sent"].get(api, 0)}
    return by_api, (last["tx"] - first["tx"]) / n


def run_worker(spec_path: Path) -> None:
    """Run `watch` in this process as the CLI does, measure, write JSON to spec['out']."""
    # Imported untyped: the worker runs the exported commit (--rev), whose API may differ from
    # the working tree's that mypy sees.
    app: Any = importlib.import_module("lag_exporter.app")
    kafka_settings: Any = importlib.import_module("lag_exporter.config").kafka_settings
    configure_logging: Any = importlib.import_module("lag_exporter.logs").configure_logging
    es_module: Any = importlib.import_module("lag_exporter.sinks.elasticsearch")
    ElasticsearchSettings: Any = es_module.ElasticsearchSettings

    spec = json.loads(spec_path.read_text())
    configure_logging("info", "text")
    groups: list[str] = spec["groups"]
    warmup: int = spec["warmup"]
    ticks: int = spec["ticks"]
    interval = 1.0
    probe_path = Path(spec["out"]).with_suffix(".probe")
    probe_path.unlink(missing_ok=True)
    sampled = [0]

    # The Kafka client process unpickles the probe: it must find benchmarks/child_probe.py.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [os.environ.get("PYTHONPATH"), str(Path(__file__).resolve().parent)]))
    kafka = kafka_settings(TARGET, None, "bench")
    kafka.client_settings["statistics.interval.ms"] = "1000"
    cast(dict[str, Any], kafka.client_settings)["stats_cb"] = ChildProbe(str(probe_path),
                                                                          spec["protocol"])
    if spec["protocol"]:
        kafka.client_settings["debug"] = "protocol"
    # The CLI's timeouts for --interval 1 --timeout 10 (cli.watch).
    es = ElasticsearchSettings(urls=(ES_URL,), index=spec["index"], timeout_s=5.0)
    if hasattr(app, "make_watch"):  # up to 5493c19: one cluster, Watch(sampler, ...)
        watch = app.make_watch(kafka, groups, (), es, interval, 5.0, Path(spec["spool"]), 10.0)
        sampled_by = watch.sampler
        sources = [watch.sampler.source]
    else:  # from c88ece0: ExporterConfig -> Service(Watch(fleet of clusters, ...))
        config_module: Any = importlib.import_module("lag_exporter.config")
        selection: Any = importlib.import_module("lag_exporter.selection")
        cluster = config_module.ClusterConfig(
            "bench", kafka, selection.GroupSelection(names=tuple(groups)),
            selection.TopicSelection())
        config = config_module.ExporterConfig(
            (cluster,), elasticsearch=es, interval_s=interval, timeout_s=10.0,
            spool_dir=Path(spec["spool"]))
        watch = app.make_service(config, 10.0).watch
        sampled_by = watch.fleet
        sources = [c.source for c in watch.fleet.clusters]

    durations: list[float] = []
    docs: list[int] = []
    rss: list[tuple[float, int]] = []
    starts: list[float] = []
    queue_max = [0]
    errors: Counter[str] = Counter()
    failed_samples = [0]
    window: dict[str, float] = {}
    original_sample = sampled_by.sample
    t0 = time.monotonic()

    def timed_sample(*args: Any, **kwargs: Any) -> Any:
        if sampled[0] == warmup:  # the measured window starts with this sample
            window.update(cpu=exporter_usage()[0], wall=time.monotonic(),
                          skipped=float(skipped_ticks()))
        starts.append(time.monotonic())
        sample = original_sample(*args, **kwargs)
        sampled[0] += 1
        if sampled[0] > warmup:
            durations.append(sample.duration_s)
            docs.append(sum(len({p.topic for p in g.partitions}) for g in sample.groups))
        if sampled[0] % spec["rss_every"] == 0 or sampled[0] in (1, warmup + 1):
            rss.append((time.monotonic() - t0, sum(exporter_usage()[1].values())))
        queue_max[0] = max(queue_max[0], len(watch.outbox))
        errors.update(g.error for g in sample.groups if g.error)
        if sampled[0] > warmup and any(g.error for g in sample.groups):
            failed_samples[0] += 1
        return sample

    setattr(sampled_by, "sample", timed_sample)  # noqa: B010

    def skipped_ticks() -> int:
        """Ticks the loop overran, plus (from 690b12f on) ticks a slow cluster skipped."""
        by_cluster = getattr(getattr(watch, "fleet", None), "ticks_skipped", {})
        return int(watch.ticks_skipped) + int(sum(by_cluster.values()))

    sink = watch.delivery.sink
    original_write = sink.write
    bulk: list[float] = []
    failures: list[str] = []

    def timed_write(documents: Any) -> Any:
        started = time.perf_counter()
        try:
            report = original_write(documents)
        except Exception as error:
            failures.append(f"{time.monotonic() - t0:.0f}s {error}")
            raise
        bulk.append(time.perf_counter() - started)
        return report

    setattr(sink, "write", timed_write)  # noqa: B010

    end: dict[str, Any] = {}
    original_run_sample = watch._take_sample

    def last_sample() -> None:  # measure before run() closes the Kafka child process
        original_run_sample()
        if sampled[0] == warmup + ticks:
            cpu, by_pid, cpu_by_pid = exporter_usage()
            end.update(wall=time.monotonic(), cpu=cpu, rss=by_pid, cpu_by_pid=cpu_by_pid)

    setattr(watch, "_take_sample", last_sample)  # noqa: B010
    timer = None
    if spec.get("seconds"):  # the soak: stop by time, however many ticks were skipped

        def stop_after() -> None:
            cpu, by_pid, cpu_by_pid = exporter_usage()
            end.update(wall=time.monotonic(), cpu=cpu, rss=by_pid, cpu_by_pid=cpu_by_pid)
            watch.stop()

        timer = threading.Timer(spec["seconds"] + warmup * interval, stop_after)
        timer.daemon = True
        timer.start()
    watch.run(max_samples=None if timer else warmup + ticks)
    end_wall, end_cpu = end["wall"], end["cpu"]
    rss.append((end_wall - t0, sum(end["rss"].values())))
    by_api, tx = requests_per_sample(probe_path, starts, window["wall"])
    restarts = sum(getattr(source, "restarts", 0) for source in sources)

    result = {
        "durations_s": durations,
        "docs_per_sample": statistics.median(docs) if docs else 0,
        "requests_per_sample": {"all requests (stats tx)": tx},
        "requests_by_api": by_api,
        "kafka_client_restarts": restarts,
        "rss_by_process_kb_at_end": {str(k): v for k, v in end["rss"].items()},
        "cpu_s_by_process_at_end": {str(k): v for k, v in end["cpu_by_pid"].items()},
        "cpu_pct": 100 * (end_cpu - window["cpu"]) / (end_wall - window["wall"]),
        "cpu_s_per_sample": (end_cpu - window["cpu"]) / max(1, len(durations)),
        "rss_kb": rss,
        "bulk_s": bulk,
        "bulk_failures": failures,
        "queue_max": queue_max[0],
        "undelivered": len(watch.outbox),
        "delivered": watch.delivery.delivered,
        "ticks_skipped": skipped_ticks() - int(window["skipped"]),
        "ticks_skipped_total": skipped_ticks(),
        "samples": watch.samples_taken,
        "group_errors": dict(errors.most_common(5)),
        "samples_with_group_errors": failed_samples[0],
    }
    Path(spec["out"]).write_text(json.dumps(result))


# ---------------------------------------------------------------- the driver


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def es_request(method: str, path: str) -> dict[str, Any] | None:
    request = urllib.request.Request(ES_URL + path, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            body: dict[str, Any] = json.loads(answer.read() or b"{}")
            return body
    except (urllib.error.URLError, OSError, ValueError):
        return None


def py_spy_profile(pid: int, seconds: int, out: Path) -> subprocess.Popen[bytes] | None:
    py_spy = shutil.which("py-spy", path=str(REPO / ".venv" / "bin")) or shutil.which("py-spy")
    if not py_spy:
        say("py-spy not found: `.venv/bin/pip install py-spy` to profile")
        return None
    return subprocess.Popen([py_spy, "record", "--pid", str(pid), "--duration", str(seconds),
                             "--rate", "100", "--subprocesses", "--format", "raw",
                             "--output", str(out),
                             "--nonblocking"],
                            stdout=subprocess.DEVNULL,
                            stderr=out.with_suffix(".log").open("w"))


def summarise_profile(path: Path, top: int = 15) -> list[str]:
    """Self and inclusive sample counts per function from py-spy's collapsed stacks."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [re.sub(r"\s*\(.*?/(lag_exporter|site-packages|lib/python3\.\d+)/", r" (\1/", f)
                  for f in stack.split(";")]
        total += count
        own[frames[-1]] += count
        for frame in {re.sub(r":\d+\)$", ")", f) for f in frames}:
            inclusive[frame] += count
    lines = [f"{total} samples at 100 Hz (all threads, idle excluded)", "self time:"]
    lines += [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in own.most_common(top)]
    lines.append("inclusive (lag_exporter frames):")
    lines += [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in inclusive.most_common()
              if "lag_exporter" in frame][:top]
    return lines


def cpu_ticks() -> list[int]:
    """The machine's CPU time by kind (user nice system idle iowait irq softirq steal)."""
    return [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]


def machine_load(before: list[int], after: list[int]) -> dict[str, float]:
    """How busy the whole machine was (all processes, all cores) and how much time the
    hypervisor stole: the context for latency numbers on a shared 2-core VM."""
    delta = [b - a for a, b in zip(before, after, strict=True)]
    total = sum(delta) or 1
    idle = delta[3] + delta[4]
    return {"busy_pct": round(100 * (total - idle - delta[7]) / total, 1),
            "steal_pct": round(100 * delta[7] / total, 1)}


def run_worker_process(estate: Estate, ticks: int, workdir: Path, label: str, protocol: bool,
                       profile_s: int, rss_every: int, seconds: float = 0) -> dict[str, Any]:
    index = f"bench-{label}"
    if es_request("DELETE", f"/{index}") is None:
        say(f"could not delete index {index} (Elasticsearch down?): going on")
    run = f"{label}-protocol" if protocol else label
    spool = workdir / f"spool-{run}"
    shutil.rmtree(spool, ignore_errors=True)
    spec = {"groups": list(estate.groups), "ticks": ticks, "warmup": WARMUP_TICKS,
            "index": index, "spool": str(spool), "out": str(workdir / f"result-{run}.json"),
            "rss_every": rss_every, "protocol": protocol, "seconds": seconds}
    spec_path = workdir / f"spec-{run}.json"
    spec_path.write_text(json.dumps(spec))
    log_path = workdir / f"worker-{run}.log"
    say(f"scale {label}: watch over {len(estate.groups)} groups, {estate.partitions} partitions, "
        f"{WARMUP_TICKS}+{ticks} ticks{' counting requests' if protocol else ''} "
        f"(log: {log_path})")
    profiler = None
    ticks_before = cpu_ticks()
    with log_path.open("w") as log_file:
        worker = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker",
                                   str(spec_path)], stderr=log_file, stdout=log_file,
                                  env=source_env(), cwd=workdir)
        if profile_s:
            time.sleep(WARMUP_TICKS + 5)
            profiler = py_spy_profile(worker.pid, profile_s, workdir / f"profile-{run}.txt")
        code = worker.wait()
    machine = machine_load(ticks_before, cpu_ticks())
    if profiler is not None:
        profiler.wait()
    if code != 0:
        raise SystemExit(f"worker for scale {label} failed ({code}):\n"
                         + "".join(log_path.read_text().splitlines(True)[-30:]))
    result: dict[str, Any] = json.loads(Path(str(spec["out"])).read_text())
    result["machine_load"] = machine
    es_request("POST", f"/{index}/_refresh")
    counted = es_request("GET", f"/{index}/_count")
    result["es_docs"] = counted.get("count") if counted else None
    result["log_warnings"] = [line.strip() for line in log_path.read_text().splitlines()
                              if " WARNING " in line or " ERROR " in line][:20]
    if profiler is not None and (workdir / f"profile-{run}.txt").exists():
        result["profile"] = summarise_profile(workdir / f"profile-{run}.txt")
    return result


def run_scale(estate: Estate, ticks: int, workdir: Path, label: str, profile_s: int = 0,
              rss_every: int = 10, protocol_ticks: int = 35, seconds: float = 0
              ) -> dict[str, Any]:
    """A short run counting requests by API (protocol debug logging costs CPU, so it is
    separate), then the measured run; active members live through both."""
    members = [ActiveMember(g, estate.groups[g]) for g in estate.active]
    for member in members:
        member.start()
    try:
        for member in members:
            if not member.assigned.wait(60):
                say(f"warning: {member.name} got no assignment within 60 s")
        counted = (run_worker_process(estate, protocol_ticks, workdir, label, True, 0, 1000)
                   if protocol_ticks else {})
        result = run_worker_process(estate, ticks, workdir, label, False, profile_s, rss_every,
                                    seconds)
    finally:
        for member in members:
            member.halt.set()
        for member in members:
            member.join(10)
    result["requests_by_api"] = counted.get("requests_by_api", {})
    result["protocol_run"] = {k: counted.get(k) for k in ("durations_s", "ticks_skipped")}
    return result


SOURCE: list[Path] = []
"""The exported lag_exporter tree the worker and snapshot run (empty: the working tree)."""


def source_env() -> dict[str, str]:
    env = dict(os.environ)
    if SOURCE:
        env["PYTHONPATH"] = str(SOURCE[0])
    return env


def export_source(rev: str, workdir: Path) -> str:
    """`git archive` rev's lag_exporter/ into workdir/src: the benchmark measures one commit,
    whatever is being edited in the working tree meanwhile."""
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", rev], capture_output=True,
                            text=True, check=True).stdout.strip()
    target = workdir / "src"
    target.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", commit, "lag_exporter"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    SOURCE.append(target)
    return commit


def timed_child(cmd: Sequence[str]) -> tuple[float, float, int, str]:
    """Wall time, CPU time (user+sys of the child and its children), exit code, output."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180,
                          stdin=subprocess.DEVNULL, env=source_env(), cwd=tempfile.gettempdir())
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done.returncode, done.stdout + done.stderr


def baselines(estate: Estate, repeat: int) -> dict[str, Any]:
    group = next(g for g in estate.groups if g not in estate.active)
    describe = stackctl.tool_command(
        "kafka-consumer-groups", ["--bootstrap-server", TARGET, "--describe", "--group", group])
    snapshot = [sys.executable, "-m", "lag_exporter", "snapshot", "--bootstrap-server", TARGET,
                "--group", group]
    runs: dict[str, list[tuple[float, float]]] = {"describe": [], "snapshot": []}
    for _ in range(repeat):
        for name, cmd in (("describe", describe), ("snapshot", snapshot)):
            wall, cpu, code, output = timed_child(cmd)
            if code != 0:
                raise SystemExit(f"{name} failed ({code}): {output[-2000:]}")
            runs[name].append((wall, cpu))
    return {
        "group": group,
        "describe_cmd": "scripts/stack kafka-consumer-groups --bootstrap-server "
                        f"{TARGET} --describe --group {group}",
        "snapshot_cmd": shlex.join([".venv/bin/lag-exporter", *snapshot[3:]]),
        **{f"{name}_wall_s": statistics.median(w for w, _ in r) for name, r in runs.items()},
        **{f"{name}_cpu_s": statistics.median(c for _, c in r) for name, r in runs.items()},
        "runs": runs,
    }


def check_stack() -> None:
    """Never starts or stops anything (other people's tests stop the source broker and
    Elasticsearch on purpose): the target broker must answer; Elasticsearch may be down."""
    deadline = time.monotonic() + 120
    while not stackctl.port_open(29092):
        if time.monotonic() > deadline:
            raise SystemExit("the target Kafka (127.0.0.1:29092) is not up: `scripts/stack up`")
        time.sleep(2)
    if not stackctl.port_open(19200):
        say("Elasticsearch (127.0.0.1:19200) is down: the exporter will queue until it is back")


def machine_info() -> dict[str, str]:
    info = {"nproc": str(os.cpu_count()), "python": platform.python_version(),
            "kernel": platform.release()}
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal"):
            info["memory"] = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            info["cpu"] = line.split(":", 1)[1].strip()
            break
    java = subprocess.run([stackctl.java(), "-version"], capture_output=True, text=True)
    info["java"] = (java.stderr.splitlines() or ["?"])[0]
    kafka_jar = next(iter(sorted(Path(stackctl.libs("kafka4")).glob("kafka_2*.jar"))), None)
    info["kafka"] = kafka_jar.name if kafka_jar else "?"
    # The integ-test-zip has no `GET /` (405), so the version comes from the node info.
    es = es_request("GET", "/_nodes/_local?filter_path=nodes.*.version")
    versions = [node["version"] for node in (es or {}).get("nodes", {}).values()]
    info["elasticsearch"] = versions[0] if versions else f"{stackctl.ES_VERSION} (down)"
    import confluent_kafka

    info["confluent-kafka"] = f"{confluent_kafka.version()[0]} " \
                              f"(librdkafka {confluent_kafka.libversion()[0]})"
    info["load average at start"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return info


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f}" if not math.isnan(seconds) else "-"


def table(rows: list[tuple[str, Estate, dict[str, Any]]]) -> list[str]:
    out = ["| scale | topics / partitions / groups (active) | ticks | sample p50 / p99 / max ms "
           "| ListOffsets / OffsetFetch / FindCoordinator / Metadata / DescribeGroups per sample "
           "| all req/sample: protocol log / stats tx (budget) | CPU % of 1 core "
           "| RSS start → end MB "
           "| ES bulk p50 / p99 ms | bulk failures / max queue / undelivered | ticks missed |",
           "|" + "---|" * 11]
    for label, estate, r in rows:
        d = r["durations_s"]
        req = r["requests_by_api"]
        counts = " / ".join(f"{req.get(api, 0):.2f}" for api in APIS[:5])
        total = sum(req.values())
        tx = r["requests_per_sample"].get("all requests (stats tx)", math.nan)
        budget = 1 + len(estate.groups) + 10
        rss = r["rss_kb"]
        rss_start = next((kb for t, kb in rss[1:2]), rss[0][1])  # after the first warm-up tick
        out.append(
            f"| {label} | {len(estate.topics)} / {estate.partitions} / {len(estate.groups)} "
            f"({len(estate.active)}) | {len(d)} | {ms(percentile(d, 50))} / "
            f"{ms(percentile(d, 99))} / {ms(max(d))} | {counts} | {total:.1f} / {tx:.1f} "
            f"({budget}) | "
            f"{r['cpu_pct']:.1f} | {rss_start / 1024:.0f} → {rss[-1][1] / 1024:.0f} | "
            f"{ms(percentile(r['bulk_s'], 50))} / {ms(percentile(r['bulk_s'], 99))} | "
            f"{len(r['bulk_failures'])} / {r['queue_max']} / {r['undelivered']} | "
            f"{r['ticks_skipped']} |")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", default="a,b,c", help="comma-separated, of a,b,c")
    parser.add_argument("--ticks", type=int, default=120, help="measured ticks per scale")
    parser.add_argument("--soak-minutes", type=float, default=0.0,
                        help="also run scale c this long (0: no soak)")
    parser.add_argument("--profile", default="", help="scale to profile with py-spy (e.g. c)")
    parser.add_argument("--profile-seconds", type=int, default=60)
    parser.add_argument("--protocol-ticks", type=int, default=35,
                        help="ticks of the separate run that counts requests by API")
    parser.add_argument("--repeat", type=int, default=3, help="baseline repetitions")
    parser.add_argument("--no-baselines", action="store_true")
    parser.add_argument("--rev", default="HEAD",
                        help="commit of lag_exporter/ to measure (git archive); 'worktree' for the "
                             "working tree as it is")
    parser.add_argument("--patch", type=Path,
                        help="apply this diff (patch -p1) to the exported lag_exporter/ first: "
                             "measures a proposed change without touching the repository")
    parser.add_argument("--json", type=Path, help="also write all results here")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        run_worker(args.worker)
        return 0
    if args.patch and args.rev == "worktree":
        parser.error("--patch needs --rev COMMIT (the working tree is measured as it is)")

    command = shlex.join([".venv/bin/python", "benchmarks/scale.py",
                          *(sys.argv[1:] if argv is None else argv)])
    check_stack()
    machine = machine_info()
    workdir = Path(tempfile.mkdtemp(prefix="lag-exporter-bench-"))
    if args.rev != "worktree":
        machine["lag_exporter commit"] = export_source(args.rev, workdir)
        if args.patch:
            subprocess.run(["patch", "-p1", "-d", str(SOURCE[0]), "-i", str(args.patch.resolve())],
                           check=True, stdout=subprocess.DEVNULL)
            machine["lag_exporter commit"] += f" + {args.patch}"
    scales = [s.strip() for s in args.scales.split(",") if s.strip()]
    rows: list[tuple[str, Estate, dict[str, Any]]] = []
    builds: dict[str, dict[str, float]] = {}
    results: dict[str, Any] = {"command": command, "machine": machine}
    base: dict[str, Any] | None = None
    for scale in scales:
        estate = plan_estate(scale)
        builds[scale] = build_estate(estate)
        say(f"scale {scale}: estate ready {builds[scale]}")
        if scale == "a" and not args.no_baselines:
            base = baselines(estate, args.repeat)
            say(f"baselines: {base}")
        profile_s = args.profile_seconds if scale == args.profile else 0
        rows.append((scale, estate, run_scale(estate, args.ticks, workdir, scale, profile_s,
                                                 protocol_ticks=args.protocol_ticks)))
        say("\n".join(table(rows[-1:])[2:]))
        if args.json:
            args.json.write_text(json.dumps({"partial": {k: r for k, _, r in rows}}, default=str))
    if args.soak_minutes > 0:
        estate = plan_estate("c")
        builds.setdefault("c", build_estate(estate))
        seconds = args.soak_minutes * 60  # by time: samples that overrun skip ticks
        rows.append(("c-soak", estate, run_scale(estate, int(seconds), workdir, "c-soak",
                                                 rss_every=30, protocol_ticks=0,
                                                 seconds=seconds)))

    lines = [f"command: {command}",
             "machine: " + "; ".join(f"{k} {v}" for k, v in machine.items()),
             f"estate build (s): {json.dumps(builds)}", "", *table(rows), ""]
    for label, _, r in rows:
        lines.append(f"scale {label}: documents per sample {r['docs_per_sample']}, "
                     f"ES documents stored {r['es_docs']}, samples {r['samples']}, "
                     f"CPU s per sample {r['cpu_s_per_sample'] * 1000:.1f} ms, "
                     f"requests/sample by API {json.dumps(r['requests_by_api'], sort_keys=True)}, "
                     f"samples with failed groups {r.get('samples_with_group_errors')} "
                     f"{json.dumps(r.get('group_errors'))}, "
                     f"Kafka client restarts {r.get('kafka_client_restarts')}, "
                     f"whole machine during the run: {r.get('machine_load', {}).get('busy_pct')} % "
                     f"busy, {r.get('machine_load', {}).get('steal_pct')} % stolen (of 2 cores)")
        if r["bulk_failures"]:
            lines.append(f"  ES outage seen: {len(r['bulk_failures'])} failed bulk writes, "
                         f"first: {r['bulk_failures'][0]}")
        if label == "c-soak" or len(r["rss_kb"]) > 2:
            lines.append("  RSS MB over time: " + ", ".join(
                f"{t:.0f}s={kb / 1024:.1f}" for t, kb in r["rss_kb"]))
        for line in r.get("profile", []):
            lines.append(f"  profile {line}")
    warm_a = next((r for label, _, r in rows if label == "a"), None)
    if base is not None:
        topics_a = len(plan_estate("a").topics)
        lines += ["", f"baselines (scale a, group {base['group']}, median of {args.repeat}):",
                  f"  kafka-consumer-groups --describe: {base['describe_wall_s']:.2f} s wall, "
                  f"{base['describe_cpu_s']:.2f} CPU s   ({base['describe_cmd']})",
                  f"  lag-exporter snapshot:            {base['snapshot_wall_s']:.2f} s wall, "
                  f"{base['snapshot_cpu_s']:.2f} CPU s   ({base['snapshot_cmd']})",
                  f"  describe / snapshot: {base['describe_wall_s'] / base['snapshot_wall_s']:.1f}x"
                  f" wall, {base['describe_cpu_s'] / base['snapshot_cpu_s']:.1f}x CPU"]
        if warm_a is not None:
            warm_wall = percentile(warm_a["durations_s"], 50)
            warm_cpu = warm_a["cpu_s_per_sample"]
            old_wall = topics_a * base["describe_wall_s"]
            old_cpu = topics_a * base["describe_cpu_s"]
            lines += [
                f"  warm in-watch sample of all {len(plan_estate('a').groups)} groups: "
                f"{warm_wall * 1000:.1f} ms wall (p50), {warm_cpu * 1000:.1f} ms CPU",
                f"  old pipeline per second at scale a = {topics_a} topics x one describe: "
                f"{old_wall:.1f} s wall, {old_cpu:.1f} CPU s",
                f"  old per-second cost / warm sample: {old_wall / warm_wall:.0f}x wall, "
                f"{old_cpu / warm_cpu:.0f}x CPU",
                f"  one describe / warm sample: {base['describe_wall_s'] / warm_wall:.0f}x wall, "
                f"{base['describe_cpu_s'] / warm_cpu:.0f}x CPU"]
        results["baselines"] = base
    print("\n".join(lines), flush=True)
    results["rows"] = {label: r for label, _, r in rows}
    results["builds"] = builds
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    say(f"worker logs and raw profiles in {workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
