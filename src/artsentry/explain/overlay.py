"""Heat maps drawn on photos: the overlay a person looks at.

A map is computed on the model's input (a square of ``input_size`` pixels made
by the model's ``Preprocessing``). ``photo_and_heat`` puts it back on the
photo: for ``squash`` resizing the map to the photo's own aspect ratio undoes the
squash exactly, so the overlay lies on the whole, undistorted photo; for ``fit`` the
same on the part of the photo the model saw (a very wide or tall photo cut to 4:3 or
3:4 at its centre); for ``pad`` and ``center_crop`` the overlay is drawn on the
model's view of the photo (padded, or cropped).
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..data.transforms import CROP_RATIO, CropToAspect, Preprocessing, _resize

#: matplotlib colour map of every overlay and colour bar
COLORMAP = "inferno"
DISPLAY_SIZE = 512


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _lut(name: str = COLORMAP) -> np.ndarray:
    from matplotlib import colormaps

    return (colormaps[name](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)


def photo_and_heat(img: Image.Image, heat: np.ndarray, pre: Preprocessing, display: int = DISPLAY_SIZE,
                   method: str | None = None) -> tuple[Image.Image, np.ndarray]:
    """(photo as shown, heat map resized to it and scaled for display) for a map on the model's input made by
    ``method`` (see ``display_scale``)."""
    heat = display_scale(heat, method)
    img = img.convert("RGB")
    if pre.resize == "fit":
        img = CropToAspect(CROP_RATIO)(img)  # then as squash: the map resized to the part's own shape
    elif pre.resize != "squash":
        from torchvision.transforms import v2 as T

        img = T.Compose(_resize(pre))(img)
    shown = img.copy()
    shown.thumbnail((display, display), Image.BICUBIC)
    h = Image.fromarray(np.clip(heat, 0, 1).astype(np.float32), mode="F").resize(shown.size, Image.BILINEAR)
    return shown, np.clip(np.asarray(h), 0, 1)


def heat_rgba(heat: np.ndarray, max_alpha: float = 0.75) -> Image.Image:
    """The heat map alone as an RGBA layer (colour map, opacity rising with heat): what a
    web page lays over the photo."""
    lut = _lut()
    idx = (np.clip(heat, 0, 1) * 255).astype(np.uint8)
    rgba = np.dstack([lut[idx], (np.clip(heat, 0, 1) * max_alpha * 255).astype(np.uint8)])
    return Image.fromarray(rgba, "RGBA")


def blend(photo: Image.Image, heat: np.ndarray, max_alpha: float = 0.75) -> Image.Image:
    """Photo with the heat map laid over it (opacity rising with heat, so cold areas show
    the photo untouched)."""
    base = photo.convert("RGBA")
    return Image.alpha_composite(base, heat_rgba(heat, max_alpha)).convert("RGB")


def colour_bar(height: int, width: int = 18) -> Image.Image:
    lut = _lut()
    ramp = lut[np.linspace(255, 0, height).astype(int)]
    return Image.fromarray(np.repeat(ramp[:, None, :], width, axis=1), "RGB")


def display_scale(heat: np.ndarray, method: str | None) -> np.ndarray:
    """What is drawn: saliency maps are sparse with a few extreme pixels, so they are scaled
    to their 99th percentile (clipped above) to be visible, as in Simonyan et al.'s figures;
    the other maps are drawn as they are (already scaled to a maximum of 1)."""
    if method == "saliency":
        top = float(np.percentile(heat, 99))
        if top > 0:
            return np.clip(heat / top, 0, 1)
    return heat


def render(img: Image.Image, heat: np.ndarray, pre: Preprocessing, caption: str = "",
           display: int = DISPLAY_SIZE, method: str | None = None) -> Image.Image:
    """The overlay file: photo + heat map, a colour bar (low to high attribution) on the
    right and ``caption`` above."""
    shown, h = photo_and_heat(img, heat, pre, display, method)
    over = blend(shown, h)
    font = _font(13)
    top = 22 if caption else 4
    bar_w, margin = 16, 48
    canvas = Image.new("RGB", (over.width + margin + 8, over.height + top + 6), "white")
    canvas.paste(over, (0, top))
    bar_h = max(40, over.height - 24)
    canvas.paste(colour_bar(bar_h, bar_w), (over.width + 8, top + 12))
    draw = ImageDraw.Draw(canvas)
    draw.text((over.width + 8, top), "high", fill="black", font=_font(11))
    draw.text((over.width + 8, top + 14 + bar_h), "low", fill="black", font=_font(11))
    if caption:
        draw.text((4, 3), caption, fill="black", font=font)
    return canvas

