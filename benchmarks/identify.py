"""Register benchmark on met-ivory: find re-photographed registered objects, reject the others.

    .venv/bin/python benchmarks/identify.py [--embedders pretrained:efficientnet_lite0 runs/embedder/model]

Every embedder named is measured on the same register and the same query photos, in one run.

Objects: when an embedder trained by ``artsentry train-embedder`` is named, its object lists
split the data: the register holds half of the objects it was trained on ("seen") and as
many of its held-out objects ("added after training"); the other held-out objects are never
registered (distractors). Otherwise objects are split in half at random. Each registered
object is registered from its studio photo. Every object then gets listing-style query
photos from ``artsentry.data.listing.rephotograph`` (clutter background, rotation,
perspective, crop, light and colour, blur, text, heavy JPEG), made in worker processes:

- calibration queries (seed A) of registered objects and of half of the distractors choose
  the no-match threshold for the target false-match rate;
- test queries (seed B, other draws) of registered objects and of the other distractors
  are then scored.

``--gallery-reshots K...`` and ``--flip 0 1`` measure each embedder with each register
setting (``register create --reshots K`` / ``--flip``). ``--query-cache DIR`` keeps the query
photos for the next run; ``--save-vectors DIR`` writes every measurement's vectors (for
``identify_rules.py``).

Prints, per embedder and setting, top-1/5/10 accuracy and mean average precision of registered queries
(all, seen in training, added after training), the AUC for telling registered from
unregistered queries by their best match score, the false-match rate and the share accepted
and correct at the chosen threshold (also deciding on the similarity alone), and search
latency per query.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score
from tqdm.auto import tqdm

from artsentry.data.listing import GENERATOR_VERSION, reshot_jpegs
from artsentry.data.manifest import read_manifest
from artsentry.index import Register
from artsentry.index.register import SCORINGS, threshold_for_false_match_rate

REPO = Path(__file__).resolve().parents[1]
SEEDS = {"calibration": 10_000, "test": 30_000}


def queries_of(task: tuple[str, list[int]]) -> list[bytes]:
    return reshot_jpegs(*task)


def make_queries(tasks: list[tuple[str, list[int]]], workers: int, cache: Path | None) -> list[list]:
    """The query photos of every task (JPEG bytes, or paths of the JPEG files in ``cache``).

    With ``cache``, the photos are written there as ``<task>-<k>.jpg`` beside a ``tasks.json``
    naming what made them (the tasks and ``GENERATOR_VERSION``); a later run with the same tasks
    and generator reads them instead of re-making them
    (about 10 minutes on 2 cores for the whole data). A cache made from other tasks is refused.
    """
    if cache is not None:
        listing = cache / "tasks.json"
        wanted = {"generator": GENERATOR_VERSION, "tasks": [[str(p), list(s)] for p, s in tasks]}
        if listing.is_file():
            held = json.loads(listing.read_text())
            held = held if isinstance(held, dict) else {"generator": 1, "tasks": held}
            if held.get("generator") != GENERATOR_VERSION:
                raise SystemExit(f"{cache} holds queries made by listing generator {held.get('generator')}, not "
                                 f"{GENERATOR_VERSION}; remove it or name another folder")
            if held["tasks"] != wanted["tasks"]:
                raise SystemExit(f"{cache} holds queries of other photos or seeds; remove it or name another folder")
            files = [[cache / f"{i}-{k}.jpg" for k in range(len(s))] for i, (_, s) in enumerate(tasks)]
            missing = [f for fs in files for f in fs if not f.is_file()]
            if missing:
                raise SystemExit(f"{cache}: {len(missing)} query photos missing (e.g. {missing[0]}); remove the folder")
            return [[str(f) for f in fs] for fs in files]
    with ProcessPoolExecutor(workers) as pool:
        made = list(tqdm(pool.map(queries_of, tasks, chunksize=8), total=len(tasks), desc="queries", unit="photo"))
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        for i, photos in enumerate(made):
            for k, data in enumerate(photos):
                (cache / f"{i}-{k}.jpg").write_bytes(data)
        (cache / "tasks.json").write_text(json.dumps(wanted))
    return made


def object_split(objects: pd.DataFrame, embedders: list[str], seed: int) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """(registered objects with a ``seen`` column, distractors, how they were chosen)."""
    rng = np.random.default_rng(seed)
    for spec in embedders:
        folder = Path(spec)
        if (folder / "trained_objects.txt").is_file():
            trained = set((folder / "trained_objects.txt").read_text().split())
            holdout = set((folder / "holdout_objects.txt").read_text().split())
            ids = objects["object_id"].astype(str)
            seen = objects[ids.isin(trained)].sample(frac=1.0, random_state=seed)
            unseen = objects[ids.isin(holdout)].sample(frac=1.0, random_state=seed)
            n = min(len(seen), len(unseen) // 2)
            registered = pd.concat([seen.iloc[:n].assign(seen=True), unseen.iloc[:n].assign(seen=False)])
            return registered, unseen.iloc[n:], f"object lists of {spec}"
    shuffled = objects.sample(frac=1.0, random_state=int(rng.integers(1 << 31)))
    half = len(shuffled) // 2
    return shuffled.iloc[:half].assign(seen=False), shuffled.iloc[half:], "random halves"


def ranks_and_best(reg: Register, vectors: np.ndarray, object_ids) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
    """Rank of the true object (0: not in the top 10), best match score, seconds per query,
    best similarity."""
    t = time.perf_counter()
    found = reg.search_vectors(vectors, k=10)
    per_query = (time.perf_counter() - t) / len(vectors)
    best = np.array([m[0].score if m else -1.0 for m in found])
    similarity = np.array([m[0].similarity if m else -1.0 for m in found])
    ranks = np.array([next((j + 1 for j, m in enumerate(ms) if m.object_id == str(oid)), 0)
                      for ms, oid in zip(found, object_ids)])
    return ranks, best, per_query, similarity


def retrieval(ranks: np.ndarray) -> dict:
    found = ranks > 0
    return {"queries": int(len(ranks)), "top1": round(float((ranks == 1).mean()), 4),
            "top5": round(float((found & (ranks <= 5)).mean()), 4), "top10": round(float(found.mean()), 4),
            "mAP@10": round(float(np.where(found, 1.0 / np.maximum(ranks, 1), 0.0).mean()), 4)}


def measure(spec: str, registered: pd.DataFrame, queries: dict, target_fmr: float, tmp: Path,
            reshots: int = 0, save: Path | None = None, flip: bool = False, scoring: str = "contrast") -> dict:
    reg = Register.create(tmp / f"reg-{abs(hash(spec))}-{reshots}-{int(flip)}", spec, reshots=reshots, flip=flip,
                          scoring=scoring)
    t0 = time.time()
    reg.add_many([(str(r.object_id), [r.path], {"title": Path(r.path).name}) for r in registered.itertuples()],
                 progress=True)
    add_seconds = time.time() - t0
    scored = {}
    for name, (sources, object_ids) in queries.items():
        vectors, errors = reg.embedder.embed_files(sources, progress=True)
        assert not any(errors), errors
        scored[name] = ranks_and_best(reg, vectors, object_ids) + (vectors,)
    latencies = []
    for v in scored["test_registered"][4][:300]:
        t = time.perf_counter()
        reg.search_vectors(v[None], k=10)
        latencies.append(time.perf_counter() - t)
    if save is not None:  # every indexed vector (photos and re-shots) with its object and name
        rows = reg.db.execute("SELECT object_id, name, vector FROM photos ORDER BY vector_id").fetchall()
        save.parent.mkdir(parents=True, exist_ok=True)
        np.savez(save, gallery=np.stack([np.frombuffer(r[2], dtype=np.float32) for r in rows]),
                 gallery_ids=np.array([r[0] for r in rows]), gallery_names=np.array([r[1] for r in rows]),
                 seen=registered["seen"].to_numpy(dtype=bool),
                 registered_ids=np.array([str(o) for o in registered["object_id"]]),
                 **{name: v[4] for name, v in scored.items()},
                 **{f"{name}_ids": np.array([str(o) for o in queries[name][1]]) for name in scored})
    reg.close()

    ranks = scored["test_registered"][0]
    seen = registered["seen"].to_numpy()
    out = {"embedder": spec, "gallery_reshots": reshots, "flip": flip, "scoring": scoring, **retrieval(ranks)}
    if seen.any():
        out["seen_in_training"] = retrieval(ranks[seen])
        out["added_after_training"] = retrieval(ranks[~seen])
    out.update(decision(scored, target_fmr, 1))
    if scoring != "similarity":  # the same searches, deciding on the similarity alone
        out["deciding_on_similarity"] = decision(scored, target_fmr, 3)
    out.update({
        "search_ms_p50": round(1000 * float(np.median(latencies)), 3),
        "search_ms_batched_per_query": round(1000 * scored["test_registered"][2], 3),
        "register_add_seconds": round(add_seconds, 1),
    })
    return out


def decision(scored: dict, target_fmr: float, column: int) -> dict:
    """Registered vs unregistered by the best match's score (``column`` 1) or similarity (3):
    the AUC, and the threshold chosen on the calibration queries applied to the test queries."""
    threshold = threshold_for_false_match_rate(scored["calibration_distractors"][column], target_fmr)
    ranks, best = scored["test_registered"][0], scored["test_registered"][column]
    dis_best = scored["test_distractors"][column]
    y = np.r_[np.ones(len(best)), np.zeros(len(dis_best))]
    return {
        "registered_vs_unregistered_auc": round(float(roc_auc_score(y, np.r_[best, dis_best])), 4),
        "threshold": round(threshold, 4),
        "target_false_match_rate": target_fmr,
        "test_false_match_rate": round(float((dis_best >= threshold).mean()), 4),
        "registered_accepted_and_correct": round(float(((ranks == 1) & (best >= threshold)).mean()), 4),
        "calibration_registered_accepted": round(float((scored["calibration_registered"][column] >= threshold).mean()), 4),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "datasets" / "met-ivory"))
    ap.add_argument("--embedders", nargs="+", default=["pretrained:efficientnet_lite0"])
    ap.add_argument("--objects", type=int, default=0, help="use only N objects (0: all)")
    ap.add_argument("--target-fmr", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2, help="processes making the query photos")
    ap.add_argument("--gallery-reshots", type=int, nargs="+", default=[0],
                    help="register each photo with K listing-style re-shots too (register create --reshots K); "
                    "several values: each embedder is measured with each")
    ap.add_argument("--flip", type=int, nargs="+", default=[0], choices=(0, 1),
                    help="1: embed photos with their mirror images (register create --flip); '0 1' measures both")
    ap.add_argument("--scoring", choices=SCORINGS, default="contrast",
                    help="the register's match score (register create --scoring); with 'contrast' the "
                    "decision on the similarity alone is reported too (default: %(default)s)")
    ap.add_argument("--query-cache", metavar="DIR", help="keep the query photos here and reuse them on the next run")
    ap.add_argument("--save-vectors", metavar="DIR", help="write each measurement's gallery and query vectors "
                    "(with their object ids) to DIR/<n>.npz, to compare scoring rules without re-embedding")
    a = ap.parse_args()

    df, _ = read_manifest(a.data)
    objects = df.drop_duplicates("object_id")
    if a.objects:
        objects = objects.sample(n=a.objects, random_state=a.seed)
    registered, distractors, how = object_split(objects, a.embedders, a.seed)
    half = len(distractors) // 2
    calib_dis, test_dis = distractors.iloc[:half], distractors.iloc[half:]

    # the query photos, made once for every embedder
    t0 = time.time()
    tasks = [(r.path, [SEEDS["calibration"] + i, SEEDS["test"] + i]) for i, r in enumerate(registered.itertuples())]
    tasks += [(r.path, [SEEDS["calibration"] + 50_000 + i]) for i, r in enumerate(calib_dis.itertuples())]
    tasks += [(r.path, [SEEDS["test"] + 50_000 + i]) for i, r in enumerate(test_dis.itertuples())]
    made = make_queries(tasks, a.workers, Path(a.query_cache) if a.query_cache else None)
    n = len(registered)
    queries = {
        "calibration_registered": ([m[0] for m in made[:n]], registered["object_id"].tolist()),
        "test_registered": ([m[1] for m in made[:n]], registered["object_id"].tolist()),
        "calibration_distractors": ([m[0] for m in made[n:n + len(calib_dis)]], calib_dis["object_id"].tolist()),
        "test_distractors": ([m[0] for m in made[n + len(calib_dis):]], test_dis["object_id"].tolist()),
    }
    query_seconds = time.time() - t0

    with tempfile.TemporaryDirectory() as tmp:
        runs = [(spec, k, f) for spec in a.embedders for k in a.gallery_reshots for f in a.flip]
        results = [measure(spec, registered, queries, a.target_fmr, Path(tmp), k,
                           Path(a.save_vectors) / f"{n}.npz" if a.save_vectors else None, bool(f), a.scoring)
                   for n, (spec, k, f) in enumerate(runs)]
    print(json.dumps({
        "date": date.today().isoformat(), "data": a.data, "objects_chosen_by": how,
        "registered_objects": n, "registered_seen_in_training": int(registered["seen"].sum()),
        "unregistered_calibration": len(calib_dis), "unregistered_test": len(test_dis),
        "query_photos": sum(len(m) for m in made), "query_seconds": round(query_seconds, 1),
        "results": results,
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
