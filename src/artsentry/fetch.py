"""Fetching images over HTTP(S): the rules shared by screening (``screen --fetch-urls``) and the
server (``serve --allow-url-fetch``).

A URL to fetch comes from someone else: a seller's listing, an API client. One naming the fetching
machine or its network (``localhost``, ``10.0.0.5``, the cloud's ``169.254.169.254``, a name that
resolves there) would make artsentry read, or send a GET into, what only it can reach. So unless the
caller allows private addresses (an image host inside the user's own network), a name is resolved
once, refused unless every address it resolves to is public, and the connection goes to the address
checked, the URL's name kept for the Host header and the TLS certificate check (``pinned``): the name
cannot resolve elsewhere in between. A redirect is a new URL and is checked the same way.

A fetch has a deadline as a whole (``MAX_SECONDS``), tries, waits and redirects included: the per-read
``timeout`` alone lets a host that sends a byte every few seconds hold a screening worker for hours. And
``fetch`` (screening's) leaves a host whose last ``HOST_FAILURES`` fetches in this process each failed to the
end (no answer, broken connections, server errors) alone for ``HOST_PAUSE`` seconds: its URLs fail at once,
"not tried", rather than each taking up to a minute, until one fetch tries it again and it answers.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import threading
import time
from urllib.parse import urljoin, urlparse

from . import __version__
from .retry import RetryPolicy, parse_retry_after
from .data.images import DEFAULT_MAX_BYTES, ImageLoadError, describe_size
from .errors import ArtsentryError


class FetchRefused(ArtsentryError, ValueError):
    """The URL names a non-public address."""


class BadURL(FetchRefused):
    """The URL is not an http(s) URL."""


class FetchFailed(ArtsentryError, ValueError):
    """The URL could not be fetched (its name does not resolve, the server failed...)."""


#: IPv6 prefixes whose last 32 bits are an IPv4 address a gateway reaches: NAT64's well-known and
#: local-use prefixes, and the deprecated IPv4-compatible ::/96 (``ipaddress`` calls all of them global)
_EMBEDS_IPV4 = tuple(ipaddress.ip_network(n) for n in ("64:ff9b::/96", "64:ff9b:1::/48", "::/96"))


def is_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether ``ip`` is a public address, and so is any IPv4 address it carries (IPv4-mapped, 6to4,
    NAT64, IPv4-compatible): ``64:ff9b::a9fe:a9fe`` is the cloud's metadata address through NAT64."""
    if not ip.is_global:
        return False
    if ip.version == 4:
        return True
    carried = [ip.ipv4_mapped, ip.sixtofour]
    if any(ip in net for net in _EMBEDS_IPV4):
        carried.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return all(v4 is None or v4.is_global for v4 in carried)


