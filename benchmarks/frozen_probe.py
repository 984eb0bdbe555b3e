"""Frozen EfficientNet-Lite features + logistic regression on a run's split, at several input sizes.

    .venv/bin/python benchmarks/frozen_probe.py runs/ivory --sizes 224 320
    .venv/bin/python benchmarks/frozen_probe.py runs/ivory --arch efficientnet_lite2 --sizes 260

The floor any trained model must beat, and a cheap way to see whether a larger
input helps before paying for fine-tuning at that size.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from artsentry.data.manifest import read_manifest
from artsentry.data.transforms import Preprocessing
from artsentry.index.embedder import Embedder
from artsentry.models import create_model, default_preprocessing


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", help="run folder whose manifest.csv (with its split) to use")
    ap.add_argument("--sizes", type=int, nargs="+", default=[224, 320])
    ap.add_argument("--arch", default="efficientnet_lite0", help="backbone (its weights package must be installed)")
    ap.add_argument("--C", type=float, default=0.01, help="inverse regularisation of the logistic regression")
    a = ap.parse_args()
    df, _ = read_manifest(Path(a.run) / "manifest.csv")
    y = (df["label"] == "ivory").to_numpy()
    model = create_model(a.arch, 2, pretrained=True)
    out = {"date": date.today().isoformat(), "run": a.run, "arch": a.arch, "C": a.C, "results": {}}
    for size in a.sizes:
        pre = Preprocessing(**{**default_preprocessing(a.arch).to_dict(), "input_size": size})
        emb = Embedder(model.backbone, pre, f"pretrained:{a.arch}@{size}", model.num_features)
        X, errors = emb.embed_files(df["path"].tolist(), progress=True)
        ok = np.array([e is None for e in errors])
        res = {}
        train = ok & (df["split"] == "train").to_numpy()
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=a.C, max_iter=5000)).fit(X[train], y[train])
        for split in ("val", "test"):
            m = ok & (df["split"] == split).to_numpy()
            res[f"{split}_accuracy"] = round(float(clf.score(X[m], y[m])), 4)
        out["results"][str(size)] = res
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
