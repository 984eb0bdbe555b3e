"""Resumable crawls of The Met Collection API into a local collection folder.

The folder holds::

    crawl.sqlite     crawl state: every object and image, its status and failure reason,
                     the object records (JSON), and the id list of each query
    images/<id>/<n>.jpg   image n of object id (0 = primary, 1.. = additional)
    collection.csv   one row per stored image with its object's metadata (deterministic)
    failures.csv     every failure with its reason

Workers only do network I/O and write image files (to a temporary name, then
an atomic rename); the main thread alone writes the database, one transaction
per result. A crawl killed at any moment loses at most the work in flight:
running the same command again skips everything recorded as done, a file
written just before the kill is simply written again with the same bytes, and
the temporary file of a write the kill cut short is removed. An image recorded
as stored whose file has gone since is fetched again.

A crawl stops, keeping what it fetched, when ``stop_after`` requests in a row have each failed every attempt
(the museum's firewall blocking the address, the network down): carrying on would send the same refused
requests for hours, and mark every object of the list failed.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import sqlite3
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator
from urllib.parse import urlsplit

from tqdm.auto import tqdm

from ..data.images import ImageLoadError, load_image
from ..errors import ArtsentryError
from ..files import atomic_path, database_problem, exclusive, first_names, sweep_stale, write_bytes_atomic
from .met import GaveUp, MetClient, MetError, NotFound

SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    object_id INTEGER PRIMARY KEY,
    status TEXT NOT NULL DEFAULT 'pending',   -- pending | done | missing | failed | imported
    reason TEXT,
    source TEXT NOT NULL DEFAULT 'api',
    record TEXT                               -- JSON
);
CREATE TABLE IF NOT EXISTS images (
    object_id INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    url TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',   -- pending | done | missing | failed
    file TEXT,
    sha256 TEXT,
    reason TEXT,
    PRIMARY KEY (object_id, idx)
);
CREATE TABLE IF NOT EXISTS queries (key TEXT PRIMARY KEY, ids TEXT NOT NULL);
"""

log = logging.getLogger(__name__)

#: record fields carried into collection.csv, in this order
RECORD_FIELDS = ["department", "objectName", "title", "culture", "period", "dynasty", "objectDate",
                 "objectBeginDate", "objectEndDate", "medium", "classification", "country", "region",
                 "isPublicDomain", "accessionNumber", "objectURL"]


class CrawlStopped(ArtsentryError):
    """A crawl given up because the server refuses every request or cannot be reached; what it fetched is
    kept, and the same command run again later resumes it."""


class CrawlStateError(ArtsentryError):
    """The crawl's database cannot be used (damaged)."""


