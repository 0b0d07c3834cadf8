"""The FastAPI application: routers, error shapes, metrics middleware, the dashboard's static files."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from importlib.resources import files
from pathlib import Path
from typing import Any

import redis
import sqlalchemy.exc
from fastapi import Depends, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from sqlalchemy import text

from services.api import schemas as S
from services.api.deps import AppState, require
from services.api.live import LiveHub
from services.api.live import router as live_router
from services.api.metrics import KafkaProbe, build_registry
from services.api.routes import alerts, data, manage, reports
from services.config import ApiSettings, Settings, get_settings
from services.storage.db import engine_for

log = logging.getLogger("voxpop.api")
STATIC = Path(__file__).resolve().parent / "static"
#: Swagger UI's and ReDoc's files from the `fastapi-offline` wheel, served at /docs/assets: the API
#: docs work without the internet (FastAPI's defaults load them from a CDN).
DOCS_ASSETS = Path(str(files("fastapi_offline") / "static"))
TAGS = [
    {"name": "watches", "description": "brands and topics to follow"},
    {"name": "posts", "description": "scored posts: filters, keyset pages, media"},
    {"name": "trends", "description": "volume and sentiment over time, any bucket and range"},
    {"name": "authors", "description": "per-author sentiment history (the per-user fusion state)"},
    {"name": "rules", "description": "alert rules evaluated on closed trend windows"},
    {"name": "alerts", "description": "firings, notifications and webhook deliveries"},
    {"name": "silences", "description": "mute notifications for a while"},
    {"name": "webhooks", "description": "alert webhook endpoints (Standard Webhooks signatures)"},
    {"name": "reports", "description": "brand-sentiment reports (HTML, PDF, CSV)"},
    {"name": "live", "description": "server-sent events"},
    {"name": "keys", "description": "API keys (admin)"},
]
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
DASHBOARD_CSP = (
    "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


def _version() -> str:
    try:
        return version("voxpop")
    except PackageNotFoundError:
        return "0.0.0"


def create_app(settings: Settings | None = None, api: ApiSettings | None = None) -> FastAPI:
    """Build the app for the configured servers (``database_url``/``redis_url`` must be set)."""
    s = settings or get_settings()
    api = api or s.api
    if not (s.database_url and s.redis_url):
        raise ValueError("the API needs database_url and redis_url (run it through `voxpop api` or `voxpop up`)")
    st = AppState(
        settings=s,
        api=api,
        engine=engine_for(s.database_url),
        redis=redis.Redis.from_url(s.redis_url),
        database_url=s.database_url,
        redis_url=s.redis_url,
        kafka_bootstrap=s.kafka_bootstrap,
    )
    hub = LiveHub(s.redis_url)
    probe = KafkaProbe(
        s.kafka_bootstrap, s.scorer_group, s.topic_raw, s.topic_dlq, api.lag_cache_s, api.kafka_timeout_s
    )
    registry, req_count, req_latency = build_registry(st, probe)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        await hub.close()
        probe.close()

    app = FastAPI(
        title="VoxPop API",
        version=_version(),
        lifespan=lifespan,
        openapi_tags=TAGS,
        docs_url=None,  # served by _add_docs from local assets
        redoc_url=None,
        description="Streaming multimodal opinion monitor. Authenticate with an API key "
        "(`X-API-Key` or `Authorization: Bearer`); scopes read < write < admin.",
    )
    app.state.voxpop = st
    app.state.live = hub
    _add_observability(app, req_count, req_latency)
    _add_error_handlers(app)
    for r in (manage.router, data.router, alerts.router, reports.router, live_router):
        app.include_router(r, responses=AUTH_ERRORS)
    _add_service_routes(app, st, registry)
    _add_docs(app)
    return app


AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": S.ErrorOut, "description": "no key, or an unknown or revoked key"},
    403: {"model": S.ErrorOut, "description": "the key's scope does not allow this call"},
    503: {"model": S.ErrorOut, "description": "a server the API needs is unavailable"},
}


def _add_observability(app: FastAPI, req_count: Counter, req_latency: Histogram) -> None:
    """Request counts and latencies per route (Prometheus), and the security headers on every response."""

    @app.middleware("http")
    async def observe(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        t0 = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        if path != "/api/live":
            req_latency.labels(path).observe(time.perf_counter() - t0)
        req_count.labels(request.method, path, str(response.status_code)).inc()
        for k, v in SECURITY_HEADERS.items():
            response.headers.setdefault(k, v)
        return response


def _add_error_handlers(app: FastAPI) -> None:
    """Bad values are the client's 422; a server the API needs being down is a 503 to retry, not a 500."""

    @app.exception_handler(sqlalchemy.exc.DataError)
    async def data_error(_request: Request, exc: sqlalchemy.exc.DataError) -> JSONResponse:
        msg = str(exc.orig).splitlines()[0] if exc.orig else "invalid value"
        return JSONResponse(
            {"detail": [{"loc": ["body"], "msg": f"invalid value: {msg}", "type": "value_error"}]}, status_code=422
        )

    @app.exception_handler(sqlalchemy.exc.OperationalError)
    async def db_down(_request: Request, exc: sqlalchemy.exc.OperationalError) -> JSONResponse:
        log.warning("database unavailable: %s", exc.orig)
        return JSONResponse({"detail": "database unavailable, try again shortly"}, status_code=503)

    @app.exception_handler(redis.RedisError)
    async def redis_down(_request: Request, exc: redis.RedisError) -> JSONResponse:
        log.warning("redis unavailable: %s", exc)
        return JSONResponse({"detail": "redis unavailable, try again shortly"}, status_code=503)


