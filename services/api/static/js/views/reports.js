// Reports: runs so far (HTML, PDF, CSV) and "generate now" for a watch and period.
import { api, getKey } from "../api.js";
import { fmtInt, fmtPct, fmtPeriodDate, fmtScore } from "../charts.js";
import { state } from "../state.js";
import { h, panel, toast } from "../util.js";

async function openFile(path) {
  const r = await fetch(path, { headers: { "X-API-Key": getKey() || "" } });
  if (!r.ok) { toast("file unavailable"); return; }
  window.open(URL.createObjectURL(await r.blob()), "_blank", "noopener");
}

export async function reportsPage(main) {
  const table = h("table", {});
  const err = h("p", { class: "error" });
  async function load() {
    const runs = await api("/api/reports", { params: { limit: 100 } });
    table.replaceChildren(h("tr", {}, ...["Watch", "Period", "Status", "Posts", "Mean", "% neg", "Files"].map((t, i) => h("th", { class: i >= 3 && i <= 5 ? "num" : null }, t))),
      ...runs.map((r) => h("tr", {}, h("td", {}, r.watch_name), h("td", {}, `${r.period} · ${fmtPeriodDate(r.period_start)} – ${fmtPeriodDate(Date.parse(r.period_end) - 1000)}`),
        h("td", {}, h("span", { class: `pill ${r.status === "done" ? "resolved" : r.status === "failed" ? "firing" : "off"}`, title: r.error || "" }, r.status)),
        h("td", { class: "num" }, fmtInt(r.summary.posts)), h("td", { class: "num" }, fmtScore(r.summary.mean_score)), h("td", { class: "num" }, fmtPct(r.summary.share_negative)),
        h("td", { class: "row-actions" }, ...Object.entries(r.files).map(([k, p]) => h("button", { onclick: () => openFile(p) }, k.toUpperCase()))))));
    if (!runs.length) table.append(h("tr", {}, h("td", { colspan: 7, class: "empty" }, "No reports yet: the scheduler writes weekly ones, or generate one below.")));
  }
  const form = h("form", { class: "inline", onsubmit: async (e) => {
    e.preventDefault();
    const f = new FormData(form);
    err.textContent = "";
    const end = f.get("end") ? new Date(f.get("end") + "T00:00:00Z").toISOString() : undefined;
    try {
      await api("/api/reports", { method: "POST", body: { watch_id: Number(f.get("watch_id")), period: f.get("period"), end } });
      await load();
      toast("Report ready.");
    } catch (x) { err.textContent = x.message; }
  } },
  h("label", {}, "Watch", h("select", { name: "watch_id" }, ...state.watches.map((w) => h("option", { value: w.id }, w.name)))),
  h("label", {}, "Period", h("select", { name: "period" }, ...["weekly", "daily", "monthly"].map((p) => h("option", { value: p }, p)))),
  h("label", {}, "Ends (exclusive, UTC)", h("input", { name: "end", type: "date" })),
  h("button", { class: "primary", type: "submit" }, "Generate"));
  main.replaceChildren(h("div", { class: "page-head" }, h("h1", {}, "Reports")),
    h("div", { class: "stack" }, panel("Report runs", "HTML and PDF with charts, CSV of the rows", table), panel("Generate a report", null, form, err)));
  await load();
  return {};
}
