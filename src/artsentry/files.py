"""Writing files so that no reader, and no run killed mid-write, ever meets half of one.

Everything the package stores (manifests, model weights and configs, indexes, evidence, reports,
kept photos, mask caches) is written through ``atomic_path``: into a temporary file beside the
target, synced to disk, then renamed over it in one step. The temporary name carries the process and
thread, so writers storing the same file at once (crawler threads, decoding workers, two uploads of
one photo) each rename a whole file and none meets another's half; a write that fails leaves the old
file as it was and no temporary file behind. No PyTorch here: data-only commands use it too.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path for any writer (pandas, FAISS, PIL, an exporter) to write ``path``'s new
    content to; when the block ends it is synced and renamed onto ``path`` (its folder made if need
    be). If the block raises, or writes nothing, ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        yield tmp
        if not tmp.is_file():
            raise FileNotFoundError(f"{path}: the writer left no file to put in place")
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # only left when the write failed


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` at ``path`` through ``atomic_path``."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) at ``path`` through ``atomic_path``."""
    write_bytes_atomic(path, text.encode("utf-8"))