class CrawlStore:
    """The crawl's SQLite database. Use from one thread. It holds the folder's lock (``files.exclusive``)
    until ``close``: a second crawl into the folder (two terminals, a cron job overlapping the last) is
    refused at once, naming the first, instead of crawling everything twice against one rate cap each."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self._lock = ExitStack()
        self._lock.enter_context(exclusive(self.folder, "collect"))
        path = self.folder / "crawl.sqlite"
        try:
            self.db = sqlite3.connect(path, isolation_level=None)
            problem = database_problem(self.db)
            if problem:
                self.db.close()
                raise CrawlStateError(f"{path}: the crawl's state is damaged ({problem}); move it aside and run the "
                                      "command again to crawl from the start (images on disk are fetched again)")
        except BaseException:
            self._lock.close()
            raise
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        try:
            self.db.close()
        finally:
            self._lock.close()

    def query_ids(self, key: str, fetch: Callable[[], list[int]]) -> list[int]:
        """The id list of a query: fetched once, then reused so a resumed crawl sees the same list."""
        row = self.db.execute("SELECT ids FROM queries WHERE key = ?", (key,)).fetchone()
        if row:
            return json.loads(row[0])
        ids = sorted(set(int(i) for i in fetch()))
        self.db.execute("INSERT INTO queries (key, ids) VALUES (?, ?)", (key, json.dumps(ids)))
        return ids

    def add_objects(self, ids: Iterable[int]) -> None:
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany("INSERT OR IGNORE INTO objects (object_id) VALUES (?)", ((int(i),) for i in ids))
            # imported metadata-only rows and earlier failures are fetched (again)
            self.db.executemany("UPDATE objects SET status = 'pending' WHERE object_id = ? AND status IN "
                                "('imported', 'failed')", ((int(i),) for i in ids))

    def pending_objects(self, ids: list[int]) -> list[int]:
        wanted = set(ids)
        rows = self.db.execute("SELECT object_id FROM objects WHERE status = 'pending' ORDER BY object_id")
        return [r[0] for r in rows if r[0] in wanted]

    def save_record(self, object_id: int, record: dict, image_urls: list[str]) -> None:
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute("UPDATE objects SET status = 'done', reason = NULL, record = ? WHERE object_id = ?",
                            (json.dumps(record, sort_keys=True), object_id))
            self.db.executemany(
                "INSERT OR IGNORE INTO images (object_id, idx, url) VALUES (?, ?, ?)",
                [(object_id, k, url) for k, url in enumerate(image_urls)],
            )

    def add_images(self, rows: Iterable[tuple[int, int, str]]) -> None:
        """Add the (object id, index, URL) image rows not there yet (those there keep their URL and state)."""
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany("INSERT OR IGNORE INTO images (object_id, idx, url) VALUES (?, ?, ?)", rows)

    def mark_object(self, object_id: int, status: str, reason: str) -> None:
        self.db.execute("UPDATE objects SET status = ?, reason = ? WHERE object_id = ?", (status, reason, object_id))

    def pending_images(self, ids: list[int]) -> list[tuple[int, int, str]]:
        self.db.execute("UPDATE images SET status = 'pending' WHERE status = 'failed'")
        wanted = set(ids)
        rows = self.db.execute("SELECT object_id, idx, url FROM images WHERE status = 'pending' "
                               "ORDER BY object_id, idx")
        return [r for r in rows if r[0] in wanted]

    def forget_lost_files(self, ids: list[int]) -> list[str]:
        """Images of ``ids`` recorded as stored whose file is no longer in the folder (deleted, moved, a disk
        restored from an older backup) become pending again, to be fetched again; returns their files."""
        wanted = set(ids)
        lost = [(oid, idx, file) for oid, idx, file in self.db.execute(
            "SELECT object_id, idx, file FROM images WHERE status = 'done' ORDER BY object_id, idx")
            if oid in wanted and not (self.folder / file).is_file()]
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany("UPDATE images SET status = 'pending', file = NULL, sha256 = NULL "
                                "WHERE object_id = ? AND idx = ?", [(oid, idx) for oid, idx, _ in lost])
        return [file for _, _, file in lost]

    def image_done(self, object_id: int, idx: int, file: str, sha256: str) -> None:
        self.db.execute("UPDATE images SET status = 'done', file = ?, sha256 = ?, reason = NULL "
                        "WHERE object_id = ? AND idx = ?", (file, sha256, object_id, idx))

    def mark_image(self, object_id: int, idx: int, status: str, reason: str) -> None:
        self.db.execute("UPDATE images SET status = ?, reason = ? WHERE object_id = ? AND idx = ?",
                        (status, reason, object_id, idx))

    def counts(self) -> dict[str, dict[str, int]]:
        out = {}
        for table in ("objects", "images"):
            out[table] = dict(self.db.execute(f"SELECT status, COUNT(*) FROM {table} GROUP BY status").fetchall())
        return out

    def failures(self) -> list[tuple[str, str, str, str]]:
        """(kind, id, status, reason) of everything not done, sorted."""
        rows = [("object", str(oid), st, reason or "") for oid, st, reason in self.db.execute(
            "SELECT object_id, status, reason FROM objects WHERE status IN ('missing', 'failed') ORDER BY object_id")]
        rows += [("image", f"{oid}/{idx} {url}", st, reason or "") for oid, idx, url, st, reason in self.db.execute(
            "SELECT object_id, idx, url, status, reason FROM images WHERE status IN ('missing', 'failed') "
            "ORDER BY object_id, idx")]
        return rows

    def records(self, ids: Iterable[int] | None = None) -> Iterator[tuple[int, dict]]:
        """The stored records (of ``ids`` only, when given: the others are not parsed)."""
        wanted = None if ids is None else set(ids)
        for oid, rec in self.db.execute("SELECT object_id, record FROM objects WHERE record IS NOT NULL "
                                        "ORDER BY object_id"):
            if wanted is None or oid in wanted:
                yield oid, json.loads(rec)


def image_urls(record: dict, which: str, size: str) -> list[str]:
    """URLs to fetch for a record: ``which`` none / primary / all; ``size`` large / small
    (small = ``primaryImageSmall``; additional images exist only in one size). ValueError for a record whose
    image fields are not text (a URL) and a list of text: such a record is that object's failure."""
    if which == "none":
        return []
    for key in ("primaryImage", "primaryImageSmall"):
        if not isinstance(record.get(key) or "", str):
            raise ValueError(f"malformed record: {key} is not text")
    primary = record.get("primaryImageSmall") if size == "small" else record.get("primaryImage")
    primary = primary or record.get("primaryImage") or ""
    urls = [primary] if primary else []
    if which == "all" and primary:
        additional = record.get("additionalImages") or []
        if not (isinstance(additional, list) and all(isinstance(u, str) for u in additional if u)):
            raise ValueError("malformed record: additionalImages is not a list of URLs")
        urls += [u for u in additional if u]
    return list(dict.fromkeys(urls))  # an additional image naming the primary again: one photo, stored once


