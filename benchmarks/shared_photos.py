"""Which other objects hold a photo: ``Register.shared_photos`` against a register's size.

    .venv/bin/python benchmarks/shared_photos.py --photos 200000

``register add`` and the server's register add ask it for the one object they added; ``register info`` and
``register import`` for the whole register (or a catalogue's objects). Builds a register database with the
register's own schema and ``--photos`` photos (three per object, every 100th photo also registered under
another object, a ``--dim``-float vector each, as the pretrained embedder's 1,280) in a temporary folder,
then times, in one process, the one-object lookup and the whole-register scan, with the SHA-256 index
registers have since 2026-12-07 and without it (older registers). Prints one JSON object; each figure is the
best of ``--repeats`` runs after one warm-up (the database in the page cache, as a running server has it).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sqlite3
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

from artsentry.index.register import SCHEMA, Register


def build(path: Path, photos: int, dim: int, seed: int = 0) -> None:
    g = np.random.default_rng(seed)
    db = sqlite3.connect(path)
    db.executescript(SCHEMA)

    def rows():
        for i in range(photos):
            sha = hashlib.sha256(str(i if i % 100 else i - 1).encode()).hexdigest()  # every 100th: a shared photo
            yield str(i // 3), sha, g.standard_normal(dim).astype(np.float32).tobytes()

    db.executemany("INSERT INTO objects (object_id) VALUES (?)", ((str(k),) for k in range((photos + 2) // 3)))
    db.executemany("INSERT INTO photos (object_id, sha256, vector) VALUES (?, ?, ?)", rows())
    db.commit()
    db.close()


def best_of(fn, repeats: int) -> float:
    fn()  # warm-up: the pages read once
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "register.sqlite"
        t = time.perf_counter()
        build(path, a.photos, a.dim)
        built = time.perf_counter() - t
        reg = Register.__new__(Register)  # the method reads only the database: no embedder, no index file
        reg.db = sqlite3.connect(path)
        one = str(a.photos // 6)  # an object in the middle of the table
        # photo 300 (object 100) holds photo 299's content (object 99)
        assert reg.shared_photos(["100"]) == {hashlib.sha256(b"299").hexdigest(): ["100", "99"]}
        out = {"date": date.today().isoformat(), "photos": a.photos, "dim": a.dim,
               "database_mib": round(path.stat().st_size / 2**20), "build_seconds": round(built, 1)}
        for label in ("with_sha_index", "without_sha_index"):
            out[label] = {"one_object_ms": round(1000 * best_of(lambda: reg.shared_photos([one]), a.repeats), 3),
                          "whole_register_ms": round(1000 * best_of(reg.shared_photos, a.repeats), 1),
                          "shared_found": len(reg.shared_photos())}
            reg.db.execute("DROP INDEX IF EXISTS photos_sha")  # as a register made before the index
        out["one_object_ratio"] = round(out["without_sha_index"]["one_object_ms"]
                                        / max(out["with_sha_index"]["one_object_ms"], 1e-6), 1)
        reg.db.close()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
