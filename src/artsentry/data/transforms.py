"""Preprocessing that travels with a model, and training augmentation.

A model's ``Preprocessing`` is stored in its ``config.json`` so that whoever
loads the model feeds it exactly what it was trained on (as timm's
``pretrained_cfg`` does).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
from PIL import Image, ImageFilter
from torchvision.transforms import v2 as T

from ..choices import RESIZE_MODES

#: each resize mode in words, for whoever feeds an exported model without this package (``export --out``)
RESIZE_STEPS = {
    "squash": "the whole photo resized to input_size x input_size (its aspect ratio not kept)",
    "pad": "the photo centred on a white square as wide as its long side, then resized to input_size x input_size",
    "center_crop": "the short side resized to input_size, then the centre input_size x input_size cut out",
    "fit": "a photo wider than 4:3 cut to 4:3 at its centre (taller than 3:4: cut to 3:4), then resized to "
           "input_size x input_size (its aspect ratio not kept)",
}
_INTERP = {
    "bicubic": T.InterpolationMode.BICUBIC,
    "bilinear": T.InterpolationMode.BILINEAR,
    "nearest": T.InterpolationMode.NEAREST,
}
#: background of studio photos and of transparent images: padding and rotation fill
FILL = 255


@dataclass(frozen=True)
class Preprocessing:
    """How an RGB image becomes the model's input tensor.

    ``resize``: ``squash`` resizes the whole photo to a square (keeps all of the
    object, changes its aspect ratio), ``pad`` keeps the aspect ratio and pads
    with white, ``center_crop`` resizes the short side and crops the centre, ``fit``
    cuts a photo wider than 4:3 (taller than 3:4) to that at its centre, then squashes
    it: the shapes the random resized crops of training have (``RESIZE_STEPS``).
    """

    input_size: int = 224
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    resize: str = "squash"
    interpolation: str = "bicubic"

    def __post_init__(self):
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {RESIZE_MODES}, not {self.resize!r}")
        if self.interpolation not in _INTERP:
            raise ValueError(f"interpolation must be one of {sorted(_INTERP)}, not {self.interpolation!r}")
        if isinstance(self.input_size, bool) or not isinstance(self.input_size, int) or not 16 <= self.input_size <= 4096:
            raise ValueError(f"input_size must be a whole number of pixels from 16 to 4096, not {self.input_size!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or not all(v > 0 for v in self.std):
            raise ValueError(f"mean and std need three values each (R, G, B), std above 0: {self.mean}, {self.std}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocessing":
        if not isinstance(d, dict):
            raise ValueError(f"missing, or not a mapping of settings ({type(d).__name__})")
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown preprocessing keys: {sorted(unknown)}")
        d = dict(d)
        for key in ("mean", "std"):
            if key in d:
                d[key] = tuple(float(v) for v in d[key])
        return cls(**d)

    @property
    def draft_size(self) -> tuple[int, int]:
        """The JPEG decode size (``load_image``'s ``draft_size``) for this model: the smallest that loses
        nothing for its input size, and never under the photo-quality measuring scale
        (``quality.QUALITY_SCALE``), which prediction needs anyway. One size, whether a photo is measured
        or not: training, ``predict``, ``register add`` and ``search``, ``explain`` and the server read a
        photo into the same input. (Under that scale, a 224-px model's photos were decoded at 1/2 scale by
        ``register add`` and at full scale by ``search``, which measures them: a registered photo searched
        again scored a similarity of 0.996 with itself.)"""
        from .quality import QUALITY_SCALE

        side = max(self.input_size, QUALITY_SCALE)
        return (side, side)


class _PadToSquare:
    def __call__(self, img: Image.Image) -> Image.Image:
        w, h = img.size
        if w == h:
            return img
        side = max(w, h)
        canvas = Image.new("RGB", (side, side), (FILL, FILL, FILL))
        canvas.paste(img, ((side - w) // 2, (side - h) // 2))
        return canvas


class CropToAspect:
    """The centre of a photo whose aspect ratio (width / height) is outside ``ratio``, cut along its long
    side to the nearest ratio inside; other photos as they are."""

    def __init__(self, ratio: tuple[float, float] = (3 / 4, 4 / 3)):
        self.lo, self.hi = ratio

    def box(self, w: int, h: int) -> tuple[int, int, int, int]:
        """The part of a ``w`` x ``h`` photo kept, as (left, top, right, bottom)."""
        if w > self.hi * h:
            keep = max(1, round(self.hi * h))
            return (w - keep) // 2, 0, (w - keep) // 2 + keep, h
        if w < self.lo * h:
            keep = max(1, round(w / self.lo))
            return 0, (h - keep) // 2, w, (h - keep) // 2 + keep
        return 0, 0, w, h

    def __call__(self, img: Image.Image) -> Image.Image:
        box = self.box(*img.size)
        return img if box == (0, 0, *img.size) else img.crop(box)


def _to_tensor(pre: Preprocessing) -> list:
    return [T.ToImage(), T.ToDtype(torch.float32, scale=True), T.Normalize(list(pre.mean), list(pre.std))]


def _resize(pre: Preprocessing) -> list:
    size, interp = pre.input_size, _INTERP[pre.interpolation]
    if pre.resize == "squash":
        return [T.Resize((size, size), interpolation=interp, antialias=True)]
    if pre.resize == "pad":
        return [_PadToSquare(), T.Resize((size, size), interpolation=interp, antialias=True)]
    if pre.resize == "fit":
        return [CropToAspect(CROP_RATIO), T.Resize((size, size), interpolation=interp, antialias=True)]
    return [T.Resize(size, interpolation=interp, antialias=True), T.CenterCrop(size)]


def eval_transform(pre: Preprocessing) -> T.Compose:
    """PIL RGB image -> normalised float tensor (3, S, S)."""
    return T.Compose(_resize(pre) + _to_tensor(pre))


AUGMENTATIONS = ("none", "standard", "listing")
#: share of the photo's area a random resized crop keeps, by default
CROP_SCALE = (0.5, 1.0)


def check_crop_scale(scale) -> tuple[float, float]:
    """``(lo, hi)`` with ``0 < lo <= hi <= 1``, else ``ValueError``."""
    lo, hi = (float(v) for v in scale)
    if not 0.0 < lo <= hi <= 1.0:
        raise ValueError(f"crop scale must be two area fractions with 0 < LO <= HI <= 1, not {lo:g} {hi:g}")
    return lo, hi


#: aspect-ratio range of the training crops
CROP_RATIO = (3 / 4, 4 / 3)
LISTING_P = 0.6  # share of training photos --augment listing re-photographs (train --listing-p)


def fixres_size(train_size: int, scale=CROP_SCALE) -> int:
    """Input size at which a whole photo shows objects as large as the random resized crops of
    ``scale`` did at ``train_size`` px (Touvron et al., "FixRes", 2019): a crop keeping a share
    ``s`` of the area magnifies by ``1 / sqrt(s)``, so the size is ``train_size * E[1 / sqrt(s)]``
    over the crops torchvision actually draws (area uniform in ``scale``, aspect log-uniform in
    ``CROP_RATIO``, redrawn when the crop does not fit a square photo, which thins out the
    largest crops), estimated from 4,000 draws under a fixed seed and rounded to a multiple of 32.
    The default crops (50-100% of the area) give 1.2x: 320 -> 384 px."""
    from torchvision.transforms import RandomResizedCrop

    scale = check_crop_scale(scale)
    photo = torch.empty(1, 600, 600)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        zoom = [600 / math.sqrt(h * w) for _, _, h, w in
                (RandomResizedCrop.get_params(photo, list(scale), list(CROP_RATIO)) for _ in range(4000))]
    return int(32 * round(train_size * sum(zoom) / len(zoom) / 32))


#: ranges of ``RandomDetailLoss``, at 600 px on the photo's long side (scaled with it)
DETAIL_LOSS_BLUR = (1.0, 3.5)  # Gaussian blur sigma, px
DETAIL_LOSS_SIDE = (200, 400)  # long side shrunk to, px, then enlarged back
DETAIL_LOSS_NOISE = (6.0, 16.0)  # Gaussian noise sigma, grey levels, each channel on its own


class RandomDetailLoss:
    """Training augmentation for photos that lost fine detail (a shaky or out-of-focus phone,
    a thumbnail, a dim room): with probability ``p``, one of a Gaussian blur, a shrink to a
    low resolution and back, or colour noise, each drawn uniformly in the ranges above. The
    listing generator's own blur and noise are mild (sigma <= 1.8 px, noise <= 8 levels,
    photos >= 480 px); these go beyond. Draws come from torch's random state, as
    ``RandomRephotograph``'s."""

    KINDS = ("blur", "low_res", "noise")

    def __init__(self, p: float = 0.3):
        if not 0.0 <= p <= 1.0:
            raise ValueError("p must be in [0, 1]")
        self.p = p

    def __call__(self, img: Image.Image) -> Image.Image:
        u = torch.rand(3).tolist()
        if u[0] >= self.p:
            return img
        img = img.convert("RGB")
        kind = self.KINDS[min(int(u[1] * 3), 2)]
        scale = max(img.size) / 600
        if kind == "blur":
            lo, hi = DETAIL_LOSS_BLUR
            return img.filter(ImageFilter.GaussianBlur((lo + (hi - lo) * u[2]) * scale))
        if kind == "low_res":
            lo, hi = DETAIL_LOSS_SIDE
            side = max(8, int((lo + (hi - lo) * u[2]) * scale))
            if max(img.size) <= side:
                return img
            small = img.copy()
            small.thumbnail((side, side), Image.BILINEAR)
            return small.resize(img.size, Image.BICUBIC)
        lo, hi = DETAIL_LOSS_NOISE
        noise = torch.randn(img.height, img.width, 3).numpy() * (lo + (hi - lo) * u[2])
        arr = np.asarray(img, dtype=np.float32) + noise
        return Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), "RGB")

    def __repr__(self) -> str:
        return f"RandomDetailLoss(p={self.p})"


