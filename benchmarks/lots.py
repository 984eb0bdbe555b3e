"""Photos of several objects ("lots"): whole-photo decisions against the tile scan.

    .venv/bin/python benchmarks/lots.py runs/ivory --lots 400

A model's threshold is chosen for photos of one object. This composes lot photos of four objects
from the run's own split (``artsentry.lots``): the tile scan's threshold is chosen on ``--lots`` lots
of the validation photos, and both decisions are measured on ``--lots`` lots of the test photos,
half of them holding one positive object. It then scans the run's single test photos the same way
at the lot threshold: what the tile scan costs on photos of one object, where it is not meant to be
used. Prints the figures and writes them as JSON with ``--out``.

With ``--register REG`` (a register holding the photos of the run's manifest, e.g. built by
``artsentry register import REG ../shared/datasets/met-ivory/metadata.csv``) it also asks whether
registered objects are found in lot photos: ``--register-lots`` lots of four registered objects,
each photo re-shot once by the listing generator (``data.listing.reshot_jpegs``), searched whole
and in tiles (``Register.search(lots=True)``, as ``register search --lots``): how many of the four
objects each search names among its top 5 matches, and among its top 4. ``--register-only`` skips
the classifier part.

With ``--heldout-register DIR`` it builds a register of the run's training photos only (pretrained
Lite0, into DIR), sets its whole-photo threshold on the validation photos (``register calibrate``,
target false-match rate ``--fmr``) and its lot threshold on lot photos composed of them
(``calibrate --lots --compose``), then searches ``--register-lots`` test lots holding one registered
object (its photo re-shot) among three unregistered test photos, and as many of four unregistered
ones: how often the registered object is the answer (matched, first), and how often an
all-unregistered lot matches anything, whole photo against tiles; and, for reference, the same
re-shot registered photos searched alone and as many single unregistered test photos re-shot. ``--embedder``
builds that register with another embedder (e.g. a ``train-embedder`` model trained on the run's
manifest: its training objects are the registered ones, its validation objects the calibration
photos, and the test photos stay unseen).
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


def heldout_register_lots(folder: Path, manifest: pd.DataFrame, n: int, seed: int, fmr: float,
                          embedder: str = "pretrained:efficientnet_lite0") -> dict:
    """A register of the training photos; thresholds from the validation photos; found and
    false-match rates on test lots, and on the same registered photos re-shot alone and single
    unregistered test photos for reference (module docstring)."""
    import io

    from artsentry.data.listing import reshot_jpegs
    from artsentry.index import Register
    from artsentry.lots import compose_lot

    t0 = time.time()
    if folder.exists():
        raise SystemExit(f"{folder} exists; give a new folder for the held-out register")
    reg = Register.create(folder, embedder)
    train = manifest[manifest["split"] == "train"]
    reg.import_objects([(str(o), [p], {}) for o, p in zip(train["object_id"], train["path"])])
    val = manifest.loc[manifest["split"] == "val", "path"].tolist()
    whole_t = reg.calibrate(val, target_fmr=fmr)["threshold"]
    lot_t = reg.calibrate(val, target_fmr=fmr, lots=True, compose=2 * n)["threshold"]
    test = manifest.loc[manifest["split"] == "test", "path"].tolist()
    rng = np.random.default_rng(seed + 7)
    lots, singles, truth = [], [], []
    for k in range(2 * n):
        picked = rng.choice(len(test), 4, replace=False)
        others = [load_image(test[i]) for i in picked]
        if k % 2 == 0:
            j = int(rng.integers(len(train)))
            shot = reshot_jpegs(train["path"].iloc[j], [seed * 100_003 + k])[0]
            others[int(rng.integers(4))] = load_image(shot)
            truth.append(str(train["object_id"].iloc[j]))
            singles.append(shot)  # the same re-shot photo, alone
        else:
            truth.append(None)
            singles.append(reshot_jpegs(test[picked[0]], [seed * 100_003 + k])[0])  # an unregistered one, re-shot
        buf = io.BytesIO()
        compose_lot(others, rng).save(buf, format="JPEG", quality=92)
        lots.append(buf.getvalue())
    out = {"registered_objects": len(reg), "embedder": reg.embedder.spec, "lots": n, "whole_threshold": whole_t,
           "lot_threshold": lot_t, "fmr": fmr}
    for name, queries, tiled in (("single", singles, False), ("whole", lots, False), ("tiles", lots, True)):
        res = reg.search(queries, k=1, lots=tiled)
        hit = [r.no_match is False and r.matches[0].object_id == t for r, t in zip(res, truth) if t is not None]
        false = [r.no_match is False for r, t in zip(res, truth) if t is None]
        out[name] = {"found": float(np.mean(hit)), "false_match": float(np.mean(false))}
    reg.close()
    out["seconds"] = round(time.time() - t0, 1)
    return out


def _print_register(r: dict) -> None:
    n = r["objects"]
    print(f"  registered objects in lots of 4 ({r['lots']} lots, {n} objects, re-shot), named among the top 5 / "
          f"top 4: whole-photo search {r['whole_top5']} / {r['whole_top4']} ({r['whole_top5'] / n:.3f} / "
          f"{r['whole_top4'] / n:.3f}), tile search {r['tiles_top5']} / {r['tiles_top4']} ({r['tiles_top5'] / n:.3f} / "
          f"{r['tiles_top4'] / n:.3f}); {r['seconds']:.0f} s")


def register_lots(register: str, manifest: pd.DataFrame, n: int, seed: int) -> dict:
    """How many of the four registered objects of each lot photo a whole-photo search and a tile
    search (``Register.search(lots=True)``) name among their top 5 and top 4 matches."""
    import io

    from artsentry.data.listing import reshot_jpegs
    from artsentry.index import Register
    from artsentry.lots import compose_lot

    reg = Register.open(register)
    registered = {o["object_id"] for o in reg.list()}
    rows = manifest[manifest["object_id"].astype(str).isin(registered)]
    if len(rows) < 4:
        raise SystemExit(f"{register}: fewer than four of the manifest's objects are registered")
    rng = np.random.default_rng(seed)
    lots, truth = [], []
    t0 = time.time()
    for k in range(n):
        pick = rows.iloc[rng.choice(len(rows), 4, replace=False)]
        truth.append(set(pick["object_id"].astype(str)))
        photos = [load_image(reshot_jpegs(p, [seed * 100_003 + 4 * k + j])[0]) for j, p in enumerate(pick["path"])]
        buf = io.BytesIO()
        compose_lot(photos, rng).save(buf, format="JPEG", quality=92)
        lots.append(buf.getvalue())
    counts = {}
    for name, tiled in (("whole", False), ("tiles", True)):
        found = reg.search(lots, k=5, threshold=-np.inf, lots=tiled)
        for top in (5, 4):
            counts[f"{name}_top{top}"] = sum(len({m.object_id for m in r.matches[:top]} & t)
                                             for r, t in zip(found, truth))
    return {"lots": n, "objects": 4 * n, **counts, "embedder": reg.embedder.spec,
            "seconds": round(time.time() - t0, 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="run folder (its model/ and manifest.csv)")
    ap.add_argument("--lots", type=int, default=400, help="lot photos per split (default 400)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="write the figures here as JSON")
    ap.add_argument("--register", help="a register of the manifest's photos: also search lots of registered objects")
    ap.add_argument("--register-lots", type=int, default=100, help="lot photos for the register search (default 100)")
    ap.add_argument("--register-only", action="store_true", help="only the register search")
    ap.add_argument("--heldout-register", metavar="DIR", help="build a register of the training photos here and "
                    "measure found / false-match rates on lots with thresholds calibrated on validation photos")
    ap.add_argument("--fmr", type=float, default=0.01, help="target false-match rate of the calibrations")
    ap.add_argument("--embedder", default="pretrained:efficientnet_lite0",
                    help="the held-out register's embedder (as 'register create --embedder')")
    a = ap.parse_args(argv)
    run = Path(a.run)
    manifest = pd.read_csv(run / "manifest.csv", dtype=str, keep_default_na=False)
    if a.heldout_register:
        r = heldout_register_lots(Path(a.heldout_register), manifest, a.register_lots, a.seed, a.fmr, a.embedder)
        print(f"  held-out register ({r['registered_objects']} training objects, embedder {r['embedder']}; thresholds "
              f"at target false-match rate {a.fmr}: whole {r['whole_threshold']:.4f}, lots {r['lot_threshold']:.4f}), "
              f"{r['lots']} lots each:")
        for name in ("single", "whole", "tiles"):
            print(f"    {name:<6} registered object found (matched, first) {r[name]['found']:.3f}   "
                  f"all-unregistered {'photos' if name == 'single' else 'lots'} matching anything "
                  f"{r[name]['false_match']:.3f}")
        print(f"    {r['seconds']:.0f} s")
        if a.out:
            Path(a.out).parent.mkdir(parents=True, exist_ok=True)
            Path(a.out).write_text(json.dumps({"run": str(run), "date": date.today().isoformat(),
                                               "heldout_register": r}, indent=2) + "\n")
        return 0
    if a.register_only:
        if not a.register:
            raise SystemExit("--register-only needs --register")
        r = register_lots(a.register, manifest, a.register_lots, a.seed)
        _print_register(r)
        if a.out:
            Path(a.out).parent.mkdir(parents=True, exist_ok=True)
            Path(a.out).write_text(json.dumps({"run": str(run), "date": date.today().isoformat(), "register": r},
                                              indent=2) + "\n")
        return 0
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
    if a.register:
        result["register"] = register_lots(a.register, manifest, a.register_lots, a.seed)
        _print_register(result["register"])
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
