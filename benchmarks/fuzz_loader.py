"""Mutated photos against the one image loader: every file must decode to RGB or fail with
``ImageLoadError`` (one named line); anything else would end a long `predict` or `screen` run.

    .venv/bin/python benchmarks/fuzz_loader.py --cases 10000 --seed 0

A small photo is saved in every format the loader reads (JPEG, one with EXIF orientation, PNG,
palette PNG with transparency, GIF, two-frame GIF, WebP, TIFF, BMP, ICO, HEIC, AVIF, and a JPEG and
a PNG carrying a colour profile the loader applies); each case
takes one of them and applies 1-6 seeded mutations (a byte changed, four bytes set to a boundary
value, the file cut short, a slice copied elsewhere, random bytes inserted). Each case runs under a
5 s alarm. Prints JSON: cases, decoded, clean errors, escaped exceptions by format and type, slow
cases; exits 1 when anything escaped or hung.
"""

from __future__ import annotations

import argparse
import collections
import io
import json
import random
import signal
import sys
import time
import traceback
import warnings
from datetime import date

import numpy as np
from PIL import Image


def photo(size=(96, 72), seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    w, h = size
    arr = np.full((h, w, 3), 235, np.uint8)
    yy, xx = np.mgrid[:h, :w]
    arr[((xx - w / 2) / (w * 0.25)) ** 2 + ((yy - h / 2) / (h * 0.3)) ** 2 < 1] = (200, 180, 150)
    return Image.fromarray(np.clip(arr.astype(int) + rng.integers(-12, 12, arr.shape), 0, 255).astype(np.uint8))


def seeds() -> dict[str, bytes]:
    import pillow_heif

    pillow_heif.register_heif_opener()
    base = photo()

    def enc(fmt, img=base, **kw):
        buf = io.BytesIO()
        img.save(buf, format=fmt, **kw)
        return buf.getvalue()

    exif = base.getexif()
    exif[0x0112] = 6
    frames = io.BytesIO()
    base.save(frames, format="GIF", save_all=True, append_images=[base.rotate(30)])
    return {
        "jpeg": enc("JPEG", quality=80), "jpeg_exif": enc("JPEG", exif=exif.tobytes()), "png": enc("PNG"),
        "png_palette": enc("PNG", img=base.convert("P", palette=Image.Palette.ADAPTIVE, colors=16), transparency=0),
        "gif": enc("GIF"), "gif_2_frames": frames.getvalue(), "webp": enc("WEBP", quality=80), "tiff": enc("TIFF"),
        "bmp": enc("BMP"), "ico": enc("ICO"), "heic": enc("HEIF"), "avif": enc("AVIF"),
        # a colour profile the loader applies (LittleCMS's sRGB renamed, so not taken for sRGB's own): JPEG
        # stores it as it is, so mutations reach the profile itself; PNG compresses it
        "jpeg_icc": enc("JPEG", quality=80, icc_profile=applied_profile()),
        "png_icc": enc("PNG", icc_profile=applied_profile()),
    }


def applied_profile() -> bytes:
    from PIL import ImageCms

    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    renamed = srgb.replace("sRGB".encode("utf-16-be"), "xRGB".encode("utf-16-be"))  # "xRGB built-in"
    assert renamed != srgb
    return renamed


def mutate(data: bytes, rng: random.Random) -> bytes:
    d = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        op = rng.random()
        if op < 0.45 and d:
            d[rng.randrange(len(d))] = rng.randrange(256)
        elif op < 0.6 and d:
            i = rng.randrange(len(d))
            d[i:i + 4] = rng.choice([b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\x7f\xff\xff\xff", b"\x80\x00\x00\x00"])
        elif op < 0.75 and d:
            d = d[:rng.randrange(len(d))]
        elif op < 0.85 and d:
            i, j = rng.randrange(len(d)), rng.randrange(len(d))
            d[i:i] = d[j:j + rng.randint(1, 64)]
        else:
            i = rng.randrange(len(d) + 1)
            d[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    return bytes(d)


class _Timeout(Exception):
    pass


def _alarm(*_):
    raise _Timeout()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    from artsentry.data.images import ImageLoadError, load_image

    signal.signal(signal.SIGALRM, _alarm)
    files = seeds()
    rng = random.Random(a.seed)
    escaped: collections.Counter = collections.Counter()
    example: dict[str, str] = {}
    decoded = clean = 0
    slow = []
    warned = 0
    start = time.time()
    for _ in range(a.cases):
        kind = rng.choice(sorted(files))
        data = mutate(files[kind], rng)
        t = time.time()
        signal.alarm(5)
        try:
            with warnings.catch_warnings(record=True) as seen:
                warnings.simplefilter("always")
                img = load_image(data, min_side=8)
                assert img.mode == "RGB", img.mode
                img.resize((32, 32))
            warned += bool(seen)
            decoded += 1
        except ImageLoadError:
            clean += 1
        except _Timeout:
            escaped[f"{kind}: hung over 5 s"] += 1
        except BaseException as exc:  # what this script is looking for
            where = traceback.extract_tb(exc.__traceback__)[-1]
            key = f"{kind}: {type(exc).__name__} at {where.filename.rsplit('/', 1)[-1]}:{where.lineno}"
            escaped[key] += 1
            example.setdefault(key, str(exc)[:160])
        finally:
            signal.alarm(0)
        if time.time() - t > 1:
            slow.append(kind)
    print(json.dumps({
        "benchmark": "fuzz_loader", "date": date.today().isoformat(), "cases": a.cases, "seed": a.seed,
        "formats": sorted(files), "decoded": decoded, "clean_errors": clean,
        "escaped": sum(escaped.values()), "escaped_by_kind": {k: [n, example.get(k, "")] for k, n in escaped.most_common()},
        "decoded_with_a_warning_printed": warned, "over_1s": len(slow), "seconds": round(time.time() - start, 1),
    }, indent=2))
    return 1 if escaped or warned else 0


if __name__ == "__main__":
    sys.exit(main())
