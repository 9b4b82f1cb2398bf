"""Retrying transient store failures, the same way for every adapter.

Full-jitter exponential backoff (so many clients hitting one throttled bucket spread out), bounded
both by a number of attempts and by a time budget. What is still failing then becomes
StoreUnavailable (EIO) with a log line naming the request.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from mountfs.config import RetryConfig
from mountfs.errors import StoreUnavailable, Transient

log = logging.getLogger(__name__)

T = TypeVar("T")


def backoff_delay(attempt: int, policy: RetryConfig, rng: Callable[[], float] = random.random) -> float:
    """The pause after failed attempt number `attempt` (1-based)."""
    cap = min(policy.max_delay, policy.base_delay * 2.0 ** (attempt - 1))
    return cap * rng()


def call_with_retry(fn: Callable[[], T], policy: RetryConfig, what: str, *,
                    sleep: Callable[[float], None] = time.sleep,
                    clock: Callable[[], float] = time.monotonic,
                    rng: Callable[[], float] = random.random) -> T:
    """`fn()`, retried while it raises Transient (whose message names the request; `what` names it
    in the final log line). Blocking: run it in a worker thread."""
    started = clock()
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn()
        except Transient as exc:
            delay = backoff_delay(attempt, policy, rng)
            if attempt >= policy.attempts or clock() - started + delay > policy.budget:
                log.error("%s failed after %d attempt(s): %s", what, attempt, exc)
                raise StoreUnavailable(f"{exc} (gave up after {attempt} attempt(s))") from exc
            log.warning("%s; retrying in %.2fs (attempt %d of %d)", exc, delay, attempt, policy.attempts)
            sleep(delay)
