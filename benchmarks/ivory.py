"""Ivory detector benchmark: seed CNN vs EfficientNet-Lite0 on met-ivory, same split, plus CPU throughput.

    .venv/bin/python benchmarks/ivory.py                      # trains both into runs/bench (resumable)
    .venv/bin/python benchmarks/ivory.py --lite0-run runs/ivory   # reuse `make ivory`'s run (and its split)

Prints one JSON document with test metrics of both models, the accuracy gap,
and throughput in images/s: JPEG decode + resize on one core, bare forward
passes of lite0 at batch 32 (eager and channels-last), and the whole
``Predictor.predict_files`` chain (which measures each photo's quality too since 2026-12-04:
5-10% of its throughput, BENCHMARKS.md "Photo-quality warnings").
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import sys
import time
from datetime import date
from pathlib import Path

import torch

from artsentry.cli import _settings_from_args, build_parser
from artsentry.data.images import load_image
from artsentry.data.manifest import read_manifest
from artsentry.data.transforms import eval_transform
from artsentry.inference import Predictor
from artsentry.memory import keep_freed_memory
from artsentry.models import create_model, default_preprocessing
from artsentry.train import TrainSettings, train

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "datasets" / "met-ivory"


def train_or_reuse(data, run: Path, settings: TrainSettings) -> dict:
    if (run / "model" / "config.json").is_file() and not (run / "checkpoint").exists():
        print(f"reusing finished run {run}", file=sys.stderr)
        return json.loads((run / "metrics.json").read_text())
    t0 = time.time()
    result = train(data, run, settings)
    ev = {k: v for k, v in result.evaluation.items() if k != "evaluation"}
    ev["train_seconds"] = round(time.time() - t0, 1)
    (run / "metrics.json").write_text(json.dumps(ev, indent=2))
    return ev


def make_ivory_settings() -> TrainSettings:
    """`make ivory`'s recipe, read from the Makefile's TRAIN_ARGS through the CLI's own parser, so
    the benchmark cannot drift from the README's main command (until 2026-12-03 it had its own
    copy, still at the 6-epoch recipe of before listing augmentation)."""
    m = re.search(r"^TRAIN_ARGS \?= (.*)$", (REPO / "Makefile").read_text(), re.M)
    if not m:
        raise SystemExit("Makefile: no TRAIN_ARGS line")
    args = build_parser().parse_args(["train", "DATA", "--out", "RUN", *shlex.split(m.group(1))])
    return _settings_from_args(args)


def decode_throughput(paths: list[str], size: int) -> float:
    pre = default_preprocessing("efficientnet_lite0")
    tf = eval_transform(pre)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    for p in paths:
        tf(load_image(p, draft_size=(size, size)))
    rate = len(paths) / (time.perf_counter() - t0)
    torch.set_num_threads(threads)
    return rate


@torch.inference_mode()
def forward_throughput(channels_last: bool, batches: int = 6, batch_size: int = 32) -> float:
    model = create_model("efficientnet_lite0", 2, pretrained=False).eval()
    x = torch.randn(batch_size, 3, 224, 224)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    model(x)  # warm-up
    t0 = time.perf_counter()
    for _ in range(batches):
        model(x)
    return batches * batch_size / (time.perf_counter() - t0)


def main() -> int:
    keep_freed_memory()  # as the artsentry command does: these figures are what it gets
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--out", default=str(REPO / "runs" / "bench"))
    ap.add_argument("--lite0-run", help="finished lite0 run folder to reuse instead of training one")
    ap.add_argument("--throughput-images", type=int, default=320)
    args = ap.parse_args()
    out = Path(args.out)
    torch.set_num_threads(min(2, os.cpu_count() or 1))

    lite_run = Path(args.lite0_run) if args.lite0_run else out / "lite0"
    lite = train_or_reuse(args.data, lite_run, make_ivory_settings())
    # the seed CNN trains on the very same split: the lite0 run's manifest carries it
    seed = train_or_reuse(lite_run / "manifest.csv", out / "smallcnn",
                          TrainSettings(architecture="smallcnn", epochs=30, patience=6))

    df, _ = read_manifest(lite_run / "manifest.csv")
    paths = df[df["split"] == "test"]["path"].tolist()[: args.throughput_images]
    predictor = Predictor.load(lite_run / "model")
    t0 = time.perf_counter()
    preds = predictor.predict_files(paths)
    chain = len(paths) / (time.perf_counter() - t0)
    assert all(p.ok for p in preds)

    result = {
        "date": date.today().isoformat(),
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
                    "torch": torch.__version__},
        "split": {k: int(v) for k, v in df["split"].value_counts().items()},
        "lite0_test": lite["metrics"]["test"],
        "smallcnn_test": seed["metrics"]["test"],
        "accuracy_gap_points": round(100 * (lite["metrics"]["test"]["accuracy"] - seed["metrics"]["test"]["accuracy"]), 2),
        "train_seconds": {"lite0": lite.get("train_seconds"), "smallcnn": seed.get("train_seconds")},
        "throughput_img_per_s": {
            "decode_resize_1core": round(decode_throughput(paths, 224), 1),
            "lite0_forward_eager_b32": round(forward_throughput(False), 1),
            "lite0_forward_channels_last_b32": round(forward_throughput(True), 1),
            "predict_files_chain": round(chain, 1),
            "predict_files_chain_input_size": predictor.preprocessing.input_size,
        },
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
