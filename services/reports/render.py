"""Render a :class:`ReportData` as HTML (self-contained), PDF (reportlab) and CSV."""

from __future__ import annotations

import base64
import csv
import io
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape

from services.reports import charts
from services.reports.data import BUCKETS, PERIOD_NOUN, ReportData

TEMPLATES = Path(__file__).resolve().parent / "templates"
CSV_FIELDS = [
    "post_id",
    "created_at",
    "author_id",
    "author_handle",
    "label",
    "score",
    "p_negative",
    "p_neutral",
    "p_positive",
    "user_prior_count",
    "model_name",
    "model_version",
    "modalities",
    "text",
]


@dataclass
class Charts:
    volume: bytes
    sentiment: bytes
    share: bytes


def make_charts(r: ReportData) -> Charts:
    step = BUCKETS[r.period]
    return Charts(
        volume=charts.volume_chart(r.series, step),
        sentiment=charts.sentiment_chart(r.series, step),
        share=charts.share_of_voice_chart(r.share_of_voice, r.watch_name),
    )


def _fmt(v: float | None, pct: bool = False, sign: bool = False) -> str:
    if v is None:
        return "–"
    if pct:
        return f"{100 * v:+.1f} pts" if sign else f"{100 * v:.1f}%"
    return f"{v:+.2f}" if sign or abs(v) <= 1 else f"{v:,.0f}"


def kpi_cards(r: ReportData) -> list[dict[str, str]]:
    """Headline numbers with their change vs the previous period (the same cards in HTML and PDF)."""
    k, p = r.kpis, r.previous

    def trend(d: float | None, good_up: bool) -> str:
        if d is None or abs(d) < 1e-9:
            return "flat"
        return "up" if (d > 0) == good_up else "down"

    vol_d = (k.posts - p.posts) / p.posts if p.posts else None
    cards = [
        (
            "Posts",
            f"{k.posts:,}",
            f"{vol_d:+.0%} vs previous" if vol_d is not None else "no previous data",
            trend(vol_d, True),
        ),
        (
            "Mean score",
            _fmt(k.mean_score, sign=True),
            _delta(r.delta("mean_score"), False),
            trend(r.delta("mean_score"), True),
        ),
        (
            "Negative",
            _fmt(k.share_negative, pct=True),
            _delta(r.delta("share_negative"), True),
            trend(r.delta("share_negative"), False),
        ),
        (
            "Positive",
            _fmt(k.share_positive, pct=True),
            _delta(r.delta("share_positive"), True),
            trend(r.delta("share_positive"), True),
        ),
        ("Authors", f"{k.unique_authors:,}", f"{k.unique_authors - p.unique_authors:+,} vs previous", "flat"),
    ]
    return [{"label": a, "value": b, "delta": c, "trend": d} for a, b, c, d in cards]


def _delta(d: float | None, pct: bool) -> str:
    if d is None:
        return "no previous data"
    return (f"{100 * d:+.1f} pts" if pct else f"{d:+.2f}") + " vs previous"


def render_html(r: ReportData, ch: Charts) -> str:
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]))
    b64 = {k: base64.b64encode(getattr(ch, k)).decode() for k in ("volume", "sentiment", "share")}
    return env.get_template("report.html").render(
        r=r,
        kpis=kpi_cards(r),
        charts=b64,
        generated=datetime.now(UTC),
        one_second=timedelta(seconds=1),
        noun=PERIOD_NOUN[r.period],
        fmt=lambda v: "–" if v is None else (f"{v:.2f}" if abs(v) < 10 else f"{v:,.0f}"),
    )


def render_csv(r: ReportData) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore")
    w.writeheader()
    for row in r.rows:
        w.writerow({**row, "created_at": row["created_at"].isoformat()})
    return buf.getvalue()


def render_pdf(r: ReportData, ch: Charts) -> bytes:
    """A4 PDF: headline cards, the three charts, top posts, top authors and alerts."""
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.units import mm
    from reportlab.platypus import SimpleDocTemplate

    pdf = _PdfParts(width=A4[0] - 30 * mm)
    buf = io.BytesIO()
    doc = SimpleDocTemplate(
        buf,
        pagesize=A4,
        leftMargin=15 * mm,
        rightMargin=15 * mm,
        topMargin=13 * mm,
        bottomMargin=13 * mm,
        title=f"{r.watch_name} {r.period} sentiment report",
        author="VoxPop",
    )
    doc.build(
        [
            *pdf.heading(r),
            pdf.kpi_cards(r),
            *pdf.narrative(r),
            *pdf.charts(ch),
            *pdf.top_posts(r),
            *pdf.top_authors(r),
            *pdf.alerts(r),
        ]
    )
    return buf.getvalue()


