// Dashboard entry: key, router (#/...), header controls and live updates from the event stream.
import { BROWSER_TZ, setTimeZone } from "./charts.js";
import { ApiError, clearKey, connectLive, getKey, setKey, takeKeyFromUrl } from "./api.js";
import { loadWatches, state } from "./state.js";
import { debounce, h, toast } from "./util.js";
import { alertsPage, pushAlert } from "./views/alerts.js";
import { authorPage, authorsPage } from "./views/authors.js";
import { managePage } from "./views/manage.js";
import { overview } from "./views/overview.js";
import { closeDrawer, postPage } from "./views/posts.js";
import { reportsPage } from "./views/reports.js";
import { watchView } from "./views/watch.js";

const main = document.getElementById("main");
let view = {};
let rendering = 0;

const ROUTES = [
  [/^#?\/?$/, "overview", () => overview(main)],
  [/^#\/watch\/(\d+)$/, "overview", (m) => watchView(main, Number(m[1]))],
  [/^#\/alerts$/, "alerts", () => alertsPage(main)],
  [/^#\/alerts\/(\d+)$/, "alerts", (m) => alertsPage(main, Number(m[1]))],
  [/^#\/authors$/, "authors", () => authorsPage(main)],
  [/^#\/author\/(.+)$/, "authors", (m) => authorPage(main, decodeURIComponent(m[1]))],
  [/^#\/post\/(.+)$/, "overview", (m) => postPage(main, decodeURIComponent(m[1]))],
  [/^#\/reports$/, "reports", () => reportsPage(main)],
  [/^#\/manage$/, "manage", () => managePage(main)],
];

async function render() {
  const mine = ++rendering;
  const hash = location.hash || "#/";
  const [re, nav, fn] = ROUTES.find(([r]) => r.test(hash)) || ROUTES[0];
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.view === nav);
  closeDrawer();
  try {
    const v = await fn(hash.match(re));
    if (mine === rendering) view = v || {};
    document.body.dataset.ready = "1";
  } catch (e) {
    console.error(e);
    if (e instanceof ApiError && e.status === 401) return login(e.message);
    main.replaceChildren(h("p", { class: "empty" }, `Could not load this page: ${e.message}`));
  }
}

// Live events: re-fetch the current view's data (debounced), prepend alerts to feeds.
const refresh = debounce(async () => {
  try {
    if (view.reload) await view.reload();
    else if (!document.getElementById("drawer").hidden) return; // keep an open drill-down as it is
    else await render();
    document.body.dataset.updated = String(Date.now());
  } catch { /* next event retries */ }
}, 800);

function onLive(type, data) {
  if (type === "alert") { pushAlert(data); if (data.status === "firing") toast(`Alert: ${data.rule_name}`); }
  if (type === "batch") {
    const el = document.querySelector("#live span");
    el.textContent = `live · +${data.posts}`;
  }
  if ((view.refreshOn || []).includes(type)) refresh();
}

function setLive(on) {
  const el = document.getElementById("live");
  el.className = `live ${on ? "on" : "off"}`;
  el.querySelector("span").textContent = on ? "live" : "reconnecting";
}

function login(msg) {
  const dlg = document.getElementById("login");
  document.getElementById("login-error").textContent = msg && getKey() ? msg : "";
  clearKey();
  if (!dlg.open) dlg.showModal();
}

document.getElementById("login-form").addEventListener("submit", async () => {
  setKey(document.getElementById("login-key").value.trim());
  try { await start(); } catch (e) { login(e.message); }
});

let stopLive;
async function start() {
  await loadWatches();
  if (!stopLive) stopLive = connectLive(onLive, setLive);
  await render();
}

function init() {
  takeKeyFromUrl();
  const bucket = document.getElementById("bucket"), range = document.getElementById("range");
  bucket.value = state.bucket = localStorage.getItem("voxpop.bucket") || state.bucket;
  range.value = String(state.rangeDays = Number(localStorage.getItem("voxpop.range") || state.rangeDays));
  bucket.addEventListener("change", () => { state.bucket = bucket.value; localStorage.setItem("voxpop.bucket", bucket.value); render(); });
  range.addEventListener("change", () => { state.rangeDays = Number(range.value); localStorage.setItem("voxpop.range", range.value); render(); });
  initTimeZone();
  document.getElementById("drawer-close").addEventListener("click", closeDrawer);
  document.addEventListener("keydown", (e) => { if (e.key === "Escape") closeDrawer(); });
  window.addEventListener("hashchange", render);
  window.addEventListener("resize", debounce(() => view.redraw && view.redraw(), 200));
  if (!getKey()) return login();
  start().catch((e) => login(e.message));
}

// The time zone select: the browser's zone first, then UTC and every zone Intl knows; kept in localStorage.
function initTimeZone() {
  const sel = document.getElementById("tz");
  const zones = typeof Intl.supportedValuesOf === "function" ? Intl.supportedValuesOf("timeZone") : [];
  const names = [...new Set([BROWSER_TZ, "UTC", ...zones])];
  sel.replaceChildren(...names.map((z) => h("option", { value: z }, z === BROWSER_TZ ? `${z} (browser)` : z)));
  sel.value = setTimeZone(localStorage.getItem("voxpop.tz") || BROWSER_TZ);
  sel.addEventListener("change", () => {
    setTimeZone(sel.value);
    if (sel.value === BROWSER_TZ) localStorage.removeItem("voxpop.tz"); // follow the browser if it moves
    else localStorage.setItem("voxpop.tz", sel.value);
    render();
  });
}

init();
