"""Writes examples/kibana/consumer-lag.ndjson, Kibana 8.11+ saved objects for the consumer_lag
index: `python examples/kibana/make_dashboard.py` after a change here (e.g. PARTITIONS for a
heat map of more partitions). tests/unit/test_kibana_dashboard.py checks that the file is what
this script writes, and checks the file itself.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

NDJSON = Path(__file__).with_name("consumer-lag.ndjson")

DATA_VIEW = "lag-exporter-consumer-lag"
CORE = "8.8.0"
STAMP = "2026-11-26T08:00:00.000Z"


Json = dict[str, Any]


def obj(type_: str, id_: str, attributes: Json, references: list[Json],
        type_version: str) -> Json:
    return {"attributes": attributes, "coreMigrationVersion": CORE, "created_at": STAMP,
            "id": id_, "managed": False, "references": references, "type": type_,
            "typeMigrationVersion": type_version, "updated_at": STAMP}


def layer_ref(layer: str) -> Json:
    return {"id": DATA_VIEW, "name": f"indexpattern-datasource-layer-{layer}",
            "type": "index-pattern"}


def lens(id_: str, title: str, description: str, vis_type: str, columns: Json,
         order: list[str], visualization: Json) -> Json:
    layer = "layer1"
    return obj("lens", id_, {
        "title": title, "description": description, "visualizationType": vis_type,
        "state": {
            "datasourceStates": {"formBased": {"layers": {layer: {
                "columns": columns, "columnOrder": order, "incompleteColumns": {}}}}},
            "visualization": visualization,
            "query": {"query": "", "language": "kuery"},
            "filters": [], "internalReferences": [], "adHocDataViews": {},
        },
    }, [layer_ref(layer)], "8.9.0")


def date_histogram() -> Json:
    return {"label": "@timestamp", "dataType": "date", "operationType": "date_histogram",
            "sourceField": "@timestamp", "isBucketed": True, "scale": "interval",
            "params": {"interval": "auto", "includeEmptyRows": False, "dropPartials": False}}


def terms(field: str, size: int, order_by: Json) -> Json:
    return {"label": field, "dataType": "string", "operationType": "terms",
            "sourceField": field, "isBucketed": True, "scale": "ordinal",
            "params": {"size": size, "orderBy": order_by, "orderDirection": "desc",
                       "otherBucket": False, "missingBucket": False,
                       "parentFormat": {"id": "terms"}, "include": [], "exclude": [],
                       "includeIsRegex": False, "excludeIsRegex": False}}


def metric(operation: str, field: str, label: str, data_type: str = "number") -> Json:
    return {"label": label, "customLabel": True, "dataType": data_type,
            "operationType": operation, "sourceField": field, "isBucketed": False,
            "scale": "ratio", "params": {"emptyAsNull": True}}


def last_value(field: str, label: str, data_type: str) -> Json:
    return {"label": label, "customLabel": True, "dataType": data_type,
            "operationType": "last_value", "sourceField": field, "isBucketed": False,
            "scale": "ordinal" if data_type == "string" else "ratio",
            "filter": {"query": f"{field}: *", "language": "kuery"},
            "params": {"sortField": "@timestamp", "showArrayValues": False}}


def xy(series_type: str, x: str, split: str | None, accessors: list[str],
       legend: bool = True) -> Json:
    layer: Json = {"layerId": "layer1", "layerType": "data", "seriesType": series_type,
             "xAccessor": x, "accessors": accessors,
             "palette": {"name": "default", "type": "palette"}}
    if split:
        layer["splitAccessor"] = split
    return {"legend": {"isVisible": legend, "position": "right"}, "valueLabels": "hide",
            "fittingFunction": "None", "preferredSeriesType": series_type,
            "axisTitlesVisibilitySettings": {"x": True, "yLeft": True, "yRight": True},
            "layers": [layer]}


data_view = obj("index-pattern", DATA_VIEW, {
    "title": "consumer_lag", "name": "consumer_lag (lag-exporter)",
    "timeFieldName": "@timestamp", "fields": "[]", "fieldAttrs": "{}",
    "fieldFormatMap": json.dumps({"lag_seconds_max": {"id": "duration", "params": {
        "inputFormat": "seconds", "outputFormat": "humanizePrecise", "outputPrecision": 1}}}),
    "runtimeFieldMap": "{}", "sourceFilters": "[]", "typeMeta": "{}", "allowNoIndex": True,
}, [], "8.0.0")

lag_over_time = lens(
    "lag-exporter-lag-over-time", "Lag over time per topic",
    "lag_total of the worst group on each topic, per time bucket (max: samples are not "
    "summed).", "lnsXY",
    {"time": date_histogram(),
     "topic": terms("topic", 10, {"type": "column", "columnId": "lag"}),
     "lag": metric("max", "lag_total", "Lag (records, worst group)")},
    ["topic", "time", "lag"], xy("line", "time", "topic", ["lag"]))

max_lag_per_group = lens(
    "lag-exporter-max-lag-per-group", "Max lag per group",
    "The largest partition lag (lag_max) each group had in the time range.", "lnsXY",
    {"group": terms("group", 20, {"type": "column", "columnId": "max"}),
     "max": metric("max", "lag_max", "Max partition lag (records)")},
    ["group", "max"], xy("bar_horizontal", "group", None, ["max"], legend=False))

latest_status = lens(
    "lag-exporter-latest-status", "Latest status per group and topic",
    "The last document's status, lag and seconds behind for each group x topic "
    "(status and seconds only where watch computes them).", "lnsDatatable",
    {"group": terms("group", 100, {"type": "alphabetical", "fallback": False}),
     "topic": terms("topic", 100, {"type": "alphabetical", "fallback": False}),
     "status": last_value("status", "Status", "string"),
     "lag": last_value("lag_total", "Lag (records)", "number"),
     "seconds": last_value("lag_seconds_max", "Seconds behind", "number"),
     "unknown": last_value("partitions_unknown", "Partitions unknown", "number")},
    ["group", "topic", "status", "lag", "seconds", "unknown"],
    {"layerId": "layer1", "layerType": "data",
     "columns": [{"columnId": c, "isTransposed": False}
                 for c in ["group", "topic", "status", "lag", "seconds", "unknown"]],
     "sorting": {"columnId": "lag", "direction": "desc"}})

# The heat map of the wide shape: the p<N> fields are columns, not values of a field, so no
# Lens chart can pivot them. The query takes the max of each p<N> (N < PARTITIONS; absent fields
# give null) per time bucket for the worst group x topic pairs; Vega-Lite folds them into cells.
# No script: runs on any Elasticsearch (the stack's integration-test build has no Painless).
PARTITIONS = 64
GROUPS = TOPICS = 3
worst = {"worst": "desc"}
HEATMAP_QUERY: Json = {
    "size": 0,
    "aggs": {"groups": {
        "terms": {"field": "group", "size": GROUPS, "order": worst},
        "aggs": {"worst": {"max": {"field": "lag_max"}}, "topics": {
            "terms": {"field": "topic", "size": TOPICS, "order": worst},
            "aggs": {"worst": {"max": {"field": "lag_max"}}, "time": {
                # Kibana turns %autointerval% into a fixed_interval giving about 60 buckets.
                "date_histogram": {"field": "@timestamp", "interval": {"%autointerval%": 60}},
                "aggs": {f"p{n}": {"max": {"field": f"p{n}"}} for n in range(PARTITIONS)},
            }},
        }},
    }},
}
vega_spec: Json = {
    "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
    "title": f"Lag per partition (max per time bucket; the {GROUPS} worst groups x "
             f"{TOPICS} topics, partitions 0-{PARTITIONS - 1})",
    "data": {
        "url": {"%context%": True, "%timefield%": "@timestamp", "index": "consumer_lag",
                "body": HEATMAP_QUERY},
        "format": {"property": "aggregations.groups.buckets"},
    },
    "transform": [
        {"flatten": ["topics.buckets"], "as": ["topic"]},
        {"flatten": ["topic.time.buckets"], "as": ["bucket"]},
        {"fold": [f"bucket.p{n}.value" for n in range(PARTITIONS)], "as": ["field", "lag"]},
        {"filter": "datum.lag != null"},
        {"calculate": "datum.key + ' / ' + datum.topic.key + ' / p' + "
                      "replace(replace(datum.field, 'bucket.p', ''), '.value', '')",
         "as": "partition"},
        {"calculate": "datum.bucket.key", "as": "time"},
    ],
    "mark": "rect",
    "encoding": {
        "x": {"field": "time", "type": "ordinal", "timeUnit": "yearmonthdatehoursminutesseconds",
              "title": None, "axis": {"labelOverlap": True, "format": "%H:%M"}},
        "y": {"field": "partition", "type": "nominal", "title": "group / topic / partition"},
        "color": {"field": "lag", "type": "quantitative", "title": "lag",
                  "scale": {"scheme": "orangered"}},
        "tooltip": [{"field": "partition", "type": "nominal"},
                    {"field": "time", "type": "temporal", "format": "%Y-%m-%d %H:%M:%S"},
                    {"field": "lag", "type": "quantitative"}],
    },
}
heatmap = obj("visualization", "lag-exporter-partition-heatmap", {
    "title": "Lag per partition (heat map)",
    "description": "The p0..p63 fields of consumer_lag, one row per group / topic / partition, "
                   "for the worst 3 groups x 3 topics in view: filter a group or topic to pick "
                   "others. More partitions: add p64... to the query and the fold.",
    "uiStateJSON": "{}", "version": 1,
    "visState": json.dumps({"title": "Lag per partition (heat map)", "type": "vega",
                            "aggs": [], "params": {"spec": json.dumps(vega_spec, indent=2)}}),
    "kibanaSavedObjectMeta": {"searchSourceJSON": json.dumps(
        {"query": {"query": "", "language": "kuery"}, "filter": []})},
}, [], "8.0.0")

panels = [
    (lag_over_time, {"x": 0, "y": 0, "w": 24, "h": 15}),
    (max_lag_per_group, {"x": 24, "y": 0, "w": 24, "h": 15}),
    (heatmap, {"x": 0, "y": 15, "w": 48, "h": 18}),
    (latest_status, {"x": 0, "y": 33, "w": 48, "h": 15}),
]
panels_json: list[Json] = []
references: list[Json] = []
for number, (saved, grid) in enumerate(panels, start=1):
    index = f"panel{number}"
    panels_json.append({"version": "8.11.0", "type": saved["type"], "panelIndex": index,
                        "gridData": {**grid, "i": index}, "embeddableConfig": {"enhancements": {}},
                        "panelRefName": f"panel_{index}"})
    references.append({"id": saved["id"], "name": f"{index}:panel_{index}", "type": saved["type"]})
dashboard = obj("dashboard", "lag-exporter-consumer-lag-dashboard", {
    "title": "Kafka consumer lag (lag-exporter)",
    "description": "The consumer_lag index written by lag-exporter watch: lag over time, the "
                   "worst groups, every partition, the latest status.",
    "panelsJSON": json.dumps(panels_json),
    "optionsJSON": json.dumps({"useMargins": True, "syncColors": False, "syncCursor": True,
                               "syncTooltips": False, "hidePanelTitles": False}),
    "timeRestore": True, "timeFrom": "now-1h", "timeTo": "now",
    "refreshInterval": {"pause": False, "value": 10000},
    "kibanaSavedObjectMeta": {"searchSourceJSON": json.dumps(
        {"query": {"query": "", "language": "kuery"}, "filter": []})},
    "version": 1,
}, references, "8.9.0")



def ndjson() -> str:
    return "".join(json.dumps(saved, separators=(",", ":"), sort_keys=True) + "\n" for saved in
                   [data_view, lag_over_time, max_lag_per_group, latest_status, heatmap, dashboard])


if __name__ == "__main__":
    NDJSON.write_text(ndjson())
