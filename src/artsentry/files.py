"""Writing files so that no reader, and no run killed mid-write, ever meets half of one.

Everything the package stores (manifests, model weights and configs, indexes, evidence, reports,
kept photos, mask caches) is written through ``atomic_path``: into a temporary file beside the
target, synced to disk, then renamed over it in one step. The temporary name carries the process and
thread, so writers storing the same file at once (crawler threads, decoding workers, two uploads of
one photo) each rename a whole file and none meets another's half; a write that fails leaves the old
file as it was and no temporary file behind. A process killed outright (SIGKILL, power cut) cannot
clean up: the next write into that folder removes the temporary files of writers that are gone. No
PyTorch here: data-only commands use it too.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import ArtsentryError

#: errors of writing a file (a full disk or quota, a read-only or failing device, a file too large)
WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EFBIG)
_SWEPT: set[Path] = set()
_SWEPT_LOCK = threading.Lock()
STALE_SECONDS = 60.0  # a temporary file this old, of a process that is gone, is a killed writer's


def _alive(pid: int) -> bool:
    if os.name == "nt":
        return True  # os.kill(pid, 0) would end the process there, not probe it: sweep nothing
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # another user's process, or a platform that cannot tell: leave its file
    return True


def sweep_stale(folder: str | Path, min_age: float = STALE_SECONDS) -> list[Path]:
    """Remove the temporary files ``atomic_path`` writers killed outright left in ``folder``: a
    ``.NAME.PID.THREAD.tmp`` whose process no longer runs and that is over ``min_age`` seconds old (a
    minute: a live writer on another machine sharing the folder keeps writing to its file; 0 when the
    caller holds the folder's lock, so no writer elsewhere can be at work). Returns them."""
    removed = []
    for tmp in Path(folder).glob(".*.*.*.tmp"):
        parts = tmp.name.rsplit(".", 3)  # ".NAME", PID, THREAD, "tmp"
        if len(parts) != 4 or not parts[1].isdigit() or not parts[2].isdigit():
            continue
        pid = int(parts[1])
        try:
            old = time.time() - tmp.stat().st_mtime >= min_age
        except FileNotFoundError:
            continue
        if pid != os.getpid() and old and not _alive(pid):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def _sweep_once(folder: Path) -> None:
    """``sweep_stale`` each folder once per process: a folder of many files is listed once."""
    key = folder.resolve()
    with _SWEPT_LOCK:
        if key in _SWEPT:
            return
        _SWEPT.add(key)
    try:
        sweep_stale(key)
    except OSError:
        pass  # a read-only or vanished listing: the write below says what is wrong, if anything


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path for any writer (pandas, FAISS, PIL, an exporter) to write ``path``'s new
    content to; when the block ends it is synced and renamed onto ``path`` (its folder made if need
    be). If the block raises, or writes nothing, ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _sweep_once(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        yield tmp
        if not tmp.is_file():
            raise FileNotFoundError(f"{path}: the writer left no file to put in place")
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:  # the file the user asked for named, not its hidden temporary one, nor none at all
        # (PIL and others writing through an open file raise a full disk with no file name)
        unnamed = exc.filename is None and exc.errno in WRITE_ERRNOS
        if (unnamed or exc.filename is not None and Path(exc.filename) == tmp) and type(exc).__module__ == "builtins":
            raise type(exc)(exc.errno, exc.strerror, str(path)) from None  # PermissionError stays one
        raise
    finally:
        try:
            tmp.unlink(missing_ok=True)  # only left when the write failed
        except OSError:  # a read-only folder refuses even this: its own error, the write's, is the one to say
            pass  # (a file left behind is swept by a later write, sweep_stale)


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` at ``path`` through ``atomic_path``."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) at ``path`` through ``atomic_path``."""
    write_bytes_atomic(path, text.encode("utf-8"))


#: how a spreadsheet cell a program would run as a formula begins: = + - @ (or their full-width forms, which
#: Japanese Excel takes as formulas too), after spaces or not, or a tab or carriage return (OWASP, "CSV Injection")
_FORMULA_START = re.compile(r"[\t\r]|[ \u00a0]*[=+\-@\uff1d\uff0b\uff0d\uff20]")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def formula_as_text(value):
    """``value`` as a spreadsheet shows it without running it: a text that Excel or LibreOffice would take
    for a formula (a seller's listing title "=HYPERLINK(...)" or "=cmd|...") gets a leading apostrophe;
    numbers ("-5", "+1.5e3"), a lone "-" and anything else are kept as they are."""
    if (isinstance(value, str) and _FORMULA_START.match(value) and value != "-"
            and not _NUMBER.fullmatch(value)):
        return "'" + value
    return value


def formula_from_text(value):
    """``formula_as_text`` undone: a table artsentry wrote, read back, gives the values it was given."""
    if isinstance(value, str) and value.startswith("'") and formula_as_text(value[1:]) != value[1:]:
        return value[1:]
    return value


def write_csv_atomic(table, path: str | Path, *, for_spreadsheets: bool = False) -> None:
    """Write a pandas table as CSV, without its index, at ``path`` through ``atomic_path``.
    ``for_spreadsheets``, for tables people open in Excel that carry values from outside (listings scraped
    from a marketplace): every text cell through ``formula_as_text``, and a UTF-8 byte-order mark first,
    without which Excel reads the file in the PC's legacy code page ("ivoire sculptÃ©", "è±¡ç‰™")."""
    if for_spreadsheets:
        table = table.copy()
        for i, dtype in enumerate(table.dtypes):
            if dtype.kind == "O":  # object, or pandas' str: numbers and flags cannot be formulas
                table.isetitem(i, table.iloc[:, i].map(formula_as_text))
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False, encoding="utf-8-sig" if for_spreadsheets else "utf-8")


LOCK_NAME = ".artsentry.lock"


def entries(folder: Path) -> list[str]:
    """The names in ``folder`` but its lock, sorted: what a run's --out already holds."""
    return sorted(p.name for p in folder.iterdir() if p.name != LOCK_NAME)


def first_names(names: list[str], shown: int = 3) -> str:
    """``names`` as a refusal says them: the first ``shown``, then how many more ("a, b, c and 2 more")."""
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


class FolderBusy(ArtsentryError, RuntimeError):
    """Another process is writing into the folder a run was asked to write into."""


class FolderError(ArtsentryError, OSError):
    """The folder a run was asked to write into cannot be one (a file is there, no permission)."""


@contextmanager
def exclusive(folder: str | Path, what: str) -> Iterator[None]:
    """Hold ``folder``'s lock (``.artsentry.lock``, the kernel's ``flock``) while a run writes into
    it: a second ``train`` into one run folder, or ``screen`` into one output folder (two terminals,
    ``make ivory`` started twice), is refused at once, naming the first, instead of both writing
    checkpoints or evidence over each other. The lock ends with its process, however that ends
    (``kill -9`` included); the file stays, holding who last ran there."""
    try:
        import fcntl
    except ImportError:  # not a POSIX system: no lock (the runs must not overlap)
        yield
        return
    import shlex
    import sys
    from datetime import datetime, timezone

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise FolderError(f"{folder}: a file is there, not a folder to write the run into")
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise FolderError(f"{folder}: cannot write the run here ({exc.strerror or exc})") from None
    locked = False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 1024, 0).decode("utf-8", "replace").strip() or "a process"
            raise FolderBusy(f"{folder}: another artsentry {what} is writing here ({holder}); wait for it to end, "
                             "or use another folder") from None
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        note = f"pid {os.getpid()}, since {started}: {shlex.join(sys.argv)}"[:1000].encode("utf-8", "replace")
        os.ftruncate(fd, 0)
        os.pwrite(fd, note, 0)
        locked = True
        yield
    finally:
        if locked and created and [p.name for p in folder.iterdir()] == [LOCK_NAME]:
            (folder / LOCK_NAME).unlink()  # a run that failed before writing anything leaves no folder
            folder.rmdir()
        os.close(fd)


def read_json_object(path: str | Path) -> dict:
    """The JSON object a record file (a run's, a screening's) holds; ``ValueError`` when it holds none: the
    parser's message (the file cut short, not UTF-8), an empty one when it holds another JSON value."""
    import json

    value = json.loads(Path(path).read_text(encoding="utf-8"))  # JSONDecodeError, UnicodeDecodeError: ValueErrors
    if not isinstance(value, dict):
        raise ValueError("")
    return value


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def disk_full(exc: BaseException) -> bool:
    """A write refused for want of space: the disk full (or the user's quota used), said by the system or
    by SQLite (a crawl's state, a register's database), whose own error names neither."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    return isinstance(exc, sqlite3.Error) and "disk is full" in str(exc)


def database_problem(db: sqlite3.Connection) -> str | None:
    """What is wrong with an SQLite database (``PRAGMA quick_check``'s finding, or the error a file
    that is no database at all raises), or None when it is sound. Checked on opening, so that a damaged
    crawl state or register is said with its file and the way on, not as SQLite's bare "malformed" at
    some later query."""
    try:
        check = db.execute("PRAGMA quick_check").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        return str(exc)
    return None if check == "ok" else check


def can_write_into(folder: str | Path) -> bool:
    """Could files be written into ``folder``: it, or the nearest folder above it that exists (it would be
    made there), writable by this process? Asked before minutes of work whose outputs would have nowhere to go
    (a read-only share, a folder of another user's)."""
    folder = Path(folder).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder.is_dir() and os.access(folder, os.W_OK)
