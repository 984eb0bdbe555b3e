"""What the JPEG decode scale does to a model's input, its decisions and decoding speed.

    .venv/bin/python benchmarks/decode_scale.py runs/frozen

``load_image(draft_size=...)`` lets the JPEG decoder scale a photo down by 1/2, 1/4 or 1/8 while
decoding. Until 2026-12-06 the scale depended on the command: a 224-px model's photos were decoded at
(224, 224) by ``register add`` and training, at the photo-quality scale (320) by ``predict``, ``evaluate``
and ``register search``, and whole by the server and ``explain``. Now every command decodes at
``Preprocessing.draft_size``, never under 320. On RUN's test split (``RUN/manifest.csv``) and model
(``RUN/model``), this script prints, for the photos as they are and for copies enlarged to 2,400 px on
the long side (phone-photo size, made in memory, JPEG quality 92):

1. the model's accuracy when the photos are decoded at (input, input), at (320, 320) and whole, and
   how far each one's probabilities are from the 320 decode's (largest and mean |difference|, decisions
   at the model's threshold that change);
2. decode + resize throughput (one thread) at each scale.
"""

from __future__ import annotations

import argparse
import io
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from artsentry.data.images import load_image
from artsentry.data.manifest import read_manifest
from artsentry.data.transforms import eval_transform
from artsentry.inference import Predictor
from artsentry.models.artifact import resolve_model_dir


def probabilities(predictor: Predictor, sources: list, draft) -> np.ndarray:
    transform = eval_transform(predictor.preprocessing)
    out = []
    for i in range(0, len(sources), 32):
        x = torch.stack([transform(load_image(s, draft_size=draft)) for s in sources[i:i + 32]])
        out.append(predictor.proba_tensor(x)[:, predictor.positive_index])
    return np.concatenate(out)


def throughput(predictor: Predictor, sources: list, draft, n: int = 200) -> float:
    transform = eval_transform(predictor.preprocessing)
    t0 = time.perf_counter()
    for s in sources[:n]:
        transform(load_image(s, draft_size=draft))
    return min(n, len(sources)) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", help="a training run's folder (manifest.csv with a split, model/)")
    ap.add_argument("--long-side", type=int, default=2400, help="long side of the enlarged copies")
    a = ap.parse_args()
    torch.set_num_threads(2)
    predictor = Predictor.load(resolve_model_dir(a.run))
    if not predictor.binary:
        raise SystemExit("a two-class model is needed")
    df, _ = read_manifest(Path(a.run) / "manifest.csv")
    test = df[df["split"] == "test"].reset_index(drop=True)
    truth = (test["label"] == predictor.positive_label).to_numpy()
    enlarged = []
    for path in test["path"]:
        im = Image.open(path).convert("RGB")
        f = a.long_side / max(im.size)
        buf = io.BytesIO()
        im.resize((round(im.width * f), round(im.height * f)), Image.LANCZOS).save(buf, "JPEG", quality=92)
        enlarged.append(buf.getvalue())
    side = predictor.preprocessing.input_size
    t = predictor.operating_threshold()
    drafts = {f"({side}, {side})": (side, side), "(320, 320)": (320, 320), "whole": None}
    print(f"{date.today()}  model {resolve_model_dir(a.run)} ({side} px), threshold {t}, "
          f"{len(test)} test photos; now decoded at {predictor.preprocessing.draft_size}")
    for name, sources in (("as they are", test["path"].tolist()), (f"enlarged to {a.long_side} px", enlarged)):
        probs = {k: probabilities(predictor, sources, d) for k, d in drafts.items()}
        ref = probs["(320, 320)"]
        print(f"\nphotos {name}")
        print("| decoded at | accuracy | max abs(p - p320) | mean abs(p - p320) | decisions changed | img/s |")
        print("| --- | --- | --- | --- | --- | --- |")
        for k, d in drafts.items():
            p = probs[k]
            acc = float(((p >= t) == truth).mean())
            diff = np.abs(p - ref)
            changed = int(((p >= t) != (ref >= t)).sum())
            print(f"| {k} | {acc:.4f} | {diff.max():.4f} | {diff.mean():.4f} | {changed} | "
                  f"{throughput(predictor, sources, d):.1f} |")


if __name__ == "__main__":
    main()
