"""Photos of several objects at once ("lots"): a seller's table of carvings, a catalogue page.

The classifiers learn from photos of one object filling the frame, and score a photo as a whole.
On a photo of four objects, one of them ivory, the ivory fills a quarter of the picture and the
whole-photo score mostly stays under the threshold: on met-ivory's test photos composed four to a
picture, `make ivory`'s model flags 31% of the lots holding an ivory object (BENCHMARKS.md,
"Photos of several objects"). Scanning the photo in tiles finds them:

- ``tile_crops``: the whole photo, then a ``grid`` x ``grid`` of overlapping tiles, each half the
  photo's width and height (3 x 3: tiles start at 0, 1/4 and 1/2 of each side);
- the photo's lot score is the highest probability of the positive label over those crops, and
  the tile it came from is the evidence;
- that maximum over ten crops runs higher than one photo's probability on the objects that are
  not ivory, so it needs its own threshold: ``choose_lot_threshold`` picks the one of best
  accuracy on lot photos composed from the *validation* photos (``compose_lot``), and
  ``artsentry evaluate RUN --lots N`` stores it in the model's config.json under ``lots`` with the
  test figures measured on lots of the test photos (`make ivory` does this for its model).

Lot scanning is for photos of several objects; on a photo of one object it flags more of the
objects that are not ivory than the whole-photo decision (measured in the same section).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
from PIL import Image

from .data.images import ImageLoadError, load_image

#: tiles per side, and each tile's share of the photo's width and height
TILE_GRID = 3
TILE_FRACTION = 0.5
#: objects on one composed lot photo (a jittered 2 x 2 layout) and the photo's side in pixels
LOT_OBJECTS = 4
LOT_SIDE = 900


def tile_boxes(width: int, height: int, grid: int = TILE_GRID, fraction: float = TILE_FRACTION) -> list[tuple]:
    """``grid`` x ``grid`` boxes ``(left, top, right, bottom)``, each ``fraction`` of the photo's
    width and height, spread evenly from the top-left corner to the bottom-right one."""
    if grid < 2:
        raise ValueError("a tile grid needs at least 2 tiles per side")
    tw, th = max(1, round(width * fraction)), max(1, round(height * fraction))
    xs = [round(i * (width - tw) / (grid - 1)) for i in range(grid)]
    ys = [round(j * (height - th) / (grid - 1)) for j in range(grid)]
    return [(x, y, x + tw, y + th) for y in ys for x in xs]


def tile_fractions(grid: int = TILE_GRID) -> list[tuple]:
    """The tiles of ``tile_boxes`` as fractions of the photo's width and height."""
    return [tuple(v / 10_000 for v in b) for b in tile_boxes(10_000, 10_000, grid=grid)]


def decode_draft(models: Sequence[tuple]) -> tuple[int, int]:
    """The one JPEG decode size (``load_image``'s ``draft_size``) for a photo several models read at once
    (``screen``, the server). ``models``: (preprocessing, tile grid or None) pairs. Each model's own
    (``Preprocessing.draft_size``), or for a tile scan one large enough for its tiles to keep their detail,
    the largest of them: one model alone, or several with the same input size, read it as ``predict``
    and ``register search`` do."""
    from .data.transforms import Preprocessing

    side = max(round(pre.input_size / TILE_FRACTION) if grid else pre.input_size for pre, grid in models)
    return Preprocessing(input_size=side).draft_size


class LotTransform:
    """PIL photo -> (1 + grid*grid, 3, S, S): the photo whole, then its tiles, each through ``transform``
    (screening's decoding workers make the crops, the model reads them as one batch)."""

    def __init__(self, transform, grid: int = TILE_GRID):
        self.transform, self.grid = transform, grid

    def __call__(self, img: Image.Image):
        import torch

        return torch.stack([self.transform(c) for c in tile_crops(img, self.grid)[0]])