def _add_service_routes(app: FastAPI, st: AppState, registry: CollectorRegistry) -> None:
    """Health (no key), metrics (a read key unless public) and the dashboard page."""

    @app.get("/api/health", response_model=S.Health, tags=["overview"])
    def health() -> dict[str, Any]:
        """Liveness and dependencies (no key needed)."""
        db_ok = redis_ok = True
        try:
            with st.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception:
            db_ok = False
        try:
            st.redis.ping()
        except Exception:
            redis_ok = False
        return {
            "status": "ok" if db_ok and redis_ok else "degraded",
            "database": db_ok,
            "redis": redis_ok,
            "version": _version(),
        }

    metrics_deps = [] if st.api.metrics_public else [Depends(require("read"))]

    @app.get("/metrics", include_in_schema=False, dependencies=metrics_deps)
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", include_in_schema=False)
    def dashboard() -> FileResponse:
        return FileResponse(
            STATIC / "index.html", headers={"Content-Security-Policy": DASHBOARD_CSP, "Cache-Control": "no-cache"}
        )


def _add_docs(app: FastAPI) -> None:
    """The docs pages with their scripts from /docs/assets: no outside request (CDN, fonts,
    swagger.io's validator), so they work offline."""
    spec, asset = app.openapi_url or "/openapi.json", "/docs/assets/"
    swagger = get_swagger_ui_html(
        openapi_url=spec,
        title=f"{app.title} - docs",
        swagger_js_url=asset + "swagger-ui-bundle.js",
        swagger_css_url=asset + "swagger-ui.css",
        swagger_favicon_url="/static/favicon.svg",
        swagger_ui_parameters={"validatorUrl": None},
    ).body
    redoc = get_redoc_html(
        openapi_url=spec,
        title=f"{app.title} - ReDoc",
        redoc_js_url=asset + "redoc.standalone.js",
        redoc_favicon_url="/static/favicon.svg",
        with_google_fonts=False,
    ).body
    app.add_api_route("/docs", lambda: HTMLResponse(swagger), include_in_schema=False)
    app.add_api_route("/redoc", lambda: HTMLResponse(redoc), include_in_schema=False)
    app.mount("/docs/assets", StaticFiles(directory=DOCS_ASSETS), name="docs-assets")
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
