"""Re-shots of large photos: ``listing.reshot_jpegs`` (``register --reshots``) against the photo's size,
with the photo scaled down to ``RESHOT_MAX_SIDE`` first (as since 2026-12-07) and at its full size (before);
and ``listing.foreground_mask`` of the full-size photo with scipy's maximum and minimum filters (as since
2026-12-07) and with Pillow's ``MaxFilter``/``MinFilter`` (before; the same pixels).

    .venv/bin/python benchmarks/reshot_size.py --sides 600,2000,4000

A met-ivory studio photo (``../shared``) is scaled to each long side given (a museum's master, a phone's
photo) and saved as a JPEG (quality 92); two re-shots (seeds 1, 2) of it are timed both ways in one process,
the best of ``--repeats`` runs each, and so is its foreground mask. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import io
import json
import time
from datetime import date
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from artsentry.data import listing

PHOTO = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "met-ivory" / "images" / "ivory" / \
    "ivory_10088.jpg"


def best_time(work, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def pillow_close_and_open(mask: np.ndarray, k: int) -> np.ndarray:
    """``listing.close_and_open`` as it was: Pillow's rank filters."""
    img = Image.fromarray(mask, "L")
    img = img.filter(ImageFilter.MaxFilter(k)).filter(ImageFilter.MinFilter(k))
    return np.asarray(img.filter(ImageFilter.MinFilter(k)).filter(ImageFilter.MaxFilter(k)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sides", default="600,2000,4000", help="long sides of the photo, in pixels")
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    source = Image.open(PHOTO).convert("RGB")
    rows = []
    capped, scipy_close_and_open = listing.RESHOT_MAX_SIDE, listing.close_and_open
    for side in (int(s) for s in a.sides.split(",")):
        scale = side / max(source.size)
        photo = source.resize((round(source.size[0] * scale), round(source.size[1] * scale)), Image.LANCZOS)
        buf = io.BytesIO()
        photo.save(buf, "JPEG", quality=92)
        row = {"size": list(photo.size), "megapixels": round(photo.size[0] * photo.size[1] / 1e6, 2)}
        listing.RESHOT_MAX_SIDE = capped
        row["scaled_down_s"] = round(best_time(lambda: listing.reshot_jpegs(buf.getvalue(), [1, 2]), a.repeats), 3)
        listing.RESHOT_MAX_SIDE = 10 ** 9  # as before: the photo's full size
        row["full_size_s"] = round(best_time(lambda: listing.reshot_jpegs(buf.getvalue(), [1, 2]), a.repeats), 3)
        row["speed-up"] = round(row["full_size_s"] / row["scaled_down_s"], 1)
        row["mask_scipy_s"] = round(best_time(lambda: listing.foreground_mask(photo), a.repeats), 3)
        listing.close_and_open = pillow_close_and_open
        row["mask_pillow_s"] = round(best_time(lambda: listing.foreground_mask(photo), a.repeats), 3)
        listing.close_and_open = scipy_close_and_open
        rows.append(row)
        print(json.dumps(row), flush=True)
    listing.RESHOT_MAX_SIDE = capped
    print(json.dumps({"date": date.today().isoformat(), "reshot_max_side": capped, "rows": rows}))


if __name__ == "__main__":
    main()
