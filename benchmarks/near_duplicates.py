"""Could screening point out the same photo re-encoded (not byte-identical) under other listings?

    .venv/bin/python benchmarks/near_duplicates.py [--bits 64 256] [--copies 300]

A difference hash (dHash: a grey thumbnail of (n+1) x n pixels, one bit per horizontal neighbour
pair, brighter or not) of every met-ivory photo, read as screening reads it. Prints, for each hash
size, (1) how many pairs of *different* files lie within each Hamming distance (different photos
a near-duplicate rule would call the same; the only pair known to be one photo is counted too), and
(2) how many of ``--copies`` photos drawn with seed 0, re-encoded as a marketplace would (half size
+ JPEG 70, WebP 85, 10% brighter + JPEG 85), stay within each distance of their original. Nothing in
artsentry uses such a hash; ``screen`` points out byte-identical photos only (``shared_with``).
"""

from __future__ import annotations

import argparse
import io

import numpy as np
from PIL import Image

from artsentry.data.images import load_image
from artsentry.data.manifest import read_manifest
from artsentry.data.quality import measuring_draft
from artsentry.files import file_sha256


def dhash_bits(img: Image.Image, n: int) -> np.ndarray:
    g = np.asarray(img.convert("L").resize((n + 1, n), Image.BILINEAR), dtype=np.int16)
    return (g[:, 1:] > g[:, :-1]).ravel()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/datasets/met-ivory")
    ap.add_argument("--bits", type=int, nargs="+", default=[64, 256], help="hash sizes (squares: 64 = 8x8)")
    ap.add_argument("--copies", type=int, default=300)
    a = ap.parse_args(argv)
    paths = read_manifest(a.data)[0]["path"].tolist()
    draft = measuring_draft((320, 320))
    imgs = [load_image(p, draft_size=draft) for p in paths]
    sha = np.array([file_sha256(p) for p in paths])
    iu = np.triu_indices(len(paths), 1)
    different = sha[iu[0]] != sha[iu[1]]
    pick = np.random.default_rng(0).choice(len(imgs), a.copies, replace=False)
    print(f"{len(paths)} photos, {different.sum()} pairs of different files; {a.copies} re-encoded copies")
    for bits in a.bits:
        n = int(round(bits ** 0.5))
        h = np.array([dhash_bits(im, n) for im in imgs], dtype=np.uint8)
        packed = np.packbits(h, axis=1)
        popcount = np.array([bin(v).count("1") for v in range(256)], np.int32)
        dist = np.zeros((len(h), len(h)), np.int32)
        for byte in range(packed.shape[1]):
            dist += popcount[packed[:, None, byte] ^ packed[None, :, byte]]
        d = dist[iu]
        steps = [0, 2, 4, 6, 8] if bits <= 64 else [0, 4, 8, 12, 16, 24]
        print(f"\n{bits}-bit dHash ({n + 1}x{n} thumbnail)")
        print("distance <=      " + " ".join(f"{k:>7}" for k in steps))
        print("different pairs  " + " ".join(f"{int(((d <= k) & different).sum()):>7}" for k in steps))
        for name in ("half + JPEG 70", "WebP 85", "10% brighter + JPEG 85"):
            ds = []
            for i in pick:
                im = imgs[i]
                w, hgt = im.size
                v, fmt, q = {"half + JPEG 70": (im.resize((w // 2, hgt // 2)), "JPEG", 70),
                             "WebP 85": (im, "WEBP", 85),
                             "10% brighter + JPEG 85": (Image.eval(im, lambda x: min(255, int(x * 1.1))), "JPEG", 85)}[name]
                buf = io.BytesIO()
                v.save(buf, format=fmt, quality=q)
                ds.append(int((dhash_bits(load_image(buf.getvalue(), draft_size=draft), n) != h[i]).sum()))
            ds = np.array(ds)
            print(f"{name:<17}" + " ".join(f"{(ds <= k).mean():>7.2f}" for k in steps))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
