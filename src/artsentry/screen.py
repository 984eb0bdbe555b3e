"""Screen listing photos at scale: ``artsentry screen INPUT --out DIR``.

INPUT is a folder of images, or a table of listings (CSV, TSV, JSON, JSONL, Parquet or XLSX: its first sheet)
with one image per row in a column named ``image``, ``image_path``,
``image_url``, ``path``, ``file``, ``url`` or ``photo``; every other column
(listing id, title, price, seller...) is carried through to the outputs (one named like an
output column, e.g. a seller's ``label`` or ``score``, as ``input_label``, ``input_score``).
Relative paths are read against the table's folder; ``http(s)://`` images are
fetched only with ``fetch_urls``, from public addresses unless ``fetch_private`` (``artsentry.fetch``),
once per run however many rows name them (``fetch_once``), and kept, by their SHA-256, with ``keep_fetched``.

For each image: the model's probability and decision at its threshold, the
register's best matches when a register is given, and the photo's quality
(``data.quality``: sharpness, noise, brightness, size, and warnings when it is blurred,
grainy, dark, small or narrow, so a decision on it is weak evidence). Outputs in DIR:

- ``evidence.jsonl``  one record per image, appended as batches finish: row,
  listing id, image, its SHA-256, model name, version (SHA-256 of the weights),
  threshold and runtime, time, decision, matches, or the reason it was
  unreadable. A run killed at any moment (even ``kill -9``) and restarted
  skips the rows already recorded; a half-written last line is dropped and
  redone, so no image is recorded twice. A finished run's table with rows
  appended (the first rows unchanged), or folder with files added, screens only
  the new ones. Before a run goes on (resumed, grown or run again), the screened
  files are hashed again and a run whose files no longer hold what was screened is refused.
  Each record carries the SHA-256 of the line before it (``prev``, ``chainlog``): the hash of the
  last line (``evidence_head`` in summary.json, printed by ``artsentry verify``) stands for every
  record up to it.
- ``results.csv``  every row (``quality_warnings``: why a photo is weak
  evidence, empty when it is not; ``shared_with``: how many other listings hold the same photo,
  byte for byte, and ``shared_with_ids`` some of them); ``queue.csv`` the ranked review queue (register
  matches first, then by probability), one row per photo; ``listings.csv`` one
  row per listing id, ranked the same way (``status``: review, not screened, partly
  screened or clear; ``weak_photos``: how many of its photos have a quality warning; ``shared_with``:
  its photo found in the most other listings, how many); ``queue.html`` the queue with
  thumbnails, one card per listing; ``errors.csv`` the unreadable images with
  their reason; ``summary.json``.
  These are written from the evidence log at the end, so an interrupted and
  resumed run writes the same files as an uninterrupted one.

Decoding runs in worker processes while the model runs on batches (ONNX
Runtime when the model has been exported, see ``artsentry export``).
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from . import __version__, chainlog
from .data.dataset import make_loader
from .data.images import ImageLoadError, find_images, image_format, load_image, read_image_bytes
from .data.manifest import (ADDITIONAL_PHOTO_COLUMNS, TABLE_SUFFIXES, ManifestError, Pictures, _pick, _read_table,
                            carried_names, paths_hint, photo_columns, photos_in, refuse_image_objects, table_path)
from .data.quality import assess_quality, quality_warnings, warnings_text
from .data.transforms import eval_transform
from .errors import ArtsentryError
from .fetch import FETCH_THREADS, fetch_image, is_http_url  # light: the HTTP client is imported only to fetch
from .files import (exclusive, file_sha256, formula_from_text, read_json_object, write_bytes_atomic, write_csv_atomic,
                    write_text_atomic)
from .htmlembed import thumbnail_uri
from .inference import Predictor, default_workers
from .lots import TILE_GRID, LotTransform, crops_forward, decode_draft, lot_threshold, tile_fractions

log = logging.getLogger(__name__)

#: a listing's photo column (first found), or its photos' (a scraper's ``image_urls`` list: a photo a value)
IMAGE_COLUMNS = ("image", "image_path", "image_url", "image_urls", "images", "path", "file", "url", "photo", "photos",
                 "picture", "pictures")
ID_COLUMNS = ("listing_id", "id", "listing", "item_id")  # item_id: eBay's itemId
EVIDENCE = "evidence.jsonl"
ENGINES = ("local", "ray")
STATE = "screen.json"
PICTURES = "pictures"  # in a screening's folder: the pictures of a workbook's photo cells, as <SHA-256>.<format>
OUTPUTS = ("results.csv", "queue.csv", "queue.html", "errors.csv", "listings.csv", "summary.json")  # made at the end
#: what of a register's description (``Screener.register_info``) says its state, not which register it is:
#: a run goes on when it changed (with a warning), not when another register is given
REGISTER_STATE = ("objects", "changes", "changed")
#: the columns screening writes into results.csv, queue.csv and listings.csv: an input column of
#: one of these names (a seller's "label", "score" or "status") is carried as ``input_<name>``, never
#: over the decision
OUTPUT_COLUMNS = frozenset((
    "rank", "row", "listing_id", "image", "sha256", "label", "score", "flagged", "culture", "culture_score",
    "matched", "best_match", "best_match_score", "best_match_similarity", "best_match_status", "quality_warnings",
    "lot_tile_box", "lot_whole_score", "best_match_tile_box", "shared_with", "shared_with_ids", "kept_file", "error",
    "review", "status", "photos", "unreadable", "flagged_photos", "matched_photos", "weak_photos", "max_score",
    "max_score_image", "best_match_image", "first_row"))


class ScreenError(ArtsentryError, RuntimeError):
    pass


# -- input ---------------------------------------------------------------------------------
def read_listings(source: str | Path, group_folders: bool = False, skip: Sequence[str | Path] = (),
                  pictures: Pictures | None = None) -> pd.DataFrame:
    """The listings to screen: columns ``listing_id`` and ``image`` (absolute path or
    URL) first, then whatever else the input carries, as strings.

    From a folder each photo is its own listing (its path relative to the folder is the id),
    unless ``group_folders``: then the photos of one sub-folder are one listing, whose id is
    that sub-folder's path relative to ``source`` (a scrape saved as ``<listing id>/<n>.jpg``);
    photos lying in ``source`` itself stay one listing each; ``skip``: folders inside it not searched (the run's
    own ``--out``). A table groups by its id column; a workbook's pictures placed on its photo cells are their
    photos, named and kept by ``pictures`` (``manifest._xlsx_pictures``; the caller writes them)."""
    source = Path(source)
    if not source.exists():
        raise ScreenError(f"{source}: no such file or folder")
    if source.is_dir():
        not_utf8: list[str] = []
        files = find_images(source, not_utf8=not_utf8, skip=skip)
        if not files:
            raise ScreenError(f"{source}: no image files in folder"
                              + (f" with a UTF-8 name ({len(not_utf8)} without one, e.g. {not_utf8[0]})"
                                 if not_utf8 else ""))
        rel = [f.relative_to(source) for f in files]
        ids = [r.parent.as_posix() if group_folders and r.parent != Path(".") else r.as_posix() for r in rel]
        out = pd.DataFrame({"listing_id": ids, "image": [str(f.resolve()) for f in files]})
        out.attrs["not_utf8"] = not_utf8  # photos left out: the run's summary names them (Screener.run)
        return out
    if group_folders:
        raise ScreenError(f"{source}: grouping by folder applies to a folder of images; a table groups "
                          f"photos by its {'/'.join(ID_COLUMNS)} column")
    if source.suffix.lower() not in TABLE_SUFFIXES:
        raise ScreenError(f"{source}: give a folder of images or a {', '.join(TABLE_SUFFIXES)} table of listings")
    try:
        raw = _read_table(source, lists=IMAGE_COLUMNS + ADDITIONAL_PHOTO_COLUMNS, as_json=True,  # others: carried
                          pictures=pictures)
        image_cols = photo_columns(raw.columns, IMAGE_COLUMNS, "image", str(source), more=ADDITIONAL_PHOTO_COLUMNS)
        refuse_image_objects(raw, image_cols, source)
    except ManifestError as exc:
        raise ScreenError(str(exc)) from None
    if raw.empty:
        raise ScreenError(f"{source}: no listings")
    id_col = _pick(raw.columns, ID_COLUMNS, "listing id", str(source), required=False)
    base = source.parent.resolve()
    ids = [str(i) for i in range(len(raw))]
    if id_col:  # a row without an id is its own listing, not one listing with every other such row
        ids = [v if v.strip() else f"(no id, row {i + 1})" for i, v in enumerate(raw[id_col])]
        missing = sum(not v.strip() for v in raw[id_col])
        if missing:
            log.warning("%s: %d row(s) without a %s: each is its own listing, named '(no id, row N)'", source,
                        missing, id_col)
    photos = [photos_in(v, image_cols) for v in raw[image_cols].to_dict("records")]
    images = [x for p in photos for x in (p or [""])]  # a row naming none stays, as its error
    if len(images) > len(raw):  # several photos a row (IMAGE1...IMAGE10, a scraper's list): a row each
        rows = [i for i, p in enumerate(photos) for _ in (p or [""])]
        raw, ids = raw.iloc[rows].reset_index(drop=True), [ids[i] for i in rows]
    hint, every = paths_hint(images, base)
    if every:  # every photo would be an error, in a run's evidence for good
        raise ScreenError(f"{source}: {hint}; nothing was screened")
    if hint:
        log.warning("%s: %s", source, hint)
    # a title "=HYPERLINK(...)" is written "'=HYPERLINK(...)" (formula_as_text): read back as it was given
    out = pd.DataFrame({"listing_id": [formula_from_text(v) for v in ids],
                        "image": [table_path(p, base) for p in images]})
    rest = raw.drop(columns=[c for c in (id_col, *image_cols) if c]).map(formula_from_text)
    return pd.concat([out, rest.rename(columns=carried_names(rest.columns, OUTPUT_COLUMNS))], axis=1)


def _describe_changes(old: dict, new: dict, changed: list[str]) -> str:
    """What differs between a screening run's saved state and this one, in words."""
    def name(info):
        return "none" if not info else f"{info.get('name', '?')} {str(info.get('version', ''))[:16]}".strip()

    def model(key: str, what: str) -> str:
        then, now = old.get(key), new.get(key)
        if not then or not now or name(then) != name(now):
            return f"another {what} ({name(then)}, not {name(now)})"
        # the same weights, read from another folder or with another threshold or runtime: say which
        return f"the {what} {name(now)} with another {differing(then, now)}"

    def differing(then: dict, now: dict) -> str:
        fields = [k for k in sorted(set(then) | set(now)) if then.get(k) != now.get(k)]
        return f"{', '.join(fields)} (" + "; ".join(f"{then.get(k)} then, {now.get(k)} now" for k in fields) + ")"

    def register() -> str:
        then, now = old.get("register") or {}, new.get("register") or {}
        if not then or not now or then.get("path") != now.get("path"):
            return f"another register ({then.get('path', 'none')}, not {now.get('path', 'none')})"
        # the same register, its threshold set or its embedder changed since: say which
        return f"the register {now['path']} with another {differing(then, now)}"

    words = {
        "input": lambda: f"another input ({old.get('input')}, not {new.get('input')})",
        "group_folders": lambda: "another --group-folders choice",
        "fingerprint": lambda: ("the same input with other content "
                                f"({old.get('rows')} rows then, {new.get('rows')} now)" if old.get('rows') != new.get('rows')
                                else "the same input with other content (rows changed)"),
        "model": lambda: model("model", "model"),
        "culture_model": lambda: model("culture_model", "culture model"),
        "register": register,
        "k": lambda: f"another --top-k ({old.get('k')}, not {new.get('k')})",
        "lots": lambda: "another --lots choice (or lot threshold)",
    }
    return "; ".join(words[k]() for k in changed)


