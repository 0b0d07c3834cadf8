"""Standard Webhooks (https://www.standardwebhooks.com) signing through the official `standardwebhooks` package.

Headers: ``webhook-id`` (same across retries of one message), ``webhook-timestamp`` (Unix seconds
of this attempt), ``webhook-signature`` = ``v1,<base64 HMAC-SHA256(key, f"{id}.{timestamp}.{body}")>``;
several space-separated signatures during secret rotation. Secrets are ``whsec_<base64 key>``.
Receivers verify with the same package (`services.alerts.receiver`).
"""

from __future__ import annotations

import base64
import os
import secrets
import time
from collections.abc import Iterable
from datetime import UTC, datetime

from standardwebhooks import Webhook

SECRET_PREFIX = "whsec_"


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
    _key(secret)  # a clear error for a secret that is not whsec_<base64>
    return Webhook(secret).sign(msg_id, datetime.fromtimestamp(timestamp, UTC), body.decode())


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
