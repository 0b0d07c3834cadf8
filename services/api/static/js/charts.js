// Hand-written SVG charts: stacked bars, multi-line, sentiment (two axes), author history, sparklines.
// Every chart draws at its container's width, shows a tooltip on hover and reports clicks.
import { esc } from "./util.js";
const NS = "http://www.w3.org/2000/svg";
export const COLORS = { negative: "#d64545", neutral: "#9aa5b1", positive: "#2f9e6e", accent: "#2f6fdb" };
export const WATCH_COLORS = ["#2f6fdb", "#e0892f", "#8e5bd6", "#1f9aa8", "#c2497d", "#6b8e23", "#7b8794", "#b7950b"];
const LABELS = ["negative", "neutral", "positive"];
const M = { top: 14, right: 16, bottom: 26, left: 44 };

export function svg(tag, attrs = {}, kids = []) {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined && v !== null) e.setAttribute(k, v);
  for (const k of kids) e.append(k);
  return e;
}

// Times are shown in one time zone, the header's choice (default: the browser's), kept in localStorage.
export const BROWSER_TZ = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
let tz, dayFmt, timeFmt, fullFmt, hourFmt;
export function setTimeZone(zone) {
  try { new Intl.DateTimeFormat("en-GB", { timeZone: zone }); } catch { zone = BROWSER_TZ; } // an unknown name
  tz = zone;
  const fmt = (opts) => new Intl.DateTimeFormat("en-GB", { timeZone: tz, ...opts });
  dayFmt = fmt({ weekday: "short", day: "numeric", month: "short" });
  timeFmt = fmt({ hour: "2-digit", minute: "2-digit", hour12: false });
  fullFmt = fmt({ weekday: "short", day: "numeric", month: "short", hour: "2-digit", minute: "2-digit", hour12: false, timeZoneName: "short" });
  hourFmt = fmt({ year: "numeric", month: "numeric", day: "numeric", hour: "numeric", minute: "numeric", hour12: false });
  return tz;
}
export const timeZone = () => tz;
setTimeZone(BROWSER_TZ);
// Milliseconds the zone is ahead of UTC at t (ticks fall on the zone's midnights and hours).
function zoneOffset(t) {
  const p = Object.fromEntries(hourFmt.formatToParts(new Date(t)).map((x) => [x.type, x.value]));
  const wall = Date.UTC(+p.year, +p.month - 1, +p.day, +p.hour % 24, +p.minute);
  return wall - Math.floor(t / 60e3) * 60e3;
}
export const fmtTime = (t) => fullFmt.format(new Date(t));
// Report periods are UTC calendar days: shown in another zone, a week from Monday 00:00 UTC would
// read as starting on Sunday, so their dates are always written in UTC.
const periodFmt = new Intl.DateTimeFormat("en-GB", { timeZone: "UTC", weekday: "short", day: "numeric", month: "short", year: "numeric" });
export const fmtPeriodDate = (t) => periodFmt.format(new Date(t));
export const fmtPct = (v) => (v === null || v === undefined ? "–" : `${(100 * v).toFixed(1)}%`);
export const fmtScore = (v) => (v === null || v === undefined ? "–" : (v > 0 ? "+" : "") + v.toFixed(2));
export const fmtInt = (v) => (v ?? 0).toLocaleString("en-US");

// Volume-aware smoothing: each bucket's value pulled toward the series' post-weighted mean by
// k / (n + k), n = the bucket's posts. A 2-post hour moves the line a little, a 200-post hour shows
// what it says. Points keep their raw value and n for the tooltip.
export const SHRINK_K = 10;
export const SMOOTHING_NOTE = `smoothed by volume: each bucket pulled toward the range's mean by ${SHRINK_K}/(n+${SHRINK_K}), n = its posts (hover for the raw value)`;
export function shrunk(points, key, k = SHRINK_K) {
  let sum = 0, posts = 0;
  for (const p of points) if (p.n && p[key] !== null && p[key] !== undefined) { sum += p[key] * p.n; posts += p.n; }
  const prior = posts ? sum / posts : 0;
  return points.map((p) => {
    const ok = p.n && p[key] !== null && p[key] !== undefined;
    return { t: p.t, n: p.n || 0, raw: ok ? p[key] : null, v: ok ? (p.n * p[key] + k * prior) / (p.n + k) : null };
  });
}