def train_transform(pre: Preprocessing, augment: str = "standard", listing_all: float = 0.0,
                    crop_scale=CROP_SCALE, mask_cache=None, listing_p: float = LISTING_P,
                    detail_loss: float = 0.0) -> T.Compose:
    """Training transform. ``standard``: random resized crop (``crop_scale``: 50-100% of the
    area by default, aspect 3:4-4:3), horizontal flip, rotation up to 15 degrees with a
    white fill, brightness/contrast/saturation jitter of 0.2 and hue 0.02. (Turning 25%
    of photos grey was tried against the grey-photo bias and lost 1.4 points: BENCHMARKS.md.)
    ``listing``: first, 60% of the time by default (``listing_p``), the photo is re-photographed listing-style
    (``data.listing.RandomRephotograph``: object cut out and composited on clutter,
    perspective, rotation, scale, crop, light and white balance, blur and noise,
    price text and watermark, JPEG; ranges in ``data/listing.py``), then ``standard``;
    ``listing_all`` is the fraction of those re-photographed photos that get every family at
    once (``RandomRephotograph(all_families=...)``); ``mask_cache`` (a ``data.listing.MaskCache``)
    keeps each photo's foreground estimate from one epoch to the next. ``detail_loss``: the
    share of photos that then lose fine detail (``RandomDetailLoss``; default 0, off)."""
    if augment == "none":
        if detail_loss:
            raise ValueError("detail_loss is an augmentation; augment='none' makes none")
        return eval_transform(pre)
    if augment not in AUGMENTATIONS:
        raise ValueError(f"augment must be one of {AUGMENTATIONS}, not {augment!r}")
    if listing_all and augment != "listing":
        raise ValueError("listing_all applies to augment='listing' only")
    size, interp = pre.input_size, _INTERP[pre.interpolation]
    prefix = [_PadToSquare()] if pre.resize == "pad" else []
    if augment == "listing":
        from .listing import RandomRephotograph

        prefix = [RandomRephotograph(p=listing_p, all_families=listing_all, mask_cache=mask_cache)] + prefix
    if detail_loss:  # after the re-photographing (its own blur and JPEG are milder), before any padding
        after = 1 if augment == "listing" else 0
        prefix = prefix[:after] + [RandomDetailLoss(detail_loss)] + prefix[after:]
    return T.Compose(
        prefix
        + [
            T.RandomResizedCrop(size, scale=check_crop_scale(crop_scale), ratio=CROP_RATIO, interpolation=interp, antialias=True),
            T.RandomHorizontalFlip(),
            T.RandomRotation(15, interpolation=T.InterpolationMode.BILINEAR, fill=FILL),
            T.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02),
        ]
        + _to_tensor(pre)
    )


class EachTransform:
    """Several transforms of one decoded picture, as a tuple: a picture that is costly to make
    (decoded, re-photographed) is made once for every model or view that reads it.
    ``data.dataset.collate`` stacks each into a batch of its own."""

    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, img) -> tuple:
        return tuple(t(img) for t in self.transforms)

    def __repr__(self) -> str:
        return f"EachTransform({self.transforms!r})"


def paired_views(pre: Preprocessing, listing_all: float = 0.0, crop_scale=CROP_SCALE, mask_cache=None,
                 detail_loss: float = 0.0) -> EachTransform:
    """Two views of each training photo: the ``standard`` augmentation's, and a listing-style one
    (re-photographed every time, then ``standard``). For the consistency loss of
    ``train.TrainSettings.consistency``, which asks the model to judge both alike."""
    return EachTransform([train_transform(pre, "standard", crop_scale=crop_scale, detail_loss=detail_loss),
                          train_transform(pre, "listing", listing_all, crop_scale, mask_cache, listing_p=1.0,
                                          detail_loss=detail_loss)])