def public_address(host: str, port: int) -> str:
    """The address to connect to for ``host``: resolved once; ``FetchRefused`` unless every address it
    resolves to is public, ``FetchFailed`` when it does not resolve."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise FetchFailed(f"cannot resolve {host!r} ({exc})") from None
    addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
    private = [a for a in addresses if not is_public(a)]
    if private or not addresses:
        raise FetchRefused(f"host {host!r} resolves to a non-public address ({private[0] if private else 'none'})")
    return str(addresses[0])


def is_http_url(text: str) -> bool:
    """Whether ``text`` starts as an http(s) URL does; schemes are case-blind (``HTTPS://`` is one)."""
    return text[:8].lower().startswith(("http://", "https://"))


#: the longest URL the HTTP client requests (httpx's own limit)
MAX_URL_LENGTH = 65536


def http_url(url: str):
    """``(parsed url, port)`` of an http(s) URL with a host that can be requested, else ``BadURL``: also for
    one the HTTP client would refuse (a control character, over ``MAX_URL_LENGTH``) or not parse ('[::1')."""
    if len(url) > MAX_URL_LENGTH or any(ord(c) < 32 or ord(c) == 127 for c in url):
        raise BadURL(f"not an http(s) URL that can be requested (a control character, or over "
                     f"{MAX_URL_LENGTH} characters): {url[:200]!r}")
    try:
        u = urlparse(url)
        port = u.port or (443 if u.scheme == "https" else 80)
    except ValueError:
        raise BadURL(f"not an http(s) URL: {url[:200]!r}") from None
    if u.scheme not in ("http", "https") or not u.hostname:
        raise BadURL(f"not an http(s) URL: {url[:200]!r}")
    return u, port


def pinned(url: str, allow_private: bool = False) -> tuple[str, dict, dict]:
    """``(url to request, headers, httpx extensions)`` for fetching ``url``: as it is when private
    addresses are allowed, else to the public address its host resolves to (``public_address``),
    named as the URL names it. ``BadURL`` for a URL that is not http(s)."""
    u, port = http_url(url)
    if allow_private:
        return url, {}, {}
    address = public_address(u.hostname, port)
    netloc = f"[{address}]" if ":" in address else address
    headers = {"Host": u.netloc.rsplit("@", 1)[-1]}
    extensions = {"sni_hostname": u.hostname} if u.scheme == "https" else {}  # the certificate is the name's
    return u._replace(netloc=f"{netloc}:{port}").geturl(), headers, extensions


#: answers worth asking again when fetching a listing's image: rate limits and a server's passing trouble
#: (a 403 or 404 from a shop is its answer)
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
#: up to 3 more tries, ~1, 2, 4 s apart, or as long as the server's Retry-After asks (at most 30 s)
POLICY = RetryPolicy(retries=3, backoff=1.0, max_backoff=8.0, max_retry_after=30.0)
MAX_REDIRECTS = 5
#: seconds one URL may take in all (tries, waits, redirects); a shop's photo of a few MB comes in seconds
MAX_SECONDS = 60.0
_clients: dict = {}
_clients_lock = threading.Lock()

#: fetches in a row, each failed to its last try, after which a host is left alone (see the module's notes)
HOST_FAILURES = 8
HOST_PAUSE = 60.0
_down: dict[str, list] = {}  # host:port -> [fetches failed in a row, when it was last tried]
_down_lock = threading.Lock()


def _may_try(host: str) -> None:
    """``FetchFailed`` ("not tried") when ``host`` is left alone; after ``HOST_PAUSE`` seconds one fetch (this
    one) tries it again while the others still fail at once."""
    with _down_lock:
        state = _down.get(host)
        if state is None or state[0] < HOST_FAILURES:
            return
        now = time.monotonic()
        if now - state[1] < HOST_PAUSE:
            raise FetchFailed(f"not tried: {host} failed the last {state[0]} fetches to their last try (no answer, "
                              f"broken connections or server errors); it is tried again {HOST_PAUSE:g} s after the "
                              "last try")
        state[1] = now


def _tried(host: str, answered: bool) -> None:
    """A fetch from ``host`` got an answer (any but a retried one: it is up), or failed to its last try."""
    with _down_lock:
        if answered:
            _down.pop(host, None)
        else:
            state = _down.setdefault(host, [0, 0.0])
            state[0] += 1
            state[1] = time.monotonic()


def _client():
    """This process's HTTP client (screening's decoding workers are processes of their own): connections
    to a shop's image host are kept open from one image to the next. Redirects are followed here, hop by
    hop, each one checked. Shared by the threads that fetch a batch's URLs together (``FETCH_THREADS``)."""
    import httpx

    pid = os.getpid()
    with _clients_lock:
        if pid not in _clients:
            _clients.clear()  # a forked worker does not reuse its parent's connections
            _clients[pid] = httpx.Client(follow_redirects=False,
                                         headers={"User-Agent": f"artsentry/{__version__} (listing screening)"})
        return _clients[pid]


def fetch(url: str, *, max_bytes: int, timeout: float = 15.0, allow_private: bool = False,
          policy: RetryPolicy = POLICY, max_seconds: float = MAX_SECONDS) -> bytes:
    """The bytes at an http(s) URL. Rate limits (429), server errors (5xx), timeouts and broken
    connections are tried again per ``policy`` (``Retry-After`` honoured); other answers (404, 403) are
    final (``FetchFailed``). Redirects are followed up to ``MAX_REDIRECTS``, each new URL checked as the
    first (``pinned``: ``FetchRefused`` for a non-public address unless ``allow_private``). ``timeout``
    bounds each connect and read; ``max_seconds`` the whole fetch (``FetchFailed`` past it)."""
    import httpx

    deadline = time.monotonic() + max_seconds

    def late(what: str) -> FetchFailed:
        return FetchFailed(f"{what}: over the {max_seconds:g} s a URL may take")

    for _ in range(MAX_REDIRECTS + 1):
        target, headers, extensions = pinned(url, allow_private)
        host = urlparse(url).netloc.rsplit("@", 1)[-1].lower()
        _may_try(host)

        def gave_up(exc: FetchFailed) -> FetchFailed:
            _tried(host, answered=False)
            return exc

        last = ""
        for attempt in range(policy.retries + 1):
            retry_after = None
            left = deadline - time.monotonic()
            if left <= 0:
                if not last:
                    raise late("redirects took too long")
                raise gave_up(late(f"not fetched after {attempt} attempt(s) ({last})"))
            try:
                with _client().stream("GET", target, headers=headers, extensions=extensions,
                                      timeout=min(timeout, left)) as r:
                    if r.status_code not in RETRY_STATUSES:
                        _tried(host, answered=True)
                    if r.is_redirect and r.headers.get("location"):
                        url = urljoin(url, r.headers["location"])
                        break
                    if r.status_code in RETRY_STATUSES:
                        retry_after, last = parse_retry_after(r.headers.get("Retry-After")), f"HTTP {r.status_code}"
                    elif r.status_code != 200:
                        raise FetchFailed(f"HTTP {r.status_code}")
                    else:
                        chunks, size = [], 0
                        for chunk in r.iter_bytes():
                            size += len(chunk)
                            if size > max_bytes:
                                raise FetchFailed(f"over the limit of {describe_size(max_bytes)}")
                            if time.monotonic() > deadline:
                                raise gave_up(late(f"still downloading, {describe_size(size)} received"))
                            chunks.append(chunk)
                        return b"".join(chunks)
            except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
                last = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            except (httpx.HTTPError, httpx.InvalidURL) as exc:
                raise FetchFailed(f"download failed ({type(exc).__name__}: {exc})") from None
            if attempt < policy.retries:
                wait = policy.wait(attempt, retry_after)
                if time.monotonic() + wait > deadline:
                    raise gave_up(late(f"not fetched after {attempt + 1} attempt(s) ({last}), and the next is due "
                                       "later"))
                time.sleep(wait)
        else:
            raise gave_up(FetchFailed(f"download failed after {policy.retries + 1} attempts ({last})"))
    raise FetchFailed(f"more than {MAX_REDIRECTS} redirects")


#: image URLs fetched at once by one process or decoding worker (a screening batch's, an import's): a shop's
#: image host answers each request after the internet's latency (100-300 ms), and one request after another set
#: the whole screening's pace (3.5 photos/s at 250 ms, 8 at once ~20; BENCHMARKS.md, "A shop's latency, and a
#: batch's URLs fetched together")
FETCH_THREADS = 8


def fetch_image(url: str, timeout: float = 15.0, max_bytes: int | None = None, allow_private: bool = False) -> bytes:
    """The bytes at an http(s) URL (``fetch``: retries, redirects, public addresses only unless
    ``allow_private``), or ``ImageLoadError`` saying why not, in the words an unreadable file gets."""
    try:
        return fetch(url, max_bytes=max_bytes or DEFAULT_MAX_BYTES, timeout=timeout, allow_private=allow_private)
    except BadURL as exc:  # no address to allow: --fetch-private would not help
        raise ImageLoadError(url, str(exc)) from None
    except FetchRefused as exc:
        raise ImageLoadError(url, f"{exc}: not fetched (--fetch-private fetches from private addresses too)") from None
    except FetchFailed as exc:
        raise ImageLoadError(url, str(exc)) from None
