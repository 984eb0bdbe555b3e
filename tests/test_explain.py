"""Explanations: the sanity checks that they are real, overlays, the CLI, feature maps."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from artsentry.cli import main
from artsentry.data.transforms import Preprocessing
from artsentry.explain import Explainer, explain_files, gradcam_layer
from artsentry.explain.overlay import photo_and_heat, render
from artsentry.explain.sanity import (SQUARE_PREPROCESSING, SquareNet, mass_inside, randomisation_rank_correlation,
                                      square_dataset, train_square_net)

from .conftest import abc_register, wide_lot

SIZE, SQUARE, BLOBS = 48, 10, 6


@pytest.fixture(scope="module")
def square_task():
    torch.manual_seed(0)
    x, y, _ = square_dataset(600, seed=0, size=SIZE, square=SQUARE, blobs=BLOBS)
    net = train_square_net(x, y, epochs=10, sparsity=0.1)
    xt, yt, masks = square_dataset(30, seed=1, size=SIZE, square=SQUARE, blobs=BLOBS)
    with torch.no_grad():
        assert (net(xt).argmax(1) == yt).float().mean() == 1.0  # the task is solved: only the square decides
    pre = Preprocessing(input_size=SIZE, mean=(0, 0, 0), std=(1, 1, 1))
    return net, pre, xt, yt, masks


@pytest.mark.parametrize("method,kw", [("saliency", {}), ("gradcam", {}), ("occlusion", {"patch": 6, "stride": 3})])
def test_heat_falls_on_the_deciding_square(square_task, method, kw):
    net, pre, xt, yt, masks = square_task
    heat = Explainer(net, pre).explain(xt, method, **kw)
    assert heat.shape == (len(xt), SIZE, SIZE) and heat.min() >= 0 and np.allclose(heat.max((1, 2)), 1)
    inside = np.array([mass_inside(h, m) for h, m in zip(heat, masks)])
    # the bar: >= 80% of the mass inside the square for >= 90% of the test images
    assert (inside >= 0.8).mean() >= 0.9, (method, np.round(inside, 2))
    # and a map that ignores the image would not pass: the square is 4% of the frame
    assert masks.mean() < 0.05


@pytest.mark.parametrize("method", ["saliency", "gradcam"])
def test_model_randomisation_changes_the_maps(square_task, method):
    """Adebayo et al. 2018: the maps of a randomly initialised network must differ clearly."""
    net, pre, xt, _, _ = square_task
    trained = Explainer(net, pre).explain(xt, method)
    torch.manual_seed(123)
    randomised = Explainer(SquareNet().eval(), pre).explain(xt, method)
    assert randomisation_rank_correlation(trained, randomised) <= 0.3
    # the same network twice is perfectly rank-correlated: the measure can detect sameness
    assert randomisation_rank_correlation(trained, Explainer(net, pre).explain(xt, method)) > 0.99


def test_targets_and_square_preprocessing(square_task):
    net, pre, xt, yt, masks = square_task
    ex = Explainer(net, pre)
    # explaining the other class still looks at the square (it is the evidence against it)
    other = ex.explain(xt[:4], "gradcam", target=1 - int(yt[0]))
    assert other.shape == (4, SIZE, SIZE)
    assert SQUARE_PREPROCESSING.mean == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="method must be one of"):
        ex.explain(xt[:1], "deconvolution")
    # a stride over the patch, or a patch over the input, was an AssertionError traceback from Captum
    for patch, stride in ((6, 7), (SIZE + 1, 3)):
        with pytest.raises(ValueError) as refused:
            ex.explain(xt[:1], "occlusion", patch=patch, stride=stride)
        assert str(refused.value) == (f"occlusion needs 1 <= stride <= patch <= the input size ({SIZE} px), not "
                                      f"patch {patch} and stride {stride}")
    assert ex.explain(xt[:1], "occlusion", patch=SIZE, stride=SIZE).shape == (1, SIZE, SIZE)  # the whole photo


def test_occlusion_greys_with_the_photo_grey_and_a_blind_model_maps_nothing():
    """Occlusion's patch is mid-grey in the photo's own pixels, whatever the model's normalisation; a
    model that ignores its input moved no score: its map is all zeros, not NaN."""
    from artsentry.explain import grey_baseline

    for mean, std in (((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)), ((0.5,) * 3, (0.5,) * 3)):
        base = grey_baseline(Preprocessing(input_size=16, mean=mean, std=std))
        assert base.shape == (3, 1, 1)
        assert torch.allclose(base.flatten() * torch.tensor(std) + torch.tensor(mean), torch.full((3,), 0.5))

    class Blind(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 2, 3)

        def forward(self, x):
            return self.conv(x).mean((2, 3)) * 0 + torch.tensor([1.0, -1.0])

    pre = Preprocessing(input_size=16, mean=(0, 0, 0), std=(1, 1, 1))
    x = torch.rand(2, 3, 16, 16)
    for method, kw in (("occlusion", {"patch": 4, "stride": 4}), ("saliency", {})):
        heat = Explainer(Blind(), pre).explain(x, method, **kw)
        assert heat.shape == (2, 16, 16) and np.isfinite(heat).all() and (heat == 0).all(), method


def test_gradcam_layer_is_the_last_feature_map():
    from artsentry.models import create_model

    lite = create_model("efficientnet_lite0", 2, pretrained=False)
    layer = gradcam_layer(lite, 64)
    assert layer is lite.backbone.bn2.act  # the activation closing bn2: the last 7x7 map
    small = create_model("smallcnn", 2, input_size=64)
    assert isinstance(gradcam_layer(small, 64), torch.nn.ReLU)


def test_overlay_lies_on_the_undistorted_photo():
    """A squash-resized model input maps back onto the photo's own aspect ratio: a hot
    top-right corner on the model input is the top-right corner of the photo."""
    photo = Image.new("RGB", (300, 150), (128, 128, 128))
    heat = np.zeros((64, 64), np.float32)
    heat[:16, -16:] = 1.0
    pre = Preprocessing(input_size=64)
    shown, h = photo_and_heat(photo, heat, pre)
    assert shown.size == (300, 150) and h.shape == (150, 300)
    assert h[:30, -60:].mean() > 0.8 and h[-60:, :150].max() < 0.05
    out = render(photo, heat, pre, "gradcam: ivory 0.9")
    assert out.width > 300 and out.height > 150  # colour bar and caption around the photo
    px = np.asarray(out)
    assert not np.array_equal(px[30, 280], px[120, 20])  # hot corner coloured, cold corner photo grey


def test_fit_overlay_lies_on_the_part_of_the_photo_the_model_saw():
    """``fit``: a 2:1 photo is cut to 4:3 at its centre, then squashed; the map goes back onto that part,
    undistorted."""
    photo = Image.new("RGB", (400, 200), (128, 128, 128))
    heat = np.zeros((64, 64), np.float32)
    heat[:, :8] = 1.0  # the left edge of what the model saw
    shown, h = photo_and_heat(photo, heat, Preprocessing(input_size=64, resize="fit"))
    assert shown.size == (267, 200) and h.shape == (200, 267)
    assert h[:, :25].mean() > 0.8 and h[:, 60:].max() < 0.05


def test_explain_lots_explains_a_lot_by_the_tile_predict_lots_flagged_it_for(model_dir, synthetic_dataset, tmp_path,
                                                                              capsys):
    """`explain --lots`: a photo of several objects explained as `predict --lots` decides it. Flagged for one tile,
    by that tile's map, drawn in place on the whole photo (a 2:1 photo: not cut to 4:3), the tile's box recorded;
    passed, by the photo whole's map for the label decided."""
    import shutil

    from artsentry.models.artifact import update_config

    folder = tmp_path / "model"
    shutil.copytree(model_dir, folder)
    lot = wide_lot(synthetic_dataset)  # a blue object, a cream one in the bottom-right tile
    photo = tmp_path / "lot.jpg"
    lot.save(photo, quality=92)
    assert main(["-q", "explain", str(photo), "--model", str(folder), "--lots", "--out", str(tmp_path / "x")]) == 1
    assert capsys.readouterr().err.strip().endswith(f"{folder}: the model has no lot threshold in its config.json; "
                                                    "measure and set one with 'artsentry evaluate RUN --lots 400'")
    assert main(["-q", "explain", str(photo), "--register", str(tmp_path), "--lots"]) == 1
    assert "--lots explains a model's tile scan: give --model, not --register" in capsys.readouterr().err
    # a class asked of a register's map was ignored, and the map of the best match looked like an answer to it
    assert main(["-q", "explain", str(photo), "--register", str(tmp_path), "--target", "ivory"]) == 1
    assert "--target names a model's class; with --register the similarity" in capsys.readouterr().err
    update_config(folder, lots={"threshold": 0.1, "grid": 3})
    assert main(["-q", "predict", str(photo), "--model", str(folder), "--lots", "--json"]) == 0
    predicted = json.loads(capsys.readouterr().out)
    assert predicted["flagged"] and predicted["box"] == [800, 400, 1600, 800] and predicted["whole"] < 0.5
    for threshold, out in ((0.1, tmp_path / "flagged"), (0.999, tmp_path / "passed")):
        update_config(folder, lots={"threshold": threshold, "grid": 3})
        assert main(["-q", "explain", str(photo), "--model", str(folder), "--lots", "--out", str(out)]) == 0
        [record] = json.loads((out / "explanations.json").read_text())
        overlay = Image.open(record["overlay"])
        assert overlay.height == 256 + 28  # the photo whole at 512 x 256, the caption above (4:3: 384 high)
        if threshold == 0.1:
            assert record["box"] == predicted["box"] and record["target"] == "ivory"
            assert record["score"] == pytest.approx(predicted["score"], abs=1e-5)  # the tile's own
        else:
            assert record["box"] is None and record["target"] == "non_ivory"
            assert record["probabilities"]["ivory"] == pytest.approx(predicted["whole"], abs=1e-5)


