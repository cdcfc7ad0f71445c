"""Pure checks of an existing index's mapping (no Elasticsearch needed)."""

import json
from pathlib import Path

from lag_exporter.sinks.elasticsearch import incompatible_mapping, old_mapping_problems

OLD_PIPELINE = {"@timestamp": {"type": "date"}, "topic": {"type": "text"},
                **{f"p{n}": {"type": "integer"} for n in range(18)}}


def test_2022_mapping_is_usable_but_named_for_what_it_breaks() -> None:
    assert incompatible_mapping(OLD_PIPELINE) == []
    problems = old_mapping_problems(OLD_PIPELINE)
    assert problems[0] == "'topic' is text, so Kibana cannot aggregate by it"
    assert problems[1].startswith("p0, p1, p2... are integer")


def test_timestamp_or_partition_of_the_wrong_type_is_incompatible() -> None:
    assert incompatible_mapping({"@timestamp": {"type": "keyword"}}) == [
        "'@timestamp' is keyword, expected date/date_nanos"]
    assert incompatible_mapping({"p3": {"type": "keyword"}}) == ["'p3' is keyword, expected long"]


def test_our_own_mapping_has_no_problem() -> None:
    mapping = json.loads((Path(__file__).resolve().parents[2] / "mapping.json").read_text())
    properties = mapping["mappings"]["properties"] | {"p0": {"type": "long"}}
    assert incompatible_mapping(properties) == []
    assert old_mapping_problems(properties) == []


def test_partitions_unknown_and_totals_must_be_numeric_of_any_width() -> None:
    """A document with `partitions_unknown` (issue 10) must not be rejected by an old index."""
    assert incompatible_mapping({"partitions_unknown": {"type": "keyword"}}) == [
        "'partitions_unknown' is keyword, expected long"]
    for numeric in ("long", "integer", "short", "float", "unsigned_long"):
        assert incompatible_mapping({"partitions_unknown": {"type": numeric},
                                     "lag_total": {"type": numeric}}) == []
    assert incompatible_mapping({"status": {"type": "long"}}) == [
        "'status' is long, expected keyword"]
