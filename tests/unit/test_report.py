from datetime import UTC, datetime

from lag_exporter.model import GroupLag, PartitionLag, Sample
from lag_exporter.report import format_table


def test_table_columns_match_kafka_consumer_groups_with_dash_for_no_commit() -> None:
    group = GroupLag("c", "oasis-group", (
        PartitionLag("test", 0, 5, 9, 4),
        PartitionLag("test", 1, None, 3, None),
        PartitionLag("test2", 0, 0, 12, 12),
    ))
    table = format_table(Sample(datetime(2026, 1, 1, tzinfo=UTC), (group,)))
    rows = [line.split() for line in table.splitlines()]
    assert rows[0] == ["GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG"]
    assert rows[1:] == [
        ["oasis-group", "test", "0", "5", "9", "4"],
        ["oasis-group", "test", "1", "-", "3", "-"],
        ["oasis-group", "test2", "0", "0", "12", "12"],
    ]
    assert all(row[5] for row in rows)  # LAG stays column 6, as `cut -f 6` expected
