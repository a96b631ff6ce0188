"""When to try again: exponential backoff with jitter, capped, and when to give up."""

from __future__ import annotations

import random


def retry_delay(
    attempts: int, *, base: float, cap: float, rng: random.Random | None = None, jitter: float = 0.2
) -> float:
    """Seconds before attempt `attempts + 1`: base · 2^(attempts-1), at most `cap`, ± `jitter`.

    Jitter spreads the retries of messages that failed together (one remote outage) so that they do
    not all come back at the same instant.
    """
    exponent = max(0, attempts - 1)
    delay = min(cap, base * (2 ** min(exponent, 30)))
    spread = (rng or random).uniform(-jitter, jitter)
    return max(1.0, delay * (1.0 + spread))
