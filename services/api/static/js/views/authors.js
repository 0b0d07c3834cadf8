// Authors: the most active accounts, and one author's sentiment history with the per-user state's n.
import { api } from "../api.js";
import { COLORS, fmtInt, fmtPct, fmtScore, fmtTime, history } from "../charts.js";
import { h, panel } from "../util.js";
import { openDrawer } from "./posts.js";

export async function authorsPage(main) {
  const input = h("input", { type: "search", placeholder: "author id or handle, e.g. JetBlueNews", style: "min-width:280px" });
  const form = h("form", { class: "spaced", onsubmit: (e) => { e.preventDefault(); if (input.value.trim()) location.hash = `#/author/${encodeURIComponent(input.value.trim())}`; } },
    input, h("button", { class: "primary", type: "submit" }, "Open"));
  const table = h("table", {});
  const top = await api("/api/authors", { params: { limit: 30 } });
  table.replaceChildren(h("tr", {}, h("th", {}, "Author"), h("th", { class: "num" }, "Posts"), h("th", { class: "num" }, "Mean score"), h("th", { class: "num" }, "% negative"), h("th", {}, "Last post")),
    ...top.map((a) => h("tr", { class: "click", onclick: () => { location.hash = `#/author/${encodeURIComponent(a.id)}`; } },
      h("td", {}, "@" + (a.handle || a.id)), h("td", { class: "num" }, fmtInt(a.posts)), h("td", { class: "num" }, fmtScore(a.mean_score)),
      h("td", { class: "num" }, fmtPct(a.share_negative)), h("td", {}, a.last_post_at ? fmtTime(a.last_post_at) : "–"))));
  main.replaceChildren(h("div", { class: "page-head" }, h("h1", {}, "Authors"), form), panel("Most active authors", "all watches", table));
  return {};
}

export async function authorPage(main, id) {
  let a;
  try {
    a = await api(`/api/authors/${encodeURIComponent(id)}`);
  } catch (e) {
    main.replaceChildren(h("p", { class: "empty" }, e.message));
    return {};
  }
  const chart = h("div", { id: "chart-author" });
  const n = a.history.length;
  const last = a.history[n - 1];
  main.replaceChildren(
    h("div", { class: "page-head" }, h("h1", {}, "@" + (a.handle || a.id)), h("span", { class: "sub" }, `${a.platform} · first seen ${fmtTime(a.first_seen)} · last ${fmtTime(a.last_seen)}`)),
    h("div", { class: "kpis" },
      kpi("Posts", fmtInt(a.post_count)), kpi("Mean score", fmtScore(a.mean_score)),
      kpi("Negative", fmtInt(a.label_counts.negative || 0)), kpi("Neutral", fmtInt(a.label_counts.neutral || 0)), kpi("Positive", fmtInt(a.label_counts.positive || 0)),
      kpi("State n at last post", last ? fmtInt(last.user_prior_count) : "–")),
    panel("Sentiment history", "dots: each post's score · line: the author's running mean · n: earlier posts in the per-user state when it was scored", chart,
      h("div", { class: "legend" }, ...["negative", "neutral", "positive"].map((l) => h("span", {}, h("i", { style: `background:${COLORS[l]}` }), l)),
        h("span", {}, h("i", { style: `background:${COLORS.accent}` }), "running mean"))),
    panel("Posts", null, h("table", {}, h("tr", {}, h("th", {}, "#"), h("th", {}, "When"), h("th", { class: "num" }, "n"), h("th", {}, "Label"), h("th", { class: "num" }, "Score"), h("th", { class: "num" }, "Running mean"), h("th", {}, "Text")),
      ...[...a.history].reverse().map((p, i) => h("tr", {}, h("td", { class: "faint" }, n - i), h("td", {}, fmtTime(p.created_at)), h("td", { class: "num" }, p.user_prior_count),
        h("td", {}, h("span", { class: `pill ${p.label}` }, p.label)), h("td", { class: "num" }, fmtScore(p.score)), h("td", { class: "num" }, fmtScore(p.running_mean)), h("td", {}, p.text))))));
  const draw = () => history(chart, a.history, { onPick: () => openDrawer(`@${a.handle || a.id}`, { author: a.id, order: "newest" }) });
  draw();
  return { redraw: draw };
}

function kpi(label, value) {
  return h("div", { class: "kpi" }, h("span", {}, label), h("b", {}, value));
}
