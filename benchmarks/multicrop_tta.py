"""Does averaging a classifier over crops of each photo help it?

    .venv/bin/python benchmarks/multicrop_tta.py runs/ivory --splits val test

For each photo of the run's splits, as it is and listing-style (``evaluate --shift``'s generator,
seed 0), the model scores six views: the whole photo as prediction shows it, and crops of
``--crop`` x ``--crop`` of it (0.75: 56% of its area) at the four corners and the centre, each
resized to the model's input size, so the surface is seen at ~1.3x the resolution. It prints accuracy
at the model's threshold and ROC-AUC for the plain photo, the whole photo with the centre crop, the
whole photo with all five crops, and the five crops alone (probabilities averaged). Nothing in
artsentry averages crops for a decision; this measures whether it should.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from artsentry.data.listing import ListingStyleDataset, shift_variants
from artsentry.data.quality import measuring_draft
from artsentry.data.transforms import CROP_RATIO, CropToAspect, eval_transform
from artsentry.evaluate import binary_metrics
from artsentry.inference import Predictor, iter_dataset_batches

POSITIONS = ("top-left", "top-right", "bottom-left", "bottom-right", "centre")


class Views:
    """PIL photo -> (whole photo as prediction sees it, then one tensor per crop position)."""

    def __init__(self, predictor: Predictor, crop: float):
        self.whole = predictor.transform
        self.fit = CropToAspect(CROP_RATIO)
        self.crop = crop
        # a crop keeps the fit photo's shape: squashed to the input as prediction squashes a fit photo
        self.finish = eval_transform(replace(predictor.preprocessing, resize="squash"))

    def __call__(self, img):
        whole = self.whole(img)
        img = self.fit(img)
        w, h = img.size
        cw, ch = round(w * self.crop), round(h * self.crop)
        lefts = {"top-left": (0, 0), "top-right": (w - cw, 0), "bottom-left": (0, h - ch),
                 "bottom-right": (w - cw, h - ch), "centre": ((w - cw) // 2, (h - ch) // 2)}
        crops = [self.finish(img.crop((x, y, x + cw, y + ch))) for x, y in (lefts[p] for p in POSITIONS)]
        return (whole, *crops)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="run folder (its model/ and manifest.csv)")
    ap.add_argument("--splits", nargs="+", default=["val", "test"])
    ap.add_argument("--crop", type=float, default=0.75, help="crop side as a share of the photo's (default 0.75)")
    a = ap.parse_args(argv)
    run = Path(a.run)
    predictor = Predictor.load(run / "model", runtime="torch")
    if predictor.preprocessing.resize != "fit":
        raise SystemExit(f"{run}: the crops are cut from the 'fit' photo; this model resizes with "
                         f"{predictor.preprocessing.resize!r}")
    manifest = pd.read_csv(run / "manifest.csv")
    views = Views(predictor, a.crop)
    t = 0.5 if predictor.threshold is None else predictor.threshold
    pos = predictor.positive_index
    for split in a.splits:
        part = manifest[manifest["split"] == split]
        paths = part["path"].tolist()
        y = (part["label"] == predictor.positive_label).astype(int).to_numpy()
        for name in ("studio", "listing"):
            variant = shift_variants()[name]
            t0 = time.time()
            draft = measuring_draft(predictor.preprocessing.draft_size) if variant is None else None
            ds = ListingStyleDataset(paths, views, variant, 0, draft_size=draft)
            p = np.full((len(paths), 1 + len(POSITIONS)), np.nan, dtype=np.float32)
            for batch in iter_dataset_batches(ds, batch_size=predictor.batch_size):
                if len(batch.index):
                    p[batch.index] = np.stack([predictor.proba_tensor(x)[:, pos] for x in batch.x], axis=1)
            combos = {"plain": p[:, :1], "whole + centre": p[:, [0, 5]], "whole + 5 crops": p,
                      "5 crops": p[:, 1:]}
            for how, cols in combos.items():
                m = binary_metrics(y, cols.mean(axis=1), t)
                print(f"{split:<5} {name:<8} {how:<16} accuracy {m['accuracy']:.4f}  ROC-AUC {m['roc_auc']:.4f}  "
                      f"(threshold {t:g}, n {m['n']})", flush=True)
            print(f"{split:<5} {name:<8} {time.time() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
