"""Studio vs listing-style accuracy of several models, in one run, on one held-out split.

    .venv/bin/python benchmarks/listing.py runs/frozen-224 runs/exp-224-blr1e4 runs/exp-224-listing

Each argument is a run folder (model/ + manifest.csv). The runs must share their test
split (same data and seed: checked). For each model: accuracy on the studio test photos,
on listing-style versions of them (``artsentry.data.listing``, seed 0: the same images
for every model), per transform family, and on the background alone (object's box
masked out), with the drop in points. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from datetime import date
from pathlib import Path

import pandas as pd


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    from artsentry.evaluate import run_evaluation

    tests = {}
    for run in a.runs:
        df = pd.read_csv(run / "manifest.csv")
        tests[run] = sorted(df.loc[df["split"] == "test", "path"])
    first = tests[a.runs[0]]
    for run, paths in tests.items():
        if paths != first:
            raise SystemExit(f"{run}: its test split differs from {a.runs[0]}'s; the comparison would not be fair")
    out = {"date": date.today().isoformat(), "machine": platform.processor() or platform.machine(),
           "test_images": len(first), "seed": a.seed, "models": {}}
    for run in a.runs:
        cfg = json.loads((run / "model" / "config.json").read_text())
        t0 = time.time()
        with tempfile.TemporaryDirectory() as tmp:
            res = run_evaluation(run, split="test", out_dir=tmp, shift=True, shift_seed=a.seed, explain=False,
                                 progress=False)
        sh = res["shift"]
        v = sh["variants"]
        out["models"][str(run)] = {
            "settings": {k: cfg.get("training", {}).get("settings", {}).get(k) for k in
                         ("mode", "augment", "image_size", "epochs", "backbone_lr")},
            "studio": v["studio"]["accuracy"], "listing": v["listing"]["accuracy"],
            "drop_points": sh["drop_points"], "background_only": v["background_only"]["accuracy"],
            "chance": sh["chance_accuracy"], "drop_points_by_family": sh["drop_points_by_family"],
            "worst_family": sh["worst_family"], "seconds": round(time.time() - t0, 1)}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