@pytest.mark.parametrize("resize", ["squash", "fit", "pad", "center_crop"])
def test_a_map_goes_back_onto_the_photo_pixels_the_model_saw(resize):
    """``heat_on_photo`` undoes each preprocessing's geometry: a red square, found on the model's input (its map),
    is put back where it is on the photo; what the model never saw of the photo gets no heat."""
    from artsentry.data.transforms import eval_transform
    from artsentry.explain.overlay import heat_on_photo

    photo = Image.new("RGB", (300, 150), (128, 128, 128))
    photo.paste((220, 30, 30), (160, 40, 200, 80))
    truth = np.zeros((150, 300), bool)
    truth[40:80, 160:200] = True
    pre = Preprocessing(input_size=64, resize=resize)
    x = eval_transform(pre)(photo)
    heat = ((x[0] > 0.3) & (x[1] < -0.3)).float().numpy()  # red on the model's input
    back = heat_on_photo(photo.size, heat, pre)
    assert back.shape == (150, 300)
    found = back > 0.5
    assert (found & truth).sum() / (found | truth).sum() > 0.8
    seen = {"squash": 0, "pad": 0, "fit": 50, "center_crop": 75}[resize]  # 4:3 of a 2:1 photo; its centre square
    assert back[:, :seen].max(initial=0) == 0 and back[:, 300 - seen:].max(initial=0) == 0


