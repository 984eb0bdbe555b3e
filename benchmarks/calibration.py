"""Are a trained model's probabilities calibrated, and does temperature scaling fix them?

    .venv/bin/python benchmarks/calibration.py runs/ivory-seed1 runs/ivory-seed2 --out runs/calibration

For each run (a trained binary classifier with its ``manifest.csv``): the probabilities of its
validation photos, its test photos as they are (studio) and the same test photos re-photographed
listing-style (``evaluate --shift``'s "listing" set, every family at once, seed 0). A temperature
is fitted on the validation photos only (``evaluate.fit_temperature``, what ``evaluate
--calibrate`` saves) and applied to both test sets. Printed per set: accuracy at the model's
threshold before and after (the threshold moves with the temperature, so it must not change),
log loss, Brier score, expected calibration error (10 bins of p(positive)), and the mean
confidence against the accuracy at 0.5 (under- or over-confidence). ``--out`` keeps a JSON of the
figures and the raw probabilities (``.npz``) so the table can be re-derived without the network.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

from artsentry.data.listing import shift_variants
from artsentry.data.manifest import read_manifest
from artsentry.evaluate import (apply_temperature, binary_metrics, fit_temperature,
                                temperature_threshold, variant_probabilities)
from artsentry.inference import Predictor
from artsentry.models.artifact import resolve_model_dir
from artsentry.memory import keep_freed_memory


def figures(y: np.ndarray, p_pos: np.ndarray, threshold: float) -> dict:
    m = binary_metrics(y, p_pos, threshold)
    conf = np.maximum(p_pos, 1 - p_pos)
    return {"n": m["n"], "accuracy": m["accuracy"], "log_loss": m["log_loss"], "brier": m["brier"], "ece": m["ece"],
            "mean_confidence": round(float(conf.mean()), 4),
            "accuracy_at_0.5": round(float(((p_pos >= 0.5) == (y == 1)).mean()), 4)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="run folders (model/ and manifest.csv inside)")
    ap.add_argument("--out", type=Path, default=None, help="folder for calibration.json and the probabilities")
    ap.add_argument("--seed", type=int, default=0, help="seed of the listing-style set (default 0, as evaluate --shift)")
    a = ap.parse_args(argv)
    keep_freed_memory()
    results = {"date": date.today().isoformat(), "command": " ".join(["benchmarks/calibration.py", *sys.argv[1:]]),
               "runs": {}}
    if a.out:
        a.out.mkdir(parents=True, exist_ok=True)
    for run in a.runs:
        t0 = time.perf_counter()
        run = Path(run)
        predictor = Predictor.load(resolve_model_dir(run))
        if not predictor.binary:
            raise SystemExit(f"{run}: a binary model is needed")
        if predictor.temperature != 1.0:
            raise SystemExit(f"{run}: already calibrated (temperature {predictor.temperature}); give an uncalibrated one")
        df, _ = read_manifest(run / "manifest.csv")
        pos = predictor.positive_index
        sets = {}
        for name, split, variant in (("val", "val", None), ("studio", "test", None),
                                     ("listing", "test", shift_variants()["listing"])):
            part = df[df["split"] == split]
            probs = variant_probabilities(predictor, part["path"].tolist(), variant, seed=a.seed, progress=True,
                                          desc=f"{run.name} {name}")
            ok = ~np.isnan(probs).any(1)
            y = (part["label"].to_numpy()[ok] == predictor.positive_label).astype(int)
            sets[name] = (y, probs[ok])
        y_val, p_val = sets["val"]
        yv = np.where(y_val == 1, pos, 1 - pos)
        temperature = fit_temperature(p_val, yv)
        t_before = 0.5 if predictor.threshold is None else predictor.threshold
        t_after = temperature_threshold(t_before, temperature)
        row = {"temperature": round(temperature, 4), "threshold": [t_before, round(t_after, 6)]}
        for name, (y, p) in sets.items():
            cal = apply_temperature(p, temperature)
            row[name] = {"before": figures(y, p[:, pos], t_before), "after": figures(y, cal[:, pos], t_after)}
        row["seconds"] = round(time.perf_counter() - t0, 1)
        results["runs"][str(run)] = row
        if a.out:
            np.savez_compressed(a.out / f"{run.name}.npz", **{f"{k}_{w}": v for k, (y, p) in sets.items()
                                                               for w, v in (("y", y), ("p", p))})
        print(f"\n{run}: temperature {temperature:.4f} (fitted on {len(y_val)} val photos), threshold "
              f"{t_before:.4f} -> {t_after:.4f}, {row['seconds']} s")
        print(f"  {'set':<8} {'':<7} {'acc':>7} {'logloss':>8} {'brier':>7} {'ECE':>7} {'mean conf':>9} {'acc@0.5':>8}")
        for name in sets:
            for when in ("before", "after"):
                f = row[name][when]
                print(f"  {name:<8} {when:<7} {f['accuracy']:>7.4f} {f['log_loss']:>8.4f} {f['brier']:>7.4f} "
                      f"{f['ece']:>7.4f} {f['mean_confidence']:>9.4f} {f['accuracy_at_0.5']:>8.4f}")
    if a.out:
        (a.out / "calibration.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
