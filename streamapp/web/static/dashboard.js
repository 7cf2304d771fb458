// streamapp dashboard: polls /api/cluster (or ?source=stats for this worker alone) and draws
// plain SVG charts. Every chart mark carries its number in data-* attributes, so what is drawn
// can be checked against the API.
"use strict";

const params = new URLSearchParams(location.search);
const SOURCE = params.get("source") === "stats" ? "/api/stats" : "/api/cluster";
const REFRESH_MS = Math.max(1, Number(params.get("refresh") || 5)) * 1000;
const PALETTE = ["#2f6fde", "#e8833a", "#2b8a4b", "#c93c37", "#8a5cc2", "#1f9fb0",
  "#b5894a", "#d16aa7", "#6b7a8f", "#9bb13b"];
const SVG_NS = "http://www.w3.org/2000/svg";
const STAGES = [["queue_ms", "queued"], ["tokenize_ms", "tokenize"], ["model_ms", "model"],
  ["end_to_end_ms", "end to end"]];
const QUANTILES = ["p50", "p95", "p99"];

let selected = null; // the drilled-down category
let latest = null; // the last answer, for redraws on click

// -- DOM helpers -----------------------------------------------------------------------------

function el(tag, attrs = {}, children = []) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined) continue;
    if (k === "text") node.textContent = v;
    else if (k === "onclick") node.addEventListener("click", v);
    else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child);
  return node;
}

function svgEl(tag, attrs = {}, text = null) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v !== null && v !== undefined) node.setAttribute(k, v);
  }
  if (text !== null) node.textContent = text;
  return node;
}

function titled(node, text) {
  node.append(svgEl("title", {}, text));
  return node;
}

function fill(id, ...children) {
  document.getElementById(id).replaceChildren(...children);
}

const NUM = new Intl.NumberFormat("en-US");
function fmt(n) {
  if (n === null || n === undefined) return "–";
  if (!Number.isInteger(n)) return NUM.format(Math.round(n * 100) / 100);
  return NUM.format(n);
}
function pct(x) { return x === null || x === undefined ? "–" : (x * 100).toFixed(1) + "%"; }
function ms(x) {
  if (x === null || x === undefined) return "–";
  if (x >= 10000) return (x / 1000).toFixed(1) + " s";
  if (x >= 100) return Math.round(x) + " ms";
  if (x >= 10) return x.toFixed(1) + " ms";
  return x.toFixed(2) + " ms";
}
function clock(unix) {
  return new Date(unix * 1000).toTimeString().slice(0, 5);
}

function table(id, headers, rows) {
  // headers: [label, numeric?]; rows: {cells: [[text, numeric?, attrs]], attrs, onclick}
  const head = el("tr", {}, headers.map(([h, num]) => el("th", { class: num ? "num" : null, text: h })));
  const body = rows.map((row) => el("tr", { ...(row.attrs || {}), onclick: row.onclick },
    row.cells.map(([text, num, attrs]) => el("td", { class: num ? "num" : null, ...(attrs || {}), text }))));
  fill(id, el("thead", {}, [head]), el("tbody", {}, body));
}

