"""Standard Webhooks signing (https://www.standardwebhooks.com): written here, verified in tests
with the official `standardwebhooks` package.

Headers: ``webhook-id`` (same across retries of one message), ``webhook-timestamp`` (Unix seconds
of this attempt), ``webhook-signature`` = ``v1,<base64 HMAC-SHA256(key, f"{id}.{timestamp}.{body}")>``;
several space-separated signatures during secret rotation. Secrets are ``whsec_<base64 key>``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Iterable, Mapping

SECRET_PREFIX = "whsec_"
TOLERANCE_S = 5 * 60


def new_secret(n_bytes: int = 32) -> str:
    return SECRET_PREFIX + base64.b64encode(os.urandom(n_bytes)).decode()


def new_msg_id() -> str:
    """Time-sortable unique message id, e.g. ``msg_0190c3...``."""
    return f"msg_{time.time_ns() // 1_000_000:012x}{secrets.token_hex(10)}"


def _key(secret: str) -> bytes:
    raw = secret[len(SECRET_PREFIX) :] if secret.startswith(SECRET_PREFIX) else secret
    try:
        return base64.b64decode(raw, validate=True)
    except ValueError as e:
        raise ValueError("webhook secret must be whsec_<base64>") from e


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """One ``v1,<base64>`` signature."""
    content = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(
    secrets_: str | Iterable[str], msg_id: str, body: bytes, timestamp: int | None = None
) -> dict[str, str]:
    """The three Standard Webhooks headers (plus content-type) for one attempt."""
    ts = int(time.time()) if timestamp is None else int(timestamp)
    keys = [secrets_] if isinstance(secrets_, str) else list(secrets_)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": " ".join(sign(k, msg_id, ts, body) for k in keys),
        "content-type": "application/json",
    }


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    tolerance_s: int = TOLERANCE_S,
    now: float | None = None,
) -> bool:
    """Receiver-side check (constant-time compare; rejects timestamps outside the tolerance)."""
    h = {k.lower(): v for k, v in headers.items()}
    try:
        msg_id, ts = h["webhook-id"], int(h["webhook-timestamp"])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - ts) > tolerance_s:
        return False
    expected = sign(secret, msg_id, ts, body).split(",", 1)[1]
    for sig in h.get("webhook-signature", "").split():
        version, _, value = sig.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            return True
    return False
