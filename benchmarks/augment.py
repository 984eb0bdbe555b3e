"""CPU cost of the training augmentation per photo, and what the listing mask cache saves.

    .venv/bin/python benchmarks/augment.py                      # 64 met-ivory photos, 320 px
    .venv/bin/python benchmarks/augment.py --photos 128 --size 384

The training transform of ``artsentry train`` (``data.transforms.train_transform``) on the
first N photos of met-ivory's metadata.csv, decoded as training decodes them, in this
process on one thread, timed with ``time.process_time`` (CPU time: less disturbed by other
work on the machine than wall time): ``--augment standard``; ``--augment listing`` as it was
(the foreground estimate made on every draw); and with ``data.listing.MaskCache`` as
training now runs it, first epoch (every mask estimated and written) and second epoch (read
back). Every pass draws under the same torch seed, and the cached passes' tensors are checked
equal to the uncached ones. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from datetime import date
from pathlib import Path

import pandas as pd
import torch

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "met-ivory"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--photos", type=int, default=64)
    ap.add_argument("--size", type=int, default=320)
    a = ap.parse_args()
    from artsentry.data.images import load_image
    from artsentry.data.listing import MaskCache
    from artsentry.data.transforms import Preprocessing, train_transform

    torch.set_num_threads(1)
    meta = pd.read_csv(a.data / "metadata.csv")
    # both labels, as a training batch has them
    rows = pd.concat([meta[meta["label"] == lab].head(a.photos // 2) for lab in sorted(meta["label"].unique())])
    pre = Preprocessing(input_size=a.size)
    t0 = time.process_time()
    photos = [load_image(a.data / f, draft_size=pre.draft_size) for f in rows["file"]]
    decode = (time.process_time() - t0) / len(photos)

    def epoch(transform):
        torch.manual_seed(0)
        t = time.process_time()
        out = [transform(p) for p in photos]
        return out, (time.process_time() - t) / len(photos)

    standard, t_standard = epoch(train_transform(pre, "standard"))
    listing, t_listing = epoch(train_transform(pre, "listing"))
    with tempfile.TemporaryDirectory() as tmp:
        cached = train_transform(pre, "listing", mask_cache=MaskCache(tmp))
        first, t_first = epoch(cached)
        second, t_second = epoch(cached)
        n_masks = len(list(Path(tmp).rglob("*.png")))
    same = all(torch.equal(x, y) and torch.equal(x, z) for x, y, z in zip(listing, first, second))
    ms = lambda s: round(1000 * s, 1)  # noqa: E731
    print(json.dumps({
        "date": date.today().isoformat(), "machine": platform.processor() or platform.machine(),
        "photos": len(photos), "input_size": a.size, "torch_threads": 1,
        "cpu_ms_per_photo": {"decode": ms(decode), "standard": ms(t_standard), "listing_uncached": ms(t_listing),
                             "listing_cache_first_epoch": ms(t_first), "listing_cache_later_epochs": ms(t_second)},
        "masks_estimated": n_masks,
        "listing_speedup_later_epochs": round(t_listing / t_second, 2),
        "cached_tensors_equal_uncached": same,
    }, indent=2))


if __name__ == "__main__":
    main()
