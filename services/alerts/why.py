"""The "why" of an alert: reason mix, distinguishing phrases and sample posts of its window.

Computed once per firing from what is stored (posts, their trend membership and reasons) and
kept in ``alert_firings.why``, so the webhook, the API's alert detail and the dashboard show the
same why. The baseline is the span of the rule's ``lookback`` windows before the alert window,
less the windows of the rule's episodes (as its baseline excludes them), reaching up to four
times further back when episodes took most of it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from sqlalchemy import Connection, text

from pipelines.reasons import CANT_TELL
from pipelines.trends.rules import focus_label
from pipelines.trends.themes import compare_mix, distinguishing_terms
from pipelines.trends.windows import parse_spec
from services.api.queries import LATEST_PRED

SAMPLES = 5
TEXT_CHARS = 500
BASELINE_CAP = 5000  # most baseline posts read (newest first): enough for stable shares

_POSTS_SQL = f"""
SELECT p.id AS post_id, pw.created_at, p.text, p.author_id, a.handle, pr.reason, pr.reason_probability
FROM post_watches pw JOIN posts p ON p.id = pw.post_id LEFT JOIN authors a ON a.id = p.author_id
{LATEST_PRED.replace("LEFT JOIN", "JOIN")}
WHERE pw.watch_id = :w AND pw.created_at >= :a AND pw.created_at < :b AND pr.label = :label
ORDER BY pw.created_at DESC LIMIT :cap
"""


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def post_path(post_id: str) -> str:
    """The dashboard's page of one post (relative to its base URL)."""
    return f"/#/post/{quote(post_id, safe='')}"


def posts_of(
    conn: Connection, watch: int, a: datetime, b: datetime, label: str, cap: int = BASELINE_CAP
) -> list[dict[str, Any]]:
    """The watch's posts labelled `label` in [a, b), newest first, with their reasons."""
    return [
        dict(r)
        for r in conn.execute(text(_POSTS_SQL), {"w": watch, "a": a, "b": b, "label": label, "cap": cap}).mappings()
    ]


def _episode_spans(conn: Connection, rule_id: int | None, watch: int, size_s: int) -> list[tuple[datetime, datetime]]:
    if rule_id is None:
        return []
    starts = conn.execute(
        text("SELECT window_start FROM alert_episode_windows WHERE rule_id = :r AND watch_id = :w"),
        {"r": rule_id, "w": watch},
    ).scalars()
    return [(s, s + timedelta(seconds=size_s)) for s in starts]


def _clean_seconds(a: datetime, b: datetime, spans: list[tuple[datetime, datetime]]) -> float:
    """Seconds of [a, b) outside every span (spans may overlap: hopping windows)."""
    cut, covered = a, 0.0
    for s, e in sorted((max(s, a), min(e, b)) for s, e in spans if s < b and e > a):
        if e > cut:
            covered += (e - max(s, cut)).total_seconds()
            cut = e
    return (b - a).total_seconds() - covered


def compute_why(conn: Connection, firing: dict[str, Any], rule: dict[str, Any] | None) -> dict[str, Any]:
    """The why of one firing (a dict with the ``alert_firings`` columns; `rule` its rule row or None)."""
    spec = parse_spec(firing["window_size"])
    label = focus_label(firing["metric"])
    lookback = int((rule or {}).get("lookback") or 24)
    exclude = bool((rule or {}).get("exclude_fired", True))
    ws, we = firing["window_start"], firing["window_end"]
    window = posts_of(conn, firing["watch_id"], ws, we, label, BASELINE_CAP)
    spans = _episode_spans(conn, firing.get("rule_id"), firing["watch_id"], spec.size_s) if exclude else []
    span = timedelta(seconds=max(lookback * spec.step_s, spec.size_s))
    for reach in (1, 2, 4):
        start = ws - span * reach
        clean_s = _clean_seconds(start, ws, spans)
        if clean_s >= span.total_seconds() / 2:
            break
    baseline = [
        p
        for p in posts_of(conn, firing["watch_id"], start, ws, label, BASELINE_CAP)
        if not any(s <= p["created_at"] < e for s, e in spans)
    ]
    per_window = len(baseline) * spec.size_s / clean_s if clean_s > 0 else None
    by_id = {p["post_id"]: p for p in window}
    chosen = [by_id[i] for i in firing.get("sample_post_ids") or [] if i in by_id]
    chosen += [p for p in window if p not in chosen][: SAMPLES - len(chosen)]
    return {
        **explain(label, window, baseline, per_window),
        "baseline_from": _iso(start),
        "samples": [
            {
                "post_id": p["post_id"],
                "text": p["text"][:TEXT_CHARS],
                "author_id": p["author_id"],
                "author_handle": p["handle"],
                "created_at": _iso(p["created_at"]),
                "reason": p["reason"],
                "path": post_path(p["post_id"]),
            }
            for p in chosen[:SAMPLES]
        ],
    }


