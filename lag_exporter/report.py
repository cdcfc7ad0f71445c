"""Pure: a Sample as the table `lag-exporter snapshot` prints."""

from __future__ import annotations

from lag_exporter.model import Sample

COLUMNS = ("GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG")


def _cell(value: int | None) -> str:
    return "-" if value is None else str(value)


def format_table(sample: Sample) -> str:
    """Like `kafka-consumer-groups --describe`, GROUP first, so LAG is still column 6 (`cut -f 6`
    in the old pipeline), but rows sorted by topic then partition, and `-` only where nothing
    is committed."""
    rows = [COLUMNS]
    for group_lag in sorted(sample.groups, key=lambda g: g.group):
        for p in group_lag.partitions:
            rows.append((group_lag.group, p.topic, str(p.partition), _cell(p.committed_offset),
                         _cell(p.high_watermark), _cell(p.lag)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )
