"""The register of known objects, searched by photo.

A register is a folder::

    register.sqlite   objects (id, title, department, source, status, extra metadata),
                      photos (one row per embedded photo, with its vector; a re-shot
                      names the photo it was made from), settings
    index.faiss       the search index over the photo vectors (a cache of the database)

Adding or removing an object is a database transaction followed by an index
update; no model is retrained. The database is the source of truth: it records
the index file's SHA-256 and size, so an index that is truncated, corrupted or
out of step is refused with a clear error (``artsentry register rebuild``
recreates it from the database). A database that is not one is refused too.
Nothing here is pickled.

Scores: an object scores its best registered photo. A photo registered with re-shots
(``reshots``) scores the mean of its two best-matching versions (the photo and its
re-shots), so that one lucky version of an unrelated photo counts less; measured on
met-ivory this finds more objects at rank 1 (BENCHMARKS.md). Without re-shots a
photo's score is the cosine similarity of the two embeddings.

The match score that "no match" is decided on (``scoring="contrast"``, the default for new
registers) is an object's similarity minus half the mean similarity of the four best *other*
objects: how far the object stands out from the crowd of look-alikes, rather than how
similar it is in absolute terms. A photo of an unregistered ivory carving is fairly similar
to many registered carvings at once; a re-photographed registered object is similar to one.
On met-ivory this tells registered from unregistered queries better than the similarity
alone (AUC in BENCHMARKS.md), with the same ranking. A register with fewer than five objects
subtracts the mean of the others it has (none: nothing). Registers made before this rule keep
``scoring="similarity"`` (their threshold was chosen on similarities).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import math
import os
import re
import sqlite3
import threading
import time
import unicodedata
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from ..data.images import as_sources, source_names
from ..data.quality import quality_warnings
from ..files import database_problem, file_sha256, first_names
from ..errors import ArtsentryError
from .vectors import IndexFileError, VectorIndex, kind_for

if TYPE_CHECKING:  # the embedder (PyTorch, seconds to import) is imported where photos are embedded: a
    from .embedder import Embedder  # command that only reads or changes the records starts at once

DB_NAME = "register.sqlite"
INDEX_NAME = "index.faiss"
SCHEMA = """
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS objects (
    object_id TEXT PRIMARY KEY, title TEXT, department TEXT, source TEXT, status TEXT, extra TEXT
);
CREATE TABLE IF NOT EXISTS photos (
    vector_id INTEGER PRIMARY KEY AUTOINCREMENT,
    object_id TEXT NOT NULL REFERENCES objects(object_id),
    name TEXT, sha256 TEXT, vector BLOB NOT NULL,
    reshot_of INTEGER  -- vector_id of the registered photo this re-shot was made from
);
CREATE INDEX IF NOT EXISTS photos_object ON photos(object_id);
CREATE INDEX IF NOT EXISTS photos_reshot ON photos(reshot_of);
CREATE INDEX IF NOT EXISTS photos_sha ON photos(sha256);
""" + """
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY AUTOINCREMENT, time TEXT NOT NULL, user TEXT, action TEXT NOT NULL,
    object_id TEXT, detail TEXT
);
CREATE INDEX IF NOT EXISTS history_object ON history(object_id);
"""
HISTORY_SCHEMA = SCHEMA[SCHEMA.index("CREATE TABLE IF NOT EXISTS history"):]
RESHOT_SUFFIX = " [re-shot "
VERSIONS_SCORED = 2  # a photo with re-shots scores the mean of this many of its best-matching versions
SCORINGS = ("contrast", "similarity")  # what a match's score is (module docstring)
CONTRAST_OTHERS = 4  # the contrast score subtracts CONTRAST_WEIGHT x the mean similarity of this many other objects
CONTRAST_WEIGHT = 0.5
NEAR_DUPLICATE = 0.9  # ... unless one version matches at least this well: then that version's score
META_FIELDS = ("title", "department", "source", "status")
# how long a change waits for another process's change to finish (an import's chunk, ``rebuild``, the
# switch to an IVF index: ~51 s at 200,000 vectors) before giving up; the web server waits less
BUSY_SECONDS = 600.0

log = logging.getLogger(__name__)


class RegisterError(ArtsentryError, RuntimeError):
    pass


class EmbedderChanged(RegisterError):
    """The register's embedder folder holds other weights than its vectors were made with."""


class RegisterBusy(RegisterError):
    """Another process held the register's write lock for longer than this one waits (``busy_seconds``)."""


class NotRegistered(RegisterError):
    """The object id is not in the register (``remove``)."""


class RegisterReadOnly(RegisterError):
    """The register's folder or database cannot be written here: a read-only share or copy, or no permission."""


@dataclass
class Match:
    object_id: str
    score: float  # the match score the threshold applies to (the register's ``scoring``)
    similarity: float  # the object's similarity to the query (its best photo's score)
    title: str | None = None
    department: str | None = None
    source: str | None = None
    status: str | None = None
    # a tile search (``lots``): where in the photo the match was found, as fractions of its width
    # and height (left, top, right, bottom); None: the whole photo
    box: tuple | None = None


@dataclass
class SearchResult:
    query: str
    matches: list[Match] = field(default_factory=list)
    # True: the best score is under the threshold (or nothing is registered); False: a match; None:
    # undecided, a register with no threshold (before ``register calibrate``) ranks matches, never decides
    no_match: bool | None = False
    threshold: float | None = None
    error: str | None = None
    quality: dict | None = None  # data.quality of the query photo: a "no match" on a weak photo is weak evidence

    @property
    def warnings(self) -> list[str]:
        return quality_warnings(self.quality)

    def to_dict(self) -> dict:
        return asdict(self)


