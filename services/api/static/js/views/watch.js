// One watch: volume by label (click a bar for its posts), sentiment trend, label mix, top authors.
import { api } from "../api.js";
import { COLORS, SHRINK_K, SMOOTHING_NOTE, fmtInt, fmtPct, fmtScore, fmtTime, lines, shrunk, stackedBars } from "../charts.js";
import { state, trends, watchColor } from "../state.js";
import { BUCKET_MS, h, panel } from "../util.js";
import { alertFeed, whyBlock } from "./alerts.js";
import { openDrawer } from "./posts.js";

export async function watchView(main, id) {
  const w = state.watches.find((x) => x.id === id);
  if (!w) { main.replaceChildren(h("p", { class: "empty" }, `No watch ${id}.`)); return {}; }
  const step = BUCKET_MS[state.bucket] || 3600e3;
  const vol = h("div", { id: "chart-watch-volume" });
  const sent = h("div", { id: "chart-watch-sentiment" });
  const kpis = h("div", { class: "kpis" });
  const mix = h("div", {});
  const authors = h("div", {});
  const why = h("div", { id: "watch-why" }, h("p", { class: "faint" }, "No alert has fired for this watch."));
  let selected = null;
  let tr;
  const pick = (p, label) => {
    selected = p.t;
    const until = new Date(Date.parse(p.t) + step).toISOString();
    openDrawer(`${w.name} · ${fmtTime(p.t)}`, { watch_id: id, since: p.t, until, label: label || undefined, order: "newest" });
    draw();
  };
  function draw() {
    stackedBars(vol, tr.series[0].points, step, { onPick: pick, selected });
    const pts = tr.series[0].points;
    lines(sent, [
      { name: "mean score", color: COLORS.accent, values: shrunk(pts, "mean_score"), fmt: fmtScore },
      { name: "% negative", color: COLORS.negative, dashed: true, axis: "right", values: shrunk(pts, "share_negative"), fmt: fmtPct },
    ], step, { left: { min: -1, max: 1, fmt: fmtScore }, right: { min: 0, max: 1, fmt: (v) => `${Math.round(100 * v)}%` }, height: 200,
      onPick: (t) => pick(tr.series[0].points.find((p) => p.t === t) || { t }, null) });
  }
  async function load() {
    tr = await trends([id]);
    const s = tr.series[0];
    const c = s.points.reduce((a, p) => { for (const k in p.counts) a[k] = (a[k] || 0) + p.counts[k]; return a; }, {});
    kpis.replaceChildren(
      kpi("Posts", fmtInt(s.total), "in range", "posts"), kpi("Mean score", fmtScore(s.mean_score), "−1 … +1"),
      kpi("Negative", fmtPct(s.share_negative), `${fmtInt(c.negative || 0)} posts`), kpi("Positive", fmtPct((c.positive || 0) / (s.total || 1)), `${fmtInt(c.positive || 0)} posts`),
      kpi("Authors", fmtInt(s.unique_authors), `distinct per ${tr.bucket}, summed`));
    mix.replaceChildren(...["negative", "neutral", "positive"].map((l) => h("div", { class: "spaced", style: "margin:6px 0" },
      h("span", { class: `pill ${l}`, style: "width:74px;text-align:center" }, l),
      h("div", { class: "mix", style: "flex:1;height:10px" }, h("i", { class: `${l.slice(0, 3)}-bg`, style: `width:${(100 * (c[l] || 0)) / (s.total || 1)}%` })),
      h("b", { style: "width:52px;text-align:right" }, fmtPct((c[l] || 0) / (s.total || 1))))));
    draw();
    vol.dataset.total = s.total;
    const top = await api("/api/authors", { params: { watch_id: id, since: tr.since, until: tr.until, limit: 8 } });
    authors.replaceChildren(h("table", {}, h("tr", {}, h("th", {}, "Author"), h("th", { class: "num" }, "Posts"), h("th", { class: "num" }, "Mean")),
      ...top.map((a) => h("tr", { class: "click", onclick: () => { location.hash = `#/author/${encodeURIComponent(a.id)}`; } },
        h("td", {}, "@" + (a.handle || a.id)), h("td", { class: "num" }, fmtInt(a.posts)), h("td", { class: "num" }, fmtScore(a.mean_score))))));
    const latest = (await api("/api/alerts", { params: { watch_id: id, limit: 1 } })).items[0];
    if (latest) {
      const a = await api(`/api/alerts/${latest.id}`); // the detail computes and keeps the why
      why.replaceChildren(h("p", {}, h("a", { href: `#/alerts/${a.id}` }, `${a.rule_name} · ${a.status} · ${fmtTime(a.window_end)}`)), whyBlock(a.why));
      why.dataset.firing = String(a.id);
    }
  }
  main.replaceChildren(
    h("div", { class: "page-head" }, h("span", { class: "swatch", style: `display:inline-block;width:14px;height:14px;border-radius:4px;background:${watchColor(id)}` }),
      h("h1", {}, w.name), h("span", { class: "sub" }, [...w.handles.map((x) => "@" + x), ...w.keywords.map((x) => `“${x}”`), ...w.hashtags.map((x) => "#" + x)].join(" · "))),
    kpis,
    h("div", { class: "grid cols-main" },
      h("div", { class: "stack" },
        panel("Volume by sentiment", "click a bar (or a colour) for its posts", vol,
          h("div", { class: "legend" }, ...["negative", "neutral", "positive"].map((l) => h("span", {}, h("i", { style: `background:${COLORS[l]}` }), l)))),
        panel("Sentiment trend", "mean score and share negative", sent,
          h("div", { class: "legend" }, h("span", {}, h("i", { style: `background:${COLORS.accent}` }), "mean score"), h("span", {}, h("i", { class: "dash" }), "% negative"),
            h("span", { class: "faint", "data-smoothing": `shrink-${SHRINK_K}` }, SMOOTHING_NOTE)))),
      h("div", { class: "stack" }, panel("Label mix", null, mix), panel("Top authors", "in range", authors), panel("Alerts", null, alertFeed({ watch_id: id, limit: 10 })), panel("Why the latest alert", "reasons, phrases and sample posts of its window", why))));
  await load();
  return { redraw: draw, reload: load, refreshOn: ["batch", "trend", "resync"], watchId: id };
}

function kpi(label, value, small, id) {
  return h("div", { class: "kpi", "data-kpi": id }, h("span", {}, label), h("b", {}, value), h("small", {}, small));
}
