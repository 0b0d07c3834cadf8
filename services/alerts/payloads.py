"""Webhook bodies: the VoxPop JSON event (documented in docs/webhooks.md) and a Slack message."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from services.alerts.why import why_line, with_links

PAYLOAD_VERSION = 1


def _iso(v: Any) -> Any:
    return v.astimezone(UTC).isoformat().replace("+00:00", "Z") if isinstance(v, datetime) else v


def alert_data(
    *,
    firing: dict[str, Any],
    rule: dict[str, Any] | None,
    watch_name: str | None,
    reason: str,
    group: dict[str, Any],
    dashboard_url: str,
) -> dict[str, Any]:
    """The ``data`` object shared by both payload kinds."""
    rule = rule or {}
    return {
        "group_key": f"rule:{firing['rule_id']}/watch:{firing['watch_id']}",
        "status": firing["status"],
        "reason": reason,
        "rule": {
            "id": firing["rule_id"],
            "name": firing["rule_name"],
            "kind": rule.get("kind"),
            "metric": firing["metric"],
            "window_size": firing["window_size"],
            "severity": firing["severity"],
        },
        "watch": {"id": firing["watch_id"], "name": watch_name},
        "alert": {
            "firing_id": firing["id"],
            "window_start": _iso(firing["window_start"]),
            "window_end": _iso(firing["window_end"]),
            "observed": firing["observed"],
            "baseline": firing["baseline"],
            "baseline_std": firing["baseline_std"],
            "zscore": firing["zscore"],
            "n_posts": firing["n_posts"],
            "sample_post_ids": list(firing.get("sample_post_ids") or []),
            "fired_at": _iso(firing.get("fired_at")),
            "verdict": firing.get("reason"),
            "escalated": bool(firing.get("escalated")),
        },
        "why": with_links(firing["why"], dashboard_url) if firing.get("why") else {},
        "firing_count": group.get("firing_count", 1),
        "episode_started_at": _iso(group.get("episode_started_at")),
        "dashboard_url": f"{dashboard_url.rstrip('/')}/#/alerts/{firing['id']}",
        "watch_url": f"{dashboard_url.rstrip('/')}/#/watch/{firing['watch_id']}",
    }


def json_payload(data: dict[str, Any], now: datetime) -> str:
    """Standard Webhooks shape: ``{"type", "timestamp", "data"}``."""
    return json.dumps(
        {"type": f"alert.{data['status']}", "version": PAYLOAD_VERSION, "timestamp": _iso(now), "data": data},
        separators=(",", ":"),
        sort_keys=True,
    )


def _fmt(v: Any) -> str:
    return "n/a" if v is None else f"{v:.3g}" if isinstance(v, float) else str(v)


def _quote(t: str, n: int = 200) -> str:
    t = " ".join(t.split())
    t = t if len(t) <= n else t[: n - 1] + "\u2026"
    return t.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_payload(data: dict[str, Any], now: datetime) -> str:
    """A Slack incoming-webhook message (``text`` fallback + Block Kit blocks)."""
    a, r, w = data["alert"], data["rule"], data["watch"]
    icon = (
        ":white_check_mark:"
        if data["status"] == "resolved"
        else {"critical": ":rotating_light:", "warning": ":warning:"}.get(r["severity"], ":information_source:")
    )
    who = w["name"] or f"watch {w['id']}"
    title = f"{icon} [{data['status'].upper()}] {r['name']}: {who}"
    if data["reason"] == "repeat":
        title += " (still firing)"
    fields = [
        f"*Metric*\n{r['metric']} ({r['window_size']})",
        f"*Severity*\n{r['severity']}",
        f"*Observed*\n{_fmt(a['observed'])}",
        f"*Baseline*\n{_fmt(a['baseline'])} (z={_fmt(a['zscore'])})",
        f"*Window*\n{a['window_start']} .. {a['window_end']}",
        f"*Posts*\n{a['n_posts']}",
    ]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": title[:150], "emoji": True}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": f} for f in fields]},
    ]
    why = data.get("why") or {}
    if why.get("reasons") or why.get("phrases"):
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": why_line(why)[:2900]}})
    if why.get("samples"):
        lines = [
            f"<{p['url']}|@{p['author_handle'] or p['author_id']}> {p['created_at']}: {_quote(p['text'])}"
            for p in why["samples"]
        ]
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)[:2900]}})
    elif a["sample_post_ids"]:
        blocks.append(
            {
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": "Sample posts: " + ", ".join(a["sample_post_ids"][:5])}],
            }
        )
    blocks.append(
        {
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": f"<{data['dashboard_url']}|Open dashboard> · {_iso(now)}"}],
        }
    )
    return json.dumps({"text": title, "blocks": blocks}, separators=(",", ":"))


def render(kind: str, data: dict[str, Any], now: datetime) -> str:
    return slack_payload(data, now) if kind == "slack" else json_payload(data, now)
