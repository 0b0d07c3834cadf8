"""One shape for every 422: FastAPI's validation-error list, so the OpenAPI document stays true
whether a request failed the schema or a rule the schema cannot express."""

from __future__ import annotations

from fastapi.exceptions import RequestValidationError


def invalid(msg: str, loc: tuple[str, ...] = ("body",)) -> RequestValidationError:
    """``raise invalid("ends_at must be after starts_at")`` -> 422 ``{"detail": [{loc, msg, type}]}``."""
    return RequestValidationError([{"loc": loc, "msg": msg, "type": "value_error", "input": None}])
