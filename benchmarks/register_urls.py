"""Registering photos by URL (``register import --fetch-urls``) against registering the same files, in one run.

    .venv/bin/python benchmarks/register_urls.py [--photos 300] [--latency-ms 0] [--embedder pretrained:efficientnet_lite0]

Serves met-ivory (``../shared/datasets/met-ivory``) over HTTP on 127.0.0.1 (a threaded standard library
server; no network leaves the machine), then imports its first ``--photos`` photos (one object per
``source_id``, as a stolen-object export would list them) into fresh registers, one after the other: from
the files; by URL (``read_objects(fetch_urls=True)``, ``allow_private`` since the server is this machine);
and the URL import run again (what an interrupted import's re-run costs: the registered URLs are not fetched
again). ``--latency-ms`` makes the server wait that long before it answers each request (an image host
across the internet). Prints photos/s for each, the ratio to the files, the photos kept in the register's
``photos/`` and the requests the server saw.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from screen_urls import folder_server  # noqa: E402

from artsentry.index import Register  # noqa: E402
from artsentry.index.register import read_objects  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/datasets/met-ivory")
    ap.add_argument("--photos", type=int, default=300)
    ap.add_argument("--latency-ms", type=float, default=0.0, help="the server's wait before each answer")
    ap.add_argument("--embedder", default="pretrained:efficientnet_lite0")
    a = ap.parse_args(argv)
    root = Path(a.data).resolve()
    meta = pd.read_csv(root / "metadata.csv").head(a.photos)
    requests: list[str] = []
    out = {}
    with folder_server(root, a.latency_ms, requests) as base:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            ids = meta["source_id"].astype(str).tolist()
            pd.DataFrame({"object_id": ids, "image": [str(root / f) for f in meta["file"]]}).to_csv(
                tmp / "files.csv", index=False)
            pd.DataFrame({"object_id": ids, "image": [f"{base}/{f}" for f in meta["file"]]}).to_csv(
                tmp / "urls.csv", index=False)
            for name, table, folder in (("files", "files.csv", "reg-files"), ("urls", "urls.csv", "reg-urls"),
                                        ("urls, run again", "urls.csv", "reg-urls")):
                reg = (Register.open(tmp / folder) if (tmp / folder).exists()
                       else Register.create(tmp / folder, a.embedder))
                objects, problems = read_objects(tmp / table, fetch_urls=True)
                requests.clear()
                t0 = time.perf_counter()
                done = reg.import_objects(objects, allow_private=True)
                seconds = time.perf_counter() - t0
                out[name] = {"photos_added": done["photos_added"], "already_registered": done["already_registered"],
                             "errors": len(done["errors"]) + len(problems), "seconds": round(seconds, 1),
                             "photos_per_second": round(len(meta) / seconds, 1), "requests": len(requests)}
                reg.close()
            kept = list((tmp / "reg-urls" / "photos").iterdir())
            out["urls"]["kept_files"] = len(kept)
            out["urls"]["kept_mb"] = round(sum(p.stat().st_size for p in kept) / 1e6, 1)
    for name in ("urls", "urls, run again"):
        out[name]["vs_files"] = round(out[name]["photos_per_second"] / out["files"]["photos_per_second"], 2)
    print(json.dumps({"photos": len(meta), "latency_ms": a.latency_ms, **out}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
