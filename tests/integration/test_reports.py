"""Brand-sentiment reports from the scheduler, on real airline tweets in PostgreSQL.

Proves: the weekly JetBlue report is produced by an APScheduler job whose store is PostgreSQL;
page 1 of its PDF (rasterised with pdftoppm) carries the charts (their colours are on the page)
and the headline numbers equal SQL over the same rows; the CSV holds exactly the period's posts;
jobs survive a scheduler restart; two replicas firing the same job produce one report.
"""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
import threading
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import text

from services.config import ReportSettings
from services.scheduler.jobs import build_scheduler, install_jobs, run_reports, set_context, wait_for_run
from services.storage.db import engine_for
from tests.conftest import dataset_path
from tests.integration.apikit import airline_posts, api_dataset

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
WEEK = ("2015-02-16", "2015-02-23")
COLOURS = {"negative": (0xD6, 0x45, 0x45), "positive": (0x2F, 0x9E, 0x6E), "accent": (0x2F, 0x6F, 0xDB)}


@pytest.fixture(scope="module")
def env(stack_endpoints, tmp_path_factory):
    ep = stack_endpoints
    csv_path = dataset_path("airline-tweets") / "airline_tweets_clean.csv"
    posts = [p for p in airline_posts(csv_path) if p.created_at < datetime(2015, 2, 23, tzinfo=UTC)][::2]
    out = tmp_path_factory.mktemp("reports")
    api_dataset(ep, posts)
    set_context(ep.database_url, ReportSettings(dir=out), out)
    yield {"ep": ep, "engine": engine_for(ep.database_url), "out": out}


def _kpis(engine, watch: str) -> dict:
    with engine.connect() as conn:
        r = (
            conn.execute(
                text("""
            SELECT count(*) AS n, avg(pr.score) AS mean, avg((pr.label = 'negative')::int) AS neg
            FROM post_watches pw JOIN watches w ON w.id = pw.watch_id JOIN predictions pr ON pr.post_id = pw.post_id
            WHERE w.name = :w AND pw.created_at >= :a AND pw.created_at < :b"""),
                {"w": watch, "a": WEEK[0], "b": WEEK[1]},
            )
            .mappings()
            .one()
        )
    return dict(r)


def _colour_pixels(img: Image.Image, rgb: tuple[int, int, int], tol: int = 18) -> int:
    px = np.asarray(img.convert("RGB"), dtype=np.int16)
    return int((np.abs(px - np.array(rgb, dtype=np.int16)) <= tol).all(axis=-1).sum())


@pytest.mark.skipif(not shutil.which("pdftoppm"), reason="poppler-utils (pdftoppm) not installed")
def test_weekly_report_from_scheduler_job(env, tmp_path):
    url = env["ep"].database_url
    sched = build_scheduler(url, blocking=False)
    install_jobs(sched, ReportSettings(dir=env["out"]))
    sched.add_job(
        "services.scheduler.jobs:run_reports",
        "date",
        run_date=datetime.now(UTC),
        id="jetblue-now",
        kwargs={"period": "weekly", "watch": "JetBlue", "end": WEEK[1]},
    )
    sched.start()
    try:
        run = wait_for_run(url, "JetBlue", "weekly", timeout_s=180)
    finally:
        sched.shutdown(wait=True)
    assert run is not None and run["status"] == "done", run
    assert run["trigger"] == "scheduler"
    assert run["period_start"].date().isoformat() == WEEK[0]

    k = _kpis(env["engine"], "JetBlue")
    assert run["summary"]["posts"] == k["n"] > 500
    files = run["files"]
    png_base = tmp_path / "page"
    subprocess.run(["pdftoppm", "-r", "100", "-f", "1", "-l", "1", "-png", files["pdf"], str(png_base)], check=True)
    page = next(tmp_path.glob("page*.png"))
    img = Image.open(page)
    counts = {name: _colour_pixels(img, rgb) for name, rgb in COLOURS.items()}
    assert all(v > 400 for v in counts.values()), f"chart colours missing on page 1: {counts}"
    page_text = subprocess.run(
        ["pdftotext", "-f", "1", "-l", "1", "-layout", files["pdf"], "-"], capture_output=True, text=True, check=True
    ).stdout
    assert f"{k['n']:,}" in page_text
    assert f"{100 * float(k['neg']):.1f}%" in page_text
    assert f"{float(k['mean']):+.2f}" in page_text
    assert "JetBlue" in page_text and "Share of voice".upper() in page_text.upper()
    # the HTML has the same three charts inline, the CSV exactly the period's rows
    html = Path(files["html"]).read_text()
    assert html.count("data:image/png;base64,") == 3
    rows = list(csv.DictReader(io.StringIO(Path(files["csv"]).read_text())))
    assert len(rows) == k["n"] and {r["label"] for r in rows} <= {"negative", "neutral", "positive"}
    shots = ROOT / "docs" / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    small = img.convert("RGB")
    small.thumbnail((900, 1300))
    small.save(shots / "report-jetblue-weekly-page1.png", optimize=True)


