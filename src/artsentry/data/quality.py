"""Is a photo good enough to judge? Warnings that travel with every decision.

The ivory models lose most where a photo has lost its fine detail or is dim and noisy: on the
held-out met-ivory photos, motion blur, defocus and photos enlarged from 110-180 px cost 5-10 points of
accuracy and turn ceramics into "ivory"; a dim, noisy shot makes the model miss ivory (recall
0.79); BENCHMARKS.md, "Photo changes the listing generator never makes". A decision on such a
photo is weak evidence either way, and a reviewer should know it. ``assess_quality`` measures
four things on the photo as the model sees it (long side scaled to ``QUALITY_SCALE`` px,
enlarged if smaller) and warns when one falls outside what the models were trained on:

``sharpness``  mean |Laplacian| / mean gradient magnitude over the photo's strongest 10% of
               edges: about 0.19 for a sharp museum photo, 0.06-0.09 when blurred or enlarged.
               A ratio, so contrast, exposure and haze barely move it; blur lowers it.
``noise``      the photo's noise sigma (0-255 scale) by Immerkaer's estimator (1996): a
               Laplacian-difference kernel, which cancels smooth shading and edges, averaged.
               Dim photos brightened back (high ISO) score 5-10; studio photos 1-3.
``brightness`` the 99th percentile of its grey levels (0-255): how bright its brightest parts
               are. A museum photo reaches ~220 even on a black backdrop (the object is lit); an
               underexposed or dim photo stays far lower.
``long_side``  pixels of the photo's long side, as its file has it (``load_image`` keeps the
               size before any JPEG draft scaling in ``img.info["source_size"]``).
``aspect``     its long side over its short side. A model reads a photo squashed to a square
               (``squash``), or cut to 4:3 at its centre first (``fit``, the default of models
               trained since 2026-12-04); the most elongated met-ivory photo is 7.8:1 (99.9% are
               under 6:1), so a photo beyond ``ASPECT_MAX`` is a shape no model here has been
               shown (a panorama, a strip cut from a page, a banner).
``frames``     frames or pages in the file: an animated GIF or WebP, a multi-page TIFF. Every
               model judges the first only; a seller's animation of several photos is said to
               hold more than was judged (any number over 1 warns).

A photo is measured the same whatever model reads it: JPEGs are decoded at reduced scale
never under ``QUALITY_SCALE`` (a model's ``Preprocessing.draft_size``; ``measuring_draft(draft)``
for any other size).

The limits (``SHARPNESS_MIN``, ``BRIGHTNESS_MIN``, ``NOISE_MAX``) are the 2nd, 2nd and 98th
percentiles of the 1,980 training photos of the seed-0 met-ivory split, so about 2% of photos like
those the models learnt from get each warning (``benchmarks/photo_quality.py`` measures them, how
often each warning fires on changed photos, and how accurate a model is on warned and unwarned
photos).
A warning says nothing about the object: it says the decision beside it rests on less evidence.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from PIL import Image

#: the long side (px) a photo is scaled to before it is measured (the ``make ivory`` input size)
QUALITY_SCALE = 320
#: sharpness under this: fine detail is missing (2nd percentile of the met-ivory training photos)
SHARPNESS_MIN = 0.114
#: noise sigma above this (0-255): a grainy photo (98th percentile of the met-ivory training photos)
NOISE_MAX = 6.2
#: brightest parts (99th percentile of grey levels) under this: a dark photo (2nd percentile of the
#: met-ivory training photos)
BRIGHTNESS_MIN = 163.5
#: long side (px) under which a photo is called small: the models see it enlarged
SMALL_SIDE = 224
#: long side over short side above which a photo is called narrow: further from square than any
#: met-ivory photo (the most elongated of the 2,829: 7.8:1)
ASPECT_MAX = 8.0

@dataclass(frozen=True)
class PhotoQuality:
    """Measurements of one photo and the warnings they raise (empty: nothing to say)."""

    long_side: int
    aspect: float
    sharpness: float
    noise: float
    brightness: float
    warnings: tuple[str, ...] = field(default_factory=tuple)
    frames: int = 1  # frames or pages in the file (an animated GIF, a multi-page TIFF): only the first is judged

    def to_dict(self) -> dict:
        d = asdict(self)
        d["warnings"] = list(self.warnings)
        return d


def quality_warnings(quality: dict | None) -> list[str]:
    """The warnings of a ``PhotoQuality.to_dict()`` as records carry it (None: an unreadable or
    unmeasured photo); empty when there is nothing to say."""
    return list(quality["warnings"]) if quality else []


def warnings_text(quality: dict | None) -> str | None:
    """The warnings joined into one line ("; "), as tables and pages show them; None when none."""
    return "; ".join(quality_warnings(quality)) or None


def measuring_draft(draft_size: tuple[int, int] | None) -> tuple[int, int] | None:
    """The JPEG draft size to decode at when the photo is to be measured as well: the model's
    own, but never under ``QUALITY_SCALE`` (a 64-px model would otherwise have its photos
    decoded at 1/8 scale and measured blurred). ``None`` (no draft scaling) stays ``None``."""
    if draft_size is None:
        return None
    return max(draft_size[0], QUALITY_SCALE), max(draft_size[1], QUALITY_SCALE)


def grey_at_scale(img: Image.Image, scale: int = QUALITY_SCALE) -> np.ndarray:
    """The photo as measured: greyscale, float32, its long side scaled (up or down) to ``scale``."""
    w, h = img.size
    f = scale / max(w, h)
    size = (max(1, round(w * f)), max(1, round(h * f)))
    grey = img.convert("L")
    if size != grey.size:
        grey = grey.resize(size, Image.BILINEAR)
    return np.asarray(grey, dtype=np.float32)


def sharpness(grey: np.ndarray) -> float:
    """Mean |Laplacian| over mean gradient magnitude (Sobel), on the pixels of the strongest 10%
    of gradients (0 for a flat picture). Borders mirror the edge pixels (scipy.ndimage's
    "reflect"); the filters are array slices, twice as fast as separate ndimage calls."""
    if min(grey.shape) < 3:
        return 0.0
    p = np.pad(grey, 1, mode="symmetric")
    left, right = p[:, :-2], p[:, 2:]
    dx = left - right  # horizontal difference, then smoothed [1, 2, 1] down the columns
    gx = dx[:-2] + 2 * dx[1:-1] + dx[2:]
    up, down = p[:-2], p[2:]
    dy = up - down
    gy = dy[:, :-2] + 2 * dy[:, 1:-1] + dy[:, 2:]
    lap = p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:] - 4 * grey
    g2 = (gx * gx + gy * gy).ravel()  # squared magnitude: the threshold needs no square root
    k = int(0.9 * (g2.size - 1))
    strong = g2 >= np.partition(g2, k)[k]  # the strongest 10% (a selection, not a full sort)
    denominator = float(np.sqrt(g2[strong]).mean())
    return float(np.abs(lap).ravel()[strong].mean() / denominator) if denominator > 1e-6 else 0.0


def noise_sigma(grey: np.ndarray) -> float:
    """Immerkaer's fast noise estimate (sigma, in grey levels) of a greyscale array: the mean
    absolute response of the kernel [[1, -2, 1], [-2, 4, -2], [1, -2, 1]] inside the borders."""
    if min(grey.shape) < 3:
        return 0.0
    g = grey
    c = (g[:-2, :-2] + g[:-2, 2:] + g[2:, :-2] + g[2:, 2:]
         - 2 * (g[:-2, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:] + g[2:, 1:-1]) + 4 * g[1:-1, 1:-1])
    return float(np.sqrt(np.pi / 2) * np.abs(c).mean() / 6.0)


def brightness(grey: np.ndarray) -> float:
    """The 99th percentile of a greyscale array's levels (whole levels 0-255, as ``grey_at_scale``
    gives them): how bright its brightest parts are. Read off a 256-bin histogram."""
    if not grey.size:
        return 0.0
    counts = np.bincount(np.clip(grey, 0, 255).astype(np.uint8).ravel(), minlength=256)
    return float(np.searchsorted(np.cumsum(counts), 0.99 * grey.size))


def assess_quality(img: Image.Image, *, scale: int = QUALITY_SCALE, sharpness_min: float = SHARPNESS_MIN,
                   noise_max: float = NOISE_MAX, brightness_min: float = BRIGHTNESS_MIN,
                   small_side: int = SMALL_SIDE, aspect_max: float = ASPECT_MAX) -> PhotoQuality:
    """Measure an RGB photo (as ``load_image`` returns it) and say what limits the evidence."""
    size = img.info.get("source_size") or img.size
    long_side = max(size)
    aspect = long_side / max(1, min(size))
    grey = grey_at_scale(img, scale)
    sharp, noise, bright = sharpness(grey), noise_sigma(grey), brightness(grey)
    warnings = []
    if long_side < small_side:
        warnings.append(f"small photo: {long_side} px on its long side (under {small_side})")
    if aspect > aspect_max:
        warnings.append(f"narrow photo: {aspect:.1f}:1, further from square than any photo the model learnt from "
                        f"(over {aspect_max:g}:1); it reads the photo squashed or only its centre")
    if sharp < sharpness_min:
        warnings.append(f"little fine detail: sharpness {sharp:.3f} under {sharpness_min:g} "
                        "(blurred, out of focus or enlarged)")
    if noise > noise_max:
        warnings.append(f"grainy photo: noise {noise:.1f} over {noise_max:g} (dim light or heavy processing)")
    if bright < brightness_min:
        warnings.append(f"dark photo: its brightest parts reach {bright:.0f} of 255, under {brightness_min:g} "
                        "(dim light or underexposed)")
    frames = int(img.info.get("frames", 1))
    if frames > 1:
        warnings.append(f"first of {frames} frames or pages: the file holds more pictures (animated or "
                        "multi-page), the others were not judged")
    return PhotoQuality(int(long_side), round(aspect, 3), round(sharp, 4), round(noise, 3), round(bright, 1),
                        tuple(warnings), frames)
