// Management: watches (add, pause, delete), alert rules (add, enable, delete), webhook endpoints
// (add: the signing secret shown once; enable, delete) and silences (add for a while, expire).
import { api } from "../api.js";
import { loadWatches, state, watchName } from "../state.js";
import { fmtTime } from "../charts.js";
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

  const hooks = webhooksPanel();
  const silences = silencesPanel();
  main.replaceChildren(h("div", { class: "page-head" }, h("h1", {}, "Manage")),
    h("div", { class: "stack" },
      panel("Watches", "brands and topics matched at ingest", watchTable, h("h3", { style: "margin-top:14px" }, "Add a watch"), wf, werr),
      panel("Alert rules", "evaluated by the trends app on each closed window", ruleTable, h("h3", { style: "margin-top:14px" }, "New rule"), rf, rerr),
      hooks.panel, silences.panel));
  await Promise.all([drawWatches(), drawRules(), hooks.draw(), silences.draw()]);
  return { reload: () => Promise.all([drawRules(), silences.draw()]), refreshOn: ["alert"] };
}

// Webhook endpoints: where firing and resolved alerts go, signed (Standard Webhooks).
function webhooksPanel() {
  const table = h("table", { id: "webhook-table" });
  const err = h("p", { class: "error", id: "webhook-error" });
  const secret = h("div", { id: "webhook-secret", hidden: true });
  async function draw() {
    const rows = await api("/api/webhooks");
    table.replaceChildren(h("tr", {}, ...["Name", "URL", "Kind", "From severity", "Secret", "State", ""].map((t) => h("th", {}, t))),
      ...rows.map((w) => h("tr", { "data-webhook": w.name },
        h("td", {}, w.name), h("td", { class: "muted" }, w.url), h("td", {}, w.kind), h("td", {}, w.min_severity),
        h("td", { class: "faint" }, w.secret_hint),
        h("td", {}, h("span", { class: `pill ${w.enabled ? "resolved" : "off"}` }, w.enabled ? "enabled" : "disabled")),
        h("td", { class: "row-actions" },
          h("button", { onclick: () => act(() => api(`/api/webhooks/${w.id}`, { method: "PATCH", body: { enabled: !w.enabled } }), draw, err) }, w.enabled ? "Disable" : "Enable"),
          h("button", { class: "danger", onclick: () => confirm(`Delete the endpoint ${w.name}?`) && act(() => api(`/api/webhooks/${w.id}`, { method: "DELETE" }), draw, err) }, "Delete")))));
    if (!rows.length) table.append(h("tr", {}, h("td", { colspan: 7, class: "empty" }, "No endpoints yet: alerts fire, but nothing is sent.")));
  }
  const form = h("form", { class: "inline", id: "webhook-form", onsubmit: (e) => {
    e.preventDefault();
    const f = new FormData(form);
    secret.hidden = true;
    act(() => api("/api/webhooks", { method: "POST", body: { name: f.get("name"), url: f.get("url"), kind: f.get("kind"), min_severity: f.get("min_severity") } }),
      async (made) => {
        form.reset();
        secret.replaceChildren(h("p", {}, `Signing secret of ${made.name}, shown this once: keep it to verify the webhook-signature header.`), h("code", {}, made.secret));
        secret.hidden = false;
        await draw();
      }, err);
  } },
  field("Name", h("input", { name: "name", required: true, placeholder: "brand team" })),
  field("URL", h("input", { name: "url", type: "url", required: true, placeholder: "https://hooks.example.com/voxpop", size: 36 })),
  field("Kind", h("select", { name: "kind" }, h("option", { value: "json" }, "json (Standard Webhooks)"), h("option", { value: "slack" }, "slack"))),
  field("From severity", h("select", { name: "min_severity" }, ...["info", "warning", "critical"].map((v) => h("option", { value: v }, v)))),
  h("button", { class: "primary", type: "submit" }, "Add endpoint"));
  return { draw, panel: panel("Webhook endpoints", "alerts are delivered here, signed; admin keys only", table, h("h3", { style: "margin-top:14px" }, "Add an endpoint"), form, secret, err) };
}