// Round axis: a 1/2/5 step (whole numbers for counts) and the smallest multiple of it >= v.
function niceScale(v, integer = true) {
  if (!(v > 0)) return { max: 1, ticks: 1 };
  const raw = v / 4;
  const p = 10 ** Math.floor(Math.log10(raw));
  let step = [1, 2, 5, 10].map((m) => m * p).find((x) => x >= raw);
  if (integer) step = Math.max(1, Math.round(step));
  const ticks = Math.max(1, Math.ceil(v / step - 1e-9));
  return { max: step * ticks, ticks };
}

function timeTicks(t0, t1, width) {
  const H = 3600e3, D = 24 * H;
  const steps = [15 * 60e3, 30 * 60e3, H, 3 * H, 6 * H, 12 * H, D, 2 * D, 7 * D, 14 * D, 30 * D];
  const want = Math.max(2, Math.floor(width / 95));
  const step = steps.find((s) => (t1 - t0) / s <= want) || steps[steps.length - 1];
  const off = zoneOffset(t0);
  const out = [];
  for (let t = Math.ceil((t0 + off) / step) * step - off; t <= t1; t += step) out.push(t);
  const midnight = (t) => (t + zoneOffset(t)) % D === 0;
  return { ticks: out, label: (t) => (step >= D || (midnight(t) && step >= 6 * H) ? dayFmt.format(new Date(t)) : timeFmt.format(new Date(t))) };
}

function frame(container, height) {
  container.innerHTML = "";
  container.classList.add("chart");
  const width = Math.max(280, container.clientWidth || 600);
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img" });
  container.append(root);
  const tip = document.createElement("div");
  tip.className = "tip";
  tip.hidden = true;
  container.append(tip);
  return { root, tip, width, height, iw: width - M.left - M.right, ih: height - M.top - M.bottom };
}

function showTip(f, x, y, html) {
  f.tip.innerHTML = html;
  for (const i of f.tip.querySelectorAll("i[data-c]")) i.style.color = i.dataset.c; // CSSOM, not inline style
  f.tip.hidden = false;
  const half = f.tip.offsetWidth / 2;
  f.tip.style.left = `${Math.min(Math.max(x, half), f.width - half)}px`;
  f.tip.style.top = `${y}px`;
}

function yAxis(f, max, fmt, { min = 0, right = false, ticks = 4 } = {}) {
  const g = svg("g", { class: right ? "axis" : "axis grid" });
  for (let i = 0; i <= ticks; i++) {
    const v = min + ((max - min) * i) / ticks;
    const y = M.top + f.ih - (f.ih * i) / ticks;
    if (!right) g.append(svg("line", { x1: M.left, x2: M.left + f.iw, y1: y, y2: y }));
    const t = svg("text", { x: right ? M.left + f.iw + 6 : M.left - 6, y: y + 4, "text-anchor": right ? "start" : "end" });
    t.textContent = fmt(v);
    g.append(t);
  }
  f.root.append(g);
}

function xAxis(f, t0, t1, x) {
  const g = svg("g", { class: "axis" });
  const { ticks, label } = timeTicks(t0, t1, f.iw);
  for (const t of ticks) {
    const tx = svg("text", { x: x(t), y: f.height - 6, "text-anchor": "middle" });
    tx.textContent = label(t);
    g.append(tx);
  }
  f.root.append(g);
}

