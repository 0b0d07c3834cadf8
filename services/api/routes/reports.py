"""Brand-sentiment reports: list runs, generate one now, download its HTML, PDF or CSV."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query
from fastapi import Path as PathParam
from fastapi.responses import FileResponse
from sqlalchemy import text

from services.api import schemas as S
from services.api.deps import AppState, IdQuery, Reader, State, Writer
from services.api.errors import invalid
from services.reports.data import data_period_end, last_full_period_end
from services.reports.run import generate_report, report_run

router = APIRouter(prefix="/api", tags=["reports"])
MIME = {"html": "text/html; charset=utf-8", "pdf": "application/pdf", "csv": "text/csv; charset=utf-8"}
RunId = Annotated[int, PathParam(ge=1, le=2_147_483_647)]


def report_dir(st: AppState) -> Path:
    return st.settings.reports.dir or Path(st.settings.state_dir) / "reports"


def _out(r: dict[str, Any]) -> dict[str, Any]:
    files = {k: f"/api/reports/{r['id']}/{k}" for k in (r.get("files") or {})}
    summary = {k: v for k, v in (r.get("summary") or {}).items() if isinstance(v, int | float | str) or v is None}
    return {**r, "files": files, "summary": summary}


@router.get("/reports", response_model=list[S.ReportOut])
def list_reports(
    st: State, _: Reader, watch_id: IdQuery = None, limit: Annotated[int, Query(ge=1, le=500)] = 50
) -> list[dict[str, Any]]:
    where = "WHERE watch_id = :w" if watch_id is not None else ""
    with st.engine.connect() as conn:
        rows = (
            conn.execute(
                text(f"SELECT * FROM report_runs {where} ORDER BY period_start DESC, id DESC LIMIT :l"),
                {"w": watch_id, "l": limit},
            )
            .mappings()
            .all()
        )
    return [_out(dict(r)) for r in rows]


@router.post("/reports", response_model=S.ReportOut, status_code=201, responses={404: {"model": S.ErrorOut}})
def create_report(
    body: S.ReportIn,
    st: State,
    _: Writer,
    force: Annotated[bool, Query(description="regenerate even if this period was done")] = False,
) -> dict[str, Any]:
    """Generate (or return the existing) report of one watch and period, synchronously."""
    try:  # by default the data's own latest period (a replayed or backfilled stream), as the CLI does
        end = body.end or data_period_end(st.engine, body.watch_id, body.period)
    except LookupError as e:
        raise HTTPException(404, str(e)) from None
    end = end or last_full_period_end(body.period, datetime.now(UTC))
    if end.tzinfo is None:
        raise invalid("end must carry a timezone (ISO 8601 with offset or Z)")
    if not (datetime(1990, 1, 1, tzinfo=UTC) < end < datetime(2200, 1, 1, tzinfo=UTC)):
        raise invalid("end is out of range")
    rs = st.settings.reports
    if body.webhook_url:  # a caller-chosen target: same allow/deny policy as alert webhooks
        from services.api.routes.manage import _check_url

        _check_url(str(body.webhook_url))
    try:
        row = generate_report(
            st.engine,
            body.watch_id,
            body.period,
            end,
            report_dir(st),
            trigger="api",
            webhook_url=str(body.webhook_url) if body.webhook_url else rs.webhook_url,
            webhook_secret=rs.webhook_secret.get_secret_value() if rs.webhook_secret else None,
            force=force,
            stale_s=rs.stale_run_s,
        )
    except LookupError as e:
        raise HTTPException(404, str(e)) from None
    return _out(row)


@router.get("/reports/{run_id}", response_model=S.ReportOut, responses={404: {"model": S.ErrorOut}})
def get_report(run_id: RunId, st: State, _: Reader) -> dict[str, Any]:
    r = report_run(st.engine, run_id)
    if r is None:
        raise HTTPException(404, f"report {run_id} not found")
    return _out(r)


@router.get(
    "/reports/{run_id}/{kind}",
    response_class=FileResponse,
    responses={
        200: {"content": {m.split(";")[0]: {} for m in MIME.values()}, "description": "the file"},
        404: {"model": S.ErrorOut},
    },
)
def report_file(run_id: RunId, kind: Literal["html", "pdf", "csv"], st: State, _: Reader) -> FileResponse:
    r = report_run(st.engine, run_id)
    path = (r or {}).get("files", {}).get(kind)
    if r is None or not path or not Path(path).is_file():
        raise HTTPException(404, f"report {run_id} has no {kind} file")
    name = f"{r['watch_name']}-{r['period']}-{r['period_start']:%Y-%m-%d}.{kind}".replace(" ", "_")
    headers = {"Content-Security-Policy": "sandbox; default-src 'none'; img-src data:; style-src 'unsafe-inline'"}
    return FileResponse(
        path,
        media_type=MIME[kind],
        filename=name,
        headers=headers,
        content_disposition_type="inline" if kind != "csv" else "attachment",
    )
