// Renders splitter.json's panels from the Prometheus HTTP API of the server that serves this
// page (see index.html). Sets document.title to "ready" (or "error: ...") when every panel is
// drawn, for a headless browser to take its picture.
"use strict";

const params = new URLSearchParams(location.search);
const minutes = Number(params.get("minutes") || 10);
const step = Number(params.get("step") || 5);
const rateInterval = params.get("rate") || "30s";
const end = Number(params.get("end") || Math.floor(Date.now() / 1000));
const start = end - minutes * 60;

// Grafana's classic palette, in its order.
const PALETTE = ["#73BF69", "#F2CC0C", "#8AB8FF", "#FF780A", "#F2495C", "#5794F2", "#B877D9",
  "#705DA0", "#37872D", "#FADE2A", "#447EBC", "#C15C17", "#890F02", "#0A437C", "#6D1F62",
  "#584477", "#B7DBAB", "#F4D598", "#70DBED", "#F9BA8F"];
const THRESHOLD_COLORS = { green: "#73BF69", orange: "#FF9830", red: "#F2495C" };

// The dashboard's template variables, all "All", and Grafana's built-in intervals.
function substitute(expr) {
  return expr
    .replaceAll("$__rate_interval", rateInterval)
    .replaceAll("$__range", `${end - start}s`)
    .replaceAll("$instance", ".*")
    .replaceAll("$backend", ".*");
}

function si(v, digits) {
  const a = Math.abs(v);
  for (const [f, s] of [[1e9, "G"], [1e6, "M"], [1e3, "k"]]) {
    if (a >= f) return (v / f).toFixed(digits) + " " + s;
  }
  return v.toFixed(a !== 0 && a < 1 ? Math.max(digits, 2) : digits) + " ";
}

// Value to text in a Grafana unit (those splitter.json uses).
function formatter(unit, decimals) {
  const d = decimals ?? 1;
  switch (unit) {
    case "s":
      return (v) => {
        const a = Math.abs(v);
        if (a === 0) return "0 s";
        if (a < 1e-3) return (v * 1e6).toFixed(0) + " µs";
        if (a < 1) return (v * 1e3).toFixed(a < 0.01 ? 2 : a < 0.1 ? 1 : 0) + " ms";
        return v.toFixed(2) + " s";
      };
    case "percentunit":
      return (v) => (v * 100).toFixed(decimals ?? (Math.abs(v) < 0.1 && v !== 0 ? 1 : 0)) + "%";
    case "reqps":
      return (v) => si(v, d).trim() + " req/s";
    case "ops":
      return (v) => si(v, d).trim() + " ops/s";
    case "bytes":
      return (v) => {
        const units = ["B", "KiB", "MiB", "GiB"];
        let i = 0;
        while (Math.abs(v) >= 1024 && i < units.length - 1) { v /= 1024; i++; }
        return v.toFixed(i === 0 ? 0 : 1) + " " + units[i];
      };
    default:
      return (v) => (decimals !== undefined ? v.toFixed(decimals) : si(v, Number.isInteger(v) ? 0 : 1).trim());
  }
}

// Axis labels drop the zeros a fixed number of decimals leaves: "100 req/s", "2.5 req/s".
function axisLabel(text) {
  return text.replace(/(\d)\.0+(?!\d)/, "$1").replace(/(\.\d*?[1-9])0+(?!\d)/, "$1");
}

async function api(path, query) {
  const r = await fetch(`/api/v1/${path}?` + new URLSearchParams(query));
  const j = await r.json();
  if (j.status !== "success") throw new Error(`${j.errorType}: ${j.error}`);
  return j.data.result;
}

function legendOf(format, metric) {
  if (!format) {
    const labels = Object.entries(metric).filter(([k]) => k !== "__name__");
    return (metric.__name__ || "") + (labels.length ? "{" + labels.map(([k, v]) => `${k}="${v}"`).join(", ") + "}" : "");
  }
  return format.replace(/\{\{\s*(\w+)\s*\}\}/g, (_, k) => metric[k] ?? "");
}