class Register:
    def __init__(self, folder: Path, db: sqlite3.Connection, embedder: Embedder | None = None,
                 load_index: bool = True, busy_seconds: float = BUSY_SECONDS):
        self.folder = folder
        self.db = db
        self._embedder = embedder
        self.busy_seconds = busy_seconds
        self.index = self._load_index() if load_index else VectorIndex(self.dim)
        self._version = self._data_version()

    def _data_version(self) -> int:
        """SQLite's count of commits by OTHER connections to this database (``PRAGMA data_version``)."""
        return self.db.execute("PRAGMA data_version").fetchone()[0]

    def _sync(self, locked: bool = False) -> None:
        """Bring this process's index up to date when another process (a CLI import beside the web
        server, a second terminal) changed the register since this one last read it: without it,
        objects registered elsewhere were never found here, a search near an object removed elsewhere
        raised KeyError, and this process's next change saved its stale index over theirs. ``locked``
        (holding the write lock, ``_begin``): no change is half-made, and the index file matches the
        database. Otherwise another process may have written the file and not yet committed: within one
        read of the database (a snapshot), the file is taken when its checksum and count are the ones the
        snapshot records, else the index is rebuilt from the snapshot's vectors (seconds for an exact
        index of 200,000, a minute for an IVF one: too long to pay at each of an import's chunks)."""
        version = self._data_version()
        if version != self._version:
            if locked:
                self.index = self._load_index()
            else:
                with self.db:
                    self.db.execute("BEGIN")
                    try:
                        self.index = self._load_index()
                    except RegisterError:
                        self.index = self._index_from_db()
            self._version = version

    @property
    def indexed_vectors(self) -> int:
        """Vectors in the search index (photos and their re-shots), as the database now has them."""
        self._sync()
        return len(self.index)

    @contextlib.contextmanager
    def _change(self, sync: bool = True):
        """One change: the database's write lock and this process's index brought up to date (``_begin``; only
        the lock without ``sync``, for a change that makes the index anew), committed whole or, on any error (a
        full disk writing the index file, a stop), rolled back whole, this process's index included, which the
        change may have altered before it failed: it is read again at the next use. A web server whose index
        write failed went on with vectors its database never held, and every later search near them raised
        KeyError (and its next change saved them)."""
        try:
            with self.db:
                if sync:
                    self._begin()
                else:
                    self._write_lock()
                yield
        except BaseException:
            self._version = -1  # not a data_version SQLite gives: the next _sync reads the index again
            raise

    @property
    def writable(self) -> bool:
        """Can this process change the register: its database and its folder (the index, the database's
        journal, the stored photos are written there) writable? A register searched from a read-only share
        or copy is not."""
        return os.access(self.folder, os.W_OK) and os.access(self.folder / DB_NAME, os.W_OK)

    def _check_writable(self) -> None:
        if not self.writable:
            raise RegisterReadOnly(f"{self.folder}: the register is read-only here (a read-only share or copy, or no "
                                   "permission to write its folder): nothing was changed; change it where it can be "
                                   "written")

    def _begin(self) -> None:
        """Start a change: the database's write lock first (``_write_lock``), then this process's index
        brought up to date under it."""
        self._write_lock()
        self._sync(locked=True)

    def _write_lock(self) -> None:
        """``BEGIN IMMEDIATE``: no other process can commit until this one does. While another process
        holds it (an import beside the web server, a rebuild), wait up to ``busy_seconds``, saying so once,
        then ``RegisterBusy``, nothing changed. (SQLite's own wait, 5 s, ended in a bare "database is
        locked" traceback, though the IVF switch alone holds the lock for ~51 s.)"""
        self._check_writable()  # SQLite grants the lock, then refuses the first write ("readonly database")
        deadline = time.monotonic() + self.busy_seconds
        said = False
        while True:
            left = deadline - time.monotonic()
            step = 5.0 if said else 1.0  # the first second quietly, then say why nothing seems to happen
            self.db.execute(f"PRAGMA busy_timeout = {max(0, int(min(left, step) * 1000))}")
            try:
                self.db.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
            finally:
                self.db.execute("PRAGMA busy_timeout = 5000")  # reads: SQLite's usual wait
            if deadline - time.monotonic() <= 0:
                raise RegisterBusy(f"{self.folder}: another process is changing this register (an import, a rebuild, "
                                   f"the web server) and still was after {self.busy_seconds:g} s; nothing was "
                                   "changed: try again when it has finished")
            if not said:
                log.warning("%s: another process is changing this register; waiting up to %g s for it to finish",
                            self.folder, self.busy_seconds)
                said = True

    # -- opening --------------------------------------------------------------------------
    @classmethod
    def create(cls, folder: str | Path, embedder: str = "pretrained:efficientnet_lite0", *,
               threshold: float | None = None, reshots: int = 0, flip: bool = False,
               scoring: str = "contrast", resize: str | None = None) -> "Register":
        """``resize``: how every photo, registered or searched, becomes the embedder's input
        (``data.transforms``); default: ``fit`` for the pretrained backbone (a query in a 16:9 or 9:16
        frame found at top-1 0.96 against 0.85–0.87 squashed, listing-style re-shots 0.62 against
        0.58; BENCHMARKS.md), the model's own for a model folder. ``reshots``: every photo added is also
        indexed as that many listing-style re-shots of itself (``artsentry.data.listing``, seeds from the
        photo's SHA-256), so that a listing photo can meet a gallery photo on clutter, not only the studio
        shot.
        ``flip``: embed every photo (registered or searched) together with its mirror image.
        ``scoring``: what a match's score is, "contrast" or "similarity" (module docstring)."""
        folder = Path(folder)
        if reshots < 0:
            raise RegisterError("reshots must be 0 or more")
        if scoring not in SCORINGS:
            raise RegisterError(f"scoring must be one of {', '.join(SCORINGS)}, not {scoring!r}")
        if (folder / DB_NAME).exists():
            raise RegisterError(f"{folder}: a register already exists")
        made = [p for p in (folder, *folder.parents) if not p.exists()]  # this folder and its parents to be made
        folder.mkdir(parents=True, exist_ok=True)  # a folder that cannot be made is said before the embedder loads
        from .embedder import PRETRAINED_PREFIX, Embedder

        if resize is None and embedder.startswith(PRETRAINED_PREFIX):
            resize = "fit"
        try:
            emb = Embedder.from_spec(embedder, flip=flip, resize=resize)
        except BaseException as exc:
            for part in made:  # a register that could not be made leaves no folder behind, its parents' neither
                if part.is_dir() and not any(part.iterdir()):
                    part.rmdir()
            if isinstance(exc, ValueError):
                raise RegisterError(str(exc)) from None
            raise
        db = sqlite3.connect(folder / DB_NAME, isolation_level=None)
        db.executescript(SCHEMA)
        settings = {"format": "artsentry-register", "version": "1", "embedder": json.dumps(emb.describe()),
                    "threshold": json.dumps(threshold), "index_sha256": "", "index_count": "0",
                    "reshots": str(int(reshots)), "scoring": scoring}
        db.executemany("INSERT INTO settings VALUES (?, ?)", settings.items())
        reg = cls(folder, db, emb)
        reg._log("create", embedder=emb.describe(), threshold=threshold, reshots=int(reshots), scoring=scoring)
        return reg

    @classmethod
    def open(cls, folder: str | Path, *, rebuild_index: bool = False, shared: bool = False,
             busy_seconds: float = BUSY_SECONDS) -> "Register":
        """Open a register; ``rebuild_index`` recreates a missing or damaged index from the database.
        ``shared``: the connection may be used from several threads (the caller serialises
        access, as the web server does with one lock). ``busy_seconds``: how long a change waits for
        another process's (``RegisterBusy`` after)."""
        folder = Path(folder)
        path = folder / DB_NAME
        if not path.is_file():
            raise RegisterError(f"{folder}: no register here ({DB_NAME} missing); create one with "
                                "`artsentry register create`")
        try:
            db = sqlite3.connect(f"file:{path}?mode=rw", uri=True, isolation_level=None,
                                 check_same_thread=not shared)
        except sqlite3.DatabaseError as exc:
            raise RegisterError(f"{path}: corrupted or not a register database ({exc})") from None
        problem = database_problem(db)
        try:
            fmt = None if problem else db.execute("SELECT value FROM settings WHERE key = 'format'").fetchone()
        except sqlite3.DatabaseError:  # sound, but no settings table: another program's database
            fmt = None
        if problem or not fmt or fmt[0] != "artsentry-register":
            db.close()
            raise RegisterError(f"{path}: corrupted or not a register database ({problem})" if problem
                                else f"{path}: not an artsentry register")
        _migrate(db)
        reg = cls(folder, db, load_index=not rebuild_index, busy_seconds=busy_seconds)
        reg._compose_ids()
        if rebuild_index:
            reg.rebuild()
        return reg

    def _compose_ids(self) -> None:
        """Ids stored before they were composed (``object_key``), as a Mac's folder names give them, are
        composed in place (objects, photos, history), so that the id typed finds them; one whose composed form
        is another object's id already is left, with a warning naming both. A register that cannot be
        written here keeps them, with a warning."""
        # ASCII ids are composed already: only the others are looked at (a scan in SQLite, ~55 ms at 200,000
        # objects; the history of an object removed before ids were composed keeps its spelling)
        accented = [o for (o,) in self.db.execute("SELECT object_id FROM objects WHERE object_id GLOB '*[^ -~]*'")]
        odd = sorted(o for o in accented if not unicodedata.is_normalized("NFC", o))
        if not odd:
            return
        clash = [o for o in odd if self.db.execute("SELECT 1 FROM objects WHERE object_id = ?",
                                                   (object_key(o),)).fetchone()]
        if clash:
            log.warning("%s: object id(s) %s and %s differ only in how their accents are encoded (Unicode); "
                        "left as they are, the first not found by its id: remove the second, open the register again "
                        "(the first is then composed) and add the second's photos to it", self.folder,
                        first_names([repr(o) for o in clash], 3),
                        first_names([repr(object_key(o)) for o in clash], 3))
        todo = [o for o in odd if o not in clash]
        if not todo:
            return
        if not self.writable:
            log.warning("%s: %d object id(s) stored with decomposed accents (e.g. %r) cannot be found by the id as "
                        "typed; open the register where it can be written once to compose them", self.folder,
                        len(todo), todo[0])
            return
        with self._change(sync=False):
            for o in todo:
                for table in ("objects", "photos", "history"):
                    self.db.execute(f"UPDATE {table} SET object_id = ? WHERE object_id = ?", (object_key(o), o))
        log.info("%s: %d object id(s) stored with decomposed accents composed (e.g. %r)", self.folder, len(todo),
                 object_key(todo[0]))

    def setting(self, key: str):
        row = self.db.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def _set(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO settings VALUES (?, ?)", (key, value))

    def _log(self, action: str, object_id: str | None = None, **detail) -> None:
        """One line of the register's history (``history``): when, by which system user, what."""
        import getpass
        from datetime import datetime, timezone

        try:
            user = getpass.getuser()
        except (KeyError, OSError):  # no name for this uid (a container)
            user = None
        self.db.execute("INSERT INTO history (time, user, action, object_id, detail) VALUES (?, ?, ?, ?, ?)",
                        (datetime.now(timezone.utc).isoformat(timespec="seconds"), user, action, object_id,
                         json.dumps(detail, sort_keys=True, default=str)))

    def last_change(self) -> dict:
        """How many changes the history holds and the time of the last (None for an empty one): a
        register's state, for the records of what was searched against it."""
        n, last = self.db.execute("SELECT COUNT(*), MAX(time) FROM history").fetchone()
        return {"changes": n, "changed": last}

    def history(self, object_id: str | None = None) -> list[dict]:
        """Every change to the register, oldest first (or one object's): ``time`` (UTC), ``user``
        (the system user of the process that made it, the web server's for API writes), ``action``
        (``create``: the register, with its settings; ``add``: a new object; ``add_photos``: more
        photos of one; ``update``: its metadata alone; ``remove``; ``threshold``; ``lot_threshold``),
        ``object_id`` and what changed.
        Registers made before the history began it empty."""
        where, args = ("WHERE object_id = ? ", (object_key(object_id),)) if object_id is not None else ("", ())
        rows = self.db.execute(f"SELECT time, user, action, object_id, detail FROM history {where}ORDER BY id",
                               args).fetchall()
        return [{"time": t, "user": u, "action": a, "object_id": o, **json.loads(d or "{}")} for t, u, a, o, d in rows]

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            from .embedder import Embedder

            described = json.loads(self.setting("embedder"))
            embedder = Embedder.from_spec(described["spec"], flip=bool(described.get("flip", False)),
                                          resize=(described.get("preprocessing") or {}).get("resize"))
            made_with = described.get("weights_sha256")  # registers made before 2026-12-06 did not record it
            if made_with is not None and embedder.weights_sha256 != made_with:
                raise EmbedderChanged(
                    f"{self.folder}: its embedder {described['spec']} has other weights than the ones its vectors "
                    f"were made with (SHA-256 {str(embedder.weights_sha256)[:12]}..., not {made_with[:12]}...: trained "
                    "again or replaced since): its searches would compare two networks' vectors. Put those weights "
                    f"back, or make a register of its photos with this embedder: artsentry register copy {self.folder} "
                    "NEW_FOLDER")
            self._embedder = embedder
        return self._embedder

    @property
    def dim(self) -> int:
        return int(json.loads(self.setting("embedder"))["dim"])

    @property
    def threshold(self) -> float | None:
        return json.loads(self.setting("threshold"))

    @property
    def reshots(self) -> int:
        return int(self.setting("reshots") or 0)

    @property
    def scoring(self) -> str:
        return self.setting("scoring") or "similarity"  # registers made before scores had a choice

    def set_threshold(self, value: float | None, **how) -> None:
        """Set the no-match threshold; ``how`` (e.g. the calibration that chose it) goes into the history."""
        with self._change():
            self._set("threshold", json.dumps(value))
            self._log("threshold", value=value, **how)

    @property
    def lot_threshold(self) -> float | None:
        """The no-match threshold of tile searches (``search(lots=True)``): the best of ten crops
        scores higher than one photo, so it has its own (``calibrate(lots=True)``)."""
        value = self.setting("lot_threshold")
        return None if value is None else json.loads(value)

    def info(self) -> dict:
        """What the register holds and how it decides: objects, photos and the vectors indexed for them
        (re-shots and all), the index's kind (exact; ivf from ``vectors.IVF_THRESHOLD`` vectors), the
        embedder and how it reads photos, the scoring, both thresholds (None: not
        set, nothing is decided), its history's length and last change, and whether this process can change it
        (``writable``: not on a read-only share). An embedder refused for weights
        changed since the vectors were made (``embedder``) is described as the register recorded it, and
        ``embedder_refused`` says why."""
        refused = None
        try:
            emb = self.embedder.describe()
        except EmbedderChanged as exc:  # what the register holds stays readable: that is what the user looks at
            emb, refused = json.loads(self.setting("embedder")), str(exc)
        return {"objects": len(self), "photos": self._photo_count(), "indexed_vectors": self.indexed_vectors,
                "index": self.index.kind,
                "reshots_per_photo": self.reshots, "embedder": emb["spec"], "dim": emb["dim"], "flip": emb["flip"],
                "resize": emb["preprocessing"].get("resize"), "scoring": self.scoring, "threshold": self.threshold,
                "lot_threshold": self.lot_threshold, **self.last_change(), "writable": self.writable,
                **({"embedder_refused": refused} if refused else {})}

    def shared_photos(self, object_ids: Sequence[str] | None = None) -> dict[str, list[str]]:
        """Photos registered under more than one object, by the SHA-256 of their file content -> those objects
        (sorted); with ``object_ids``, only the photos one of them holds. The same photo under two ids is most
        often one object recorded twice, and a query of it matches each of them alike. (A few objects' photos
        are looked up by SHA-256; the whole register's are a scan of the photos table, as the integrity check
        on opening it is.)"""
        wanted = None if object_ids is None else sorted({object_key(o) for o in object_ids})
        asked = set(wanted or ())
        if wanted is not None and len(wanted) <= 500:  # a few objects' photos (add, the server's): looked up by
            # their SHA-256 (indexed in registers made since 2026-12-07), not the whole table grouped
            # (+reshot_of: not by the re-shot index, which every photo's NULL matches, a walk of the whole table)
            rows = self.db.execute(
                "SELECT DISTINCT sha256, object_id FROM photos WHERE +reshot_of IS NULL AND sha256 IN (SELECT sha256 "
                f"FROM photos WHERE +reshot_of IS NULL AND object_id IN ({','.join('?' * len(wanted))}))", wanted)
        else:
            rows = self.db.execute(
                "SELECT DISTINCT sha256, object_id FROM photos WHERE reshot_of IS NULL AND sha256 IN (SELECT sha256 "
                "FROM photos WHERE reshot_of IS NULL AND sha256 IS NOT NULL GROUP BY sha256 "
                "HAVING COUNT(DISTINCT object_id) > 1)")
        holders: dict[str, list[str]] = {}
        for sha, object_id in rows:
            holders.setdefault(sha, []).append(object_id)
        return {sha: sorted(objects) for sha, objects in sorted(holders.items())
                if len(objects) > 1 and (wanted is None or not asked.isdisjoint(objects))}

    def _photo_count(self) -> int:
        """Registered photos, their re-shots not counted."""
        return self.db.execute("SELECT COUNT(*) FROM photos WHERE reshot_of IS NULL").fetchone()[0]

    def required_lot_threshold(self) -> float:
        """``lot_threshold``, or ``RegisterError`` saying how to set one (tile searches need it)."""
        value = self.lot_threshold
        if value is None:
            raise RegisterError("the register has no lot threshold: run 'artsentry register calibrate REGISTER "
                                "PHOTOS --lots' on photos of unregistered objects")
        return value

    def _load_index(self) -> VectorIndex:
        n_photos = self.db.execute("SELECT COUNT(*) FROM photos").fetchone()[0]
        path = self.folder / INDEX_NAME
        expected = self.setting("index_sha256")
        if n_photos == 0 and not expected:
            return VectorIndex(self.dim, "exact")
        if not path.is_file():
            raise RegisterError(f"{path}: index file missing for {n_photos} registered photo(s); "
                                "run `artsentry register rebuild`")
        if file_sha256(path) != expected:
            raise RegisterError(f"{path}: index file is corrupted or out of step with the database "
                                "(checksum mismatch); run `artsentry register rebuild`")
        try:
            index = VectorIndex.load(path)
        except IndexFileError as exc:
            raise RegisterError(str(exc)) from None
        if len(index) != n_photos:
            raise RegisterError(f"{path}: index holds {len(index)} vectors, the database {n_photos}; "
                                "run `artsentry register rebuild`")
        return index

    def _save_index(self) -> None:
        path = self.folder / INDEX_NAME
        if len(self.index) == 0:
            path.unlink(missing_ok=True)
            self._set("index_sha256", "")
        else:
            self.index.save(path)
            self._set("index_sha256", file_sha256(path))
        self._set("index_count", str(len(self.index)))

    def _index_from_db(self) -> VectorIndex:
        rows = self.db.execute("SELECT vector_id, vector FROM photos ORDER BY vector_id").fetchall()
        index = VectorIndex.for_size(self.dim, len(rows))
        if rows:
            index.add([r[0] for r in rows], np.stack([np.frombuffer(r[1], dtype=np.float32) for r in rows]))
        return index

    def rebuild(self) -> int:
        """Recreate the index from the vectors in the database."""
        with self._change(sync=False):  # not read from its file first: that file may be what is damaged
            self._version = self._data_version()
            self.index = self._index_from_db()
            self._save_index()
        return len(self.index)

    def close(self) -> None:
        self.db.close()

    # -- changes --------------------------------------------------------------------------
    def add(self, object_id: str, photos: Sequence, **metadata) -> tuple[int, list[str], int]:
        """Register photos of one object (new, or more photos of a known one). A photo whose content
        is registered under the object already, or given twice, is not registered again: adding the
        same photos twice (a retried request, a folder added again) changes nothing but the metadata.
        Returns (photos added, re-shots not counted; one-line errors for unreadable photos; photos
        skipped as already registered)."""
        photos = as_sources(photos)
        check_object_id(object_id)  # before its photos are read
        todo, already = self._without_registered([(object_id, photos, metadata)])
        new = todo[0][1] if todo else []
        if already and not new:
            self._update(object_key(object_id), metadata)
            return 0, [], already
        added, errors, late = self._register([(object_id, new, metadata)])
        already += late  # registered by another process while these were embedded
        if not added and not late:
            raise RegisterError(f"object {object_id}: none of its {len(new)} {'new ' if already else ''}photo(s) "
                                "could be read: " + "; ".join(errors))
        return added, errors, already

    def _without_registered(self, objects: Sequence[tuple[str, Sequence, dict]]) -> tuple[list, int]:
        """``objects`` (id, photos, metadata) without the photos whose file content is registered under
        their object already or repeated among them, and the number of photos left out. Objects left with
        no photo are dropped; ids come back as stored (``object_key``)."""
        ids = sorted({object_key(o) for o, _, _ in objects})
        if len(ids) == 1:  # one object (``add``): its own photos, not the whole register's
            rows = self.db.execute("SELECT object_id, sha256 FROM photos WHERE reshot_of IS NULL AND object_id = ?",
                                   ids)
        else:
            rows = self.db.execute("SELECT object_id, sha256 FROM photos WHERE reshot_of IS NULL")
        have = set(rows)
        todo, skipped = [], 0
        for object_id, photos, metadata in objects:
            object_id, keep = object_key(object_id), []
            for photo in photos:
                key = (object_id, _photo_sha(photo))
                if key[1] is not None and key in have:
                    skipped += 1
                    continue
                have.add(key)
                keep.append(photo)
            if keep:
                todo.append((object_id, keep, metadata))
        return todo, skipped

    def _update(self, object_id: str, metadata: dict) -> None:
        """Set a registered object's metadata fields given (not None), recorded as ``update``."""
        sets = {k: metadata[k] for k in META_FIELDS if metadata.get(k) is not None}
        if not sets:
            return
        with self._change():
            self.db.execute(f"UPDATE objects SET {', '.join(f'{k} = ?' for k in sets)} WHERE object_id = ?",
                            (*sets.values(), object_id))
            self._log("update", object_id, metadata=sets)

    def add_many(self, objects: Sequence[tuple[str, Sequence, dict]], progress: bool = False) -> tuple[int, list[str]]:
        """Register many objects at once: ``(object_id, photos, metadata)`` each. One embedding
        pass, one transaction, one index write. Photos are paths or image bytes; all are read into memory
        together (``import_objects`` goes in chunks, for a catalogue). Returns
        (photos added, errors); objects none of whose photos can be read are not added. A photo whose
        content the object holds already, or given twice for it, is registered once (``add`` and
        ``import_objects`` leave those out before embedding, and count them)."""
        return self._register(objects, progress)[:2]

    def _register(self, objects: Sequence[tuple[str, Sequence, dict]], progress: bool = False,
                  urls: dict[tuple[str, str], str] | None = None) -> tuple[int, list, int]:
        """``add_many``, and the number of photos left out in its transaction as already registered:
        checked again there, under the write lock, since another process (the server, a second
        terminal) may have registered them while these were being embedded. ``urls``: the URL a photo's
        file was fetched from, by its object and absolute path, named in the history (``import_objects``)."""
        flat, owners, names = [], [], []
        objects = [(object_id, as_sources(photos), metadata) for object_id, photos, metadata in objects]
        for object_id, photos, _ in objects:
            check_object_id(object_id)
            flat += photos
            owners += [object_key(object_id)] * len(photos)
            # kept whole: a name relative to the terminal's folder named another file, or none, for the server's
            # thumbnails and for anyone tracing a match back to its photo from elsewhere
            names += [os.path.abspath(p) if isinstance(p, (str, os.PathLike)) else None for p in photos]
        # each file read once, here: its vector, its re-shots and the SHA-256 the register keeps all come
        # from these bytes, so a file changed while the batch is embedded cannot be kept under another's hash
        flat = [_bytes_or_source(photo, names[i] or f"<bytes {i}>") for i, photo in enumerate(flat)]
        parents: list[int | None] = [None] * len(flat)  # for a re-shot: the position of its photo in flat
        if self.reshots:
            flat, owners, names, parents = self._with_reshots(flat, owners, names, progress)
        vectors, errors = self.embedder.embed_files(
            flat, names=[n if n is not None else f"<image {i}>" for i, n in enumerate(names)], progress=progress)
        readable = {owners[i] for i, e in enumerate(errors) if e is None}
        ids, keep = [], []
        changes: dict[str, tuple[str, dict]] = {}  # object id -> (action, metadata set), for the history
        added_shas: dict[str, list] = {}  # object id -> SHA-256 of the photos added (not re-shots)
        added_urls: dict[str, dict] = {}  # object id -> {SHA-256: URL} of the photos added that were fetched
        with self._change():
            for object_id, _, metadata in objects:
                object_id = object_key(object_id)
                if object_id not in readable:
                    continue
                fields = {k: metadata.get(k) for k in META_FIELDS}
                extra = {k: v for k, v in metadata.items() if k not in META_FIELDS and v is not None}
                if self.db.execute("SELECT 1 FROM objects WHERE object_id = ?", (object_id,)).fetchone():
                    sets = {k: v for k, v in fields.items() if v is not None}
                    if sets:
                        self.db.execute(f"UPDATE objects SET {', '.join(f'{k} = ?' for k in sets)} "
                                        "WHERE object_id = ?", (*sets.values(), object_id))
                    changes.setdefault(object_id, ("add_photos", sets))
                else:
                    self.db.execute("INSERT INTO objects VALUES (?, ?, ?, ?, ?, ?)",
                                    (object_id, *fields.values(), json.dumps(extra, sort_keys=True)))
                    changes[object_id] = ("add", {k: v for k, v in {**fields, **extra}.items() if v is not None})
            vector_ids: dict[int, int] = {}
            held = {row for object_id in changes for row in self.db.execute(
                "SELECT object_id, sha256 FROM photos WHERE reshot_of IS NULL AND object_id = ?", (object_id,))}
            skipped = 0
            for i, (owner, photo) in enumerate(zip(owners, flat)):
                if errors[i] is not None or (parents[i] is not None and parents[i] not in vector_ids):
                    continue  # unreadable, or the re-shot of a photo not registered
                name = names[i] if names[i] is not None else f"<bytes {i}>"
                sha = _photo_sha(photo)
                if parents[i] is None and sha is not None:
                    if (owner, sha) in held:
                        skipped += 1
                        continue
                    held.add((owner, sha))
                cur = self.db.execute("INSERT INTO photos (object_id, name, sha256, vector, reshot_of) "
                                      "VALUES (?, ?, ?, ?, ?)",
                                      (owner, str(name), sha, vectors[i].tobytes(),
                                       None if parents[i] is None else vector_ids[parents[i]]))
                vector_ids[i] = cur.lastrowid
                ids.append(cur.lastrowid)
                keep.append(i)
                if parents[i] is None:
                    added_shas.setdefault(owner, []).append(sha)
                    if urls and (owner, name) in urls:
                        added_urls.setdefault(owner, {})[sha] = urls[owner, name]
            for object_id, (action, meta) in changes.items():
                if object_id not in added_shas:  # every photo held already: a metadata change at most
                    if meta:
                        self._log("update", object_id, metadata=meta)
                    continue
                self._log(action, object_id, photos=added_shas[object_id], **({"metadata": meta} if meta else {}),
                          **({"urls": added_urls[object_id]} if object_id in added_urls else {}))
            if ids:
                self.index.add(ids, vectors[keep])
                if self.index.kind == "exact" and kind_for(len(self.index)) == "ivf":
                    # grown past what exact search answers quickly: the approximate index, its cells
                    # trained once on the database's vectors (a minute or two at 200,000)
                    self.index = self._index_from_db()
            self._save_index()
        # photos, not vectors: a photo's re-shots are indexed with it, not counted beside it
        return sum(parents[i] is None for i in keep), [e for e in errors if e], skipped

    def _with_reshots(self, flat: list, owners: list, names: list, progress: bool):
        """Each readable photo followed by its re-shots (JPEG bytes, named after it), and for
        each entry the position of the photo it was made from (None for the photos themselves).
        ``flat``: the photos' bytes as read once by ``_register`` (a path where the file could not be read)."""
        from concurrent.futures import ProcessPoolExecutor

        from tqdm.auto import tqdm

        k = self.reshots
        out_flat, out_owners, out_names, out_parents = [], [], [], []
        tasks = []
        for photo in flat:
            data = photo if isinstance(photo, bytes) else None  # a path here is one that could not be read
            tasks.append((data, [int(hashlib.sha256(data).hexdigest()[:12], 16) + j for j in range(k)]
                          if data is not None else []))
        pool = ProcessPoolExecutor(2) if len(flat) >= 16 else None  # few photos: no pool to start
        try:
            shots = pool.map(_reshots_or_none, tasks, chunksize=4) if pool else map(_reshots_or_none, tasks)
            made = list(tqdm(shots, total=len(tasks), desc="re-shots", unit="photo", disable=not progress))
        finally:
            if pool:
                pool.shutdown()
        for i, shots in enumerate(made):
            parent = len(out_flat)
            out_flat.append(flat[i])
            out_owners.append(owners[i])
            out_names.append(names[i])
            out_parents.append(None)
            for j, shot in enumerate(shots):
                out_flat.append(shot)
                out_owners.append(owners[i])
                out_names.append(f"{names[i] or f'<bytes {i}>'}{RESHOT_SUFFIX}{j + 1}]")
                out_parents.append(parent)
        return out_flat, out_owners, out_names, out_parents

    def import_objects(self, objects: Sequence[tuple[str, Sequence, dict]], *, chunk_photos: int = 512,
                       progress: bool = False, desc: str = "register import", allow_private: bool = False,
                       urls: dict[tuple[str, str], str] | None = None, pictures=None) -> dict:
        """Register many objects from a table or folder (``read_objects``), in chunks of about
        ``chunk_photos`` photos, each its own transaction and index write: an import killed
        half-way keeps the chunks done, and the same import run again adds only what is missing,
        because a photo whose file content is already registered under that object is skipped
        (as are repeats within ``objects``). Returns counts, the unreadable photos' errors and
        ``shared_photos`` for the objects in the table (photos other objects hold too).

        A photo given as an http(s) URL (``read_objects(fetch_urls=True)``: a stolen-object database's
        export) is fetched, a chunk's URLs ``FETCH_THREADS`` at a time by screening's rules
        (``fetch.fetch_image``: public addresses only unless ``allow_private``), and its bytes are kept in the
        register's ``photos/`` under their SHA-256, as the server keeps uploads: the register does not depend
        on a host that may take the photo down. The history names the URL each such photo came from, and a
        URL registered under its object already is not fetched again when the import is run again. ``urls``:
        the URL files given were fetched from, by (object id, absolute path), for the history (``copy_to``).
        ``pictures``: the ``manifest.Pictures`` ``read_objects`` named in ``photos/`` (a workbook's), written here
        first, and those no registered photo names removed again at the end."""
        if pictures is not None and pictures.found:
            self._check_writable()
            written = pictures.write()
            try:
                return self.import_objects(objects, chunk_photos=chunk_photos, progress=progress, desc=desc,
                                           allow_private=allow_private, urls=urls)
            finally:
                self._drop_unnamed(written)
        from concurrent.futures import ThreadPoolExecutor

        from tqdm.auto import tqdm

        from ..fetch import is_http_url

        todo, skipped = self._without_registered(objects)
        if any(is_http_url(p) for _, photos, _ in todo for p in photos if isinstance(p, str)):
            self._check_writable()  # before a fetch: the photos fetched are kept in the register's folder
            todo, known = self._without_fetched(todo)
            skipped += known
        before = {r[0] for r in self.db.execute("SELECT object_id FROM objects")}
        added, errors = 0, []
        bar = tqdm(total=sum(len(p) for _, p, _ in todo), desc=desc, unit="photo", disable=not progress)

        def chunk_end(start: int) -> int:
            # each chunk rewrites the index file: chunks grow with the register, so a large import
            # writes it a few dozen times, not once per few hundred photos
            size = max(chunk_photos, len(self.index) // 8)
            end, n = start, 0
            while end < len(todo) and (n == 0 or n + len(todo[end][1]) <= size):
                n += len(todo[end][1])
                end += 1
            return end

        # the next chunk's URLs are fetched while this one is embedded (a host's latency hidden behind the model);
        # its photos are kept in photos/ here, once this chunk's files are settled. The bar counts photos
        # registered, and says beside it how many URLs are fetched: the first chunk's alone may take minutes
        urls_total = len({p for _, photos, _ in todo for p in photos if isinstance(p, str) and is_http_url(p)})
        fetched = itertools.count(1)

        def one_fetched() -> None:  # (from the fetching threads: tqdm's refresh holds its lock)
            bar.set_postfix_str(f"{next(fetched)} of {urls_total} URLs fetched")

        ahead = ThreadPoolExecutor(1, thread_name_prefix="import-fetch")
        stop = threading.Event()  # an import stopped (Ctrl-C, an error): the chunk being fetched asks no more URLs
        start, end = 0, chunk_end(0)
        fetching = ahead.submit(self._fetch_urls, todo[start:end], allow_private, one_fetched, stop)
        try:
            while start < len(todo):
                answers = fetching.result()
                following = chunk_end(end)
                if end < len(todo):
                    fetching = ahead.submit(self._fetch_urls, todo[end:following], allow_private, one_fetched, stop)
                chunk, fetched_urls, fetch_errors, written = self._keep_fetched(todo[start:end], answers)
                try:
                    done, errs, late = self._register(chunk, urls={**(urls or {}), **fetched_urls}) if chunk else (
                        0, [], 0)
                finally:  # a fetched file kept only for a registered photo: none in photos/ that no photo names
                    self._drop_unnamed(written)
                by_file = {name: url for (_, name), url in fetched_urls.items()}
                errs = [_named_by_url(e, by_file) for e in errs]  # a fetched photo's error names its URL
                added, errors, skipped = added + done, errors + fetch_errors + errs, skipped + late
                bar.update(sum(len(p) for _, p, _ in todo[start:end]))
                start, end = end, following
        finally:
            stop.set()
            ahead.shutdown(cancel_futures=True)  # waits for the URLs being fetched, at most 8 (each has a deadline)
        bar.close()
        now = {r[0] for r in self.db.execute("SELECT object_id FROM objects")}
        return {"objects_added": len(now - before), "objects_in_table": len({object_key(o) for o, _, _ in objects}),
                "photos_added": added, "already_registered": skipped, "errors": errors,
                "shared_photos": self.shared_photos([o for o, _, _ in objects])}

    def _drop_unnamed(self, paths: Sequence[Path]) -> None:
        """Remove those of ``paths`` (files an import wrote into ``photos/``) that no registered photo names."""
        for path in paths:
            if not self.db.execute("SELECT 1 FROM photos WHERE sha256 = ? AND name = ?",
                                   (path.name.split(".", 1)[0], str(path))).fetchone():
                path.unlink(missing_ok=True)

    def _without_fetched(self, objects: Sequence[tuple[str, Sequence, dict]]) -> tuple[list, int]:
        """``objects`` without the URLs whose photo is registered under their object already (the history's
        ``urls``, for photos the register still holds), and the number left out."""
        held = set(self.db.execute("SELECT object_id, sha256 FROM photos WHERE reshot_of IS NULL"))
        known = {(object_id, url) for object_id, sha, url in self._fetched_from() if (object_id, sha) in held}
        todo, skipped = [], 0
        for object_id, photos, metadata in objects:
            keep = [p for p in photos if (object_id, p) not in known]
            skipped += len(photos) - len(keep)
            if keep:
                todo.append((object_id, keep, metadata))
        return todo, skipped

    @staticmethod
    def _fetch_urls(objects: Sequence[tuple[str, Sequence, dict]], allow_private: bool, done=None,
                    stop: threading.Event | None = None) -> dict:
        """``import_objects``: the http(s) URLs among ``objects``' photos, each fetched once, ``FETCH_THREADS`` at
        a time: ``{URL: (bytes, None) or (None, error line)}``; bytes that are no image are an error. ``done()``
        is called as each URL's fetch ends (for a progress bar); once ``stop`` is set, the URLs not yet asked are
        not ("not fetched: the import stopped"): a chunk of 512 on a slow host held a stopped import for minutes."""
        from concurrent.futures import ThreadPoolExecutor

        from ..data.images import ImageLoadError, describe_content, image_format
        from ..fetch import FETCH_THREADS, fetch_image, is_http_url

        urls = list(dict.fromkeys(p for _, photos, _ in objects for p in photos if isinstance(p, str)
                                  and is_http_url(p)))
        if not urls:
            return {}

        def one(url: str) -> tuple[bytes | None, str | None]:
            if stop is not None and stop.is_set():
                return None, f"{url}: not fetched: the import stopped"
            try:
                data = fetch_image(url, allow_private=allow_private)
            except ImageLoadError as exc:
                return None, str(exc)
            finally:
                if done is not None:
                    done()
            if image_format(data) is None:
                return None, f"{url}: not an image: its content is {describe_content(data)}"
            return data, None

        with ThreadPoolExecutor(min(FETCH_THREADS, len(urls))) as pool:
            return dict(zip(urls, pool.map(one, urls)))

    def _keep_fetched(self, objects: Sequence[tuple[str, Sequence, dict]], answers: dict):
        """``import_objects``: the photos ``_fetch_urls`` fetched kept in ``photos/`` as ``<SHA-256>.<format>``.
        Returns the objects with each URL replaced by its file (left out when it could not be fetched),
        ``{(object id, file): URL}`` (two URLs may give the same bytes, one file), one error line per URL not
        fetched, and the files this call wrote (the caller removes those no registered photo names)."""
        from ..data.manifest import Pictures
        from ..fetch import is_http_url

        if not answers:
            return list(objects), {}, [], []
        kept = Pictures(self.folder / "photos")
        files: dict[str, str] = {}  # URL -> file
        errors = []
        for url, (data, error) in answers.items():
            if data is None:
                errors.append(error)
            else:
                files[url] = kept.name(data)
        written = kept.write()  # a full disk, Ctrl-C: none of these registered, none kept
        out, names = [], {}
        for object_id, photos, metadata in objects:
            for p in photos:
                if isinstance(p, str) and p in files:  # an object's photo: the first URL that gave its bytes
                    names.setdefault((object_key(object_id), files[p]), p)
            photos = [files.get(p) if isinstance(p, str) and is_http_url(p) else p for p in photos]
            photos = [p for p in photos if p is not None]
            if photos:
                out.append((object_id, photos, metadata))
        return out, names, errors, written

    def copy_to(self, folder: str | Path, embedder: str | None = None, *, progress: bool = False) -> dict:
        """A new register at ``folder`` with this one's objects, their metadata and their photos, each photo
        read again from its file and embedded with ``embedder`` (default: this register's, as its folder
        holds it now): the way on once its embedder was trained again (``embedder`` refuses it then) or
        photos are read otherwise, and the way to try another embedder. Re-shots, mirror images and scoring
        are kept; the thresholds are not (they were chosen for other vectors: calibrate the new one). A
        photo is read from the file it was registered from (its name here), and left out, and said, when
        that file is gone or holds other bytes than were registered (by SHA-256); photos the server stored
        in this register's ``photos/`` are copied into the new one's. This register is not changed. A copy
        stopped half-way (Ctrl-C, a full disk) goes on when run again: the photos it holds are skipped."""
        described = json.loads(self.setting("embedder"))
        spec = embedder or described["spec"]
        # the same embedder reads photos as before (registers from before 2026-12-04: squash); another its own way
        resize = (described.get("preprocessing") or {}).get("resize") if embedder is None else None
        stored = (self.folder / "photos").resolve()
        objects, problems = [], []
        urls: dict[tuple[str, str], str] = {}  # (object id, photo) -> the URL it was fetched from
        rows = self.db.execute("SELECT object_id, name, sha256 FROM photos WHERE reshot_of IS NULL "
                               "ORDER BY object_id, vector_id").fetchall()
        by_object: dict[str, list[tuple[str, str]]] = {}
        for object_id, name, sha in rows:
            by_object.setdefault(object_id, []).append((name, sha))
        new_folder, source = Path(folder), str(self.folder.resolve())
        if (new_folder / DB_NAME).exists():
            from .embedder import spec_key

            new = Register.open(new_folder)
            going_on = json.loads(new.setting("embedder"))["spec"]
            wanted = None if embedder is None else spec_key(embedder)
            unfinished = new._copying(source)
            if not unfinished or wanted not in (None, going_on):
                new.close()
                raise RegisterError(f"{new_folder}: a register already exists" + (
                    f" (an unfinished copy of this one with the embedder {going_on}: run the copy again without "
                    "--embedder or with that one to go on)" if unfinished else ""))
        else:
            new = Register.create(new_folder, spec, reshots=self.reshots, flip=bool(described.get("flip", False)),
                                  scoring=self.scoring, resize=resize)
            new._log("copy_started", source=source)  # until "copy": a copy to go on with if stopped
        try:
            for object_id in sorted(by_object):
                fetched = self._photo_urls(object_id)
                photos = []
                for name, sha in by_object[object_id]:
                    photo = self._copied_photo(name, sha, object_id, stored, new_folder, problems)
                    if photo is not None:
                        photos.append(photo)
                        if sha in fetched:  # its URL carried into the new register's history
                            urls[object_id, os.path.abspath(photo)] = fetched[sha]
                if photos:
                    meta = {k: v for k, v in (self.get(object_id) or {}).items()
                            if k not in ("object_id", "photos", "reshots", "photo_urls")}
                    objects.append((object_id, photos, meta))
            done = new.import_objects(objects, progress=progress, desc="register copy", urls=urls) if objects else {
                "photos_added": 0, "errors": []}
            problems += done["errors"]
            copied = len(new)
            photos_copied = new._photo_count()
            left_out = sorted(set(by_object) - {o["object_id"] for o in new.list()})  # no photo could be read again
            # (a history entry's "photos" is a list of SHA-256: counts go under other names)
            new._log("copy", source=source, embedder_was=described["spec"],
                     objects_copied=copied, photos_copied=photos_copied, photos_left_out=len(problems),
                     objects_left_out=left_out)
            embedded_with = json.loads(new.setting("embedder"))["spec"]
        finally:
            new.close()
        return {"objects": copied, "photos": photos_copied, "problems": problems,
                "objects_left_out": left_out, "embedder": embedded_with}

    def _copying(self, source: str) -> bool:
        """Whether this register is a ``copy_to`` of ``source`` that has not finished."""
        state = None
        for entry in self.history():
            if entry["action"] == "copy_started":
                state = entry.get("source")
            elif entry["action"] == "copy":
                state = None
        return state == source

    @staticmethod
    def _copied_photo(name: str, sha: str, object_id: str, stored: Path, new_folder: Path,
                      problems: list[str]) -> str | None:
        """``copy_to``: what the new register reads for one registered photo (its file, or the server's
        stored photo copied beside the new register), or None with the reason in ``problems``."""
        from ..files import write_bytes_atomic

        path = Path(name)
        if name.startswith("<") and name.endswith(">"):  # given as bytes, through the library
            problems.append(f"{name}: not copied: it was registered from bytes, not a file (object {object_id})")
            return None
        try:
            data = path.read_bytes() if path.is_file() else None
        except OSError:
            data = None
        if data is None:
            problems.append(f"{name}: not copied: the file is gone (object {object_id})")
            return None
        if hashlib.sha256(data).hexdigest() != sha:
            problems.append(f"{name}: not copied: the file holds other bytes than were registered (object {object_id})")
            return None
        if path.resolve().parent == stored:  # kept by the server: copied beside the new register
            write_bytes_atomic(new_folder / "photos" / path.name, data)
            return str((new_folder / "photos" / path.name).resolve())
        return str(path)

    def remove(self, object_id: str) -> int:
        """Take an object out, with its photos' re-shots; returns the number of photos removed (re-shots
        not counted). ``NotRegistered`` when it is not registered."""
        object_id = object_key(object_id)
        with self._change():
            ids = [r[0] for r in self.db.execute("SELECT vector_id FROM photos WHERE object_id = ?", (object_id,))]
            was = self.get(object_id)
            if was is not None:  # what it was, kept in the history after the object is gone
                self._log("remove", object_id, photos_removed=len(was["photos"]),
                          was={k: was[k] for k in META_FIELDS if was.get(k) is not None})
            found = self.db.execute("DELETE FROM objects WHERE object_id = ?", (object_id,)).rowcount
            self.db.execute("DELETE FROM photos WHERE object_id = ?", (object_id,))
            if ids:
                self.index.remove(ids)
            self._save_index()
        if not found:
            raise NotRegistered(f"object {object_id!r} is not in the register")
        return len(was["photos"])

    # -- reading --------------------------------------------------------------------------
    def get(self, object_id: str) -> dict | None:
        row = self.db.execute("SELECT object_id, title, department, source, status, extra FROM objects "
                              "WHERE object_id = ?", (object_key(object_id),)).fetchone()
        if row is None:
            return None
        rows = self.db.execute("SELECT name, reshot_of, sha256 FROM photos WHERE object_id = ? ORDER BY vector_id",
                               (object_key(object_id),)).fetchall()
        photos = [r for r in rows if r[1] is None]
        out = {"object_id": row[0], "title": row[1], "department": row[2], "source": row[3], "status": row[4],
               **json.loads(row[5] or "{}"), "photos": [r[0] for r in photos],
               "reshots": sum(r[1] is not None for r in rows)}
        urls = self._photo_urls(row[0])
        if urls:  # where each photo came from, beside it (None: a file or an upload)
            out["photo_urls"] = [urls.get(r[2]) for r in photos]
        return out

    def _photo_urls(self, object_id: str) -> dict[str, str]:
        """SHA-256 -> the URL an object's photo was fetched from (``_fetched_from``; the latest for a photo
        fetched again)."""
        return {sha: url for _, sha, url in self._fetched_from(object_id)}

    def _fetched_from(self, object_id: str | None = None) -> list[tuple[str, str, str]]:
        """(object id, SHA-256, URL) of each photo fetched (``import_objects``), of every object or one, oldest
        first: the history's ``urls``."""
        where, args = ("object_id = ? AND ", (object_id,)) if object_id is not None else ("", ())
        return [(owner, sha, url) for owner, detail in self.db.execute(
                    f"SELECT object_id, detail FROM history WHERE {where}action IN ('add', 'add_photos') AND "
                    "detail LIKE '%\"urls\"%' ORDER BY id", args)
                for sha, url in json.loads(detail).get("urls", {}).items()]

    def reference(self, object_id: str, query: np.ndarray) -> np.ndarray:
        """The vector whose inner product with ``query`` (one embedding) is the object's similarity as
        the search scores it: the best photo's vector, or for a photo with re-shots the mean of its
        best-matching versions (``photo_score``, which is linear in the query once they are chosen).
        An explanation of that product explains the similarity the search reports."""
        groups: dict[int, list[np.ndarray]] = {}
        for g, blob in self.db.execute("SELECT COALESCE(reshot_of, vector_id), vector FROM photos WHERE object_id = ? "
                                       "ORDER BY vector_id", (object_key(object_id),)):
            groups.setdefault(g, []).append(np.frombuffer(blob, dtype=np.float32))
        if not groups:
            raise RegisterError(f"object {object_id!r} is not in the register")
        best, best_score = None, -np.inf
        for versions in groups.values():
            v = np.stack(versions)
            sims = v @ query
            order = np.argsort(-sims, kind="stable")
            ref = v[order[0]] if sims[order[0]] >= NEAR_DUPLICATE else v[order[:VERSIONS_SCORED]].mean(axis=0)
            if float(ref @ query) > best_score:
                best, best_score = ref, float(ref @ query)
        return best

    def object_vectors(self, object_id: str) -> np.ndarray:
        """The embeddings of one object's photos (n, dim), in the order they were added."""
        rows = self.db.execute("SELECT vector FROM photos WHERE object_id = ? ORDER BY vector_id",
                               (object_key(object_id),)).fetchall()
        return np.stack([np.frombuffer(r[0], dtype=np.float32) for r in rows]) if rows else \
            np.zeros((0, self.dim), np.float32)

    def list(self) -> list[dict]:
        """Every object with its metadata, its number of photos and of re-shots indexed with them."""
        rows = self.db.execute(
            "SELECT o.object_id, o.title, o.department, o.source, o.status, "
            "COUNT(p.vector_id) - COUNT(p.reshot_of), COUNT(p.reshot_of) FROM objects o "
            "LEFT JOIN photos p ON p.object_id = o.object_id GROUP BY o.object_id ORDER BY o.object_id")
        return [{"object_id": r[0], "title": r[1], "department": r[2], "source": r[3], "status": r[4],
                 "photos": r[5], "reshots": r[6]} for r in rows]

    def __len__(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM objects").fetchone()[0]

    def _photo_groups(self, vector_ids: list[int]) -> dict[int, tuple[str, int]]:
        """vector_id -> (object_id, photo group: its own id, or that of the photo it is a re-shot of)."""
        out = {}
        for chunk in range(0, len(vector_ids), 900):
            part = vector_ids[chunk:chunk + 900]
            out.update((r[0], (r[1], r[2])) for r in self.db.execute(
                f"SELECT vector_id, object_id, COALESCE(reshot_of, vector_id) FROM photos "
                f"WHERE vector_id IN ({','.join('?' * len(part))})", part))
        return out

    def _group_vectors(self, groups: list[int]) -> dict[int, np.ndarray]:
        """The vectors of each photo group (a photo and its re-shots), by group id."""
        out: dict[int, list] = {}
        for chunk in range(0, len(groups), 450):
            part = groups[chunk:chunk + 450]
            marks = ",".join("?" * len(part))
            for gid, blob in self.db.execute(
                    f"SELECT COALESCE(reshot_of, vector_id), vector FROM photos WHERE vector_id IN ({marks}) "
                    f"OR reshot_of IN ({marks})", part + part):
                out.setdefault(gid, []).append(np.frombuffer(blob, dtype=np.float32))
        return {g: np.stack(v) for g, v in out.items()}

    def search_vectors(self, vectors: np.ndarray, k: int = 5) -> list[list[Match]]:
        """Top-``k`` objects per query vector. An object scores its best photo; a photo with
        re-shots scores the mean of its two best-matching versions; the match score is that
        similarity, contrasted with the next objects' under ``scoring="contrast"`` (module
        docstring)."""
        self._sync()
        n_photos = len(self.index)
        if n_photos == 0:
            return [[] for _ in range(len(vectors))]
        contrast = self.scoring == "contrast"
        # objects each query must reach: its k, and under contrast scoring the next ones its score is
        # contrasted with
        need = max(k, CONTRAST_OTHERS + 1) if contrast else k
        depth = min(n_photos, max(4 * need, need + 32))
        while True:
            scores, ids = self.index.search(vectors, depth)
            found = self._photo_groups(sorted({int(i) for i in ids.ravel() if i >= 0}))
            # an object with many photos can fill the whole depth: then the others, which its
            # contrast score and the top k need, are searched for deeper (unless the register holds
            # no more objects: counted only then, off the common path)
            reached = min((len({found[int(i)][0] for i in row if i >= 0}) for row in ids), default=need)
            if depth >= n_photos or reached >= need or reached >= len(self):
                break
            depth = min(n_photos, 4 * depth)
        grouped = self.db.execute("SELECT 1 FROM photos WHERE reshot_of IS NOT NULL LIMIT 1").fetchone() is not None
        members: dict[int, np.ndarray] = {}
        if grouped:
            # every photo group the search reached is scored on all of its versions (the
            # search may have returned only some of them)
            members = self._group_vectors(sorted({g for _, g in found.values()}))
        meta = {}
        out = []
        for q, (srow, irow) in enumerate(zip(scores, ids)):
            best: dict[str, float] = {}
            if grouped:
                for obj, g in {found[int(i)] for i in irow if i >= 0}:  # a group belongs to one object
                    s = float(photo_score(members[g] @ vectors[q]))
                    best[obj] = max(best.get(obj, -np.inf), s)
            else:
                for s, i in zip(srow, irow):
                    if i >= 0 and found[int(i)][0] not in best:
                        best[found[int(i)][0]] = float(s)
            ranked = sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))
            sims = np.array([s for _, s in ranked])
            match_scores = contrast_scores(sims) if contrast else sims
            matches = []
            for (obj, s), score in list(zip(ranked, match_scores))[:k]:
                if obj not in meta:
                    meta[obj] = self.get(obj)
                m = meta[obj]
                matches.append(Match(obj, round(float(score), 6), round(s, 6), m["title"], m["department"],
                                     m["source"], m["status"]))
            out.append(matches)
        return out

    def calibrate(self, unregistered: Sequence, target_fmr: float = 0.01, progress: bool = False,
                  lots: bool = False, compose: int | None = None) -> dict:
        """Set the no-match threshold from photos of objects that are NOT in the register
        (ideally listing photos like the ones that will be searched): the lowest threshold at
        which at most ``target_fmr`` of them would match something. Returns what it did.
        ``lots``: the threshold of tile searches, from the best match over each photo's crops
        (ideally photos of several unregistered objects). ``compose``: the photos show one object
        each; ``compose`` lot photos of four of them are made from them (``lots.compose_lot``,
        seeded) and calibrated on instead."""
        from ..lots import TILE_GRID

        if not len(self):  # nothing to match: the threshold would sit at the lowest score, and mean nothing
            raise RegisterError("the register holds no objects: register them first, then calibrate (the threshold "
                                "is where photos of other objects stop matching the registered ones)")
        unregistered = as_sources(unregistered)
        held = self._registered_photos(unregistered)
        if held:
            name, obj = held[0]
            raise RegisterError(f"{len(held)} of the {len(unregistered)} calibration photo(s) are registered here "
                                f"(e.g. {name}, a photo of object {obj}): they match themselves, so the threshold "
                                "would rise to their scores and hide true matches; calibrate on photos of objects "
                                "that are not registered")
        if compose:
            if not lots:
                raise RegisterError("composing lot photos (--compose) calibrates the lot threshold: add --lots")
            unregistered, unread = compose_calibration_lots(unregistered, compose)
        else:
            unread = []
        vectors, errors = self.embedder.embed_files(unregistered, progress=progress,
                                                    tiles=TILE_GRID if lots else None)
        ok = np.array([e is None for e in errors], bool)
        if not ok.any():
            raise RegisterError("none of the calibration photos could be read")
        if lots:
            best = np.array([next((m.score for m in self.search_tiles(v, k=1)), -1.0) for v in vectors[ok]])
        else:
            best = np.array([m[0].score if m else -1.0 for m in self.search_vectors(vectors[ok], k=1)])
        threshold = threshold_for_false_match_rate(best, target_fmr)
        if 0 < target_fmr and len(best) * target_fmr < 1:  # not one photo may match: the rate is not measured
            log.warning("calibrated on %d photo(s): a false-match rate of %g needs %d or more to be measured (one "
                        "false match among %d is a rate of 1/%d); the threshold is set just above the best score of "
                        "these, and the rate it gives is not known: calibrate on more photos of unregistered objects",
                        len(best), target_fmr, math.ceil(1 / target_fmr - 1e-9), len(best), len(best))
        how = {"calibrated_on": int(ok.sum()), "target_false_match_rate": target_fmr}
        if lots:
            with self._change():
                self._set("lot_threshold", json.dumps(threshold))
                self._log("lot_threshold", value=threshold, **how)
        else:
            self.set_threshold(threshold, **how)
        return {"threshold": threshold, "target_false_match_rate": target_fmr, "photos": int(ok.sum()),
                "unreadable": unread + [e for e in errors if e], "false_matches": int((best >= threshold).sum())}

    def _registered_photos(self, sources: Sequence) -> list[tuple[str, str]]:
        """(name, object id) of each of ``sources`` whose content is a registered photo's."""
        shas = [_photo_sha(p) for p in sources]
        wanted = sorted({s for s in shas if s is not None})
        owner: dict[str, str] = {}
        for chunk in range(0, len(wanted), 900):
            part = wanted[chunk:chunk + 900]
            owner.update(self.db.execute(f"SELECT sha256, object_id FROM photos WHERE +reshot_of IS NULL AND "
                                         f"sha256 IN ({','.join('?' * len(part))})", part).fetchall())
        return [(name, owner[s]) for name, s in zip(source_names(sources), shas) if s in owner]

    def search_tiles(self, vectors: np.ndarray, k: int = 5) -> list[Match]:
        """One photo's crops (the whole photo, then its tiles, ``lots.tile_crops``) searched at
        once: each object keeps its best-scoring crop (``Match.box``), best ``k`` first."""
        from ..lots import TILE_GRID, tile_fractions

        grid = round((len(vectors) - 1) ** 0.5)
        if grid * grid + 1 != len(vectors):
            raise ValueError(f"{len(vectors)} vectors are not a photo and a square grid of its tiles")
        boxes = [None] + tile_fractions(grid or TILE_GRID)
        best: dict[str, Match] = {}
        for box, matches in zip(boxes, self.search_vectors(vectors, k)):
            for m in matches:
                if m.object_id not in best or m.score > best[m.object_id].score:
                    best[m.object_id] = replace(m, box=box)
        return sorted(best.values(), key=lambda m: -m.score)[:k]

    def search(self, images: Sequence[str], k: int = 5, threshold: float | None = None,
               lots: bool = False) -> list[SearchResult]:
        """The best ``k`` registered objects for each photo. ``lots``: photos of several objects;
        the whole photo and its 3 x 3 half-size tiles are searched (``artsentry.lots``), each
        object keeps its best-scoring crop (``Match.box``), and "no match" is decided at the
        register's lot threshold (``calibrate(lots=True)``), unless ``threshold`` is given. With no
        threshold given or set, nothing is decided: ``no_match`` is None wherever there are matches."""
        if lots:
            from ..lots import TILE_GRID

            if threshold is None:
                try:
                    threshold = self.required_lot_threshold()
                except RegisterError as exc:
                    raise RegisterError(f"{exc} (or give --threshold)") from None
        threshold = self.threshold if threshold is None else threshold
        images = as_sources(images)
        names = source_names(images)  # a photo given as bytes is "<image i>", not its bytes' repr
        vectors, errors, qualities = self.embedder.embed_files(images, names, with_quality=True,
                                                               tiles=TILE_GRID if lots else None)
        ok = [i for i, e in enumerate(errors) if e is None]
        if lots:
            found = [self.search_tiles(vectors[i], k) for i in ok]
        else:
            found = self.search_vectors(vectors[ok], k) if ok else []
        results = [SearchResult(names[i], error=errors[i], threshold=threshold, quality=qualities[i])
                   for i in range(len(images))]
        for i, matches in zip(ok, found):
            r = results[i]
            r.matches = matches
            matched = is_match(matches, threshold)
            r.no_match = None if matched is None else not matched
        return results


def is_match(matches: Sequence[Match], threshold: float | None) -> bool | None:
    """The register's decision on a photo from its matches, best first: False when nothing is registered,
    None (undecided) when there is no threshold, else whether the best scores at or above it. ``register
    search``, the server and ``screen`` all decide by it, so one photo gets one answer everywhere."""
    if not matches:
        return False
    if threshold is None:
        return None
    return bool(matches[0].score >= threshold)


def photo_score(similarities: np.ndarray, versions: int = VERSIONS_SCORED,
                near_duplicate: float = NEAR_DUPLICATE) -> np.ndarray:
    """A photo's score from the similarities of its versions (the photo and its re-shots; last
    axis): the mean of the ``versions`` best, so that one lucky version counts less; but a
    version matching at least ``near_duplicate`` is a near-copy of the query, and the photo
    scores it (a copy of a registered photo scores ~1, not the mean of itself and a re-shot).
    On the met-ivory benchmark no unregistered query came within 0.9 of any version."""
    best = np.sort(similarities, axis=-1)[..., ::-1]
    mean = best[..., :versions].mean(axis=-1)
    return np.where(best[..., 0] >= near_duplicate, best[..., 0], mean)


def contrast_scores(similarities: np.ndarray, others: int = CONTRAST_OTHERS,
                    weight: float = CONTRAST_WEIGHT) -> np.ndarray:
    """Contrast match scores of objects whose similarities to a query are given best first
    (last axis): each object's similarity minus ``weight`` x the mean similarity of the
    ``others`` best other objects (fewer when there are fewer; none: nothing subtracted).
    The order is the order of the similarities."""
    s = np.asarray(similarities, dtype=np.float64)
    n = s.shape[-1]
    if n < 2:
        return s.copy()
    top = s[..., :others + 1]
    m = top.shape[-1]
    # object j among the first m: the others are the first m without j, cut to ``others``;
    # every later object: the first ``others``
    penalty = np.empty_like(s)
    for j in range(m):
        rest = np.delete(top, j, axis=-1)[..., :others]
        penalty[..., j] = rest.mean(axis=-1)
    if n > m:
        penalty[..., m:] = top[..., :others].mean(axis=-1, keepdims=True)
    return s - weight * penalty


def object_key(object_id) -> str:
    """How an object's id is stored and looked up: as text, without surrounding spaces (a catalogue's
    "1999.A " is object "1999.A"), in Unicode's composed form (NFC: "Musée" typed, and "Musée" from a folder
    name on a Mac, which decomposes the "é", are one id), so that adding, finding and removing it agree."""
    return unicodedata.normalize("NFC", str(object_id).strip())


OBJECT_ID_MAX = 128  # characters of an object id
# An object id: what museums and police registers use ("29.100.6a–c", "Inv. 1999/12 (a)", "象牙-1"), 1 to
# OBJECT_ID_MAX characters, none a control character (a tab or newline would break the tables it is listed in)
# and no space at either end (``object_key``); not ending in "/history", the web API's path of an object's
# history. The same rule for the command, an import and the API (its OpenAPI pattern), so that every object
# registered can be fetched and removed through the API too. Ids are never used as paths.
OBJECT_ID = re.compile(r"^(?!\s)(?!.*\s$)(?!.*/history$)[^\x00-\x1f\x7f-\x9f]{1,%d}$" % OBJECT_ID_MAX)


def check_object_id(object_id) -> str:
    """``object_key(object_id)``, or ``RegisterError`` saying why it cannot be an object's id (``OBJECT_ID``)."""
    key = object_key(object_id)
    if OBJECT_ID.fullmatch(key):
        return key
    shown = repr(key[:80]) + ("..." if len(key) > 80 else "")
    if not key:
        why = "an object needs a non-empty id"
    elif len(key) > OBJECT_ID_MAX:
        why = f"object id {shown} is {len(key)} characters long; at most {OBJECT_ID_MAX}"
    elif key.endswith("/history"):
        why = f"object id {shown} ends in '/history', the web API's path of an object's history"
    else:
        why = f"object id {shown} holds control characters (a tab, a newline...)"
    raise RegisterError(why)


def _migrate(db: sqlite3.Connection) -> None:
    """Bring a register written by an earlier version up to this schema: re-shots name the
    photo they were made from (``reshot_of``), recovered from their names."""
    db.executescript(HISTORY_SCHEMA)  # the history began with registers made after it; empty before
    columns = {r[1] for r in db.execute("PRAGMA table_info(photos)")}
    if "reshot_of" in columns:
        return
    with db:
        db.execute("BEGIN")
        db.execute("ALTER TABLE photos ADD COLUMN reshot_of INTEGER")
        db.execute("CREATE INDEX IF NOT EXISTS photos_reshot ON photos(reshot_of)")
        for vid, obj, name in db.execute("SELECT vector_id, object_id, name FROM photos WHERE name LIKE ?",
                                         (f"%{RESHOT_SUFFIX}%]",)).fetchall():
            source = name[:name.rindex(RESHOT_SUFFIX)]
            parent = db.execute("SELECT MIN(vector_id) FROM photos WHERE object_id = ? AND name = ?",
                                (obj, source)).fetchone()[0]
            if parent is not None:
                db.execute("UPDATE photos SET reshot_of = ? WHERE vector_id = ?", (parent, vid))


def compose_calibration_lots(photos: Sequence, n: int, seed: int = 0) -> tuple[list[bytes], list[str]]:
    """``n`` JPEG lot photos of four of ``photos`` each (drawn with ``seed``), for calibrating a
    lot threshold from photos of one unregistered object each, and the unreadable photos' errors."""
    import io

    from ..data.images import ImageLoadError, load_image
    from ..lots import LOT_OBJECTS, compose_lot

    readable, errors = [], []
    for p in photos:
        try:
            readable.append(load_image(p, draft_size=(512, 512)))
        except ImageLoadError as exc:
            errors.append(str(exc))
    if len(readable) < LOT_OBJECTS:
        raise RegisterError(f"composing lot photos needs at least {LOT_OBJECTS} readable photos")
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        picks = rng.choice(len(readable), LOT_OBJECTS, replace=False)
        buf = io.BytesIO()
        compose_lot([readable[i] for i in picks], rng).save(buf, format="JPEG", quality=92)
        out.append(buf.getvalue())
    return out, errors


def threshold_for_false_match_rate(unregistered_best: np.ndarray, target: float) -> float:
    """The lowest no-match threshold (a match needs score >= threshold) at which at most
    ``target`` of these queries of unregistered objects (their best scores) would match."""
    s = np.sort(np.asarray(unregistered_best, dtype=np.float64))[::-1]
    if not 0 <= target < 1:
        raise ValueError("the target false-match rate must be in [0, 1)")
    if len(s) == 0:
        raise ValueError("no photos of unregistered objects to calibrate on")
    allowed = int(np.floor(target * len(s) + 1e-9))  # queries that may match
    # just above the (allowed+1)-th best score: that one and all below it answer "no match"
    return float(np.nextafter(s[allowed], np.inf))


def _reshots_or_none(task) -> list[bytes]:
    from ..data.images import ImageLoadError
    from ..data.listing import reshot_jpegs

    data, seeds = task
    if data is None or not seeds:
        return []
    try:
        return reshot_jpegs(data, seeds)
    except ImageLoadError:
        return []  # the photo itself is reported unreadable by the embedding pass


#: columns ``read_objects`` takes an object's id and its photo from (first found, any case); the URL columns last,
#: so that a crawl's table (``image`` and ``url``) registers its files. A bare ``url`` is not one: in a catalogue
#: it is as often the object's web page as its photo.
OBJECT_ID_COLUMNS = ("object_id", "objectID", "objectid", "source_id", "accession_number", "object_number",
                     "inventory_number", "id", "object")  # object number: a museum system's (Spectrum's) name
PHOTO_COLUMNS = ("image", "image_path", "images", "path", "file", "photo", "photos", "filename", "image_url",
                 "image_urls", "photo_url", "photo_urls", "picture", "pictures")


def read_objects(source: str | Path, fetch_urls: bool = False,
                 pictures=None) -> tuple[list[tuple[str, list[str], dict]], list[str]]:
    """The objects to register from ``source``: a folder with one sub-folder of photos per
    object (the sub-folder's name is the object id), or a table (CSV, TSV, JSON, JSONL, Parquet, XLSX) with one
    row per photo: an object id column, a photo column (paths relative to the table's folder),
    and optionally ``title``, ``department``, ``source``, ``status`` and any other columns, kept
    as the object's metadata (from its first row that has them). A column other than those four whose
    values differ between the rows of one object is the photos' (a crawl's ``url``, ``sha256``,
    ``image_index``), not the object's: it is not kept, with a warning naming it. A photo given as an
    http(s) URL (a stolen-object database's export) is kept as the URL with ``fetch_urls`` (``import_objects``
    fetches it), else said and left out. A workbook's pictures placed on its photo cells are their photos, named
    in ``pictures`` (a ``manifest.Pictures`` on the register's ``photos/``: ``import_objects`` writes them).
    Returns ``(object_id, photos, metadata)`` in input order, and one line per row or file that cannot be
    used."""
    from ..data.images import find_images, is_image_file
    from ..data.manifest import (ADDITIONAL_PHOTO_COLUMNS, ManifestError, _pick, _read_table, paths_hint,
                                 photo_columns, photos_in, refuse_image_objects, row_name, table_path)
    from ..fetch import is_http_url

    source = Path(source)
    if not source.exists():
        raise RegisterError(f"{source}: no such file or folder")
    problems: list[str] = []
    if source.is_dir():
        objects = []
        for folder in sorted(p for p in source.iterdir() if p.is_dir() and not p.name.startswith(".")):
            not_utf8: list[str] = []
            photos = [str(f.resolve()) for f in find_images(folder, not_utf8=not_utf8)]
            problems += [f"{name}: not registered: its file name is not UTF-8; rename it (for example with convmv) "
                         "and import again" for name in not_utf8]
            try:
                check_object_id(folder.name)
            except RegisterError as exc:
                problems.append(f"{folder}: {exc}: not registered")
                continue
            if photos:
                objects.append((folder.name, photos, {}))
            else:
                problems.append(f"{folder}: no image files: not registered")
        loose = [f for f in source.iterdir() if f.is_file() and is_image_file(f)]
        if loose:
            problems.append(f"{source}: {len(loose)} photo(s) lie outside any object folder and are not registered "
                            "(one sub-folder per object: its name is the object id)")
        if not objects:
            raise RegisterError(f"{source}: no object folders with photos (expected {source}/<object id>/<photos>)")
        return objects, problems
    try:
        # a list of photos; other lists as metadata
        raw = _read_table(source, lists=PHOTO_COLUMNS + ADDITIONAL_PHOTO_COLUMNS, as_json=True, pictures=pictures)
        id_col = _pick(raw.columns, OBJECT_ID_COLUMNS, "object id", str(source))
        # image, image2... too, and the row's additional_images
        photo_cols = photo_columns(raw.columns, PHOTO_COLUMNS, "photo", str(source), more=ADDITIONAL_PHOTO_COLUMNS)
        refuse_image_objects(raw, photo_cols, source)
    except ManifestError as exc:
        raise RegisterError(str(exc)) from None
    meta_cols = [c for c in raw.columns if c != id_col and c not in photo_cols]
    base = source.parent.resolve()
    records = [dict(zip(raw.columns, row)) for row in raw.itertuples(index=False)]
    named = [photos_in(values, photo_cols) for values in records]
    hint, every = paths_hint([p for photos in named for p in photos], base)  # as screen says of its tables
    if every:
        raise RegisterError(f"{source}: {hint}; nothing was imported")
    if hint:
        problems.append(f"{source}: {hint}")
    by_id: dict[str, tuple[list[str], dict]] = {}
    per_photo: dict[str, str] = {}  # column -> an object whose rows differ in it
    for i, (values, row_photos) in enumerate(zip(records, named)):
        object_id = object_key(values[id_col])
        if not object_id or not row_photos:
            problems.append(f"{source} {row_name(source, i)}: no {'object id' if not object_id else 'photo'}: skipped")
            continue
        try:
            check_object_id(object_id)
        except RegisterError as exc:
            problems.append(f"{source} {row_name(source, i)}: {exc}: skipped")
            continue
        paths = [table_path(p, base) for p in row_photos]  # a file:// URL is its path
        for photo in [p for p in paths if "://" in p and not (fetch_urls and is_http_url(p))]:
            why = ("only http(s) URLs are fetched; download it first" if fetch_urls else
                   "photos are read from files: import with --fetch-urls to download it, or download it first")
            problems.append(f"{source} {row_name(source, i)}: {photo}: {why}")
        paths = [p for p in paths if "://" not in p or (fetch_urls and is_http_url(p))]
        if not paths:
            continue
        photos, meta = by_id.setdefault(object_id, ([], {}))
        photos += paths
        for c in meta_cols:
            key = c.lower() if c.lower() in META_FIELDS else c
            value = values[c].strip()
            if value and meta.get(key) is None:
                meta[key] = value
            elif value and value != meta.get(key) and key not in META_FIELDS:
                per_photo.setdefault(key, object_id)
    if not by_id:
        raise RegisterError(f"{source}: no row names both an object id and a photo")
    if per_photo:
        log.warning("%s: column(s) %s differ between one object's photos (e.g. object %s's), so they describe "
                    "the photos, not the object: not kept as its metadata", source, ", ".join(per_photo),
                    next(iter(per_photo.values())))
    return [(k, photos, {f: v for f, v in meta.items() if f not in per_photo})
            for k, (photos, meta) in by_id.items()], problems


def _named_by_url(error: str, urls: dict[str, str]) -> str:
    """An unreadable photo's error line (``name: reason``), named by the URL its file was fetched from."""
    name, sep, reason = error.partition(": ")
    return f"{urls[name]}: {reason}" if sep and name in urls else error


def _bytes_or_source(photo, name: str):
    """A photo's bytes, read once; the photo as given when it cannot be read (the embedder then says why,
    as it does for any unreadable photo)."""
    from ..data.images import ImageLoadError, read_image_bytes

    try:
        return read_image_bytes(photo, name)
    except ImageLoadError:
        return photo


def _photo_sha(source) -> str | None:
    if isinstance(source, (bytes, bytearray)):
        return hashlib.sha256(source).hexdigest()
    try:
        return file_sha256(source)
    except (OSError, ValueError):  # ValueError: a path holding a NUL character
        return None