function niceMax(v) {
  if (v <= 0) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function emptyChart(width, height, text) {
  const svg = svgEl("svg", { viewBox: `0 0 ${width} ${height}`, role: "img" });
  svg.append(svgEl("text", { x: width / 2, y: height / 2, "text-anchor": "middle", class: "empty" }, text));
  return svg;
}

// -- charts ----------------------------------------------------------------------------------

// Lines over the last hour: xs are window starts (unix s), series [{name, values, color}].
function lineChart(xs, series, { height = 220, unit = "records/min" } = {}) {
  const width = 900, left = 48, right = 16, top = 10, bottom = 24;
  const max = niceMax(Math.max(0, ...series.flatMap((s) => s.values)));
  const x = (i) => left + (i * (width - left - right)) / Math.max(1, xs.length - 1);
  const y = (v) => top + (height - top - bottom) * (1 - v / max);
  const svg = svgEl("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": unit,
    "data-minutes": xs.join(",") });
  for (let t = 0; t <= 4; t++) {
    const v = (max * t) / 4;
    svg.append(svgEl("line", { x1: left, x2: width - right, y1: y(v), y2: y(v), class: t ? "grid-line" : "axis" }));
    svg.append(svgEl("text", { x: left - 6, y: y(v) + 4, "text-anchor": "end" }, fmt(v)));
  }
  xs.forEach((start, i) => {
    if (i % 10 === 9 || i === 0) {
      const anchor = i === 0 ? "start" : i === xs.length - 1 ? "end" : "middle";
      svg.append(svgEl("text", { x: x(i), y: height - 6, "text-anchor": anchor }, clock(start)));
    }
  });
  for (const s of series) {
    const points = s.values.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
    const line = svgEl("polyline", { points, fill: "none", stroke: s.color, "stroke-width": 2,
      "stroke-linejoin": "round", "data-series": s.name, "data-values": s.values.join(",") });
    svg.append(titled(line, `${s.name}: ${fmt(s.values[s.values.length - 1])} ${unit} this minute`));
  }
  return svg;
}

function legend(series, onPick) {
  return el("div", { class: "legend" }, series.map((s) => el("button", {
    type: "button", class: s.name === selected ? "selected" : null, "data-series": s.name,
    onclick: onPick ? () => onPick(s.name) : null,
  }, [el("i", { style: `background:${s.color}` }), s.name])));
}

// Vertical bars: [{label, value, title}].
function barChart(bars, { height = 150, color = PALETTE[0], valueText = fmt } = {}) {
  const width = 440, left = 36, right = 8, top = 16, bottom = 34;
  if (!bars.length) return emptyChart(width, height, "nothing yet");
  const max = niceMax(Math.max(...bars.map((b) => b.value)));
  const slot = (width - left - right) / bars.length;
  const y = (v) => top + (height - top - bottom) * (1 - v / max);
  const svg = svgEl("svg", { viewBox: `0 0 ${width} ${height}`, role: "img" });
  svg.append(svgEl("line", { x1: left, x2: width - right, y1: y(0), y2: y(0), class: "axis" }));
  svg.append(svgEl("text", { x: left - 4, y: y(max) + 4, "text-anchor": "end" }, fmt(max)));
  bars.forEach((b, i) => {
    const x = left + i * slot + slot * 0.12;
    const w = slot * 0.76;
    const rect = svgEl("rect", { x, y: y(b.value), width: w, height: y(0) - y(b.value),
      fill: b.color || color, rx: 2, "data-label": b.label, "data-value": b.value, ...(b.data || {}) });
    svg.append(titled(rect, b.title || `${b.label}: ${valueText(b.value)}`));
    if (b.value) {
      svg.append(svgEl("text", { x: x + w / 2, y: y(b.value) - 3, "text-anchor": "middle", class: "value-label" }, valueText(b.value)));
    }
    const label = b.label.length > 14 ? b.label.slice(0, 13) + "…" : b.label;
    svg.append(svgEl("text", { x: x + w / 2, y: height - bottom + 14, "text-anchor": "middle" }, label));
  });
  return svg;
}

