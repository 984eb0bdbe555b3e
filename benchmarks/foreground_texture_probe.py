"""Texture pooled over the object only: frozen Lite0 stage-4 second-order pooling, over every cell
of the feature map against over the cells of the photo's foreground estimate, on a run's split.

    .venv/bin/python benchmarks/foreground_texture_probe.py runs/ivory-sam --size 320

The texture descriptor (``--pooling texture``) averages the outer products of the channel vectors
over the whole feature map, the backdrop included: the object covers a median 75% of a met-ivory
photo, so a quarter of each descriptor is backdrop, more or less by photo. Weighting each cell by
the foreground estimate of the listing generator (``data.listing.foreground_mask``, downsampled to
the map) pools the object's surface alone. Both descriptors come from the same forward pass; each
is fitted with the same logistic regression (C 0.01, as ``frozen_probe.py``) on the run's training
photos and scored on its validation and test photos. Photos whose mask is the whole frame (no plain
backdrop) are pooled alike in both arms. Prints JSON.
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
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from artsentry.data.images import ImageLoadError, load_image
from artsentry.data.listing import foreground_mask
from artsentry.data.manifest import read_manifest
from artsentry.data.transforms import Preprocessing, eval_transform
from artsentry.models import create_model, default_preprocessing


class PhotosWithMasks(Dataset):
    def __init__(self, paths, pre: Preprocessing, grid: int):
        self.paths, self.transform, self.grid, self.size = list(paths), eval_transform(pre), grid, pre.input_size

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        try:
            img = load_image(self.paths[i])
        except ImageLoadError:
            return torch.zeros(3, self.size, self.size), torch.zeros(self.grid, self.grid), False  # batched, not used
        mask = foreground_mask(img).resize((self.grid, self.grid), Image.BILINEAR)  # squash, as the photo
        return self.transform(img), torch.from_numpy(np.asarray(mask, dtype=np.float32) / 255.0), True


def pooled(f: torch.Tensor, w: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Second-order pooling of ``f`` (n, C, H, W) with cell weights ``w`` (n, H, W): the weighted
    mean outer product, upper triangle, signed square root, L2-normalised, as ``SecondOrderPool``
    (which pools the "every cell" arm) does with equal weights."""
    n, c, h, wd = f.shape
    x = f.reshape(n, c, h * wd)
    ww = w.reshape(n, 1, h * wd)
    gram = torch.bmm(x * ww, x.transpose(1, 2)) / ww.sum(dim=2, keepdim=True).clamp_min(1e-6)
    v = gram.reshape(n, c * c).index_select(1, index)
    v = torch.sign(v) * torch.sqrt(v.abs() + 1e-8)
    return torch.nn.functional.normalize(v, dim=1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", help="run folder whose manifest.csv (with its split) to use")
    ap.add_argument("--size", type=int, default=320)
    ap.add_argument("--C", type=float, default=0.01)
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(2)
    df, _ = read_manifest(Path(a.run) / "manifest.csv")
    split = df["split"].to_numpy()
    y = (df["label"] == "ivory").to_numpy()
    model = create_model("efficientnet_lite0", 2, pretrained=True, pooling="texture")
    backbone = model.backbone.eval()
    pre = Preprocessing(**{**default_preprocessing("efficientnet_lite0").to_dict(), "input_size": a.size,
                           "resize": "squash"})
    grid = a.size // 16
    loader = DataLoader(PhotosWithMasks(df["path"], pre, grid), batch_size=32, num_workers=a.workers)
    index = backbone.pool.index
    plain, masked, ok, cover = [], [], [], []
    t0 = time.time()
    with torch.inference_mode():
        for x, w, good in tqdm(loader, desc="features", unit="batch"):
            good = good.bool()
            n = len(good)
            p = torch.zeros(n, backbone.texture_features)
            m = torch.zeros(n, backbone.texture_features)
            if good.any():
                f = backbone.forward_map(x[good]).float()
                if f.shape[-1] != grid:
                    raise SystemExit(f"feature map is {f.shape[-1]} cells wide, not {grid}")
                p[good] = backbone.pool(f)  # the product's pooling, as built
                m[good] = pooled(f, w[good], index)
            plain.append(p), masked.append(m), ok.append(good), cover.append(w.mean(dim=(1, 2)))
    X = {"every cell": torch.cat(plain).numpy(), "foreground cells": torch.cat(masked).numpy()}
    X["both, side by side"] = np.concatenate([X["every cell"], X["foreground cells"]], axis=1)
    ok = torch.cat(ok).numpy()
    cover = torch.cat(cover).numpy()[ok]
    out = {"date": date.today().isoformat(), "run": a.run, "size": a.size, "C": a.C,
           "photos": int(ok.sum()), "unreadable": int((~ok).sum()), "seconds": round(time.time() - t0, 1),
           "mask cover": {"median": round(float(np.median(cover)), 3),
                          "whole frame (no plain backdrop)": round(float((cover > 0.999).mean()), 3)},
           "results": {}}
    train = ok & (split == "train")
    for name, feats in X.items():
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=a.C, max_iter=5000)).fit(feats[train], y[train])
        res = {}
        for part in ("val", "test"):
            sel = ok & (split == part)
            pred = clf.predict(feats[sel])
            res[f"{part}_accuracy"] = round(float((pred == y[sel]).mean()), 4)
            res[f"{part}_right"] = f"{int((pred == y[sel]).sum())}/{int(sel.sum())}"
        out["results"][name] = res
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
