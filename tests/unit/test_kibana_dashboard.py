"""examples/kibana/consumer-lag.ndjson (written by examples/kibana/make_dashboard.py) checked
offline (Kibana cannot run here): every line is a saved object, every reference resolves to an
object of the file, every field a chart uses exists in mapping.json (the p<N> fields through its
dynamic template) with a type the chart can use.

The heat map's Elasticsearch query itself runs against the stack's Elasticsearch in
tests/integration/test_kibana_heatmap.py.
"""

from __future__ import annotations

import importlib.util
import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

NDJSON = Path(__file__).resolve().parents[2] / "examples" / "kibana" / "consumer-lag.ndjson"
SavedObject = dict[str, Any]


def saved_objects() -> list[SavedObject]:
    lines = NDJSON.read_text().splitlines()
    assert lines and all(line.strip() for line in lines)
    return [json.loads(line) for line in lines]


def by_type(kind: str) -> list[SavedObject]:
    return [saved for saved in saved_objects() if saved["type"] == kind]


def mapping() -> dict[str, Any]:
    mapping: dict[str, Any] = json.loads(
        resources.files("lag_exporter").joinpath("mapping.json").read_text())["mappings"]
    return mapping


def field_type(name: str) -> str | None:
    """The type Elasticsearch gives `name` in a consumer_lag index: declared, or from the first
    dynamic template that matches it (as Elasticsearch picks them)."""
    declared = mapping()["properties"].get(name)
    if declared is not None:
        return str(declared["type"])
    for template in mapping()["dynamic_templates"]:
        [(_, rule)] = template.items()
        if "path_match" in rule:
            matches = re.fullmatch(re.escape(rule["path_match"]).replace(r"\*", ".*"), name)
        else:
            assert rule["match_pattern"] == "regex"
            matches = re.search(rule["match"], name)
        if matches:
            return str(rule["mapping"]["type"])
    return None


