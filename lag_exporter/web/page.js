// The lag-exporter page: polls api/lag, draws the table (worst first, as served) and an SVG
// chart of each row's lag history. Plain DOM, no framework, nothing loaded from elsewhere.
"use strict";

const POLL_MS = 1000;  // the server answers 304 until a new sample is taken
const ANSWER_MS = 5000;  // a reply slower than this counts as the exporter not answering
const CHART_ROWS = 8;  // lines on the chart: the worst rows
const TABLE_ROWS = 200;  // a phone stays responsive at thousands of groups x topics
// Chart spans and their tick steps, in seconds, up to the 10 minutes the server keeps.
const SPANS = [[60, 15], [180, 30], [300, 60], [600, 120]];
// Not the status colours (green, amber, red): a line's colour says which row, not how bad.
const COLOURS = ["#0969da", "#8250df", "#1b7c83", "#bf3989", "#953800", "#57606a", "#54aeff",
                 "#c297ff"];

const open = new Set();  // rows whose partitions are shown, by key
// page#group=NAME opens that group's partitions (a link to one group; the browser test uses it)
const openGroup = decodeURIComponent((location.hash.match(/^#group=(.*)$/) || [])[1] || "");
const openedByLink = new Set();  // once: the reader may close them again
let last = null;  // the latest payload

const $ = (id) => document.getElementById(id);
const key = (row) => JSON.stringify([row.cluster, row.group, row.topic]);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
  for (const child of children) node.append(child == null ? "" : child);
  return node;
}

function number(value) {
  return value == null ? "–" : value.toLocaleString("en-US");
}

function duration(seconds) {
  if (seconds == null) return "–";
  if (seconds < 10) return seconds.toFixed(1) + " s";
  if (seconds < 120) return Math.round(seconds) + " s";
  if (seconds < 7200) return Math.floor(seconds / 60) + " min " + Math.round(seconds % 60) + " s";
  return Math.floor(seconds / 3600) + " h " + Math.round(seconds % 3600 / 60) + " min";
}

function badge(status) {
  return status ? el("span", {class: "badge " + status}, status) : "–";
}

function partitions(row) {
  const body = el("tbody");
  for (const p of row.partitions) {
    body.append(el("tr", {class: p.status || ""}, el("td", {}, String(p.partition)),
      el("td", {class: "num"}, number(p.committed_offset)),
      el("td", {class: "num"}, number(p.high_watermark)),
      el("td", {class: "num"}, number(p.lag)),
      el("td", {class: "num"}, duration(p.seconds)), el("td", {}, badge(p.status))));
  }
  const head = el("tr", {}, ...["partition", "committed", "end", "lag", "behind", "status"]
    .map((name, i) => el("th", {class: i && i < 5 ? "num" : ""}, name)));
  return el("table", {}, el("thead", {}, head), body);
}

function drawTable(rows, total) {
  const body = document.querySelector("#lag tbody");
  const lines = [];
  for (const row of rows) {
    const k = key(row);
    if (row.group === openGroup && !openedByLink.has(k)) open.add(k), openedByLink.add(k);
    const lag = row.lag_total == null && row.partitions_unknown
      ? row.partitions_unknown + " unknown" : number(row.lag_total);
    const tr = el("tr", {class: "row " + (row.error ? "ERR" : row.status || ""), "data-key": k,
                         "data-group": row.group, "data-topic": row.topic},
      el("td", {class: "wide"}, row.cluster), el("td", {class: "name"}, row.group),
      el("td", {class: "name"}, row.topic || (row.error ? "–" : "no commit yet")),
      el("td", {class: "num lag", "data-lag": row.lag_total == null ? "" : row.lag_total}, lag),
      el("td", {class: "num wide"}, number(row.lag_max)),
      el("td", {class: "num"}, duration(row.seconds_max)),
      el("td", {}, row.error ? el("span", {class: "error"}, row.error) : badge(row.status)));
    tr.addEventListener("click", () => {
      if (open.has(k)) open.delete(k); else open.add(k);
      drawTable(last.rows, last.rows_total);
    });
    lines.push(tr);
    if (open.has(k) && row.partitions.length) {
      lines.push(el("tr", {class: "detail"}, el("td", {colspan: "7"}, partitions(row))));
    }
  }
  body.replaceChildren(...lines);
  $("empty").hidden = rows.length > 0;
  $("more").hidden = total <= rows.length;
  $("more").textContent = `… and ${total - rows.length} more rows, less behind ` +
    "(all of them in /api/lag).";
}

// 1, 2 or 5 times a power of ten: round numbers on the axis.
function niceStep(raw) {
  if (raw <= 1) return 1;
  const power = 10 ** Math.floor(Math.log10(raw)), f = raw / power;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * power;
}

function svg(tag, attrs, text) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  if (text != null) node.textContent = text;
  return node;
}

function drawChart(payload) {
  const chart = $("chart");
  const width = chart.clientWidth || 600, height = chart.clientHeight || 220;
  const left = 52, right = 8, top = 8, bottom = 20;
  const now = payload.taken_at;
  // The shortest span that holds the history: a minute-old exporter gets a minute-wide chart.
  // (a loop, not Math.min(...all): thousands of rows would overflow the call stack)
  let oldest = now;
  for (const row of payload.rows) if (row.history.length) oldest = Math.min(oldest, row.history[0][0]);
  const [span, tick] = SPANS.find(([s]) => now - oldest <= s) || SPANS[SPANS.length - 1];
  const since = now - span;
  // Each charted row: its history, then its current lag (the history is thinned).
  const series = payload.rows.filter((row) => row.topic).slice(0, CHART_ROWS).map((row) => ({
    row, points: row.history.concat([[now, row.lag_total]]).filter(([t]) => t >= since)}));
  const most = Math.max(0, ...series.flatMap((s) => s.points.map(([, lag]) => lag || 0)));
  const step = niceStep(most / 4), highest = step * Math.max(1, Math.ceil(most / step));
  const x = (t) => left + (t - since) / span * (width - left - right);
  const y = (lag) => top + (1 - lag / highest) * (height - top - bottom);
  const nodes = [];
  for (let lag = 0; lag <= highest; lag += step) {
    nodes.push(svg("line", {class: "grid", x1: left, x2: width - right, y1: y(lag), y2: y(lag)}),
      svg("text", {x: left - 4, y: y(lag) + 4, "text-anchor": "end"}, number(lag)));
  }
  const every = width < 500 ? tick * 2 : tick;  // fewer labels on a phone
  for (let ago = 0; ago <= span; ago += every) {
    const label = ago === 0 ? "now" : ago < 60 ? `-${ago} s` : `-${ago / 60} min`;
    nodes.push(svg("text", {x: x(now - ago), y: height - 4,
      "text-anchor": ago === 0 ? "end" : ago === span ? "start" : "middle"}, label));
  }
  let drawn = 0;
  const legend = [];
  series.forEach((s, i) => {
    let d = "", pen = "M";
    for (const [t, lag] of s.points) {
      if (lag == null) { pen = "M"; continue; }  // a gap, not a zero
      d += pen + x(t).toFixed(1) + " " + y(lag).toFixed(1) + " ";
      pen = "L";
      drawn++;
    }
    const colour = COLOURS[i % COLOURS.length];
    nodes.push(svg("path", {d: d.trim() || "M0 0", stroke: colour, "data-key": key(s.row)}));
    const swatch = el("i");
    swatch.style.background = colour;
    legend.push(el("li", {}, swatch, s.row.group + " / " + s.row.topic));
  });
  chart.setAttribute("viewBox", `0 0 ${width} ${height}`);
  chart.replaceChildren(...nodes);
  chart.setAttribute("data-series", String(series.length));
  chart.setAttribute("data-points", String(drawn));
  $("legend").replaceChildren(...legend);
  $("span").textContent = span < 60 ? span + " s" : span / 60 + " min";
}

function showState(text, stale) {
  const state = $("state");
  state.textContent = text;
  state.classList.toggle("stale", stale);
}

async function poll() {
  // A hung exporter accepts the connection and never answers: without a limit the request
  // would wait for ever and the page would never say so.
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), ANSWER_MS);
  try {
    const response = await fetch("api/lag?rows=" + TABLE_ROWS,
                                 {cache: "no-cache", signal: abort.signal});
    if (!response.ok) throw new Error("HTTP " + response.status);
    const payload = await response.json();
    if (payload.taken_at != null && (!last || payload.taken_at !== last.taken_at)) {
      last = payload;
      drawTable(payload.rows, payload.rows_total);
      drawChart(payload);
    }
    if (last) {
      const age = Date.now() / 1000 - last.taken_at;
      showState("sample of " + new Date(last.taken_at * 1000).toLocaleTimeString() + ", " +
                last.rows_total + " row(s)", age > 30);
    }
  } catch (error) {
    const why = abort.signal.aborted ? `no answer within ${ANSWER_MS / 1000} s` : error.message;
    showState("cannot reach the exporter (" + why + "), retrying", true);
  } finally {
    clearTimeout(timer);
  }
  setTimeout(poll, POLL_MS);
}

window.addEventListener("resize", () => { if (last) drawChart(last); });
poll();
