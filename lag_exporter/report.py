"""Pure: a Sample as the table (or tab-separated lines) `lag-exporter snapshot` prints."""

from __future__ import annotations

from lag_exporter.model import Sample

COLUMNS = ("GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG",
           "LAG-SECONDS")


def _cell(value: int | None) -> str:
    return "-" if value is None else str(value)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _rows(sample: Sample) -> list[tuple[str, ...]]:
    """The columns of `kafka-consumer-groups --describe`, GROUP first, so LAG is column 6, then
    the lag in seconds; rows sorted by group, topic, partition; `-` only where nothing is
    committed or known."""
    rows: list[tuple[str, ...]] = [COLUMNS]
    for group_lag in sorted(sample.groups, key=lambda g: g.group):
        for p in group_lag.current_partitions():
            rows.append((group_lag.group, p.topic, str(p.partition), _cell(p.committed_offset),
                         _cell(p.high_watermark), _cell(p.lag), _seconds(p.seconds)))
    return rows


def format_table(sample: Sample) -> str:
    """Aligned columns for people (no tabs: `cut -f` needs format_tsv)."""
    rows = _rows(sample)
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def format_tsv(sample: Sample) -> str:
    """The same rows separated by tabs, so that the old pipeline's `cut -f 6` reads LAG. A group
    id may hold any character: its tabs and newlines are escaped to keep the columns."""
    return "\n".join("\t".join(_tsv_cell(cell) for cell in row) for row in _rows(sample))


def _tsv_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