// Horizontal bars, one row per item: [{label, value, color, title, data}].
function hbarChart(bars, { color = PALETTE[0], empty = "nothing yet" } = {}) {
  const width = 440, left = 150, right = 50, rowH = 20, top = 4;
  if (!bars.length) return emptyChart(width, 60, empty);
  const height = top * 2 + bars.length * rowH;
  const max = niceMax(Math.max(...bars.map((b) => b.value)));
  const x = (v) => left + (v / max) * (width - left - right);
  const svg = svgEl("svg", { viewBox: `0 0 ${width} ${height}`, role: "img" });
  svg.append(svgEl("line", { x1: left, x2: left, y1: top, y2: height - top, class: "axis" }));
  bars.forEach((b, i) => {
    const y = top + i * rowH;
    svg.append(svgEl("text", { x: left - 6, y: y + rowH - 6, "text-anchor": "end" }, b.label));
    const rect = svgEl("rect", { x: left, y: y + 3, width: Math.max(0, x(b.value) - left), height: rowH - 6,
      fill: b.color || color, rx: 2, "data-label": b.label, "data-value": b.value, ...(b.data || {}) });
    svg.append(titled(rect, b.title || `${b.label}: ${fmt(b.value)}`));
    svg.append(svgEl("text", { x: x(b.value) + 4, y: y + rowH - 6, class: "value-label" }, fmt(b.value)));
  });
  return svg;
}

// Histogram buckets [[le, count]] of power-of-two bounds as bars "1", "2", "3–4", "5–8"…
function histogramBars(hist) {
  const counts = new Map((hist.buckets || []).map(([le, n]) => [le === null ? "+Inf" : le, n]));
  const bounds = [...counts.keys()].filter((le) => le !== "+Inf");
  const bars = [];
  if (bounds.length) {
    for (let le = Math.min(...bounds); le <= Math.max(...bounds); le *= 2) {
      bars.push({ label: le <= 2 ? fmt(le) : `${fmt(le / 2 + 1)}–${fmt(le)}`, value: counts.get(le) || 0,
        data: { "data-le": le } });
    }
  }
  if (counts.has("+Inf")) {
    const top = bounds.length ? Math.max(...bounds) : 0;
    bars.push({ label: `> ${fmt(top)}`, value: counts.get("+Inf"), data: { "data-le": "+Inf" } });
  }
  return bars;
}

// Horizontal bars per latency stage, p50/p95/p99, on a log scale (stages differ by 1000x).
function latencyChart(latency) {
  const width = 440, left = 78, right = 60, rowH = 16, gap = 12, top = 8;
  const height = top + STAGES.length * (QUANTILES.length * rowH + gap) + 8;
  const values = STAGES.flatMap(([k]) => QUANTILES.map((q) => latency[k][q])).filter((v) => v > 0);
  if (!values.length) return emptyChart(width, 120, "no batches in the window");
  const lo = Math.pow(10, Math.floor(Math.log10(Math.min(...values))));
  const hi = Math.pow(10, Math.ceil(Math.log10(Math.max(...values) * 1.01)));
  const x = (v) => left + ((Math.log10(Math.max(v, lo)) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo))) * (width - left - right);
  const svg = svgEl("svg", { viewBox: `0 0 ${width} ${height}`, role: "img" });
  const shades = { p50: "#8fb2ef", p95: "#2f6fde", p99: "#1b3f86" };
  STAGES.forEach(([key, name], s) => {
    const y0 = top + s * (QUANTILES.length * rowH + gap);
    svg.append(svgEl("text", { x: left - 8, y: y0 + rowH * 1.8, "text-anchor": "end" }, name));
    QUANTILES.forEach((q, j) => {
      const v = latency[key][q];
      const y = y0 + j * rowH;
      const rect = svgEl("rect", { x: left, y: y + 2, width: v ? Math.max(1, x(v) - left) : 0, height: rowH - 4,
        fill: shades[q], rx: 2, "data-stage": key, "data-quantile": q, "data-value": v === null ? "" : v });
      svg.append(titled(rect, `${name} ${q}: ${ms(v)}`));
      svg.append(svgEl("text", { x: (v ? x(v) : left) + 4, y: y + rowH - 4, class: "value-label" }, `${q} ${ms(v)}`));
    });
  });
  return svg;
}

// -- sections --------------------------------------------------------------------------------

function kpi(key, label, value, text, sub, bad = false) {
  return el("div", { class: bad ? "kpi bad" : "kpi", "data-kpi": key, "data-value": value ?? "" }, [
    el("div", { class: "label", text: label }),
    el("div", { class: "value", text }),
    el("div", { class: "sub", text: sub || "" }),
  ]);
}

