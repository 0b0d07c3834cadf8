"""Report charts as PNG bytes (matplotlib, Agg backend: no display, same pixels in HTML and PDF).

Colours match the dashboard's (negative red, neutral grey, positive green, accent blue).
"""

from __future__ import annotations

import io
from datetime import timedelta
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

LABEL_COLOURS = {"negative": "#d64545", "neutral": "#9aa5b1", "positive": "#2f9e6e"}
ACCENT = "#2f6fdb"
INK = "#1f2933"
GRID = "#e4e7eb"
WATCH_COLOURS = ["#2f6fdb", "#e0892f", "#8e5bd6", "#1f9aa8", "#c2497d", "#6b8e23", "#7b8794"]


def _style(ax: Axes) -> None:
    ax.spines[["top", "right"]].set_visible(False)
    ax.spines[["left", "bottom"]].set_color("#cbd2d9")
    ax.tick_params(colors="#52606d", labelsize=8)
    ax.grid(axis="y", color=GRID, linewidth=0.8)
    ax.set_axisbelow(True)


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=150, bbox_inches="tight", facecolor="white")
    plt.close(fig)
    return buf.getvalue()


def _time_axis(ax: Axes, step: timedelta) -> None:
    # matplotlib.dates ships without annotations: DateFormatter's constructor is untyped
    if step >= timedelta(days=1):
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%a %d %b"))  # type: ignore[no-untyped-call]
    else:
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M"))  # type: ignore[no-untyped-call]
    for lab in ax.get_xticklabels():
        lab.set_rotation(0)


def volume_chart(points: list[dict[str, Any]], step: timedelta, title: str | None = None) -> bytes:
    """Stacked bars: posts per bucket split by label."""
    fig, ax = plt.subplots(figsize=(7.2, 2.2))
    xs = [p["t"] for p in points]
    bottom = [0] * len(points)
    width = step.total_seconds() / 86400 * 0.8
    for lab in ("negative", "neutral", "positive"):
        ys = [p["counts"].get(lab, 0) for p in points]
        ax.bar(xs, ys, width=width, bottom=bottom, color=LABEL_COLOURS[lab], label=lab, align="edge")
        bottom = [b + y for b, y in zip(bottom, ys, strict=True)]
    _style(ax)
    _time_axis(ax, step)
    if title:
        ax.set_title(title, loc="left", fontsize=10, color=INK, fontweight="bold")
    ax.set_ylabel("posts", fontsize=8, color="#52606d")
    ax.legend(frameon=False, fontsize=8, ncol=3, loc="upper left", bbox_to_anchor=(0, -0.12))
    return _png(fig)


def sentiment_chart(points: list[dict[str, Any]], step: timedelta, title: str | None = None) -> bytes:
    """Mean score (left axis, -1..1) and share negative (right axis, %) per bucket."""
    fig, ax = plt.subplots(figsize=(7.2, 2.2))
    xs = [p["t"] + step / 2 for p in points if p["n"]]
    ax.axhline(0, color="#cbd2d9", linewidth=1)
    ax.plot(
        xs,
        [p["mean_score"] for p in points if p["n"]],
        color=ACCENT,
        marker="o",
        markersize=3.5,
        linewidth=2,
        label="mean score",
    )
    ax.set_ylim(-1, 1)
    ax.set_ylabel("mean score", fontsize=8, color=ACCENT)
    ax2 = ax.twinx()
    ax2.plot(
        xs,
        [100 * p["share_negative"] for p in points if p["n"]],
        color=LABEL_COLOURS["negative"],
        linewidth=1.6,
        linestyle="--",
        label="% negative",
    )
    ax2.set_ylim(0, 100)
    ax2.set_ylabel("% negative", fontsize=8, color=LABEL_COLOURS["negative"])
    ax2.spines[["top", "left"]].set_visible(False)
    ax2.tick_params(colors="#52606d", labelsize=8)
    _style(ax)
    ax2.spines["right"].set_visible(True)
    ax2.spines["right"].set_color("#cbd2d9")
    _time_axis(ax, step)
    if points:
        ax.set_xlim(points[0]["t"], points[-1]["t"] + step)
    if title:
        ax.set_title(title, loc="left", fontsize=10, color=INK, fontweight="bold")
    lines = ax.get_lines()[1:] + ax2.get_lines()
    ax.legend(
        lines,
        [str(ln.get_label()) for ln in lines],
        frameon=False,
        fontsize=8,
        ncol=2,
        loc="upper left",
        bbox_to_anchor=(0, -0.12),
    )
    return _png(fig)


def share_of_voice_chart(sov: list[tuple[str, int]], highlight: str, title: str | None = None) -> bytes:
    """Horizontal bars: each watch's share of all watched posts in the period; this watch highlighted."""
    total = sum(n for _, n in sov) or 1
    names = [n for n, _ in sov][::-1]
    shares = [100 * c / total for _, c in sov][::-1]
    fig, ax = plt.subplots(figsize=(7.2, 0.42 * max(len(sov), 2) + 0.7))
    colours = [ACCENT if n == highlight else "#c4cdd5" for n in names]
    ax.barh(names, shares, color=colours, height=0.6)
    for i, v in enumerate(shares):
        ax.text(v + 0.8, i, f"{v:.1f}%", va="center", fontsize=8, color=INK)
    ax.set_xlim(0, max(shares + [1]) * 1.18)
    _style(ax)
    ax.grid(axis="y", visible=False)
    ax.grid(axis="x", color=GRID, linewidth=0.8)
    ax.set_xlabel("% of watched posts in the period", fontsize=8, color="#52606d")
    if title:
        ax.set_title(title, loc="left", fontsize=10, color=INK, fontweight="bold")
    return _png(fig)