def test_jobs_survive_restart(env):
    url = env["ep"].database_url
    first = build_scheduler(url, blocking=False)
    install_jobs(first, ReportSettings(dir=env["out"], daily_cron="0 5 * * *"))
    first.start(paused=True)
    first.shutdown()
    second = build_scheduler(url, blocking=False)
    second.start(paused=True)
    try:
        jobs = {j.id: j for j in second.get_jobs()}
    finally:
        second.shutdown()
    assert {"reports-weekly", "reports-daily", "retention"} <= set(jobs)
    assert jobs["reports-weekly"].kwargs == {"period": "weekly"}
    assert jobs["reports-weekly"].next_run_time.weekday() == 0  # Mondays
    with env["engine"].connect() as conn:
        stored = {r[0] for r in conn.execute(text("SELECT id FROM apscheduler_jobs"))}
    assert {"reports-weekly", "reports-daily", "retention"} <= stored


def test_two_replicas_one_report(env):
    """Both 'replicas' fire the daily job for the same period at once: one run, one set of files."""
    results: list[list[int]] = []

    def fire() -> None:
        results.append(run_reports(period="daily", watch="United", end="2015-02-20"))

    threads = [threading.Thread(target=fire) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    with env["engine"].connect() as conn:
        runs = conn.execute(
            text("SELECT id, status FROM report_runs WHERE watch_name = 'United' AND period = 'daily'")
        ).all()
    assert len(runs) == 1 and len(results) == 2
    assert results[0] == results[1] == [runs[0][0]]


def test_report_webhook_is_signed(env, tmp_path):
    """A finished report is announced to a webhook with Standard Webhooks headers that verify."""
    import json
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from standardwebhooks.webhooks import Webhook

    from services.reports.run import generate_report

    got: list[tuple[dict, bytes]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server API)
            body = self.rfile.read(int(self.headers["content-length"]))
            got.append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *a):
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.handle_request, daemon=True).start()
    secret = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    row = generate_report(
        env["engine"],
        "Southwest",
        "daily",
        datetime(2015, 2, 21, tzinfo=UTC),
        tmp_path,
        webhook_url=f"http://127.0.0.1:{server.server_port}/r",
        webhook_secret=secret,
    )
    server.server_close()
    assert row["webhook_status"] == "delivered:204"
    headers, body = got[0]
    payload = Webhook(secret).verify(body, headers)
    assert payload["type"] == "report.generated" and payload["watch"] == "Southwest"
    assert payload["summary"]["posts"] == json.loads(body)["summary"]["posts"] == row["summary"]["posts"]


@pytest.fixture
def cli(env, tmp_path, monkeypatch):
    """`voxpop ...` in-process against the test servers; (exit code, stdout, stderr)."""
    from typer.testing import CliRunner

    from services.cli import app
    from services.config import get_settings

    ep = env["ep"]
    for var, value in (
        ("VOXPOP_DATABASE_URL", ep.database_url),
        ("VOXPOP_REDIS_URL", ep.redis_url),
        ("VOXPOP_KAFKA_BOOTSTRAP", ep.kafka_bootstrap),
        ("VOXPOP_REPORTS_DIR", str(tmp_path)),
    ):
        monkeypatch.setenv(var, value)
    get_settings.cache_clear()

    def run(*argv: str) -> tuple[int, str, str]:
        res = CliRunner().invoke(app, list(argv))
        return res.exit_code, res.stdout, res.stderr

    yield run
    get_settings.cache_clear()


def test_cli_report_defaults_to_the_latest_period_of_the_data(cli):
    """No --end: the period comes from the watch's data (2015 here), not from today's clock; a
    period with no posts is still written, and stderr says so and where the data is."""
    import json

    code, out, err = cli("report", "--watch", "American", "--period", "weekly")
    assert code == 0, err
    run = json.loads(out)
    assert run["status"] == "done" and run["summary"]["posts"] > 100 and "warning" not in err
    assert Path(run["files"]["csv"]).parent.name == f"weekly-{WEEK[0]}"  # the data ends before 2015-02-23
    code, out, err = cli("report", "--watch", "American", "--period", "daily")
    assert code == 0 and Path(json.loads(out)["files"]["csv"]).parent.name == "daily-2015-02-21", err
    code, out, err = cli("report", "--watch", "American", "--period", "monthly")  # January is empty: February
    assert code == 0 and Path(json.loads(out)["files"]["csv"]).parent.name == "monthly-2015-02-01", err

    code, out, err = cli("report", "--watch", "American", "--period", "daily", "--end", "2015-01-10")
    assert code == 0 and json.loads(out)["summary"]["posts"] == 0
    assert "warning: the daily report of American for 2015-01-09 to 2015-01-10 (UTC) has no posts" in err
    assert "posts run from 2015-02-1" in err and "Leave out --end" in err

    code, _, err = cli("report", "--watch", "Nobody Airlines")
    assert code != 0 and "watch 'Nobody Airlines' not found" in err and "voxpop watches list" in err
