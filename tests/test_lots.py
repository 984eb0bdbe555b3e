import json
import shutil

import numpy as np
import pytest
from PIL import Image

from artsentry.cli import EXIT_SOME_UNREADABLE, main
from artsentry.inference import Predictor
from artsentry.lots import choose_lot_threshold, compose_lot, lot_photos, scan, tile_boxes, tile_crops

from .conftest import abc_register, object_photo, register_lot, synthetic_lot


def test_tiles_are_half_the_photo_and_spread_corner_to_corner():
    boxes = tile_boxes(800, 600)
    assert len(boxes) == 9 and boxes[0] == (0, 0, 400, 300) and boxes[-1] == (400, 300, 800, 600)
    assert {b[0] for b in boxes} == {0, 200, 400} and {b[1] for b in boxes} == {0, 150, 300}
    assert all((r - l, b - t) == (400, 300) for l, t, r, b in boxes)
    crops, where = tile_crops(Image.new("RGB", (800, 600)))
    assert where[0] is None and crops[0].size == (800, 600) and [c.size for c in crops[1:]] == [(400, 300)] * 9
    with pytest.raises(ValueError, match="at least 2"):
        tile_boxes(100, 100, grid=1)
    assert tile_boxes(100, 60, grid=2) == [(0, 0, 50, 30), (50, 0, 100, 30), (0, 30, 50, 60), (50, 30, 100, 60)]
    assert set(tile_boxes(1, 1)) == {(0, 0, 1, 1)}  # a tile is never empty, however small the photo


