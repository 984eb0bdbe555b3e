"""Crawl benchmark against the local fake Met API (127.0.0.1 only).

    .venv/bin/python benchmarks/collect.py

1. Faults: 2,000 objects, every way of failing at 5% of requests (404 records,
   broken image links, 429/403 with and without Retry-After, 500, slow answers
   past the timeout, truncated bodies, invalid JSON), primary + additional
   images. Checks every reachable record and image is stored exactly once and
   every failure is listed, against the fake server's ground truth.
2. Rate: a fault-free server, cap 80 req/s: sustained request rate and the
   most requests the server saw in any one-second window.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import pandas as pd

from artsentry.collect import Crawler, MetClient, RetryPolicy, resolve_ids
from artsentry.collect.fake_met import FakeMet, FakeMetServer, Faults, _unit


def ground_truth(met: FakeMet, base: str) -> tuple[set, set, int]:
    records, images, attempted = set(), set(), 0
    for oid in met.ids:
        if not met.exists(oid):
            continue
        records.add(oid)
        rec = met.record(oid, base)
        n = 1 + len(rec["additionalImages"]) if rec["primaryImage"] else 0
        attempted += n
        images |= {(oid, k) for k in range(n) if _unit(met.seed, "broken", oid, k) >= met.faults.broken_image}
    return records, images, attempted


def fault_run(tmp: Path) -> dict:
    met = FakeMet(2000, seed=42, faults=Faults.uniform(0.05, slow_seconds=1.0))
    with FakeMetServer(met, seed=42) as srv:
        t0 = time.monotonic()
        with MetClient(srv.api_url, rate=80, timeout=0.5, policy=RetryPolicy(retries=15, backoff=0.1)) as client:
            crawler = Crawler(client, tmp / "faults", images="all", workers=16, progress=False)
            summary = crawler.crawl(resolve_ids(client, crawler.store, search="*"))
            crawler.close()
        seconds = time.monotonic() - t0
        max_window = srv.max_requests_per_window(1.0)
        n_requests = len(srv.log)
        records, images, attempted = ground_truth(met, srv.base_url)
    col = pd.read_csv(tmp / "faults" / "collection.csv")
    stored = list(zip(col["object_id"], col["image_index"]))
    failures = pd.read_csv(tmp / "faults" / "failures.csv")
    return {
        "objects": len(met.ids),
        "reachable_records": len(records),
        "records_stored": summary.objects.get("done", 0),
        "reachable_images": len(images),
        "images_stored": len(stored),
        "images_stored_once": len(stored) == len(set(stored)),
        "stored_equals_reachable": set(stored) == images and summary.objects.get("done", 0) == len(records),
        "failures_listed": int(len(failures)),
        "failures_expected": (len(met.ids) - len(records)) + (attempted - len(images)),
        "failures_with_reason": bool((failures["reason"].str.len() > 0).all()),
        "requests": n_requests,
        "seconds": round(seconds, 1),
        "max_requests_in_any_1s_window": max_window,
        "cap": 80,
    }


def rate_run(tmp: Path) -> dict:
    met = FakeMet(1500, seed=1)
    with FakeMetServer(met) as srv:
        with MetClient(srv.api_url, rate=80, timeout=5) as client:
            crawler = Crawler(client, tmp / "rate", images="primary", workers=16, progress=False)
            ids = resolve_ids(client, crawler.store, search="*")
            srv.log.clear()
            t0 = time.monotonic()
            crawler.crawl(ids)
            seconds = time.monotonic() - t0
            crawler.close()
        n = len(srv.log)
        return {"requests": n, "seconds": round(seconds, 2), "sustained_req_per_s": round(n / seconds, 1),
                "max_requests_in_any_1s_window": srv.max_requests_per_window(1.0), "cap": 80}


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        result = {"date": date.today().isoformat(), "faults_5pct_each": fault_run(Path(tmp)),
                  "rate_cap_80": rate_run(Path(tmp))}
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
