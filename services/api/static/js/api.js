// API access: the key (localStorage), JSON calls with clear errors, media as blob URLs, and the
// server-sent event stream read with fetch() so the key travels in a header, not the URL.
const KEY = "voxpop.key";

export function takeKeyFromUrl() {
  const m = location.hash.match(/^#key=([^&]+)/);
  if (m) {
    localStorage.setItem(KEY, decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname + "#/");
  }
}
export const getKey = () => localStorage.getItem(KEY);
export const setKey = (k) => localStorage.setItem(KEY, k);
export const clearKey = () => localStorage.removeItem(KEY);

export class ApiError extends Error {
  constructor(status, detail) { super(detail); this.status = status; }
}

function detailOf(body) {
  if (!body) return "request failed";
  if (typeof body.detail === "string") return body.detail;
  if (Array.isArray(body.detail)) return body.detail.map((d) => `${(d.loc || []).slice(1).join(".")}: ${d.msg}`).join("; ");
  return JSON.stringify(body);
}

export async function api(path, { method = "GET", body, params } = {}) {
  const url = new URL(path, location.origin);
  for (const [k, v] of Object.entries(params || {})) {
    if (v === undefined || v === null || v === "") continue;
    for (const one of Array.isArray(v) ? v : [v]) url.searchParams.append(k, one);
  }
  const headers = { "X-API-Key": getKey() || "" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (r.status === 204) return null;
  const data = await r.json().catch(() => null);
  if (!r.ok) throw new ApiError(r.status, detailOf(data));
  return data;
}

const blobCache = new Map();
export async function mediaUrl(path) {
  if (blobCache.has(path)) return blobCache.get(path);
  const r = await fetch(path, { headers: { "X-API-Key": getKey() || "" } });
  if (!r.ok) throw new ApiError(r.status, "media unavailable");
  const url = URL.createObjectURL(await r.blob());
  blobCache.set(path, url);
  return url;
}

// Live events: reconnects with backoff; calls onState(true|false) and onEvent(type, data).
export function connectLive(onEvent, onState) {
  let stopped = false, backoff = 1000, ctrl;
  async function run() {
    while (!stopped) {
      ctrl = new AbortController();
      try {
        const r = await fetch("/api/live", { headers: { "X-API-Key": getKey() || "", Accept: "text/event-stream" }, signal: ctrl.signal });
        if (!r.ok) throw new ApiError(r.status, "live stream refused");
        onState(true);
        backoff = 1000;
        const reader = r.body.getReader();
        const dec = new TextDecoder();
        let buf = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += dec.decode(value, { stream: true });
          let i;
          while ((i = buf.indexOf("\n\n")) >= 0) {
            const block = buf.slice(0, i);
            buf = buf.slice(i + 2);
            let type = "message", data = "";
            for (const line of block.split("\n")) {
              if (line.startsWith("event:")) type = line.slice(6).trim();
              else if (line.startsWith("data:")) data += line.slice(5).trim();
            }
            if (!data) continue;
            try { onEvent(type, JSON.parse(data)); } catch { /* not JSON: ignore */ }
          }
        }
      } catch (e) {
        if (stopped) return;
      }
      onState(false);
      onEvent("resync", {});
      await new Promise((res) => setTimeout(res, backoff));
      backoff = Math.min(backoff * 2, 15000);
    }
  }
  run();
  return () => { stopped = true; ctrl && ctrl.abort(); };
}