function num(s) {
  const v = Number(s);
  return Number.isFinite(v) ? v : null;
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function place(e, g) {
  e.style.gridColumn = `${g.x + 1} / span ${g.w}`;
  e.style.gridRow = `${g.y + 2} / span ${g.h}`; // grid line 1 is above the first row
}

async function timeseries(panel, body, legend) {
  const defaults = panel.fieldConfig?.defaults ?? {};
  const fmt = formatter(defaults.unit, defaults.decimals);
  const stacked = defaults.custom?.stacking?.mode === "normal";
  const xs = [];
  for (let t = start; t <= end; t += step) xs.push(t);
  const series = [];
  for (const target of panel.targets) {
    const result = await api("query_range", { query: substitute(target.expr), start, end, step });
    for (const r of result) {
      const byT = new Map(r.values.map(([t, v]) => [Math.round(t), num(v)]));
      series.push({ name: legendOf(target.legendFormat, r.metric), ys: xs.map((t) => byT.get(t) ?? null) });
    }
  }
  if (series.length === 0) {
    body.append(el("div", "nodata", "No data"));
    return;
  }
  if (stacked) {
    const sum = xs.map(() => 0);
    for (const s of series) s.ys = s.ys.map((v, i) => (v === null ? null : (sum[i] += v)));
  }
  // Legend first, so the chart gets the height left: name and last value (a still picture has no
  // cursor to read values with). Series at 0 throughout are drawn but not listed.
  const lastOf = (ys) => [...ys].reverse().find((v) => v !== null);
  let zeros = 0;
  series.forEach((s, i) => {
    const own = stacked ? s.ys.map((v, j) => (v === null ? null : v - (i ? series[i - 1].ys[j] ?? 0 : 0))) : s.ys;
    if (own.every((v) => v === null || v === 0)) { zeros++; return; }
    const last = lastOf(own);
    const item = el("span");
    const sw = el("i");
    sw.style.background = PALETTE[i % PALETTE.length];
    item.append(sw, s.name + (last === undefined ? "" : ": " + fmt(last)));
    legend.append(item);
  });
  if (zeros) legend.append(el("span", "", `(${zeros} more at 0)`));
  const threshold = defaults.custom?.thresholdsStyle?.mode === "line"
    ? defaults.thresholds.steps.find((s) => s.value !== null)?.value : undefined;
  const rect = body.getBoundingClientRect();
  const opts = {
    width: Math.floor(rect.width),
    height: Math.floor(rect.height),
    legend: { show: false },
    cursor: { show: false },
    padding: [6, 10, 0, 0],
    scales: {
      y: {
        range: (u, min, max) => {
          const lo = Math.min(0, min ?? 0);
          let hi = defaults.max ?? Math.max(max ?? 0, threshold ?? 0);
          if (defaults.max === undefined) hi = hi > 0 ? hi * 1.12 : 1;
          return [lo, hi];
        },
      },
    },
    axes: [
      { stroke: "#9fa0ad", grid: { stroke: "#2a2d33", width: 1 }, ticks: { show: false },
        font: "11px Arial", size: 24, space: 50, incrs: [60, 120, 300, 600, 900, 1800, 3600],
        values: (u, vals) => vals.map((t) => new Date(t * 1000).toISOString().slice(11, 16)) },
      { stroke: "#9fa0ad", grid: { stroke: "#2a2d33", width: 1 }, ticks: { show: false },
        font: "11px Arial", size: 66, values: (u, vals) => vals.map((v) => axisLabel(fmt(v))) },
    ],
    series: [{}].concat(series.map((s, i) => {
      const color = PALETTE[i % PALETTE.length];
      return { label: s.name, stroke: color, width: 1.5, fill: color + (stacked ? "55" : "18"),
               points: { show: false }, spanGaps: false };
    })),
    hooks: {
      draw: [(u) => {
        if (threshold === undefined) return;
        const y = u.valToPos(threshold, "y", true);
        const c = u.ctx;
        c.save();
        c.strokeStyle = "#F2495C";
        c.setLineDash([6, 4]);
        c.lineWidth = 1;
        c.beginPath();
        c.moveTo(u.bbox.left, y);
        c.lineTo(u.bbox.left + u.bbox.width, y);
        c.stroke();
        c.restore();
      }],
    },
  };
  // Stacked: drawn last to first, so each band shows over the one it sits on.
  const data = [xs].concat(series.map((s) => s.ys));
  if (stacked) {
    opts.series = [opts.series[0]].concat(opts.series.slice(1).reverse());
    data.splice(1, data.length - 1, ...data.slice(1).reverse());
  }
  new uPlot(opts, data, body);
}

async function stat(panel, body) {
  const defaults = panel.fieldConfig?.defaults ?? {};
  const fmt = formatter(defaults.unit, defaults.decimals);
  const target = panel.targets[0];
  const result = await api("query", { query: substitute(target.expr), time: end });
  if (result.length === 0) {
    body.append(el("div", "nodata", "No data"));
    return;
  }
  if (panel.options?.textMode === "name") {
    body.append(el("div", "stat name", result.map((r) => legendOf(target.legendFormat, r.metric)).join(", ")));
    return;
  }
  const v = num(result[0].value[1]);
  const div = el("div", "stat", v === null ? "NaN" : fmt(v));
  let color = "#73BF69";
  for (const s of defaults.thresholds?.steps ?? []) {
    if (v !== null && (s.value === null || v >= s.value)) color = THRESHOLD_COLORS[s.color] ?? s.color;
  }
  div.style.color = color;
  body.append(div);
}

async function main() {
  const dash = await (await fetch("splitter.json")).json();
  const when = new Date(end * 1000).toISOString().replace("T", " ").slice(0, 16) + " UTC";
  document.getElementById("title").textContent = dash.title;
  document.getElementById("note").textContent =
    `Preview of infra/grafana/splitter.json, not Grafana: its ${dash.panels.filter((p) => p.type !== "row").length} panels' queries run on ` +
    `Prometheus ${location.host}, the ${minutes} minutes to ${when}, step ${step}s, $__rate_interval ${rateInterval}, all instances and backends.`;
  const grid = document.getElementById("grid");
  const jobs = [];
  for (const panel of dash.panels) {
    if (panel.type === "row") {
      const r = el("div", "row", panel.title);
      place(r, panel.gridPos);
      grid.append(r);
      continue;
    }
    const box = el("div", "panel");
    place(box, panel.gridPos);
    const body = el("div", "body");
    const legend = el("div", "legend");
    box.append(el("div", "title", panel.title), body);
    if (panel.type === "timeseries") box.append(legend);
    grid.append(box);
    jobs.push({ panel, body, legend });
  }
  // Laid out first, so each chart knows its size; then drawn one after the other.
  const errors = [];
  for (const { panel, body, legend } of jobs) {
    try {
      if (panel.type === "timeseries") await timeseries(panel, body, legend);
      else if (panel.type === "stat") await stat(panel, body);
      else body.append(el("div", "nodata", `panel type ${panel.type}: not previewed`));
    } catch (e) {
      errors.push(`${panel.title}: ${e.message}`);
      body.append(el("div", "error", e.message));
    }
  }
  document.title = errors.length ? "error: " + errors.join("; ") : "ready";
}

main().catch((e) => {
  document.title = "error: " + e.message;
  document.body.append(el("div", "error", e.stack || String(e)));
});