function renderKpis(d) {
  const t = d.totals, a = d.agents, b = d.batching;
  fill("kpis",
    kpi("seen", "Seen", t.seen, fmt(t.seen), "comments through the model"),
    kpi("predicted", "Predicted", t.predicted, fmt(t.predicted), `${fmt(t.failed)} failed`),
    kpi("matched", "Matched", t.matched, fmt(t.matched), "talk about their SKU"),
    kpi("match_rate", "Match rate", t.match_rate, pct(t.match_rate), "matched / predicted"),
    kpi("records_per_second", "Records / s", a.records_per_second, fmt(a.records_per_second), "last minute"),
    kpi("batches_per_second", "Batches / s", b.batches_per_second, fmt(b.batches_per_second), `last ${Math.round(b.window_s)} s`),
    kpi("lag", "Consumer lag", d.lag.total, fmt(d.lag.total), "records not yet committed", d.lag.total > 0),
    kpi("dead_letters", "Dead letters", t.dead_letters, fmt(t.dead_letters), "since the start", t.dead_letters > 0),
    kpi("recovered", "Recovered", t.recovered, fmt(t.recovered),
      Object.entries(d.recovered || {}).map(([kind, n]) => `${kind.replaceAll("_", " ")} ${fmt(n)}`).join(", ") || "separator in review"));
}

function colorMap(names) {
  const map = {};
  names.forEach((n, i) => { map[n] = PALETTE[i % PALETTE.length]; });
  return map;
}

function countRows(entries, colors, kind, onclick) {
  return Object.entries(entries)
    .sort((a, b) => b[1].seen - a[1].seen)
    .map(([name, e]) => ({
      attrs: { [`data-${kind}`]: name, class: onclick ? "clickable" + (name === selected ? " selected" : "") : null },
      onclick: onclick ? () => onclick(name) : null,
      cells: [
        [colors ? "■ " + name : name, false, colors ? { style: `color:${colors[name] || "inherit"}` } : {}],
        [fmt(e.seen), true, { "data-field": "seen", "data-value": e.seen }],
        [fmt(e.predicted), true, { "data-field": "predicted", "data-value": e.predicted }],
        [fmt(e.matched), true, { "data-field": "matched", "data-value": e.matched }],
        [pct(e.match_rate), true, { "data-field": "match_rate", "data-value": e.match_rate ?? "" }],
        [fmt(e.last_minute.seen), true, { "data-field": "last_minute", "data-value": e.last_minute.seen }],
        [fmt(e.last_hour), true, { "data-field": "last_hour", "data-value": e.last_hour }],
      ],
    }));
}

const COUNT_HEADERS = [["name"], ["seen", 1], ["predicted", 1], ["matched", 1], ["match rate", 1],
  ["this minute", 1], ["last hour", 1]];

function select(name) {
  selected = selected === name ? null : name;
  if (latest) { renderThroughput(latest); renderDrilldown(latest); }
}

function renderThroughput(d) {
  const names = Object.keys(d.categories).sort();
  const colors = colorMap(names);
  const series = names.map((n) => ({ name: n, values: d.categories[n].per_minute, color: colors[n] }));
  const chart = document.getElementById("chart-throughput");
  if (!series.length) chart.replaceChildren(emptyChart(900, 120, "no comments yet"));
  else chart.replaceChildren(legend(series, select), lineChart(d.minutes, series));
  table("table-categories", COUNT_HEADERS, countRows(d.categories, colors, "category", select));
}

