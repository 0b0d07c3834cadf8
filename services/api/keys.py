"""API keys: random tokens shown once, stored as sha256 only; scopes read < write < admin.

Why sha256 and not a slow hash: the token is 256 random bits, so there is nothing to brute
force; a fast hash lets every request look the key up by an indexed equality.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, select, update
from sqlalchemy.dialects.postgresql import insert

from services.storage.api_models import ApiKey

SCOPES = ("read", "write", "admin")
TOKEN_PREFIX = "vpk_"


def scope_rank(scope: str) -> int:
    return SCOPES.index(scope)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's id, name and its highest scope."""

    key_id: int
    name: str
    scope: str

    def allows(self, needed: str) -> bool:
        return scope_rank(self.scope) >= scope_rank(needed)


def create_key(engine: Engine, name: str, scope: str) -> tuple[dict[str, Any], str]:
    """Insert a key; returns (its public row, the token). The token is never stored."""
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = {
        "name": name,
        "prefix": token[:12],
        "token_sha256": hash_token(token),
        "scopes": list(SCOPES[: scope_rank(scope) + 1]),
    }
    with engine.begin() as conn:
        out = conn.execute(insert(ApiKey).values(row).returning(*ApiKey.__table__.c)).mappings().one()
    return public_row(out), token


def public_row(r: Any) -> dict[str, Any]:
    scopes = list(r["scopes"])
    return {
        "id": r["id"],
        "name": r["name"],
        "prefix": r["prefix"],
        "scope": max(scopes, key=scope_rank),
        "created_at": r["created_at"],
        "last_used_at": r["last_used_at"],
        "revoked_at": r["revoked_at"],
    }


def list_keys(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [public_row(r) for r in conn.execute(select(ApiKey).order_by(ApiKey.id)).mappings()]


def revoke_key(engine: Engine, key_id: int) -> dict[str, Any] | None:
    """Mark a key revoked (kept for the audit trail); None if no such key."""
    with engine.begin() as conn:
        conn.execute(
            update(ApiKey).where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None)).values(revoked_at=datetime.now(UTC))
        )
        r = conn.execute(select(ApiKey).where(ApiKey.id == key_id)).mappings().first()
    return public_row(r) if r else None


def lookup(engine: Engine, token: str) -> tuple[Principal | None, str | None]:
    """(principal, None) for a valid key, (None, reason) otherwise."""
    with engine.connect() as conn:
        r = conn.execute(select(ApiKey).where(ApiKey.token_sha256 == hash_token(token))).mappings().first()
    if r is None:
        return None, "unknown API key"
    if r["revoked_at"] is not None:
        return None, "API key revoked"
    return Principal(r["id"], r["name"], max(r["scopes"], key=scope_rank)), None


def touch(engine: Engine, key_id: int) -> None:
    with engine.begin() as conn:
        conn.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=datetime.now(UTC)))


def has_active_admin(engine: Engine) -> bool:
    with engine.connect() as conn:
        # ARRAY's any(): SQLAlchemy types a Mapped[list[str]] column as a relationship comparator
        admin = ApiKey.scopes.any("admin")  # type: ignore[arg-type]
        q = select(ApiKey.id).where(ApiKey.revoked_at.is_(None), admin).limit(1)
        return conn.execute(q).first() is not None
