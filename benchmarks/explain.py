"""Are the explanations real, and how long do they take? One run, one JSON document.

    .venv/bin/python benchmarks/explain.py --model runs/ivory/model

- Synthetic square task (``artsentry.explain.sanity``; 48 px, a 10 px red or blue
  square decides the class, six grey distractor blobs; 600 training images, 100
  test): per method, the share of heat-map mass inside the square (median) and the
  share of test images with >= 80% inside (bar: >= 0.9); model-randomisation rank
  correlation of saliency and Grad-CAM (bar: <= 0.3).
- The same randomisation test on the real model (``--model``) over test photos: the
  trained network against the same architecture with re-initialised weights.
- Seconds to explain one 224-px photo with each method on the real model
  (occlusion: patch 32, stride 16 = 169 occluded copies, batch 32; on ONNX Runtime
  when the model is exported, and on PyTorch), median of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch


def synthetic(n_test: int) -> dict:
    from artsentry.explain import Explainer
    from artsentry.explain.sanity import (SquareNet, mass_inside, randomisation_rank_correlation, square_dataset,
                                          train_square_net)
    from artsentry.data.transforms import Preprocessing

    size, square, blobs = 48, 10, 6
    x, y, _ = square_dataset(600, 0, size, square, blobs)
    t0 = time.perf_counter()
    net = train_square_net(x, y, epochs=10, sparsity=0.1)
    train_s = time.perf_counter() - t0
    xt, yt, masks = square_dataset(n_test, 1, size, square, blobs)
    with torch.no_grad():
        acc = float((net(xt).argmax(1) == yt).float().mean())
    pre = Preprocessing(input_size=size, mean=(0, 0, 0), std=(1, 1, 1))
    ex = Explainer(net, pre)
    out = {"train_seconds": round(train_s, 1), "test_accuracy": acc, "square_area_share": float(masks.mean()),
           "methods": {}}
    maps = {}
    for method, kw in (("saliency", {}), ("gradcam", {}), ("occlusion", {"patch": 6, "stride": 3})):
        heat = ex.explain(xt, method, **kw)
        maps[method] = heat
        inside = np.array([mass_inside(h, m) for h, m in zip(heat, masks)])
        out["methods"][method] = {"median_mass_inside": round(float(np.median(inside)), 3),
                                  "share_images_at_least_0.8": round(float((inside >= 0.8).mean()), 3)}
    for method in ("saliency", "gradcam"):
        corrs = []
        for seed in (1, 2, 3):
            torch.manual_seed(seed)
            corrs.append(randomisation_rank_correlation(maps[method], Explainer(SquareNet().eval(), pre)
                                                        .explain(xt, method)))
        out["methods"][method]["randomisation_rank_corr"] = round(float(np.mean(corrs)), 3)
    return out


def real(model: Path, n_images: int, repeat: int) -> dict:
    import pandas as pd

    from artsentry.data.images import load_image
    from artsentry.explain import ClassifierExplainer, Explainer
    from artsentry.explain.sanity import randomisation_rank_correlation
    from artsentry.models import model_from_config
    from artsentry.models.artifact import read_config

    df = pd.read_csv(model.parent / "manifest.csv")
    df = df[df["split"] == "test"].head(n_images)
    images = [load_image(p) for p in df["path"]]
    out = {"model": str(model), "images": len(images), "seconds_per_image": {}, "randomisation_rank_corr": {}}
    for runtime in ("onnx", "torch"):
        try:
            engine = ClassifierExplainer.load(model, runtime=runtime)
        except Exception as exc:  # no ONNX export
            out["seconds_per_image"][f"occlusion_{runtime}"] = f"unavailable: {exc}"
            continue
        methods = ("occlusion",) if runtime == "onnx" else ("occlusion", "gradcam", "saliency")
        for method in methods:
            times = []
            for i in range(repeat):
                t0 = time.perf_counter()
                engine.explain_images([images[i % len(images)]], ["x"], method, patch=32, stride=16)
                times.append(time.perf_counter() - t0)
            key = f"{method}_{runtime}" if method == "occlusion" else method
            out["seconds_per_image"][key] = round(statistics.median(times), 3)
    engine = ClassifierExplainer.load(model, runtime="torch")
    x = torch.stack([engine.predictor.transform(im) for im in images])
    torch.manual_seed(0)
    randomised = model_from_config(read_config(model)["architecture"]).eval()
    for method in ("saliency", "gradcam"):
        trained = engine.explainer.explain(x, method)
        rand = Explainer(randomised, engine.pre).explain(x, method)
        out["randomisation_rank_corr"][method] = round(randomisation_rank_correlation(trained, rand), 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=Path("runs/ivory/model"))
    ap.add_argument("--n-test", type=int, default=100)
    ap.add_argument("--n-images", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    result = {"date": date.today().isoformat(), "machine": platform.processor() or platform.machine(),
              "threads": a.threads, "synthetic": synthetic(a.n_test)}
    if (a.model / "config.json").is_file():
        result["real"] = real(a.model, a.n_images, a.repeat)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
