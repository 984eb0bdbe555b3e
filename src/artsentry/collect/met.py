"""A polite client for The Met Collection API.

- one shared request-rate cap across all threads: a sliding window, so no
  one-second window ever holds more than ``rate`` requests, and under one a
  second no window of 1/``rate`` seconds more than one (the museum asks for
  at most 80 per second; the default is 20);
- a timeout on every request; retries with exponential backoff and jitter on
  timeouts, connection errors, truncated or unparsable bodies, 429, 403 and
  5xx answers, honouring ``Retry-After`` (seconds or an HTTP date);
- 404 is an answer, not an error to retry: ``NotFound``; nor is a URL that cannot be
  requested (no http(s) scheme, a control character, too long): ``MetError`` at once.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import deque
from contextlib import contextmanager

import httpx

from ..errors import ArtsentryError
from ..fetch import is_http_url
from ..retry import RetryPolicy, parse_retry_after

DEFAULT_BASE_URL = "https://collectionapi.metmuseum.org/public/collection/v1"
RETRY_STATUSES = {403, 408, 425, 429, 500, 502, 503, 504}


class MetError(ArtsentryError, RuntimeError):
    """A request failed for good (after retries). ``reason`` is short and stable, for summaries."""

    def __init__(self, url: str, reason: str):
        self.url = url
        self.reason = reason
        super().__init__(f"{url}: {reason}")


class NotFound(MetError):
    pass


class GaveUp(MetError):
    """Every attempt failed with a transient fault (timeouts, broken connections, 403/429/5xx answers, bodies
    that are not what was asked for): the server refusing, failing or out of reach, not an answer about this
    one object or image."""


class RateLimiter:
    """At most ``capacity`` requests in any window of ``window`` seconds, as the *server* counts.

    A request holds its slot from the moment it is allowed to start until
    ``window`` seconds after it has finished. The server sees the request
    arrive somewhere in between, so whatever the network and thread scheduling
    delays, any server-side window of ``window`` seconds holds at most
    ``capacity`` arrivals: the last request to start among them found all the
    others still holding their slots. Thread-safe.
    """

    def __init__(self, capacity: int, window: float = 1.0):
        if capacity < 1:
            raise ValueError("the rate cap must be at least 1 request per window")
        self.capacity = int(capacity)
        self.window = window
        self._done: deque[float] = deque()  # finish times of requests in the last window
        self._in_flight = 0
        self._cond = threading.Condition()

    @contextmanager
    def slot(self):
        with self._cond:
            while True:
                now = time.monotonic()
                while self._done and now - self._done[0] >= self.window:
                    self._done.popleft()
                if self._in_flight + len(self._done) < self.capacity:
                    self._in_flight += 1
                    break
                timeout = self.window - (now - self._done[0]) if self._done else None
                self._cond.wait(timeout)
        try:
            yield
        finally:
            with self._cond:
                self._in_flight -= 1
                self._done.append(time.monotonic())
                self._cond.notify()


class MetClient:
    """Thread-safe; share one client between worker threads."""

    def __init__(self, base_url: str = DEFAULT_BASE_URL, *, rate: float = 20.0, timeout: float = 15.0,
                 policy: RetryPolicy | None = None, user_agent: str | None = None, max_connections: int = 32):
        from .. import __version__

        if not is_http_url(base_url):  # schemes are case-blind
            raise ValueError(f"the API base URL must start with http:// or https://, not {base_url!r}")
        self.base_url = base_url.rstrip("/")
        if not (math.isfinite(rate) and rate > 0):
            raise ValueError(f"the request rate must be above 0, not {rate}")
        # whole requests per second; under one a second, one request per 1/rate seconds (0.5 used to be 1)
        self.limiter = RateLimiter(int(rate), window=1.0) if rate >= 1 else RateLimiter(1, window=1.0 / rate)
        self.policy = policy or RetryPolicy()
        self.http = httpx.Client(
            timeout=httpx.Timeout(timeout),
            headers={"User-Agent": user_agent or f"artsentry/{__version__} (research; polite crawler)"},
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            follow_redirects=True,
        )
        self.requests_sent = 0
        self._count_lock = threading.Lock()
        self._cancelled = threading.Event()

    def close(self) -> None:
        self.http.close()

    def cancel(self) -> None:
        """Stop soon (a crawl interrupted): every thread's waits between attempts end now, and no request
        starts any more (each fails with ``MetError`` 'cancelled'). A request under way runs to its answer or
        its timeout."""
        self._cancelled.set()

    def __enter__(self) -> "MetClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- transport --------------------------------------------------------------------------
    def _get(self, url: str, params: dict | None, parse):
        """GET with rate cap and retries; ``parse(response)`` raises ValueError for a bad body."""
        last = "no attempt"
        for attempt in range(self.policy.retries + 1):
            retry_after = None
            try:
                with self.limiter.slot():
                    if self._cancelled.is_set():
                        raise MetError(url, "cancelled")
                    with self._count_lock:
                        self.requests_sent += 1
                    response = self.http.get(url, params=params)
                if response.status_code == 404:
                    raise NotFound(url, "404 not found")
                if response.status_code in RETRY_STATUSES:
                    retry_after = parse_retry_after(response.headers.get("Retry-After"))
                    last = f"HTTP {response.status_code}"
                elif response.status_code >= 400:
                    raise MetError(url, f"HTTP {response.status_code}")
                else:
                    try:
                        return parse(response)
                    except ValueError as exc:
                        last = f"bad body ({exc})"
            except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
                # no retry mends a URL (a record's odd image address, a --base-url without http://)
                raise MetError(url, f"invalid URL ({exc})") from None
            except httpx.TimeoutException:
                last = "timeout"
            except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
                last = f"connection broken ({type(exc).__name__})"
            except httpx.TransportError as exc:
                last = f"connection failed ({type(exc).__name__})"
            if attempt < self.policy.retries:
                self._cancelled.wait(self.policy.wait(attempt, retry_after))
        raise GaveUp(url, f"gave up after {self.policy.retries + 1} attempts: {last}")

    @staticmethod
    def _parse_json(response: httpx.Response):
        try:
            return json.loads(response.content)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ValueError("invalid JSON") from None

    def get_json(self, path: str, params: dict | None = None, check=None):
        """The answer's JSON; ``check(payload)`` may raise ValueError for one of the wrong shape, retried as a
        bad body (a proxy's or a maintenance page's JSON) and then reported, instead of failing further on."""

        def parse(response: httpx.Response):
            payload = self._parse_json(response)
            if check is not None:
                check(payload)
            return payload

        return self._get(f"{self.base_url}/{path.lstrip('/')}", params, parse)

    def get_bytes(self, url: str, validate=None) -> bytes:
        """Image or other bytes; ``validate(bytes)`` may raise ValueError to retry (e.g. an HTML error page)."""

        def parse(response: httpx.Response) -> bytes:
            data = response.content
            if validate is not None:
                validate(data)
            return data

        return self._get(url, None, parse)

    # -- API --------------------------------------------------------------------------------
    def departments(self) -> list[dict]:
        return self.get_json("departments", check=_check_departments).get("departments") or []

    def object_ids(self, metadata_date: str | None = None, department_ids: list[int] | None = None) -> list[int]:
        params = {}
        if metadata_date:
            params["metadataDate"] = metadata_date
        if department_ids:
            params["departmentIds"] = "|".join(map(str, department_ids))
        return list(self.get_json("objects", params or None, check=_check_id_list).get("objectIDs") or [])

    def search(self, q: str = "*", **filters) -> list[int]:
        """``filters``: hasImages, medium ('Ivory|Ceramics'), departmentId, artistOrCulture, geoLocation,
        dateBegin + dateEnd, isHighlight, isOnView, title, tags. Booleans become 'true'/'false'."""
        params = {"q": q}
        for key, value in filters.items():
            if value is None:
                continue
            params[key] = str(value).lower() if isinstance(value, bool) else str(value)
        return list(self.get_json("search", params, check=_check_id_list).get("objectIDs") or [])

    def get_object(self, object_id: int) -> dict:
        record = self.get_json(f"objects/{int(object_id)}")
        if not isinstance(record, dict) or "objectID" not in record:
            raise MetError(f"{self.base_url}/objects/{object_id}", "record without objectID")
        return record


def _check_id_list(payload) -> None:
    """An object list or search answer: ``{"total": n, "objectIDs": [whole numbers] or null}``. A string there
    would otherwise become one id per digit, and a float or text a traceback in the crawl."""
    if not isinstance(payload, dict):
        raise ValueError(f"a JSON {type(payload).__name__}, not an object")
    ids = payload.get("objectIDs")
    if ids is not None and not (isinstance(ids, list)
                                and all(isinstance(i, int) and not isinstance(i, bool) for i in ids)):
        raise ValueError("objectIDs is not a list of whole numbers")


def _check_departments(payload) -> None:
    if not isinstance(payload, dict):
        raise ValueError(f"a JSON {type(payload).__name__}, not an object")
    departments = payload.get("departments")
    if departments is not None and not (isinstance(departments, list)
                                        and all(isinstance(d, dict) for d in departments)):
        raise ValueError("departments is not a list of objects")
