"""What lag in seconds and the status verdict add to one sample's CPU at scale c (issue 11).

    .venv/bin/python benchmarks/estimates_cost.py [--ticks 120]

Runs the real Sampler over a fake Kafka shaped like the scale benchmark's estate c (10,000
partitions in topics of 10-50, 500 groups each committed on its own topics, records arriving on
every partition every tick) twice, tick by tick in turns: with seconds and status as `watch`
runs them, and with both switched off (the sampler as it was before issue 11), each sample
followed by its documents and their bulk body (as watch builds them), in three estates: quiet,
typical (records arrive every second, groups commit every 5 s, as Kafka consumers do by
default) and extreme (every commit moves every second). Prints the CPU per sample of each
(process time: mean, median and p90 over the ticks after a warm-up), the part spent in seconds
and status (timed inside the Estimates methods), what they add per sample (with - without, tick
by tick) and the bulk body sizes, and the memory of the history and status tracker
(tracemalloc). Kafka's own cost (the Kafka client process, librdkafka), the spool and the log of
status changes are not in these numbers: compare the difference with the whole exporter's CPU
at scale c in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import statistics
import time
import tracemalloc
from collections.abc import Mapping, Sequence
from typing import Any

from lag_exporter.documents import WideDocuments
from lag_exporter.errors import SourceError
from lag_exporter.estimates import Estimates
from lag_exporter.gc_tuning import relax_gc
from lag_exporter.model import GroupOffsets, PartitionLag, TopicPartition
from lag_exporter.sampler import Sampler
from lag_exporter.sinks.elasticsearch import OrjsonNdjsonSerializer


class EstateC:
    """10,000 partitions, 500 groups, every partition moving: the busiest case for the history."""

    cluster = "bench"

    def __init__(self, busy: bool = True, commit_every: int = 1) -> None:
        self.busy = busy
        self.commit_every = commit_every
        """Ticks between two commits of a group (staggered across groups)."""
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
        offsets: dict[str, GroupOffsets | SourceError] = {}
        for g in groups:
            committed_at = self.tick - (self.tick + sum(map(ord, g))) % self.commit_every
            offsets[g] = GroupOffsets(g, {tp: committed_at * 10 - 5 - (len(g) % 5)
                                          for tp in self.partitions_of[g]})
        return offsets

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

    def judge_as_of(self, group: str, lags: object, assigned: frozenset[TopicPartition],
                    wall_now: float, now: float) -> tuple[tuple[PartitionLag, ...], float]:
        return tuple(lags), 0.0  # type: ignore[arg-type]


class TimedEstimates(Estimates):
    """Estimates that add up the CPU time spent in them (and in the generators they consume)."""

    spent = 0.0

    def _timed(name: str) -> Any:  # type: ignore[misc]
        method = getattr(Estimates, name)

        def timed(self: TimedEstimates, *args: Any) -> Any:
            started = time.process_time()
            try:
                return method(self, *args)
            finally:
                self.spent += time.process_time() - started
        return timed

    observe_watermarks = _timed("observe_watermarks")
    record_time_requests = _timed("record_time_requests")
    remember_record_times = _timed("remember_record_times")
    judge_as_of = _timed("judge_as_of")
    retain = _timed("retain")


class Run:
    """One sampler over its own estate, each sample followed by its documents and bulk body."""

    def __init__(self, estimates: Estimates, busy: bool, commit_every: int) -> None:
        source = EstateC(busy, commit_every)
        self.clock = [0.0]
        self.estimates = estimates
        self.sampler = Sampler(source, list(source.partitions_of), clock=lambda: self.clock[0],
                               estimates=estimates,
                               wall_clock=lambda: 1_800_000_000.0 + self.clock[0])
        self.bulk_body = OrjsonNdjsonSerializer()
        self.documents = WideDocuments()  # as watch builds them, sample after sample
        self.costs: list[float] = []
        self.in_estimates: list[float] = []
        self.json_bytes = 0

    def tick(self, tick: int) -> None:
        self.clock[0] = float(tick)
        spent_before = getattr(self.estimates, "spent", 0.0)
        started = time.process_time()
        documents = self.documents(self.sampler.sample())
        body = self.bulk_body.dumps([part for document in documents for part in (
            {"create": {"_index": "consumer_lag", "_id": document.doc_id}}, document.source)])
        self.costs.append(time.process_time() - started)
        self.in_estimates.append(getattr(self.estimates, "spent", 0.0) - spent_before)
        self.json_bytes = len(body)


def cpu_per_sample(estimates: Estimates, ticks: int, busy: bool = True, commit_every: int = 1
                   ) -> tuple[list[float], list[float]]:
    """(CPU per sample: the sample, its documents and their bulk body; CPU spent in the
    estimates per sample), warm-up ticks left out."""
    run = Run(estimates, busy, commit_every)
    for tick in range(ticks):
        run.tick(tick)
    return run.costs[10:], run.in_estimates[10:]  # warm-up: the first samples build everything


def interleaved(ticks: int, busy: bool, commit_every: int) -> tuple[Run, Run]:
    """(without, with), their samples taken alternately, in turns (the order swapped every
    tick): on a shared machine a load that comes and goes then weighs on both alike."""
    without = Run(WithoutEstimates(), busy, commit_every)
    with_estimates = Run(TimedEstimates(), busy, commit_every)
    for tick in range(ticks):
        for run in (without, with_estimates) if tick % 2 else (with_estimates, without):
            run.tick(tick)
    return without, with_estimates


ESTATES = (
    ("quiet (as the benchmark's estate: nothing moves)", False, 1),
    ("typical (records on every partition every second, each group commits every 5 s)", True, 5),
    ("extreme (every committed offset and end offset moves every second)", True, 1),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ticks", type=int, default=120)
    parser.add_argument("--memory-ticks", type=int, default=200,
                        help="extreme ticks before the memory is read (slow: tracemalloc)")
    arguments = parser.parse_args()
    ticks = arguments.ticks
    relax_gc()  # as watch does
    for estate, busy, commit_every in ESTATES:
        print(f"estate c, {estate}:")
        without, with_estimates = interleaved(ticks, busy, commit_every)
        for name, costs in (("sample, documents, body without", without.costs[10:]),
                            ("sample, documents, body with", with_estimates.costs[10:]),
                            ("of which seconds and status", with_estimates.in_estimates[10:])):
            costs = sorted(costs)
            print(f"  {name:>34}: CPU mean {statistics.mean(costs) * 1000:6.1f} ms, "
                  f"median {statistics.median(costs) * 1000:6.1f} ms, "
                  f"p90 {costs[int(len(costs) * 0.9)] * 1000:6.1f} ms")
        added = [w - o for w, o in zip(with_estimates.costs[10:], without.costs[10:],
                                       strict=True)]
        print(f"  {'added by seconds and status':>34}: CPU mean "
              f"{statistics.mean(added) * 1000:6.1f} ms, median "
              f"{statistics.median(added) * 1000:6.1f} ms "
              f"(+{statistics.mean(added) / statistics.mean(without.costs[10:]) * 100:.0f} %); "
              f"bulk body {without.json_bytes / 1e6:.2f} MB without, "
              f"{with_estimates.json_bytes / 1e6:.2f} MB with")
    tracemalloc.start()
    estimates = Estimates()
    cpu_per_sample(estimates, arguments.memory_ticks)
    size = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    print(f"memory of the history and status after {arguments.memory_ticks} extreme ticks: "
          f"{size / 2**20:.1f} MiB "
          f"({len(estimates.history)} partitions, {len(estimates.status)} group partitions)")
    print(f"reproduce: .venv/bin/python benchmarks/estimates_cost.py --ticks {ticks} "
          f"--memory-ticks {arguments.memory_ticks}")


if __name__ == "__main__":
    main()