def table_fingerprint(df: pd.DataFrame) -> str:
    return hashlib.sha256(pd.util.hash_pandas_object(df, index=True).values.tobytes()).hexdigest()[:16]


# -- images ----------------------------------------------------------------------------------
ONCE_DIR = ".fetched-repeats"  # in a screening's folder while it runs: URLs named by several rows (fetch_once)


def fetch_once(url: str, folder: Path, fetch) -> bytes:
    """``fetch()``'s answer for ``url``, asked once per screening however many rows name it: the first
    worker to need it fetches it, holding a lock file, and leaves its bytes (or its error) in ``folder``
    for every other row. A marketplace's "no photo" placeholder, named by thousands of listings, was
    fetched for each of them; a host that never answers cost a minute a row."""
    import fcntl

    key = hashlib.sha256(url.encode("utf-8")).hexdigest()
    data_path, error_path = folder / key, folder / f"{key}.error"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{key}.lock", "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # another worker fetching it: wait for its answer
        if data_path.is_file():
            return data_path.read_bytes()
        if error_path.is_file():
            raise ImageLoadError(url, error_path.read_text(encoding="utf-8"))
        try:
            data = fetch()
        except ImageLoadError as exc:
            write_text_atomic(error_path, exc.reason)
            raise
        write_bytes_atomic(data_path, data)
        return data


def kept_file(keep_dir: str | Path, sha256: str, data: bytes) -> Path:
    """Where a fetched image is kept: ``<keep_dir>/<first 2 hex digits>/<SHA-256>.<format>``, by its
    content, so the same photo from several listings is kept once."""
    return Path(keep_dir) / sha256[:2] / f"{sha256}.{image_format(data) or 'bin'}"


def kept_files(keep_dir: str | Path | None) -> dict[str, Path]:
    """The images kept in ``keep_dir`` (``keep_fetched``) by SHA-256, from one scan of the folder (a run's
    outputs and ``verify`` look up every fetched row in it); half-written ``.tmp`` files left out."""
    if keep_dir is None or not Path(keep_dir).is_dir():
        return {}
    return {p.name.split(".", 1)[0]: p for p in sorted(Path(keep_dir).glob("??/*")) if not p.name.startswith(".")}


def keep_fetched(keep_dir: str | Path, sha256: str, data: bytes) -> None:
    """Keep the bytes of a fetched image (``kept_file``), written whole or not at all."""
    path = kept_file(keep_dir, sha256, data)
    if not path.exists():
        write_bytes_atomic(path, data)


class ListingImages(Dataset):
    """Row i -> (tensors for each transform, i, image SHA-256, error, photo quality).
    Unreadable -> error (and no quality). ``keep_dir``: fetched images' bytes are kept there
    (``keep_fetched``), readable or not: the listing may be gone tomorrow. A batch's URLs are fetched
    together, ``FETCH_THREADS`` at a time (``__getitems__``, which the loader calls with a batch's rows)."""

    def __init__(self, sources: Sequence[str], transforms: Sequence, draft_size, *, fetch_urls: bool = False,
                 keep_dir: str | Path | None = None, fetch_private: bool = False, once_dir: Path | None = None):
        self.sources = list(sources)
        # URLs several rows name, fetched once into ``once_dir`` (``fetch_once``); without it, once per row
        self.once_dir = once_dir
        self.repeated: set[str] = set()
        if once_dir is not None:
            counts = pd.Series(self.sources, dtype=object).value_counts()
            self.repeated = {u for u, n in counts.items() if n > 1 and is_http_url(u)}
        self.transforms = list(transforms)
        self.draft_size = draft_size
        self.fetch_urls = fetch_urls
        self.fetch_private = fetch_private
        self.keep_dir = keep_dir

    def __len__(self) -> int:
        return len(self.sources)

    def read(self, i: int) -> bytes:
        src = self.sources[i]
        if not src:
            raise ImageLoadError(f"<row {i}>", "no image given")
        if is_http_url(src):
            if not self.fetch_urls:
                raise ImageLoadError(src, "image URLs are fetched only with --fetch-urls")
            if src in self.repeated:
                return fetch_once(src, self.once_dir, lambda: fetch_image(src, allow_private=self.fetch_private))
            return fetch_image(src, allow_private=self.fetch_private)
        if "://" in src:
            raise ImageLoadError(src, "unsupported URL scheme")
        return read_image_bytes(src, src)

    def _read_or_error(self, i: int) -> bytes | ImageLoadError:
        try:
            return self.read(i)
        except ImageLoadError as exc:
            return exc

    def __getitems__(self, indices: list[int]) -> list:
        """The items of a batch's rows, in their order: its image URLs fetched at once first (when asked to)."""
        url_rows = [i for i in indices if self.fetch_urls and is_http_url(self.sources[i])]
        fetched = {}
        if len(url_rows) > 1:
            with ThreadPoolExecutor(min(FETCH_THREADS, len(url_rows))) as pool:
                fetched = dict(zip(url_rows, pool.map(self._read_or_error, url_rows)))
        return [self._item(i, fetched[i] if i in fetched else self._read_or_error(i)) for i in indices]

    def __getitem__(self, i: int):
        return self._item(i, self._read_or_error(i))

    def _item(self, i: int, data: bytes | ImageLoadError):
        sha = None
        try:
            if isinstance(data, ImageLoadError):
                raise data
            sha = hashlib.sha256(data).hexdigest()
            if self.keep_dir is not None and "://" in self.sources[i]:
                keep_fetched(self.keep_dir, sha, data)
            img = load_image(data, name=self.sources[i], draft_size=self.draft_size)
            return [t(img) for t in self.transforms], i, sha, "", assess_quality(img).to_dict()
        except ImageLoadError as exc:
            return None, i, sha, str(exc), None


