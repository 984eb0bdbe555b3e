"""What glibc's default of handing large freed blocks back to the kernel costs, and what
``artsentry.memory.keep_freed_memory`` (called by the ``artsentry`` command) saves.

    .venv/bin/python benchmarks/memory.py                 # lite0 at 320 px, batch 32
    .venv/bin/python benchmarks/memory.py --size 480 --steps 4

Each setting runs in a fresh process (malloc is set up once per process), one after the
other, on the same random batches: fine-tuning steps (forward, backward, AdamW) as
``artsentry train`` takes them, then inference forward passes as ``predict``/``screen``/
``evaluate`` run them (PyTorch, channels-last, no grad). Prints one JSON document: per
step and per batch, wall seconds, user and kernel CPU seconds, minor page faults, and the
peak resident memory of each process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from datetime import date

CHILD = r"""
import json, os, resource, sys, time
keep = sys.argv[1] == "1"
if keep:
    from artsentry.memory import keep_freed_memory
    assert keep_freed_memory(), "mallopt did not take"
import torch
from artsentry.models import create_model
size, steps, batches, batch = (int(v) for v in sys.argv[2:6])
torch.manual_seed(0)
model = create_model("efficientnet_lite0", 2, pretrained=False).to(memory_format=torch.channels_last)
opt = torch.optim.AdamW(model.parameters(), 1e-3)
x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
y = torch.randint(0, 2, (batch,))

def usage():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return time.perf_counter(), r.ru_utime, r.ru_stime, r.ru_minflt

def measure(fn, n):
    fn()  # warm-up
    a = usage()
    for _ in range(n):
        fn()
    b = usage()
    return {k: round((b[i] - a[i]) / n, 3 if i < 3 else 0) for i, k in
            enumerate(("wall_s", "user_s", "kernel_s", "minor_faults"))}

def train_step():
    model.train()
    loss = torch.nn.functional.cross_entropy(model(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()

def forward():
    model.eval()
    with torch.inference_mode():
        model(x)

out = {"train_step": measure(train_step, steps), "inference_batch": measure(forward, batches)}
out["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
print(json.dumps(out))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=320, help="input size in px (default 320, make ivory's)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=6, help="timed training steps per setting")
    ap.add_argument("--batches", type=int, default=6, help="timed inference batches per setting")
    a = ap.parse_args()
    out = {"date": date.today().isoformat(), "machine": f"{os.cpu_count()} cores, {platform.machine()}",
           "glibc": platform.libc_ver()[1], "size": a.size, "batch_size": a.batch_size, "results": {}}
    for keep, name in ((False, "glibc default"), (True, "keep_freed_memory")):
        args = [sys.executable, "-c", CHILD, "1" if keep else "0", str(a.size), str(a.steps), str(a.batches),
                str(a.batch_size)]
        done = subprocess.run(args, capture_output=True, text=True, check=True)
        out["results"][name] = json.loads(done.stdout.strip().splitlines()[-1])
    base, kept = (out["results"][k] for k in ("glibc default", "keep_freed_memory"))
    out["speed-up"] = {part: round(base[part]["wall_s"] / kept[part]["wall_s"], 2)
                       for part in ("train_step", "inference_batch")}
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
