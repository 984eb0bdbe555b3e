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
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
from sklearn.metrics import roc_auc_score

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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("vectors", help="an .npz written by identify.py --save-vectors")
    d = np.load(ap.parse_args().vectors)
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
            y = np.r_[np.ones(len(reg)), np.zeros(len(dis))]
            best = {"similarity": np.r_[reg.max(axis=1), dis.max(axis=1)],
                    "contrast": contrast_scores(-np.sort(-np.r_[reg, dis], axis=1)[:, :16])[:, 0]}
            out[rule][part] = {"top1": round(float((rank == 1).mean()), 4), "top10": round(float((rank <= 10).mean()), 4),
                               **{f"auc_{name}": round(float(roc_auc_score(y, v)), 4) for name, v in best.items()}}
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