def test_a_tiles_map_lies_in_its_place_on_the_whole_photo_outlined():
    """A lot flagged for one tile: the map made on that tile is drawn where the tile is on the photo, whole and
    uncut (a 2:1 photo with ``fit``, which alone it would cut to 4:3), cold elsewhere; the overlay outlines it."""
    from artsentry.lots import tile_crops

    photo = Image.new("RGB", (400, 200), (128, 128, 128))
    pre = Preprocessing(input_size=64, resize="fit")
    _, boxes = tile_crops(photo, 3)
    box = boxes[9]  # the bottom-right tile: (200, 100, 400, 200)
    shown, h = photo_and_heat(photo, np.ones((64, 64), np.float32), pre, box=box)
    assert shown.size == (400, 200) and h.shape == (200, 400)
    assert h[:98].max() == 0 and h[:, :198].max() == 0  # the other tiles
    assert h[100:, 240:360].min() > 0.99 and h[:, 370:].max() == 0  # the tile's centre at 4:3, as the model read it
    shown, h = photo_and_heat(photo, np.ones((64, 64), np.float32), pre, box=(0, 0, 400, 200))
    assert shown.size == (400, 200) and h[:, 70:330].min() > 0.99 and h[:, :60].max() == 0  # whole, uncut
    plain = np.asarray(render(photo, np.zeros((64, 64), np.float32), pre, display=400, box=(0, 0, 400, 200)))
    outlined = np.asarray(render(photo, np.zeros((64, 64), np.float32), pre, display=400, box=box))
    changed = np.argwhere((plain != outlined).any(axis=2))
    assert len(changed) and changed[:, 1].min() >= 200 and changed[:, 0].min() >= 100  # the tile's outline alone


