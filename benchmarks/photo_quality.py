"""Photo-quality warnings: where their limits come from, how often they fire, what they are worth.

    .venv/bin/python benchmarks/photo_quality.py runs/ivory --out runs/photo-quality

``artsentry.data.quality`` warns beside a decision when a photo has little fine detail, is grainy,
is dark or is small. This script, on RUN's split (``RUN/manifest.csv``) and model (``RUN/model``):

1. measures sharpness, noise and brightness of every training photo, decoded as predictions
   decode them, and prints the 2nd percentile of sharpness and brightness and the 98th of noise:
   the source of ``SHARPNESS_MIN``, ``BRIGHTNESS_MIN`` and ``NOISE_MAX`` (it says whether the
   constants still match);
2. on the test photos as they are, re-photographed listing-style by the training generator
   (``evaluate --shift``'s pictures, seed 0), and changed by each kind of
   ``benchmarks/unseen_shift.py`` (photo changes the generator never makes), prints how often each
   warning fires and the model's accuracy on warned and unwarned photos;
3. times ``assess_quality`` against decoding alone, and the whole ``Predictor.predict_files``
   chain with and without the measurement.

The test photos never set a limit: the limits come from the training photos only.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

from artsentry.data import quality as Q
from artsentry.data.images import load_image
from artsentry.data.listing import FAMILIES, ListingStyleDataset, MaskCache
from artsentry.data.manifest import read_manifest
from artsentry.models.artifact import resolve_model_dir
from artsentry.inference import Predictor, iter_dataset_batches

sys.path.insert(0, str(Path(__file__).resolve().parent))
from unseen_shift import KINDS, ChangedDataset  # noqa: E402  (a sibling benchmark script)


def measure(predictor: Predictor, dataset) -> tuple[np.ndarray, list]:
    """p(positive) and the PhotoQuality of every photo of ``dataset`` (built with quality=True)."""
    p = np.full(len(dataset), np.nan)
    qs: list = [None] * len(dataset)
    with torch.inference_mode():
        for batch in iter_dataset_batches(dataset, batch_size=predictor.batch_size, num_workers=1, progress=True,
                                          desc=getattr(dataset, "kind", None) or "photos"):
            if len(batch.index):
                p[batch.index] = predictor.proba_tensor(batch.x)[:, predictor.positive_index]
            for i, q in zip(batch.index, batch.quality):
                qs[i] = q
    return p, qs


def summarise(name: str, y: np.ndarray, p: np.ndarray, qs: list, threshold: float) -> dict:
    ok = ~np.isnan(p)
    right = (p >= threshold).astype(int) == y
    warned = np.array([bool(q and q.warnings) for q in qs])
    kinds = {"small": "small photo", "detail": "little fine detail", "grainy": "grainy photo", "dark": "dark photo"}
    row = {"n": int(ok.sum()), "accuracy": round(float(right[ok].mean()), 4),
           "warned_share": round(float(warned[ok].mean()), 4)}
    for key, prefix in kinds.items():
        row[f"{key}_share"] = round(float(np.mean([any(w.startswith(prefix) for w in q.warnings)
                                                    for q in np.asarray(qs, dtype=object)[ok]])), 4)
    for label, mask in (("warned", ok & warned), ("unwarned", ok & ~warned)):
        row[f"accuracy_{label}"] = round(float(right[mask].mean()), 4) if mask.any() else None
        row[f"n_{label}"] = int(mask.sum())
    print(f"{name:16s} n {row['n']}  accuracy {row['accuracy']:.4f}  warned {row['warned_share']:.3f} "
          f"(detail {row['detail_share']:.3f}, grainy {row['grainy_share']:.3f}, dark {row['dark_share']:.3f}, "
          f"small {row['small_share']:.3f})  "
          f"accuracy warned {row['accuracy_warned']} ({row['n_warned']}) / unwarned {row['accuracy_unwarned']} "
          f"({row['n_unwarned']})", flush=True)
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path, help="run folder: manifest.csv and model/")
    ap.add_argument("--kinds", nargs="*", choices=list(KINDS), default=list(KINDS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="folder for photo_quality.json")
    a = ap.parse_args(argv)
    torch.set_num_threads(2)
    t_start = time.perf_counter()
    df, _ = read_manifest(a.run / "manifest.csv")
    predictor = Predictor.load(resolve_model_dir(a.run), runtime="torch")
    draft = Q.measuring_draft(predictor.preprocessing.draft_size)  # as prediction decodes measured photos
    result = {"date": date.today().isoformat(), "command": " ".join(["benchmarks/photo_quality.py", *sys.argv[1:]]),
              "constants": {"scale": Q.QUALITY_SCALE, "sharpness_min": Q.SHARPNESS_MIN, "noise_max": Q.NOISE_MAX,
                            "brightness_min": Q.BRIGHTNESS_MIN, "small_side": Q.SMALL_SIDE}}

    # 1. the limits, from the training photos
    train = df.loc[df["split"] == "train", "path"].tolist()
    sharp, noise, bright = [], [], []
    for path in train:
        grey = Q.grey_at_scale(load_image(path, draft_size=draft), Q.QUALITY_SCALE)
        sharp.append(Q.sharpness(grey))
        noise.append(Q.noise_sigma(grey))
        bright.append(Q.brightness(grey))
    limits = {"n_train": len(train), "sharpness_p2": round(float(np.percentile(sharp, 2)), 4),
              "noise_p98": round(float(np.percentile(noise, 98)), 3),
              "brightness_p2": round(float(np.percentile(bright, 2)), 2),
              "sharpness_median": round(float(np.median(sharp)), 4), "noise_median": round(float(np.median(noise)), 3),
              "brightness_median": round(float(np.median(bright)), 1)}
    result["training_photos"] = limits
    print(f"training photos ({len(train)}): sharpness median {limits['sharpness_median']}, 2nd percentile "
          f"{limits['sharpness_p2']} (SHARPNESS_MIN {Q.SHARPNESS_MIN}); noise median {limits['noise_median']}, "
          f"98th percentile {limits['noise_p98']} (NOISE_MAX {Q.NOISE_MAX}); brightness median "
          f"{limits['brightness_median']}, 2nd percentile {limits['brightness_p2']} (BRIGHTNESS_MIN "
          f"{Q.BRIGHTNESS_MIN})", flush=True)

    # 2. how often the warnings fire, and the accuracy on warned and unwarned photos
    test = df[df["split"] == "test"]
    paths = test["path"].tolist()
    y = (test["label"] == predictor.positive_label).to_numpy().astype(int)
    t = 0.5 if predictor.threshold is None else predictor.threshold
    rows = {}
    p, qs = measure(predictor, ChangedDataset(paths, predictor.transform, None, a.seed, draft_size=draft,
                                              names=paths, quality=True))
    rows["studio"] = summarise("studio", y, p, qs, t)
    with tempfile.TemporaryDirectory() as tmp:
        listing = ListingStyleDataset(paths, predictor.transform, tuple(FAMILIES), a.seed, mask_cache=MaskCache(tmp),
                                      names=paths, quality=True)
        p, qs = measure(predictor, listing)
    rows["listing"] = summarise("listing-style", y, p, qs, t)
    for kind in a.kinds:
        p, qs = measure(predictor, ChangedDataset(paths, predictor.transform, kind, a.seed, names=paths, quality=True))
        rows[kind] = summarise(kind, y, p, qs, t)
    result["test"] = rows

    # 3. what a photo's assessment costs beside its decoding
    sample = paths[:200]
    t0 = time.perf_counter()
    images = [load_image(path, draft_size=draft) for path in sample]
    decode = time.perf_counter() - t0
    t0 = time.perf_counter()
    for img in images:
        Q.assess_quality(img)
    assess = time.perf_counter() - t0
    result["cost_ms_per_photo"] = {"decode": round(1000 * decode / len(sample), 2),
                                   "assess_quality": round(1000 * assess / len(sample), 2)}
    print(f"per photo, one core: decode {result['cost_ms_per_photo']['decode']} ms, assess_quality "
          f"{result['cost_ms_per_photo']['assess_quality']} ms", flush=True)
    # ... and in the whole prediction chain (the runtime the model's config names, its decoding
    # worker(s)), with and without the measurement, alternating, twice
    chain = Predictor.load(resolve_model_dir(a.run))
    chain.predict_files(paths[:64], quality=False)  # warm-up
    rates: dict[str, list[float]] = {"without": [], "with": []}
    for _ in range(2):
        for key, quality in (("without", False), ("with", True)):
            t0 = time.perf_counter()
            chain.predict_files(paths, quality=quality)
            rates[key].append(round(len(paths) / (time.perf_counter() - t0), 1))
    result["predict_chain_img_per_s"] = {"runtime": chain.runtime, **rates}
    print(f"predict chain ({chain.runtime}, {len(paths)} photos): {rates['without']} img/s without the "
          f"measurement, {rates['with']} with it", flush=True)
    result["seconds"] = round(time.perf_counter() - t_start, 1)
    print(json.dumps(result, indent=2))
    if a.out:
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / "photo_quality.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