// Silences: mute notifications of a rule, a watch and/or a severity for a while (Alertmanager's way).
const SILENCE_FOR = [["1 hour", 3600e3], ["4 hours", 4 * 3600e3], ["1 day", 86400e3], ["1 week", 7 * 86400e3]];
function silencesPanel() {
  const table = h("table", { id: "silence-table" });
  const err = h("p", { class: "error", id: "silence-error" });
  const rulesSel = h("select", { name: "rule_id" }, h("option", { value: "" }, "every rule"));
  async function draw() {
    const [rows, rules] = await Promise.all([api("/api/silences"), api("/api/rules")]);
    const ruleName = (id) => (rules.find((r) => r.id === id) || {}).name || `rule ${id}`;
    const keep = rulesSel.value;
    rulesSel.replaceChildren(h("option", { value: "" }, "every rule"), ...rules.map((r) => h("option", { value: r.id }, r.name)));
    rulesSel.value = keep;
    table.replaceChildren(h("tr", {}, ...["Mutes", "From", "Until", "Comment", "Suppressed", "State", ""].map((t) => h("th", {}, t))),
      ...rows.map((x) => h("tr", { "data-silence": x.id },
        h("td", {}, [x.rule_id ? ruleName(x.rule_id) : "every rule", x.watch_id ? watchName(x.watch_id) : "every watch", x.severity || "any severity"].join(" · ")),
        h("td", {}, fmtTime(x.starts_at)), h("td", {}, fmtTime(x.ends_at)), h("td", { class: "muted" }, x.comment),
        h("td", { class: "num" }, String(x.suppressed_count)),
        h("td", {}, h("span", { class: `pill ${x.active ? "firing" : "off"}` }, x.active ? "active" : x.expired_at ? "expired" : "ended")),
        h("td", { class: "row-actions" }, x.active ? h("button", { class: "danger", onclick: () => act(() => api(`/api/silences/${x.id}`, { method: "DELETE" }), draw, err) }, "Expire now") : null))));
    if (!rows.length) table.append(h("tr", {}, h("td", { colspan: 7, class: "empty" }, "No silences.")));
  }
  const form = h("form", { class: "inline", id: "silence-form", onsubmit: (e) => {
    e.preventDefault();
    const f = new FormData(form);
    const num = (k) => (f.get(k) ? Number(f.get(k)) : null);
    const body = { rule_id: num("rule_id"), watch_id: num("watch_id"), severity: f.get("severity") || null,
      ends_at: new Date(Date.now() + Number(f.get("for"))).toISOString(), comment: f.get("comment") };
    act(() => api("/api/silences", { method: "POST", body }), async () => { form.reset(); await draw(); toast("Silenced: matching notifications are held and counted."); }, err);
  } },
  field("Rule", rulesSel),
  field("Watch", h("select", { name: "watch_id" }, h("option", { value: "" }, "every watch"), ...state.watches.map((w) => h("option", { value: w.id }, w.name)))),
  field("Severity", h("select", { name: "severity" }, h("option", { value: "" }, "any"), ...["info", "warning", "critical"].map((v) => h("option", { value: v }, v)))),
  field("For", h("select", { name: "for" }, ...SILENCE_FOR.map(([t, ms]) => h("option", { value: ms }, t)))),
  field("Comment", h("input", { name: "comment", placeholder: "known outage, on it" })),
  h("button", { class: "primary", type: "submit" }, "Silence"));
  return { draw, panel: panel("Silences", "notifications matching a silence are held, counted, not sent", table, h("h3", { style: "margin-top:14px" }, "New silence"), form, err) };
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
  try { await then(await fn()); } catch (e) { errEl.textContent = e.message; }
}

