"""Screening photos by URL against screening the same files, in one run.

    .venv/bin/python benchmarks/screen_urls.py --model runs/ivory/model [--photos 600] [--latency-ms 0] \
        [--fetch-threads N]

Serves met-ivory (``../shared/datasets/met-ivory``) over HTTP on 127.0.0.1 (a threaded standard
library server; no network leaves the machine), then screens the first ``--photos`` photos of its
metadata.csv three ways into fresh folders, one after the other: as local files; as URLs with
``fetch_urls`` (each decoding worker keeps its connections open; ``fetch_private``, since the server
is this machine); as URLs keeping every fetched image (``keep_fetched``). Prints photos/s for each, the ratio to the files, and what was kept.
Loopback costs no network latency, so this measures artsentry's own cost of fetching, not a shop's;
``--latency-ms`` makes the server wait that long before it answers each request (a shop's image host across
the internet: the time to its first byte), to measure what latency costs a screening; ``--fetch-threads``
sets how many of a batch's URLs a decoding worker fetches at once (``artsentry.screen.FETCH_THREADS``, set in
this process before the screenings start: its decoding workers are forked from it and inherit it).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.server
import json
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd

import artsentry.screen
from artsentry.screen import Screener


@contextlib.contextmanager
def folder_server(root: Path, latency_ms: float = 0.0, requests: list | None = None):
    """``root`` served on 127.0.0.1 by a threaded standard library server (HTTP/1.0) that waits ``latency_ms``
    before each answer, each path asked added to ``requests``; yields the base URL."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def send_head(self):
            if requests is not None:
                requests.append(self.path)
            time.sleep(latency_ms / 1000)
            return super().send_head()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="runs/ivory/model")
    ap.add_argument("--data", default="../shared/datasets/met-ivory")
    ap.add_argument("--photos", type=int, default=600)
    ap.add_argument("--latency-ms", type=float, default=0.0, help="the server's wait before each answer")
    ap.add_argument("--fetch-threads", type=int, default=artsentry.screen.FETCH_THREADS)
    a = ap.parse_args(argv)
    artsentry.screen.FETCH_THREADS = a.fetch_threads
    root = Path(a.data).resolve()
    files = pd.read_csv(root / "metadata.csv")["file"].head(a.photos).tolist()

    out = {}
    with folder_server(root, a.latency_ms) as base, tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pd.DataFrame({"image": [str(root / f) for f in files]}).to_csv(tmp / "files.csv", index=False)
        pd.DataFrame({"image": [f"{base}/{f}" for f in files]}).to_csv(tmp / "urls.csv", index=False)
        local = {"fetch_urls": True, "fetch_private": True}  # the server is this machine
        for name, table, kw in (("files", "files.csv", {}), ("urls", "urls.csv", local),
                                ("urls, kept", "urls.csv", {**local, "keep_fetched": tmp / "kept"})):
            screener = Screener(a.model, progress=False, explain=0, **kw)
            t0 = time.perf_counter()
            summary = screener.run(tmp / table, tmp / name.replace(", ", "-"))
            seconds = time.perf_counter() - t0
            out[name] = {"photos": summary["rows"], "unreadable": summary["unreadable"], "flagged": summary["flagged"],
                         "seconds": round(seconds, 1), "photos_per_second": round(summary["rows"] / seconds, 1),
                         "runtime": (summary.get("about") or ["", ""])[1].rsplit("run on ", 1)[-1]}
        kept = [p for p in (tmp / "kept").rglob("*") if p.is_file()]
        out["urls, kept"]["kept_files"] = len(kept)
        out["urls, kept"]["kept_mb"] = round(sum(p.stat().st_size for p in kept) / 1e6, 1)
    for name in ("urls", "urls, kept"):
        out[name]["vs_files"] = round(out[name]["photos_per_second"] / out["files"]["photos_per_second"], 2)
    print(json.dumps({"latency_ms": a.latency_ms, "fetch_threads": a.fetch_threads, **out}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
