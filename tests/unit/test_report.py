from datetime import UTC, datetime

from lag_exporter.model import GroupLag, PartitionLag, Sample
from lag_exporter.report import format_table, format_tsv


def test_table_columns_match_kafka_consumer_groups_with_dash_for_no_commit() -> None:
    group = GroupLag("c", "oasis-group", (
        PartitionLag("test", 0, 5, 9, 4),
        PartitionLag("test", 1, None, 3, None),
        PartitionLag("test2", 0, 0, 12, 12, seconds=61.25),
    ))
    table = format_table(Sample(datetime(2026, 1, 1, tzinfo=UTC), (group,)))
    rows = [line.split() for line in table.splitlines()]
    assert rows[0] == ["GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG",
                       "LAG-SECONDS"]
    assert rows[1:] == [
        ["oasis-group", "test", "0", "5", "9", "4", "-"],
        ["oasis-group", "test", "1", "-", "3", "-", "-"],
        ["oasis-group", "test2", "0", "0", "12", "12", "61.2"],
    ]
    assert all(row[5] for row in rows)  # LAG is column 6 (`awk {print $6}`; `cut -f 6`: tsv)


def test_tsv_has_the_same_columns_separated_by_tabs_so_cut_f_6_is_the_lag() -> None:
    group = GroupLag("c", "oasis-group", (
        PartitionLag("test", 0, 5, 9, 4),
        PartitionLag("test", 1, None, 3, None),
    ))
    tsv = format_tsv(Sample(datetime(2026, 1, 1, tzinfo=UTC), (group,)))
    assert [line.split("\t")[5] for line in tsv.splitlines()] == ["LAG", "4", "-"]
    assert tsv.splitlines()[1] == "oasis-group\ttest\t0\t5\t9\t4\t-"


def test_tsv_escapes_tabs_and_newlines_in_group_ids() -> None:
    group = GroupLag("c", "odd\tgroup\n", (PartitionLag("t", 0, 1, 2, 1),))
    tsv = format_tsv(Sample(datetime(2026, 1, 1, tzinfo=UTC), (group,)))
    assert tsv.splitlines()[1].split("\t") == ["odd\\tgroup\\n", "t", "0", "1", "2", "1", "-"]