def test_overlay_colours_heat_leaves_cold_photo_untouched_and_scales_saliency_for_display():
    """What a person reads off an overlay: cold pixels are the photo itself, the hottest are mostly the colour
    map's top colour, the colour bar runs from that colour ("high", at the top) to the bottom one ("low"), a
    large photo is shown at most ``display`` pixels on its long side, and a saliency map (a few extreme pixels)
    is drawn against its 99th percentile where the other methods' maps are drawn as they are."""
    from artsentry.explain.overlay import _lut, blend, colour_bar, display_scale, heat_rgba

    lut = _lut()
    photo = Image.new("RGB", (40, 20), (100, 150, 200))
    heat = np.zeros((20, 40), np.float32)
    heat[:, 20:] = 1.0
    px = np.asarray(blend(photo, heat)).astype(int)
    assert (px[:, :20] == (100, 150, 200)).all()  # cold: the photo untouched
    expected = np.round(0.25 * np.array([100, 150, 200]) + 0.75 * lut[255])
    assert np.abs(px[:, 20:] - expected).max() <= 1  # hot: three quarters the colour map's top colour
    bar = np.asarray(colour_bar(50, 6)).astype(int)
    assert bar.shape == (50, 6, 3) and (bar[0] == lut[255]).all() and (bar[-1] == lut[0]).all()
    assert lut[0].sum() < 20 and (lut[255] > (240, 240, 150)).all()  # inferno: near black to pale yellow
    lightness = lut.astype(float) @ (0.2126, 0.7152, 0.0722)
    assert len(np.unique(lut, axis=0)) == 256 and (np.diff(lightness[::16]) > 0).all()  # the whole map, rising
    half = np.asarray(heat_rgba(np.full((2, 2), 0.5, np.float32))).astype(int)
    assert (half[..., :3] == lut[127]).all() and (half[..., 3] == 95).all()  # half heat: half of 0.75 opaque

    big = Image.new("RGB", (2000, 1000), (128, 128, 128))
    shown, h = photo_and_heat(big, np.full((64, 64), 2.0, np.float32), Preprocessing(input_size=64))
    assert shown.size == (512, 256) and h.min() == h.max() == 1.0  # the default display size; heat clipped
    shown, h = photo_and_heat(big, np.full((64, 64), -1.0, np.float32), Preprocessing(input_size=64))
    assert h.min() == h.max() == 0.0
    shown, h = photo_and_heat(big, np.ones((64, 64), np.float32), Preprocessing(input_size=64), display=300)
    assert shown.size == (300, 150) and h.shape == (150, 300)
    out = render(big, np.zeros((64, 64), np.float32), Preprocessing(input_size=64), display=300)
    assert 300 < out.width < 400 and 150 < out.height < 200

    saliency = np.zeros((100, 100), np.float32)
    saliency[0, :5] = 1.0  # five extreme pixels
    saliency[50:, :] = 0.02  # and a faint half the plain map would all but hide
    shown_s = display_scale(saliency, "saliency")
    assert shown_s[99, 99] == pytest.approx(1.0) and shown_s[0, 0] == 1.0  # at the 99th percentile: full heat
    assert shown_s[1, 1] == 0.0  # and no heat stays none
    assert display_scale(saliency, "gradcam") is saliency and display_scale(saliency, None) is saliency
    assert (display_scale(np.zeros((8, 8)), "saliency") == 0).all()  # a blank map stays blank


def test_explain_cli_every_method(model_dir, synthetic_dataset, tmp_path, capsys):
    images = sorted((synthetic_dataset / "ivory").glob("*.jpg"))[:2]
    for method in ("gradcam", "saliency", "occlusion"):
        out = tmp_path / method
        rc = main(["-q", "explain", *map(str, images), "--model", str(model_dir), "--method", method,
                   "--patch", "16", "--stride", "8", "--out", str(out)])
        assert rc == 0
        lines = capsys.readouterr().out.strip().splitlines()
        assert len(lines) == 2
        records = json.loads((out / "explanations.json").read_text())
        assert [r["source"] for r in records] == list(map(str, images))
        for r in records:
            assert r["method"] == method and r["target"] in ("ivory", "non_ivory") and 0 <= r["score"] <= 1
            png = Image.open(r["overlay"])
            assert png.format == "PNG" and png.width > 120
    # a chosen class, and a class the model does not have
    rc = main(["-q", "explain", str(images[0]), "--model", str(model_dir), "--target", "non_ivory",
               "--out", str(tmp_path / "t")])
    assert rc == 0 and "\tnon_ivory\t" in capsys.readouterr().out
    rc = main(["-q", "explain", str(images[0]), "--model", str(model_dir), "--target", "bronze",
               "--out", str(tmp_path / "t")])
    assert rc == 1 and "bronze" in capsys.readouterr().err