// points: [{t, n, counts:{negative,...}}], stepMs: bucket width. onPick(point, label|null)
export function stackedBars(container, points, stepMs, { height = 240, onPick, selected } = {}) {
  const f = frame(container, height);
  if (!points.length) { container.innerHTML = '<p class="empty">No posts in this range.</p>'; return; }
  const t0 = Date.parse(points[0].t), t1 = Date.parse(points[points.length - 1].t) + stepMs;
  const x = (t) => M.left + ((t - t0) / (t1 - t0)) * f.iw;
  const { max, ticks } = niceScale(Math.max(...points.map((p) => p.n)));
  const y = (v) => M.top + f.ih - (v / max) * f.ih;
  yAxis(f, max, (v) => fmtInt(Math.round(v)), { ticks });
  const bw = Math.max(1, (f.iw / points.length) * 0.78);
  const g = svg("g");
  points.forEach((p) => {
    const tx = Date.parse(p.t);
    const cx = x(tx) + (x(tx + stepMs) - x(tx) - bw) / 2;
    if (selected && selected === p.t) g.append(svg("rect", { class: "sel", x: x(tx), y: M.top, width: x(tx + stepMs) - x(tx), height: f.ih }));
    let acc = 0;
    for (const lab of LABELS) {
      const v = p.counts[lab] || 0;
      if (!v) continue;
      const r = svg("rect", { class: "bar", x: cx, y: y(acc + v), width: bw, height: Math.max(0.5, y(acc) - y(acc + v)), fill: COLORS[lab], "data-t": p.t, "data-label": lab });
      r.addEventListener("click", (e) => { e.stopPropagation(); onPick && onPick(p, lab); });
      g.append(r);
      acc += v;
    }
    const hit = svg("rect", { class: "hit", x: x(tx), y: M.top, width: Math.max(1, x(tx + stepMs) - x(tx)), height: f.ih - (y(0) - y(acc)), "data-t": p.t });
    hit.addEventListener("click", () => onPick && onPick(p, null));
    const tipHtml = `<b>${fmtTime(p.t)}</b><br>${fmtInt(p.n)} posts · ${LABELS.map((l) => `${p.counts[l] || 0} ${l.slice(0, 3)}`).join(" · ")}<br>mean ${fmtScore(p.mean_score)}`;
    for (const el of [hit, ...g.querySelectorAll(`rect.bar[data-t="${p.t}"]`)]) {
      el.addEventListener("mousemove", () => showTip(f, cx + bw / 2, y(acc), tipHtml));
      el.addEventListener("mouseleave", () => { f.tip.hidden = true; });
    }
    g.prepend(hit);
  });
  f.root.append(g);
  xAxis(f, t0, t1, x);
  f.root.dataset.total = points.reduce((s, p) => s + p.n, 0);
}

// series: [{name, color, values:[{t, v}], dashed, axis:"left"|"right"}]; left/right: {min,max,fmt}
export function lines(container, series, stepMs, { height = 240, left, right, onPick, tipRow } = {}) {
  const f = frame(container, height);
  const all = series.flatMap((s) => s.values);
  if (!all.length) { container.innerHTML = '<p class="empty">No posts in this range.</p>'; return; }
  const ts = [...new Set(all.map((p) => Date.parse(p.t)))].sort((a, b) => a - b);
  const t0 = ts[0], t1 = ts[ts.length - 1] + stepMs;
  const x = (t) => M.left + ((t + stepMs / 2 - t0) / (t1 - t0)) * f.iw;
  const L = left || { min: 0, ...niceScale(Math.max(1, ...all.map((p) => p.v ?? 0))), fmt: (v) => fmtInt(Math.round(v)) };
  const yOf = (ax) => (v) => M.top + f.ih - ((v - ax.min) / (ax.max - ax.min)) * f.ih;
  yAxis(f, L.max, L.fmt, { min: L.min, ticks: L.ticks || 4 });
  if (right) yAxis(f, right.max, right.fmt, { min: right.min, right: true });
  if (L.min < 0 && L.max > 0) f.root.append(svg("line", { class: "zero", x1: M.left, x2: M.left + f.iw, y1: yOf(L)(0), y2: yOf(L)(0) }));
  for (const s of series) {
    const y = yOf(s.axis === "right" ? right : L);
    let d = "", pen = false;
    for (const p of s.values) {
      if (p.v === null || p.v === undefined) { pen = false; continue; }
      d += `${pen ? "L" : "M"}${x(Date.parse(p.t)).toFixed(1)},${y(p.v).toFixed(1)}`;
      pen = true;
    }
    const drawn = JSON.stringify(s.values.map((p) => (p.v === null || p.v === undefined ? null : +p.v.toFixed(4))));
    f.root.append(svg("path", { d, fill: "none", stroke: s.color, "stroke-width": s.width || 2, "stroke-dasharray": s.dashed ? "5 4" : null, "stroke-linejoin": "round", "data-series": s.name, "data-values": drawn }));
  }
  const cross = svg("line", { y1: M.top, y2: M.top + f.ih, stroke: "#9aa5b1", "stroke-dasharray": "3 3", visibility: "hidden" });
  f.root.append(cross);
  const step = f.iw / ts.length;
  ts.forEach((t) => {
    const hit = svg("rect", { class: "hit", x: x(t) - step / 2, y: M.top, width: step, height: f.ih, "data-t": new Date(t).toISOString() });
    hit.addEventListener("mousemove", () => {
      cross.setAttribute("x1", x(t)); cross.setAttribute("x2", x(t)); cross.setAttribute("visibility", "visible");
      const rows = series.map((s) => {
        const p = s.values.find((q) => Date.parse(q.t) === t);
        const fmt = s.fmt || L.fmt;
        const raw = p && p.raw !== undefined && p.raw !== null ? ` (bucket ${esc(fmt(p.raw))} of ${fmtInt(p.n)} posts)` : "";
        return tipRow ? tipRow(s, p) : `<i data-c="${esc(s.color)}">■</i> ${esc(s.name)}: ${p && p.v !== null ? esc(fmt(p.v)) : "–"}${raw}`;
      });
      showTip(f, x(t), M.top + 10, `<b>${fmtTime(t)}</b><br>${rows.join("<br>")}`);
    });
    hit.addEventListener("mouseleave", () => { f.tip.hidden = true; cross.setAttribute("visibility", "hidden"); });
    hit.addEventListener("click", () => onPick && onPick(new Date(t).toISOString()));
    f.root.append(hit);
  });
  xAxis(f, t0, t1, (t) => M.left + ((t - t0) / (t1 - t0)) * f.iw);
}