@dataclass
class ListingBatch:
    xs: list[torch.Tensor]  # one (n, 3, S, S) tensor per transform
    index: list[int]
    sha: dict[int, str | None]
    errors: list[tuple[int, str]]
    quality: dict[int, dict] = field(default_factory=dict)  # data.quality.PhotoQuality.to_dict() per readable row


def collate_listings(items) -> ListingBatch:
    good = [it for it in items if it[0] is not None]
    n_t = len(good[0][0]) if good else 0
    xs = [torch.stack([it[0][t] for it in good]) for t in range(n_t)]
    return ListingBatch(xs, [it[1] for it in good], {it[1]: it[2] for it in items},
                        [(it[1], it[3]) for it in items if it[0] is None], {it[1]: it[4] for it in good})


# -- evidence log ----------------------------------------------------------------------------
def _scan_evidence(path: Path) -> tuple[list[dict], list[int]]:
    """Complete records of an evidence log and the byte offset where each one ends.
    A last line cut short by a kill is left out; a bad line before the end is an error."""
    if not path.is_file():
        return [], []
    return _parse_evidence(path.read_bytes(), path)


def _parse_evidence(data: bytes, path: Path) -> tuple[list[dict], list[int]]:
    """``_scan_evidence`` of a log's bytes (``path`` names it in errors)."""
    records, ends, pos = [], [], 0
    while pos < len(data):
        nl = data.find(b"\n", pos)
        if nl < 0:
            break  # unterminated tail: written half-way
        try:
            records.append(json.loads(data[pos:nl]))
        except json.JSONDecodeError:
            if data.find(b"\n", nl + 1) >= 0:  # a bad line in the middle is not a torn write
                raise ScreenError(f"{path}: corrupt record at byte {pos}; not resuming over it") from None
            break
        pos = nl + 1
        ends.append(pos)
    return records, ends


def read_evidence(path: str | Path) -> list[dict]:
    """The complete records of an evidence log (a torn last line is left out)."""
    return _scan_evidence(Path(path))[0]


def _grew_from(old: dict, listings: pd.DataFrame, records: list[dict]) -> bool:
    """True when ``listings`` is a finished run's input with rows appended: more rows, the first
    ones as they were (same fingerprint), and every one of those recorded in the evidence log
    (its ``records``)."""
    n = old.get("rows")
    if not isinstance(n, int) or not 0 < n < len(listings):
        return False
    if table_fingerprint(listings.iloc[:n]) != old.get("fingerprint"):
        return False
    return [r.get("row") for r in records] == list(range(n))


def _folder_in_screened_order(listings: pd.DataFrame, records: list[dict], n_old) -> pd.DataFrame | None:
    """A screened folder's rows in the order they were screened: the photos of the evidence log
    (its ``records``) first, as recorded, then any new files (sorted). A folder lists its files sorted, so files added
    after a run land between screened ones; in this order the run's rows come first, and
    ``_grew_from`` can check them; a grown run, finished or not, reads as it was then. None when the
    log is empty or holds more than the run's ``n_old`` rows, or a photo it recorded is no longer in
    the folder (same listing id, same path)."""
    if not isinstance(n_old, int) or not 0 < len(records) <= n_old <= len(listings) \
            or [r.get("row") for r in records] != list(range(len(records))):
        return None
    where = {k: i for i, k in enumerate(zip(listings["listing_id"], listings["image"]))}
    old = [where.get((r.get("listing_id"), r.get("image"))) for r in records]
    if None in old or len(set(old)) != len(old):
        return None
    seen = set(old)
    order = old + [i for i in range(len(listings)) if i not in seen]
    return listings.iloc[order].reset_index(drop=True)


def _check_photos(records: list[dict], keep_dir: str | Path | None = None, progress: bool = False,
                  desc: str = "checking screened photos", refetch: bool = False, fetch_private: bool = False,
                  threads: int = 8) -> dict:
    """Hash again the photos of evidence ``records``: each local file, and each fetched photo's kept copy
    in ``keep_dir``, against the SHA-256 its record holds; with ``refetch``, a fetched photo without a kept
    copy is fetched again (``threads`` at a time; public addresses only unless ``fetch_private``). Records
    without a SHA-256 (the bytes could not be read then: missing, empty, oversized) carry their error, not
    a decision, and are only counted. Returns counts (``verified``, ``changed``, ``missing``, ``not_kept``,
    ``unread``; with ``refetch`` also ``gone``: the URL now answers 404 or 410; ``placeholder``: it shows
    the very image other listings screened with other photos now show too, the shop's "no longer
    available" picture, not a photo the seller changed; and ``unreachable``: it could not be fetched
    otherwise) and the paths or URLs changed, missing, gone, placeholder or unreachable
    (``changed_photos``, ``missing_photos``, ...)."""
    counts = dict.fromkeys(("verified", "changed", "missing", "not_kept", "unread"), 0)
    found: dict[str, list[str]] = {"changed": [], "missing": []}
    if refetch:
        counts.update(gone=0, placeholder=0, unreachable=0)
        found.update(gone=[], placeholder=[], unreachable=[])
    kept = kept_files(keep_dir)
    urls: list[tuple[str, str]] = []  # fetched photos without a kept copy, to fetch again
    for r in tqdm(records, desc=desc, unit="img", disable=not progress):
        image, sha = r.get("image") or "", r.get("sha256")
        if not sha or not image:
            counts["unread"] += 1
            continue
        path = image if "://" not in image else kept.get(sha)
        if path is None:
            if refetch:
                urls.append((image, sha))
            else:
                counts["not_kept"] += 1
            continue
        try:
            what = "verified" if file_sha256(path) == sha else "changed"
        except OSError:
            what = "missing"
        counts[what] += 1
        if what != "verified":
            found[what].append(str(path))
    if urls:
        from concurrent.futures import ThreadPoolExecutor

        def again(url: str) -> tuple[str | None, str | None]:
            """(None, SHA-256 of what the URL holds now), or (gone / unreachable, None)."""
            try:
                return None, hashlib.sha256(fetch_image(url, allow_private=fetch_private)).hexdigest()
            except ImageLoadError as exc:
                return ("gone" if exc.reason in ("HTTP 404", "HTTP 410") else "unreachable"), None

        unique = list(dict.fromkeys(url for url, _ in urls))  # a URL several listings name: fetched once
        with ThreadPoolExecutor(max(1, threads)) as pool:
            answers = dict(zip(unique, tqdm(pool.map(again, unique), total=len(unique), desc="fetching again",
                                            unit="img", disable=not progress)))
        fetched = []
        for url, sha in urls:
            failed, now = answers[url]
            fetched.append((failed, None) if failed else ("verified" if now == sha else "changed", now))
        # one image now shown under listings that showed different photos: the shop's placeholder
        was: dict[str, set[str]] = {}
        for (_, sha), (what, now) in zip(urls, fetched):
            if what == "changed":
                was.setdefault(now, set()).add(sha)
        for (url, _), (what, now) in zip(urls, fetched):
            if what == "changed" and len(was[now]) > 1:
                what = "placeholder"
            counts[what] += 1
            if what != "verified":
                found[what].append(url)
    return {**counts, **{f"{k}_photos": v for k, v in found.items()}}


def _changed_since(records: list[dict], progress: bool = False) -> list[str]:
    """The local photos of ``records`` whose files no longer hold what was screened. Files gone are not
    counted here (a folder's gone files are refused apart; a table may point anywhere), nor URLs."""
    return _check_photos(records, progress=progress)["changed_photos"]


def _gone_from_folder(listings: pd.DataFrame, records: list[dict]) -> str:
    """Words on the screened photos (``records``) a folder no longer holds (under their listing ids), for a
    refusal."""
    have = set(zip(listings["listing_id"], listings["image"]))
    gone = [r.get("image") for r in records if (r.get("listing_id"), r.get("image")) not in have]
    return f": {len(gone)} screened photo(s) no longer there, e.g. {gone[0]}" if gone else ""


def _resume_point(path: Path, batch_size: int, n_rows: int) -> list[dict]:
    """Rows are recorded in order, a batch at a time. Keep only whole batches (cutting a
    batch that a kill left half-written), so a resumed run meets every image in the same
    batch as an uninterrupted run and computes bit-identical scores. Returns the records kept."""
    records, ends = _scan_evidence(path)
    rows = [r.get("row") for r in records]
    if rows != list(range(len(rows))):
        raise ScreenError(f"{path}: records are not the rows 0..n in order; not resuming over it")
    keep = len(rows) if len(rows) >= n_rows else len(rows) - len(rows) % batch_size
    size = ends[keep - 1] if keep else 0
    if path.is_file() and path.stat().st_size != size:
        with open(path, "r+b") as f:
            f.truncate(size)
    return records[:keep]


