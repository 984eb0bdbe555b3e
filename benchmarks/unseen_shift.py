"""Photo changes the listing generator never makes: does a model's robustness carry over?

    .venv/bin/python benchmarks/unseen_shift.py runs/ivory runs/frozen --out runs/unseen-shift

``evaluate --shift`` tests a model on listing-style photos from the very generator that
``--augment listing`` trains on, so a model can do well there by having learnt that generator.
Real re-shot photos are not made by it. This script changes the test photos in ways outside the
generator's families or far outside their ranges, one kind at a time, each photo with its own
seeded draw (``item_seed(seed, i)``, so every model sees the same pictures), and prints each
model's accuracy at its own threshold, ROC-AUC, recall and specificity (of the positive label),
studio and per kind, and the mean drop in accuracy:

``motion_blur``   a straight-line kernel 9-17 px long (at 600 px), any angle (the generator
                  blurs with a Gaussian only)
``defocus``       a flat disk kernel of radius 3-5 px (at 600 px)
``low_res``       the long side shrunk to 110-180 px and enlarged back (the generator's JPEG
                  family shrinks to 480 px at the least)
``low_light``     exposure x0.2-0.35, then shot noise (Poisson, 20-60 photons at white) and
                  brightened back x2-3, clipped
``colour_cast``   a tungsten or fluorescent cast: red x1.25-1.45 and blue x0.6-0.75, or the
                  reverse (the generator's white balance stays within x0.85-1.15)
``haze``          mixed 30-50% with a light grey (glare through a shop window)
``hard_shadow``   a dark (x0.35-0.55) blurred-edge polygon over a band of 25-45% of the frame
``catalogue``     the photo at 45-65% of a white page, a black frame round it and grey text
                  lines above and below (a crop of a printed catalogue or an auction page)
``wide_frame``    the photo in a 16:9 frame of its own backdrop (border colour, noise sd 3), at a
                  random place along the width: a phone's landscape shot of the same scene
``tall_frame``    the same in a 9:16 frame (a phone held upright)

``--resize`` fits every photo to the models' square input another way than their config.json
says (``squash``, ``pad`` with white, ``center_crop``), to compare the three on the same model.

All runs must share the test split (the first run's ``manifest.csv``); their models are loaded
from ``RUN/model``. ``--out`` keeps the JSON and every photo's probability.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter

from artsentry.data.dataset import ImageDataset, item_seed
from artsentry.data.manifest import read_manifest
from artsentry.data.transforms import RESIZE_MODES
from artsentry.evaluate import binary_metrics
from artsentry.models.artifact import resolve_model_dir
from artsentry.inference import Predictor, iter_dataset_batches


def _convolve(img: Image.Image, kernel: np.ndarray) -> Image.Image:
    from scipy.ndimage import convolve

    arr = np.asarray(img, dtype=np.float32)
    out = np.stack([convolve(arr[..., c], kernel / kernel.sum(), mode="nearest") for c in range(3)], -1)
    return Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8), "RGB")


def motion_blur(img, rng):
    n = max(3, int(round(rng.uniform(9, 17) * max(img.size) / 600)) | 1)
    k = Image.new("L", (n, n), 0)
    ImageDraw.Draw(k).line([(0, n // 2), (n - 1, n // 2)], fill=255, width=1)
    k = np.asarray(k.rotate(rng.uniform(0, 180), resample=Image.BILINEAR), dtype=np.float32)
    return _convolve(img, k)


def defocus(img, rng):
    r = rng.uniform(3, 5) * max(img.size) / 600
    n = int(np.ceil(r))
    yy, xx = np.mgrid[-n:n + 1, -n:n + 1]
    return _convolve(img, (xx * xx + yy * yy <= r * r).astype(np.float32))


def low_res(img, rng):
    side = int(rng.uniform(110, 180))
    small = img.copy()
    small.thumbnail((side, side), Image.BILINEAR)
    return small.resize(img.size, Image.BILINEAR)


def low_light(img, rng):
    arr = np.asarray(img, dtype=np.float32) / 255.0 * rng.uniform(0.2, 0.35)
    photons = rng.uniform(20, 60)
    arr = rng.poisson(arr * photons) / photons * rng.uniform(2.0, 3.0)
    return Image.fromarray((np.clip(arr, 0, 1) * 255 + 0.5).astype(np.uint8), "RGB")


def colour_cast(img, rng):
    warm, cool = rng.uniform(1.25, 1.45), rng.uniform(0.6, 0.75)
    gains = np.array([warm, 1.0, cool] if rng.random() < 0.5 else [cool, 1.0, warm], np.float32)
    arr = np.asarray(img, dtype=np.float32) * gains
    return Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), "RGB")


def haze(img, rng):
    grey = Image.new("RGB", img.size, tuple(int(v) for v in rng.integers(200, 236, 3)))
    return Image.blend(img, grey, float(rng.uniform(0.3, 0.5)))


def hard_shadow(img, rng):
    w, h = img.size
    share = rng.uniform(0.25, 0.45)
    horizontal = rng.random() < 0.5
    side = h if horizontal else w
    start = rng.uniform(0, 1 - share) * side
    jag = lambda: rng.uniform(-0.08, 0.08) * side  # noqa: E731 - a slanted, uneven edge
    if horizontal:
        poly = [(0, start + jag()), (w, start + jag()), (w, start + share * side + jag()), (0, start + share * side + jag())]
    else:
        poly = [(start + jag(), 0), (start + jag(), h), (start + share * side + jag(), h), (start + share * side + jag(), 0)]
    mask = Image.new("L", img.size, 0)
    ImageDraw.Draw(mask).polygon(poly, fill=255)
    mask = mask.filter(ImageFilter.GaussianBlur(max(img.size) / 120))
    dark = Image.fromarray((np.asarray(img, np.float32) * rng.uniform(0.35, 0.55)).astype(np.uint8), "RGB")
    return Image.composite(dark, img, mask)


def catalogue(img, rng):
    w, h = img.size
    page = Image.new("RGB", img.size, tuple(int(v) for v in rng.integers(238, 256, 3)))
    scale = rng.uniform(0.45, 0.65)
    pw, ph = max(1, int(w * scale)), max(1, int(h * scale))
    x, y = int(rng.uniform(0.05, 0.95 - scale) * w), int(rng.uniform(0.15, 0.85 - scale) * h)
    page.paste(img.resize((pw, ph), Image.BICUBIC), (x, y))
    draw = ImageDraw.Draw(page)
    draw.rectangle([x - 3, y - 3, x + pw + 2, y + ph + 2], outline=(20, 20, 20), width=2)
    line = max(3, h // 60)
    for top, bottom in ((int(0.02 * h), y - 2 * line), (y + ph + 2 * line, int(0.98 * h))):
        for ty in range(top, bottom - line, 2 * line):
            length = rng.uniform(0.4, 0.9) * w
            draw.rectangle([int(0.05 * w), ty, int(0.05 * w + length), ty + line // 2 + 1], fill=(90, 90, 90))
    return page


def _framed(img, rng, aspect: float):
    """The photo inside a wider (``aspect`` > 1) or taller frame of its own backdrop: its border colour with
    a little noise, the photo at a random place along the long side (a phone's shot of the same scene)."""
    from artsentry.data.listing import background_colour

    w, h = img.size
    cw, ch = (max(w, int(round(h * aspect))), h) if aspect > 1 else (w, max(h, int(round(w / aspect))))
    fill = background_colour(np.asarray(img, dtype=np.float32))
    canvas = np.clip(fill[None, None, :] + rng.normal(0, 3, (ch, cw, 1)), 0, 255).astype(np.uint8)
    out = Image.fromarray(canvas, "RGB")
    out.paste(img, (int(rng.uniform(0, cw - w + 1)), int(rng.uniform(0, ch - h + 1))))
    return out


def wide_frame(img, rng):
    return _framed(img, rng, 16 / 9)


def tall_frame(img, rng):
    return _framed(img, rng, 9 / 16)


KINDS = {f.__name__: f for f in (motion_blur, defocus, low_res, low_light, colour_cast, haze, hard_shadow, catalogue,
                                 wide_frame, tall_frame)}


class ChangedDataset(ImageDataset):
    """Test photos changed by one kind (``None``: as they are); photo i drawn with ``item_seed(seed, i)``."""

    def __init__(self, sources, transform, kind: str | None, seed: int = 0, **kwargs):
        super().__init__(sources, transform, **kwargs)
        self.kind, self.seed = kind, seed

    def prepare(self, img, i):
        if self.kind is None:
            return img
        return KINDS[self.kind](img.convert("RGB"), np.random.default_rng(item_seed(self.seed, i)))


def probabilities(predictor: Predictor, paths: list[str], kind: str | None, seed: int) -> np.ndarray:
    """Calibrated p(positive) per photo (NaN: unreadable)."""
    draft = predictor.preprocessing.draft_size if kind is None else None  # studio: decoded as in prediction
    ds = ChangedDataset(paths, predictor.transform, kind, seed, draft_size=draft, names=paths)
    out = np.full(len(paths), np.nan)
    with torch.inference_mode():
        for batch in iter_dataset_batches(ds, batch_size=predictor.batch_size, num_workers=1, progress=True,
                                          desc=kind or "studio"):
            out[batch.index] = predictor.proba_tensor(batch.x)[:, predictor.positive_index]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", type=Path, nargs="+", help="run folders (model/ inside), the first one's manifest.csv")
    ap.add_argument("--kinds", nargs="+", choices=list(KINDS), default=list(KINDS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--resize", choices=RESIZE_MODES, default=None,
                    help="how each model fits a photo to its square input (default: as its config.json says)")
    ap.add_argument("--out", type=Path, default=None, help="folder for unseen_shift.json")
    a = ap.parse_args(argv)
    torch.set_num_threads(2)
    t_start = time.perf_counter()
    df, _ = read_manifest(a.runs[0] / "manifest.csv")
    test = df[df["split"] == "test"]
    for run in a.runs[1:]:
        other, _ = read_manifest(run / "manifest.csv")
        if sorted(other.loc[other["split"] == "test", "path"]) != sorted(test["path"]):
            raise SystemExit(f"{run}: its test split is not {a.runs[0]}'s")
    paths = test["path"].tolist()
    result = {"date": date.today().isoformat(), "command": " ".join(["benchmarks/unseen_shift.py", *sys.argv[1:]]),
              "seed": a.seed, "n": len(paths), "models": {}}
    probs = {}
    for run in a.runs:
        predictor = Predictor.load(resolve_model_dir(run), runtime="torch", resize=a.resize)
        y = (test["label"] == predictor.positive_label).to_numpy().astype(int)
        t = 0.5 if predictor.threshold is None else predictor.threshold
        rows = {}
        for kind in [None, *a.kinds]:
            p = probabilities(predictor, paths, kind, a.seed)
            ok = ~np.isnan(p)
            m = binary_metrics(y[ok], p[ok], t)
            rows[kind or "studio"] = {k: round(m[k], 4) for k in ("accuracy", "roc_auc", "recall", "specificity")}
            rows[kind or "studio"]["n"] = int(ok.sum())
            probs[f"{run}/{kind or 'studio'}"] = p
            print(f"{run}  {kind or 'studio':12s} accuracy {m['accuracy']:.4f}  ROC-AUC {m['roc_auc']:.4f}  "
                  f"recall {m['recall']:.4f}  specificity {m['specificity']:.4f}", flush=True)
        drops = [rows["studio"]["accuracy"] - rows[k]["accuracy"] for k in a.kinds]
        rows["mean_drop_points"] = round(100 * float(np.mean(drops)), 2)
        result["models"][str(run)] = rows
    result["seconds"] = round(time.perf_counter() - t_start, 1)
    print(json.dumps(result, indent=2))
    if a.out:
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / "unseen_shift.json").write_text(json.dumps(result, indent=2) + "\n")
        np.savez(a.out / "probabilities.npz", paths=np.array(paths), **probs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