function renderDrilldown(d) {
  const panel = document.getElementById("drilldown");
  if (!selected || !d.categories[selected]) { panel.hidden = true; return; }
  panel.hidden = false;
  document.getElementById("drilldown-name").textContent = selected;
  const paths = Object.fromEntries(Object.entries(d.category_paths)
    .filter(([p]) => p === selected || p.startsWith(selected + "/")));
  const top = Object.entries(paths).sort((a, b) => b[1].last_hour - a[1].last_hour).slice(0, 8);
  const colors = colorMap(top.map(([p]) => p));
  const series = top.map(([p, e]) => ({ name: p, values: e.per_minute, color: colors[p] }));
  fill("chart-paths", legend(series, null), lineChart(d.minutes, series, { height: 180 }));
  table("table-paths", COUNT_HEADERS, countRows(paths, colors, "path", null));
}

function renderBatching(d) {
  const b = d.batching;
  document.getElementById("batching-window").textContent = `last ${Math.round(b.window_s)} s`;
  const fact = (key, label, value, text) => el("div", { class: "fact", "data-fact": key, "data-value": value ?? "" },
    [el("div", { class: "label", text: label }), el("div", { class: "value", text })]);
  fill("batching-facts",
    fact("batches", "batches", b.batches, fmt(b.batches)),
    fact("mean_batch_size", "mean size", b.mean_batch_size, fmt(b.mean_batch_size)),
    fact("batches_per_second", "batches / s", b.batches_per_second, fmt(b.batches_per_second)),
    fact("padding_fraction", "padding", b.padding_fraction, pct(b.padding_fraction)));
  fill("chart-batch-size", barChart(histogramBars(b.batch_size)));
  fill("chart-tokens", barChart(histogramBars(b.tokens_per_batch), { color: PALETTE[1] }));
}

function renderLatency(d) {
  const l = d.latency;
  document.getElementById("latency-window").textContent = `p50 · p95 · p99, last ${Math.round(l.window_s)} s`;
  fill("chart-latency", latencyChart(l));
  table("table-latency", [["stage"], ["p50", 1], ["p95", 1], ["p99", 1], ["max", 1], ["samples", 1]],
    STAGES.map(([key, name]) => ({
      attrs: { "data-stage": key },
      cells: [[name], ...QUANTILES.map((q) => [ms(l[key][q]), true, { "data-quantile": q, "data-value": l[key][q] ?? "" }]),
        [ms(l[key].max), true], [fmt(l[key].count), true]],
    })));
}

function workerName(url) {
  return (url || "").replace(/^https?:\/\//, "").replace(/\/$/, "");
}

function renderLag(d) {
  const parts = d.lag.partitions.map((p) => ({ worker: d.worker, ...p }));
  const workers = [...new Set(parts.map((p) => p.worker))];
  const colors = colorMap(workers);
  fill("chart-lag", hbarChart(parts.map((p) => ({
    label: `${p.topic}:${p.partition}`, value: p.lag ?? 0, color: colors[p.worker],
    title: `${p.topic}:${p.partition} on ${workerName(p.worker)}: lag ${fmt(p.lag)}`,
    data: { "data-topic": p.topic, "data-partition": p.partition },
  })), { empty: d.lag.error ? "lag unknown" : "no partitions held" }));
  table("table-lag", [["worker"], ["topic:partition"], ["end offset", 1], ["committed", 1], ["lag", 1]],
    parts.map((p) => ({
      attrs: { "data-tp": `${p.topic}:${p.partition}` },
      cells: [[workerName(p.worker), false, { style: `color:${colors[p.worker]}` }], [`${p.topic}:${p.partition}`],
        [fmt(p.end_offset), true], [fmt(p.committed ?? p.position), true], [fmt(p.lag), true, { "data-value": p.lag ?? "" }]],
    })));
  document.getElementById("lag-note").textContent = d.lag.note + (d.lag.error ? ` Error: ${d.lag.error}` : "");
}

function renderWorkers(d) {
  const workers = d.workers || [{ url: d.worker, ok: true, assigned_partitions: d.assigned_partitions,
    records: d.agents.records, records_per_second: d.agents.records_per_second,
    model_version: d.model && d.model.version, lag: d.lag.total }];
  table("table-workers", [["worker"], ["partitions held"], ["records", 1], ["rec/s", 1], ["model", 1]],
    workers.map((w) => ({
      attrs: { "data-worker": w.url },
      cells: w.ok ? [[workerName(w.url)], [compactPartitions(w.assigned_partitions)],
        [fmt(w.records), true, { "data-value": w.records }], [fmt(w.records_per_second), true], [w.model_version || "–", true]]
        : [[workerName(w.url)], [`unreachable: ${w.error}`], ["–", true], ["–", true], ["–", true]],
    })));
}

// "streamapp-inference:0", ":1" -> "streamapp-inference 0,1"; changelogs and the assignor's
// internal topic are left out.
function compactPartitions(list) {
  const byTopic = {};
  for (const tp of list || []) {
    const i = tp.lastIndexOf(":");
    const topic = tp.slice(0, i);
    if (topic.endsWith("-changelog") || topic.includes("__assignor")) continue;
    (byTopic[topic] = byTopic[topic] || []).push(Number(tp.slice(i + 1)));
  }
  return Object.entries(byTopic).map(([t, ps]) => `${t} ${ps.sort((a, b) => a - b).join(",")}`).join(" · ") || "none";
}

function renderModel(d) {
  const m = d.model;
  if (!m) { fill("model", el("dd", { text: "not loaded" })); return; }
  const rows = [["name", m.name], ["version", m.version], ["device", m.device], ["dtype", m.dtype],
    ["loaded at", new Date(m.loaded_at * 1000).toLocaleString()], ["handler", m.handler],
    ["reloads", String(m.reloads)],
    ["last reload error", m.last_reload_error ? `${m.last_reload_error.version || ""}: ${m.last_reload_error.error}` : "none"]];
  fill("model", ...rows.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { "data-model": k, text: v ?? "–" })]));
}

