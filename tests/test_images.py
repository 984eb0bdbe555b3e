import io
import os
import struct
import warnings

import numpy as np
import pytest
from PIL import Image

from artsentry.data.images import ImageLoadError, describe_size, find_images, image_format, is_greyscale, load_image

from .conftest import bomb_png, jpeg_bytes, object_photo

#: sRGB's primaries as an ICC profile states them (D50-adapted XYZ)
SRGB_COLORANTS = ((0.4361, 0.2225, 0.0139), (0.3851, 0.7169, 0.0971), (0.1431, 0.0606, 0.7141))


def icc_profile(name: str, colorants=SRGB_COLORANTS, gamma: float = 2.2) -> bytes:
    """A minimal ICC v2 RGB display profile (matrix and gamma curves): the colour profile a camera or
    phone embeds, written out here since Pillow can build only sRGB's own."""
    def s15(v):
        return struct.pack(">i", int(round(v * 65536)))

    def xyz(v):
        return b"XYZ " + bytes(4) + b"".join(s15(c) for c in v)

    ascii_name = name.encode("ascii") + b"\0"
    desc = b"desc" + bytes(4) + struct.pack(">I", len(ascii_name)) + ascii_name + bytes(4 + 4 + 2 + 1 + 67)
    curve = b"curv" + bytes(4) + struct.pack(">IH", 1, int(round(gamma * 256))) + bytes(2)
    tags = [(b"desc", desc), (b"wtpt", xyz((0.9642, 1.0, 0.8249))), (b"rXYZ", xyz(colorants[0])),
            (b"gXYZ", xyz(colorants[1])), (b"bXYZ", xyz(colorants[2])), (b"rTRC", curve), (b"gTRC", curve),
            (b"bTRC", curve), (b"cprt", b"text" + bytes(4) + b"none\0\0\0\0")]
    offset = 128 + 4 + 12 * len(tags)
    table, data = b"", b""
    for sig, body in tags:
        body += bytes(-len(body) % 4)
        table += sig + struct.pack(">II", offset + len(data), len(body))
        data += body
    size = offset + len(data)
    header = (struct.pack(">I", size) + b"lcms" + bytes([2, 0x10, 0, 0]) + b"mntr" + b"RGB " + b"XYZ "
              + struct.pack(">6H", 2026, 1, 1, 0, 0, 0) + b"acsp" + bytes(4 + 4 + 4 + 4 + 8 + 4)
              + s15(0.9642) + s15(1.0) + s15(0.8249) + bytes(4) + bytes(44))
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + data


@pytest.mark.parametrize(
    "name, reason",
    [
        ("zero_bytes.jpg", "empty file"),
        ("truncated.jpg", "truncated or incomplete image data (image file is truncated"),
        ("text.jpg", "not a recognised image format"),
        ("bomb.png", "decompression bomb"),
        ("tracking_pixel.gif", "1x1 pixels, too small to judge"),
    ],
)
def test_unreadable_files_raise_one_line_error_naming_the_file(hostile_dir, name, reason):
    path = hostile_dir / name
    with pytest.raises(ImageLoadError) as info:
        load_image(path)
    msg = str(info.value)
    assert msg.startswith(str(path) + ": ")
    assert reason in msg
    assert "\n" not in msg


@pytest.mark.parametrize("name", ["cmyk.jpg", "grey16.png", "palette_transparent.png", "good.jpg"])
def test_odd_modes_become_8bit_rgb(hostile_dir, name):
    img = load_image(hostile_dir / name)
    assert img.mode == "RGB"
    assert img.size == (120, 90)


def test_cmyk_colours_survive(hostile_dir):
    rgb = np.asarray(load_image(hostile_dir / "cmyk.jpg"), dtype=float)
    ref = np.asarray(load_image(hostile_dir / "good.jpg"), dtype=float)
    assert np.abs(rgb - ref).mean() < 12  # same picture, not inverted or black