def _flagged_and_unreadable(records: list[dict]) -> tuple[int, int]:
    """The progress bar's counts over evidence records: photos to review (flagged or matched), unreadable."""
    return (sum(bool(r.get("flagged") or r.get("matched")) for r in records),
            sum(r.get("error") is not None for r in records))


def _refuse_changed(out: Path, records: list[dict], progress: bool) -> None:
    """Refuse to go on from a run whose screened photos (``records``) no longer hold what was screened:
    their recorded decisions would stand for content that is not there any more."""
    stale = _changed_since(records, progress)
    if stale:
        raise ScreenError(f"{out}: {len(stale)} photo(s) screened there have changed since (e.g. {stale[0]}): "
                          "their decisions are of what the files held then; use --overwrite or another --out")


def _read_state(path: Path, remedy: str) -> dict:
    """A run's record (``STATE``), or ``ScreenError`` naming it when it is not a JSON object (cut short,
    edited): JSON's bare 'Expecting property name...' named no file."""
    try:
        return read_json_object(path)
    except ValueError as exc:
        raise ScreenError(f"{path}: the screening run's record is damaged{f' ({exc})' if str(exc) else ''}; "
                          f"{remedy}") from None


# -- the run ---------------------------------------------------------------------------------
class Screener:
    """Model (and optionally register) applied to listings, batch by batch, with an
    evidence log that makes the run resumable."""

    def __init__(self, model_dir: str | Path | None, register_dir: str | Path | None = None, *,
                 culture_dir: str | Path | None = None,
                 runtime: str = "auto", k: int = 5, batch_size: int = 32, num_workers: int | None = None,
                 fetch_urls: bool = False, progress: bool = True, ray_address: str | None = None,
                 ray_workers: int = 1, ray_cpus_per_worker: float = 1.0, explain: int = 50, lots: bool = False,
                 keep_fetched: str | Path | None = None, fetch_private: bool = False):
        if model_dir is None and register_dir is None and culture_dir is None:
            raise ScreenError("give a model, a culture model, a register, or several")
        # what a Ray worker needs to build the same screener on its machine
        self.settings = {"model_dir": str(model_dir) if model_dir else None,
                         "register_dir": str(register_dir) if register_dir else None,
                         "culture_dir": str(culture_dir) if culture_dir else None,
                         "runtime": runtime, "k": k, "fetch_urls": fetch_urls, "lots": lots,
                         "keep_fetched": str(Path(keep_fetched).resolve()) if keep_fetched else None,
                         "fetch_private": fetch_private}
        self.ray_address, self.ray_workers, self.ray_cpus_per_worker = ray_address, ray_workers, ray_cpus_per_worker
        self.predictor = Predictor.load(model_dir, runtime=runtime, batch_size=batch_size) if model_dir else None
        # a second, multi-class model (e.g. culture of a painting): its label is reported, it never flags
        self.culture = Predictor.load(culture_dir, runtime=runtime, batch_size=batch_size) if culture_dir else None
        if self.culture is not None and self.culture.binary:
            raise ScreenError(f"{culture_dir} is a two-class model; --culture-model takes a multi-class one "
                              "(e.g. artsentry build culture, then train)")
        self.register = None
        if register_dir is not None:
            from .index.register import Register, RegisterError

            self.register = Register.open(register_dir)
        self.k = k
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.fetch_urls = fetch_urls
        self.fetch_private = fetch_private
        self.keep_dir = Path(keep_fetched).resolve() if keep_fetched else None
        self.progress = progress
        self.explain = explain
        self.model_info = self.predictor.info() if self.predictor is not None else None
        self.culture_info = self.culture.info() if self.culture is not None else None
        # lots: the model reads each photo whole and in tiles (``lots``), at its lot threshold
        # (and the register searches the crops, ``Register.search_tiles``, at its lot threshold)
        self.lots = None
        if lots:
            self.lots = {"grid": TILE_GRID}
            if self.predictor is not None:
                if not self.predictor.binary:
                    raise ScreenError("--lots needs a two-class model with a positive label")
                try:
                    threshold, grid = lot_threshold(self.predictor.config)
                except ValueError as exc:
                    raise ScreenError(f"{model_dir}: {exc}") from None
                self.lots.update(threshold=threshold, grid=grid)
            if self.register is not None:
                try:
                    self.lots["register_threshold"] = self.register.required_lot_threshold()
                except RegisterError as exc:
                    raise ScreenError(f"{register_dir}: {exc}") from None
        tiles = self.lots["grid"] if self.lots is not None else None
        # one decoded photo feeds each distinct (preprocessing, tiles) once: the model's, the culture
        # model's (always whole) and the embedder's, when they differ
        keys: list = []
        self.transforms: list = []

        def slot(pre, grid=None) -> int:
            if (pre, grid) not in keys:
                keys.append((pre, grid))
                self.transforms.append(eval_transform(pre) if grid is None else LotTransform(eval_transform(pre), grid))
            return keys.index((pre, grid))

        self._model_slot = slot(self.predictor.preprocessing, tiles) if self.predictor is not None else None
        self._culture_slot = slot(self.culture.preprocessing) if self.culture is not None else None
        self._register_slot = slot(self.register.embedder.preprocessing, tiles) if self.register is not None else None
        self.draft_size = decode_draft(keys)  # tiles decoded large enough to keep their detail
        self.register_info = None
        if self.register is not None:
            info = self.register.info()
            self.register_info = {"path": str(Path(register_dir).resolve()),
                                  **{k: info[k] for k in ("objects", "threshold", "embedder", "changes", "changed")}}
            if self.lots is None and info["threshold"] is None and info["objects"]:
                log.warning("the register has no no-match threshold: its matches are listed (results.csv) and none "
                            "decided, so no photo goes to review for one ('artsentry register calibrate')")

    def _records(self, rows: pd.DataFrame, batch: ListingBatch, carried: list[str]) -> list[dict]:
        """Evidence records of one batch; ``rows`` is indexed by row number."""
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        out: dict[int, dict] = {}
        base = {"model": self.model_info, "culture_model": self.culture_info, "register": self.register_info}
        for i, err in batch.errors:
            out[i] = {"error": err}
        for i, q in batch.quality.items():
            out.setdefault(i, {})["quality"] = q
        if batch.index:
            if self.predictor is not None and self.lots is not None and "threshold" in self.lots:
                probs = crops_forward(self.predictor.proba_tensor, batch.xs[self._model_slot], self.predictor.batch_size)
                pos = probs[..., self.predictor.positive_index]
                boxes = [None] + tile_fractions(self.lots["grid"])
                for i, pr, p in zip(batch.index, probs, pos):
                    k = int(np.argmax(p))
                    d = self.predictor.decide(rows.at[i, "image"], pr[k], threshold=self.lots["threshold"])
                    out.setdefault(i, {}).update({**_decision(d), "flagged": d.flagged, "lot": {
                        "threshold": self.lots["threshold"], "whole": round(float(p[0]), 6), "tile": k,
                        "box": boxes[k]}})
            elif self.predictor is not None:
                probs = self.predictor.proba_tensor(batch.xs[self._model_slot])
                for i, pr in zip(batch.index, probs):
                    d = self.predictor.decide(rows.at[i, "image"], pr)
                    out.setdefault(i, {}).update({**_decision(d), "flagged": d.flagged})
            if self.culture is not None:
                probs = self.culture.proba_tensor(batch.xs[self._culture_slot])
                for i, pr in zip(batch.index, probs):
                    out.setdefault(i, {})["culture"] = _decision(self.culture.decide(rows.at[i, "image"], pr))
            if self.register is not None:
                from .index.register import is_match

                x = batch.xs[self._register_slot]
                if self.lots is not None:  # every photo's crops searched together
                    vecs = crops_forward(self.register.embedder.embed_tensor, x, self.register.embedder.batch_size)
                    found = [self.register.search_tiles(v, self.k) for v in vecs]
                    th = self.lots["register_threshold"]
                else:
                    found = self.register.search_vectors(self.register.embedder.embed_tensor(x), self.k)
                    th = self.register.threshold
                for i, matches in zip(batch.index, found):
                    rec = out.setdefault(i, {})
                    rec["matches"] = [{"object_id": m.object_id, "score": m.score, "similarity": m.similarity,
                                       "title": m.title, "status": m.status,
                                       **({"box": m.box} if self.lots is not None else {})} for m in matches]
                    # None: undecided (no threshold): the matches are shown and the photo is not counted matched
                    rec["matched"] = is_match(matches, th)
        records = []
        for i in sorted(out):
            row = rows.loc[i]
            records.append({"row": int(i), "listing_id": row["listing_id"], "image": row["image"],
                            "sha256": batch.sha.get(i), "time": now, **base, "error": None, **out[i],
                            "listing": {c: row[c] for c in carried}})
        return records

    def screen_rows(self, part: pd.DataFrame, batch_size: int, carried: list[str], num_workers: int | None = None,
                    once_dir: Path | None = None):
        """Yield the evidence records of ``part`` (listings indexed by row number), one list
        per batch, in row order; images decode in ``num_workers`` processes. ``once_dir``: a URL several
        rows name is fetched once, its answer shared there (``fetch_once``)."""
        rows = part.index.tolist()
        dataset = ListingImages(part["image"].tolist(), self.transforms, self.draft_size, fetch_urls=self.fetch_urls,
                                keep_dir=self.keep_dir, fetch_private=self.fetch_private, once_dir=once_dir)
        workers = num_workers if num_workers is not None else default_workers(len(part))
        for b in make_loader(dataset, batch_size, num_workers=workers, collate_fn=collate_listings):
            batch = ListingBatch(b.xs, [rows[i] for i in b.index], {rows[i]: s for i, s in b.sha.items()},
                                 [(rows[i], e) for i, e in b.errors], {rows[i]: q for i, q in b.quality.items()})
            yield self._records(part, batch, carried)

    def _ray_batches(self, part: pd.DataFrame, batch_size: int, carried: list[str]):
        """The same records computed by Ray Data actors, each loading the model once."""
        if part.empty:
            return
        import ray

        if not ray.is_initialized():
            ray.init(address=self.ray_address, include_dashboard=False, log_to_driver=False,
                     configure_logging=False, ignore_reinit_error=True)
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True  # records arrive in row order, as the log needs
        ctx.enable_progress_bars = False
        # several blocks of whole batches, so that every actor gets work
        rows = part.assign(_row=part.index).reset_index(drop=True)
        n_batches = -(-len(rows) // batch_size)
        per_block = -(-n_batches // max(1, min(n_batches, 4 * self.ray_workers))) * batch_size
        ds = ray.data.from_pandas([rows.iloc[i:i + per_block] for i in range(0, len(rows), per_block)])
        out = ds.map_batches(
            RayScreenWorker, batch_size=batch_size, batch_format="pandas", concurrency=self.ray_workers,
            num_cpus=self.ray_cpus_per_worker,
            fn_constructor_kwargs={"settings": self.settings, "carried": carried, "batch_size": batch_size},
        )
        pending: list[dict] = []
        for block in out.iter_batches(batch_size=None, batch_format="pandas"):
            pending.extend(json.loads(r) for r in block["record"])
            while len(pending) >= batch_size:  # hand the log whole batches, as the local engine does
                yield pending[:batch_size]
                pending = pending[batch_size:]
        if pending:
            yield pending

    def run(self, source: str | Path, out_dir: str | Path, *, overwrite: bool = False,
            max_rows: int | None = None, engine: str = "local", group_folders: bool = False,
            review_weak: bool = False) -> dict:
        """``_run`` (below) holding ``out_dir``'s lock: a second screening into the same folder is
        refused, not interleaved with this one's evidence log."""
        given = self.keep_dir, self.settings["keep_fetched"]  # a resume may keep where its run began: this run only
        try:
            with exclusive(out_dir, "screen"):
                return self._run(source, out_dir, overwrite=overwrite, max_rows=max_rows, engine=engine,
                                 group_folders=group_folders, review_weak=review_weak)
        finally:
            self.keep_dir, self.settings["keep_fetched"] = given

    def _keep_as_begun(self, then: Path, out: Path) -> None:
        """A resumed run keeps the photos it fetches where its run began keeping them (``keep_fetched``), the one
        folder ``verify_run`` and ``results.csv``'s ``kept_file`` look in: there still when no folder is given
        now (a resume that forgot the option used to keep nothing), refused when another one is."""
        if self.keep_dir is None:
            log.info("keeping the photos fetched in %s, as %s began", then, out)
            self.keep_dir = then
            self.settings["keep_fetched"] = str(then)
        elif self.keep_dir != then:
            raise ScreenError(f"{out} keeps the photos it fetched in {then}, not {self.keep_dir}: resume it with "
                              f"--keep-fetched {then}, or without the option")

    def _run(self, source: str | Path, out_dir: str | Path, *, overwrite: bool = False,
             max_rows: int | None = None, engine: str = "local", group_folders: bool = False,
             review_weak: bool = False) -> dict:
        """Screen ``source`` into ``out_dir``; resumes a run there. ``engine``: ``local``
        (decode workers + batched inference here) or ``ray`` (Ray Data). ``max_rows`` stops
        after that many new records (a deliberate interruption, for tests and trials).
        ``group_folders``: a folder's sub-folders are its listings (``read_listings``).
        ``review_weak``: the queue and the listings to review also take the photos the model passed
        whose quality is weak (``data.quality``): such a pass cannot clear a listing. It shapes the
        outputs written at the end only, so running a complete run again with or without it
        rewrites them without screening anything again."""
        if engine not in ENGINES:
            raise ScreenError(f"engine must be one of {ENGINES}, not {engine!r}")
        pictures = Pictures(Path(out_dir) / PICTURES)  # a workbook's pictures on its photo cells, kept there
        listings = read_listings(source, group_folders=group_folders, skip=[out_dir],  # never its own outputs
                                 pictures=pictures)
        not_utf8 = list(listings.attrs.get("not_utf8", []))
        if not_utf8:
            log.warning("%s: %d image(s) not screened: their file names are not UTF-8 (e.g. %s); rename them to "
                        "UTF-8 (for example with convmv) and run again", source, len(not_utf8), not_utf8[0])
        out = Path(out_dir)
        state_path = out / STATE
        evidence_path = out / EVIDENCE
        if out.is_dir() and not state_path.is_file():
            found = [name for name in (EVIDENCE, *OUTPUTS) if (out / name).exists()]
            if found:  # --overwrite would delete them; going on would append to a log this run never wrote
                raise ScreenError(f"{out} holds {', '.join(found)} but no {STATE}: not a screening run to resume or "
                                  "overwrite (another tool's files, or a run whose record was deleted); nothing was "
                                  "touched: use another --out")
        if overwrite and out.exists():
            for name in (EVIDENCE, *OUTPUTS, STATE):  # the run's record last: a stop half-way leaves a run's folder
                (out / name).unlink(missing_ok=True)
        old = _read_state(state_path, "use --overwrite to screen again from the start, or another --out") \
            if state_path.is_file() else None
        if old is not None and old.get("keep_fetched"):
            self._keep_as_begun(Path(old["keep_fetched"]), out)
        fingerprint = table_fingerprint(listings)
        records: list[dict] = []  # the run's evidence, read once when its input is not as it was
        if old is not None and old.get("fingerprint") != fingerprint:
            records = _scan_evidence(evidence_path)[0]
            if Path(source).is_dir():  # a folder that gained files since its run: the screened photos first
                regrown = _folder_in_screened_order(listings, records, old.get("rows"))
                if regrown is not None:
                    listings, fingerprint = regrown, table_fingerprint(regrown)
        state = {"input": str(Path(source).resolve()), "rows": len(listings),
                 "fingerprint": fingerprint, "model": self.model_info,
                 "culture_model": self.culture_info,
                 "register": self.register_info and {k: v for k, v in self.register_info.items()
                                                     if k not in REGISTER_STATE},
                 "k": self.k, "batch_size": self.batch_size, "artsentry_version": __version__}
        if group_folders:  # only when set, so runs from before the option resume as they were
            state["group_folders"] = True
        if self.lots is not None:  # likewise
            state["lots"] = self.lots
        if self.keep_dir is not None:  # where ``verify_run`` finds the fetched photos (not compared)
            state["keep_fetched"] = str(self.keep_dir)
        if self.register_info:  # not compared: a register that changed between runs is warned about below
            state["register_state"] = {k: self.register_info[k] for k in REGISTER_STATE}
        grown_from = None  # rows of a finished run on the first rows of this (longer) input
        if old is not None:
            changed = [k for k in ("input", "group_folders", "fingerprint", "model", "culture_model", "register", "k",
                                   "lots") if old.get(k) != state.get(k)]
            if changed == ["fingerprint"] and _grew_from(old, listings, records):
                grown_from = old["rows"]
                _refuse_changed(out, records, self.progress)  # new content under a screened name
                if Path(source).is_dir():
                    log.warning("%s gained %d image(s) since %s was screened (%d then, all still there): screening "
                                "the new ones", source, len(listings) - grown_from, out, grown_from)
                else:
                    log.warning("%s grew from %d to %d rows since %s was screened, the first %d unchanged: "
                                "screening the %d new row(s)", source, grown_from, len(listings), out, grown_from,
                                len(listings) - grown_from)
                old.update(rows=state["rows"], fingerprint=state["fingerprint"])
                write_text_atomic(state_path, json.dumps(old, indent=2) + "\n")
                changed = []
            if changed:
                why = _describe_changes(old, state, changed)
                if changed == ["fingerprint"] and Path(source).is_dir():
                    why += _gone_from_folder(listings, records)
                raise ScreenError(f"{out} holds a screening run of {why}; use --overwrite or another --out")
            state["batch_size"] = old.get("batch_size", self.batch_size)  # batches as the run began
            updated = dict(old)  # what the saved state learns from this run, written once
            if state.get("keep_fetched"):  # kept from now on (or still there: _keep_as_begun): verify_run looks there
                updated["keep_fetched"] = state["keep_fetched"]
            then = old.get("register_state")
            if then and then != state.get("register_state") and evidence_path.is_file() \
                    and evidence_path.stat().st_size:
                now = state["register_state"]
                log.warning("the register changed since %s was screened against it (%s objects, %s changes then; "
                            "%s and %s now; 'artsentry register history'): the photos screened before were not "
                            "searched against what changed; --overwrite screens all of them against it as it is",
                            out, then["objects"], then["changes"], now["objects"], now["changes"])
                updated["register_state"] = now
            if updated != old:
                write_text_atomic(state_path, json.dumps(updated, indent=2) + "\n")
        else:
            out.mkdir(parents=True, exist_ok=True)
            write_text_atomic(state_path, json.dumps(state, indent=2) + "\n")
        pictures.write()  # once the folder is known to be this run's

        batch_size = state["batch_size"]
        # a grown input keeps every row of the finished run; batches start again from its end
        if grown_from is not None:
            kept = records
        else:
            kept = _resume_point(evidence_path, batch_size, len(listings))
            if kept:  # a resumed run, or a finished one run again: the files it screened first hashed again
                _refuse_changed(out, kept, self.progress)
        n_done = len(kept)
        todo = list(range(n_done, len(listings)))
        if max_rows is not None:
            todo = todo[: -(-max_rows // batch_size) * batch_size]  # whole batches
        carried = [c for c in listings.columns if c not in ("listing_id", "image")]
        part = listings.iloc[todo]
        once_dir = out / ONCE_DIR  # this invocation's: a resumed run asks again what failed before it stopped
        shutil.rmtree(once_dir, ignore_errors=True)
        if engine == "ray":  # its actors may run on other machines: each row fetches its own URL
            batches = self._ray_batches(part, batch_size, carried)
        else:
            batches = self.screen_rows(part, batch_size, carried, self.num_workers, once_dir=once_dir)
        t0 = time.time()
        n_new = 0
        # the bar's counts are the run's, as its position is: a resumed run's start with what it kept
        n_flag, n_err = _flagged_and_unreadable(kept)
        bar = tqdm(total=len(listings), initial=n_done, unit="img", desc="screen", disable=not self.progress,
                   postfix={"flagged": n_flag, "unreadable": n_err} if n_done else None)
        head = chainlog.head_of(evidence_path)  # each record linked to the one before (``chainlog``)
        with open(evidence_path, "a", encoding="utf-8") as evidence:
            for records in batches:
                text, head = chainlog.chained_lines(records, head)
                evidence.write(text)
                evidence.flush()
                os.fsync(evidence.fileno())
                n_new += len(records)
                flagged, unreadable = _flagged_and_unreadable(records)
                n_flag, n_err = n_flag + flagged, n_err + unreadable
                bar.set_postfix(flagged=n_flag, unreadable=n_err, refresh=False)  # drawn once, by the update
                bar.update(len(records))
        bar.close()
        shutil.rmtree(once_dir, ignore_errors=True)
        seconds = time.time() - t0
        records = read_evidence(evidence_path)
        complete = len({r["row"] for r in records}) == len(listings)
        summary = {"input": state["input"], "rows": len(listings), "recorded": len(records), "complete": complete,
                   "evidence_head": head,
                   "this_run": {"images": n_new, "seconds": round(seconds, 2),
                                "images_per_second": round(n_new / seconds, 2) if seconds > 0 else None}}
        if not_utf8:  # in the folder, but in no table, log or report: named here so they are not lost
            summary["not_screened"] = {"reason": "file name not UTF-8: rename it (for example with convmv) and run "
                                                 "again", "files": not_utf8}
        if complete:
            summary.update(write_outputs(records, listings, out, carried, overlay=self._overlay_maker(),
                                         review_weak=review_weak, keep_dir=self.keep_dir, source=state["input"]))
        write_text_atomic(out / "summary.json", json.dumps(summary, indent=2) + "\n")
        return summary

    def _overlay_maker(self):
        """Grad-CAM overlays (PNG data URIs) for the first ``explain`` photos the model flagged
        in the queue: local image files only."""
        if self.predictor is None or self.explain <= 0:
            return None
        from .explain import ClassifierExplainer

        engine = ClassifierExplainer(self.predictor)
        budget = {"left": self.explain}
        # what made it look like the flagged class: a lot flagged for one tile may read as another class whole
        target = self.predictor.positive_label

        def overlay(image: str, lot: dict | None = None) -> str | None:
            if budget["left"] <= 0 or "://" in image:
                return None
            budget["left"] -= 1
            decided = (lot or {}).get("tile")  # the crop of the lot scan that decided
            tile = (self.lots["grid"], decided) if decided is not None and self.lots else None
            return engine.overlay_uri(image, draft_size=self.draft_size, target=target, tile=tile)  # as decided

        return overlay


def _decision(d) -> dict:
    """A ``Prediction``'s label, score and probabilities as an evidence record keeps them."""
    return {"label": d.label, "score": round(d.score, 6),
            "probabilities": {k: round(v, 6) for k, v in d.probabilities.items()}}


class RayScreenWorker:
    """A Ray Data actor: loads the model (and register) once, then screens batches of rows."""

    def __init__(self, settings: dict, carried: list[str], batch_size: int):
        self.screener = Screener(settings["model_dir"], settings["register_dir"],
                                 culture_dir=settings.get("culture_dir"), runtime=settings["runtime"],
                                 k=settings["k"], fetch_urls=settings["fetch_urls"], progress=False,
                                 lots=settings.get("lots", False), keep_fetched=settings.get("keep_fetched"),
                                 fetch_private=settings.get("fetch_private", False))
        self.carried = carried
        self.batch_size = batch_size

    def __call__(self, df: pd.DataFrame) -> pd.DataFrame:
        part = df.set_index("_row")
        records = [r for batch in self.screener.screen_rows(part, self.batch_size, self.carried, num_workers=0)
                   for r in batch]
        return pd.DataFrame({"record": [json.dumps(r, ensure_ascii=False) for r in records]})


def verify_run(out_dir: str | Path, progress: bool = False, expect: str | None = None, refetch: bool = False,
               fetch_private: bool = False) -> dict:
    """Check a screening run's evidence, changing nothing: each local photo, and each fetched one's kept
    copy (``keep_fetched``), must still hash to the SHA-256 its record holds, and each record must link to
    the one before it (``chainlog``). Returns counts (``verified``, ``changed``, ``missing``, ``not_kept``:
    fetched without a kept copy; ``unread``: photos that could not be read then, nothing to check), the
    photos that changed or are missing, ``chain`` (``chainlog.check`` without the per-record hashes, plus
    ``expected``: how many records a head noted down earlier, ``expect``, still stands for; None when
    it stands for none of them) and the SHA-256 of the evidence log itself. ``refetch``: fetched photos
    without a kept copy are fetched again and compared (``_check_photos``)."""
    out = Path(out_dir)
    evidence = out / EVIDENCE
    # read once: the records, their chain and the file's hash are of one state of the log (a run may be
    # appending to it)
    data = evidence.read_bytes() if evidence.is_file() else b""
    records = _parse_evidence(data, evidence)[0]
    if not records:
        raise ScreenError(f"{out}: no screening evidence here ({EVIDENCE} missing or empty)")
    state = {}
    if (out / STATE).is_file():
        try:
            state = _read_state(out / STATE, "the evidence is checked without it: fetched photos' kept copies "
                                             "(--keep-fetched) are not looked for")
        except ScreenError as exc:  # what the evidence says can still be checked: said, and checked
            log.warning("%s", exc)
    checked = _check_photos(records, state.get("keep_fetched"), progress, desc="verify", refetch=refetch,
                            fetch_private=fetch_private)
    return {**checked, "records": len(records), "chain": chainlog.report(data, expect),
            "evidence_sha256": hashlib.sha256(data).hexdigest(), "input": state.get("input")}


# -- outputs ---------------------------------------------------------------------------------
def _priority(r: dict) -> tuple:
    best = r["matches"][0]["score"] if r.get("matches") else 0.0
    return (not r.get("matched", False), -best if r.get("matched") else 0.0, -(r.get("score") or 0.0), r["row"])


def _box_text(box) -> str:
    """A tile (fractions of the photo: left top right bottom) as results.csv shows it."""
    return " ".join(f"{v:g}" for v in box) if box else "whole"


#: listing ids a photo's ``shared_with_ids`` names at most (a placeholder image can be in thousands)
SHARED_IDS_SHOWN = 5


def shared_photos(table: pd.DataFrame) -> pd.DataFrame:
    """For each row of a results table: how many *other* listings hold a photo with the same bytes
    (same SHA-256; photos that could not be read are not compared), and the first
    ``SHARED_IDS_SHOWN`` of their ids, "; "-joined. The same photo under several listings is the
    same item offered again, by the same seller or another, or a stock or copied picture: a reviewer
    wants them side by side. Linear in the rows, however many listings share one photo."""
    ok = table["error"].isna() & table["sha256"].fillna("").astype(str).ne("")
    ids = table.loc[ok].groupby("sha256", sort=False)["listing_id"].agg(lambda s: list(dict.fromkeys(map(str, s))))
    count, shown = [0] * len(table), [""] * len(table)
    for i, (good, sha, own) in enumerate(zip(ok, table["sha256"], table["listing_id"].astype(str))):
        if good and len(ids[sha]) > 1:
            count[i] = len(ids[sha]) - 1
            shown[i] = "; ".join([x for x in ids[sha][:SHARED_IDS_SHOWN + 1] if x != own][:SHARED_IDS_SHOWN])
    return pd.DataFrame({"shared_with": count, "shared_with_ids": shown}, index=table.index)


def describe_run(records: list[dict], source: str | None = None) -> list[str]:
    """What a screening report must say it rests on, from its evidence records: what was screened,
    the model (version, threshold), the culture model, the register and its state (each state met,
    when it changed between runs), the lot scan. Not when (``screened_between``): a resumed run's
    report is the same file as an uninterrupted one's."""
    if not records:
        return []
    lines = [f"{len(records)} photo(s){f' of {source}' if source else ''}"]

    def model(m: dict, what: str) -> str:
        return (f"{what}: {m['name']} version {m['version']} ({m.get('path')}), created {m.get('created')}"
                + (f", threshold {m['threshold']}" if m.get("threshold") is not None else "")
                + f", run on {m.get('runtime')}")

    for key, what in (("model", "Model"), ("culture_model", "Culture model")):
        m = next((r[key] for r in records if r.get(key)), None)
        if m:
            lines.append(model(m, what))
    states = list(dict.fromkeys(json.dumps(r["register"], sort_keys=True) for r in records if r.get("register")))
    for n, state in enumerate(map(json.loads, states)):
        changes = (f"{state['changes']} recorded change(s), the last {state['changed']}" if state.get("changes")
                   else "no recorded changes (a register from before its history was kept)")
        threshold = (f"no-match threshold {state['threshold']:.6g}" if state.get("threshold") is not None
                     else "no no-match threshold set (matches shown, none decided)")
        lines.append(("Register" if n == 0 else "then register") + f" {state['path']}: {state['objects']} object(s), "
                     f"{changes}, {threshold}")
    lot = next((r["lot"] for r in records if r.get("lot")), None)
    if lot:
        lines.append(f"Photos of several objects scanned in tiles, decided at the lot threshold {lot['threshold']}")
    return lines


def write_outputs(records: list[dict], listings: pd.DataFrame, out: Path, carried: list[str],
                  overlay=None, review_weak: bool = False, keep_dir: Path | None = None,
                  source: str | None = None) -> dict:
    records = sorted(records, key=lambda r: r["row"])
    rows = []
    for r in records:
        best = r["matches"][0] if r.get("matches") else {}
        rows.append({"row": r["row"], "listing_id": r["listing_id"], "image": r["image"], "sha256": r["sha256"],
                     "label": r.get("label"), "score": r.get("score"), "flagged": r.get("flagged"),
                     "culture": (r.get("culture") or {}).get("label"),
                     "culture_score": (r.get("culture") or {}).get("score"),
                     "matched": r.get("matched"), "best_match": best.get("object_id"),
                     "best_match_score": best.get("score"), "best_match_similarity": best.get("similarity"),
                     "best_match_status": best.get("status"),
                     "quality_warnings": warnings_text(r.get("quality")),
                     **({"lot_tile_box": _box_text(r["lot"]["box"]), "lot_whole_score": r["lot"]["whole"]}
                        if r.get("lot") else {}),
                     **({"best_match_tile_box": _box_text(best["box"])} if "box" in best else {}),
                     "error": r["error"], **r["listing"]})
    table = pd.DataFrame(rows)
    shared = shared_photos(table)
    table.insert(table.columns.get_loc("error"), "shared_with", shared["shared_with"])
    table.insert(table.columns.get_loc("error"), "shared_with_ids", shared["shared_with_ids"])
    shared_by_row = {row: (int(n), ids) for row, n, ids in zip(table["row"], shared["shared_with"],
                                                                shared["shared_with_ids"]) if n}
    kept: dict[int, str] = {}  # row -> the kept copy of its fetched image (--keep-fetched)
    if keep_dir is not None:
        by_sha = kept_files(keep_dir)
        for r in records:
            path = by_sha.get(r["sha256"]) if r.get("sha256") and "://" in r["image"] else None
            if path is not None:
                kept[r["row"]] = str(path)
        table.insert(table.columns.get_loc("error"), "kept_file", [kept.get(row, "") for row in table["row"]])
    write_csv_atomic(table, out / "results.csv", for_spreadsheets=True)
    queue = [r for r in records if r["error"] is None
             and (r.get("flagged") or r.get("matched") or (review_weak and quality_warnings(r.get("quality"))))]
    queue.sort(key=_priority)
    qrows = {r["row"]: i for i, r in enumerate(queue)}
    qtable = table.set_index("row").loc[list(qrows)].reset_index()
    qtable.insert(0, "rank", range(1, len(qtable) + 1))
    write_csv_atomic(qtable, out / "queue.csv", for_spreadsheets=True)
    # each with its listing's columns (title, seller...): a table that `screen` takes as it is, to try them again
    write_csv_atomic(table[table["error"].notna()][["row", "listing_id", "image", *carried, "error"]],
                     out / "errors.csv", for_spreadsheets=True)
    per_listing = listing_rollup(table, carried, review_weak=review_weak)
    write_csv_atomic(per_listing, out / "listings.csv", for_spreadsheets=True)
    about = describe_run(records, source)
    write_queue_html(queue, per_listing.loc[per_listing["review"], "listing_id"].tolist(), out / "queue.html",
                     carried, overlay=overlay, shared=shared_by_row, kept=kept, about=about)
    times = sorted(r["time"] for r in records if r.get("time"))
    return {"about": about, "screened_between": [times[0], times[-1]] if times else None,
            "flagged": int(sum(bool(r.get("flagged")) for r in records)), "review_weak": review_weak,
            "matched": int(sum(bool(r.get("matched")) for r in records)),
            "queue": len(queue), "unreadable": int(table["error"].notna().sum()),
            "weak_photos": int(table["quality_warnings"].notna().sum()),
            "photos_in_several_listings": int(table.loc[table["shared_with"] > 0, "sha256"].nunique()),
            "listings": len(per_listing), "listings_to_review": int(per_listing["review"].sum()),
            "listings_not_screened": int((per_listing["status"] == "not screened").sum()),
            "listings_partly_screened": int((per_listing["status"] == "partly screened").sum())}


#: a listing's ``status`` in listings.csv, in the order listed there
LISTING_STATUSES = ("review", "not screened", "partly screened", "clear")


def listing_rollup(table: pd.DataFrame, carried: list[str] = (), review_weak: bool = False) -> pd.DataFrame:
    """One row per listing id of a results table (one row per photo; a listing's photos share
    its id): what a reviewer acts on. A listing is to ``review`` when any of its photos is
    flagged or matches a registered object; its ``max_score`` is its highest photo's (a
    listing of many photos is flagged more often than one photo alone: any of them can
    cross the threshold), its match the best score over its photos. Order: listings to review
    first, register matches before flags, then by score, then by first row; ``rank`` numbers
    the listings to review; ``weak_photos`` counts photos with a quality warning (blurred, grainy, dark,
    small: a pass on them is weak evidence), and with ``review_weak`` a listing with any weak
    photo is to review too (after the flagged ones: its photos scored under the threshold).
    ``status`` says the same in words, and keeps a listing whose photos could not all be read
    from looking cleared: ``review``; ``not screened`` (no photo read), ``partly screened`` (some
    not read, none of the rest to review), both after the listings to review; ``clear`` last.
    ``carried`` columns (title, price...) come from the listing's first row."""
    t = table.reset_index(drop=True)
    t["listing_id"] = t["listing_id"].astype(str)
    t["_first"], t["_bad"] = t["row"], t["error"].notna()
    t["_flag"], t["_match"] = t["flagged"].fillna(False).astype(bool), t["matched"].fillna(False).astype(bool)
    t["_weak"] = t["quality_warnings"].notna() if "quality_warnings" in t else False
    agg = t.groupby("listing_id", sort=False).agg(photos=("row", "size"), unreadable=("_bad", "sum"),
                                                  flagged_photos=("_flag", "sum"), matched_photos=("_match", "sum"),
                                                  weak_photos=("_weak", "sum"), first_row=("_first", "min"))
    ids = agg.index

    def top(score: str) -> pd.DataFrame:
        """Each listing's row of highest ``score`` (first row on ties), aligned with ``ids``."""
        scored = t.assign(_v=t[score].astype(float)).dropna(subset=["_v"])
        return scored.sort_values(["_v", "row"], ascending=[False, True]).drop_duplicates("listing_id") \
            .set_index("listing_id").reindex(ids)

    top_score, top_match = top("score"), top("best_match_score")
    top_shared = top("shared_with") if "shared_with" in t else None
    out = pd.DataFrame({
        "listing_id": ids, **{c: agg[c].to_numpy() for c in ("photos", "unreadable", "flagged_photos",
                                                            "matched_photos", "weak_photos")},
        "max_score": top_score["_v"].to_numpy(), "max_score_image": top_score["image"].to_numpy(),
        "best_match": top_match["best_match"].to_numpy(), "best_match_score": top_match["_v"].to_numpy(),
        "best_match_status": top_match["best_match_status"].to_numpy(),
        "best_match_image": top_match["image"].to_numpy(), "first_row": agg["first_row"].to_numpy(),
    })
    if top_shared is not None:  # the listing's photo found in the most other listings
        out["shared_with"] = top_shared["_v"].fillna(0).astype(int).to_numpy()
        out["shared_with_ids"] = top_shared["shared_with_ids"].fillna("").to_numpy()
    review = (out["flagged_photos"] > 0) | (out["matched_photos"] > 0)
    out.insert(1, "review", review | (out["weak_photos"] > 0) if review_weak else review)
    status = np.select([out["review"], out["unreadable"] >= out["photos"], out["unreadable"] > 0],
                       [LISTING_STATUSES[0], LISTING_STATUSES[1], LISTING_STATUSES[2]], LISTING_STATUSES[3])
    out.insert(2, "status", status)
    firsts = t.set_index("row").loc[out["first_row"]]
    for c in carried:
        if c in firsts.columns and c not in out.columns:
            out[c] = firsts[c].to_numpy()
    order = pd.DataFrame({"a": out["status"].map(LISTING_STATUSES.index), "b": out["matched_photos"] == 0,
                          "c": -out["best_match_score"].where(out["matched_photos"] > 0, 0.0).fillna(0.0),
                          "d": -out["max_score"].fillna(-1.0), "e": out["first_row"]})
    out = out.loc[order.sort_values(list("abcde"), kind="stable").index].reset_index(drop=True)
    n = int(out["review"].sum())
    out.insert(0, "rank", pd.array(list(range(1, n + 1)) + [None] * (len(out) - n), dtype="Int64"))
    return out


def write_queue_html(queue: list[dict], order: list[str], path: Path, carried: list[str], max_rows: int = 500,
                     overlay=None, shared: dict | None = None, kept: dict | None = None,
                     about: Sequence[str] = ()) -> None:
    """The review queue page: one card per listing, in ``order`` (the listing ids to review as
    ``listing_rollup`` ranks them), holding that listing's photos of ``queue`` in queue order;
    ``max_rows`` cards at most. ``overlay(image, lot record or None) -> data URI | None`` adds an evidence overlay
    beside the photos the model flagged. ``shared``: row -> (how many other listings hold the same photo,
    some of their ids), as ``shared_photos`` gives them. ``kept``: row -> the kept copy of a fetched
    image, shown in its URL's place. ``about``: what the run rests on (``describe_run``), under the title."""
    esc = html.escape
    by_listing: dict[str, list[dict]] = {}
    for r in queue:
        by_listing.setdefault(str(r["listing_id"]), []).append(r)
    cards = []
    for rank, lid in enumerate(order[:max_rows], start=1):
        photos = by_listing[lid]
        blocks = []
        for r in photos:
            img = r["image"] if "://" not in r["image"] else (kept or {}).get(r["row"])
            thumb = thumbnail_uri(img) if img else None
            pic = f'<img src="{thumb}" alt="listing photo {esc(lid)}">' if thumb else "<div>no preview</div>"
            lot = r.get("lot")
            if thumb and lot and lot.get("box"):  # screen --lots: the tile that decided, outlined on the photo
                l, t, rt, b = (100 * v for v in lot["box"])
                pic = (f'<span class="lotpic">{pic}<span class="tile" title="tile that decided" style="left:{l:g}%;'
                       f'top:{t:g}%;width:{rt - l:g}%;height:{b - t:g}%"></span></span>')
            if overlay is not None and r.get("flagged") and img:
                ov = overlay(img, lot)
                if ov:
                    pic += f'<img class="overlay" src="{ov}" alt="evidence overlay (Grad-CAM) for {esc(lid)}">'
            facts = []
            if r.get("score") is not None:
                facts.append(f"p({esc(str(r['model']['positive_label'] or r.get('label')))}) = {r['score']:.3f}"
                             f"{' — FLAG' if r.get('flagged') else ''}")
            if lot:
                where = "the outlined tile" if lot.get("box") else "the whole photo"
                facts.append(f"scanned in tiles (lot threshold {lot['threshold']:.3f}): highest in {where}; "
                             f"the whole photo alone {lot['whole']:.3f}")
            if r.get("culture"):
                facts.append(f"culture: {esc(r['culture']['label'])} (p = {r['culture']['score']:.3f})")
            if r.get("matched") or (r.get("matched") is None and r.get("matches")):
                m = r["matches"][0]
                said = ("register match" if r.get("matched") else
                        "closest registered object (not decided: the register has no no-match threshold)")
                facts.append(f"{said}: <b>{esc(m['object_id'])}</b> {esc(m.get('title') or '')} "
                             f"({esc(m.get('status') or 'no status')}), match score {m['score']:.3f}"
                             + (f", similarity {m['similarity']:.3f}" if m.get("similarity") is not None else ""))
            weak = warnings_text(r.get("quality"))
            if weak:
                facts.append(f'<span class="weak">weak evidence: {esc(weak)}</span>')
            n_shared, shared_ids = (shared or {}).get(r["row"], (0, ""))
            if n_shared:
                more = f" and {n_shared - SHARED_IDS_SHOWN} more" if n_shared > SHARED_IDS_SHOWN else ""
                facts.append(f'<span class="shared">the same photo is in {n_shared} other listing(s): '
                             f'{esc(shared_ids)}{more}</span>')
            facts.append(f'<span class="sha">row {r["row"]} · sha256 {esc(r["sha256"] or "")}</span>')
            blocks.append(f'<div class="photo">{pic}<ul>{"".join(f"<li>{f}</li>" for f in facts)}</ul></div>')
        extra = "".join(f"<li>{esc(c)}: {esc(str(photos[0]['listing'].get(c, '')))}</li>" for c in carried)
        n = f" ({len(photos)} photos)" if len(photos) > 1 else ""
        cards.append(f'<li class="card"><span class="rank">#{rank}</span><div><b>{esc(lid)}</b>{n}'
                     f'<ul>{extra}</ul><div class="photos">{"".join(blocks)}</div></div></li>')
    more = (f"<p>{len(by_listing) - max_rows} more listing(s) in listings.csv and queue.csv</p>"
            if len(by_listing) > max_rows else "")
    write_text_atomic(path, f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>artsentry review queue</title>
<style>body{{font-family:sans-serif;margin:1em}} ol{{list-style:none;padding:0}}
.card{{display:flex;gap:1em;border-bottom:1px solid #ccc;padding:.5em 0}} .card img{{max-width:160px}}
.card img.overlay{{max-width:300px}} .photos{{display:flex;flex-wrap:wrap;gap:1em}}
.photo{{display:flex;flex-wrap:wrap;gap:.5em}} .photo ul{{padding-left:1em}}
.lotpic{{position:relative;display:inline-block;line-height:0}} .lotpic .tile{{position:absolute;box-sizing:border-box;
border:2px solid #b00020}}
.rank{{font-weight:bold;min-width:3em}} .weak{{color:#8a4b00}} .shared{{color:#004a8a}} .about{{font-size:85%;color:#444;margin:.2em 0}} .sha{{font-size:70%;color:#666;word-break:break-all}}</style></head>
<body><h1>Review queue</h1>{''.join(f'<p class="about">{esc(line)}</p>' for line in about)}
<p>{len(by_listing)} listing(s) to review ({len(queue)} photo(s)), register matches
first, then by probability.</p><ol>{''.join(cards)}</ol>{more}</body></html>
""")
