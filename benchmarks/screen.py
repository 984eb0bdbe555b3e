"""Screening speed and the runtimes behind it, measured in one run on one model.

    .venv/bin/python benchmarks/screen.py --model runs/ivory/model

Prints one JSON document:
- bare forward passes (batch 32, random input at the model's input size): PyTorch
  eager, PyTorch channels-last, ONNX Runtime fp32, ONNX Runtime int8 (static QDQ
  per-channel, calibrated on training photos; and dynamic);
- test-split accuracy of each runtime on the model's own split (its run's
  manifest.csv), so the cost of int8 is measured, not assumed;
- the whole screening chain (read -> decode -> verdict -> evidence record, with
  decode workers) over every image of the manifest, with ONNX Runtime (the default
  once exported) and with PyTorch, and its ratio to the bare ONNX Runtime forward.

The model folder is copied; the user's folder is not changed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from artsentry.data.images import load_image
from artsentry.data.manifest import read_manifest
from artsentry.inference import Predictor
from artsentry.memory import keep_freed_memory
from artsentry.models.onnx import ONNX_NAME, OnnxClassifier, export_onnx, quantize_onnx
from artsentry.screen import Screener


def rate(fn, x, batches: int) -> float:
    fn(x)  # warm-up
    t0 = time.perf_counter()
    for _ in range(batches):
        fn(x)
    return batches * len(x) / (time.perf_counter() - t0)


def tensors(predictor: Predictor, paths: list[str]) -> np.ndarray:
    return torch.stack([predictor.transform(load_image(p, draft_size=predictor.preprocessing.draft_size))
                        for p in paths]).numpy()


def main() -> int:
    keep_freed_memory()  # as the artsentry command does: these figures are what it gets
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="runs/ivory/model", help="trained model folder (its run holds manifest.csv)")
    ap.add_argument("--batches", type=int, default=6, help="timed batches of 32 per bare-forward figure")
    ap.add_argument("--calibration", type=int, default=256, help="training photos for static int8 calibration")
    ap.add_argument("--chain-images", type=int, default=None, help="screen only the first N images")
    a = ap.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    src = Path(a.model)
    df, _ = read_manifest(src.parent / "manifest.csv")
    work = Path(tempfile.mkdtemp(prefix="artsentry-bench-"))
    try:
        model_dir = work / "model"
        shutil.copytree(src, model_dir, ignore=shutil.ignore_patterns("*.onnx"))
        ref = Predictor.load(model_dir, runtime="torch")
        size = ref.preprocessing.input_size
        test = df[df["split"] == "test"].reset_index(drop=True)
        x_test = tensors(ref, test["path"].tolist())
        block = export_onnx(model_dir, parity_inputs=x_test[:32])
        calib = tensors(ref, df[df["split"] == "train"]["path"].sample(a.calibration, random_state=0).tolist())
        q_static = quantize_onnx(model_dir / ONNX_NAME, work / "static.onnx", "static", calib)
        q_dynamic = quantize_onnx(model_dir / ONNX_NAME, work / "dynamic.onnx", "dynamic")

        runners = {"onnxruntime_fp32": OnnxClassifier(model_dir / ONNX_NAME),
                   "onnxruntime_int8_static": OnnxClassifier(q_static),
                   "onnxruntime_int8_dynamic": OnnxClassifier(q_dynamic)}
        x = np.random.default_rng(0).uniform(-1, 1, size=(32, 3, size, size)).astype(np.float32)
        model = ref.model
        eager = model.to(memory_format=torch.contiguous_format)
        with torch.inference_mode():
            forward = {"torch_eager": rate(lambda b: eager(torch.from_numpy(b)), x, a.batches)}
            model = model.to(memory_format=torch.channels_last)
            forward["torch_channels_last"] = rate(
                lambda b: model(torch.from_numpy(b).contiguous(memory_format=torch.channels_last)), x, a.batches)
        for name, r in runners.items():
            forward[name] = rate(r.logits, x, a.batches)

        y = (test["label"] == ref.positive_label).to_numpy()
        pos = ref.positive_index
        th = ref.threshold if ref.threshold is not None else 0.5

        def accuracy(logits: np.ndarray) -> float:
            p = torch.softmax(torch.from_numpy(logits), 1).numpy()[:, pos]
            return float(((p >= th) == y).mean())

        with torch.inference_mode():
            torch_logits = np.concatenate([model(torch.from_numpy(x_test[i:i + 32]).contiguous(
                memory_format=torch.channels_last)).numpy() for i in range(0, len(x_test), 32)])
        acc = {"torch": accuracy(torch_logits)}
        for name, r in runners.items():
            acc[name] = accuracy(np.concatenate([r.logits(x_test[i:i + 32]) for i in range(0, len(x_test), 32)]))

        listing = work / "listings.csv"
        paths = df["path"].tolist()[: a.chain_images]
        pd.DataFrame({"listing_id": range(len(paths)), "image": paths}).to_csv(listing, index=False)
        chain = {}
        for runtime in ("onnx", "torch"):
            s = Screener(model_dir, runtime=runtime, progress=False)
            chain[runtime] = s.run(listing, work / f"screen-{runtime}")["this_run"]
        result = {
            "date": date.today().isoformat(),
            "machine": {"cpus": os.cpu_count(), "threads": torch.get_num_threads(),
                        "python": platform.python_version(), "torch": torch.__version__},
            "model": {"path": str(src), "architecture": ref.config["architecture"]["name"], "input_size": size},
            "onnx_parity_max_prob_diff_on_32_test_photos": block["parity"]["max_prob_diff"],
            "bare_forward_img_per_s_b32": {k: round(v, 1) for k, v in forward.items()},
            "test_accuracy": {k: round(v, 4) for k, v in acc.items()},
            "test_images": int(len(test)),
            "int8_accuracy_cost_points": {k: round(100 * (acc["onnxruntime_fp32"] - acc[k]), 2)
                                          for k in acc if "int8" in k},
            "chain": {"images": len(paths),
                      "onnxruntime_img_per_s": chain["onnx"]["images_per_second"],
                      "torch_img_per_s": chain["torch"]["images_per_second"],
                      "onnx_chain_over_bare_onnx_forward": round(chain["onnx"]["images_per_second"]
                                                                 / forward["onnxruntime_fp32"], 3),
                      "onnx_chain_over_bare_eager_forward": round(chain["onnx"]["images_per_second"]
                                                                  / forward["torch_eager"], 2)},
        }
        print(json.dumps(result, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
