"""Does a second look at the object help on listing photos? Zoom to where the network looks.

    .venv/bin/python benchmarks/attention_crop.py runs/ivory --out runs/attention-crop

A listing photo shows the object small, off-centre, among other things; at 320 px the surface
texture that tells ivory from glaze is then a few pixels. This measures a two-look prediction
without any training: the network's last feature map (EfficientNet's ``forward_features``, after
the 1x1 head convolution, non-negative) summed over channels is a class-agnostic map of where it
sees something; the cells above ``q`` times the map's maximum give a box (one cell of margin, at
least ``--min-side`` of each side), the box is cut from the photo as it is (before the resize to
the input size, so the crop has more pixels than the first look saw) and classified again. The
combined probability is the mean of the two looks.

For each set -- validation and test photos of the run's split, studio and listing-style (the
"listing" set of ``evaluate --shift``, every family at once, seed 0) -- it prints the accuracy at
the model's threshold of the first look alone, of the crop alone and of the mean, for each ``q``.
A ``q`` is chosen on the validation sets (mean of studio and listing-style accuracy), then read on
the test sets. ``--out`` keeps the JSON and the probabilities.
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

from artsentry.data.dataset import make_loader
from artsentry.data.listing import ListingStyleDataset, shift_variants
from artsentry.data.manifest import read_manifest
from artsentry.evaluate import binary_metrics
from artsentry.models.artifact import resolve_model_dir
from artsentry.inference import Predictor
from artsentry.memory import keep_freed_memory


def attention_box(fmap: torch.Tensor, q: float, min_side: float) -> tuple[float, float, float, float]:
    """(h, w) non-negative map -> (left, top, right, bottom) in [0, 1] of the cells >= q * max,
    one cell of margin, each side at least ``min_side`` (grown around the box's centre)."""
    h, w = fmap.shape
    on = (fmap >= q * fmap.max()).nonzero()
    r0, r1 = int(on[:, 0].min()), int(on[:, 0].max()) + 1
    c0, c1 = int(on[:, 1].min()), int(on[:, 1].max()) + 1
    box = [max(c0 - 1, 0) / w, max(r0 - 1, 0) / h, min(c1 + 1, w) / w, min(r1 + 1, h) / h]
    for lo, hi in ((0, 2), (1, 3)):
        side = box[hi] - box[lo]
        if side < min_side:
            centre = (box[lo] + box[hi]) / 2
            start = min(max(centre - min_side / 2, 0.0), 1.0 - min_side)
            box[lo], box[hi] = start, start + min_side
    return tuple(box)


def _as_is(im):
    return im


def _as_list(items):
    return list(items)


def two_looks(predictor: Predictor, paths: list[str], variant, seed: int, qs: list[float], min_side: float,
              desc: str) -> dict[str, np.ndarray]:
    """p(positive) of the first look and of the crop at each q, and the crop boxes, one row per photo (NaN:
    unreadable)."""
    net = predictor.model.backbone
    head = predictor.model.head
    pos = predictor.positive_index
    draft = predictor.preprocessing.draft_size if variant is None else None  # studio: decoded as in prediction
    ds = ListingStyleDataset(paths, _as_is, variant, seed, draft_size=draft)
    loader = make_loader(ds, batch_size=predictor.batch_size, num_workers=2, collate_fn=_as_list)
    out = {"full": np.full(len(paths), np.nan)} | {f"crop_q{q:g}": np.full(len(paths), np.nan) for q in qs}
    out |= {f"box_q{q:g}": np.full((len(paths), 4), np.nan) for q in qs}  # (left, top, right, bottom) in [0, 1]
    done = 0
    t0 = time.perf_counter()

    def look(x: torch.Tensor) -> tuple[torch.Tensor, np.ndarray]:
        """(last feature map, calibrated p(positive)) of a batch, one forward pass."""
        fmap = net.forward_features(x.contiguous(memory_format=torch.channels_last))
        logits = head(net.forward_head(fmap))
        return fmap, torch.softmax(logits.float() / predictor.temperature, 1)[:, pos].numpy()

    with torch.inference_mode():
        for items in loader:
            good = [(im, i) for im, _, i, err in items if im is not None]
            if not good:
                continue
            ims, idx = zip(*good)
            fmap, out["full"][list(idx)] = look(torch.stack([predictor.transform(im) for im in ims]))
            energy = fmap.float().sum(1)
            for q in qs:
                crops = []
                for k, (im, e) in enumerate(zip(ims, energy)):
                    left, top, right, bottom = out[f"box_q{q:g}"][idx[k]] = attention_box(e, q, min_side)
                    W, H = im.size
                    crops.append(predictor.transform(im.crop((round(left * W), round(top * H),
                                                              round(right * W), round(bottom * H)))))
                out[f"crop_q{q:g}"][list(idx)] = look(torch.stack(crops))[1]
            done += len(items)
            print(f"\r{desc}: {done}/{len(paths)} ({done / (time.perf_counter() - t0):.1f} photos/s)", end="",
                  file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path, help="run folder (model/ and manifest.csv inside)")
    ap.add_argument("--out", type=Path, default=None, help="folder for attention_crop.json and the probabilities")
    ap.add_argument("--q", type=float, nargs="+", default=[0.25, 0.5], help="share of the map's maximum a cell needs")
    ap.add_argument("--min-side", type=float, default=0.4, help="smallest crop side, share of the photo's side")
    ap.add_argument("--seed", type=int, default=0, help="seed of the listing-style set (default 0, as evaluate --shift)")
    a = ap.parse_args(argv)
    keep_freed_memory()
    torch.set_num_threads(2)
    t_start = time.perf_counter()
    predictor = Predictor.load(resolve_model_dir(a.run), runtime="torch")
    if not predictor.binary or not hasattr(predictor.model.backbone, "forward_features"):
        raise SystemExit(f"{a.run}: a binary EfficientNet classifier with average pooling is needed")
    df, _ = read_manifest(a.run / "manifest.csv")
    t = 0.5 if predictor.threshold is None else predictor.threshold
    listing = shift_variants()["listing"]
    probs, table = {}, {}
    for split in ("val", "test"):
        rows = df[df["split"] == split]
        y = (rows["label"] == predictor.positive_label).to_numpy().astype(int)
        for name, variant in (("studio", None), ("listing", listing)):
            key = f"{split}/{name}"
            p = two_looks(predictor, rows["path"].tolist(), variant, a.seed, a.q, a.min_side, key)
            probs[key] = p
            ok = ~np.isnan(p["full"])
            table[key] = {"n": int(ok.sum()), "full": binary_metrics(y[ok], p["full"][ok], t)["accuracy"]}
            for q in a.q:
                c = p[f"crop_q{q:g}"]
                table[key][f"crop_q{q:g}"] = binary_metrics(y[ok], c[ok], t)["accuracy"]
                table[key][f"mean_q{q:g}"] = binary_metrics(y[ok], (p["full"][ok] + c[ok]) / 2, t)["accuracy"]
            print(key, json.dumps(table[key]), flush=True)
    cols = [c for c in table["val/studio"] if c != "n"]
    val_score = {c: (table["val/studio"][c] + table["val/listing"][c]) / 2 for c in cols if c != "full"}
    chosen = max(val_score, key=val_score.get)
    result = {"date": date.today().isoformat(),
              "command": " ".join(["benchmarks/attention_crop.py", *sys.argv[1:]]),
              "model": str(resolve_model_dir(a.run)), "threshold": t, "min_side": a.min_side,
              "accuracy": table, "chosen_on_val": chosen,
              "test": {s: {"first look": table[f"test/{s}"]["full"], chosen: table[f"test/{s}"][chosen]}
                       for s in ("studio", "listing")},
              "seconds": round(time.perf_counter() - t_start, 1)}
    print(json.dumps(result["test"] | {"chosen_on_val": chosen, "seconds": result["seconds"]}, indent=2))
    if a.out:
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / "attention_crop.json").write_text(json.dumps(result, indent=2) + "\n")
        np.savez(a.out / "probabilities.npz", **{f"{k}/{c}": v for k, p in probs.items() for c, v in p.items()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