class _PdfParts:
    """The report's PDF sections as reportlab flowables, in one set of styles (reportlab is
    imported here, not at module import: the API and the scheduler load this module too)."""

    def __init__(self, width: float) -> None:
        from reportlab.lib import colors
        from reportlab.lib.enums import TA_LEFT
        from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet

        ss = getSampleStyleSheet()
        self.width, self.colors = width, colors
        self.rule = colors.HexColor("#e4e7eb")
        self.h1 = ParagraphStyle(
            "h1", parent=ss["Heading1"], fontSize=17, leading=21, spaceAfter=2, textColor=colors.HexColor("#1f2933")
        )
        self.h2 = ParagraphStyle(
            "h2",
            parent=ss["Heading2"],
            fontSize=10.5,
            leading=13,
            spaceBefore=8,
            spaceAfter=4,
            textColor=colors.HexColor("#52606d"),
            keepWithNext=1,
        )
        self.card = ParagraphStyle("card", parent=ss["BodyText"], fontSize=8.5, leading=15)
        self.body = ParagraphStyle("b", parent=ss["BodyText"], fontSize=8.5, leading=11, alignment=TA_LEFT)
        self.sub = ParagraphStyle("s", parent=self.body, textColor=colors.HexColor("#52606d"), fontSize=9)

    def heading(self, r: ReportData) -> list[Any]:
        from reportlab.platypus import Paragraph, Spacer

        last = r.end - timedelta(seconds=1)
        period = f"{r.start:%a %d %b %Y} – {last:%a %d %b %Y} (UTC), compared with the previous {PERIOD_NOUN[r.period]}"
        return [
            Paragraph(f"{_esc(r.watch_name)} — {r.period} brand-sentiment report", self.h1),
            Paragraph(period, self.sub),
            Spacer(1, 5),
        ]

    def kpi_cards(self, r: ReportData) -> Any:
        from reportlab.platypus import Paragraph, Table, TableStyle

        tone = {"up": "#2f9e6e", "down": "#d64545", "flat": "#7b8794"}
        cells = [
            [
                Paragraph(
                    f"<font size=7.5 color='#52606d'>{c['label']}</font><br/>"
                    f"<font size=14><b>{_esc(c['value'])}</b></font><br/>"
                    f"<font size=7 color='{tone[c['trend']]}'>{_esc(c['delta'])}</font>",
                    self.card,
                )
                for c in kpi_cards(r)
            ]
        ]
        t = Table(cells, colWidths=[self.width / 5] * 5)
        t.setStyle(
            TableStyle(
                [
                    ("BOX", (0, 0), (-1, -1), 0.5, self.rule),
                    ("INNERGRID", (0, 0), (-1, -1), 0.5, self.rule),
                    ("TOPPADDING", (0, 0), (-1, -1), 5),
                    ("BOTTOMPADDING", (0, 0), (-1, -1), 6),
                ]
            )
        )
        return t

    def narrative(self, r: ReportData) -> list[Any]:
        from reportlab.platypus import Paragraph

        return [Paragraph("What drove it", self.h2), Paragraph(_esc(r.narrative), self.body)] if r.narrative else []

    def charts(self, ch: Charts) -> list[Any]:
        from reportlab.platypus import Image, KeepTogether, Paragraph

        out: list[Any] = []
        for title, png, share in (
            ("Volume", ch.volume, 1.0),
            ("Sentiment trend", ch.sentiment, 1.0),
            ("Share of voice", ch.share, 0.75),
        ):
            img = Image(io.BytesIO(png))
            scale = self.width / img.imageWidth
            img.drawWidth, img.drawHeight = self.width * share, img.imageHeight * scale * share
            out.append(KeepTogether([Paragraph(title.upper(), self.h2), img]))
        return out

    def table(self, title: str, head: list[str], rows: list[list[Any]], widths: list[float]) -> list[Any]:
        """A titled table, one row a line, text cells wrapped."""
        from reportlab.platypus import Paragraph, Table, TableStyle

        data = [[Paragraph(f"<b>{h}</b>", self.body) for h in head]] + [
            [c if not isinstance(c, str) else Paragraph(_esc(c), self.body) for c in row] for row in rows
        ]
        tb = Table(data, colWidths=[w * self.width for w in widths], repeatRows=1)
        tb.setStyle(
            TableStyle(
                [
                    ("LINEBELOW", (0, 0), (-1, -1), 0.4, self.rule),
                    ("VALIGN", (0, 0), (-1, -1), "TOP"),
                    ("TOPPADDING", (0, 0), (-1, -1), 2),
                    ("BOTTOMPADDING", (0, 0), (-1, -1), 3),
                ]
            )
        )
        return [Paragraph(title.upper(), self.h2), tb]

    def top_posts(self, r: ReportData) -> list[Any]:
        out: list[Any] = []
        for title, posts in (("Most negative posts", r.top_negative), ("Most positive posts", r.top_positive)):
            rows = [
                [
                    f"{p['created_at']:%d %b %H:%M}",
                    "@" + (p["author"]["handle"] or p["author"]["id"]),
                    p["text"],
                    f"{p['prediction']['score']:+.2f}",
                ]
                for p in posts
            ] or [["", "", "No posts in this period.", ""]]
            out += self.table(title, ["When", "Author", "Post", "Score"], rows, [0.13, 0.17, 0.6, 0.1])
        return out

    def top_authors(self, r: ReportData) -> list[Any]:
        rows = [
            [
                "@" + (a["handle"] or a["id"]),
                str(a["posts"]),
                f"{a['mean_score'] or 0:+.2f}",
                f"{100 * (a['share_negative'] or 0):.0f}%",
            ]
            for a in r.top_authors
        ] or [["No authors in this period.", "", "", ""]]
        return self.table(
            "Top authors", ["Author", "Posts", "Mean score", "% negative"], rows, [0.46, 0.18, 0.18, 0.18]
        )

    def alerts(self, r: ReportData) -> list[Any]:
        rows = [
            [
                f"{a['window_start']:%d %b %H:%M} ({a['window_size']})",
                a["rule_name"],
                a["status"],
                a["severity"],
                _fmt(a["observed"]),
                _fmt(a["baseline"]),
            ]
            for a in r.alerts
        ] or [["No alerts fired for this watch in the period.", "", "", "", "", ""]]
        head = ["Window", "Rule", "Status", "Severity", "Observed", "Baseline"]
        return self.table("Alerts in the period", head, rows, [0.24, 0.28, 0.12, 0.12, 0.12, 0.12])


def _esc(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
