// Management: watches (add, pause, delete) and alert rules (add, enable, delete).
import { api } from "../api.js";
import { loadWatches, state, watchName } from "../state.js";
import { h, panel, toast } from "../util.js";

const terms = (s) => s.split(",").map((x) => x.trim()).filter(Boolean);

export async function managePage(main) {
  const watchTable = h("table", { id: "watch-table" });
  const ruleTable = h("table", { id: "rule-table" });
  const werr = h("p", { class: "error" });
  const rerr = h("p", { class: "error" });

  async function drawWatches() {
    await loadWatches();
    watchTable.replaceChildren(h("tr", {}, ...["Name", "Matches", "Status", ""].map((t) => h("th", {}, t))),
      ...state.watches.map((w) => h("tr", { "data-watch": w.name },
        h("td", {}, h("a", { href: `#/watch/${w.id}` }, w.name)),
        h("td", { class: "muted" }, [...w.handles.map((x) => "@" + x), ...w.keywords.map((x) => `“${x}”`), ...w.hashtags.map((x) => "#" + x)].join(", ")),
        h("td", {}, h("span", { class: `pill ${w.active ? "resolved" : "off"}` }, w.active ? "active" : "paused")),
        h("td", { class: "row-actions" },
          h("button", { onclick: () => act(() => api(`/api/watches/${w.id}`, { method: "PATCH", body: { active: !w.active } }), drawWatches, werr) }, w.active ? "Pause" : "Resume"),
          h("button", { class: "danger", onclick: () => confirm(`Delete ${w.name} and its post matches?`) && act(() => api(`/api/watches/${w.id}`, { method: "DELETE" }), drawWatches, werr) }, "Delete")))));
  }

  async function drawRules() {
    const rules = await api("/api/rules");
    ruleTable.replaceChildren(h("tr", {}, ...["Rule", "Watch", "Condition", "Severity", "State", ""].map((t) => h("th", {}, t))),
      ...rules.map((r) => h("tr", { "data-rule": r.name },
        h("td", {}, r.name), h("td", {}, r.watch_id ? watchName(r.watch_id) : "every watch"),
        h("td", { class: "muted" }, condition(r)), h("td", {}, r.severity),
        h("td", {}, h("span", { class: `pill ${!r.enabled ? "off" : r.firing ? "firing" : "resolved"}` }, !r.enabled ? "disabled" : r.firing ? "firing" : "ok")),
        h("td", { class: "row-actions" },
          h("button", { onclick: () => act(() => api(`/api/rules/${r.id}`, { method: "PATCH", body: { enabled: !r.enabled } }), drawRules, rerr) }, r.enabled ? "Disable" : "Enable"),
          h("button", { class: "danger", onclick: () => act(() => api(`/api/rules/${r.id}`, { method: "DELETE" }), drawRules, rerr) }, "Delete")))));
    if (!rules.length) ruleTable.append(h("tr", {}, h("td", { colspan: 6, class: "empty" }, "No rules yet.")));
  }

  const wf = h("form", { class: "inline", id: "watch-form", onsubmit: (e) => {
    e.preventDefault();
    const f = new FormData(wf);
    act(() => api("/api/watches", { method: "POST", body: { name: f.get("name"), handles: terms(f.get("handles")), keywords: terms(f.get("keywords")), hashtags: terms(f.get("hashtags")) } }),
      async () => { wf.reset(); await drawWatches(); toast("Watch added: ingest picks it up within seconds."); }, werr);
  } },
  field("Name", h("input", { name: "name", required: true, placeholder: "Delta" })), field("Handles", h("input", { name: "handles", placeholder: "Delta, DeltaAssist" })),
  field("Keywords", h("input", { name: "keywords", placeholder: "delta air lines" })), field("Hashtags", h("input", { name: "hashtags", placeholder: "deltafail" })),
  h("button", { class: "primary", type: "submit" }, "Add watch"));

  const rf = h("form", { class: "inline", id: "rule-form", onsubmit: (e) => {
    e.preventDefault();
    const f = new FormData(rf);
    const kind = f.get("kind");
    const body = { name: f.get("name"), watch_id: f.get("watch_id") ? Number(f.get("watch_id")) : null, window_size: f.get("window_size"), kind,
      metric: f.get("metric"), severity: f.get("severity"), min_volume: Number(f.get("min_volume") || 0) };
    const v = f.get("value") === "" ? null : Number(f.get("value"));
    if (kind === "threshold") { body.op = f.get("op"); body.threshold = v; }
    if (kind === "spike") body.z_score = v;
    if (kind === "surge") body.factor = v;
    if (kind === "dip") body.drop = v;
    act(() => api("/api/rules", { method: "POST", body }), async () => { rf.reset(); await drawRules(); toast("Rule created: evaluated on every closed window."); }, rerr);
  } },
  field("Name", h("input", { name: "name", required: true, placeholder: "United negativity" })),
  field("Watch", h("select", { name: "watch_id" }, h("option", { value: "" }, "every watch"), ...state.watches.map((w) => h("option", { value: w.id }, w.name)))),
  field("Window", h("select", { name: "window_size" }, ...["1m", "5m", "1h", "1h@5m"].map((s) => h("option", { value: s, selected: s === "1h" }, s)))),
  field("Kind", h("select", { name: "kind" }, ...[["threshold", "threshold"], ["spike", "spike (z-score)"], ["surge", "volume surge (×)"], ["dip", "sentiment dip"]].map(([v, t]) => h("option", { value: v }, t)))),
  field("Metric", h("select", { name: "metric" }, ...["share_negative", "mean_score", "n_posts", "n_negative", "share_positive", "unique_authors"].map((m) => h("option", { value: m }, m)))),
  field("Op", h("select", { name: "op" }, ...[">=", ">", "<=", "<"].map((o) => h("option", { value: o }, o)))),
  field("Value", h("input", { name: "value", type: "number", step: "any", placeholder: "0.6" })),
  field("Min posts", h("input", { name: "min_volume", type: "number", min: 0, value: 5 })),
  field("Severity", h("select", { name: "severity" }, ...["warning", "critical", "info"].map((s) => h("option", { value: s }, s)))),
  h("button", { class: "primary", type: "submit" }, "Create rule"));

  main.replaceChildren(h("div", { class: "page-head" }, h("h1", {}, "Manage")),
    h("div", { class: "stack" },
      panel("Watches", "brands and topics matched at ingest", watchTable, h("h3", { style: "margin-top:14px" }, "Add a watch"), wf, werr),
      panel("Alert rules", "evaluated by the trends app on each closed window", ruleTable, h("h3", { style: "margin-top:14px" }, "New rule"), rf, rerr)));
  await Promise.all([drawWatches(), drawRules()]);
  return { reload: drawRules, refreshOn: ["alert"] };
}

function field(label, input) { return h("label", {}, label, input); }

function condition(r) {
  const m = r.metric;
  if (r.kind === "threshold") return `${m} ${r.op} ${r.threshold} over ${r.window_size}${r.min_volume ? `, ≥ ${r.min_volume} posts` : ""}`;
  if (r.kind === "spike") return `${m} |z| ≥ ${r.z_score} (${r.direction}) over ${r.window_size}`;
  if (r.kind === "surge") return `${m} ≥ ${r.factor}× baseline over ${r.window_size}`;
  return `${m} drops by ≥ ${r.drop} over ${r.window_size}`;
}

async function act(fn, then, errEl) {
  errEl.textContent = "";
  try { await fn(); await then(); } catch (e) { errEl.textContent = e.message; }
}