def test_a_second_explain_run_into_the_same_folder_adds_to_its_record(model_dir, synthetic_dataset, tmp_path,
                                                                      capsys):
    """explanations.json lists every overlay in the folder: a second run into it used to replace the record
    and leave the first run's overlays unlisted, and overwrote the overlay of another photo of the same name.
    A photo explained again replaces its own overlay; a file the command did not write is left alone."""
    import shutil

    images = sorted((synthetic_dataset / "ivory").glob("*.jpg"))[:3]
    out = tmp_path / "out"

    def run(*paths, method="gradcam"):
        rc = main(["-q", "explain", *map(str, paths), "--model", str(model_dir), "--method", method,
                   "--out", str(out)])
        capsys.readouterr()
        return rc

    def listed():
        records = json.loads((out / "explanations.json").read_text())
        assert sorted(Path(r["overlay"]).name for r in records) == sorted(p.name for p in out.glob("*.png"))
        return {(r["source"], r["method"]): Path(r["overlay"]).name for r in records}

    assert run(images[0], images[1]) == 0
    first = (out / f"{images[0].stem}.gradcam.png").read_bytes()
    assert run(images[1], images[2]) == 0
    assert listed() == {(str(p), "gradcam"): f"{p.stem}.gradcam.png" for p in images}
    assert run(images[0], method="saliency") == 0  # another method: beside the Grad-CAM map, not instead
    assert len(listed()) == 4 and (out / f"{images[0].stem}.gradcam.png").read_bytes() == first
    namesake = tmp_path / "elsewhere" / images[0].name  # another photo, the same file name
    namesake.parent.mkdir()
    shutil.copy(images[2], namesake)
    assert run(namesake) == 0
    assert listed()[(str(namesake), "gradcam")] == f"{images[0].stem}-2.gradcam.png"
    assert (out / f"{images[0].stem}.gradcam.png").read_bytes() == first
    (out / f"{images[1].stem}.gradcam.png").unlink()  # an overlay the user deleted: not listed after a run
    fresh = shutil.copy(images[1], tmp_path / "fresh.jpg")
    mine = out / "fresh.gradcam.png"  # not ours: a user's file where the overlay's name would go
    mine.write_bytes(b"mine")
    assert run(fresh) == 0 and mine.read_bytes() == b"mine"
    mine.unlink()
    assert listed()[(str(fresh), "gradcam")] == "fresh-2.gradcam.png" and (str(images[1]), "gradcam") not in listed()
    (out / "explanations.json").write_text("not json")
    assert main(["-q", "explain", str(images[0]), "--model", str(model_dir), "--out", str(out)]) == 1
    assert "explanations.json is not an explanations.json this command wrote" in capsys.readouterr().err
    assert (out / "explanations.json").read_text() == "not json"


def test_an_explain_run_stopped_part_way_lists_its_overlays_and_the_same_command_writes_over_them(
        model_dir, synthetic_dataset, tmp_path, monkeypatch, capsys):
    """explanations.json was written at the end only: a run stopped by Ctrl-C (or a full disk) left its
    overlays unlisted, and the same command again, taking them for files not its own, wrote every one of them
    again beside them as NAME-2.gradcam.png. Now the record is written as the run goes and when it stops."""
    import artsentry.explain as explain
    import artsentry.explain.overlay as overlay

    images = sorted((synthetic_dataset / "ivory").glob("*.jpg"))[:4]
    out = tmp_path / "out"
    args = ["-q", "explain", *map(str, images), "--model", str(model_dir), "--out", str(out)]
    assert main(args[:3] + args[4:]) == 0  # the first run: photos 2-4
    real, calls, seen = overlay.render, [], []

    def stopped_at_the_third(*a, **kw):
        calls.append(1)
        if len(calls) == 3:
            seen.append(len(json.loads((out / "explanations.json").read_text())))  # as the run went
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(overlay, "render", stopped_at_the_third)
    monkeypatch.setattr(explain, "RECORD_SECONDS", 0.0)
    assert main(args) == 130
    # at the third photo: the two done, and photos 3-4 of the first run, their overlays there
    assert seen == [4]
    records = json.loads((out / "explanations.json").read_text())
    assert sorted(Path(r["overlay"]).name for r in records) == sorted(p.name for p in out.glob("*.png"))
    assert len(records) == 4
    monkeypatch.setattr(overlay, "render", real)
    assert main(args) == 0
    capsys.readouterr()
    records = json.loads((out / "explanations.json").read_text())
    assert sorted(Path(r["overlay"]).name for r in records) == sorted(p.name for p in out.glob("*.png")) == sorted(
        f"{p.stem}.gradcam.png" for p in images)  # written over, none beside as NAME-2.gradcam.png


def test_the_class_explained_and_mapped_is_the_decision_at_the_models_threshold(model_dir, synthetic_dataset,
                                                                                 tmp_path):
    """A model whose threshold is not 0.5: a photo scored between the two is decided against its likelier
    class. What is explained by default, and the feature map's "predicted", is that decision, as ``predict``
    prints it."""
    import shutil

    import pandas as pd

    from artsentry.explain import ClassifierExplainer
    from artsentry.explain.project import features_of
    from artsentry.inference import Predictor
    from artsentry.models.artifact import update_config

    photo = sorted((synthetic_dataset / "ivory").glob("*.jpg"))[0]
    score = Predictor.load(model_dir).predict_files([photo])[0].score
    folder = tmp_path / "model"
    shutil.copytree(model_dir, folder)
    update_config(folder, threshold=score - 0.01 if score < 0.5 else score + 0.01)
    predictor = Predictor.load(folder)
    decided = predictor.predict_files([photo])[0]
    assert decided.label == ("ivory" if score < 0.5 else "non_ivory")  # not the likelier class
    explained = ClassifierExplainer(predictor).explain_images([Image.open(photo).convert("RGB")], [str(photo)])[0]
    assert explained.target == decided.label
    _, table = features_of(predictor, pd.DataFrame({"path": [str(photo)], "label": ["ivory"]}))
    assert table.loc[0, "predicted"] == decided.label and table.loc[0, "score"] == pytest.approx(score, abs=1e-6)
    assert table.loc[0, "correct"] == ("right" if decided.label == "ivory" else "wrong")


