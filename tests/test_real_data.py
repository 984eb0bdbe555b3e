"""The ivory detector on real Met photos from ../shared (a subset, frozen backbone: seconds, not minutes).

The full-data fine-tuned figures are in BENCHMARKS.md (benchmarks/ivory.py)."""

import json

import pandas as pd

from artsentry.train import TrainSettings, train

from .conftest import require_met_ivory


def test_frozen_lite0_on_met_ivory_subset(tmp_path):
    root = require_met_ivory()
    meta = pd.read_csv(root / "metadata.csv")
    subset = pd.concat([g.sample(150, random_state=0) for _, g in meta.groupby("label")])
    subset["file"] = [str(root / f) for f in subset["file"]]
    subset.to_csv(tmp_path / "subset.csv", index=False)
    result = train(tmp_path / "subset.csv", tmp_path / "run",
                   TrainSettings(mode="frozen", val_fraction=0.2, test_fraction=0.3, seed=0), progress=False)
    test = result.evaluation["metrics"]["test"]
    assert test["n"] == 90 and test["unreadable"] == 0
    assert test["accuracy"] >= 0.8, test
    assert test["roc_auc"] >= 0.9, test
    manifest = pd.read_csv(tmp_path / "run" / "manifest.csv")
    assert manifest.groupby("object_id")["split"].nunique().max() == 1
    config = json.loads((result.model_dir / "config.json").read_text())
    assert config["metrics"]["val"]["n"] == 60