def _gave_up(exc: MetError) -> str | None:
    """The host of a request that failed every attempt (``GaveUp``), else None."""
    return (urlsplit(exc.url).netloc or exc.url) if isinstance(exc, GaveUp) else None


def _validate_image(data: bytes) -> None:
    try:
        load_image(data, name="download", draft_size=(512, 512))  # a JPEG checked at draft scale, as it is read
    except ImageLoadError as exc:
        raise ValueError(exc.reason) from None


@dataclass
class CrawlSummary:
    objects: dict[str, int] = field(default_factory=dict)
    images: dict[str, int] = field(default_factory=dict)
    failures: list[tuple[str, str, str, str]] = field(default_factory=list)
    requests: int = 0

    def lines(self) -> list[str]:
        out = [
            "objects: " + ", ".join(f"{k} {v}" for k, v in sorted(self.objects.items())),
            "images:  " + ", ".join(f"{k} {v}" for k, v in sorted(self.images.items())),
            f"requests sent: {self.requests}",
        ]
        reasons: dict[str, int] = {}
        for kind, _, _, reason in self.failures:
            key = f"{kind}: {reason.split(' (')[0]}"
            reasons[key] = reasons.get(key, 0) + 1
        for key, n in sorted(reasons.items(), key=lambda kv: -kv[1]):
            out.append(f"  {n:6d}  {key}")
        return out