def crops_forward(fn, x, step: int) -> np.ndarray:
    """``fn`` (a batch of crops -> one row each, e.g. class probabilities or embeddings) over the
    crops of ``x`` (n photos, crops, 3, S, S) in forward passes of at most ``step`` crops, as
    (n, crops, ...): a batch of photos scanned in tiles is ten times the crops of a plain one."""
    flat = x.flatten(0, 1)
    out = np.concatenate([fn(flat[j:j + step]) for j in range(0, len(flat), step)])
    return out.reshape(x.shape[0], x.shape[1], *out.shape[1:])


def lot_threshold(config: dict) -> tuple[float, int]:
    """A model config's lot threshold and tile grid, or ``ValueError`` naming how to set them."""
    lots = config.get("lots") or {}
    if lots.get("threshold") is None:
        raise ValueError("the model has no lot threshold in its config.json; measure and set one with "
                         "'artsentry evaluate RUN --lots 400'")
    return float(lots["threshold"]), int(lots.get("grid", TILE_GRID))


def tile_crops(img: Image.Image, grid: int = TILE_GRID) -> tuple[list[Image.Image], list[tuple | None]]:
    """The whole photo (box None) followed by its tiles, and each crop's box."""
    boxes = tile_boxes(*img.size, grid=grid)
    return [img] + [img.crop(b) for b in boxes], [None] + boxes


def compose_lot(photos: Sequence[Image.Image], rng: np.random.Generator, side: int = LOT_SIDE) -> Image.Image:
    """Up to four photos on one plain background of a random mid-tone, one per quarter, each
    scaled to 34-46% of the side and placed at a random spot inside its quarter."""
    canvas = Image.new("RGB", (side, side), tuple(int(v) for v in rng.integers(90, 200, 3)))
    for (cx, cy), photo in zip([(0, 0), (1, 0), (0, 1), (1, 1)], photos):
        img = photo.copy()
        s = int(side * rng.uniform(0.34, 0.46))
        img.thumbnail((s, s))
        x = int(cx * side / 2 + rng.uniform(0, side / 2 - img.width))
        y = int(cy * side / 2 + rng.uniform(0, side / 2 - img.height))
        canvas.paste(img, (x, y))
    return canvas


def lot_photos(positives: Sequence[str], negatives: Sequence[str], n: int, seed: int):
    """``n`` lot photos and their truth, alternating: one positive photo among three negatives
    (truth 1, at a random place), then four negatives (truth 0). Photos are drawn with ``seed``;
    an unreadable one is replaced by another draw. Yields ``(image, truth)``."""
    if len(negatives) < LOT_OBJECTS or not positives:
        raise ValueError(f"lot photos need at least one positive and {LOT_OBJECTS} negative photos")
    rng = np.random.default_rng(seed)

    def read(pool):
        for _ in range(20):
            try:
                return load_image(pool[int(rng.integers(len(pool)))])
            except ImageLoadError:
                continue
        raise ValueError("too many unreadable photos to compose lots")

    for k in range(n):
        truth = int(k % 2 == 0)
        picks = [read(negatives) for _ in range(LOT_OBJECTS - truth)]
        if truth:
            picks.insert(int(rng.integers(0, LOT_OBJECTS)), read(positives))
        yield compose_lot(picks, rng), truth


@dataclass
class LotScan:
    score: float  # highest probability of the positive label over the whole photo and its tiles
    whole: float  # the whole photo's own probability
    box: tuple | None  # (left, top, right, bottom) of the tile that scored highest; None: the whole photo
    flagged: bool | None = None  # score >= the lot threshold (None when none is set)

    def to_dict(self) -> dict:
        return asdict(self)


def scan(predictor, images: Sequence[Image.Image], threshold: float | None = None,
         grid: int = TILE_GRID) -> list[LotScan]:
    """Each photo scanned whole and in tiles by a binary ``predictor`` (``inference.Predictor``). A box is
    in the pixels of the photo file as it stands upright (``load_image``'s ``upright_size``), whatever
    scale it was decoded at (``decode_draft``)."""
    if not predictor.binary:
        raise ValueError("lot scanning needs a two-class model with a positive label")
    out = []
    for img in images:
        crops, _ = tile_crops(img, grid)
        boxes = [None] + tile_boxes(*(img.info.get("upright_size") or img.size), grid=grid)
        p = predictor.predict_proba(crops)[:, predictor.positive_index]
        best = int(np.argmax(p))
        out.append(LotScan(float(p[best]), float(p[0]), boxes[best],
                           None if threshold is None else bool(p[best] >= threshold)))
    return out


