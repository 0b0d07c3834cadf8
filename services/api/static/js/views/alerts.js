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
    h("span", { class: "what" }, a.status === "resolved" ? "Resolved: " : "", a.rule_name, " · ", a.watch_name || watchName(a.watch_id)),
    h("span", { class: "meta" }, `${metricText(a)} · ${a.window_size} window ending ${fmtTime(a.window_end)}`));
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

export async function alertsPage(main) {
  const table = h("table", {});
  const detail = h("div", {}, h("p", { class: "faint" }, "Pick an alert to see its notifications and webhook deliveries."));
  async function load() {
    const r = await api("/api/alerts", { params: { limit: 100 } });
    table.replaceChildren(h("tr", {}, ...["When", "Rule", "Watch", "Status", "Severity", "Observed"].map((t) => h("th", {}, t))),
      ...r.items.map((a) => h("tr", { class: "click", onclick: () => show(a.id) },
        h("td", {}, fmtTime(a.window_end)), h("td", {}, a.rule_name), h("td", {}, a.watch_name || watchName(a.watch_id)),
        h("td", {}, h("span", { class: `pill ${a.status}` }, a.status)), h("td", {}, a.severity), h("td", {}, metricText(a)))));
    if (!r.items.length) table.append(h("tr", {}, h("td", { colspan: 6, class: "empty" }, "No alerts have fired.")));
  }
  async function show(id) {
    const a = await api(`/api/alerts/${id}`);
    detail.replaceChildren(h("h2", {}, `${a.rule_name} · ${a.watch_name || watchName(a.watch_id)}`),
      h("p", { class: "muted" }, `${a.status} · ${metricText(a)}${a.zscore !== null ? ` · z ${a.zscore.toFixed(1)}` : ""} · ${a.n_posts} posts in the ${a.window_size} window ${fmtTime(a.window_start)} – ${fmtTime(a.window_end)}`),
      h("h3", {}, "Notifications"),
      a.notifications.length ? h("table", {}, h("tr", {}, ...["Endpoint", "Reason", "State", "Attempts", "Last error"].map((t) => h("th", {}, t))),
        ...a.notifications.map((n) => h("tr", {}, h("td", {}, n.endpoint_name || n.endpoint_id), h("td", {}, n.reason), h("td", {}, n.state), h("td", { class: "num" }, n.attempts), h("td", {}, n.last_error || "")))) :
        h("p", { class: "faint" }, "No webhook notifications (no endpoints, silenced, or not dispatched yet)."),
      h("h3", { style: "margin-top:14px" }, "Sample posts"),
      h("ul", { class: "feed" }, ...a.sample_post_ids.map((pid) => h("li", {}, h("span", {}), h("span", { class: "meta" }, pid)))));
  }
  main.replaceChildren(h("div", { class: "page-head" }, h("h1", {}, "Alerts")),
    h("div", { class: "grid cols-2" }, h("section", { class: "panel" }, table), h("section", { class: "panel" }, detail)));
  await load();
  return { reload: load, refreshOn: ["alert"] };
}
