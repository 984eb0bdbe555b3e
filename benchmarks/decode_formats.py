"""How fast is each image format read? JPEG against HEIC (phone photos), AVIF and WebP.

    .venv/bin/python benchmarks/decode_formats.py [--photos 60] [--size 320]

Takes met-ivory photos (``../shared/datasets/met-ivory``, drawn with seed 0), re-encodes each in
memory as JPEG, HEIC, AVIF and WebP (quality 90), at the museum's size (~600 px) and at a phone
camera's 12 megapixels (4032 px on the long side, upscaled), and times ``load_image`` (with the
JPEG draft decoding screening uses, large enough for its quality measures) plus the resize to ``--size``, in
one process (PyTorch on one thread; libheif decodes HEIC tiles on up to 4 threads, so on 2 cores). Prints photos/s per
format and the ratio to JPEG measured in the same run, and the mean file size.
"""

from __future__ import annotations

import argparse
import io
import time

import torch
from PIL import Image

from artsentry.data.images import load_image
from artsentry.data.manifest import read_manifest
from artsentry.data.quality import measuring_draft

FORMATS = ("JPEG", "HEIF", "AVIF", "WEBP")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/datasets/met-ivory")
    ap.add_argument("--photos", type=int, default=60)
    ap.add_argument("--size", type=int, default=320)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    paths = read_manifest(a.data)[0]["path"].sample(a.photos, random_state=0)
    originals = [load_image(p) for p in paths]
    draft = measuring_draft((a.size, a.size))  # as screening decodes: big enough to measure quality on
    print(f"{len(originals)} met-ivory photos, read at {a.size} px, one process")
    print(f"{'photo size':>12} {'format':>6} {'photos/s':>9} {'vs JPEG':>8} {'mean KB':>8}")
    for label, scale in (("museum", None), ("12 MP", 4032)):
        photos = originals if scale is None else \
            [im.resize((scale, round(scale * im.height / im.width)) if im.width >= im.height
                       else (round(scale * im.width / im.height), scale), Image.BICUBIC) for im in originals]
        rates = {}
        for fmt in FORMATS:
            blobs = []
            for im in photos:
                buf = io.BytesIO()
                im.save(buf, format=fmt, quality=90)
                blobs.append(buf.getvalue())
            t0 = time.perf_counter()
            for b in blobs:
                load_image(b, draft_size=draft).resize((a.size, a.size), Image.BILINEAR)
            rates[fmt] = len(blobs) / (time.perf_counter() - t0)
            kb = sum(map(len, blobs)) / len(blobs) / 1024
            print(f"{label:>12} {fmt:>6} {rates[fmt]:9.1f} {rates[fmt] / rates['JPEG']:8.2f} {kb:8.0f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
