"""How much of each met-ivory photo the object fills, by the listing generator's foreground estimate.

    .venv/bin/python benchmarks/foreground_extent.py                # 200 photos drawn with seed 0
    .venv/bin/python benchmarks/foreground_extent.py --photos 0     # every photo

For each photo, the bounding box of ``data.listing.foreground_mask`` (the estimate the listing
augmentation composites with): its area as a share of the photo's, and its extent, the larger of
(box height / photo height, box width / photo width). Prints the 10/25/50/75/90th percentiles of
both as JSON. Whether cropping to the object, or a larger input, would show more of its surface:
an object that already spans the frame gains nothing from a crop.
"""

from __future__ import annotations

import argparse
import json
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from artsentry.data.images import load_image
from artsentry.data.listing import foreground_mask

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "met-ivory"
PERCENTILES = [10, 25, 50, 75, 90]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DATA, help="folder with metadata.csv (default: met-ivory)")
    ap.add_argument("--photos", type=int, default=200, help="photos drawn at random (0: all)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    files = pd.read_csv(a.data / "metadata.csv")["file"]
    if a.photos:
        files = files.sample(n=min(a.photos, len(files)), random_state=a.seed)
    area, extent, empty = [], [], 0
    for name in files:
        img = load_image(a.data / name)
        mask = np.asarray(foreground_mask(img)) > 127
        ys, xs = np.nonzero(mask)
        if not len(ys):
            empty += 1
            continue
        h, w = mask.shape
        bh, bw = (ys.max() - ys.min() + 1) / h, (xs.max() - xs.min() + 1) / w
        area.append(bh * bw)
        extent.append(max(bh, bw))
    q = lambda v: dict(zip((f"p{p}" for p in PERCENTILES), np.percentile(v, PERCENTILES).round(3).tolist()))
    print(json.dumps({"date": date.today().isoformat(), "data": str(a.data), "photos": len(files),
                      "seed": a.seed, "no_foreground": empty, "box_area_share": q(area),
                      "box_extent": q(extent)}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
