// Alerts: a live feed (used on several pages) and the alerts page with notification details.
import { api } from "../api.js";
import { fmtTime } from "../charts.js";
import { watchName } from "../state.js";
import { h } from "../util.js";

const feeds = new Set();

function metricText(a) {
  const v = (x) => (x === null || x === undefined ? "–" : Math.abs(x) <= 1 ? x.toFixed(2) : Math.round(x).toLocaleString("en-US"));
  return `${a.metric} ${v(a.observed)}${a.baseline !== null && a.baseline !== undefined ? ` vs ${v(a.baseline)}` : ""}`;
}

function feedItem(a, fresh = false) {
  return h("li", { class: `${a.status}${fresh ? " fresh" : ""}`, "data-firing": a.id },
    h("span", { class: `dot sev-${a.severity}` }),
    h("a", { class: "what", href: `#/alerts/${a.id}` }, a.status === "resolved" ? "Resolved: " : "", a.rule_name, " · ", a.watch_name || watchName(a.watch_id)),
    h("span", { class: "meta" }, `${metricText(a)} · ${a.window_size} window ending ${fmtTime(a.window_end)}`));
}

const pct = (x) => `${Math.round(100 * x)}%`;

// The why of one firing (services/alerts/why.py): volume against the baseline, the reason mix
// beside the baseline's, the phrases that set the window apart, and sample posts linking to their page.
export function whyBlock(why) {
  if (!why || !why.label) return h("p", { class: "faint why" }, "No explanation stored for this alert.");
  const ratio = why.volume_ratio;
  const head = ratio
    ? `${why.label} posts: ${why.window_posts} in the window, ${ratio >= 1 ? `${ratio}x` : `${pct(1 - ratio)} fewer than`} the baseline's ${why.baseline_per_window != null ? why.baseline_per_window.toFixed(1) : "–"} per window`
    : `${why.label} posts: ${why.window_posts} in the window (no baseline to compare)`;
  const reasons = (why.reasons || []).slice(0, 5);
  return h("div", { class: "why", "data-label": why.label },
    h("p", { class: "muted" }, head),
    reasons.length ? h("table", { class: "why-reasons" },
      h("tr", {}, ...["Reason", "Window", "Baseline"].map((t) => h("th", {}, t))),
      ...reasons.map((m) => h("tr", {}, h("td", {}, m.reason), h("td", { class: "num" }, pct(m.share)), h("td", { class: "num" }, pct(m.baseline_share))))) : null,
    (why.phrases || []).length ? h("p", { class: "why-phrases" }, "Top phrases: ",
      ...why.phrases.slice(0, 8).flatMap((p, i) => [i ? ", " : "", h("q", {}, p.term)])) : null,
    h("ul", { class: "feed why-samples" }, ...(why.samples || []).map((p) => h("li", { "data-post": p.post_id },
      h("span", {}),
      h("a", { class: "what", href: `#/post/${encodeURIComponent(p.post_id)}` }, p.text),
      h("span", { class: "meta" }, `${p.author_handle ? "@" + p.author_handle : p.author_id} · ${fmtTime(p.created_at)}${p.reason ? ` · ${p.reason}` : ""}`)))));
}

export function alertFeed({ watch_id, limit = 20 } = {}) {
  const ul = h("ul", { class: "feed", id: watch_id ? undefined : "alert-feed" });
  const feed = { ul, watch_id };
  feeds.add(feed);
  api("/api/alerts", { params: { watch_id, limit } }).then((r) => {
    ul.replaceChildren(...r.items.map((a) => feedItem(a)));
    if (!r.items.length) ul.append(h("li", { class: "empty none" }, "No alerts yet."));
  });
  return ul;
}

// Called by the app for each live `alert` event: prepend to every feed on the page.
export function pushAlert(a) {
  for (const f of [...feeds]) {
    if (!f.ul.isConnected) { feeds.delete(f); continue; }
    if (f.watch_id && f.watch_id !== a.watch_id) continue;
    if (f.ul.querySelector(`[data-firing="${a.id}"]`)) continue;
    f.ul.querySelector(".none")?.remove();
    f.ul.prepend(feedItem(a, true));
  }
}

export async function alertsPage(main, openId = null) {
  const table = h("table", {});
  const detail = h("div", {}, h("p", { class: "faint" }, "Pick an alert to see its notifications and webhook deliveries."));
  async function load() {
    const r = await api("/api/alerts", { params: { limit: 100 } });
    table.replaceChildren(h("tr", {}, ...["When", "Rule", "Watch", "Status", "Severity", "Observed"].map((t) => h("th", {}, t))),
      ...r.items.map((a) => h("tr", { class: "click", "data-firing": a.id, onclick: () => { location.hash = `#/alerts/${a.id}`; } },
        h("td", {}, fmtTime(a.window_end)), h("td", {}, a.rule_name), h("td", {}, a.watch_name || watchName(a.watch_id)),
        h("td", {}, h("span", { class: `pill ${a.status}` }, a.status)), h("td", {}, a.severity), h("td", {}, metricText(a)))));
    if (!r.items.length) table.append(h("tr", {}, h("td", { colspan: 6, class: "empty" }, "No alerts have fired.")));
  }
  async function show(id) {
    const a = await api(`/api/alerts/${id}`);
    detail.replaceChildren(h("h2", {}, `${a.rule_name} · ${a.watch_name || watchName(a.watch_id)}`),
      h("p", { class: "muted" }, `${a.status} · ${metricText(a)}${a.zscore !== null ? ` · z ${a.zscore.toFixed(1)}` : ""} · ${a.n_posts} posts in the ${a.window_size} window ${fmtTime(a.window_start)} – ${fmtTime(a.window_end)}`),
      a.reason ? h("p", { class: "faint" }, a.reason) : null,
      h("h3", {}, "Why"),
      whyBlock(a.why),
      h("h3", {}, "Notifications"),
      a.notifications.length ? h("table", {}, h("tr", {}, ...["Endpoint", "Reason", "State", "Attempts", "Last error"].map((t) => h("th", {}, t))),
        ...a.notifications.map((n) => h("tr", {}, h("td", {}, n.endpoint_name || n.endpoint_id), h("td", {}, n.reason), h("td", {}, n.state), h("td", { class: "num" }, n.attempts), h("td", {}, n.last_error || "")))) :
        h("p", { class: "faint" }, "No webhook notifications (no endpoints, silenced, or not dispatched yet)."));
    detail.dataset.firing = String(id);
  }
  main.replaceChildren(h("div", { class: "page-head" }, h("h1", {}, "Alerts")),
    h("div", { class: "grid cols-2" }, h("section", { class: "panel" }, table), h("section", { class: "panel" }, detail)));
  await load();
  if (openId !== null) {
    try { await show(openId); } catch (e) { detail.replaceChildren(h("p", { class: "empty" }, `Alert ${openId}: ${e.message}`)); }
  }
  return { reload: load, refreshOn: ["alert"] };
}