def test_16bit_grey_is_rescaled_not_clipped(hostile_dir):
    arr = np.asarray(load_image(hostile_dir / "grey16.png"))
    assert arr.min() == 0 and arr.max() == 255
    # a linear ramp: the middle of the image is mid-grey, not saturated white
    assert 100 < arr[45, 60, 0] < 160


def test_transparency_is_composited_on_white():
    rgba = Image.new("RGBA", (40, 40), (255, 0, 0, 0))
    rgba.putpixel((5, 5), (255, 0, 0, 255))
    buf = io.BytesIO()
    rgba.save(buf, format="PNG")
    img = load_image(buf.getvalue())
    assert img.getpixel((0, 0)) == (255, 255, 255)
    assert img.getpixel((5, 5)) == (255, 0, 0)


def test_a_palette_photos_transparent_colour_becomes_white(hostile_dir):
    """The palette entry marked transparent shows the page behind it (white), not the colour stored
    under it: read as RGB without the mark, a shop's cut-out photo would sit on that colour instead."""
    path = hostile_dir / "palette_transparent.png"
    with Image.open(path) as pal:
        index = np.asarray(pal)
        stored = pal.convert("RGB").getpixel(tuple(int(v) for v in np.argwhere(index == 0)[0][::-1]))
    rgb = np.asarray(load_image(path))
    assert (index == 0).any() and (index != 0).any() and stored != (255, 255, 255)
    assert (rgb[index == 0] == 255).all()
    assert not (rgb[index != 0] == 255).all(axis=1).any()


def test_32bit_and_float_grey_are_stretched_to_their_own_range():
    """A 32-bit integer or float grey image (scientific TIFFs, depth maps) has no fixed white: its
    own darkest value becomes black and its brightest white; a flat one is black, not an error."""
    ramp = np.linspace(1000, 5000, 120 * 90).reshape(90, 120)
    for arr in (ramp.astype(np.int32), ramp.astype(np.float32)):
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="TIFF")
        img = np.asarray(load_image(buf.getvalue()))
        assert img.min() == 0 and img.max() == 255
        assert abs(int(img[45, 60, 0]) - 128) <= 2  # the middle value maps to mid-grey
    buf = io.BytesIO()
    Image.fromarray(np.full((90, 120), 7.5, dtype=np.float32)).save(buf, format="TIFF")
    assert (np.asarray(load_image(buf.getvalue())) == 0).all()


def test_exif_orientation_is_applied():
    img = Image.new("RGB", (80, 40), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif)
    assert load_image(buf.getvalue()).size == (40, 80)


def test_size_limits(tmp_path):
    data = jpeg_bytes(object_photo((10, 10, 10), size=(200, 200)))
    with pytest.raises(ImageLoadError, match="megapixel limit"):
        load_image(data, max_pixels=100 * 100)
    assert load_image(data, max_pixels=200 * 200).size == (200, 200)  # the limit itself is allowed
    with pytest.raises(ImageLoadError, match="megapixel limit"):
        load_image(data, max_pixels=200 * 200 - 1)
    # bytes and files alike: the limit itself is allowed, one byte over it is not, and the
    # message gives the size and the limit in the same unit
    path = tmp_path / "photo.jpg"
    path.write_bytes(data)
    n = len(data)
    for source, what in ((data, "data"), (path, "file")):
        assert load_image(source, max_bytes=n).size == (200, 200)
        with pytest.raises(ImageLoadError, match=rf": {what} is {n:,} bytes, over the limit of {n - 1:,} bytes$"):
            load_image(source, max_bytes=n - 1)
    big = tmp_path / "big.jpg"
    with open(big, "wb") as f:  # sparse: refused by its size, before a byte of it is read
        f.truncate(60_500_000)
    with pytest.raises(ImageLoadError, match=r"big\.jpg: file is 60\.5 MB, over the limit of 50\.0 MB$"):
        load_image(big)
    with pytest.raises(ImageLoadError) as err:  # over Pillow's own limit too: refused as it opens, said alike
        load_image(bomb_png(), name="upload.png")
    assert str(err.value) == ("upload.png: image claims 900 megapixels, over the 64 megapixel limit "
                              "(possible decompression bomb)")
    with pytest.raises(ImageLoadError) as err:  # between Pillow's warning and its error
        load_image(bomb_png(10000, 12000), name="upload.png")
    assert str(err.value).startswith("upload.png: image claims 120 megapixels, over the 64 megapixel limit")
    with pytest.raises(ImageLoadError) as err:  # over ours only
        load_image(bomb_png(10000, 8000), name="upload.png")
    assert str(err.value) == ("upload.png: image claims 10000x8000 pixels, over the 64 megapixel limit "
                              "(possible decompression bomb)")


