"""Compare register scoring rules on vectors saved by ``identify.py --save-vectors``.

    .venv/bin/python benchmarks/identify_rules.py runs/identify-vectors/0.npz

The same gallery and query vectors, scored two ways:

- "best version": a photo scores its best-matching version (the photo or one of its
  re-shots), as the register did before re-shots were grouped;
- "mean of best two": a photo scores the mean of its two best-matching versions (what
  ``Register.search`` does now when photos carry re-shots).

An object scores its best photo either way. Prints top-1/top-10 of the registered test
queries, and the registered-vs-unregistered AUC of the best object's similarity and of its
contrast score (``contrast_scores``: the similarity minus half the mean of the next four
objects'), on the calibration and on the test queries.

``--data DIR`` (the manifest the vectors came from) also splits the register's rule by how
the listing generator treated each query's source photo: object cut out and put on clutter,
or photo kept whole (no plain backdrop to cut from), so an easier kind of query cannot hide
in the overall figure.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
from PIL import Image
from sklearn.metrics import roc_auc_score

from artsentry.data.listing import foreground_mask
from artsentry.data.manifest import read_manifest
from artsentry.index.register import RESHOT_SUFFIX, VERSIONS_SCORED, contrast_scores, photo_score


def object_scores(queries: np.ndarray, gallery: np.ndarray, photo_of: np.ndarray, object_of_photo: np.ndarray,
                  n_objects: int, top: int) -> np.ndarray:
    """(queries, objects): the best photo's score, a photo scoring the mean of its ``top`` best versions."""
    sims = queries @ gallery.T
    photos = np.full((len(queries), photo_of.max() + 1), -np.inf)
    for p in range(photos.shape[1]):
        photos[:, p] = photo_score(sims[:, photo_of == p], top)
    out = np.full((len(queries), n_objects), -np.inf)
    for o in range(n_objects):
        out[:, o] = photos[:, object_of_photo == o].max(axis=1)
    return out


def kept_whole(data: str, object_ids) -> dict[str, bool]:
    """Whether the generator keeps each object's query source photo (its first photo, as
    ``identify.py`` uses) whole rather than cutting the object out."""
    df, _ = read_manifest(data)
    first = df.drop_duplicates("object_id").set_index("object_id")["path"]
    out = {}
    for i in sorted(set(object_ids)):
        with Image.open(first[i]) as img:
            out[i] = bool(np.asarray(foreground_mask(img.convert("RGB"))).min() == 255)
    return out


def figures(rank: np.ndarray, reg: np.ndarray, dis: np.ndarray) -> dict:
    """top-1/top-10 of registered queries and the AUC of each decision score against distractors."""
    y = np.r_[np.ones(len(reg)), np.zeros(len(dis))]
    best = {"similarity": np.r_[reg.max(axis=1), dis.max(axis=1)],
            "contrast": contrast_scores(-np.sort(-np.r_[reg, dis], axis=1)[:, :16])[:, 0]}
    return {"registered": len(reg), "distractors": len(dis),
            "top1": round(float((rank == 1).mean()), 4), "top10": round(float((rank <= 10).mean()), 4),
            **{f"auc_{name}": round(float(roc_auc_score(y, v)), 4) for name, v in best.items()}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("vectors", help="an .npz written by identify.py --save-vectors")
    ap.add_argument("--data", help="the data the vectors came from: also split by cut-out / kept-whole queries")
    a = ap.parse_args()
    d = np.load(a.vectors)
    whole = None
    if a.data:
        whole = kept_whole(a.data, np.r_[d["registered_ids"], d["calibration_distractors_ids"],
                                         d["test_distractors_ids"]].tolist())
    names = [n[:n.rindex(RESHOT_SUFFIX)] if RESHOT_SUFFIX in n else n for n in d["gallery_names"]]
    photo_names, photo_of = np.unique(np.array(names), return_inverse=True)
    objects, object_of_vector = np.unique(d["gallery_ids"], return_inverse=True)
    object_of_photo = np.zeros(len(photo_names), int)
    object_of_photo[photo_of] = object_of_vector
    out = {}
    for rule, top in (("best version", 1), ("mean of best two (the register's rule)", VERSIONS_SCORED)):
        out[rule] = {}
        for part in ("calibration", "test"):
            truth = np.searchsorted(objects, d[f"{part}_registered_ids"])
            reg = object_scores(d[f"{part}_registered"], d["gallery"], photo_of, object_of_photo, len(objects), top)
            dis = object_scores(d[f"{part}_distractors"], d["gallery"], photo_of, object_of_photo, len(objects), top)
            rank = (reg > reg[np.arange(len(reg)), truth][:, None]).sum(axis=1) + 1
            out[rule][part] = figures(rank, reg, dis)
            if whole is not None and top == VERSIONS_SCORED:
                wr = np.array([whole[i] for i in d[f"{part}_registered_ids"]])
                wd = np.array([whole[i] for i in d[f"{part}_distractors_ids"]])
                for name, r, q in (("cut out", ~wr, ~wd), ("kept whole", wr, wd)):
                    out[rule][f"{part}, {name}"] = figures(rank[r], reg[r], dis[q])
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
