"""Memory of an inference forward pass, or a fine-tuning step, against input size: what bounds the batch.

    .venv/bin/python benchmarks/inference_memory.py                  # lite0 at 320, 640, 1024, 2048 px
    .venv/bin/python benchmarks/inference_memory.py --arch efficientnet_lite2 --sizes 260 1024
    .venv/bin/python benchmarks/inference_memory.py --train --sizes 256 512 768 --megapixels 2

Each size runs in a fresh process: one forward pass as ``predict``/``evaluate``/``screen`` run it
(PyTorch, channels-last, inference mode, 2 threads) of a batch of random inputs, and the growth of the
process's peak resident memory over it. Prints, per size, MiB in all and per megapixel of input per
photo; ``models.FORWARD_MIB_PER_MEGAPIXEL`` is set from these figures. With ``--train``, two fine-tuning
steps instead (train mode, forward, cross-entropy, backward, AdamW's update, every layer trainable), as
``train`` runs them: ``models.TRAIN_MIB_PER_MEGAPIXEL`` is set from those.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from datetime import date

CHILD = r"""
import json, resource, sys, time
import torch
from artsentry.models import create_model
arch, size, batch, train = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "train"
torch.set_num_threads(2)
model = create_model(arch, 2, pretrained=False, input_size=size).eval().to(memory_format=torch.channels_last)
x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
if not train:
    with torch.inference_mode():
        model(torch.randn(1, 3, 64, 64).contiguous(memory_format=torch.channels_last))  # warm-up, small
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
if train:
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), 1e-4)
    for _ in range(2):  # the second step with AdamW's state made
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), torch.zeros(batch, dtype=torch.long)).backward()
        optimizer.step()
else:
    with torch.inference_mode():
        model(x)
grew = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
print(json.dumps({"size": size, "batch": batch, "seconds": round(time.perf_counter() - t, 2), "mib": round(grew),
                  "mib_per_megapixel": round(grew / batch / (size * size / 1e6))}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", default="efficientnet_lite0")
    ap.add_argument("--sizes", type=int, nargs="+", default=[320, 640, 1024, 2048])
    ap.add_argument("--megapixels", type=float, default=2.0, help="input pixels per batch (batch = this / size^2)")
    ap.add_argument("--train", action="store_true", help="two fine-tuning steps instead of a forward pass")
    a = ap.parse_args()
    rows = []
    for size in a.sizes:
        batch = max(1, round(a.megapixels * 1e6 / size**2))
        out = subprocess.run([sys.executable, "-c", CHILD, a.arch, str(size), str(batch),
                              "train" if a.train else "infer"], capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    print(json.dumps({"date": date.today().isoformat(), "arch": a.arch, "train": a.train, "rows": rows}))


if __name__ == "__main__":
    main()
