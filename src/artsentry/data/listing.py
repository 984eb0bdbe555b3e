""""The same object, photographed again": listing-style versions of studio photos.

Museum photos show one object, centred, on a plain background, in even light.
Listing photos do not. ``rephotograph(img, seed)`` turns a studio photo into a
plausible listing photo, one seeded random draw per transform family:

``background``
    the object is cut out with a foreground estimate from the plain studio
    background (pixels far in colour from a smooth backdrop fitted to the
    border, cleaned and feathered; a photo with no plain backdrop, e.g. a tile
    filling the frame, is kept whole) and composited onto procedural clutter: a
    table-like texture of stripes and grain, random boxes and blobs, blurred.
``geometry``
    scale 0.55-1.0 of the frame, placed off-centre; rotation up to +-25
    degrees; a perspective tilt moving each corner up to 12% of the side;
    a crop keeping 75-100% of each side.
``lighting``
    brightness x0.65-1.35, contrast x0.7-1.3, white balance (red and blue
    gains 0.85-1.15), gamma 0.75-1.35, and a light gradient across the frame
    (up to 35% darker on one side).
``blur_noise``
    Gaussian blur with sigma 0-1.8 px (at 600 px) and Gaussian noise with
    sigma 0-8 grey levels.
``overlay``
    a price or sales text in a corner and, half of the time, a translucent
    diagonal watermark.
``jpeg``
    phone-style re-encoding: downscale to 480-900 px on the long side, JPEG
    quality 25-75.

Everything is drawn from ``numpy.random.default_rng(seed)``: the same image and
seed give the same bytes. ``families`` selects a subset (e.g. one family at a
time, to see which one hurts a model most).
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from ..files import atomic_path
from .dataset import ImageDataset, item_seed

#: bumped whenever a change to this module changes the photos it makes for the same seed, so
#: caches of generated photos (training views, benchmark queries) made by another version are
#: not reused. 2: robust backdrop fit, photos with no plain backdrop kept whole.
GENERATOR_VERSION = 2

FAMILIES = ("background", "geometry", "lighting", "blur_noise", "overlay", "jpeg")
WORDS = ("SALE", "Vintage", "antique", "RARE", "old carving", "estate find", "free shipping", "OBO", "as is",
         "genuine", "collectible", "lot 12")


# -- foreground estimate ---------------------------------------------------------------------


def background_colour(arr: np.ndarray, border: int = 6) -> np.ndarray:
    """Median colour of the image border (studio photos: the backdrop)."""
    edges = np.concatenate([arr[:border].reshape(-1, 3), arr[-border:].reshape(-1, 3),
                            arr[:, :border].reshape(-1, 3), arr[:, -border:].reshape(-1, 3)])
    return np.median(edges, axis=0)


#: a backdrop fitted with a tolerance above this many grey levels is not plain (a textured,
#: framed or cropped-in photo): there is no object to cut out, the photo is kept whole
MAX_TOLERANCE = 60.0
#: ... nor when less than this share of the border looks like the fitted backdrop
MIN_PLAIN_BORDER = 0.6
#: ... nor when the cut-out would keep less than this share of the frame (the estimate lost it)
MIN_COVER = 0.03


def backdrop_model(arr: np.ndarray, band: float = 0.03, rounds: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fit the studio backdrop as a smooth quadratic colour field to the image border.

    Returns (backdrop image, residual distances of the border pixels, which border pixels
    the fit kept). Studio backdrops are graded and vignetted, so a single colour does not
    fit them; and objects often reach the border (a base standing on the edge, a tile
    filling the frame), so the fit is trimmed: refitted ``rounds`` times on the border
    pixels within 2.5 x the median residual (at least 6 levels) of the previous fit.
    """
    h, w = arr.shape[:2]
    b = max(2, int(min(h, w) * band))
    border = np.zeros((h, w), bool)
    border[:b], border[-b:], border[:, :b], border[:, -b:] = True, True, True, True
    yy, xx = np.mgrid[:h, :w]
    x, y = xx / max(w - 1, 1) - 0.5, yy / max(h - 1, 1) - 0.5
    design = np.stack([np.ones_like(x), x, y, x * x, y * y, x * y], axis=-1)
    edge_design, edge = design[border], arr[border]
    keep = np.ones(len(edge), bool)
    for _ in range(max(1, rounds)):
        coef, *_ = np.linalg.lstsq(edge_design[keep], edge[keep], rcond=None)
        resid = np.linalg.norm(edge - edge_design @ coef, axis=1)
        keep = resid <= max(6.0, 2.5 * float(np.median(resid[keep])))
    return design @ coef, resid, keep


