"""Load on the web API: latency and throughput of POST /v1/analyze on loopback.

    .venv/bin/python benchmarks/serve.py --model runs/ivory/model

Starts ``artsentry serve`` in a subprocess on a free loopback port, then sends
``--requests`` analyze requests (real met-ivory test photos, multipart) from
``--concurrency`` concurrent clients and prints one JSON document per scenario:

- ``nominal``: queue deep enough for the load (``--max-queue`` >= concurrency): every
  answer must be 200; p50 / p90 / p99 latency and requests per second.
- ``explain``: the same with ``?explain=true`` (Grad-CAM overlay in each answer).
- ``overload``: a queue of 2 with the same load: the answers must be 200 or 503 with
  Retry-After, nothing else, and the server must still answer afterwards.
- ``audited``: ``nominal`` with ``--audit-log`` (one fsynced JSON line per answer), and the
  number of lines the log holds after it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import httpx
import numpy as np


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(model: Path, register: Path | None, max_queue: int, threads: int,
          audit_log: Path | None = None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "artsentry", "-q", "serve", "--model", str(model), "--port", str(port),
           "--max-queue", str(max_queue), "--threads", str(threads)]
    if register:
        cmd += ["--register", str(register)]
    if audit_log:
        cmd += ["--audit-log", str(audit_log)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.3)
        if proc.poll() is not None:
            raise RuntimeError(proc.stderr.read().decode())
    raise RuntimeError("server did not start")


async def load(url: str, photos: list[bytes], n: int, concurrency: int, explain: bool) -> dict:
    latencies, codes, retry_after_missing = [], {}, 0
    queue: asyncio.Queue = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)

    async def client():
        nonlocal retry_after_missing
        async with httpx.AsyncClient(timeout=120) as c:
            while True:
                try:
                    i = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                t0 = time.perf_counter()
                r = await c.post(url + "/v1/analyze", params={"explain": str(explain).lower()},
                                 files={"file": (f"{i}.jpg", photos[i % len(photos)], "image/jpeg")})
                latencies.append(time.perf_counter() - t0)
                codes[r.status_code] = codes.get(r.status_code, 0) + 1
                if r.status_code == 503 and not r.headers.get("retry-after"):
                    retry_after_missing += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    ok = [lat for lat in latencies]
    return {"requests": n, "concurrency": concurrency, "explain": explain, "status_codes": codes,
            "errors_other_than_503": sum(v for k, v in codes.items() if k not in (200, 503)),
            "503_without_retry_after": retry_after_missing, "seconds": round(wall, 2),
            "requests_per_s": round(n / wall, 2), "answered_200_per_s": round(codes.get(200, 0) / wall, 2),
            "latency_ms": {q: round(float(np.percentile(ok, p)) * 1000, 1) for q, p in
                           (("p50", 50), ("p90", 90), ("p99", 99))}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=Path("runs/ivory/model"))
    ap.add_argument("--register", type=Path, default=None)
    ap.add_argument("--data", type=Path, default=Path("../shared/datasets/met-ivory"))
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--explain-requests", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    files = sorted((a.data / "images").rglob("*.jpg"))[:64]
    photos = [f.read_bytes() for f in files]
    result = {"date": date.today().isoformat(), "machine": platform.processor() or platform.machine(),
              "cpus": os.cpu_count(), "model": str(a.model), "register": str(a.register) if a.register else None,
              "photos": len(photos), "mean_photo_kb": round(np.mean([len(p) for p in photos]) / 1024, 1)}
    import tempfile

    audit_dir = Path(tempfile.mkdtemp(prefix="artsentry-audit-"))
    for name, queue, n, explain in (("nominal", max(32, a.concurrency), a.requests, False),
                                    ("explain", max(32, a.concurrency), a.explain_requests, True),
                                    ("overload", 2, a.requests, False),
                                    ("audited", max(32, a.concurrency), a.requests, False)):
        audit_log = audit_dir / "audit.jsonl" if name == "audited" else None
        proc, url = start(a.model, a.register, queue, a.threads, audit_log)
        try:
            asyncio.run(load(url, photos, 8, 2, explain))  # warm-up
            result[name] = asyncio.run(load(url, photos, n, a.concurrency, explain)) | {"max_queue": queue}
            result[name]["healthy_after"] = httpx.get(url + "/healthz").status_code == 200
            if audit_log:
                result[name]["audit_lines"] = len(audit_log.read_text().splitlines())
        finally:
            proc.terminate()
            proc.wait(10)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