def test_the_file_is_what_make_dashboard_writes() -> None:
    """The saved objects are written by examples/kibana/make_dashboard.py: edits go there."""
    spec = importlib.util.spec_from_file_location("make_dashboard",
                                                  NDJSON.with_name("make_dashboard.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.ndjson() == NDJSON.read_text()


def test_field_type_follows_the_mapping() -> None:
    assert field_type("lag_total") == "long"
    assert field_type("p17") == "long"
    assert field_type("lag_seconds.p3") == "float"
    assert field_type("partition_status.p3") == "keyword"
    assert field_type("lag") is None and field_type("p") is None


def test_every_line_is_a_saved_object_of_kibana_8_with_a_unique_id() -> None:
    objects = saved_objects()
    for saved in objects:
        assert {"id", "type", "attributes", "references", "coreMigrationVersion",
                "typeMigrationVersion"} <= saved.keys(), saved.get("id")
        assert saved["coreMigrationVersion"] == "8.8.0"
        assert saved["attributes"]["title"]
    assert len({(saved["type"], saved["id"]) for saved in objects}) == len(objects)
    assert sorted(saved["type"] for saved in objects) == [
        "dashboard", "index-pattern", "lens", "lens", "lens", "visualization"]


def test_every_reference_resolves_to_an_object_of_the_file() -> None:
    present = {(saved["type"], saved["id"]) for saved in saved_objects()}
    references = [ref for saved in saved_objects() for ref in saved["references"]]
    assert references
    for ref in references:
        assert (ref["type"], ref["id"]) in present, ref


def test_the_data_view_is_consumer_lag_on_its_time_field() -> None:
    [data_view] = by_type("index-pattern")
    assert data_view["attributes"]["title"] == "consumer_lag"
    assert data_view["attributes"]["timeFieldName"] == "@timestamp"
    assert field_type("@timestamp") == "date"
    for name in json.loads(data_view["attributes"]["fieldFormatMap"]):
        assert field_type(name) is not None, name


# Lens operations and the field types each can aggregate.
OPERATION_TYPES = {
    "date_histogram": {"date"},
    "terms": {"keyword"},
    "max": {"long", "float"},
    "last_value": {"keyword", "long", "float", "date"},
}


@pytest.mark.parametrize("lens", by_type("lens"), ids=lambda lens: lens["id"])
def test_each_lens_chart_uses_existing_fields_and_its_own_columns(lens: SavedObject) -> None:
    state = lens["attributes"]["state"]
    layers = state["datasourceStates"]["formBased"]["layers"]
    for layer_id, layer in layers.items():
        # Each layer names its data view through a reference Kibana looks up by this name.
        assert {"type": "index-pattern", "id": "lag-exporter-consumer-lag",
                "name": f"indexpattern-datasource-layer-{layer_id}"} in lens["references"]
        assert sorted(layer["columnOrder"]) == sorted(layer["columns"])
        for column_id, column in layer["columns"].items():
            kind = field_type(column["sourceField"])
            assert kind in OPERATION_TYPES[column["operationType"]], (column_id, kind)
            if column["operationType"] == "last_value":
                assert field_type(column["params"]["sortField"]) == "date"
            order_by = column.get("params", {}).get("orderBy", {})
            if order_by.get("type") == "column":
                assert order_by["columnId"] in layer["columns"]
    columns = {column_id for layer in layers.values() for column_id in layer["columns"]}
    visualization = state["visualization"]
    if lens["attributes"]["visualizationType"] == "lnsXY":
        for layer in visualization["layers"]:
            assert layer["layerId"] in layers
            used = [layer["xAccessor"], *layer["accessors"], layer.get("splitAccessor")]
            assert {c for c in used if c is not None} <= columns
    else:
        assert lens["attributes"]["visualizationType"] == "lnsDatatable"
        assert visualization["layerId"] in layers
        assert {c["columnId"] for c in visualization["columns"]} == columns


def heatmap_spec() -> dict[str, Any]:
    [visualization] = by_type("visualization")
    vis_state = json.loads(visualization["attributes"]["visState"])
    assert vis_state["type"] == "vega"
    spec: dict[str, Any] = json.loads(vis_state["params"]["spec"])
    return spec


def fields_in(query: Any) -> list[str]:
    """Every "field" an Elasticsearch query body names."""
    if isinstance(query, dict):
        return [value for key, value in query.items() if key == "field"] + [
            name for value in query.values() for name in fields_in(value)]
    if isinstance(query, list):
        return [name for value in query for name in fields_in(value)]
    return []


def test_the_heat_map_reads_the_wide_shape_of_consumer_lag() -> None:
    spec = heatmap_spec()
    assert spec["$schema"].endswith("/vega-lite/v5.json")
    url = spec["data"]["url"]
    assert url["index"] == "consumer_lag"
    assert url["%context%"] is True  # the dashboard's query, filters and time range apply
    assert field_type(url["%timefield%"]) == "date"
    fields = fields_in(url["body"])
    partitions = [name for name in fields if re.fullmatch(r"p\d+", name)]
    assert partitions == [f"p{n}" for n in range(64)]
    for name in fields:  # p<N> through the dynamic template, the others declared
        assert field_type(name) == {"group": "keyword", "topic": "keyword",
                                    "@timestamp": "date"}.get(name, "long"), name
    # The fold reads back exactly the per-partition maxima the query asks for.
    [fold] = [step["fold"] for step in spec["transform"] if "fold" in step]
    time_aggs = url["body"]["aggs"]["groups"]["aggs"]["topics"]["aggs"]["time"]["aggs"]
    assert fold == [f"bucket.{name}.value" for name in time_aggs]
    assert spec["data"]["format"]["property"] == "aggregations.groups.buckets"
    encoded = {channel["field"] for channel in spec["encoding"].values() if "field" in channel}
    computed = {step["as"] for step in spec["transform"] if "calculate" in step}
    assert encoded <= computed | {"lag"}  # lag: the fold's value


def test_the_dashboard_shows_the_four_charts() -> None:
    [dashboard] = by_type("dashboard")
    panels = json.loads(dashboard["attributes"]["panelsJSON"])
    refs = {ref["name"]: ref for ref in dashboard["references"]}
    shown = []
    for panel in panels:
        ref = refs[f"{panel['panelIndex']}:{panel['panelRefName']}"]
        assert ref["type"] == panel["type"]
        shown.append(ref["id"])
    charts = [saved["id"] for saved in saved_objects()
              if saved["type"] in ("lens", "visualization")]
    assert sorted(shown) == sorted(charts)
    assert dashboard["attributes"]["timeRestore"] is True
