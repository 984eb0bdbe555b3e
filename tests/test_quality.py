"""Photo-quality warnings (data.quality): blur, noise and small photos are named; sharp ones are not."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFilter
from skimage import data as skdata

from artsentry.data import quality as Q
from artsentry.data.quality import assess_quality

from .conftest import require_met_ivory


def _sharp_photos() -> list[Image.Image]:
    # natural photos with crisp edges (sharpness 0.17-0.21 here, the limit is 0.114)
    return [Image.fromarray(skdata.coffee()).convert("RGB"), Image.fromarray(skdata.rocket()).convert("RGB")]


def _noisy(img: Image.Image, sigma: float, seed: int = 0) -> Image.Image:
    arr = np.asarray(img, np.float32)
    noise = np.random.default_rng(seed).normal(0, sigma, arr.shape)
    return Image.fromarray(np.clip(arr + noise, 0, 255).astype(np.uint8), "RGB")


@pytest.mark.parametrize("i", [0, 1])
def test_sharp_photo_has_no_warning_and_its_blurred_copy_has_one(i):
    img = _sharp_photos()[i]
    sharp = assess_quality(img)
    assert sharp.warnings == ()
    assert sharp.sharpness > Q.SHARPNESS_MIN + 0.04
    blurred = assess_quality(img.filter(ImageFilter.GaussianBlur(3)))
    assert blurred.sharpness < Q.SHARPNESS_MIN
    assert [w for w in blurred.warnings if w.startswith("little fine detail")]
    assert not [w for w in blurred.warnings if w.startswith(("grainy", "small"))]


def test_contrast_and_brightness_do_not_move_sharpness():
    img = _sharp_photos()[1]
    hazy = Image.blend(img, Image.new("RGB", img.size, (220, 220, 220)), 0.5)  # half the contrast
    dim = Image.fromarray((np.asarray(img, np.float32) * 0.5).astype(np.uint8), "RGB")
    base = assess_quality(img)
    for changed in (hazy, dim):
        assert abs(assess_quality(changed).sharpness - base.sharpness) < 0.02
    assert assess_quality(hazy).warnings == ()
    # ... but half the exposure leaves the brightest parts dim: that is its own warning
    q = assess_quality(dim)
    assert q.brightness < Q.BRIGHTNESS_MIN < base.brightness
    assert [w.split(":")[0] for w in q.warnings] == ["dark photo"]


def test_heavy_noise_is_called_grainy_and_light_noise_is_not():
    img = _sharp_photos()[0]
    assert assess_quality(_noisy(img, 3)).warnings == ()
    grainy = assess_quality(_noisy(img, 60))
    assert grainy.noise > Q.NOISE_MAX
    assert [w for w in grainy.warnings if w.startswith("grainy photo")]


def test_small_photo_is_named_with_its_size():
    small = _sharp_photos()[1].copy()
    small.thumbnail((150, 150))
    q = assess_quality(small)
    assert q.long_side == 150
    assert "small photo: 150 px on its long side (under 224)" in q.warnings
    # enlarged to the measuring scale, it has lost fine detail too
    assert any(w.startswith("little fine detail") for w in q.warnings)


def test_flat_and_tiny_images_are_measured_without_error():
    flat = assess_quality(Image.new("RGB", (400, 300), (200, 200, 200)))
    assert flat.sharpness == 0.0 and flat.noise == 0.0 and flat.brightness == 200.0
    assert [w.split(":")[0] for w in flat.warnings] == ["little fine detail"]
    tiny = assess_quality(Image.new("RGB", (1, 2), (10, 200, 10)))
    assert tiny.long_side == 2 and tiny.warnings[0].startswith("small photo")


def test_a_strip_beyond_any_training_shape_is_called_narrow():
    photo = _sharp_photos()[0]
    strip = photo.resize((2000, 200))
    q = assess_quality(strip)
    assert q.aspect == 10.0 and q.long_side == 2000
    assert "narrow photo: 10.0:1, further from square than any photo the model learnt from (over 8:1); it reads " \
        "the photo squashed or only its centre" in q.warnings
    tall = assess_quality(photo.resize((100, 750)))  # 7.5:1, as met-ivory's most elongated photos: no word
    assert tall.aspect == 7.5 and not [w for w in tall.warnings if w.startswith("narrow")]
    drafted = photo.resize((250, 25))  # measured by the file's size, not a draft decode's
    drafted.info["source_size"] = (2000, 180)
    assert assess_quality(drafted).aspect == round(2000 / 180, 3)


def test_a_file_of_several_frames_says_only_the_first_was_judged(tmp_path):
    """An animated GIF or a multi-page TIFF is read as its first picture: no decision may pass for
    one on the whole file (a seller's animation can hold several objects)."""
    from artsentry.data.images import load_image

    a, b = _sharp_photos()[:2]
    for name in ("anim.gif", "pages.tif"):
        a.save(tmp_path / name, save_all=True, append_images=[b, a])
        img = load_image(tmp_path / name)
        assert img.info["frames"] == 3 and img.size == a.size
        q = assess_quality(img)
        assert q.frames == 3 and any(w.startswith("first of 3 frames or pages") for w in q.warnings)
    a.save(tmp_path / "one.gif")
    # a camera JPEG carrying a preview of itself (MPO) is one picture, not two
    a.save(tmp_path / "camera.jpg", format="MPO", save_all=True, append_images=[a.resize((160, 120))])
    for name in ("one.gif", "camera.jpg"):
        single = assess_quality(load_image(tmp_path / name))
        assert single.frames == 1 and not any("frames" in w for w in single.warnings)
    from PIL import Image

    with Image.open(tmp_path / "camera.jpg") as mpo:
        assert mpo.format == "MPO" and mpo.n_frames == 2  # what the exception is for


def test_to_dict_is_json_ready():
    import json

    d = assess_quality(_sharp_photos()[0]).to_dict()
    assert set(d) == {"long_side", "aspect", "sharpness", "noise", "brightness", "warnings", "frames"}
    assert json.loads(json.dumps(d)) == d


def test_met_ivory_studio_photos_are_rarely_warned_and_blurred_ones_always():
    """The limits are the 2nd / 98th percentiles of met-ivory training photos: on a sample of
    the real photos few are warned, and a strong defocus is warned on every one."""
    from artsentry.data.images import load_image

    root = require_met_ivory()
    paths = sorted((root / "images").rglob("*.jpg"))[::60][:40]
    assert len(paths) >= 30
    warned = blurred_warned = 0
    for p in paths:
        img = load_image(p, draft_size=(320, 320))
        warned += bool(assess_quality(img).warnings)
        blurred_warned += any(w.startswith("little fine detail")
                              for w in assess_quality(img.filter(ImageFilter.GaussianBlur(4))).warnings)
    assert warned <= 5  # ~6% expected (2% for each of the three measured warnings)
    assert blurred_warned == len(paths)


def test_a_photo_is_measured_alike_whatever_draft_a_model_decodes_at(tmp_path):
    """JPEG draft decoding at a small model's size would shrink a photo before it is measured:
    load_image keeps the file's size, and measuring_draft never decodes under the measuring scale."""
    from artsentry.data.dataset import ImageDataset
    from artsentry.data.images import load_image

    path = tmp_path / "big.jpg"
    big = _sharp_photos()[1].resize((1280, 854))
    big.save(path, quality=95)
    drafted = load_image(path, draft_size=(64, 64))
    assert max(drafted.size) < 1280 and drafted.info["source_size"] == (1280, 854)
    assert Q.measuring_draft((64, 64)) == (Q.QUALITY_SCALE, Q.QUALITY_SCALE)
    assert Q.measuring_draft((512, 512)) == (512, 512) and Q.measuring_draft(None) is None
    ds = ImageDataset([str(path)], lambda im: im.size, draft_size=(64, 64), quality=True)
    size, _, _, err, q = ds[0]
    assert err == "" and min(size) >= Q.QUALITY_SCALE  # decoded at 1/2 (640 x 427), not 1/8
    full = assess_quality(load_image(path))
    assert q.long_side == full.long_side == 1280 and q.warnings == full.warnings == ()
    assert abs(q.sharpness - full.sharpness) < 0.02


def test_the_measures_agree_with_their_textbook_definitions():
    """Sharpness: mean |Laplacian| over mean Sobel magnitude on the strongest 10% of gradients, as scipy's
    filters (mirrored borders) compute them; noise: Immerkaer's estimate, which reads back the sigma of
    Gaussian noise on a flat picture; brightness: the 99th percentile of the levels."""
    from scipy import ndimage

    grey = np.asarray(Image.fromarray(skdata.coffee()).convert("L").resize((160, 107)), dtype=np.float32)
    gx, gy = ndimage.sobel(grey, axis=1, mode="reflect"), ndimage.sobel(grey, axis=0, mode="reflect")
    mag = np.hypot(gx, gy).ravel()
    strong = mag >= np.sort(mag)[int(0.9 * (mag.size - 1))]
    lap = np.abs(ndimage.laplace(grey, mode="reflect")).ravel()
    assert Q.sharpness(grey) == pytest.approx(lap[strong].mean() / mag[strong].mean(), rel=1e-4)
    flat = np.random.default_rng(0).normal(128, 8.0, (480, 640)).astype(np.float32)
    assert Q.noise_sigma(flat) == pytest.approx(8.0, abs=0.2)
    levels = np.repeat(np.arange(100, dtype=np.float32), 10)[None, :]  # 1,000 pixels, levels 0-99
    assert Q.brightness(levels) == 98.0  # the level under which 99% of them lie


def test_each_warning_is_for_a_measure_strictly_past_its_limit():
    """"Under" and "over" are strict: a photo measuring exactly a limit is not warned about it."""
    img = _noisy(Image.fromarray(skdata.coffee()).convert("RGB").resize((300, 100)), 4.0)
    grey = Q.grey_at_scale(img)
    exact = dict(sharpness_min=Q.sharpness(grey), noise_max=Q.noise_sigma(grey), brightness_min=Q.brightness(grey),
                 small_side=300, aspect_max=3.0)
    assert assess_quality(img, **exact).warnings == ()
    past = {"sharpness_min": (exact["sharpness_min"] + 0.001, "little fine detail"),
            "noise_max": (exact["noise_max"] - 0.001, "grainy photo"),
            "brightness_min": (exact["brightness_min"] + 0.001, "dark photo"),
            "small_side": (301, "small photo"), "aspect_max": (2.999, "narrow photo")}
    for name, (limit, words) in past.items():
        warned = assess_quality(img, **{**exact, name: limit}).warnings
        assert [w.split(":")[0] for w in warned] == [words], name


def test_two_frames_are_said_like_more():
    a, b = _sharp_photos()
    a.info["frames"] = 2
    assert any(w.startswith("first of 2 frames or pages") for w in assess_quality(a).warnings)
    assert not any("frames" in w for w in assess_quality(b).warnings)