// Author history: one dot per post (x = post order, y = score), running mean line; n on hover.
export function history(container, pts, { height = 220, onPick } = {}) {
  const f = frame(container, height);
  if (!pts.length) { container.innerHTML = '<p class="empty">No scored posts.</p>'; return; }
  const n = pts.length;
  const x = (i) => M.left + (n === 1 ? f.iw / 2 : (i / (n - 1)) * f.iw);
  const y = (v) => M.top + f.ih - ((v + 1) / 2) * f.ih;
  yAxis(f, 1, (v) => fmtScore(v), { min: -1 });
  f.root.append(svg("line", { class: "zero", x1: M.left, x2: M.left + f.iw, y1: y(0), y2: y(0) }));
  f.root.append(svg("path", { d: pts.map((p, i) => `${i ? "L" : "M"}${x(i).toFixed(1)},${y(p.running_mean).toFixed(1)}`).join(""), fill: "none", stroke: COLORS.accent, "stroke-width": 2.2 }));
  pts.forEach((p, i) => {
    const c = svg("circle", { cx: x(i), cy: y(p.score), r: n > 200 ? 2.5 : 4, fill: COLORS[p.label] || COLORS.neutral, stroke: "#fff", "stroke-width": 1, class: "bar" });
    c.addEventListener("mousemove", () => showTip(f, x(i), y(p.score), `<b>${fmtTime(p.created_at)}</b><br>${p.label} ${fmtScore(p.score)} · n = ${p.user_prior_count} earlier posts<br>running mean ${fmtScore(p.running_mean)}`));
    c.addEventListener("mouseleave", () => { f.tip.hidden = true; });
    c.addEventListener("click", () => onPick && onPick(p));
    f.root.append(c);
  });
  const g = svg("g", { class: "axis" });
  const ticks = Math.min(n, 6);
  for (let k = 0; k < ticks; k++) {
    const i = ticks === 1 ? 0 : Math.round((k * (n - 1)) / (ticks - 1));
    const t = svg("text", { x: x(i), y: f.height - 6, "text-anchor": "middle" });
    t.textContent = `#${i + 1}`;
    g.append(t);
  }
  f.root.append(g);
}

export function sparkline(values, color, w = 220, h = 36) {
  const s = svg("svg", { viewBox: `0 0 ${w} ${h}`, preserveAspectRatio: "none", width: "100%", height: h });
  if (values.length < 2) return s;
  const max = Math.max(1, ...values);
  const pts = values.map((v, i) => [(i / (values.length - 1)) * w, h - 2 - (v / max) * (h - 4)]);
  const d = pts.map(([x, y], i) => `${i ? "L" : "M"}${x.toFixed(1)},${y.toFixed(1)}`).join("");
  s.append(svg("path", { d: `${d}L${w},${h}L0,${h}Z`, fill: color, opacity: 0.12 }));
  s.append(svg("path", { d, fill: "none", stroke: color, "stroke-width": 1.8, "vector-effect": "non-scaling-stroke" }));
  return s;
}
