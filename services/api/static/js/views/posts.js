// Post lists and the drill-down drawer: the posts behind a chart point, with images and the
// dominant modality named from the model's fusion weights.
import { api, mediaUrl } from "../api.js";
import { fmtScore, fmtTime } from "../charts.js";
import { watchName } from "../state.js";
import { h } from "../util.js";

const MODALITY = { text: "text", image: "image", audio: "audio", video: "video" };

export function postItem(p) {
  const pred = p.prediction;
  const media = h("div", { class: "post-media" });
  for (const m of p.media.filter((x) => x.kind === "image")) {
    const img = h("img", { alt: `image ${m.idx + 1} of the post`, loading: "lazy" });
    mediaUrl(m.url).then((u) => { img.src = u; }).catch(() => img.replaceWith(h("span", { class: "faint" }, "image unavailable")));
    media.append(img);
  }
  const dom = pred && pred.dominant_modality;
  const pct = (w) => Object.entries(w || {}).map(([k, v]) => `${k} ${(100 * v).toFixed(0)}%`).join(", ");
  const weights = pred ? pct(pred.modality_weights) : "";
  // Audio/video posts: each tri-modal head names the modality its selection weights put first.
  const av = (p.av_predictions || []).filter((a) => a.dominant_modality).map((a) =>
    h("span", { class: "tag av", "data-dominant": a.dominant_modality, "data-model": a.model_name,
                title: `${a.model_name.replace(/^av:/, "")}: ${a.emotion ? a.emotion + ", " : ""}${a.label}; weights ${pct(a.modality_weights)}` },
      `${MODALITY[a.dominant_modality] || a.dominant_modality} led (${a.model_name.replace(/^av:/, "")})`));
  // What was said in its audio / video track, and which view drove the score (words, voice, frames).
  const t = p.transcript;
  const said = t ? h("p", { class: "post-transcript", "data-lang": t.language || "", "data-status": t.status,
                             title: `${t.model || "speech recognition"}; ${(t.segments || []).length} segments` },
    h("span", { class: "faint" }, `said${t.language ? " (" + t.language + ")" : ""}: `),
    t.text ? t.text : h("em", {}, t.status)) : null;
  const view = p.dominant_view && (t || p.av_predictions.length)
    ? h("span", { class: "tag view", "data-view": p.dominant_view, title: "the view that drove the score" },
      `${p.dominant_view} led`) : null;
  return h("li", { class: "post", "data-id": p.id },
    h("div", { class: "post-head" },
      h("a", { class: "author", href: `#/author/${encodeURIComponent(p.author.id)}` }, "@" + (p.author.handle || p.author.id)),
      h("span", {}, fmtTime(p.created_at)),
      ...p.watches.map((w) => h("span", { class: "tag" }, watchName(w))),
      dom ? h("span", { class: "tag", title: `fusion weights: ${weights}`, "data-dominant": dom }, `${MODALITY[dom] || dom} led`) : null,
      ...av,
      view,
      pred ? h("span", { class: "score" }, h("span", { class: `pill ${pred.label}` }, pred.label), " ", fmtScore(pred.score)) : h("span", { class: "score faint" }, "not scored")),
    h("p", { class: "post-text" }, p.text),
    said,
    media.childElementCount ? media : null);
}

// A paged list for a filter; returns the element. `params` go to /api/posts.
export function postList(params) {
  const list = h("ul", { class: "posts" });
  const more = h("button", { class: "more", hidden: true }, "Load more");
  const box = h("div", {}, list, more);
  let cursor = null;
  async function page() {
    more.disabled = true;
    const r = await api("/api/posts", { params: { ...params, cursor, limit: 25 } });
    for (const p of r.items) list.append(postItem(p));
    if (!list.childElementCount) list.append(h("li", { class: "empty" }, "No posts match."));
    cursor = r.next_cursor;
    more.hidden = !cursor;
    more.disabled = false;
    box.dataset.loaded = list.querySelectorAll(".post").length;
  }
  more.addEventListener("click", page);
  box.ready = page();
  return box;
}

export function openDrawer(title, params, { labels = true } = {}) {
  const drawer = document.getElementById("drawer");
  document.getElementById("drawer-title").textContent = title;
  const body = document.getElementById("drawer-body");
  body.innerHTML = "";
  const host = h("div", {});
  const filters = h("div", { class: "filters" });
  const show = (label) => {
    for (const b of filters.children) b.classList.toggle("on", (b.dataset.label || null) === (label || null));
    host.innerHTML = "";
    host.append(postList({ ...params, label: label || undefined }));
  };
  if (labels) {
    for (const [lab, text] of [[null, "All"], ["negative", "Negative"], ["neutral", "Neutral"], ["positive", "Positive"]]) {
      filters.append(h("button", { "data-label": lab ?? undefined, onclick: () => show(lab) }, text));
    }
    body.append(filters);
  }
  body.append(host);
  drawer.hidden = false;
  show(params.label || null);
}

export function closeDrawer() { document.getElementById("drawer").hidden = true; }

// One post on its own page (#/post/<id>): where alert webhooks link their sample posts.
export async function postPage(main, id) {
  const p = await api(`/api/posts/${encodeURIComponent(id)}`);
  const r = p.prediction && p.prediction.reason;
  main.replaceChildren(h("div", { class: "page-head" }, h("h1", {}, "Post")),
    h("section", { class: "panel" }, h("ul", { class: "posts" }, postItem(p)),
      r ? h("p", { class: "muted", "data-reason": r }, `Complaint reason: ${r} (${(100 * p.prediction.reason_probability).toFixed(0)}%)`) : null));
}
