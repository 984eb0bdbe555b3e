"""Register search at scale on synthetic vectors: latency, and recall@10 of the approximate index.

    .venv/bin/python benchmarks/index_scale.py                    # 10k, 100k, 1M vectors of dim 1280
    .venv/bin/python benchmarks/index_scale.py --sizes 10000 --dim 64

The vectors imitate photo embeddings rather than uniform noise (on which any cell-based
index is at its worst, and whose "top 10" beyond the first hit is arbitrary): 1,000 kinds of
object, objects scattered around their kind, four photos scattered around each object;
queries are new photos of registered objects. For each size it builds the
register's exact index (``VectorIndex(dim, "exact")``), takes its top-10 as the truth, frees
it, then builds the IVF index the register switches to for large registers, and prints
build time, search latency per query (batches of 1 and of 64) and recall against exact:
10-recall@10 (share of the exact top-10 found) and 1-recall@10 (exact nearest in the top 10).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import sys
import time
from datetime import date

import numpy as np

from artsentry.index.vectors import VectorIndex, default_nlist


def synthetic(n: int, dim: int, photos_per_object: int, rng, categories: int = 1000) -> np.ndarray:
    """``n`` unit vectors in three levels, as photo embeddings are: kinds of object (random
    unit centres), objects around their kind, ``photos_per_object`` photos around their object."""
    kinds = rng.standard_normal((categories, dim)).astype(np.float32)
    kinds /= np.linalg.norm(kinds, axis=1, keepdims=True)
    chunk = 100_000 - 100_000 % photos_per_object  # no object spans two chunks
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, chunk):  # in chunks: 1M x 1280 floats is 5 GB already
        stop = min(n, start + chunk)
        owner = (np.arange(start, stop) - start) // photos_per_object
        n_obj = int(owner[-1]) + 1
        objects = kinds[rng.integers(0, categories, n_obj)] + rng.standard_normal((n_obj, dim)).astype(
            np.float32) * (0.8 / math.sqrt(dim))
        out[start:stop] = objects[owner] + rng.standard_normal((stop - start, dim)).astype(np.float32) * (
            0.5 / math.sqrt(dim))
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def latency(index: VectorIndex, queries: np.ndarray, batch: int, k: int = 10) -> float:
    """Median milliseconds per query when queries arrive ``batch`` at a time."""
    times = []
    for i in range(0, len(queries), batch):
        q = queries[i:i + batch]
        t0 = time.perf_counter()
        index.search(q, k)
        times.append((time.perf_counter() - t0) * 1000 / len(q))
    return float(np.median(times))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--dim", type=int, default=1280, help="embedding size (EfficientNet-Lite0: 1280)")
    ap.add_argument("--queries", type=int, default=256)
    ap.add_argument("--nprobe", type=int, default=32)
    ap.add_argument("--nlist", type=int, default=0, help="IVF cells (default: the register's own, 4 x sqrt(n))")
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    results = []
    for n in a.sizes:
        data = synthetic(n, a.dim, 4, rng)
        ids = np.arange(n, dtype=np.int64)
        # queries: new photos of registered objects (same centres, fresh noise)
        picks = rng.choice(n, a.queries, replace=False)
        queries = data[picks] + rng.standard_normal((a.queries, a.dim)).astype(np.float32) * (0.5 / math.sqrt(a.dim))
        row = {"vectors": n, "dim": a.dim}
        t0 = time.perf_counter()
        exact = VectorIndex(a.dim, "exact")
        exact.add(ids, data)
        row["exact_build_s"] = round(time.perf_counter() - t0, 2)
        _, truth = exact.search(queries, 10)
        row["exact_ms_per_query_batch1"] = round(latency(exact, queries[:32], 1), 3)
        row["exact_ms_per_query_batch64"] = round(latency(exact, queries, 64), 3)
        del exact
        gc.collect()
        nlist = a.nlist or default_nlist(n)
        t0 = time.perf_counter()
        ivf = VectorIndex(a.dim, "ivf", nlist=nlist, nprobe=a.nprobe)
        ivf.add(ids, data)
        row.update(ivf_nlist=nlist, ivf_nprobe=a.nprobe, ivf_build_s=round(time.perf_counter() - t0, 2))
        _, found = ivf.search(queries, 10)
        # 10-recall@10: share of the exact top-10 found; 1-recall@10 (FAISS's "R@10"): exact nearest in the top-10
        row["ivf_10_recall_at_10"] = round(float(np.mean([len(set(t) & set(f)) / 10 for t, f in zip(truth, found)])), 4)
        row["ivf_1_recall_at_10"] = round(float(np.mean([t[0] in set(f) for t, f in zip(truth, found)])), 4)
        row["ivf_ms_per_query_batch1"] = round(latency(ivf, queries[:32], 1), 3)
        row["ivf_ms_per_query_batch64"] = round(latency(ivf, queries, 64), 3)
        del ivf, data
        gc.collect()
        print(json.dumps(row), file=sys.stderr)
        results.append(row)
    print(json.dumps({"date": date.today().isoformat(), "cpus": os.cpu_count(), "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
