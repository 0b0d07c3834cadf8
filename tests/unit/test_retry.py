"""The one retry policy (pipelines/retry.py): its delays, and `retrying`'s give-up."""

from __future__ import annotations

import time

import pytest

from pipelines.retry import delay_after, exponential, retrying, wait_fixed
from services.scorer.worker import INFRA_BACKOFF
from services.supervisor import RESTART_BACKOFF


def test_exponential_delays_double_and_cap() -> None:
    assert [delay_after(exponential(0.5, 4.0), n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert [delay_after(exponential(1.0, 9.0, factor=3.0), n) for n in range(1, 4)] == [1.0, 3.0, 9.0]


def test_the_services_bounds() -> None:
    assert delay_after(INFRA_BACKOFF, 1) == 0.5 and delay_after(INFRA_BACKOFF, 50) == 30.0
    assert delay_after(RESTART_BACKOFF, 1) == 1.0 and delay_after(RESTART_BACKOFF, 10) == 30.0


def test_retrying_retries_until_it_passes() -> None:
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("not yet")
        return "up"

    assert retrying(ConnectionError, timeout_s=5.0, wait=wait_fixed(0.01))(flaky) == "up" and len(calls) == 3


def test_retrying_gives_up_with_the_last_error_and_never_retries_others() -> None:
    t = time.monotonic()
    with pytest.raises(ConnectionError, match="down"):
        retrying(ConnectionError, timeout_s=0.1, wait=wait_fixed(0.02))(_raise, ConnectionError("down"))
    assert time.monotonic() - t < 2.0
    calls = []
    with pytest.raises(ValueError):
        retrying(ConnectionError, timeout_s=5.0, wait=wait_fixed(0.01))(lambda: calls.append(1) or _raise(ValueError()))
    assert calls == [1]


def _raise(e: BaseException) -> None:
    raise e
