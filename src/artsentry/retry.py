"""Retrying HTTP requests politely: how long to wait before the next attempt.

Shared by the Met client (``collect.met``) and URL fetching (``fetch``); kept apart from both so that
checking a URL or reading these rules never imports the HTTP client.
"""

from __future__ import annotations

import email.utils
import random
import time
from dataclasses import dataclass


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


@dataclass
class RetryPolicy:
    retries: int = 8
    backoff: float = 0.5  # first wait, doubled each attempt
    max_backoff: float = 30.0
    max_retry_after: float = 120.0

    def wait(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_retry_after)
        base = min(self.max_backoff, self.backoff * 2**attempt)
        return base * (0.5 + random.random() / 2)