def explain(
    label: str,
    window: list[dict[str, Any]],
    baseline: list[dict[str, Any]],
    baseline_per_window: float | None,
    window_count: int | None = None,
) -> dict[str, Any]:
    """Volume against the baseline's rate, reason mix beside the baseline's, distinguishing phrases
    (`window_count`: the window's volume when `window` is a capped sample of it)."""
    per, n = baseline_per_window, len(window) if window_count is None else window_count
    return {
        "label": label,
        "window_posts": n,
        "baseline_posts": len(baseline),
        "baseline_per_window": round(per, 3) if per is not None else None,
        "volume_ratio": round(n / per, 2) if per else None,
        "reasons": compare_mix([p["reason"] for p in window], [p["reason"] for p in baseline]),
        "phrases": distinguishing_terms([p["text"] for p in window], [p["text"] for p in baseline]),
    }


def why_line(why: dict[str, Any], against: str = "its baseline", reasons: int = 3, phrases: int = 5) -> str:
    """One sentence of a why: volume against `against`, the leading reasons, the top phrases."""
    parts = []
    ratio = why.get("volume_ratio")
    if ratio:
        move = f"up {ratio:.2g}x" if ratio >= 1 else f"down {100 * (1 - ratio):.0f}%"
        parts.append(f"{why['label'].capitalize()} volume {move} against {against}")
    mix = [m for m in why.get("reasons") or [] if m["reason"] != CANT_TELL][:reasons]
    if mix:
        names = [f"{m['reason']} ({100 * m['share']:.0f}%)" for m in mix]
        parts.append("driven by " + (names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]))
    if why.get("phrases"):
        parts.append("top phrases: " + ", ".join(f"\u201c{p['term']}\u201d" for p in why["phrases"][:phrases]))
    if not parts:
        return f"No {why.get('label', '')} posts to explain it."
    return "; ".join(parts) + "."


def stored_why(conn: Connection, firing: dict[str, Any]) -> dict[str, Any]:
    """The firing's why, computed and kept on first use (a firing's window never changes once closed)."""
    if firing.get("why"):
        kept: dict[str, Any] = firing["why"]
        return kept
    rule = None
    if firing.get("rule_id") is not None:
        row = conn.execute(text("SELECT * FROM alert_rules WHERE id = :r"), {"r": firing["rule_id"]}).mappings().first()
        rule = dict(row) if row else None
    why = compute_why(conn, firing, rule)
    conn.execute(
        text("UPDATE alert_firings SET why = CAST(:why AS jsonb) WHERE id = :id AND why IS NULL"),
        {"why": json.dumps(why, separators=(",", ":")), "id": firing["id"]},
    )
    return why


def with_links(why: dict[str, Any], base_url: str) -> dict[str, Any]:
    """The why with an absolute dashboard ``url`` beside each sample post's ``path``."""
    base = base_url.rstrip("/")
    return {**why, "samples": [{**s, "url": base + s["path"]} for s in why.get("samples") or []]}
