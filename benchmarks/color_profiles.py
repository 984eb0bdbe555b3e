"""Photos saved in another colour space than sRGB: does reading their colour profile matter?

    .venv/bin/python benchmarks/color_profiles.py runs/ivory --profiles DIR/AdobeRGB1998.icc ...

A phone saves in Display P3, a camera in Adobe RGB, a raw converter in ProPhoto RGB: the same
colours as other numbers, with the file's embedded ICC profile saying how to read them. The museum
photos the models learnt from carry no profile (sRGB). This script takes the run's test photos,
converts each to every profile given (LittleCMS through Pillow's ImageCms, perceptual intent) and
saves it as JPEG quality 95 twice: with the profile embedded ("tagged", what the camera writes) and
without it ("untagged": the same numbers read as sRGB, which is what artsentry's loader did with the
tagged file before it applied profiles). The sRGB photo saved the same way is the baseline. Prints
the model's accuracy, ROC-AUC and mean p(positive) on each, the mean absolute difference of the
loaded pixels from the sRGB photo (0-255), and ``load_image``'s speed on each set (one thread, whole
photos, no draft scaling).

ICC profiles: Debian's ``colord-data`` and ``icc-profiles-free`` packages ship Adobe RGB (1998)
compatible, ProPhoto RGB, Wide Gamut RGB and others under ``/usr/share/color/icc``.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms

from artsentry.data.images import load_image
from artsentry.data.manifest import read_manifest
from artsentry.evaluate import binary_metrics
from artsentry.inference import Predictor
from artsentry.models.artifact import resolve_model_dir


def encode(img: Image.Image, profile, tagged: bool) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=95, **({"icc_profile": profile.tobytes()} if tagged else {}))
    return buf.getvalue()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="run folder: its model and the test split of its manifest.csv")
    ap.add_argument("--profiles", nargs="+", required=True, help="ICC profile files")
    ap.add_argument("--limit", type=int, default=0, help="N test photos drawn with seed 0 (0: all)")
    ap.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    a = ap.parse_args(argv)

    run = Path(a.run)
    df, _ = read_manifest(run / "manifest.csv")
    df = df[df["split"] == "test"].reset_index(drop=True)
    if a.limit:  # a seeded draw: the test split is in label order
        df = df.sample(n=min(a.limit, len(df)), random_state=0).reset_index(drop=True)
    predictor = Predictor.load(resolve_model_dir(run))
    y = (df["label"] == predictor.positive_label).to_numpy().astype(int)
    srgb = ImageCms.createProfile("sRGB")
    profiles = {ImageCms.getProfileDescription(ImageCms.getOpenProfile(p)).strip(): ImageCms.getOpenProfile(p)
                for p in a.profiles}
    conditions: dict[str, list[bytes]] = {"sRGB (baseline)": []}
    for name in profiles:
        conditions[f"{name}, tagged"] = []
        conditions[f"{name}, untagged"] = []
    originals = []
    t0 = time.perf_counter()
    for path in df["path"]:
        img = load_image(path)
        originals.append(np.asarray(img, dtype=np.float32))
        conditions["sRGB (baseline)"].append(encode(img, srgb, False))
        for name, prof in profiles.items():
            moved = ImageCms.profileToProfile(img, srgb, prof, renderingIntent=ImageCms.Intent.PERCEPTUAL,
                                              outputMode="RGB")
            conditions[f"{name}, tagged"].append(encode(moved, prof, True))
            conditions[f"{name}, untagged"].append(encode(moved, prof, False))
    print(f"{len(df)} test photos of {run}, {len(profiles)} profile(s); made in {time.perf_counter() - t0:.0f} s",
          flush=True)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for cond, blobs in conditions.items():
            files = []
            for i, data in enumerate(blobs):
                f = Path(tmp) / f"{i}.jpg"
                f.write_bytes(data)
                files.append(str(f))
            t = time.perf_counter()
            loaded = [load_image(f) for f in files]
            per_s = len(files) / (time.perf_counter() - t)
            diff = float(np.mean([np.abs(np.asarray(img, np.float32) - o).mean() for img, o in zip(loaded, originals)]))
            del loaded
            preds = predictor.predict_files(files)
            p = np.array([pr.score for pr in preds], dtype=np.float64)
            m = binary_metrics(y, p, threshold=0.5 if predictor.threshold is None else predictor.threshold)
            results[cond] = {"accuracy": m["accuracy"], "roc_auc": m["roc_auc"], "mean_p_positive": float(p.mean()),
                             "pixel_difference": diff, "loads_per_s": per_s}
            print(f"{cond:45s} accuracy {m['accuracy']:.4f}  ROC-AUC {m['roc_auc']:.4f}  mean p {p.mean():.4f}  "
                  f"pixels off by {diff:.2f}  load_image {per_s:.0f} photos/s", flush=True)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps({"date": date.today().isoformat(), "run": str(run), "photos": len(df),
                                     "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