def close_and_open(mask: np.ndarray, k: int) -> np.ndarray:
    """A uint8 mask closed (gaps filled) then opened (specks dropped) with a k x k square: the pixels Pillow's
    ``MaxFilter(k)``, ``MinFilter(k)``, ``MinFilter(k)``, ``MaxFilter(k)`` give, in a time that does not grow with
    k (Pillow's grows with k squared, and ``foreground_mask``'s k with the photo: 1.7 s a mask at 2 megapixels)."""
    from scipy.ndimage import maximum_filter, minimum_filter

    def grow(a):
        return maximum_filter(a, size=k, mode="nearest")

    def shrink(a):
        return minimum_filter(a, size=k, mode="nearest")

    return grow(shrink(shrink(grow(mask))))


def foreground_mask(img: Image.Image, tolerance: float | None = None) -> Image.Image:
    """Soft mask (mode L, 255 = object) of a studio photo's object.

    A pixel of the photo, box-blurred over ~1% of its size, is foreground when its
    colour is farther from the fitted backdrop
    (``backdrop_model``) than ``tolerance`` (default: 3 x the 90th percentile of the
    residual of the border pixels the fit kept, or 1.5 x that of the border pixels within
    ``MAX_TOLERANCE`` -- a backdrop sweep's horizon is not quadratic -- and at least 14 levels); the mask is closed
    and opened to remove specks, enclosed holes are filled, and the edge is feathered.

    When the photo has no plain backdrop to cut the object from (the default tolerance
    would exceed ``MAX_TOLERANCE``, less than ``MIN_PLAIN_BORDER`` of the border matches
    the backdrop, or the cut-out keeps under ``MIN_COVER`` of the frame) the mask is the
    whole frame: the photo is kept whole rather than the object lost.
    """
    k = max(3, (min(img.size) // 100) | 1)
    # measured on a slightly smoothed photo: sensor noise and JPEG grain are not texture
    arr = np.asarray(img.convert("RGB").filter(ImageFilter.BoxBlur(k // 2)), dtype=np.float32)
    backdrop, resid, keep = backdrop_model(arr)
    whole = Image.new("L", img.size, 255)
    if tolerance is None:
        near = resid[resid <= MAX_TOLERANCE]  # the border without what is plainly object
        horizon = 1.5 * float(np.percentile(near, 90)) if near.size else np.inf
        tolerance = max(14.0, 3.0 * float(np.percentile(resid[keep], 90)), horizon)
        if tolerance > MAX_TOLERANCE or float((resid <= tolerance).mean()) < MIN_PLAIN_BORDER:
            return whole
    dist = np.linalg.norm(arr - backdrop, axis=2)
    from scipy.ndimage import binary_fill_holes

    mask = close_and_open(((dist > tolerance) * 255).astype(np.uint8), k)
    filled = binary_fill_holes(mask > 127)  # glazed or grey parts matching the backdrop
    if filled.mean() < MIN_COVER:
        return whole
    return Image.fromarray((filled * 255).astype(np.uint8), "L").filter(ImageFilter.GaussianBlur(max(1.0, k / 3)))


class MaskCache:
    """``foreground_mask`` of each photo computed once and kept on disk, as lossless PNG, under
    ``directory``: a training run re-photographs the same photo every epoch, and the
    foreground estimate is half of what that costs (BENCHMARKS.md). A cached mask is
    byte for byte the one ``foreground_mask`` returns, so training draws the same photos
    with or without it. Photos are keyed by their pixels (BLAKE2b of mode, size and
    bytes), masks by generator version; a file that cannot be read is computed again.
    Safe for several DataLoader workers: each mask is written to a temporary file and
    renamed into place."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory) / f"v{GENERATOR_VERSION}"

    @staticmethod
    def key(img: Image.Image) -> str:
        h = hashlib.blake2b(f"{img.mode} {img.size[0]}x{img.size[1]}".encode(), digest_size=20)
        h.update(img.tobytes())
        return h.hexdigest()

    def __call__(self, img: Image.Image) -> Image.Image:
        path = self.directory / f"{self.key(img)}.png"
        try:
            with Image.open(path) as cached:
                cached.load()
            if cached.mode == "L" and cached.size == img.size:
                return cached
        except (OSError, SyntaxError, ValueError):  # not there yet, truncated or not a PNG: computed below
            pass
        mask = foreground_mask(img)
        with atomic_path(path) as tmp:
            mask.save(tmp, format="PNG")
        return mask

    def __repr__(self) -> str:
        return f"MaskCache({str(self.directory.parent)!r})"


# -- the families ----------------------------------------------------------------------------


def clutter(size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """A cluttered, table-like background."""
    w, h = size
    base = rng.integers(60, 220, 3)
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    freq = rng.uniform(0.02, 0.08)
    grain = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * freq + rng.uniform(0, 6)) * rng.uniform(8, 30)
    noise = rng.normal(0, 6, (h, w))
    arr = np.clip(base[None, None, :] + (grain + noise)[..., None], 0, 255).astype(np.uint8)
    img = Image.fromarray(arr, "RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(4, 12))):
        x0, y0 = rng.uniform(-0.2, 1.0) * w, rng.uniform(-0.2, 1.0) * h
        x1, y1 = x0 + rng.uniform(0.05, 0.5) * w, y0 + rng.uniform(0.05, 0.4) * h
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.rectangle([x0, y0, x1, y1], fill=colour)
        else:
            draw.ellipse([x0, y0, x1, y1], fill=colour)
    return img.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 3.0)))


def _place(obj: Image.Image, mask: Image.Image, canvas: Image.Image, rng, geometry: bool) -> Image.Image:
    w, h = canvas.size
    scale = rng.uniform(0.55, 1.0) if geometry else 1.0
    ow, oh = max(1, int(obj.width * scale)), max(1, int(obj.height * scale))
    obj, mask = obj.resize((ow, oh), Image.BICUBIC), mask.resize((ow, oh), Image.BILINEAR)
    x = int(rng.uniform(0, max(1, w - ow))) if geometry else (w - ow) // 2
    y = int(rng.uniform(0, max(1, h - oh))) if geometry else (h - oh) // 2
    canvas.paste(obj, (x, y), mask)
    return canvas


def _perspective(img: Image.Image, rng, fill) -> Image.Image:
    w, h = img.size
    d = 0.12
    quad = []
    for cx, cy in ((0, 0), (0, h), (w, h), (w, 0)):
        quad += [cx + rng.uniform(-d, d) * w, cy + rng.uniform(-d, d) * h]
    return img.transform(img.size, Image.QUAD, quad, resample=Image.BICUBIC, fillcolor=fill)


def _geometry(img: Image.Image, rng, fill) -> Image.Image:
    img = img.rotate(rng.uniform(-25, 25), resample=Image.BICUBIC, expand=False, fillcolor=fill)
    img = _perspective(img, rng, fill)
    w, h = img.size
    cw, ch = int(w * rng.uniform(0.75, 1.0)), int(h * rng.uniform(0.75, 1.0))
    x, y = int(rng.uniform(0, w - cw + 1)), int(rng.uniform(0, h - ch + 1))
    return img.crop((x, y, x + cw, y + ch))


def _lighting(img: Image.Image, rng) -> Image.Image:
    arr = np.asarray(img, dtype=np.float32) / 255.0
    arr = arr * rng.uniform(0.65, 1.35)
    mean = arr.mean()
    arr = (arr - mean) * rng.uniform(0.7, 1.3) + mean
    arr[..., 0] *= rng.uniform(0.85, 1.15)
    arr[..., 2] *= rng.uniform(0.85, 1.15)
    arr = np.clip(arr, 0, 1) ** rng.uniform(0.75, 1.35)
    h, w = arr.shape[:2]
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[:h, :w]
    ramp = ((xx / w - 0.5) * np.cos(angle) + (yy / h - 0.5) * np.sin(angle)) + 0.5
    arr = arr * (1 - rng.uniform(0, 0.35) * np.clip(ramp, 0, 1))[..., None]
    return Image.fromarray((np.clip(arr, 0, 1) * 255).astype(np.uint8), "RGB")


def _blur_noise(img: Image.Image, rng) -> Image.Image:
    sigma = rng.uniform(0, 1.8) * max(img.size) / 600
    if sigma > 0.2:
        img = img.filter(ImageFilter.GaussianBlur(sigma))
    arr = np.asarray(img, dtype=np.float32) + rng.normal(0, rng.uniform(0, 8), (img.height, img.width, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _overlay(img: Image.Image, rng) -> Image.Image:
    img = img.convert("RGBA")
    w, h = img.size
    layer = Image.new("RGBA", img.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    size = max(10, int(h * rng.uniform(0.05, 0.1)))
    text = f"{rng.choice(['$', 'EUR ', 'GBP ', 'US$'])}{int(rng.integers(20, 5000))} {rng.choice(WORDS)}"
    x = int(rng.uniform(0.02, 0.3) * w)
    y = int((rng.uniform(0.02, 0.1) if rng.random() < 0.5 else rng.uniform(0.8, 0.88)) * h)
    box = draw.textbbox((x, y), text, font=_font(size))
    draw.rectangle([box[0] - 4, box[1] - 3, box[2] + 4, box[3] + 3], fill=(255, 255, 255, int(rng.integers(120, 230))))
    draw.text((x, y), text, font=_font(size), fill=(int(rng.integers(0, 120)), 0, 0, 255))
    if rng.random() < 0.5:
        mark = Image.new("RGBA", img.size, (0, 0, 0, 0))
        mdraw = ImageDraw.Draw(mark)
        msize = max(12, int(h * rng.uniform(0.08, 0.15)))
        mdraw.text((w * 0.15, h * 0.45), str(rng.choice(["SAMPLE", "© seller", "shop.example", "WATERMARK"])),
                   font=_font(msize), fill=(255, 255, 255, int(rng.integers(60, 130))))
        layer = Image.alpha_composite(layer, mark.rotate(rng.uniform(-35, 35), resample=Image.BICUBIC))
    return Image.alpha_composite(img, layer).convert("RGB")


def _jpeg(img: Image.Image, rng) -> Image.Image:
    side = int(rng.uniform(480, 900))
    if max(img.size) > side:
        img = img.copy()
        img.thumbnail((side, side), Image.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=int(rng.integers(25, 76)))
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def rephotograph(img: Image.Image, seed: int, families: Sequence[str] = FAMILIES,
                 mask: Image.Image | None = None) -> Image.Image:
    """A listing-style version of studio photo ``img`` (RGB), deterministic in ``seed``.
    ``mask``: ``foreground_mask(img)`` when the caller already has it (it is half the cost,
    and the same for every version of one photo)."""
    unknown = set(families) - set(FAMILIES)
    if unknown:
        raise ValueError(f"unknown transform families {sorted(unknown)}; choose from {FAMILIES}")
    rng = np.random.default_rng(seed)
    img = img.convert("RGB")
    fill = tuple(int(c) for c in background_colour(np.asarray(img, dtype=np.float32)))
    geometry = "geometry" in families
    if "background" in families:
        canvas = clutter(img.size, rng)
        img = _place(img, foreground_mask(img) if mask is None else mask, canvas, rng, geometry)
        fill = tuple(int(c) for c in np.asarray(canvas).reshape(-1, 3).mean(0))
    if geometry:
        img = _geometry(img, rng, fill)
    if "lighting" in families:
        img = _lighting(img, rng)
    if "blur_noise" in families:
        img = _blur_noise(img, rng)
    if "overlay" in families:
        img = _overlay(img, rng)
    if "jpeg" in families:
        img = _jpeg(img, rng)
    return img


#: the longest side a photo is re-shot at (``reshots``): re-shots end as JPEGs of 480-900 px (``_jpeg``), and the
#: work grows with the pixels (two re-shots of an 8.5-megapixel photo take 12.6 s, of a 1,024-px version 0.5 s)
RESHOT_MAX_SIDE = 1024


def reshots(img: Image.Image, seeds: Sequence[int]) -> list[Image.Image]:
    """Listing-style versions of one studio photo, one per seed (the foreground estimate made once), made from
    the photo scaled down to ``RESHOT_MAX_SIDE`` when it is larger."""
    if max(img.size) > RESHOT_MAX_SIDE:
        img = img.copy()
        img.thumbnail((RESHOT_MAX_SIDE, RESHOT_MAX_SIDE), Image.LANCZOS)
    mask = foreground_mask(img)
    return [rephotograph(img, seed, mask=mask) for seed in seeds]


def reshot_jpegs(source, seeds: Sequence[int], quality: int = 90) -> list[bytes]:
    """``reshots`` of a photo file (path or bytes) as JPEG bytes. Raises ``ImageLoadError``
    for an unreadable photo."""
    from .images import load_image

    out = []
    for shot in reshots(load_image(source, draft_size=(RESHOT_MAX_SIDE, RESHOT_MAX_SIDE)), seeds):
        buf = io.BytesIO()
        shot.save(buf, format="JPEG", quality=quality)
        out.append(buf.getvalue())
    return out


#: how often each family is drawn when training (``RandomRephotograph``): the background
#: most of the time, since studio backdrops are the cue a model must not learn
TRAIN_FAMILY_PROBABILITY = {"background": 0.8, "geometry": 0.6, "lighting": 0.6, "blur_noise": 0.4,
                            "overlay": 0.4, "jpeg": 0.5}


class RandomRephotograph:
    """Training augmentation: with probability ``p`` re-photograph the studio photo
    listing-style with a random subset of the families (each drawn with the probability
    in ``TRAIN_FAMILY_PROBABILITY``), with the very generator ``evaluate --shift`` uses.
    A fraction ``all_families`` of the re-photographed photos gets every family at once
    instead, as ``evaluate --shift`` makes its listing-style photos and as a phone photo of
    an object on a table often is (cluttered, tilted, warm light, blurred, priced,
    re-compressed): with the subsets alone that combination is ~1% of training photos.

    Draws come from torch's random state, so a seeded run (``torch.manual_seed``;
    DataLoader workers are seeded from it) draws the same photos again. ``mask_cache``
    (a ``MaskCache``) keeps each photo's foreground estimate across draws; the photos
    drawn are the same with it."""

    def __init__(self, p: float = 0.6, family_probability: dict[str, float] | None = None,
                 all_families: float = 0.0, mask_cache: MaskCache | None = None):
        if not 0.0 <= p <= 1.0:
            raise ValueError("p must be in [0, 1]")
        if not 0.0 <= all_families <= 1.0:
            raise ValueError("all_families must be in [0, 1]")
        self.p = p
        self.all_families = all_families
        self.mask_cache = mask_cache
        self.family_probability = dict(family_probability or TRAIN_FAMILY_PROBABILITY)
        unknown = set(self.family_probability) - set(FAMILIES)
        if unknown:
            raise ValueError(f"unknown transform families {sorted(unknown)}")

    def __call__(self, img: Image.Image) -> Image.Image:
        import torch

        u = torch.rand(len(self.family_probability) + 1).tolist()
        if u[0] >= self.p:
            return img
        if u[0] < self.p * self.all_families:  # the same draws as without it: default runs do not change
            families = list(FAMILIES)
        else:
            families = [f for f, q, r in zip(self.family_probability, self.family_probability.values(), u[1:]) if r < q]
        if not families:
            return img
        seed = int(torch.randint(0, 2**62, (1,)).item())
        mask = self.mask_cache(img) if self.mask_cache is not None and "background" in families else None
        return rephotograph(img, seed, families, mask=mask)

    def __repr__(self) -> str:
        return (f"RandomRephotograph(p={self.p}, family_probability={self.family_probability}, "
                f"all_families={self.all_families}, mask_cache={self.mask_cache!r})")


def background_only(img: Image.Image, fill: tuple[int, int, int] | None = None, shape: str = "box",
                    mask: Image.Image | None = None) -> Image.Image:
    """The photo with its object masked out (filled with the backdrop colour): for the
    background-bias check, where a model should be at chance.

    ``shape="box"`` fills the bounding box of the (dilated) foreground estimate, so
    nothing of the object is left; ``"silhouette"`` fills only the object's own pixels,
    which leaves its outline as a flat shape: on met-ivory a fine-tuned lite0 still told
    ivory from ceramics by that outline 71% of the time, against 57% with the box and
    49% on the backdrop colour alone. A photo with no plain backdrop (the mask is the
    whole frame) comes out as a flat fill: it has no background to show. ``mask``:
    ``foreground_mask(img)`` when the caller already has it."""
    if shape not in ("box", "silhouette"):
        raise ValueError("shape must be 'box' or 'silhouette'")
    img = img.convert("RGB")
    if fill is None:
        fill = tuple(int(c) for c in background_colour(np.asarray(img, dtype=np.float32)))
    mask = (foreground_mask(img) if mask is None else mask).filter(ImageFilter.MaxFilter(5))
    out = img.copy()
    if shape == "silhouette":
        out.paste(Image.new("RGB", img.size, fill), (0, 0), mask)
        return out
    box = mask.getbbox()
    if box is not None:
        out.paste(Image.new("RGB", (box[2] - box[0], box[3] - box[1]), fill), box[:2])
    return out


def shift_variants(families: Sequence[str] = FAMILIES) -> dict[str, tuple[str, ...] | str | None]:
    """What ``ListingStyleDataset`` can show a model, by name: the studio photo, listing-style
    versions (all families at once, then each alone), and the background alone."""
    return {"studio": None, "listing": tuple(families), **{f"only_{f}": (f,) for f in families},
            "background_only": "background_only"}


class ListingStyleDataset(ImageDataset):
    """An ``ImageDataset`` whose photos are re-photographed listing-style (``families``),
    reduced to their background (``"background_only"``), or left alone (``None``).
    Image i always gets seed ``item_seed(seed, i)``: the same set every time. ``mask_cache``
    (a ``MaskCache``) shares each photo's foreground estimate between variants."""

    def __init__(self, sources, transform, variant, seed: int = 0, mask_cache: MaskCache | None = None, **kwargs):
        super().__init__(sources, transform, **kwargs)
        self.variant = variant
        self.seed = seed
        self.mask_cache = mask_cache

    def prepare(self, img: Image.Image, i: int) -> Image.Image:
        if self.variant is None:
            return img
        cut_out = self.variant == "background_only" or "background" in self.variant
        mask = self.mask_cache(img) if self.mask_cache is not None and cut_out else None
        if self.variant == "background_only":
            return background_only(img, mask=mask)
        return rephotograph(img, item_seed(self.seed, i), self.variant, mask=mask)
