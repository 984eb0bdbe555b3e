"""Does averaging each photo with its mirror image help a trained classifier?

    .venv/bin/python benchmarks/mirror_tta.py runs/ivory

Scores the run's test photos as they are and listing-style (``evaluate --shift``'s generator, seed 0),
once plainly and once as the mean of the photo's and its mirror image's probabilities, and prints
accuracy at the model's threshold and ROC-AUC for each. Nothing in artsentry uses the mirror for a
classifier's decision; this measures whether it should.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
import torch

from artsentry.data.listing import shift_variants
from artsentry.evaluate import binary_metrics, variant_probabilities
from artsentry.inference import Predictor


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="run folder (its model/ and manifest.csv)")
    a = ap.parse_args(argv)
    run = Path(a.run)
    predictor = Predictor.load(run / "model", runtime="torch")
    test = pd.read_csv(run / "manifest.csv")
    test = test[test["split"] == "test"]
    paths = test["path"].tolist()
    y = (test["label"] == predictor.positive_label).astype(int).to_numpy()
    plain = predictor.proba_tensor

    def mirrored(x: torch.Tensor):
        return (plain(x) + plain(torch.flip(x, dims=[-1]))) / 2

    t = 0.5 if predictor.threshold is None else predictor.threshold
    for name in ("studio", "listing"):
        for how, forward in (("plain", plain), ("with mirror", mirrored)):
            predictor.proba_tensor = forward
            s = variant_probabilities(predictor, paths, shift_variants()[name], seed=0)[:, predictor.positive_index]
            m = binary_metrics(y, s, t)
            print(f"{name:<8} {how:<12} accuracy {m['accuracy']:.4f}  ROC-AUC {m['roc_auc']:.4f}  "
                  f"(threshold {t:g}, n {m['n']})", flush=True)
    predictor.proba_tensor = plain
    return 0


if __name__ == "__main__":
    sys.exit(main())
