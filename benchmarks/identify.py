"""Register benchmark on met-ivory: find re-photographed registered objects, reject the others.

    .venv/bin/python benchmarks/identify.py [--embedder pretrained:efficientnet_lite0] [--objects N]

Objects are split in half (seeded): one half is registered from its studio
photo; the other half never is. Every object then gets listing-style query
photos from ``artsentry.data.listing.rephotograph`` (clutter background,
rotation, perspective, crop, light and colour, blur, text, heavy JPEG):

- calibration queries (seed A) of registered objects and of half of the
  unregistered ones choose the no-match threshold for the target false-match
  rate;
- test queries (seed B, other draws) of registered objects and of the other
  unregistered half are then scored.

Prints top-1/5/10 accuracy and mean average precision of registered queries,
the AUC for telling registered from unregistered queries by their best score,
the false-match rate and the registered acceptance at the chosen threshold,
and search latency per query.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from artsentry.data.images import load_image
from artsentry.data.listing import rephotograph
from artsentry.data.manifest import read_manifest
from artsentry.index import Register

REPO = Path(__file__).resolve().parents[1]


def query_bytes(path: str, seed: int) -> bytes:
    img = rephotograph(load_image(path), seed)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "datasets" / "met-ivory"))
    ap.add_argument("--embedder", default="pretrained:efficientnet_lite0")
    ap.add_argument("--objects", type=int, default=0, help="use only N objects (0: all)")
    ap.add_argument("--target-fmr", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    df, _ = read_manifest(a.data)
    objects = df.drop_duplicates("object_id").sample(frac=1.0, random_state=a.seed)
    if a.objects:
        objects = objects.head(a.objects)
    half = len(objects) // 2
    registered, unregistered = objects.iloc[:half], objects.iloc[half:]
    calib_distractors, test_distractors = unregistered.iloc[: len(unregistered) // 2], \
        unregistered.iloc[len(unregistered) // 2:]

    with tempfile.TemporaryDirectory() as tmp:
        reg = Register.create(Path(tmp) / "reg", a.embedder)
        t0 = time.time()
        reg.add_many([(r.object_id, [r.path], {"title": Path(r.path).name}) for r in registered.itertuples()],
                     progress=True)
        add_seconds = time.time() - t0

        def best_and_rank(rows, seed_base):
            sources = [query_bytes(r.path, seed_base + i) for i, r in enumerate(rows.itertuples())]
            vectors, errors = reg.embedder.embed_files(sources, progress=True)
            assert not any(errors)
            t = time.perf_counter()
            found = reg.search_vectors(vectors, k=10)
            per_query = (time.perf_counter() - t) / len(sources)
            latencies = []
            for v in vectors[:200]:
                t = time.perf_counter()
                reg.search_vectors(v[None], k=10)
                latencies.append(time.perf_counter() - t)
            best = np.array([m[0].score if m else -1.0 for m in found])
            ranks = np.array([next((j + 1 for j, m in enumerate(ms) if m.object_id == oid), 0)
                              for ms, oid in zip(found, rows["object_id"])])
            return best, ranks, per_query, latencies

        cal_reg_best, _, _, _ = best_and_rank(registered, 10_000)
        cal_dis_best, _, _, _ = best_and_rank(calib_distractors, 20_000)
        test_reg_best, ranks, batch_latency, latencies = best_and_rank(registered, 30_000)
        test_dis_best, _, _, _ = best_and_rank(test_distractors, 40_000)

    # threshold: the smallest score that keeps the calibration false-match rate at the target
    threshold = float(np.quantile(cal_dis_best, 1 - a.target_fmr, method="higher"))
    found = ranks > 0
    y = np.r_[np.ones(len(test_reg_best)), np.zeros(len(test_dis_best))]
    result = {
        "date": date.today().isoformat(),
        "embedder": a.embedder,
        "registered_objects": len(registered),
        "unregistered_calibration": len(calib_distractors),
        "unregistered_test": len(test_distractors),
        "top1": round(float((ranks == 1).mean()), 4),
        "top5": round(float(((ranks >= 1) & (ranks <= 5)).mean()), 4),
        "top10": round(float(found.mean()), 4),
        "mAP@10": round(float(np.where(found, 1.0 / np.maximum(ranks, 1), 0.0).mean()), 4),
        "registered_vs_unregistered_auc": round(float(roc_auc_score(y, np.r_[test_reg_best, test_dis_best])), 4),
        "threshold": round(threshold, 4),
        "target_false_match_rate": a.target_fmr,
        "test_false_match_rate": round(float((test_dis_best >= threshold).mean()), 4),
        "registered_accepted_and_correct": round(float(((ranks == 1) & (test_reg_best >= threshold)).mean()), 4),
        "calibration_registered_accepted": round(float((cal_reg_best >= threshold).mean()), 4),
        "search_ms_p50": round(1000 * float(np.median(latencies)), 3),
        "search_ms_batched_per_query": round(1000 * batch_latency, 3),
        "register_add_seconds": round(add_seconds, 1),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