def test_explain_cli_reports_unreadable_files_and_goes_on(model_dir, synthetic_dataset, tmp_path, capsys):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff not really")
    good = sorted((synthetic_dataset / "ivory").glob("*.jpg"))[0]
    rc = main(["-q", "explain", str(bad), str(good), "--model", str(model_dir), "--out", str(tmp_path / "o")])
    captured = capsys.readouterr()
    assert rc == 3 and "broken.jpg" in captured.err and str(good) in captured.out
    assert (tmp_path / "o" / f"{good.stem}.gradcam.png").is_file()


def test_explain_register_match(tmp_path, photos):
    reg = abc_register(tmp_path / "reg", photos)
    results = explain_files([photos["B"][1]], register=reg, method="gradcam", out_dir=tmp_path / "x")
    r = results[0]
    assert r.error is None and r.target == "match:B" and 0 < r.score <= 1
    assert r.heat.shape == (224, 224) and r.heat.max() == pytest.approx(1.0)
    assert (tmp_path / "x" / "B_query.match.gradcam.png").is_file()
    # the similarity explained is the one the register search reports
    found = reg.search([photos["B"][1]], k=1)[0].matches[0]
    assert r.score == pytest.approx(found.similarity, abs=1e-4)


def test_explained_similarity_is_the_registers_with_reshots(tmp_path, photos):
    """With re-shots a registered photo scores the mean of its two best-matching versions; the map
    explained the single best version, so the number beside it was not the one the search reported."""
    from artsentry.index import Register

    reg = Register.create(tmp_path / "reg", reshots=2)
    for name in "AB":
        reg.add(name, photos[name][0][:1])
    [r] = explain_files([photos["B"][1]], register=reg, method="gradcam")
    found = reg.search([photos["B"][1]], k=1)[0].matches[0]
    assert r.target == f"match:{found.object_id}" and found.similarity < 0.9  # not a near copy: a mean of two
    assert r.score == pytest.approx(found.similarity, abs=1e-4)
    versions = reg.object_vectors(found.object_id)
    query = reg.embedder.embed_files([photos["B"][1]])[0][0]
    assert max(versions @ query) > found.similarity + 1e-3  # the best single version alone scores higher
    reg.close()


