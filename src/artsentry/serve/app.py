"""The web server: one page and a JSON API (FastAPI), documented at ``/openapi.json``.

    GET  /                      the page (upload photos, see verdicts, matches, overlays)
    GET  /healthz               liveness
    GET  /v1/models             what is loaded: versions, labels, thresholds, register size
    POST /v1/analyze            multipart field ``file``, or JSON {"url": ...} when fetching is enabled
    POST /v1/listing            a listing's photos (multipart ``file`` x n): each analysed, and its verdict
    POST /v1/register           add an object (token): multipart ``object_id``, metadata, ``file`` x n
    GET  /v1/register/{id}      one registered object
    GET  /v1/register/{id}/history  its changes, oldest first, also once removed
    DELETE /v1/register/{id}    remove an object (token)

Hardening: request bodies over the limit are refused (413) before they are read in
full; uploads are sniffed by content, not by name or declared type (415); decoding
is guarded against decompression bombs (422); ids are checked against a strict
pattern (400), so no request text ever becomes a path; register writes need the
bearer token given at start (401/403); URL fetching, off by default, reaches only public
addresses (pinned to the address checked) or the hosts allowed at start (403), a redirect's
new URL checked the same way, the whole download bounded in time; CORS is off unless origins are
configured; with an audit log (``serve.audit``) every analysis, register change (before and after
it is made) and refused write is recorded, each record linked to the one before (``chainlog``);
inference runs in a bounded worker pool off the event loop, and a request that
finds the queue full gets 503 with Retry-After instead of waiting. Every error is
JSON: ``{"error": "...", "status": N}``. No page asset comes from the network.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Literal, Optional

from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from .. import __version__
from ..data.images import ImageLoadError, describe_content, describe_size
from ..files import disk_full
from ..index.register import OBJECT_ID, OBJECT_ID_MAX, NotRegistered, RegisterError, check_object_id
from .analysis import Analyzer, LotsUnavailable, ServeSettings, sniff
from .audit import AuditLog, decision_summary

log = logging.getLogger(__name__)

# the id's rule (the register's, for the command and the API alike) in the OpenAPI schema; the handlers check it
# themselves (_check_id), for a clearer error
ID_SCHEMA = {"pattern": OBJECT_ID.pattern, "minLength": 1, "maxLength": OBJECT_ID_MAX}
MULTIPART_OVERHEAD = 256 * 1024


DISK_FULL_STATUS = 507  # Insufficient Storage: a register change the server's disk had no room for


# -- response models (the OpenAPI schema is the contract) ------------------------------------

class ErrorBody(BaseModel):
    error: str
    status: int


DISK_FULL_RESPONSE = {"model": ErrorBody, "description": "no room on the server's disk: nothing was changed"}


class PhotoQualityOut(BaseModel):
    long_side: int = Field(description="pixels of the decoded photo's long side")
    aspect: float = Field(description="long side over short side: over 8 (beyond every training photo) warned as "
                          "narrow, since the model reads the photo squashed to a square or only its centre")
    sharpness: float = Field(description="fine detail at the edges, measured at 320 px: ~0.19 for a sharp museum "
                             "photo, under 0.114 (2% of the training photos) warned as blurred or enlarged")
    noise: float = Field(description="noise sigma in grey levels: 1-3 for a studio photo, over 6.2 warned as grainy")
    brightness: float = Field(description="99th percentile of its grey levels: ~220 for a studio photo, under "
                              "163.5 warned as dark")
    warnings: list[str] = Field(description="why a decision on this photo is weak evidence; empty when it is not")
    frames: int = Field(1, description="frames or pages in the file (an animated GIF or WebP, a multi-page TIFF); "
                        "only the first is judged, and more than one is warned")


class ImageInfo(BaseModel):
    sha256: str = Field(description="SHA-256 of the bytes received: trace a decision back to its photo")
    width: int
    height: int
    bytes: int
    quality: Optional[PhotoQualityOut] = None


class ModelRef(BaseModel):
    name: str
    version: str = Field(description="first 16 hex digits of the SHA-256 of the model weights")
    runtime: str


class LotScanOut(BaseModel):
    whole_probability: float = Field(description="the whole photo's own probability of the positive label")
    box: Optional[list[int]] = Field(None, description="[left, top, right, bottom] in the photo's pixels of the tile "
                                     "that scored highest; null: the whole photo did")
    model_threshold: float = Field(description="the model's whole-photo threshold (the decision above uses the "
                                   "lot threshold instead)")


class Classification(BaseModel):
    model: ModelRef
    label: str = Field(description="the decision: for binary models the positive label when probability >= "
                       "threshold, else the other label (not always the likelier class); else the top class")
    probabilities: dict[str, float]
    positive_label: Optional[str] = None
    probability: Optional[float] = Field(None, description="probability of the positive label (binary models)")
    threshold: Optional[float] = None
    decision: Optional[str] = Field(None, description="'flag' when probability >= threshold, else 'pass'")
    lot: Optional[LotScanOut] = Field(None, description="with lots=true: the tile scan this decision came from")


class MatchOut(BaseModel):
    object_id: str
    score: float = Field(description="match score the threshold applies to: under the register's 'contrast' "
                         "scoring the similarity minus half the mean similarity of the next four objects, "
                         "under 'similarity' scoring the similarity itself")
    similarity: float = Field(description="cosine similarity of the embeddings (best registered photo), -1..1")
    matched: Optional[bool] = Field(description="score at or above the register's threshold; null when the register "
                                    "has none (before 'register calibrate'): ranked, not decided")
    title: Optional[str] = None
    department: Optional[str] = None
    source: Optional[str] = None
    status: Optional[str] = None
    photo: Optional[str] = Field(None, description="thumbnail of a registered photo (data URI)")
    box: Optional[list[float]] = Field(None, description="with lots=true: the crop the match was found in, as "
                                       "[left, top, right, bottom] fractions of the photo; null: the whole photo")


class RegisterResult(BaseModel):
    threshold: Optional[float]
    scoring: str = Field(description="what a match's score is: 'contrast' or 'similarity'")
    no_match: Optional[bool] = Field(description="true: the best match is under the threshold, or nothing is "
                                     "registered; false: it matches; null: undecided, the register has no threshold "
                                     "(as 'artsentry screen', which then counts no photo as matched)")
    matches: list[MatchOut]


class Overlay(BaseModel):
    model: str
    method: str
    target: str
    width: int
    height: int
    png: str = Field(description="RGBA heat layer (data URI) the size of the photo as shown, to lay over it")
    photo: str = Field(description="the photo as shown (upright, as the model reads it: cropped when its "
                       "preprocessing crops, whole with lots=true), a JPEG data URI of the overlay's size: lay the "
                       "overlay on this when the upload cannot be shown as sent (HEIC and TIFF in most browsers) or "
                       "is not its shape")
    box: Optional[list[int]] = Field(None, description="the tile the map is of, (left, top, right, bottom) in the "
                                     "photo's pixels as ivory.lot.box: a lot flagged for it (lots=true); null: the "
                                     "map is of the photo whole")


class AnalyzeResponse(BaseModel):
    image: ImageInfo
    ivory: Optional[Classification] = None
    culture: Optional[Classification] = None
    # "register" itself would shadow BaseModel.register (from ABCMeta): aliased
    register_matches: Optional[RegisterResult] = Field(None, alias="register")
    overlay: Optional[Overlay] = None
    seconds: float

    model_config = {"populate_by_name": True}


class ListingPhoto(BaseModel):
    index: int = Field(description="position of the photo among the request's 'file' fields, from 0")
    filename: Optional[str] = None
    result: Optional[AnalyzeResponse] = Field(None, description="as /v1/analyze answers for this photo")
    error: Optional[str] = Field(None, description="why this photo could not be used (the others still are)")


class ListingResponse(BaseModel):
    review: bool = Field(description="any photo flagged or matching a registered object (or, with "
                         "review_weak, any weak photo): the rule of 'artsentry screen' (listings.csv)")
    status: Literal["review", "not screened", "partly screened", "clear"] = Field(
        description="review; 'not screened' when no photo could be read, 'partly screened' when some could not "
        "and none of the rest is to review; clear otherwise (listings.csv's status)")
    photos: int
    unreadable: int
    flagged_photos: int
    matched_photos: int
    weak_photos: int = Field(0, description="photos with a quality warning (blurred, grainy, dark, small)")
    max_probability: Optional[float] = Field(None, description="highest positive-label probability of its photos")
    max_probability_photo: Optional[int] = Field(None, description="index of that photo")
    best_match: Optional[str] = Field(None, description="object id of the best-scoring register match over its "
                                      "photos (matched or not: see matched_photos)")
    best_match_score: Optional[float] = None
    best_match_photo: Optional[int] = None
    results: list[ListingPhoto]
    seconds: float


class UrlRequest(BaseModel):
    url: str


class RegisterObject(BaseModel):
    object_id: str
    title: Optional[str] = None
    department: Optional[str] = None
    source: Optional[str] = None
    status: Optional[str] = None
    photos: list[str] = []
    photo_urls: Optional[list[Optional[str]]] = Field(
        None, description="for an object some of whose photos were fetched (register import --fetch-urls): the URL "
        "each photo came from, in the order of photos (null: a file or an upload)")


class HistoryEntry(BaseModel):
    time: str = Field(description="UTC, ISO 8601")
    user: Optional[str] = Field(None, description="system user of the process that made the change (the server's "
                                "for API writes)")
    action: str = Field(description="create, add, add_photos, update (metadata alone), remove, threshold or "
                        "lot_threshold")
    object_id: Optional[str] = None
    detail: dict = Field(description="what changed: photos' SHA-256 and metadata added, what a removed object was...")


class RegisterAdded(BaseModel):
    object_id: str
    photos_added: int
    already_registered: int = Field(0, description="photos sent whose content this object holds already (or sent "
                                    "twice): not registered again, so a retried request adds nothing twice")
    errors: list[str]
    object: Optional[RegisterObject]
    shares_photos_with: list[str] = Field(default_factory=list, description="other objects holding a photo of the "
                                          "same content as one of this object's: most often one object recorded "
                                          "twice (a search for that photo matches each of them alike)")


class Removed(BaseModel):
    object_id: str
    photos_removed: int


# -- plumbing ------------------------------------------------------------------------------------

class BodyLimit:
    """ASGI middleware: refuse bodies over ``limit`` bytes (413), by Content-Length when
    given and by counting otherwise, before the application reads them in full."""

    def __init__(self, app, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                declared = int(value) if value.isdigit() else None  # (not int(): it takes "+5", " 5", "5_0")
                if declared is None:
                    return await _send_error(send, 400, "Content-Length is not a number of bytes")
                if declared > self.limit:
                    return await _send_error(send, 413, f"request body over the limit of {describe_size(self.limit)}")
        seen = 0
        sent_response = False

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge()
            return message

        async def tracking_send(message):
            nonlocal sent_response
            if message["type"] == "http.response.start":
                sent_response = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not sent_response:
                await _send_error(send, 413, f"request body over the limit of {describe_size(self.limit)}")


class _TooLarge(Exception):
    pass


async def _send_error(send, status: int, message: str) -> None:
    import json

    body = json.dumps({"error": message, "status": status}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class Overloaded(Exception):
    pass


class Admission:
    """At most ``workers`` analyses run and ``queue`` wait; the next one is refused."""

    def __init__(self, workers: int, queue: int):
        self.capacity = workers + queue
        self.pending = 0
        self.semaphore = asyncio.Semaphore(workers)

    async def run(self, executor, fn, *args):
        if self.pending >= self.capacity:
            raise Overloaded()
        self.pending += 1
        try:
            async with self.semaphore:
                return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)
        finally:
            self.pending -= 1


def _error(status: int, message: str, headers: dict | None = None) -> HTTPException:
    return HTTPException(status_code=status, detail=message, headers=headers)


REGISTER_RETRY_AFTER_S = 30  # the Retry-After of a register change refused as busy (an IVF switch: ~51 s)


READ_ONLY = "register writes are disabled: the register is read-only on this server (a read-only share or copy)"


@contextlib.contextmanager
def _register_refusals():
    """A register change that waited ``register_busy_seconds`` for another process's (an import, a rebuild)
    is answered 503 with Retry-After, nothing changed, not 500 (nor 404, as any ``RegisterError`` of a
    removal was); one refused as the register became read-only after the server started, 403."""
    from ..index.register import RegisterBusy, RegisterReadOnly

    try:
        yield
    except RegisterBusy:
        raise _error(503, "the register is being changed by another process (an import, a rebuild); nothing "
                          "was changed: retry when it has finished",
                     {"Retry-After": str(REGISTER_RETRY_AFTER_S)}) from None
    except RegisterReadOnly:
        raise _error(403, READ_ONLY) from None


def _check_id(object_id: str) -> str:
    if not OBJECT_ID.fullmatch(object_id or ""):  # (match: Python's "$" also takes a final newline)
        try:
            check_object_id(object_id)
            why = f"object id {object_id[:80]!r} has a space at an end"  # what object_key would have cut
        except RegisterError as exc:
            why = str(exc)
        raise _error(400, f"invalid object id: {why}")
    return object_id


def _check_image(data: bytes, limit: int, what: str = "file") -> str:
    if not data:
        raise _error(400, f"{what} is empty")
    if len(data) > limit:  # within the body limit's allowance for the form around it, but over the upload limit
        raise _error(413, f"{what} is {describe_size(len(data))}, over the upload limit of {describe_size(limit)}")
    kind = sniff(data)
    if kind is None:
        raise _error(415, f"{what} is not an image: its content is {describe_content(data)} "
                          "(accepted: JPEG, PNG, WebP, GIF, BMP, TIFF, AVIF, HEIC; checked by content, not by name)")
    return kind


def _methods_for(app: FastAPI, scope: dict) -> set[str]:
    """The methods of the resource the request's path names: of every route that matches it and does not end
    in a catch-all (``{id:path}``), or, when none does, of every catch-all route that matches it
    (/v1/register/A/history is the history, not an object id with a slash in it)."""
    from starlette.routing import Match

    exact: set[str] = set()
    catch_all: set[str] = set()
    for route in app.router.routes:
        methods = getattr(route, "methods", None)
        if methods and route.matches(scope)[0] != Match.NONE:
            # a catch-all ends in its {id:path}; /v1/register/{id:path}/history names its own resource
            (catch_all if getattr(route, "path", "").endswith(":path}") else exact).update(methods)
    return exact or catch_all


def _asset(name: str) -> bytes:
    return resources.files("artsentry.serve").joinpath("static", name).read_bytes()


PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
            "connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'")


def create_app(settings: ServeSettings, analyzer: Analyzer | None = None) -> FastAPI:
    from contextlib import asynccontextmanager

    analyzer = analyzer or Analyzer(settings)
    executor = ThreadPoolExecutor(max_workers=settings.inference_workers, thread_name_prefix="artsentry-infer")

    @asynccontextmanager
    async def lifespan(app):
        yield
        executor.shutdown(wait=False, cancel_futures=True)

    # the interactive docs pages load their scripts from a CDN: off; /openapi.json is the contract
    app = FastAPI(title="artsentry", version=__version__, docs_url=None, redoc_url=None, lifespan=lifespan,
                  description="Image recognition against the illicit trade in cultural objects and wildlife "
                              "products: ivory screening, known-object search, explanations.")
    admission = Admission(settings.inference_workers, settings.max_queue)
    audit_log = AuditLog(settings.audit_log) if settings.audit_log else None

    async def audit(request: Request, event: str, **fields) -> None:
        """Record an event; with an audit log that cannot be written (disk full...), no answer goes out
        without its record: 503."""
        if audit_log is not None:
            client = request.client.host if request.client else None
            try:
                await asyncio.to_thread(audit_log.write, event, client, **fields)
            except OSError as exc:
                raise _error(503, f"the audit log cannot be written ({exc.strerror or exc}): no answer is given "
                                  "without its record") from None

    async def audited_change(request: Request, event: str, change, outcome, **fields):
        """A register change, recorded before it is made (``phase`` requested: a log that cannot be
        written refuses it with 503, nothing changed) and after (done, with ``outcome(result)``, or failed,
        with the status and error). Returns ``await change()``."""
        await audit(request, event, phase="requested", **fields)
        try:
            result = await change()
        except HTTPException as exc:
            await audit(request, event, phase="failed", status=exc.status_code, error=str(exc.detail), **fields)
            raise
        except Overloaded:
            await audit(request, event, phase="failed", status=503, error="server busy", **fields)
            raise
        except Exception as exc:
            await audit(request, event, phase="failed", status=DISK_FULL_STATUS if disk_full(exc) else 500,
                        error=f"{type(exc).__name__}: {exc}", **fields)
            raise
        try:
            await audit(request, event, phase="done", **outcome(result), **fields)
        except HTTPException as exc:  # made, and in the register's own history; say so
            raise _error(503, f"{exc.detail}; the change WAS made (see the register's history)") from None
        return result

    assets = {"index.html": _asset("index.html"), "app.js": _asset("app.js"), "app.css": _asset("app.css")}
    app.state.analyzer = analyzer
    app.state.admission = admission

    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:
            # the router names only the first route whose path matched (GET /v1/register/{id}), not
            # DELETE on the same path: Allow lists every method of every route of this path
            allowed = _methods_for(app, request.scope)
            if allowed and request.method not in allowed:
                headers["Allow"] = ", ".join(sorted(allowed))
        return JSONResponse({"error": str(exc.detail), "status": exc.status_code}, status_code=exc.status_code,
                            headers=headers or None)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        parts = []
        for e in exc.errors():
            where = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
            parts.append(f"{where}: {e.get('msg')}" if where else str(e.get("msg")))
        return JSONResponse({"error": "bad request: " + "; ".join(parts), "status": 400}, status_code=400)

    @app.exception_handler(OSError)
    @app.exception_handler(sqlite3.Error)  # the register's database: SQLite says "database or disk is full"
    async def storage_error(request: Request, exc: Exception):
        if not disk_full(exc):
            raise exc  # to the handler of anything unforeseen below: 500
        log.error("%s %s: %s", request.method, request.url.path, exc)
        return JSONResponse({"error": "the server's disk is full: nothing was changed; retry once space is freed",
                             "status": DISK_FULL_STATUS}, status_code=DISK_FULL_STATUS)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        # the error is JSON as every other (the page shows it); the traceback goes to the server's log
        return JSONResponse({"error": "internal server error (the server's log has the details)", "status": 500},
                            status_code=500)

    @app.exception_handler(Overloaded)
    async def overloaded(request: Request, exc: Overloaded):
        return JSONResponse({"error": "server busy: too many analyses queued, retry shortly", "status": 503},
                            status_code=503, headers={"Retry-After": str(settings.retry_after_s)})

    @app.middleware("http")
    async def headers(request: Request, call_next):
        if any(c < " " or c == "\x7f" for c in request.scope.get("path", "")):
            # a decoded %0A: the router's "{id:path}" stops at a newline, so /v1/register/A%0A was object A
            response = JSONResponse({"error": "the request path holds control characters", "status": 400},
                                    status_code=400)
        else:
            response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        return response

    async def _token(request: Request) -> None:
        if not settings.token:
            await audit(request, "refused", method=request.method, path=request.url.path, status=403)
            raise _error(403, "register writes are disabled: start the server with a token "
                              "(artsentry serve --token, or ARTSENTRY_TOKEN)")
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(value.strip().encode(), settings.token.encode()):
            await audit(request, "refused", method=request.method, path=request.url.path, status=401)
            raise _error(401, "missing or wrong token: send 'Authorization: Bearer <token>'",
                         {"WWW-Authenticate": "Bearer"})

    def _need_register():
        if analyzer.register is None:
            raise _error(404, "no register is loaded on this server (artsentry serve --register)")

    async def _need_writable(request: Request) -> None:
        """A register change on a register served from a read-only share or copy: 403 before it is tried
        (SQLite granted the change its lock, then refused its first write: a 500 after a 'requested' record)."""
        if not analyzer.register.writable:
            await audit(request, "refused", method=request.method, path=request.url.path, status=403)
            raise _error(403, READ_ONLY)

    # -- page ------------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    async def page():
        return Response(assets["index.html"], media_type="text/html; charset=utf-8",
                        headers={"Content-Security-Policy": PAGE_CSP})

    @app.get("/static/app.js", include_in_schema=False)
    async def page_js():
        return Response(assets["app.js"], media_type="text/javascript; charset=utf-8")

    @app.get("/static/app.css", include_in_schema=False)
    async def page_css():
        return Response(assets["app.css"], media_type="text/css; charset=utf-8")

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon():
        return Response(status_code=204)

    # -- API -------------------------------------------------------------------------------
    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok", "version": __version__}

    @app.get("/v1/models")
    async def models() -> dict:
        return await asyncio.get_running_loop().run_in_executor(None, analyzer.models)

    analyze_body = {"requestBody": {"content": {
        "multipart/form-data": {"schema": {"type": "object", "required": ["file"],
                                           "properties": {"file": {"type": "string", "format": "binary"}}}},
        "application/json": {"schema": UrlRequest.model_json_schema()}}, "required": True}}

    @app.post("/v1/analyze", response_model=AnalyzeResponse, openapi_extra=analyze_body,
              responses={400: {"model": ErrorBody}, 403: {"model": ErrorBody}, 413: {"model": ErrorBody},
                         415: {"model": ErrorBody}, 422: {"model": ErrorBody}, 503: {"model": ErrorBody}})
    async def analyze(request: Request, explain: bool = Query(False, description="add the evidence overlay"),
                      k: int = Query(5, ge=1, le=50, description="register matches returned"),
                      lots: bool = Query(False, description="a photo of several objects: decide by the highest of "
                                         "the whole photo and its 3x3 half-size tiles, at the model's lot threshold")):
        ctype = request.headers.get("content-type", "")
        origin: dict = {}
        if ctype.startswith("multipart/form-data"):
            form = await request.form(max_files=1, max_fields=8)
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                raise _error(400, "no image: send it as the multipart form field 'file'")
            data = await upload.read()
        elif ctype.startswith("application/json"):
            try:
                body = UrlRequest.model_validate_json(await request.body())
            except ValueError:
                raise _error(400, 'bad JSON: expected {"url": "https://..."}') from None
            if not settings.allow_url_fetch:
                raise _error(403, "fetching image URLs is disabled on this server (start it with --allow-url-fetch); "
                                  "upload the file instead")
            data = await _fetch(body.url, settings)
            origin = {"url": body.url}  # for the audit log: where the photo came from
        else:
            raise _error(415, "send multipart/form-data with a 'file' field, or JSON {\"url\": ...}")
        _check_image(data, settings.max_upload_bytes)
        try:
            result = await admission.run(executor, lambda: analyzer.analyze(data, explain=explain, k=k, lots=lots))
        except ImageLoadError as exc:
            await audit(request, "analyze", **origin, sha256=hashlib.sha256(data).hexdigest(), bytes=len(data),
                        error=exc.reason)
            raise _error(422, f"the image cannot be used: {exc.reason}") from None
        except LotsUnavailable as exc:
            raise _error(400, str(exc)) from None
        await audit(request, "analyze", **origin, lots=lots, **decision_summary(result))
        return result

    listing_body = {"requestBody": {"content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["file"],
        "properties": {"file": {"type": "array", "items": {"type": "string", "format": "binary"},
                                "minItems": 1, "maxItems": settings.max_listing_photos}}}}}, "required": True}}

    @app.post("/v1/listing", response_model=ListingResponse, openapi_extra=listing_body,
              responses={400: {"model": ErrorBody}, 413: {"model": ErrorBody}, 415: {"model": ErrorBody},
                         422: {"model": ErrorBody}, 503: {"model": ErrorBody}})
    async def listing(request: Request, explain: bool = Query(False, description="add each photo's evidence overlay"),
                      k: int = Query(5, ge=1, le=50, description="register matches returned per photo"),
                      review_weak: bool = Query(False, description="a photo the model passed whose quality is weak "
                                                "(blurred, grainy, dark, small) puts the listing to review, as "
                                                "'artsentry screen --review-weak' does"),
                      lots: bool = Query(False, description="photos of several objects: each decided by the tile "
                                         "scan at the model's lot threshold, as /v1/analyze?lots=true")):
        """A listing's photos in one request (one 'file' field each; the whole body within the upload
        limit): every photo's analysis and the listing's verdict. A photo that cannot be used is
        reported in its place; 422 only when none can."""
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise _error(415, "send multipart/form-data with one 'file' field per photo")
        most = settings.max_listing_photos
        form = await request.form(max_files=most + 1, max_fields=8)
        uploads = [u for u in form.getlist("file") if not isinstance(u, str)]
        if not uploads:
            raise _error(400, "no photos: send each as a multipart form field 'file'")
        if len(uploads) > most:
            raise _error(400, f"more than {most} photos in one listing")
        photos = [(u.filename, await u.read()) for u in uploads]
        try:
            out = await admission.run(executor, lambda: analyzer.analyze_listing(photos, explain=explain, k=k,
                                                                                    review_weak=review_weak, lots=lots))
        except LotsUnavailable as exc:
            raise _error(400, str(exc)) from None
        await audit(request, "listing", status=out["status"], lots=lots,
                    photos=[{"filename": e["filename"], **(decision_summary(e["result"]) if e["result"] else
                                                          {"sha256": hashlib.sha256(photos[e["index"]][1]).hexdigest(),
                                                           "error": e["error"]})} for e in out["results"]])
        if out["unreadable"] == out["photos"]:
            raise _error(422, "no photo of the listing can be used: " +
                         "; ".join(f"photo {e['index'] + 1}: {e['error']}" for e in out["results"]))
        return out

    @app.get("/v1/register/{object_id:path}/history", response_model=list[HistoryEntry],
             responses={400: {"model": ErrorBody}, 404: {"model": ErrorBody}})
    async def register_history(object_id: str = PathParam(..., json_schema_extra=ID_SCHEMA)):
        """Every change to one object, oldest first, also after it was removed (``artsentry register history``)."""
        _need_register()
        _check_id(object_id)
        rows = await asyncio.get_running_loop().run_in_executor(None, analyzer.register_history, object_id)
        if not rows:
            raise _error(404, f"object {object_id!r} has no history in the register")
        keys = ("time", "user", "action", "object_id")
        return [{**{k: r[k] for k in keys}, "detail": {k: v for k, v in r.items() if k not in keys}} for r in rows]

    @app.get("/v1/register/{object_id:path}", response_model=RegisterObject,
             responses={400: {"model": ErrorBody}, 404: {"model": ErrorBody}})
    async def register_get(object_id: str = PathParam(..., json_schema_extra=ID_SCHEMA)):
        _need_register()
        _check_id(object_id)
        found = await asyncio.get_running_loop().run_in_executor(None, analyzer.register_get, object_id)
        if found is None:
            raise _error(404, f"object {object_id!r} is not in the register")
        found["photos"] = [Path(p).name for p in found.get("photos", [])]  # never disclose server paths
        return found

    @app.post("/v1/register", response_model=RegisterAdded, status_code=201,
              responses={200: {"model": RegisterAdded, "description": "no photo added: the object holds every "
                                                                      "one sent already (its metadata is updated)"},
                         400: {"model": ErrorBody}, 401: {"model": ErrorBody}, 403: {"model": ErrorBody},
                         404: {"model": ErrorBody}, 413: {"model": ErrorBody}, 415: {"model": ErrorBody},
                         422: {"model": ErrorBody}, 503: {"model": ErrorBody},
                         DISK_FULL_STATUS: DISK_FULL_RESPONSE})
    async def register_add(request: Request, response: Response,
                           object_id: str = Form(..., json_schema_extra=ID_SCHEMA),
                           file: list[UploadFile] = File(..., json_schema_extra={"minItems": 1}),
                           title: Optional[str] = Form(None), department: Optional[str] = Form(None),
                           source: Optional[str] = Form(None), status: Optional[str] = Form(None)):
        await _token(request)
        _need_register()
        await _need_writable(request)
        _check_id(object_id)
        photos = []
        for i, up in enumerate(file):
            data = await up.read()
            kind = _check_image(data, settings.max_upload_bytes, f"photo {i + 1}")
            photos.append((data, kind))
        hashes = [hashlib.sha256(d).hexdigest() for d, _ in photos]

        def add():
            from ..data.images import load_image

            for i, (data, kind) in enumerate(photos):
                try:  # refuse the whole request before the register changes
                    load_image(data, name=f"photo {i + 1}", max_bytes=settings.max_upload_bytes,
                               max_pixels=settings.max_pixels,  # read as the register will read it
                               draft_size=analyzer.register.embedder.preprocessing.draft_size)
                except ImageLoadError as exc:
                    raise _error(422, f"photo {i + 1} cannot be used: {exc.reason}") from None
            meta = {"title": title, "department": department, "source": source, "status": status}
            with _register_refusals():
                return analyzer.register_add(object_id, photos, meta)  # stored under its own name: the SHA-256

        out = await audited_change(request, "register_add", lambda: admission.run(executor, add),
                                   lambda out: {"photos_added": out.get("photos_added")},
                                   object_id=object_id, photos=hashes)
        if out["object"]:
            out["object"]["photos"] = [Path(p).name for p in out["object"]["photos"]]
        if not out["photos_added"]:  # a retried request: nothing was created
            response.status_code = 200
        return out

    @app.delete("/v1/register/{object_id:path}", response_model=Removed,
                responses={400: {"model": ErrorBody}, 401: {"model": ErrorBody}, 403: {"model": ErrorBody},
                           404: {"model": ErrorBody}, 503: {"model": ErrorBody},
                           DISK_FULL_STATUS: DISK_FULL_RESPONSE})
    async def register_remove(request: Request, object_id: str = PathParam(..., json_schema_extra=ID_SCHEMA)):
        if object_id.endswith("/history") and OBJECT_ID.fullmatch(object_id[: -len("/history")]):
            raise _error(405, "an object's history cannot be deleted", {"Allow": "GET"})
        await _token(request)
        _need_register()
        await _need_writable(request)
        _check_id(object_id)

        def remove_now():
            with _register_refusals():
                return analyzer.register_remove(object_id)

        async def remove():
            try:
                return await admission.run(executor, remove_now)
            except NotRegistered as exc:
                raise _error(404, str(exc)) from None

        n = await audited_change(request, "register_remove", remove, lambda n: {"photos_removed": n},
                                 object_id=object_id)
        return {"object_id": object_id, "photos_removed": n}

    app.add_middleware(BodyLimit, limit=settings.max_upload_bytes + MULTIPART_OVERHEAD)
    make_schema = app.openapi

    def schema() -> dict:
        """FastAPI's schema without the 422 it lists for every operation with parameters: a request that
        fails validation is answered 400 here (``validation_error``), so 422 means only what a handler
        says it means (an image that cannot be used)."""
        if app.openapi_schema is None:
            out = make_schema()
            for operations in out.get("paths", {}).values():
                for operation in operations.values():
                    said = operation.get("responses", {}).get("422", {})
                    if "HTTPValidationError" in str(said):
                        del operation["responses"]["422"]
            app.openapi_schema = out
        return app.openapi_schema

    app.openapi = schema
    return app


async def _fetch(url: str, settings: ServeSettings) -> bytes:
    """Download an image the operator allowed the server to fetch: http(s) only, host on the
    allow-list when one is set, otherwise only from public addresses, pinned (``artsentry.fetch``);
    redirects followed up to ``MAX_REDIRECTS``, each new URL checked as the first; the body capped at
    the upload limit, the whole download at ``fetch_seconds``."""
    from urllib.parse import urljoin

    import httpx

    from ..fetch import MAX_REDIRECTS, BadURL, FetchFailed, FetchRefused, http_url, pinned

    async def checked(where: str, hop: int) -> tuple[str, dict, dict]:
        said = f"the URL redirects to {where[:200]!r}: " if hop else ""
        try:
            host = http_url(where)[0].hostname
        except BadURL as exc:
            raise _error(422 if hop else 400, f"{said}{exc}") from None
        if settings.url_allowlist and host not in settings.url_allowlist:
            raise _error(403, f"{said}host {host!r} is not on this server's allow-list")
        try:  # the allow-list names hosts the operator trusts, private ones included
            return await asyncio.to_thread(pinned, where, bool(settings.url_allowlist))
        except FetchRefused as exc:
            raise _error(403, f"{said}{exc}; this server fetches only from public addresses, or from hosts named "
                              "with --url-allow-host") from None
        except FetchFailed as exc:
            raise _error(422, f"{said}fetching the URL failed: {exc}") from None

    limit = settings.max_upload_bytes

    async def download(where: str) -> bytes:
        async with httpx.AsyncClient(timeout=10.0, follow_redirects=False) as client:
            for hop in range(MAX_REDIRECTS + 1):
                target, headers, extensions = await checked(where, hop)
                async with client.stream("GET", target, headers=headers, extensions=extensions) as r:
                    if r.is_redirect and r.headers.get("location"):
                        where = urljoin(where, r.headers["location"])
                        continue
                    if r.status_code != 200:
                        raise _error(422, f"fetching the URL gave HTTP {r.status_code}")
                    chunks, size = [], 0
                    async for chunk in r.aiter_bytes():
                        size += len(chunk)
                        if size > limit:
                            raise _error(413, f"the image at the URL is over the limit of {describe_size(limit)}")
                        chunks.append(chunk)
                    return b"".join(chunks)
        raise _error(422, f"fetching the URL: more than {MAX_REDIRECTS} redirects")

    try:  # a whole deadline: the client's per-read timeout never fires on a host sending a byte at a time
        return await asyncio.wait_for(download(url), settings.fetch_seconds)
    except asyncio.TimeoutError:
        raise _error(422, f"fetching the URL took over {settings.fetch_seconds:g} s") from None
    except (httpx.HTTPError, httpx.InvalidURL) as exc:  # InvalidURL is no HTTPError: it was a 500
        raise _error(422, f"fetching the URL failed: {exc.__class__.__name__}") from None
