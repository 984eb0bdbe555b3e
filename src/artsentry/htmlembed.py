"""Inline images for self-contained HTML (reports, dataset cards): data URIs, no network."""

from __future__ import annotations

import base64
import io

from .data.images import ImageLoadError, ImageSource, load_image


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def png_uri(img) -> str:
    """A PIL image as a PNG data URI."""
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return data_uri(buf.getvalue())


def jpeg_uri(img, quality: int = 85) -> str:
    """A PIL image as a JPEG data URI."""
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=quality)
    return data_uri(buf.getvalue(), "image/jpeg")


def figure_uri(fig, dpi: int = 100) -> str:
    """A matplotlib figure as a PNG data URI (the figure is closed)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return data_uri(buf.getvalue())


def thumbnail_uri(path: "ImageSource", size: int = 160, quality: int = 80) -> str | None:
    """A JPEG thumbnail data URI, or None when the image cannot be read."""
    try:
        img = load_image(path, draft_size=(size, size))
    except ImageLoadError:
        return None
    img.thumbnail((size, size))
    return jpeg_uri(img, quality)


def use_agg():
    """matplotlib.pyplot with the file-only backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