def _jpeg_claiming(width: int, height: int) -> bytes:
    """A small JPEG whose frame header claims ``width`` x ``height`` pixels (its data ends long before)."""
    data = bytearray(jpeg_bytes(object_photo((10, 10, 10), size=(64, 64))))
    sof = data.find(b"\xff\xc0")
    data[sof + 5:sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


def test_a_large_jpeg_read_at_draft_scale_is_read_and_a_bomb_still_refused():
    """A phone's 108 or 200 megapixel photo, a museum's master scan: refused as a possible decompression bomb
    over 64 megapixels, although read at draft scale (1/8 of its sides) it decodes in the memory of a photo 64
    times smaller. A JPEG read so may claim four times the limit; what is decoded stays within it."""
    phone = _jpeg_claiming(12000, 9000)  # 108 megapixels
    img = load_image(phone, name="phone.jpg", draft_size=(512, 512))
    assert img.size == (1500, 1125) and img.info["source_size"] == (12000, 9000)
    with pytest.raises(ImageLoadError, match=r"phone.jpg: image claims 108 megapixels, over the 64 megapixel limit "
                                              r"\(possible decompression bomb\)$"):
        load_image(phone, name="phone.jpg")  # read whole: as before
    with pytest.raises(ImageLoadError, match=r"image claims 12000x9000 pixels, over the 64 megapixel limit at the "
                                              r"size it is read$"):
        load_image(phone, name="phone.jpg", draft_size=(9000, 9000))  # a draft that would decode most of it
    with pytest.raises(ImageLoadError, match=r"image claims 20000x20000 pixels, over the 256 megapixel limit of a "
                                              r"JPEG \(possible decompression bomb\)$"):
        load_image(_jpeg_claiming(20000, 20000), draft_size=(512, 512))
    with pytest.raises(ImageLoadError, match="over the 64 megapixel limit"):  # not a JPEG: no draft scale
        load_image(bomb_png(10000, 8000), draft_size=(512, 512))


def test_sizes_are_said_in_decimal_units():
    assert [describe_size(n) for n in (0, 9_999, 10_000, 48_250, 999_949, 999_950, 50_000_000, 60_512_345)] == [
        "0 bytes", "9,999 bytes", "10.0 kB", "48.2 kB", "999.9 kB", "1.0 MB", "50.0 MB", "60.5 MB"]


def test_the_smallest_side_read_is_min_side():
    for size, readable in (((32, 400), True), ((400, 31), False), ((31, 31), False)):
        data = jpeg_bytes(Image.new("RGB", size, (120, 100, 90)))
        if readable:
            assert load_image(data).size == size
        else:
            with pytest.raises(ImageLoadError, match=f"^<bytes>: image is {size[0]}x{size[1]} pixels, too small"):
                load_image(data)
    assert load_image(jpeg_bytes(Image.new("RGB", (8, 8))), min_side=1).size == (8, 8)


def test_missing_and_directory(tmp_path):
    with pytest.raises(ImageLoadError, match="file not found"):
        load_image(tmp_path / "nope.jpg")
    with pytest.raises(ImageLoadError, match="directory"):
        load_image(tmp_path)


def test_draft_decoding_keeps_at_least_the_requested_size():
    data = jpeg_bytes(object_photo((120, 100, 90), size=(600, 450)))
    img = load_image(data, draft_size=(224, 224))
    assert img.size[0] >= 224 and img.size[1] >= 224
    assert img.size[0] < 600  # decoded at reduced scale


def test_black_and_white_photos_are_told_from_pale_colour_ones():
    pale = Image.new("RGB", (160, 120), (236, 232, 226))  # a cream ivory on an off-white backdrop
    pale.paste((224, 212, 180), (40, 30, 120, 90))
    grey = object_photo((150, 150, 150)).convert("L")
    assert not is_greyscale(load_image(jpeg_bytes(pale, quality=60)))
    assert is_greyscale(load_image(jpeg_bytes(grey, quality=60)))  # one-channel JPEG
    assert is_greyscale(load_image(jpeg_bytes(grey.convert("RGB"), quality=40)))  # grey stored as RGB: chroma noise only


def test_a_colour_in_one_channel_pair_alone_is_colour():
    """Either channel difference alone makes a photo colour: red against green and blue (a terracotta
    pot), blue against red and green (a blue-and-white bowl's glaze)."""
    for colour in ((200, 100, 100), (100, 100, 200), (100, 200, 200)):
        assert not is_greyscale(Image.new("RGB", (80, 60), colour)), colour
    assert is_greyscale(Image.new("RGB", (80, 60), (120, 121, 120)))


def _ftyp(major: bytes, *compatible: bytes, size: int | None = None) -> bytes:
    """The opening box of an ISO media file (HEIC, AVIF, MP4): size, 'ftyp', major brand, minor
    version, compatible brands; then some bytes of what would follow."""
    body = major + b"\x00\x00\x00\x00" + b"".join(compatible)
    return (size or 8 + len(body)).to_bytes(4, "big") + b"ftyp" + body + b"\x00\x00\x00\x08mdat" + bytes(64)


def test_the_format_is_read_from_the_bytes_not_the_name():
    """What the server accepts and a kept copy's ending come from this: the format the bytes are."""
    photo = object_photo((200, 180, 150), size=(80, 60))
    for fmt, kind in (("JPEG", "jpeg"), ("PNG", "png"), ("GIF", "gif"), ("BMP", "bmp"), ("TIFF", "tiff"),
                      ("WEBP", "webp"), ("AVIF", "avif"), ("HEIF", "heif")):
        buf = io.BytesIO()
        photo.save(buf, format=fmt)
        assert image_format(buf.getvalue()) == kind, fmt
    assert image_format(_ftyp(b"mif1", b"mif1", b"heic")) == "heif"
    assert image_format(_ftyp(b"mif1", b"avif", b"mif1")) == "avif"  # an AVIF says so among its brands
    assert image_format(_ftyp(b"isom", b"isom", b"mp41")) is None  # a video
    assert image_format(_ftyp(b"isom", b"mp41", b"heic", size=20)) is None  # "heic" lies past the box's end
    assert image_format(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(32)) is None  # a sound file
    assert image_format(b"<!DOCTYPE html>") is None and image_format(b"") is None


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_phone_and_web_formats_are_read_upright(fmt):
    """HEIC (what phones save) and AVIF (what web shops serve): the same picture as a JPEG of it,
    turned by its EXIF orientation exactly once."""
    photo = object_photo((200, 180, 150), size=(160, 120), seed=3)
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    photo.save(buf, format=fmt, quality=90, exif=exif.tobytes())
    img = load_image(buf.getvalue(), name=f"phone.{fmt.lower()}")
    assert img.mode == "RGB" and img.size == (120, 160)
    upright = np.asarray(photo.transpose(Image.Transpose.ROTATE_270), dtype=float)
    assert np.abs(np.asarray(img, dtype=float) - upright).mean() < 6


def test_a_decoders_own_failure_is_a_named_error_not_a_crash():
    """Found by mutating valid files (2026-12-05): the AVIF decoder fails with RuntimeError, which no
    OSError branch caught, so one corrupt AVIF among a folder's photos ended `predict` or `screen`."""
    buf = io.BytesIO()
    object_photo((200, 180, 150)).save(buf, format="AVIF")
    data = bytearray(buf.getvalue())
    at = data.find(b"pitm") + 8  # the primary item's id: point it at an item the file does not have
    data[at:at + 2] = b"\x77\x77"
    with pytest.raises(ImageLoadError) as err:
        load_image(bytes(data), name="listing_17.avif")
    assert str(err.value).startswith("listing_17.avif: corrupt image data (the decoder failed: RuntimeError")
    assert "\n" not in str(err.value)


def test_broken_metadata_is_read_past_in_silence():
    """A camera-maker tag claiming 16 MB in a 2 kB file: Pillow warns and skips it; the picture is
    read, turned by its (intact) orientation tag, and nothing is printed between a scan's progress lines."""
    exif = Image.Exif()
    exif[0x010F] = "A camera maker"
    exif[0x0112] = 6
    raw = bytearray(exif.tobytes())
    at = raw.find(b"\x01\x0f\x00\x02")  # the maker tag's entry (big-endian), then its byte count
    raw[at + 4:at + 8] = (0x00FFFFFF).to_bytes(4, "big")
    data = jpeg_bytes(object_photo((200, 180, 150)), exif=bytes(raw))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        img = load_image(data)
    assert img.size == (90, 120)  # upright
    assert [str(w.message) for w in seen] == []


def test_a_gif_cut_after_its_first_frame_is_judged_by_that_frame():
    """Counting the frames of a GIF whose second frame is cut off raised IndexError after the first
    frame had decoded: the file has one readable picture, and that is what is judged."""
    photo = object_photo((200, 180, 150), seed=5)
    buf = io.BytesIO()
    photo.save(buf, format="GIF")
    whole = buf.getvalue()
    cut = whole[:-1] + b"\x2c" + bytes(9)  # the trailer replaced by a second frame's bare descriptor
    img = load_image(cut, name="cut.gif")
    assert "frames" not in img.info  # one picture: no "several frames" warning
    assert np.array_equal(np.asarray(img), np.asarray(load_image(whole)))


SWAPPED = (SRGB_COLORANTS[1], SRGB_COLORANTS[0], SRGB_COLORANTS[2])


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_a_photo_in_another_colour_space_is_read_in_srgb(fmt):
    """A phone's Display P3 or a camera's Adobe RGB photo states its colours in its own space, and says
    so in its embedded ICC profile; read as sRGB, such colours come out wrong (wide-gamut ones greyer).
    A profile whose red and green primaries are swapped makes it plain: the stored red (200, 40, 40) is
    a green, and is read as one. Untagged, sRGB-tagged and unreadable profiles read the numbers as
    they are; the profile does not follow the sRGB pixels."""
    def stored(colour, mode="RGB", **info):
        buf = io.BytesIO()
        Image.new(mode, (64, 64), colour).save(buf, fmt, quality=100, **info)
        return buf.getvalue()

    def near(img, expected, tol):
        return np.abs(np.asarray(img.getpixel((20, 20)), float) - expected).max() <= tol

    swapped = load_image(stored((200, 40, 40), icc_profile=icc_profile("Swapped red and green", SWAPPED)))
    assert near(swapped, (40, 200, 40), 8) and "icc_profile" not in swapped.info
    assert near(load_image(stored((200, 40, 40))), (200, 40, 40), 3)  # untagged: sRGB
    srgb = icc_profile("sRGB IEC61966-2.1", gamma=1.0)  # named sRGB: taken at its word, not applied
    assert near(load_image(stored((200, 40, 40), icc_profile=srgb)), (200, 40, 40), 3)
    plain = icc_profile("Test RGB")  # sRGB's primaries, a gamma of 2.2: nearly the same numbers
    assert near(load_image(stored((200, 120, 60), icc_profile=plain)), (200, 120, 60), 8)
    broken = icc_profile("Broken")[:150]  # cut short: unreadable, so read as untagged
    assert near(load_image(stored((200, 40, 40), icc_profile=broken)), (200, 40, 40), 3)
    if fmt != "JPEG":  # transparency still composited on white after the profile is applied
        rgba = load_image(stored((200, 40, 40, 0), "RGBA", icc_profile=icc_profile("Swapped", SWAPPED)))
        assert near(rgba, (255, 255, 255), 1)
        half = load_image(stored((200, 40, 40, 255), "RGBA", icc_profile=icc_profile("Swapped", SWAPPED)))
        assert near(half, (40, 200, 40), 8)


def test_a_file_of_two_frames_says_so():
    """Two frames are already several: the count is kept for the warning that only the first is judged."""
    a, b = object_photo((200, 180, 150), seed=1), object_photo((90, 90, 160), seed=2)
    buf = io.BytesIO()
    a.save(buf, format="GIF", save_all=True, append_images=[b])
    assert load_image(buf.getvalue()).info["frames"] == 2


def test_folder_scans_say_what_they_pass_over(tmp_path, caplog):
    """Every image ending is found (.jfif, .heic too); a file in a format not read is counted in a
    warning, never dropped without a word; hidden and system files are passed over quietly."""
    photo = object_photo((200, 180, 150), size=(80, 60))
    (tmp_path / "shop" / ".thumbnails").mkdir(parents=True)
    photo.save(tmp_path / "shop" / "a.jpg")
    photo.save(tmp_path / "shop" / "b.JFIF", format="JPEG")
    photo.save(tmp_path / "c.heic", format="HEIF")
    photo.save(tmp_path / "shop" / ".thumbnails" / "a.png")  # a viewer's thumbnail cache
    for name in ("x.cr2", "y.cr2", "notes.txt", "Thumbs.db", ".DS_Store", "README"):
        (tmp_path / "shop" / name).write_bytes(b"...")
    with caplog.at_level("WARNING"):
        found = find_images(tmp_path)
    assert [f.relative_to(tmp_path).as_posix() for f in found] == ["c.heic", "shop/a.jpg", "shop/b.JFIF"]
    assert "4 file(s) not read, not images by their ending (2 .cr2, 1 (no ending), 1 .txt)" in caplog.text
    # the five most common kinds are named; a sixth is "..."
    added = []
    for endings, said in (((".pdf", ".mov"), "6 file(s) not read, not images by their ending (2 .cr2, 1 (no ending), "
                                            "1 .mov, 1 .pdf, 1 .txt); images are"),
                          ((".psd",), "7 file(s) not read, not images by their ending (2 .cr2, 1 (no ending), 1 .mov, "
                                      "1 .pdf, 1 .psd, ...); images are")):
        for e in endings:
            added.append(tmp_path / "shop" / f"z{e}")
            added[-1].write_bytes(b"...")
        caplog.clear()
        with caplog.at_level("WARNING"):
            find_images(tmp_path)
        assert said in caplog.text
    for f in added:
        f.unlink()
    assert all(load_image(f).size == (80, 60) for f in found)
    caplog.clear()
    assert find_images(tmp_path / "shop", recursive=False) == [tmp_path / "shop" / "a.jpg", tmp_path / "shop" / "b.JFIF"]
    assert "4 file(s) not read" in caplog.text
    # a name from an archive made with another encoding (Latin-1 "café.jpg"): no table can hold it,
    # so it is named in a warning instead of failing the run that lists it
    photo.save(os.fsdecode(bytes(tmp_path / "shop") + b"/caf\xe9.jpg"), format="JPEG")
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert [f.name for f in find_images(tmp_path / "shop")] == ["a.jpg", "b.JFIF"]
    assert "1 image(s) not read: their file names are not UTF-8 (e.g. " in caplog.text
    assert "shop/caf\\xe9.jpg); rename them" in caplog.text
    from artsentry.data.manifest import read_manifest
    from artsentry.screen import read_listings

    assert len(read_listings(tmp_path / "shop")) == 2  # a screen of the folder: it once failed here, whole
    assert len(read_manifest(tmp_path)[0]) == 2  # a labelled folder (label "shop")


def test_folder_scans_follow_linked_folders_and_report_broken_links(tmp_path):
    """A linked folder (seized photos kept on another disk) is searched, once however many links
    lead to it, and a link back to a parent does not loop; a link whose target is gone stays in the
    list and fails by name, so the run reports it instead of leaving the photo out unsaid."""
    photo = object_photo((200, 180, 150), size=(80, 60))
    (tmp_path / "elsewhere").mkdir()
    photo.save(tmp_path / "elsewhere" / "far.jpg")
    shop = tmp_path / "shop"
    (shop / "sub").mkdir(parents=True)
    photo.save(shop / "a.jpg")
    (shop / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (shop / "again").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (shop / "sub" / "up").symlink_to(shop, target_is_directory=True)
    (shop / "gone.jpg").symlink_to(tmp_path / "deleted.jpg")
    (shop / "gone.txt").symlink_to(tmp_path / "deleted.txt")
    found = [f.relative_to(shop).as_posix() for f in find_images(shop)]
    assert found == ["a.jpg", "again/far.jpg", "gone.jpg"]
    with pytest.raises(ImageLoadError, match=r"gone\.jpg: broken link: its target .*deleted\.jpg is missing"):
        load_image(shop / "gone.jpg")
    assert [f.name for f in find_images(shop, recursive=False)] == ["a.jpg", "gone.jpg"]


def test_folder_scans_name_what_is_not_a_regular_file(tmp_path, caplog):
    """A named pipe called .jpg (left by a capture tool) is not opened, since reading one waits
    for a writer for ever, and not passed over unsaid either: a warning counts and names it."""
    object_photo((200, 180, 150), size=(80, 60)).save(tmp_path / "a.jpg")
    (tmp_path / "sub").mkdir()
    os.mkfifo(tmp_path / "sub" / "feed.jpg")
    os.mkfifo(tmp_path / "pipe")
    for recursive, count in ((True, 2), (False, 1)):
        caplog.clear()
        with caplog.at_level("WARNING"):
            assert [f.name for f in find_images(tmp_path, recursive=recursive)] == ["a.jpg"]
        assert f"{count} file(s) not read, not regular files (named pipes, sockets or devices; e.g. " in caplog.text
        assert "not images by their ending" not in caplog.text
    assert "pipe)" in caplog.text


def test_a_named_pipe_given_as_a_photo_fails_by_name_at_once(tmp_path):
    """A FIFO named as a photo (``predict feed.jpg``, a table row naming one) is refused before it is opened:
    opening it waited for a writer for ever, stalling the whole batch."""
    import threading

    os.mkfifo(tmp_path / "feed.jpg")
    raised: list[Exception] = []

    def load():
        try:
            load_image(tmp_path / "feed.jpg")
        except ImageLoadError as exc:
            raised.append(exc)

    reader = threading.Thread(target=load, daemon=True)  # left blocked, not joined, if the refusal regresses
    reader.start()
    reader.join(timeout=20)
    assert not reader.is_alive(), "load_image waited on the pipe"
    assert [str(e) for e in raised] == [f"{tmp_path / 'feed.jpg'}: not a regular file (a named pipe, socket or "
                                        "device): not read"]


def test_a_path_too_long_for_the_file_system_fails_by_name_with_the_reason(tmp_path):
    """A table's image cell can name any path: one longer than a file name may be is one line with the
    system's reason, not a crash of the batch."""
    path = tmp_path / ("x" * 300 + ".jpg")
    with pytest.raises(ImageLoadError) as raised:
        load_image(path)
    assert str(raised.value) == f"{path}: cannot read file (File name too long)"


def test_a_path_holding_a_nul_character_fails_by_name_not_with_a_valueerror(tmp_path):
    """A damaged table's cell can hold a NUL character, which no file name can: os.stat raised ValueError
    ('embedded null byte'), which stopped a whole screen and register import naming no row."""
    path = str(tmp_path / "a\0b.jpg")
    with pytest.raises(ImageLoadError) as raised:
        load_image(path)
    assert str(raised.value) == f"{path}: its path holds a NUL character: no file has such a name"
