"""What lag in seconds and the status verdict add to one sample's CPU at scale c (issue 11).

    .venv/bin/python benchmarks/estimates_cost.py [--ticks 120]

Runs the real Sampler over a fake Kafka shaped like the scale benchmark's estate c (10,000
partitions in topics of 10-50, 500 groups each committed on its own topics, records arriving on
every partition every tick) twice: with seconds and status as `watch` runs them, and with both
switched off (the sampler as it was before issue 11). Prints the CPU per sample of each (process
time, median and p90 over the ticks after a warm-up) and the difference, and the memory of the
history and status tracker (tracemalloc). Kafka's own cost (the Kafka client process, librdkafka)
is not in either number: compare the difference with the whole exporter's CPU at scale c in
BENCHMARKS.md (the same work plus the client process).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
import tracemalloc
from collections.abc import Mapping, Sequence

from lag_exporter.errors import SourceError
from lag_exporter.estimates import Estimates
from lag_exporter.model import GroupOffsets, PartitionLag, TopicPartition
from lag_exporter.sampler import Sampler


class EstateC:
    """10,000 partitions, 500 groups, every partition moving: the busiest case for the history."""

    cluster = "bench"

    def __init__(self, busy: bool = True) -> None:
        self.busy = busy
        self.partitions_of: dict[str, list[TopicPartition]] = {}
        topics: list[list[TopicPartition]] = []
        total, n = 0, 0
        while total < 10_000:
            size = min(10 + (n * 7) % 41, 10_000 - total)
            topics.append([TopicPartition(f"bench.c.{n}", p) for p in range(size)])
            total, n = total + size, n + 1
        for g in range(500):  # each group on 1-2 topics; some topics shared, as in the estate
            self.partitions_of[f"bench-c-{g}"] = topics[g % len(topics)] + (
                topics[(g * 3 + 1) % len(topics)] if g % 2 else [])
        self.tick = 0

    def committed_offsets(self, groups: Sequence[str]) -> dict[str, GroupOffsets | SourceError]:
        self.tick += 1 if self.busy else 0
        return {g: GroupOffsets(g, {tp: self.tick * 10 - 5 - (hash(g) % 5)
                                    for tp in self.partitions_of[g]}) for g in groups}

    def group_members(
        self, groups: Sequence[str]
    ) -> dict[str, tuple[str, frozenset[TopicPartition]] | SourceError]:
        return {g: ("EMPTY", frozenset()) for g in groups}

    def topic_partitions(self, topics: Sequence[str]) -> dict[str, list[int] | SourceError]:
        return {}

    def high_watermarks(
        self, partitions: Sequence[TopicPartition]
    ) -> dict[TopicPartition, int | SourceError]:
        return {tp: self.tick * 10 + 3 for tp in partitions}

    def list_groups(self) -> list[str] | SourceError:
        return list(self.partitions_of)

    def record_times(
        self, requests: Mapping[TopicPartition, int]
    ) -> dict[TopicPartition, tuple[int, int, float] | SourceError]:
        return {tp: (offset, offset, time.time() - 1.0) for tp, offset in requests.items()}

    def close(self) -> None:
        pass


class WithoutEstimates(Estimates):
    """The sampler before issue 11: lags only."""

    def observe_watermarks(self, high_watermarks: Mapping[TopicPartition, int], at: float
                           ) -> None:
        pass

    def record_time_requests(self, committed: object, now: float) -> dict[TopicPartition, int]:
        return {}

    def judge(self, group: str, lags: object, assigned: frozenset[TopicPartition],
              wall_now: float, now: float) -> tuple[PartitionLag, ...]:
        return tuple(lags)  # type: ignore[arg-type]


def cpu_per_sample(estimates: Estimates, ticks: int, busy: bool = True) -> list[float]:
    source = EstateC(busy)
    clock = [0.0]
    sampler = Sampler(source, list(source.partitions_of), clock=lambda: clock[0],
                      estimates=estimates, wall_clock=lambda: 1_800_000_000.0 + clock[0])
    costs = []
    for tick in range(ticks):
        clock[0] = float(tick)
        started = time.process_time()
        sampler.sample()
        costs.append(time.process_time() - started)
    return costs[10:]  # warm-up: the first samples build every structure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ticks", type=int, default=120)
    ticks = parser.parse_args().ticks
    gc.freeze()
    for busy in (False, True):
        estate = ("busy (every committed offset and end offset moves every tick)" if busy
                  else "quiet (as the benchmark's estate: nothing moves)")
        print(f"estate c, {estate}:")
        results = {}
        for name, estimates in (("without", WithoutEstimates()), ("with", Estimates())):
            costs = sorted(cpu_per_sample(estimates, ticks, busy))
            results[name] = (statistics.median(costs), costs[int(len(costs) * 0.9)])
            print(f"  {name:>7} seconds and status: CPU per sample median "
                  f"{results[name][0] * 1000:.1f} ms, p90 {results[name][1] * 1000:.1f} ms")
        added = results["with"][0] - results["without"][0]
        print(f"  added by seconds and status: {added * 1000:.1f} ms CPU per sample (median)")
    tracemalloc.start()
    estimates = Estimates()
    cpu_per_sample(estimates, 200)
    size = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    print(f"memory of the history and status after 200 busy ticks: {size / 2**20:.1f} MiB "
          f"({len(estimates.history)} partitions, {len(estimates.status)} group partitions)")
    print("reproduce: .venv/bin/python benchmarks/estimates_cost.py --ticks", ticks)


if __name__ == "__main__":
    main()
