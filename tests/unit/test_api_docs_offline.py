"""The API docs pages work offline: /docs (Swagger UI) and /redoc reference only files the API
serves itself, and those files are there (FastAPI's defaults load them from a CDN)."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from services.api.app import create_app
from services.config import Settings


@pytest.fixture(scope="module")
def client() -> TestClient:
    # No server is contacted to serve the docs: unreachable URLs are enough.
    s = Settings(
        database_url="postgresql+psycopg://nobody@127.0.0.1:9/none",
        redis_url="redis://127.0.0.1:9/0",
        kafka_bootstrap="127.0.0.1:9",
    )
    return TestClient(create_app(s, s.api))


@pytest.mark.parametrize(("page", "needle"), [("/docs", "SwaggerUIBundle"), ("/redoc", "<redoc")])
def test_docs_pages_reference_no_outside_url(client: TestClient, page: str, needle: str) -> None:
    r = client.get(page)
    assert r.status_code == 200 and needle in r.text
    assert not re.findall(r"https?://", r.text), re.findall(r"https?://\S+", r.text)
    refs = re.findall(r"""(?:src|href)=["']([^"']+)["']""", r.text)
    assert any(u.endswith(".js") for u in refs)
    for url in refs:
        got = client.get(url)
        assert got.status_code == 200 and len(got.content) > 100, url
    spec = re.search(r"""(?:url: |spec-url=)['"]([^'"]+)['"]""", r.text)
    assert spec and client.get(spec.group(1)).json()["info"]["title"] == "VoxPop API"


def test_swagger_ui_reads_the_openapi_version_served(client: TestClient) -> None:
    """FastAPI writes OpenAPI 3.1, which Swagger UI renders from its major version 5."""
    js = client.get("/docs/assets/swagger-ui-bundle.js").text
    major = int(re.search(r'PACKAGE_VERSION:"(\d+)\.', js).group(1))  # type: ignore[union-attr]
    openapi = client.get("/openapi.json").json()["openapi"]
    assert openapi.startswith("3.0") or major >= 5, (openapi, major)
    assert client.get("/docs/assets/swagger-ui.css").headers["content-type"].startswith("text/css")