function renderDeadLetters(d) {
  const reasons = Object.entries(d.dead_letters).sort((a, b) => b[1] - a[1]);
  fill("chart-dead-letters", hbarChart(reasons.map(([reason, n]) => ({
    label: reason, value: n, data: { "data-reason": reason } })), { color: "#c93c37", empty: "none" }));
  table("table-dead-letters", [["at"], ["reason"], ["id"], ["error"]],
    d.dead_letters_latest.map((x) => ({
      attrs: { "data-id": x.id },
      cells: [[new Date(x.at * 1000).toTimeString().slice(0, 8)], [x.reason], [x.id],
        [x.error, false, { class: "error-text", title: x.error }]],
    })));
}

function render(d) {
  latest = d;
  document.getElementById("app-id").textContent = d.app_id;
  renderKpis(d);
  renderThroughput(d);
  renderDrilldown(d);
  renderBatching(d);
  renderLatency(d);
  renderLag(d);
  renderWorkers(d);
  renderModel(d);
  renderDeadLetters(d);
  const n = (d.workers || [1]).length;
  fill("status", el("span", { class: "dot" }),
    `${n} worker${n === 1 ? "" : "s"} · updated ${new Date().toTimeString().slice(0, 8)} · every ${REFRESH_MS / 1000} s`);
  document.body.dataset.generatedAt = d.generated_at;
  document.body.dataset.renders = String(Number(document.body.dataset.renders || 0) + 1);
}

async function refresh() {
  const banner = document.getElementById("error");
  try {
    const response = await fetch(SOURCE, { cache: "no-store" });
    if (!response.ok) throw new Error(`${SOURCE} answered ${response.status}`);
    render(await response.json());
    banner.hidden = true;
  } catch (err) {
    banner.hidden = false;
    banner.textContent = `Could not refresh: ${err.message}`;
    const dot = document.querySelector("#status .dot");
    if (dot) dot.classList.add("stale");
  } finally {
    setTimeout(refresh, REFRESH_MS);
  }
}

document.getElementById("source-link").setAttribute("href", SOURCE);
document.getElementById("drilldown-close").addEventListener("click", () => select(selected));
refresh();
