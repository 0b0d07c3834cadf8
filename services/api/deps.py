"""Per-app state (engine, Redis, settings) and the API-key dependency used by every route."""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Annotated, Any

import redis
from fastapi import Depends, HTTPException, Path, Query, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine

from services.api import keys
from services.config import ApiSettings, Settings

_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="an API key (vpk_...)")
_bearer = HTTPBearer(auto_error=False, description="the same key as a bearer token")


@dataclass
class AppState:
    settings: Settings
    api: ApiSettings
    engine: Engine
    redis: redis.Redis
    database_url: str
    redis_url: str
    kafka_bootstrap: str | None
    _cache: dict[str, tuple[float, keys.Principal]] = field(default_factory=dict)
    _touched: dict[int, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    #: per-app caches that routes own (by name), so two apps in one process never share one
    memo: dict[str, Any] = field(default_factory=dict)

    def cached(self, token: str) -> keys.Principal | None:
        """The principal of a key verified within ``key_cache_s`` (memory only), else None."""
        with self._lock:
            hit = self._cache.get(keys.hash_token(token))
        return hit[1] if hit and time.monotonic() - hit[0] < self.api.key_cache_s else None

    def authenticate(self, token: str) -> keys.Principal:
        """Valid key -> principal (cached briefly); raises 401 with the reason otherwise."""
        h = keys.hash_token(token)
        now = time.monotonic()
        hit = self.cached(token)
        if hit is not None:
            return hit
        principal, why = keys.lookup(self.engine, token)
        if principal is None:
            raise HTTPException(401, why or "API key not accepted", headers={"WWW-Authenticate": "Bearer"})
        with self._lock:
            self._cache[h] = (now, principal)
            stale = now - self._touched.get(principal.key_id, -1e9) > 60
            if stale:
                self._touched[principal.key_id] = now
        if stale:
            keys.touch(self.engine, principal.key_id)
        return principal

    def forget(self, key_id: int) -> None:
        """Drop a revoked key from this process's cache at once."""
        with self._lock:
            for h in [h for h, (_, p) in self._cache.items() if p.key_id == key_id]:
                del self._cache[h]


async def state(request: Request) -> AppState:
    st: AppState = request.app.state.voxpop  # async: no thread hop for a dependency that does no I/O
    return st


State = Annotated[AppState, Depends(state)]


def require(scope: str) -> Callable[..., Coroutine[Any, Any, keys.Principal]]:
    """Dependency factory: the caller's key must carry ``scope`` (read < write < admin)."""

    async def check(
        request: Request,
        x_api_key: Annotated[str | None, Security(_header)] = None,
        bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)] = None,
    ) -> keys.Principal:
        token = x_api_key or (bearer.credentials if bearer else None)
        if not token:
            raise HTTPException(
                401,
                "missing API key: send it as X-API-Key or Authorization: Bearer",
                headers={"WWW-Authenticate": "Bearer"},
            )
        st: AppState = request.app.state.voxpop
        # a key verified moments ago is answered from memory; otherwise PostgreSQL, off the loop,
        # once per key: a burst of requests that finds the cache entry expired waits for one lookup
        principal = st.cached(token)
        if principal is None:
            locks = st.memo.setdefault("auth_locks", weakref.WeakValueDictionary())
            lock: asyncio.Lock = locks.setdefault(token, asyncio.Lock())
            async with lock:
                principal = st.cached(token)
                if principal is None:
                    principal = await run_in_threadpool(st.authenticate, token)
        if not principal.allows(scope):
            raise HTTPException(403, f"this key has scope '{principal.scope}'; this call needs '{scope}'")
        return principal

    return check


Reader = Annotated[keys.Principal, Depends(require("read"))]
Writer = Annotated[keys.Principal, Depends(require("write"))]
Admin = Annotated[keys.Principal, Depends(require("admin"))]

#: a row id in a path / query: a positive 32-bit integer, so PostgreSQL never sees an out-of-range value
IdPath = Annotated[int, Path(ge=1, le=2_147_483_647)]
IdQuery = Annotated[int | None, Query(ge=1, le=2_147_483_647)]
