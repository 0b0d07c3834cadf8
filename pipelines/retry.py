"""The one retry policy: exponential backoff from tenacity, the same shape in every process.

Plain calls that may fail while a server starts use `retrying` (tenacity's `Retrying`). Loops that
must also end at once on SIGTERM (the scorer's batch retries, the live clients' reconnects, the
supervisor's restarts) sleep on their own stop event, and take only the delay from the policy
with `delay_after`, so every backoff in VoxPop is tenacity's formula with its own bounds.
"""

from __future__ import annotations

import random

from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_delay
from tenacity.wait import wait_base, wait_exponential, wait_fixed

__all__ = ["delay_after", "exponential", "jittered", "retrying", "wait_fixed"]


def exponential(initial_s: float, max_s: float, factor: float = 2.0) -> wait_exponential:
    """Waits initial_s, initial_s * factor, initial_s * factor**2, ... capped at max_s."""
    return wait_exponential(multiplier=initial_s, exp_base=factor, max=max_s)


def delay_after(wait: wait_base, failures: int) -> float:
    """The wait `wait` prescribes after `failures` failures in a row (1 = after the first)."""
    state = RetryCallState(None, None, (), {})  # type: ignore[arg-type]  # wait strategies read attempt_number only
    state.attempt_number = max(1, failures)
    return float(wait(state))


def jittered(wait: wait_base, failures: int, rng: random.Random | None = None) -> float:
    """`delay_after` times a random factor in [0.5, 1] ("equal jitter"): a fleet of clients that
    failed together does not come back in step."""
    return delay_after(wait, failures) * (rng or random).uniform(0.5, 1.0)


def retrying(
    errors: type[BaseException] | tuple[type[BaseException], ...], *, timeout_s: float, wait: wait_base
) -> Retrying:
    """Retry on `errors` until `timeout_s` has passed, then re-raise the last one."""
    return Retrying(retry=retry_if_exception_type(errors), wait=wait, stop=stop_after_delay(timeout_s), reraise=True)
