// Overview: headline numbers, volume per watch, share of voice, watch cards and the alert feed.
import { api } from "../api.js";
import { SHRINK_K, SMOOTHING_NOTE, fmtInt, fmtPct, fmtScore, fmtTime, lines, shrunk, sparkline } from "../charts.js";
import { state, trends, watchColor } from "../state.js";
import { BUCKET_MS, h, panel } from "../util.js";
import { alertFeed } from "./alerts.js";
import { openDrawer } from "./posts.js";

export async function overview(main) {
  const [ov, tr] = await Promise.all([api("/api/overview"), trends(state.watches.filter((w) => w.active).map((w) => w.id))]);
  const step = BUCKET_MS[state.bucket] || 3600e3;
  const kpis = h("div", { class: "kpis" },
    kpi("Posts stored", fmtInt(ov.posts), `newest ${ov.latest_post_at ? fmtTime(ov.latest_post_at) : "–"}`, "posts"),
    kpi("Authors", fmtInt(ov.authors), "distinct accounts"),
    kpi("Watches", fmtInt(ov.watches), "active brands and topics"),
    kpi("Firing alerts", fmtInt(ov.firing_alerts), ov.watermark ? `watermark ${fmtTime(ov.watermark)}` : "trends not running yet", "firing"),
    kpi("Scored (live)", fmtInt(ov.counters.scored), `${fmtInt(ov.counters.ingest_accepted)} ingested · ${fmtInt(ov.counters.ingest_dlq)} DLQ`, "scored"));

  const vol = h("div", { id: "chart-volume" });
  const sent = h("div", { id: "chart-sentiment" });
  const total = tr.series.reduce((s, x) => s + x.total, 0);
  const sov = h("div", { class: "sov", id: "sov" }, ...tr.series.filter((s) => s.total).map((s) =>
    h("a", { href: `#/watch/${s.watch_id}`, style: `width:${(100 * s.total) / total}%;background:${watchColor(s.watch_id)}`, title: `${s.watch_name}: ${fmtPct(s.total / total)}` },
      s.total / total > 0.07 ? `${s.watch_name} ${Math.round((100 * s.total) / total)}%` : "")));
  const cards = h("div", { class: "cards" }, ...tr.series.map((s) => watchCard(s)));
  const legend = h("div", { class: "legend" }, ...tr.series.map((s) => h("span", {}, h("i", { style: `background:${watchColor(s.watch_id)}` }), s.watch_name)));

  main.replaceChildren(
    h("div", { class: "page-head" }, h("h1", {}, "Overview"), h("span", { class: "sub" }, `${fmtTime(tr.since)} → ${fmtTime(tr.until)}`)),
    kpis,
    h("div", { class: "grid cols-main" },
      h("div", { class: "stack" },
        panel("Volume by watch", "click a point to see its posts", vol, legend),
        panel("Mean sentiment by watch", "score = P(positive) − P(negative)", sent,
          h("div", { class: "legend" }, h("span", { class: "faint", "data-smoothing": `shrink-${SHRINK_K}` }, SMOOTHING_NOTE))),
        panel("Share of voice", `${fmtInt(total)} watched posts in range`, sov, cards)),
      panel("Alerts", "live", alertFeed({ limit: 30 }))));
  const pick = (t) => {
    const until = new Date(Date.parse(t) + step).toISOString();
    openDrawer(`All watches · ${fmtTime(t)}`, { since: t, until, order: "newest" });
  };
  const draw = () => {
    lines(vol, tr.series.map((s) => ({ name: s.watch_name, color: watchColor(s.watch_id), values: s.points.map((p) => ({ t: p.t, v: p.n })) })), step, { onPick: pick });
    const k = Math.max(1, Math.ceil((tr.series[0]?.points.length || 0) / 42)); // smooth: ≤ 42 points a line
    lines(sent, tr.series.map((s) => ({ name: s.watch_name, color: watchColor(s.watch_id), values: shrunk(coarsen(s.points, k), "mean_score") })), step * k,
      { left: { min: -1, max: 1, fmt: fmtScore }, height: 200, onPick: (t) => openDrawer(`All watches · ${fmtTime(t)}`, { since: t, until: new Date(Date.parse(t) + step * k).toISOString() }) });
    vol.dataset.total = total;
  };
  draw();
  return { redraw: draw, refreshOn: ["batch", "trend", "resync"] };
}

// Merge k adjacent buckets into one point: its posts, and their mean score weighted by post counts.
function coarsen(points, k) {
  const out = [];
  for (let i = 0; i < points.length; i += k) {
    const g = points.slice(i, i + k);
    const n = g.reduce((a, p) => a + p.n, 0);
    out.push({ t: g[0].t, n, mean_score: n ? g.reduce((a, p) => a + (p.mean_score || 0) * p.n, 0) / n : null });
  }
  return out;
}

function kpi(label, value, small, id) {
  return h("div", { class: "kpi", "data-kpi": id }, h("span", {}, label), h("b", {}, value), h("small", {}, small));
}

function watchCard(s) {
  const c = s.points.reduce((a, p) => { for (const k in p.counts) a[k] = (a[k] || 0) + p.counts[k]; return a; }, {});
  const n = s.total || 1;
  return h("a", { class: "card", href: `#/watch/${s.watch_id}`, "data-watch": s.watch_id },
    h("div", { class: "card-top" }, h("span", { class: "swatch", style: `background:${watchColor(s.watch_id)}` }), h("span", { class: "name" }, s.watch_name), h("span", { class: "n" }, `${fmtInt(s.total)} posts`)),
    h("div", { class: "metrics" }, h("span", {}, "mean ", h("b", {}, fmtScore(s.mean_score))), h("span", {}, "negative ", h("b", {}, fmtPct(s.share_negative))), h("span", {}, "authors ", h("b", {}, fmtInt(s.unique_authors)))),
    sparkline(s.points.map((p) => p.n), watchColor(s.watch_id)),
    h("div", { class: "mix", title: "label mix" }, ...["negative", "neutral", "positive"].map((l) => h("i", { class: `${l.slice(0, 3)}-bg`, style: `width:${(100 * (c[l] || 0)) / n}%`, title: `${l} ${fmtPct((c[l] || 0) / n)}` }))));
}