def deciding_tile(img: Image.Image, scanned: LotScan, grid: int = TILE_GRID) -> tuple[Image.Image, tuple] | None:
    """The tile a lot scan (``scan``) flagged ``img`` for, as its crop and its box in ``img``'s pixels (the scan's
    box is in the file's upright pixels); None when the scan did not flag it, or flagged the photo whole."""
    if not scanned.flagged or scanned.box is None:
        return None
    k = 1 + tile_boxes(*(img.info.get("upright_size") or img.size), grid=grid).index(tuple(scanned.box))
    crops, boxes = tile_crops(img, grid)
    return crops[k], boxes[k]


def choose_lot_threshold(scores: np.ndarray, truth: np.ndarray) -> float:
    """The threshold of highest accuracy on lot photos (``score >= t`` flags). The candidates are
    the midpoints between neighbouring scores (and just past each end), so a threshold sits
    between the lots it separates rather than on one of them; when several candidates tie for
    the best accuracy, the middle one of them (in score order) is taken."""
    scores, truth = np.asarray(scores, float), np.asarray(truth, int)
    if scores.size == 0 or len(set(truth.tolist())) < 2:
        raise ValueError("choosing a lot threshold needs lots with and without a positive object")
    s = np.unique(scores)
    cands = np.concatenate([[s[0]], (s[:-1] + s[1:]) / 2, [np.nextafter(s[-1], np.inf)]])
    acc = np.array([((scores >= t) == truth).mean() for t in cands])
    best = np.flatnonzero(acc == acc.max())
    return float(cands[best[len(best) // 2]])


def lot_metrics(scores: np.ndarray, truth: np.ndarray, threshold: float) -> dict:
    """``evaluate.binary_metrics``' count, threshold, accuracy, recall and ROC-AUC, and the false-flag
    rate (1 - specificity: the lots without a positive object that are flagged)."""
    from .evaluate import binary_metrics

    m = binary_metrics(truth, scores, threshold)
    return {**{k: m[k] for k in ("n", "threshold", "accuracy", "recall", "roc_auc")},
            "false_flag_rate": round(1.0 - m["specificity"], 6)}


def measure_lots(predictor, manifest, n: int = 200, seed: int = 0, grid: int = TILE_GRID,
                 progress: bool = False) -> dict:
    """Lot threshold chosen on ``n`` lots of the manifest's validation photos, figures on ``n``
    lots of its test photos: whole-photo decisions at the model's threshold against the tile
    scan at the lot threshold."""
    from tqdm.auto import tqdm

    pos = predictor.positive_label
    figures = {}
    for split, split_seed in (("val", seed + 1), ("test", seed)):
        part = manifest[manifest["split"] == split]
        if part.empty:
            raise ValueError(f"measuring lots needs a {split} split in the run's manifest")
        gen = lot_photos(part.loc[part["label"] == pos, "path"].tolist(),
                         part.loc[part["label"] != pos, "path"].tolist(), n, split_seed)
        rows = [(s, t) for img, t in tqdm(gen, total=n, desc=f"lots ({split})", unit="lot", disable=not progress)
                for s in scan(predictor, [img], grid=grid)]
        figures[split] = (np.array([r[0].score for r in rows]), np.array([r[0].whole for r in rows]),
                          np.array([r[1] for r in rows]))
    threshold = choose_lot_threshold(figures["val"][0], figures["val"][2])
    tiled, whole, truth = figures["test"]
    model_threshold = predictor.operating_threshold()
    return {"grid": grid, "tile_fraction": TILE_FRACTION, "objects_per_lot": LOT_OBJECTS, "lots": n, "seed": seed,
            "threshold": threshold, "chosen_on": f"{n} lots of the validation photos (best accuracy)",
            "test": {"tile_scan": lot_metrics(tiled, truth, threshold),
                     "whole_photo": lot_metrics(whole, truth, model_threshold)}}
