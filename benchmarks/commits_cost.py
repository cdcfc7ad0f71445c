"""CPU and memory of following commits and of /metrics, without Kafka (issue 13).

    .venv/bin/python benchmarks/commits_cost.py
    .venv/bin/python benchmarks/commits_cost.py --source DIR   # another lag_exporter/, e.g.
        mkdir /tmp/old && git archive 9947e42 lag_exporter | tar -x -C /tmp/old

1. /metrics at estate c's size (500 groups, 10,000 partitions in their topics, 20,000 group x
   partition series with lag in seconds and status): CPU of the first scrape after a new sample
   in which every group's lag moved, after one in which none did (the same lags; and the same
   lags with their seconds a second older, as at every tick of a quiet estate), and of a scrape
   between two samples (before this change, every scrape cost a full render).
2. Decoding `__consumer_offsets` (offsets_topic.CommitStore.add): CPU per record, keys new and
   keys seen before (a group's keys repeat at each of its commits).
3. The store's memory (tracemalloc) per group x partition with a full history, at 20,000 pairs
   and 200,000 pairs, and that per-pair cost multiplied out to 10,000 partitions x 500 groups
   (every group committed on every partition: the worst case, 5,000,000 pairs).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import importlib
import statistics
import struct
import sys
import time
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ARGS = argparse.ArgumentParser(description=__doc__.split("\n")[0])
ARGS.add_argument("--source", type=Path, default=Path(__file__).resolve().parents[1],
                  help="the directory holding the lag_exporter/ package to measure")
SOURCE = ARGS.parse_args().source
sys.path.insert(0, str(SOURCE))

metrics_module: Any = importlib.import_module("lag_exporter.metrics")
model: Any = importlib.import_module("lag_exporter.model")
GroupLag, PartitionLag, Sample = model.GroupLag, model.PartitionLag, model.Sample

GROUPS = 500
PARTITIONS_PER_GROUP = 40  # two topics of 20: 20,000 group x partition series


def estate_c_sample(moved: int = 0) -> Any:
    groups = []
    for g in range(GROUPS):
        partitions = tuple(
            PartitionLag(f"bench.c.{(g + t) % 500}", p, 100 + p, 110 + p + g % 7 + moved,
                         10 + g % 7 + moved, 1.5 + p / 10 + moved, "OK")
            for t in range(2) for p in range(PARTITIONS_PER_GROUP // 2))
        groups.append(GroupLag("bench", f"bench-c-{g}", partitions, state="EMPTY"))
    return Sample(datetime.now(UTC), tuple(groups), duration_s=0.2)


def aged(sample: Any, age: float) -> Any:
    """The sample a tick later in which no group moved: the same partitions with their seconds
    `age` older (since 1296fd1 passed on as they were, with GroupLag.seconds_age; before, every
    partition rebuilt with its seconds aged)."""
    if "seconds_age" in GroupLag.__dataclass_fields__:
        groups = tuple(dataclasses.replace(g, seconds_age=age) for g in sample.groups)
    else:
        groups = tuple(dataclasses.replace(g, partitions=tuple(
            p._replace(seconds=p.seconds + age) for p in g.partitions)) for g in sample.groups)
    return dataclasses.replace(sample, groups=groups)


def cpu_ms(action: object, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        started = time.process_time()
        action()  # type: ignore[operator]
        out.append((time.process_time() - started) * 1000)
    return out


def metrics_cost() -> None:
    metrics = metrics_module.LagMetrics()
    metrics.read_delivery_from(lambda: metrics_module.DeliveryState(1, 0, 0, 0, 0.5))
    moved, same = [], []
    for n in range(8):  # a new sample before each scrape, every group's lag moved
        metrics.observe(estate_c_sample(moved=n))
        moved += cpu_ms(metrics.render, 1)
    for _ in range(8):  # a new sample, equal to the last one
        metrics.observe(estate_c_sample(moved=7))
        same += cpu_ms(metrics.render, 1)
    still = estate_c_sample(moved=7)
    aging = []
    for n in range(8):  # a new sample, nothing moved, the seconds a second older each time
        metrics.observe(aged(still, float(n + 1)))
        aging += cpu_ms(metrics.render, 1)
    cached = cpu_ms(metrics.render, 30)
    body = metrics.render()
    lines = body.count(b"\n")
    print(f"/metrics at estate c ({len(body):,} bytes, {lines:,} lines), lag_exporter from "
          f"{SOURCE}:")
    for label, values in (("first scrape after a sample where every group moved", moved[1:]),
                          ("first scrape after a sample where none moved", same),
                          ("... none moved, their seconds a second older", aging),
                          ("scrape between two samples", cached)):
        print(f"  {label + ':':54} median {statistics.median(values):6.1f} ms CPU, "
              f"max {max(values):6.1f}")
    print(f"  per-sample renders: {getattr(metrics, 'renders', 'not counted')} for 24 samples "
          f"and {24 + 30 + 1} scrapes")


def key(group: str, topic: str, partition: int) -> bytes:
    g, t = group.encode(), topic.encode()
    return (struct.pack(">hh", 1, len(g)) + g + struct.pack(">h", len(t)) + t
            + struct.pack(">i", partition))


def value(offset: int, at_ms: int) -> bytes:
    """Version 4, as Kafka 4.1 writes it (empty metadata, no tagged field)."""
    return struct.pack(">hqi", 4, offset, -1) + b"\x01" + struct.pack(">q", at_ms) + b"\x00"


def keys_of(pairs: int) -> list[bytes]:
    per_group = PARTITIONS_PER_GROUP
    return [key(f"bench-c-{n // per_group}", f"bench.c.{n // 20 % 500}", n % 20)
            for n in range(pairs)]


def decode_cost() -> None:
    keys = keys_of(GROUPS * PARTITIONS_PER_GROUP)
    store = offsets_topic.CommitStore()
    rounds = 10
    records = [(k, value(1000 + r, 1_795_000_000_000 + r)) for r in range(rounds) for k in keys]
    started = time.process_time()
    for k, v in records[:len(keys)]:
        store.add(k, v)
    first = (time.process_time() - started) / len(keys) * 1e6
    started = time.process_time()
    for k, v in records[len(keys):]:
        store.add(k, v)
    again = (time.process_time() - started) / (len(records) - len(keys)) * 1e6
    print(f"decoding __consumer_offsets ({len(records):,} records, {len(keys):,} keys): "
          f"{first:.2f} us CPU per record with a new key, {again:.2f} us with a key seen before")
    print(f"  e.g. all 20,000 pairs committed every second: {again * 20_000 / 1000:.0f} ms "
          f"CPU per second")


def memory_per_pair(pairs: int) -> float:
    keys = keys_of(pairs)
    history = offsets_topic.HISTORY
    values = [[value(1000 + r, 1_795_000_000_000 + r) for r in range(history)]]
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    store = offsets_topic.CommitStore()
    for r in range(history):  # each pair with a full history of moved offsets
        v = values[0][r]
        for k in keys:
            store.add(k, v)
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    del store
    return used / pairs


def memory_cost() -> None:
    for pairs in (20_000, 200_000):
        per_pair = memory_per_pair(pairs)
        print(f"store memory at {pairs:,} group x partition pairs (history "
              f"{offsets_topic.HISTORY}): "
              f"{per_pair:.0f} bytes per pair, {per_pair * pairs / 2**20:.1f} MiB "
              f"(decoded keys included)")
    print(f"  10,000 partitions x 500 groups, every group on every partition (5,000,000 pairs): "
          f"~{per_pair * 5_000_000 / 2**30:.1f} GiB; keys remembered stop at 500,000, so "
          f"~{(per_pair - 250) * 5_000_000 / 2**30 + 0.12:.1f} GiB")


if __name__ == "__main__":
    metrics_cost()
    try:
        offsets_topic: Any = importlib.import_module("lag_exporter.offsets_topic")
    except ImportError:
        sys.exit(0)  # a lag_exporter/ from before the follower
    decode_cost()
    memory_cost()
