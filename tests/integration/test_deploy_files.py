"""The deploy files deploy: every container command is a real `voxpop` command, every probe a served route.

Compose and Kustomize are read as a user's tooling reads them (YAML; `kubectl kustomize` renders
both overlays), then each service's command is resolved in the real CLI (a command group such as
plain `voxpop alerts` prints help and exits 2: a crash loop) and each probe path is requested
from the real app it points at, on the test stack's PostgreSQL and Redis.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import click
import pytest
import redis
import typer.main
import yaml
from fastapi.testclient import TestClient
from pydantic import SecretStr
from typer.testing import CliRunner

from services.api.app import create_app
from services.cli import app as cli_app
from services.ingest.gate import IngestGate
from services.ingest.push import create_push_app
from services.storage.db import engine_for, migrate
from services.stream.kafka import make_producer
from tests.stack import settings_for

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "infra" / "docker-compose.yml"
OVERLAYS = ("cpu", "gpu")


def leaf_command(argv: list[str]) -> click.Command:
    """The click command `voxpop argv...` runs; fails if argv names a group or nothing."""
    cmd: click.Command = typer.main.get_command(cli_app)
    rest = list(argv)
    while isinstance(cmd, click.Group) and rest:
        name = rest.pop(0)
        sub = cmd.commands.get(name)
        assert sub is not None, f"voxpop {' '.join(argv)}: no command {name!r} (have {sorted(cmd.commands)})"
        cmd = sub
    assert not isinstance(cmd, click.Group), f"voxpop {' '.join(argv)} names a command group: it prints help, exits 2"
    return cmd


def compose_commands() -> dict[str, list[str]]:
    doc = yaml.safe_load(COMPOSE.read_text())
    return {
        name: svc["command"]
        for name, svc in doc["services"].items()
        if str(svc.get("image", "")).startswith("${VOXPOP") and "command" in svc
    }


def rendered(overlay: str) -> list[dict]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed (Debian: apt-get install kubernetes-client; ./dev test installs it)")
    out = subprocess.run(
        [kubectl, "kustomize", str(ROOT / "k8s" / "overlays" / overlay)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def containers(docs: list[dict]) -> list[tuple[str, dict]]:
    out = []
    for d in docs:
        if d.get("kind") in ("Deployment", "StatefulSet", "Job"):
            spec = d["spec"]["template"]["spec"]
            for c in [*spec.get("initContainers", []), *spec["containers"]]:
                out.append((d["metadata"]["name"], c))
    return out


def test_compose_services_run_real_commands() -> None:
    cmds = compose_commands()
    assert {"migrate", "ingest", "scorer", "trends", "alerts", "api", "scheduler", "reconcile"} <= set(cmds)
    for name, argv in cmds.items():
        leaf_command(argv)
        res = CliRunner().invoke(cli_app, [*argv, "--help"])
        assert res.exit_code == 0, f"compose service {name}: voxpop {' '.join(argv)} --help -> {res.output}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kustomize_overlay_renders_and_runs_real_commands(overlay: str) -> None:
    docs = rendered(overlay)
    names = {d["metadata"]["name"] for d in docs if d.get("kind") == "Deployment"}
    assert {"voxpop-alerts", "voxpop-api", "voxpop-ingest", "voxpop-scorer", "voxpop-reconcile"} <= names
    for _deployment, c in containers(docs):
        if c.get("image", "").startswith("voxpop"):
            leaf_command(c["args"])


def probe_paths(docs: list[dict]) -> dict[str, set[str]]:
    """Deployment -> the httpGet paths of its probes."""
    out: dict[str, set[str]] = {}
    for deployment, c in containers(docs):
        for kind in ("readinessProbe", "livenessProbe", "startupProbe"):
            path = (c.get(kind) or {}).get("httpGet", {}).get("path")
            if path:
                out.setdefault(deployment, set()).add(path)
    return out


@pytest.mark.integration
def test_every_probe_path_is_served_by_its_app(stack_endpoints) -> None:
    ep = stack_endpoints
    s = settings_for(ep, push_api_key=SecretStr("probe-test"))
    migrate(ep.database_url)
    gate = IngestGate(
        s, make_producer(ep.kafka_bootstrap), redis.Redis.from_url(ep.redis_url), engine_for(ep.database_url)
    )
    apps = {"voxpop-api": TestClient(create_app(s)), "voxpop-ingest": TestClient(create_push_app(s, gate))}
    paths = probe_paths(rendered("cpu"))
    compose = yaml.safe_load(COMPOSE.read_text())["services"]["api"]["healthcheck"]["test"][-1]
    paths.setdefault("voxpop-api", set()).add(compose.split("http://127.0.0.1:8000")[1].split("'")[0])
    assert paths, "no probes found"
    for deployment, ps in paths.items():
        assert deployment in apps, f"{deployment} has probes but no app under test: {ps}"
        for p in ps:
            r = apps[deployment].get(p)
            assert r.status_code == 200, f"{deployment} probe {p} -> {r.status_code}"
