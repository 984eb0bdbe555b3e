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


def _resized(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return np.asarray(Image.fromarray(np.asarray(a, dtype=np.float32), mode="F").resize(size, Image.BILINEAR))


def heat_on_photo(size: tuple[int, int], heat: np.ndarray, pre: Preprocessing) -> np.ndarray:
    """A map on the model's input put back on the pixels of the photo it was made from (``size``: its width and
    height), as an (height, width) array: zero on the parts ``fit`` or ``center_crop`` cut away; the border ``pad``
    adds dropped."""
    w, h = size
    if pre.resize == "squash":
        return _resized(heat, (w, h))
    if pre.resize == "pad":
        side = max(w, h)
        x0, y0 = (side - w) // 2, (side - h) // 2
        return _resized(heat, (side, side))[y0:y0 + h, x0:x0 + w]
    if pre.resize == "fit":
        left, top, right, bottom = CropToAspect(CROP_RATIO).box(w, h)
    else:  # center_crop: the centre square of the short side
        side = min(w, h)
        left, top = int(round((w - side) / 2)), int(round((h - side) / 2))
        right, bottom = left + side, top + side
    out = np.zeros((h, w), dtype=np.float32)
    out[top:bottom, left:right] = _resized(heat, (right - left, bottom - top))
    return out


def photo_and_heat(img: Image.Image, heat: np.ndarray, pre: Preprocessing, display: int = DISPLAY_SIZE,
                   method: str | None = None, box: tuple | None = None) -> tuple[Image.Image, np.ndarray]:
    """(photo as shown, heat map resized to it and scaled for display) for a map on the model's input made by
    ``method`` (see ``display_scale``). ``box`` (left, top, right, bottom in ``img``'s pixels): the map is of
    that part of the photo (a tile of a lot scan, ``lots.tile_crops``; or the whole, ``(0, 0, *img.size)``), and
    is drawn in its place on the whole photo, which is shown uncut, as the page and the queue outline the tile."""
    heat = display_scale(heat, method)
    img = img.convert("RGB")
    if box is not None:
        left, top, right, bottom = box
        placed = np.zeros((img.height, img.width), dtype=np.float32)
        placed[top:bottom, left:right] = heat_on_photo((right - left, bottom - top), heat, pre)
        shown = img.copy()
        shown.thumbnail((display, display), Image.BICUBIC)
        return shown, np.clip(_resized(placed, shown.size), 0, 1)
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
           display: int = DISPLAY_SIZE, method: str | None = None, box: tuple | None = None) -> Image.Image:
    """The overlay file: photo + heat map, a colour bar (low to high attribution) on the
    right and ``caption`` above. ``box``: the part of the photo the map is of (``photo_and_heat``), outlined."""
    shown, h = photo_and_heat(img, heat, pre, display, method, box=box)
    over = blend(shown, h)
    if box is not None and tuple(box) != (0, 0, *img.size):
        sx, sy = shown.width / img.width, shown.height / img.height
        outline = [round(box[0] * sx), round(box[1] * sy), round(box[2] * sx) - 1, round(box[3] * sy) - 1]
        ImageDraw.Draw(over).rectangle(outline, outline=(0, 200, 255), width=2)
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