def test_lot_threshold_is_the_best_accuracy_between_the_lots_it_separates():
    assert choose_lot_threshold([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == pytest.approx(0.5)
    # one positive scores under a negative: best accuracy (5/6) lies between 0.6 and 0.7, or 0.3 and 0.4
    t = choose_lot_threshold([0.1, 0.3, 0.4, 0.6, 0.7, 0.9], [0, 0, 1, 0, 1, 1])
    s = np.array([0.1, 0.3, 0.4, 0.6, 0.7, 0.9])
    assert ((s >= t) == np.array([0, 0, 1, 0, 1, 1])).mean() == pytest.approx(5 / 6)
    assert t == pytest.approx(0.65)  # two candidates tie (0.35 and 0.65): the middle one of them in score order
    with pytest.raises(ValueError, match="with and without"):
        choose_lot_threshold([0.2, 0.4], [1, 1])


def test_lot_figures_count_the_lots_without_a_positive_that_are_flagged():
    from artsentry.lots import lot_metrics

    m = lot_metrics(np.array([0.9, 0.2, 0.7, 0.1]), np.array([1, 0, 0, 0]), 0.5)
    assert m["false_flag_rate"] == pytest.approx(1 / 3, abs=1e-6) and m["recall"] == 1.0 and m["accuracy"] == 0.75


def test_composed_lots_are_seeded_and_alternate_truth(tmp_path):
    paths = []
    for i, c in enumerate([(235, 220, 190)] + [(40, 70, 160)] * 5):
        paths.append(str(tmp_path / f"{i}.jpg"))
        object_photo(c, seed=i).save(paths[-1])
    a = list(lot_photos(paths[:1], paths[1:], 4, seed=3))
    b = list(lot_photos(paths[:1], paths[1:], 4, seed=3))
    assert [t for _, t in a] == [1, 0, 1, 0]
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for (x, _), (y, _) in zip(a, b))
    assert a[0][0].size == (900, 900)
    lot = compose_lot([Image.new("RGB", (400, 300), (255, 0, 0))], np.random.default_rng(0), side=200)
    red = np.all(np.asarray(lot) == (255, 0, 0), axis=-1)
    assert 0 < red[:100, :100].mean() and not red[100:, :].any() and not red[:, 100:].any()  # first quarter only


def test_lot_scan_finds_the_object_the_whole_photo_hides(tmp_path, model_dir, synthetic_dataset, capsys):
    """A cream 'ivory' blob among blue ones: the best tile is the one holding it, scoring over the whole photo."""
    run = tmp_path / "run"
    shutil.copytree(model_dir.parent, run)  # the shared model is not to be modified
    predictor = Predictor.load(run / "model")
    canvas = synthetic_lot(synthetic_dataset)  # the cream one bottom right
    r = scan(predictor, [canvas], threshold=0.5)[0]
    assert r.box == (240, 180, 480, 360) and r.score > max(r.whole, 0.5) and r.flagged
    all_blue = synthetic_lot(synthetic_dataset, ivory=False)
    assert scan(predictor, [all_blue])[0].score < r.score - 0.2  # no tile of an all-blue lot looks like the cream one
    lot = tmp_path / "lot.jpg"
    canvas.save(lot, quality=95)

    # predict --lots needs the lot threshold, which evaluate --lots measures and stores
    assert main(["-q", "predict", str(lot), "--lots", "--model", str(run / "model")]) == 1
    assert "no lot threshold" in capsys.readouterr().err
    assert main(["-q", "evaluate", str(run), "--lots", "1"]) == 1
    assert capsys.readouterr().err == "artsentry evaluate: error: --lots needs at least 2 lot photos per split\n"
    assert main(["-q", "evaluate", str(run), "--lots", "8", "--input-size", "96"]) == 1
    assert "drop --input-size" in capsys.readouterr().err
    before = json.loads((run / "model" / "config.json").read_text())
    assert main(["-q", "evaluate", str(run), "--no-explain", "--lots", "12", "--out", str(tmp_path / "ev")]) == 0
    out = capsys.readouterr().out
    assert "photos of 4 objects (12 test lots" in out and "3x3 tile scan" in out
    after = json.loads((run / "model" / "config.json").read_text())
    saved = after.pop("lots")
    assert after == before  # nothing but the lot block changes
    assert saved == json.loads((tmp_path / "ev" / "lots.json").read_text())
    assert saved["grid"] == 3 and 0 < saved["threshold"] <= 1 and saved["test"]["tile_scan"]["n"] == 12
    assert main(["-q", "predict", str(lot), "--lots", "--json", "--model", str(run / "model")]) == 0
    line = json.loads(capsys.readouterr().out)
    assert line["mode"] == "lots" and line["box"] == [240, 180, 480, 360] and line["threshold"] == saved["threshold"]
    assert line["flagged"] == (line["score"] >= saved["threshold"])
    (tmp_path / "broken.jpg").write_bytes(b"")  # plain output, one line a photo; an unreadable one goes on
    assert main(["-q", "predict", str(lot), str(tmp_path / "broken.jpg"), "--lots", "--model",
                 str(run / "model")]) == EXIT_SOME_UNREADABLE
    out, err = capsys.readouterr()
    assert out == (f"{lot}\t{'FLAG' if line['flagged'] else 'pass'} (lot threshold {saved['threshold']:.4f})\t"
                   f"max p(ivory)={line['score']:.4f} in tile 240,180,480,360\twhole photo {line['whole']:.4f}\n")
    assert err.startswith(f"error: {tmp_path / 'broken.jpg'}: ") and err.count("\n") == 1

    # screen --lots: the same scan in the decoding workers, the tile named in results.csv; a lot
    # threshold just under this lot's score, so that it is flagged and queued
    import pandas as pd

    from artsentry.models.artifact import update_config

    update_config(run / "model", lots={**saved, "threshold": line["score"] - 0.01})

    folder = tmp_path / "listings"
    folder.mkdir()
    shutil.copy(lot, folder / "lot.jpg")
    all_blue.save(folder / "blue.jpg", quality=95)
    assert main(["-q", "screen", str(folder), "--out", str(tmp_path / "s"), "--model", str(model_dir), "--lots"]) == 1
    assert "no lot threshold" in capsys.readouterr().err  # the shared model has none
    assert main(["-q", "screen", str(folder), "--out", str(tmp_path / "s"), "--model", str(run / "model"), "--lots",
                 "--explain", "0"]) == 0
    res = pd.read_csv(tmp_path / "s" / "results.csv").set_index("listing_id")
    assert res.at["lot.jpg", "lot_tile_box"] == "0.5 0.5 1 1"
    assert res.at["lot.jpg", "score"] == pytest.approx(line["score"], abs=2e-3)  # decoded alike, batched alike
    assert bool(res.at["lot.jpg", "flagged"]) and not bool(res.at["blue.jpg", "flagged"])
    assert res.at["lot.jpg", "lot_whole_score"] == pytest.approx(line["whole"], abs=2e-3)
    page = (tmp_path / "s" / "queue.html").read_text()  # its queue card outlines the tile on the thumbnail
    assert 'class="tile" title="tile that decided" style="left:50%;top:50%;width:50%;height:50%"' in page
    assert page.count("scanned in tiles (lot threshold") == 1
    # a run screened without --lots is not resumed with it
    assert main(["-q", "screen", str(folder), "--out", str(tmp_path / "s"), "--model", str(run / "model"),
                 "--explain", "0"]) == 1
    assert "another --lots choice" in capsys.readouterr().err


def test_screen_lots_searches_the_register_tile_by_tile(tmp_path, photos):
    import pandas as pd

    from artsentry.screen import ScreenError, Screener, read_evidence

    reg_dir = tmp_path / "reg"
    reg = abc_register(reg_dir, photos)
    lot = register_lot(photos)
    folder = tmp_path / "in"
    folder.mkdir()
    lot.save(folder / "lot.png")
    with pytest.raises(ScreenError, match="register has no lot threshold"):
        Screener(None, reg_dir, progress=False, lots=True)
    reg.calibrate([photos["unknown"]], target_fmr=0.0, lots=True)
    lot_threshold = reg.lot_threshold
    expected = reg.search([str(folder / "lot.png")], k=3, lots=True)[0]
    reg.close()
    out = tmp_path / "out"
    summary = Screener(None, reg_dir, progress=False, lots=True, k=3).run(folder, out)
    assert summary["complete"]
    r = read_evidence(out / "evidence.jsonl")[0]
    assert [m["object_id"] for m in r["matches"]] == [m.object_id for m in expected.matches]
    assert r["matches"][0]["object_id"] == "A" and tuple(r["matches"][0]["box"]) == (0.5, 0.5, 1.0, 1.0)
    assert r["matches"][0]["score"] == pytest.approx(expected.matches[0].score, abs=1e-4)
    assert r["matched"] == (r["matches"][0]["score"] >= lot_threshold) == (not expected.no_match)
    res = pd.read_csv(out / "results.csv")
    assert res.at[0, "best_match"] == "A" and res.at[0, "best_match_tile_box"] == "0.5 0.5 1 1"


def test_a_tile_box_is_in_the_files_upright_pixels_whatever_the_decode_scale(tmp_path):
    """`predict --lots` and the server decode a large JPEG at a reduced scale now, as `screen` does; the box
    of the tile that decided is still given in the pixels of the photo as it stands, not the decoded ones."""
    from artsentry.data.images import load_image

    class SixthCropWins:  # a binary model whose highest probability is the sixth crop's (the fifth tile)
        binary, positive_index = True, 1

        def predict_proba(self, crops):
            p = np.linspace(0.1, 0.2, len(crops))
            p[5] = 0.9
            return np.stack([1 - p, p], axis=1)

    exif = Image.Exif()
    exif[0x0112] = 6  # stored 1400 x 1000, upright 1000 x 1400
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (1000, 1400, 3), dtype=np.uint8)).save(tmp_path / "t.jpg", exif=exif)
    img = load_image(tmp_path / "t.jpg", draft_size=(320, 320))
    assert img.size == (500, 700) and img.info["upright_size"] == (1000, 1400)  # decoded at half scale
    [r] = scan(SixthCropWins(), [img], threshold=0.5, grid=3)
    assert r.score == pytest.approx(0.9) and r.flagged and r.box == tile_boxes(1000, 1400, grid=3)[4]