def test_feature_map_files_keep_every_readable_photo_in_order_and_count_the_rest(model_dir, synthetic_dataset,
                                                                                  tmp_path, monkeypatch):
    """``write_projection``'s three files, without a browser: the readable photos in the manifest's order, each
    with the decision ``predict`` makes and its coordinates; an unreadable photo counted, not mapped; the page's
    points inside its plot, a flat axis drawn at its edge, the colourings and their legends (most common first)."""
    import re
    import shutil

    import pandas as pd

    from artsentry.explain.project import embed_2d, features_of, projection_html, write_projection
    from artsentry.inference import Predictor
    from artsentry.models.artifact import update_config

    paths = sorted((synthetic_dataset / "ivory").glob("*.jpg"))[:4] + sorted((synthetic_dataset / "non_ivory").glob(
        "*.jpg"))[:3]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff not a photo")
    df = pd.DataFrame({"path": [str(p) for p in paths[:3]] + [str(broken)] + [str(p) for p in paths[3:]],
                       "label": ["ivory"] * 3 + ["ivory"] + ["ivory"] + ["non_ivory"] * 3,
                       "department": ["Asian Art", None, "Arms", "Arms", "Arms", "Asian Art", "Arms", "Arms"]})
    out = write_projection(model_dir, df, tmp_path / "maps" / "all", methods=("pca", "tsne"))  # folders made
    assert out["images"] == 7 and out["unreadable"] == 1
    csv = pd.read_csv(out["csv"])
    assert csv.columns.tolist() == ["path", "label", "department", "predicted", "score", "correct",
                                    "pca_x", "pca_y", "tsne_x", "tsne_y"]
    assert csv["path"].tolist() == [str(p) for p in paths]
    decided = Predictor.load(model_dir, runtime="torch").predict_files(paths)
    assert csv["predicted"].tolist() == [d.label for d in decided]
    assert np.allclose(csv["score"], [d.score for d in decided], atol=1e-5)
    truth = df["label"].drop(3)
    assert csv["correct"].tolist() == ["right" if d.label == l else "wrong" for d, l in zip(decided, truth)]
    feats, table = features_of(model_dir, df)
    assert np.isnan(feats[3]).all() and "broken.jpg" in table.loc[3, "error"] and pd.isna(table.loc[3, "predicted"])
    assert not np.isnan(np.delete(feats, 3, axis=0)).any()
    calibrated = tmp_path / "calibrated"  # probabilities as the predictor gives them: tempered
    shutil.copytree(model_dir, calibrated)
    update_config(calibrated, calibration={"temperature": 3.0})
    _, tempered = features_of(calibrated, df.iloc[:2])
    assert np.allclose(tempered["score"], [d.score for d in Predictor.load(calibrated).predict_files(paths[:2])],
                       atol=1e-5)
    assert abs(tempered.loc[0, "score"] - 0.5) < abs(decided[0].score - 0.5) - 0.01  # nearer the middle
    xy = embed_2d(np.delete(feats, 3, axis=0), "pca")
    assert np.allclose(csv[["pca_x", "pca_y"]], xy, atol=1e-3) and np.isfinite(csv[["tsne_x", "tsne_y"]]).all().all()
    assert abs(xy[:, 0].mean()) < 1e-3 and xy[:, 0].var() >= xy[:, 1].var()  # centred; the first axis the widest

    page = Path(out["html"]).read_text()
    data = json.loads(re.search(r"const D = (\{.*\});\n", page).group(1))
    assert len(data["points"]) == 7 and [p["meta"]["path"] for p in data["points"]] == [str(p) for p in paths]
    assert data["points"][1]["meta"]["department"] is None  # shown as missing, not as the word "None"
    assert [p["meta"]["score"] for p in data["points"]] == [round(float(v), 4) for v in csv["score"]]
    assert all(p["thumb"].startswith("data:image/") for p in data["points"])
    for name in ("pca", "tsne"):
        pts = np.array(data["spaces"][name])
        assert pts.min(0) == pytest.approx([20, 20]) and pts.max(0) == pytest.approx([580, 580])  # corner to corner
    assert list(data["colourings"]) == ["label", "correct", "department"]  # the default colourings
    assert list(data["colourings"]["department"]["legend"]) == ["Arms", "Asian Art", "(none)"]  # 4, 2, 1 photos
    assert len(set(data["colourings"]["label"]["legend"].values())) == 2
    assert data["colourings"]["label"]["colours"] == [data["colourings"]["label"]["legend"][l]
                                                      for l in df["label"].drop(3)]

    flat = projection_html({"pca": np.array([[1.0, 0.0], [1.0, 2.0], [1.0, 4.0]])},
                           csv.iloc[:3], ["label"], title="t", max_thumbnails=2)
    small = json.loads(re.search(r"const D = (\{.*\});\n", flat).group(1))
    assert small["spaces"]["pca"] == [[20.0, 20.0], [20.0, 300.0], [20.0, 580.0]]  # a flat axis at its edge
    assert [p["thumb"] is None for p in small["points"]] == [False, False, True]  # thumbnails up to the cap
    import artsentry.explain.project as project

    def no_features(*args, **kwargs):
        raise AssertionError("features computed for a colouring that cannot be drawn")

    with monkeypatch.context() as m:  # refused before the features' minutes, not after
        m.setattr(project, "features_of", no_features)
        with pytest.raises(ValueError, match=r"cannot colour by \['period'\]: not columns of the data \(\[.*'score'"):
            write_projection(model_dir, df, tmp_path / "m2", methods=("pca",), color_by=["period"])
    assert write_projection(model_dir, df, tmp_path / "m3", methods=("pca",), color_by=["score"])["images"] == 7
    three = write_projection(model_dir, df.iloc[:3].assign(department=None), tmp_path / "m1", methods=("pca",))
    assert three["images"] == 3  # the fewest a map takes; a column with no values is no default colouring
    page = Path(three["html"]).read_text()
    assert list(json.loads(re.search(r"const D = (\{.*\});\n", page).group(1))["colourings"]) == ["label", "correct"]
    with pytest.raises(ValueError, match=r"only 2 readable image\(s\)"):
        write_projection(model_dir, df.iloc[2:5], tmp_path / "m3", methods=("pca",))
    with pytest.raises(ValueError, match="methods must be among"):
        write_projection(model_dir, df, tmp_path / "m4", methods=("mds",))


