"""Photos of several objects ("lots"): whole-photo decisions against the tile scan.

    .venv/bin/python benchmarks/lots.py runs/ivory --lots 400

A model's threshold is chosen for photos of one object. This composes lot photos of four objects
from the run's own split (``artsentry.lots``): the tile scan's threshold is chosen on ``--lots`` lots
of the validation photos, and both decisions are measured on ``--lots`` lots of the test photos,
half of them holding one positive object. It then scans the run's single test photos the same way
at the lot threshold: what the tile scan costs on photos of one object, where it is not meant to be
used. Prints the figures and writes them as JSON with ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from artsentry.data.images import ImageLoadError, load_image
from artsentry.inference import Predictor
from artsentry.lots import lot_metrics, measure_lots, scan


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="run folder (its model/ and manifest.csv)")
    ap.add_argument("--lots", type=int, default=400, help="lot photos per split (default 400)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="write the figures here as JSON")
    a = ap.parse_args(argv)
    run = Path(a.run)
    manifest = pd.read_csv(run / "manifest.csv", dtype=str, keep_default_na=False)
    predictor = Predictor.load(run / "model")
    t0 = time.time()
    lots = measure_lots(predictor, manifest, n=a.lots, seed=a.seed, progress=True)
    t_lots = time.time() - t0
    test = manifest[manifest["split"] == "test"]
    tiled, whole, truth = [], [], []
    t0 = time.time()
    for path, label in zip(test["path"], test["label"]):
        try:
            r = scan(predictor, [load_image(path)])[0]
        except ImageLoadError:
            continue
        tiled.append(r.score)
        whole.append(r.whole)
        truth.append(int(label == predictor.positive_label))
    t_singles = time.time() - t0
    model_threshold = 0.5 if predictor.threshold is None else predictor.threshold
    singles = {"whole_photo": lot_metrics(np.array(whole), np.array(truth), model_threshold),
               "tile_scan": lot_metrics(np.array(tiled), np.array(truth), lots["threshold"])}
    result = {"run": str(run), "date": date.today().isoformat(), "lots": lots, "single_photos": singles,
              "seconds": {"lots": round(t_lots, 1), "single_photos": round(t_singles, 1)}}
    print(f"{run}: lot threshold {lots['threshold']:.4f} (chosen on {lots['chosen_on']}), model threshold "
          f"{model_threshold:.4f}")
    for what, block in (("test lots of 4 objects", lots["test"]), ("single test photos", singles)):
        for name, key in (("whole photo", "whole_photo"), ("3x3 tile scan", "tile_scan")):
            m = block[key]
            print(f"  {what:<24} {name:<14} accuracy {m['accuracy']:.4f}  recall {m['recall']:.4f}  "
                  f"false flags {m['false_flag_rate']:.4f}  ROC-AUC {m['roc_auc']:.4f}  (n {m['n']})")
    print(f"  {t_lots:.0f} s for {2 * a.lots} lot photos, {t_singles:.0f} s for {len(truth)} single photos (10 crops each)")
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
