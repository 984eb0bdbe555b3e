"""The one image loader used everywhere in artsentry.

``load_image`` turns a path or raw bytes into an RGB ``PIL.Image`` or raises
``ImageLoadError`` whose message names the file and says what is wrong in one
line. It:

- refuses empty files, files over ``max_bytes``, images whose header claims
  more than ``max_pixels`` pixels (decompression bombs) and images under
  ``min_side`` pixels on a side (tracking pixels, icons: nothing to judge),
  *before* decoding them;
- decodes fully up front, so truncated data fails here and not later inside a
  transform;
- reads JPEG, PNG, WebP, GIF, BMP, TIFF, AVIF (Pillow) and HEIC/HEIF, the format phones save
  photos in (``pillow-heif``);
- applies the EXIF orientation, so phone photos are upright;
- converts a photo whose file carries a colour profile (a phone's Display P3, a camera's Adobe RGB,
  ProPhoto RGB from a raw converter) to sRGB, the colours of the untagged museum photos the models
  learnt from: read as if sRGB, a wide-gamut photo's colours come out greyer and duller;
- converts every mode to 8-bit RGB correctly: 16-bit and float greyscale are
  rescaled rather than clipped, CMYK is converted, and transparency (RGBA, LA,
  palette with a transparent index) is composited onto a white background,
  which is what a transparent listing photo looks like on a web page.

Callers that process many files catch ``ImageLoadError``, report it, and go on.
"""

from __future__ import annotations

import functools
import io
import logging
import os
import re
import stat
import warnings
from collections import Counter
from pathlib import Path
from typing import Sequence, Union

import numpy as np
import pillow_heif
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from ..errors import ArtsentryError

pillow_heif.register_heif_opener()  # HEIC/HEIF photos from phones; its transforms leave EXIF orientation at 1

log = logging.getLogger(__name__)

#: 50 MB (decimal, as every size artsentry prints): larger than any photo a listing or museum serves.
DEFAULT_MAX_BYTES = 50_000_000
#: 64 megapixels: e.g. 8000 x 8000. Larger claims are refused before decoding (a JPEG read at draft scale may
#: claim DRAFT_JPEG_FACTOR times more: it decodes smaller).
DEFAULT_MAX_PIXELS = 64_000_000
#: how many times ``max_pixels`` a JPEG may claim when it is read at draft scale (``load_image``)
DRAFT_JPEG_FACTOR = 4

#: 32 px: a side shorter than this is a tracking pixel, a spacer or an icon, not a photo of an
#: object; a prediction on it would be noise in a review queue. Photos from 32 px up are read
#: (under 224 px they carry a "small photo" warning, ``data.quality``).
DEFAULT_MIN_SIDE = 32

#: file endings treated as images when scanning folders (.jfif and .jpe: JPEG as some browsers save
#: it; .heic/.heif: phone photos)
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jfif", ".jpe", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif",
                            ".avif", ".heic", ".heif"})

#: files a folder scan passes over without a word: what operating systems leave in photo folders
SYSTEM_FILES = frozenset({"thumbs.db", "desktop.ini", "ehthumbs.db"})

ImageSource = Union[str, os.PathLike, bytes]


def describe_size(n: int) -> str:
    """A byte count as people read it, in the units of every size limit artsentry states
    (decimal: 1 MB = 1,000,000 bytes): "3,012 bytes", "48.2 kB", "60.5 MB"."""
    if n < 10_000:
        return f"{n:,} bytes"
    if round(n / 1e3, 1) < 1000:  # 999,990 bytes is "1.0 MB", not "1000.0 kB"
        return f"{n / 1e3:.1f} kB"
    return f"{n / 1e6:.1f} MB"


def as_sources(sources) -> list:
    """A list of image sources from one (a path, or a photo's bytes) or from several: the
    functions that take photos accept ``predict_files("a.jpg")`` as ``predict_files(["a.jpg"])``,
    instead of reading a path's characters as so many missing files."""
    if isinstance(sources, (str, os.PathLike, bytes, bytearray, memoryview)):
        return [sources]
    return list(sources)


def source_names(sources: Sequence[ImageSource], names: Sequence[str] | None = None) -> list[str]:
    """Display names: given ones (one per source), else the path, else ``<image i>`` for raw bytes."""
    if names is not None:
        names = [names] if isinstance(names, str) else list(names)
        if len(names) != len(sources):
            raise ValueError(f"{len(names)} name(s) given for {len(sources)} photo(s)")
        return names
    return [s if isinstance(s, str) else str(s) if isinstance(s, os.PathLike) else f"<image {i}>"
            for i, s in enumerate(sources)]