def test_the_project_command_maps_one_split_of_a_manifest(model_dir, synthetic_dataset, tmp_path, capsys):
    """`artsentry project` as the README runs it (no test ran the command): --split keeps that split's photos,
    in the manifest's order; the three files named; a split asked of a manifest without splits is refused."""
    import pandas as pd

    paths = sorted((synthetic_dataset / "ivory").glob("*.jpg"))[:4] + sorted((synthetic_dataset / "non_ivory").glob(
        "*.jpg"))[:4]
    manifest = tmp_path / "manifest.csv"
    pd.DataFrame({"path": [str(p) for p in paths], "label": ["ivory"] * 4 + ["non_ivory"] * 4,
                  "split": ["train", "test", "test", "val", "test", "train", "test", "test"]}).to_csv(manifest,
                                                                                                      index=False)
    out = tmp_path / "map"
    assert main(["-q", "project", str(manifest), "--model", str(model_dir), "--split", "test", "--methods",
                 " pca, tsne", "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert said.startswith("5 images mapped (0 unreadable)\nhtml: ") and said.count("\n") == 3
    table = pd.read_csv(out / "projection.csv")
    assert table["path"].tolist() == [str(paths[i]) for i in (1, 2, 4, 6, 7)]
    assert {"pca_x", "tsne_y"} <= set(table.columns) and "umap_x" not in table.columns
    assert f"html: {out / 'projection.html'}\npng: {out / 'projection.png'}\n" in said
    assert (out / "projection.html").is_file() and (out / "projection.png").is_file()
    assert main(["-q", "project", str(synthetic_dataset), "--model", str(model_dir), "--split", "test"]) == 1
    assert f"{synthetic_dataset} has no split column" in capsys.readouterr().err


@pytest.mark.parametrize("method", ["pca", "tsne", "umap"])
def test_feature_maps_of_the_fewest_photos_a_map_takes(method):
    """Three photos (a small folder, a small test split) are mapped by every method: UMAP's spectral
    start needs four, and raised a SciPy traceback at three. Two are refused in one line."""
    from artsentry.explain.project import embed_2d

    features = np.random.default_rng(0).normal(size=(4, 64)).astype(np.float32)
    for n in (3, 4):
        xy = embed_2d(features[:n], method)
        assert xy.shape == (n, 2) and np.isfinite(xy).all()
        assert len({tuple(np.round(p, 4)) for p in xy}) == n  # distinct points
    with pytest.raises(ValueError, match="a 2-D map needs at least 3 images, got 2"):
        embed_2d(features[:2], method)


def test_report_and_feature_map_explain_and_open_cleanly_in_chromium(model_dir, tmp_path):
    from artsentry.evaluate import run_evaluation
    from artsentry.explain.project import write_projection

    from .browser import browser_page

    out = tmp_path / "eval"
    res = run_evaluation(model_dir, split=None, out_dir=out, progress=False)
    page_html = (out / "report.html").read_text()
    assert page_html.count('alt="Grad-CAM overlay of') >= min(8, len(res["evaluation"].table))
    assert "Correct decisions, explained" in page_html and "Feature map" in page_html
    assert (out / "projection" / "projection.html").is_file()

    df = res["evaluation"].table[["path", "label"]].assign(department=["A", "B"] * (len(res["evaluation"].table) // 2)
                                                           + ["A"] * (len(res["evaluation"].table) % 2))
    proj = write_projection(model_dir, df, tmp_path / "proj", methods=("pca", "tsne", "umap"))
    assert proj["images"] == len(df)
    import pandas as pd

    coords = pd.read_csv(proj["csv"])
    for m in ("pca", "tsne", "umap"):
        assert coords[[f"{m}_x", f"{m}_y"]].notna().all().all() and coords[f"{m}_x"].std() > 0
    with browser_page() as (page, log):
        page.goto((out / "report.html").as_uri())
        assert page.locator('img[alt^="Grad-CAM overlay of"]').first.is_visible()
        page.goto(Path(proj["html"]).resolve().as_uri())
        assert page.locator("circle").count() == len(df)
        page.select_option("#method", "umap")
        page.select_option("#colour", "department")
        page.locator("circle").first.hover()
        assert page.locator("#tip").is_visible() and page.locator("#tip img").count() == 1
        assert "department: " in page.locator("#tip").inner_text()
        page.screenshot(path=str(tmp_path / "projection.png"))
    assert log.console_errors == [] and log.outside == []


def test_photos_with_long_file_names_get_overlays_named_within_the_file_name_limit(model_dir, synthetic_dataset,
                                                                                   tmp_path, capsys):
    """A photo's file name may take the 255 bytes a name has: its overlay's name (the photo's, plus
    ``.gradcam.png``) is cut to fit instead of failing the whole run ('File name too long'), at a whole
    character, and two photos cut to one name are told apart like any namesakes."""
    import shutil

    photo = next((synthetic_dataset / "ivory").glob("*.jpg"))
    long_names = ["é" * 120 + "a" * 6 + ".jpg", "é" * 120 + "b" * 6 + ".jpg"]  # 246 bytes, the same first 150
    paths = [shutil.copy(photo, tmp_path / n) for n in long_names]
    out = tmp_path / "out"
    assert main(["-q", "explain", *map(str, paths), str(photo), "--model", str(model_dir), "--out", str(out)]) == 0
    records = json.loads((out / "explanations.json").read_text())
    names = {r["source"]: Path(r["overlay"]).name for r in records}
    assert names[str(paths[0])] == "é" * 75 + ".gradcam.png" and names[str(paths[1])] == "é" * 75 + "-2.gradcam.png"
    assert names[str(photo)] == f"{photo.stem}.gradcam.png"
    assert all((out / n).is_file() and len(n.encode()) <= 255 for n in names.values())