class Crawler:
    #: requests in a row that each failed every attempt before the crawl stops: with transient faults on a
    #: fraction f of attempts, a request fails all of its (retries + 1) attempts with odds f ** (retries + 1),
    #: and 32 of them in a row do not happen by chance; a blocked address or a dead network does it at once
    STOP_AFTER = 32

    def __init__(self, client: MetClient, folder: str | Path, *, images: str = "primary", image_size: str = "large",
                 workers: int = 8, progress: bool = True, stop_after: int = STOP_AFTER):
        if images not in ("none", "primary", "all"):
            raise ValueError("images must be none, primary or all")
        if image_size not in ("large", "small"):
            raise ValueError("image_size must be large or small")
        self.client = client
        self.folder = Path(folder)
        self.store = CrawlStore(self.folder)
        self.images = images
        self.image_size = image_size
        self.workers = workers
        self.progress = progress
        self.stop_after = stop_after

    def close(self) -> None:
        self.store.close()

    # work items run in worker threads: network and image files only, no database. Each returns (status,
    # record or file, image URLs or reason or hash, the host that gave up: every attempt failed, else None).
    def _fetch_record(self, object_id: int):
        try:
            record = self.client.get_object(object_id)
            return "done", record, image_urls(record, self.images, self.image_size), None
        except NotFound:
            return "missing", None, "ObjectID not found (404)", None
        except MetError as exc:
            return "failed", None, exc.reason, _gave_up(exc)
        except ValueError as exc:  # its image fields
            return "failed", None, str(exc), None

    def _fetch_image(self, object_id: int, idx: int, url: str):
        rel = f"images/{object_id}/{idx}.jpg"
        try:
            data = self.client.get_bytes(url, validate=_validate_image)
        except NotFound:
            return "missing", rel, "image URL answers 404", None
        except MetError as exc:
            return "failed", rel, exc.reason, _gave_up(exc)
        write_bytes_atomic(self.folder / rel, data)
        return "done", rel, hashlib.sha256(data).hexdigest(), None

    def _run(self, items: list, submit: Callable, handle: Callable, desc: str) -> None:
        """Keep at most 4 x workers items in flight; handle results in the main thread. Interrupted (Ctrl-C),
        it drops the items not started and cancels the client's waits and retries, so the process ends once
        the requests under way have answered or timed out, not after every queued item's retries."""
        bar = tqdm(total=len(items), desc=desc, unit="item", disable=not self.progress)
        counts = {"done": 0, "failed": 0}
        refused = 0  # results in a row whose request failed every attempt
        it = iter(items)
        pool = ThreadPoolExecutor(self.workers)
        try:
            running = {}
            for item in it:
                running[submit(pool, item)] = item
                if len(running) >= 4 * self.workers:
                    break
            while running:
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in finished:
                    item = running.pop(fut)
                    result = fut.result()
                    status = handle(item, result)
                    counts["done" if status == "done" else "failed"] += 1
                    bar.set_postfix(counts, refresh=False)
                    bar.update(1)
                    refused = refused + 1 if result[3] else 0
                    if refused >= self.stop_after:
                        raise CrawlStopped(
                            f"stopped: {refused} {desc} in a row failed every attempt (the last: {result[2]}); "
                            f"{result[3]} is refusing requests or cannot be reached. What was fetched is kept: "
                            "run the same command again later to resume")
                    nxt = next(it, None)
                    if nxt is not None:
                        running[submit(pool, nxt)] = nxt
        except BaseException:
            self.client.cancel()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        finally:
            bar.close()
        pool.shutdown()

    def crawl(self, ids: list[int]) -> CrawlSummary:
        store = self.store
        store.add_objects(ids)

        def handle_record(oid, result):
            status, record, extra, _ = result
            if status == "done":
                store.save_record(oid, record, extra)
            else:
                store.mark_object(oid, status, extra)
            return status

        try:
            self._run(store.pending_objects(ids), lambda pool, oid: pool.submit(self._fetch_record, oid),
                      handle_record, "records")
        except CrawlStopped:
            self.export()  # collection.csv and failures.csv as far as the crawl got
            raise
        # objects fetched by an earlier run with fewer images asked for (--images none, then all): theirs too
        rows = []
        for oid, record in store.records(ids):
            try:
                rows += [(oid, k, url) for k, url in enumerate(image_urls(record, self.images, self.image_size))]
            except ValueError as exc:  # stored by a run that asked for no images: fetched again next time
                store.mark_object(oid, "failed", str(exc))
        store.add_images(rows)

        def handle_image(row, result):
            status, rel, extra, _ = result
            if status == "done":
                store.image_done(row[0], row[1], rel, extra)
            else:
                store.mark_image(row[0], row[1], status, extra)
            return status

        lost = store.forget_lost_files(ids)
        if lost:
            log.warning("%s: %d stored image(s) no longer there, fetched again: %s", self.folder, len(lost),
                        first_names(lost, 5))
        pending = store.pending_images(ids)
        self._sweep(pending)
        try:
            self._run(pending, lambda pool, row: pool.submit(self._fetch_image, *row), handle_image, "images")
        except CrawlStopped:
            self.export()
            raise
        self.export()
        counts = store.counts()
        return CrawlSummary(counts["objects"], counts["images"], store.failures(), self.client.requests_sent)

    def _sweep(self, pending: list[tuple[int, int, str]]) -> None:
        """Remove the half-written image files of a crawl killed outright (kill -9, power cut). Each is an
        image still pending, as its result never reached the database, so only those objects' folders are
        listed. The folder's lock is held: no other crawl can be writing, whatever the files' age."""
        for folder in [self.folder] + [self.folder / "images" / str(oid) for oid in sorted({r[0] for r in pending})]:
            if folder.is_dir():
                sweep_stale(folder, min_age=0)

    def export(self) -> None:
        export_collection(self.store, self.folder)


def export_collection(store: CrawlStore, folder: Path) -> None:
    """Write collection.csv and failures.csv: sorted, no timestamps, so equal crawls give equal bytes.
    The rows stream from the database to the file, one object's record parsed at a time: holding every
    record at once took ~15 KB of memory per object (1.5 GB for 100,000; BENCHMARKS.md)."""
    with atomic_path(folder / "collection.csv") as tmp, open(tmp, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["path", "object_id", "image_index", "image_kind", "url", "sha256"] + RECORD_FIELDS)
        last, rec = None, {}
        for oid, idx, url, file, sha, record in store.db.execute(
                "SELECT i.object_id, i.idx, i.url, i.file, i.sha256, o.record FROM images i LEFT JOIN objects o "
                "ON o.object_id = i.object_id WHERE i.status = 'done' ORDER BY i.object_id, i.idx"):
            if oid != last:
                last, rec = oid, json.loads(record) if record else {}
            w.writerow([file, oid, idx, "primary" if idx == 0 else "additional", url, sha]
                       + [_cell(rec.get(f)) for f in RECORD_FIELDS])
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["kind", "id", "status", "reason"])
    w.writerows(store.failures())
    write_bytes_atomic(folder / "failures.csv", buf.getvalue().encode())


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
