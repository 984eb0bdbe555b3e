"""Frozen EfficientNet-Lite features + logistic regression on a run's split, at several input sizes.

    .venv/bin/python benchmarks/frozen_probe.py runs/ivory --sizes 224 320
    .venv/bin/python benchmarks/frozen_probe.py runs/ivory --arch efficientnet_lite2 --sizes 260
    .venv/bin/python benchmarks/frozen_probe.py runs/ivory --sizes 320 --split-seeds 0 1 2 3 4
    .venv/bin/python benchmarks/frozen_probe.py runs/ivory --sizes 320 --pooling avg texture --pool-stages 3 4 5
    .venv/bin/python benchmarks/frozen_probe.py runs/ivory --sizes 320 --train-fractions 0.25 0.5 0.75 1 --with-val
    .venv/bin/python benchmarks/frozen_probe.py runs/ivory --sizes 320 --pooling avg texture --backbone-from runs/ivory/model

The floor any trained model must beat, and a cheap way to see whether a larger
input helps before paying for fine-tuning at that size. With ``--split-seeds`` the
run's photos are split again with each seed (the training split rules: stratified,
grouped by object id and identical file content, the run's fractions) and probed on
each, features computed once: how hard the run's own test split is against others.
With ``--pooling texture`` the features are the second-order pooling of each of
``--pool-stages`` instead of (or beside, with ``avg`` too) the average-pooled last stage.
With ``--train-fractions`` the probe is also fitted on random shares of the training photos
(stratified, seeded; one photo per object in met-ivory) and, with ``--with-val``, on training
plus validation photos: a learning curve, whether more labelled photos would still move test
accuracy. With ``--backbone-from MODEL`` the backbone's weights are a trained model's (e.g. one
fine-tuned by ``make ivory``) instead of ImageNet's, its photos read as that model reads them.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from datetime import date
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from artsentry.data.manifest import read_manifest
from artsentry.data.splits import split_manifest
from artsentry.data.transforms import Preprocessing
from artsentry.index.embedder import Embedder
from artsentry.models import POOLINGS, create_model, default_preprocessing
from artsentry.models.artifact import load_model
from artsentry.models.pooling import DEFAULT_STAGE


def _probe(C: float):
    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=5000))


def learning_curve(X, y, ok, split, fractions, with_val: bool, C: float, seeds: int) -> dict:
    """Test accuracy (mean and sd over ``seeds`` draws) of the probe fitted on each share of the
    training photos, drawn per class so both classes keep their share; and on train + val."""
    test = ok & (split == "test")
    train_idx = np.flatnonzero(ok & (split == "train"))
    curve = {}
    for f in fractions:
        if not 0.0 < f <= 1.0:
            raise SystemExit(f"train fractions must be in (0, 1], not {f}")
        draws = [1] if f == 1.0 else range(seeds)
        accs = []
        for k in draws:
            rng = np.random.default_rng(k)
            chosen = np.concatenate([rng.choice(idx, max(1, round(f * len(idx))), replace=False)
                                     for idx in (train_idx[y[train_idx]], train_idx[~y[train_idx]])])
            accs.append(float(_probe(C).fit(X[chosen], y[chosen]).score(X[test], y[test])))
        curve[f"train x{f:g} ({round(f * len(train_idx))} photos)"] = {
            "test_accuracy": round(float(np.mean(accs)), 4),
            "sd": round(float(np.std(accs, ddof=1)), 4) if len(accs) > 1 else None}
    if with_val:
        both = ok & np.isin(split, ["train", "val"])
        curve[f"train + val ({int(both.sum())} photos)"] = {
            "test_accuracy": round(float(_probe(C).fit(X[both], y[both]).score(X[test], y[test])), 4), "sd": None}
    return curve


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", help="run folder whose manifest.csv (with its split) to use")
    ap.add_argument("--sizes", type=int, nargs="+", default=[224, 320])
    ap.add_argument("--arch", default="efficientnet_lite0", help="backbone (its weights package must be installed)")
    ap.add_argument("--C", type=float, default=0.01, help="inverse regularisation of the logistic regression")
    ap.add_argument("--pooling", nargs="+", default=["avg"], choices=POOLINGS,
                    help="feature pooling(s) to probe (texture: once per --pool-stages)")
    ap.add_argument("--pool-stages", type=int, nargs="+", default=[DEFAULT_STAGE],
                    help="stages pooled by --pooling texture")
    ap.add_argument("--split-seeds", type=int, nargs="+", default=None,
                    help="split the run's photos again with each of these seeds instead of using its split")
    ap.add_argument("--train-fractions", type=float, nargs="+", default=None,
                    help="also fit on these shares of the training photos (a learning curve)")
    ap.add_argument("--with-val", action="store_true",
                    help="with --train-fractions: also fit on the training and validation photos together")
    ap.add_argument("--curve-seeds", type=int, default=5, help="draws of each training share")
    ap.add_argument("--backbone-from", metavar="MODEL", default=None,
                    help="a trained model folder of --arch whose backbone weights (e.g. fine-tuned) replace the "
                         "ImageNet ones, read with its resize mode; the stages each pooling uses are taken")
    a = ap.parse_args()
    if a.with_val and a.train_fractions is None:
        ap.error("--with-val belongs to the learning curve: give --train-fractions too")
    df, _ = read_manifest(Path(a.run) / "manifest.csv")
    splits = {"run": df["split"].to_numpy()}
    if a.split_seeds is not None:
        n = len(df)
        fractions = {"val_fraction": round((df["split"] == "val").sum() / n, 2),
                     "test_fraction": round((df["split"] == "test").sum() / n, 2)}
        bare = df.drop(columns=["split"])
        splits = {f"seed {k}": split_manifest(bare, seed=k, **fractions)["split"].to_numpy()
                  for k in a.split_seeds}
    y = (df["label"] == "ivory").to_numpy()
    variants = [("avg", None)] if "avg" in a.pooling else []
    variants += [("texture", stage) for stage in a.pool_stages] if "texture" in a.pooling else []
    out = {"date": date.today().isoformat(), "run": a.run, "arch": a.arch, "C": a.C, "results": {}}
    models = {v: create_model(a.arch, 2, pretrained=True, pooling=v[0],
                             pool_stage=DEFAULT_STAGE if v[1] is None else v[1])
              for v in variants}  # built once each, not once per size
    resize = default_preprocessing(a.arch).resize
    if a.backbone_from:
        source, config = load_model(a.backbone_from)
        if config["architecture"]["name"] != a.arch:
            raise SystemExit(f"{a.backbone_from} is a {config['architecture']['name']}, not {a.arch}")
        tuned = source.backbone.state_dict()
        for model in models.values():
            own = model.backbone.state_dict()
            model.backbone.load_state_dict({k: tuned[k] for k in own})  # every key the pooling uses
        resize = config["preprocessing"].get("resize", resize)
        out["backbone_from"], out["resize"] = a.backbone_from, resize
    for (pooling, stage), size in itertools.product(variants, a.sizes):
        model = models[(pooling, stage)]
        pre = Preprocessing(**{**default_preprocessing(a.arch).to_dict(), "input_size": size, "resize": resize})
        emb = Embedder(model.backbone.eval(), pre, f"{a.backbone_from or 'pretrained:' + a.arch}@{size}",
                       model.num_features)
        X, errors = emb.embed_files(df["path"].tolist(), progress=True)
        tag = str(size) if pooling == "avg" else f"{size} texture stage {stage} ({model.num_features} features)"
        ok = np.array([e is None for e in errors])
        for name, split in splits.items():
            res = {}
            train = ok & (split == "train")
            clf = _probe(a.C).fit(X[train], y[train])
            for part in ("val", "test"):
                m = ok & (split == part)
                res[f"{part}_accuracy"] = round(float(clf.score(X[m], y[m])), 4)
            if a.train_fractions is not None:
                res["learning_curve"] = learning_curve(X, y, ok, split, a.train_fractions, a.with_val, a.C, a.curve_seeds)
            key = tag if a.split_seeds is None else f"{tag} {name}"
            out["results"][key] = res
        if a.split_seeds is not None:
            tests = [out["results"][f"{tag} {name}"]["test_accuracy"] for name in splits]
            out["results"][f"{tag} test accuracy over seeds"] = {
                "mean": round(float(np.mean(tests)), 4), "sd": round(float(np.std(tests, ddof=1)), 4) if len(tests) > 1 else None}
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