# Never let PIL silently pad a truncated file with grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False


class ImageLoadError(ArtsentryError, ValueError):
    """An image could not be read. ``str(err)`` is one line: ``<name>: <reason>``."""

    def __init__(self, name: str, reason: str):
        self.name = name
        self.reason = reason
        super().__init__(f"{name}: {reason}")


#: first bytes of the image formats read here (content sniffing: a file name or a declared type
#: is not trusted)
SIGNATURES = (
    (b"\xff\xd8\xff", "jpeg"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"BM", "bmp"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
)


#: brands of an ISO media file's ``ftyp`` box that are still images: AVIF, and HEIF/HEIC (phone photos)
AVIF_BRANDS = (b"avif", b"avis")
HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1")


def describe_content(data: bytes) -> str:
    """What bytes that are no image hold, by their first bytes (an upload, a URL's answer): for the refusal's
    wording."""
    head = data[:64].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html", b"<")):
        return "HTML/XML text"
    if head.startswith((b"{", b"[")):
        return "JSON text"
    if data[:4] == b"%PDF":
        return "a PDF"
    if data[:2] == b"PK":
        return "a ZIP archive"
    return "not a known image format"


def image_format(data: bytes) -> str | None:
    """The image format the bytes really are (``jpeg``, ``png``, ``gif``, ``bmp``, ``tiff``, ``webp``,
    ``avif``, ``heif``; also a file ending for them), or None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[4:8] == b"ftyp":  # ISO media: the major brand, then the compatible ones, say what it holds
        size = int.from_bytes(data[:4], "big")
        brands = [data[i:i + 4] for i in range(8, min(max(size, 16), 256), 4) if i != 12]
        if any(b in AVIF_BRANDS for b in brands):
            return "avif"
        if any(b in HEIF_BRANDS for b in brands):
            return "heif"
        return None
    for magic, kind in SIGNATURES:
        if data.startswith(magic):
            return kind
    return None


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _walk(root: Path, skip: set[tuple[int, int]] = frozenset()):
    """Every entry under ``root``, into linked folders too, each real folder entered once; the folders whose
    (device, inode) is in ``skip`` are not entered."""
    seen: set[tuple[int, int]] = set(skip)

    def unreadable(exc: OSError) -> None:  # a folder not listed is said, not passed over
        log.warning("%s: folder not read (%s): its photos are left out", exc.filename, exc.strerror or exc)

    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable, followlinks=True):
        try:
            st = os.stat(dirpath)
        except OSError as exc:  # gone or unreadable since it was listed
            unreadable(exc)
            dirnames[:] = []
            continue
        if (st.st_dev, st.st_ino) in seen:  # reached again through a link: already listed
            dirnames[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirnames.sort()
        base = Path(dirpath)
        yield from (base / name for name in filenames)


def _folder_ids(folders: Sequence[str | os.PathLike]) -> set[tuple[int, int]]:
    ids = set()
    for folder in folders:
        try:
            st = os.stat(folder)
        except OSError:  # not made yet
            continue
        if stat.S_ISDIR(st.st_mode):
            ids.add((st.st_dev, st.st_ino))
    return ids


def find_images(folder: str | os.PathLike, recursive: bool = True, not_utf8: list[str] | None = None,
                skip: Sequence[str | os.PathLike] = ()) -> list[Path]:
    """The image files in ``folder`` (and its sub-folders when ``recursive``), sorted, by their
    ending (``IMAGE_SUFFIXES``). Hidden files and folders (``.DS_Store``, ``.thumbnails/``...) and
    ``SYSTEM_FILES`` are passed over; any other file is not silently dropped: a warning counts
    them by ending (camera raw files, PDFs...), since a photo in a format not read here would
    otherwise go unnoticed. So are images whose path is not valid UTF-8 (names from an archive made
    with another encoding): no table, log or report can hold such a name, so they are named in a
    warning, to be renamed, instead of failing the whole run. A linked folder is searched like any
    other (once, however many links lead to it, so a link to a parent cannot loop); a link whose
    target is gone is kept when its name is an image's, so the run reports it as a broken link
    instead of leaving the photo out without a word. A named pipe, socket or device is never opened
    (reading a pipe waits for a writer) and is counted in a warning. ``not_utf8``: a list the names that are not
    UTF-8 are added to (with ``\\xNN`` for their odd bytes), for the caller to report with its
    results; the warning is then the caller's to give. ``skip``: folders inside ``folder`` not to search
    (a command's own output folder; ``folder`` itself is never skipped)."""
    root = Path(folder)
    files, others, undecodable, special = [], Counter(), [], []
    skipped = _folder_ids(skip) - _folder_ids([root])
    for f in _walk(root, skipped) if recursive else root.iterdir():
        dangling = f.is_symlink() and not f.exists()
        if any(part.startswith(".") for part in f.relative_to(root).parts):
            continue
        if not (f.is_file() or dangling):
            if not f.is_dir():  # a named pipe, socket or device: reading one could wait for ever
                special.append(f)
            continue
        if not is_image_file(f):
            if f.name.lower() not in SYSTEM_FILES:
                others[f.suffix.lower() or "(no ending)"] += 1
            continue
        try:
            str(f).encode("utf-8")
        except UnicodeEncodeError:
            undecodable.append(os.fsencode(f).decode("utf-8", "backslashreplace"))
            continue
        files.append(f)
    if not_utf8 is not None:
        not_utf8.extend(undecodable)
    elif undecodable:
        log.warning("%s: %d image(s) not read: their file names are not UTF-8 (e.g. %s); rename them to UTF-8 "
                    "(for example with convmv) and run again", root, len(undecodable), undecodable[0])
    if others:
        common = sorted(others.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
        kinds = ", ".join(f"{n} {suffix}" for suffix, n in common)
        log.warning("%s: %d file(s) not read, not images by their ending (%s%s); images are %s", root,
                    sum(others.values()), kinds, ", ..." if len(others) > 5 else "",
                    " ".join(sorted(IMAGE_SUFFIXES)))
    if special:
        log.warning("%s: %d file(s) not read, not regular files (named pipes, sockets or devices; e.g. %s)", root,
                    len(special), os.fsencode(min(special)).decode("utf-8", "backslashreplace"))
    return sorted(files)


#: a path only Windows can open: a drive letter (C:\photos\a.jpg, D:/a.jpg) or a share (\\server\share\a.jpg)
_WINDOWS_PATH = re.compile(r"[A-Za-z]:[\\/]|\\\\[^\\]")


def windows_path(value: str) -> bool:
    """Whether ``value`` is an absolute Windows path on a machine that is not Windows (a table made on an
    analyst's PC, naming photos on its drive or a share): no file here has that name."""
    return os.name != "nt" and _WINDOWS_PATH.match(str(value).strip()) is not None


#: what to do about ``windows_path`` paths in a table
WINDOWS_PATH_ADVICE = ("write the paths as this machine reaches the photos (a share: where it is mounted here) or "
                       "relative to the table's folder")


def read_image_bytes(source: ImageSource, name: str, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """The raw bytes of an image file (or the bytes given), refusing empty and oversized data."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    else:
        path = Path(source)
        if "\0" in str(path):  # a table's cell from a damaged export; os.stat raises ValueError on it
            raise ImageLoadError(name, "its path holds a NUL character: no file has such a name")
        try:
            st = path.stat()
        except FileNotFoundError:
            if path.is_symlink():
                raise ImageLoadError(name, f"broken link: its target {os.readlink(path)} is missing") from None
            if windows_path(path):
                raise ImageLoadError(name, f"file not found: a Windows path, which this machine cannot open; "
                                           f"{WINDOWS_PATH_ADVICE}") from None
            raise ImageLoadError(name, "file not found") from None
        except OSError as exc:
            raise ImageLoadError(name, f"cannot read file ({exc.strerror or exc})") from None
        if stat.S_ISDIR(st.st_mode):
            raise ImageLoadError(name, "is a directory, not an image file")
        if not stat.S_ISREG(st.st_mode):  # reading a pipe waits for a writer, a device like /dev/zero never ends
            raise ImageLoadError(name, "not a regular file (a named pipe, socket or device): not read")
        size = st.st_size
        if size > max_bytes:
            raise ImageLoadError(name, f"file is {describe_size(size)}, over the limit of {describe_size(max_bytes)}")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ImageLoadError(name, f"cannot read file ({exc.strerror or exc})") from None
    if not data:
        raise ImageLoadError(name, "empty file (0 bytes)")
    if len(data) > max_bytes:
        raise ImageLoadError(name, f"data is {describe_size(len(data))}, over the limit of {describe_size(max_bytes)}")
    return data


#: the modes whose colour profile is applied (others, such as grey or palette images, are read as sRGB)
_PROFILED_MODES = {"RGB": "RGB", "RGBA": "RGBA", "CMYK": "RGB"}


@functools.lru_cache(maxsize=32)
def _srgb_transform(icc: bytes, mode: str):
    """The transform from the colour space ``icc`` describes to sRGB for images of ``mode``; None when
    the profile is sRGB's own or cannot be read (the image is then read as sRGB, as an untagged one)."""
    try:
        from PIL import ImageCms

        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if (source.profile.profile_description or "").strip().lower().startswith("srgb"):
            return None
        # perceptual intent (0); no one-pixel cache (cmsFLAGS_NOCACHE, 0x40): LittleCMS writes that cache as it
        # transforms, so a cached transform shared by the server's inference threads would race
        return ImageCms.buildTransform(source, ImageCms.createProfile("sRGB"), mode, _PROFILED_MODES[mode],
                                       renderingIntent=0, flags=0x40)
    except (ImportError, OSError, ValueError, TypeError, AttributeError) as exc:
        log.debug("colour profile not applied (%s)", exc)
        return None


def _to_srgb(img: Image.Image) -> Image.Image:
    """``img`` in sRGB when its file carries a colour profile of another space, else as it is."""
    icc = img.info.get("icc_profile")
    if not icc or img.mode not in _PROFILED_MODES:
        return img
    transform = _srgb_transform(bytes(icc), img.mode)
    if transform is None:
        return img
    from PIL import ImageCms

    try:
        out = ImageCms.applyTransform(img, transform)
    except (OSError, ValueError) as exc:  # ImageCms.PyCMSError is an OSError
        log.debug("colour profile not applied (%s)", exc)
        return img
    out.info = {k: v for k, v in img.info.items() if k != "icc_profile"}  # the pixels are sRGB's now
    return out


def _to_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        # High bit depth greyscale: rescale to 0..255 instead of clipping.
        arr = np.asarray(img, dtype=np.float64)
        if mode.startswith("I;16"):
            arr = arr / 65535.0
        else:
            lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
            arr = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
        grey = np.clip(np.round(np.nan_to_num(arr) * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
        mode = img.mode
    elif mode in ("PA", "La"):
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "RGBa"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    # L, 1, CMYK, YCbCr, LAB, HSV, RGBX ...
    return img.convert("RGB")


#: mean |R-G| + |G-B| (0-255 scale) under which a photo counts as black and white; JPEG
#: chroma noise in a grey photo stays around 1, the palest colour photos score over 5
GREYSCALE_TOLERANCE = 3.0


def is_greyscale(img: Image.Image, tolerance: float = GREYSCALE_TOLERANCE) -> bool:
    """True when an RGB image carries no colour (a black-and-white photo, whatever the
    mode of its file): the channels of a 64-px thumbnail differ by less than ``tolerance``."""
    small = np.asarray(img.convert("RGB").resize((64, 64)), dtype=np.int16)
    diff = np.abs(small[..., 0] - small[..., 1]).mean() + np.abs(small[..., 1] - small[..., 2]).mean()
    return bool(diff < tolerance)


def load_image(
    source: ImageSource,
    *,
    name: str | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int = DEFAULT_MIN_SIDE,
    draft_size: tuple[int, int] | None = None,
) -> Image.Image:
    """Read ``source`` (path or bytes) into an upright 8-bit RGB image.

    ``draft_size`` lets the JPEG decoder scale down by 1/2, 1/4 or 1/8 while
    decoding when the image is at least twice that size: several times faster, and
    close to, but not the same as, a full decode resized later (a model's input differs
    a little), so every reader of a photo for one model passes that model's
    ``Preprocessing.draft_size``. ``img.info["source_size"]`` keeps the file's
    (width, height) as stored, ``img.info["upright_size"]`` as the photo stands, and
    ``img.info["frames"]`` the number of frames or pages of a file that holds several
    (only the first is read). Raises ``ImageLoadError``.
    """
    if name is None:
        name = "<bytes>" if isinstance(source, (bytes, bytearray, memoryview)) else str(source)
    data = read_image_bytes(source, name, max_bytes)
    try:
        with warnings.catch_warnings():
            # Pillow's complaints about a file's metadata ("Corrupt EXIF data", "Tag data larger than
            # file"): the picture still decodes, and a scan of thousands of web photos would print them
            # unattributed between its progress lines; a picture that does not decode raises below
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = _open(data, draftable=draft_size is not None)
            width, height = img.size
            if width <= 0 or height <= 0:
                raise ImageLoadError(name, f"invalid image size {width}x{height}")
            if min(width, height) < min_side:
                raise ImageLoadError(
                    name, f"image is {width}x{height} pixels, too small to judge (under {min_side} px on a side)"
                )
            # a JPEG read at draft scale decodes at down to 1/8 of its sides, in that much less memory and time:
            # a phone's 108 or 200 megapixel photo, a museum's master, are read (up to DRAFT_JPEG_FACTOR times
            # the limit); whatever is decoded stays within it
            drafted = draft_size is not None and img.format == "JPEG"
            limit = max_pixels * (DRAFT_JPEG_FACTOR if drafted else 1)
            if width * height > limit:
                raise ImageLoadError(
                    name,
                    f"image claims {width}x{height} pixels, over the {limit / 1e6:.0f} megapixel limit "
                    f"{'of a JPEG ' if drafted else ''}(possible decompression bomb)",
                )
            if drafted:
                img.draft("RGB", draft_size)
                if img.size[0] * img.size[1] > max_pixels:  # a draft size asking for most of a large photo
                    raise ImageLoadError(name, f"image claims {width}x{height} pixels, over the "
                                               f"{max_pixels / 1e6:.0f} megapixel limit at the size it is read")
            img.load()
            # an animated GIF/WebP, a multi-page TIFF; not a camera's MPO JPEG, whose second image is
            # a preview or the other half of a stereo pair of the same scene
            frames = 1 if img.format == "MPO" else _frame_count(img)
            stored = img.size  # after draft scaling
            img = _to_rgb(ImageOps.exif_transpose(_to_srgb(img)))
            # the file's own size (before draft scaling; width and height as stored, not rotated)
            img.info["source_size"] = (width, height)
            # and as the photo stands upright (turned a quarter by its EXIF orientation, or not)
            turned = stored[0] != stored[1] and img.size == stored[::-1]
            img.info["upright_size"] = (height, width) if turned else (width, height)
            if frames > 1:  # only the first is read: said with every decision (data.quality)
                img.info["frames"] = frames
            return img
    except ImageLoadError:
        raise
    except UnidentifiedImageError:
        raise ImageLoadError(name, "not a recognised image format") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # refused by Pillow as it opened the header (over its MAX_IMAGE_PIXELS, whose warning is an error
        # here): said as our own limit is, with the limit in force, not Pillow's wording
        claimed = re.search(r"\((\d+) pixels\)", str(exc))
        limit = min(max_pixels, Image.MAX_IMAGE_PIXELS or max_pixels)
        what = f"{int(claimed.group(1)) / 1e6:,.0f} megapixels" if claimed else "more pixels than that"
        raise ImageLoadError(name, f"image claims {what}, over the {limit / 1e6:.0f} megapixel limit "
                                   "(possible decompression bomb)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "truncated" in reason.lower() or isinstance(exc, EOFError):
            reason = f"truncated or incomplete image data ({reason})"
        else:
            reason = f"corrupt image data ({reason})"
        raise ImageLoadError(name, reason) from None
    except MemoryError:
        raise ImageLoadError(name, "not enough memory to decode image") from None
    except Exception as exc:  # a decoder's own failure on hostile data (AVIF's RuntimeError, a GIF's IndexError...)
        detail = str(exc).splitlines()[0] if str(exc) else ""
        raise ImageLoadError(name, f"corrupt image data (the decoder failed: {type(exc).__name__}"
                                   f"{': ' + detail if detail else ''})") from None


def _open(data: bytes, draftable: bool) -> Image.Image:
    """``Image.open`` of ``data``; a JPEG to be read at draft scale is opened past Pillow's own pixel limit
    (``MAX_IMAGE_PIXELS``, 89 megapixels, which it checks on the size a file claims), since ``load_image`` checks
    the size it will decode. Pillow's limit is left as it is for any other code in the process."""
    try:
        return Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        if not (draftable and data[:3] == b"\xff\xd8\xff"):
            raise
    from PIL import JpegImagePlugin

    return JpegImagePlugin.JpegImageFile(io.BytesIO(data))  # as Image.open makes it, without that check


def _frame_count(img: Image.Image) -> int:
    """Frames or pages in the file; 1 when the frames after the first cannot be read (corrupt data
    after a good first frame), which is then all the file has to judge."""
    try:
        return int(getattr(img, "n_frames", 1) or 1)
    except Exception:
        return 1
