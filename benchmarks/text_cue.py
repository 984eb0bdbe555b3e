"""Does the ivory model read the numbers museums write on objects? A shortcut study.

    .venv/bin/python benchmarks/text_cue.py runs/frozen        # a run folder: its model and its test split

Museum objects often carry a painted or inked inventory number ("133 B.", "17.190.213"); listings of
objects for sale mostly do not, so a model that leans on such marks would lose it on listings (issue 8).
Each test photo of the run is read by Tesseract (Debian's ``tesseract-ocr``; sparse text, ``--psm 11``):
a word that holds at least two digits, read with confidence >= 60 and between 1% and 20% of the photo's
height, is taken as a number on the object. For the photos with such numbers, three versions are scored:
as they are; with each number's box (padded by a fifth) filled with the median colour of a ring around
it (the number "removed"); and, as the control, with boxes of the same sizes filled the same way at random
places in the photo. If the model read the numbers, removing them would move the probability of ivory
more than the control's boxes do. Prints, per true class, how many photos have numbers and the mean
change of p(ivory) and the decisions flipped by each version.

Tesseract reads few of the numbers on these photos (small, hand-written, on carved surfaces), so the
other direction is measured too, on every test photo: an accession-style number ("17.190.213", 3.5% of
the photo's height, red or black ink as museums paint them) written at a random place in the photo's
middle, against the control of a mark of the same colour and size that is not text (a filled box over
the text's extent). A model that takes painted numbers for ivory's sign would rise on the first more than
on the second.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from artsentry.data.images import load_image  # noqa: E402
from artsentry.inference import Predictor  # noqa: E402


def number_boxes(img: Image.Image, min_conf: float = 60.0, scale: float = 1.0) -> list[tuple[int, int, int, int]]:
    """(left, top, width, height) of the words Tesseract reads in ``img`` (enlarged ``scale`` times for it)
    that look like inventory numbers."""
    with tempfile.NamedTemporaryFile(suffix=".png") as tmp:
        big = img if scale == 1 else img.resize((round(img.width * scale), round(img.height * scale)), Image.BICUBIC)
        big.save(tmp.name)
        out = subprocess.run(["tesseract", tmp.name, "stdout", "--psm", "11", "tsv"], capture_output=True,
                             text=True, check=True).stdout
    boxes = []
    for line in out.splitlines()[1:]:
        cols = line.split("\t")
        if len(cols) < 12 or not cols[11].strip():
            continue
        left, top, width, height = (round(int(v) / scale) for v in cols[6:10])
        conf, text = float(cols[10]), cols[11].strip()
        if conf >= min_conf and len(re.findall(r"\d", text)) >= 2 and 0.01 <= height / img.height <= 0.2:
            boxes.append((left, top, width, height))
    return boxes


def fill(img: Image.Image, boxes, pad: float = 0.2) -> Image.Image:
    """``img`` with each box (padded) filled with the median colour of a ring around it."""
    a = np.asarray(img).copy()
    h, w = a.shape[:2]
    for left, top, bw, bh in boxes:
        px, py = int(bw * pad) + 1, int(bh * pad) + 1
        x0, y0, x1, y1 = max(0, left - px), max(0, top - py), min(w, left + bw + px), min(h, top + bh + py)
        rx0, ry0, rx1, ry1 = max(0, x0 - px), max(0, y0 - py), min(w, x1 + px), min(h, y1 + py)
        ring = a[ry0:ry1, rx0:rx1].reshape(-1, 3)
        inner = np.zeros((ry1 - ry0, rx1 - rx0), bool)
        inner[y0 - ry0:y1 - ry0, x0 - rx0:x1 - rx0] = True
        colour = np.median(ring[~inner.reshape(-1)], axis=0) if (~inner).any() else np.median(ring, axis=0)
        a[y0:y1, x0:x1] = colour.astype(np.uint8)
    return Image.fromarray(a)


def moved(boxes, size, rng) -> list[tuple[int, int, int, int]]:
    """Boxes of the same sizes at random places inside the photo."""
    w, h = size
    return [(int(rng.integers(0, max(1, w - bw))), int(rng.integers(0, max(1, h - bh))), bw, bh)
            for _, _, bw, bh in boxes]


def painted(img: Image.Image, rng, text_too: bool) -> Image.Image:
    """``img`` with an accession-style number (``text_too``) or a same-sized box of its ink (the control)."""
    from PIL import ImageDraw, ImageFont

    out = img.copy()
    size = max(8, round(0.035 * img.height))
    font = ImageFont.load_default(size=size)
    number = f"{rng.integers(1, 100)}.{rng.integers(1, 400)}.{rng.integers(1, 300)}"
    ink = (170, 25, 25) if rng.random() < 0.5 else (25, 25, 25)
    draw = ImageDraw.Draw(out)
    l, t, r, b = draw.textbbox((0, 0), number, font=font)
    x = int(rng.integers(int(0.2 * img.width), max(int(0.2 * img.width) + 1, int(0.8 * img.width) - (r - l))))
    y = int(rng.integers(int(0.2 * img.height), max(int(0.2 * img.height) + 1, int(0.8 * img.height) - (b - t))))
    if text_too:
        draw.text((x, y), number, fill=ink, font=font)
    else:
        # the same pixels' worth of ink: text covers roughly a third of its box
        draw.rectangle([x + l, y + t + (b - t) // 3, x + r, y + b - (b - t) // 3], fill=ink)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=Path, help="a run folder: model/ and manifest.csv with a test split")
    ap.add_argument("--split", default="test")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--min-conf", type=float, default=60.0, help="Tesseract's word confidence (0-100)")
    ap.add_argument("--ocr-scale", type=float, default=1.0, help="enlarge photos this much for Tesseract")
    a = ap.parse_args()
    predictor = Predictor.load(a.run / "model")
    positive = predictor.positive_label
    col = predictor.labels.index(positive)
    threshold = predictor.threshold if predictor.threshold is not None else 0.5
    df = pd.read_csv(a.run / "manifest.csv", dtype=str, keep_default_na=False)
    df = df[df["split"] == a.split].reset_index(drop=True)
    images = [load_image(p) for p in df["path"]]
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        found = list(pool.map(lambda im: number_boxes(im, a.min_conf, a.ocr_scale), images))
    rng = np.random.default_rng(a.seed)
    rows = []
    for (label, path), img, boxes in zip(zip(df["label"], df["path"]), images, found):
        if boxes:
            rows.append((label, path, img, boxes, moved(boxes, img.size, rng)))
    with_numbers = pd.Series([r[0] for r in rows]).value_counts().to_dict()
    p = {name: predictor.predict_proba(versions)[:, col] for name, versions in (
        ("as is", [r[2] for r in rows]), ("numbers removed", [fill(r[2], r[3]) for r in rows]),
        ("control boxes", [fill(r[2], r[4]) for r in rows]))}
    labels = np.array([r[0] for r in rows])
    out = {"date": date.today().isoformat(), "model": str(a.run / "model"), "split": a.split, "photos": len(df),
           "min_conf": a.min_conf, "ocr_scale": a.ocr_scale,
           "photos_by_class": df["label"].value_counts().to_dict(), "with_numbers_by_class": with_numbers,
           "boxes": int(sum(len(r[3]) for r in rows)), "by_class": {}}
    for label in sorted(set(labels)):
        m = labels == label
        base = p["as is"][m]
        entry = {"n": int(m.sum()), "mean_p": round(float(base.mean()), 4)}
        for name in ("numbers removed", "control boxes"):
            d = p[name][m] - base
            flipped = int(((base >= threshold) != (p[name][m] >= threshold)).sum())
            entry[name] = {"mean_change": round(float(d.mean()), 4),
                           "mean_abs_change": round(float(np.abs(d).mean()), 4), "flipped": flipped}
        out["by_class"][label] = entry
    print(json.dumps(out, indent=1))
    examples = sorted(zip(p["numbers removed"] - p["as is"], [r[1] for r in rows]))
    print("largest drops when the numbers are removed:", [(round(float(d), 3), Path(f).name) for d, f in examples[:5]])
    # the other direction: a number painted on every test photo, against a mark that is not text
    all_labels = df["label"].to_numpy()
    base = predictor.predict_proba(images)[:, col]
    added = {}
    for name, text_too in (("number painted", True), ("control mark", False)):
        draws = np.random.default_rng(a.seed + 1)  # the same places and inks for both
        added[name] = predictor.predict_proba([painted(im, draws, text_too) for im in images])[:, col]
    painted_out = {}
    for label in sorted(set(all_labels)):
        m = all_labels == label
        painted_out[label] = {"n": int(m.sum()), "mean_p": round(float(base[m].mean()), 4)}
        for name, q in added.items():
            d = q[m] - base[m]
            painted_out[label][name] = {"mean_change": round(float(d.mean()), 4),
                                        "mean_abs_change": round(float(np.abs(d).mean()), 4),
                                        "flipped": int(((base[m] >= threshold) != (q[m] >= threshold)).sum())}
    print(json.dumps({"painted_on_every_photo": painted_out}, indent=1))


if __name__ == "__main__":
    main()
