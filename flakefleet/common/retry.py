"""Bounded retries: growing pauses, and polling until done or a deadline."""

from __future__ import annotations

import time
from collections.abc import Callable


def backoff_delays(first: float = 1.0, factor: float = 2.0, cap: float = 30.0):
    """1, 2, 4, ... seconds, capped: how long to wait between attempts to reach a host."""
    delay = first
    while True:
        yield delay
        delay = min(delay * factor, cap)


def poll(attempt: Callable[[], tuple[bool, str]], deadline: float, first: float = 0.5, cap: float = 5
         ) -> tuple[bool, str]:
    """Call `attempt` (-> done, detail) with growing pauses until done or `deadline` (monotonic)."""
    detail = ""
    for delay in backoff_delays(first=first, cap=cap):
        done, detail = attempt()
        if done or time.monotonic() + delay > deadline:
            return done, detail
        time.sleep(delay)
    return False, detail  # pragma: no cover (the generator is endless)
