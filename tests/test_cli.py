import json
import shutil
import sqlite3
import subprocess
import sys

import pandas as pd
import pytest

from artsentry.cli import EXIT_SOME_UNREADABLE, main

from .conftest import in_fresh_process


def test_predict_folder_with_hostile_files_completes(model_dir, hostile_dir, synthetic_dataset, capsys):
    for f in sorted((synthetic_dataset / "ivory").glob("*.jpg"))[:3]:
        shutil.copy(f, hostile_dir / f.name)
    code = main(["predict", str(hostile_dir), "--model", str(model_dir), "--json"])
    out, err = capsys.readouterr()
    assert code == EXIT_SOME_UNREADABLE
    rows = [json.loads(line) for line in out.splitlines()]
    names = {r["source"].rsplit("/", 1)[1] for r in rows}
    assert names == {"cmyk.jpg", "grey16.png", "palette_transparent.png", "good.jpg", "ivory_000.jpg",
                     "ivory_001.jpg", "ivory_002.jpg"}
    for r in rows:
        assert 0.0 <= r["score"] <= 1.0 and r["label"] in ("ivory", "non_ivory")
        assert r["flagged"] == (r["score"] >= r["threshold"])
        if r["source"].endswith(("ivory_000.jpg", "ivory_001.jpg", "ivory_002.jpg")):
            assert r["label"] == "ivory"
    err_lines = [l for l in err.splitlines() if l.startswith("error:")]
    assert len(err_lines) == 5  # zero bytes, truncated, text, bomb, 1x1 pixel: one line each
    for bad in ("zero_bytes.jpg", "truncated.jpg", "text.jpg", "bomb.png", "tracking_pixel.gif"):
        assert sum(bad in l for l in err_lines) == 1


def test_a_hostile_tiff_is_one_error_line_naming_it(model_dir, synthetic_dataset, tmp_path):
    """A TIFF claiming 40,000 samples per pixel: Pillow logged 'ERROR: More samples per pixel than
    can be decoded: 40000', naming no file, before the loader's own line; a run seemed to fail."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 180, 150)).save(buf, format="TIFF")
    data = bytearray(buf.getvalue())
    at = data.find(b"\x15\x01\x03\x00\x01\x00\x00\x00")  # SamplesPerPixel: SHORT, one value, then the value
    data[at + 8:at + 10] = (40000).to_bytes(2, "little")
    bad = tmp_path / "listing.tif"
    bad.write_bytes(bytes(data))
    good = sorted((synthetic_dataset / "ivory").glob("*.jpg"))[0]
    proc = subprocess.run([sys.executable, "-m", "artsentry", "-q", "predict", str(bad), str(good),
                           "--model", str(model_dir)], capture_output=True, text=True)
    assert proc.returncode == EXIT_SOME_UNREADABLE
    assert proc.stderr.splitlines() == [f"error: {bad}: not a recognised image format"]
    assert proc.stdout.startswith(f"{good}\tivory")


def test_predict_plain_output_and_missing_file(model_dir, synthetic_dataset, tmp_path, capsys):
    img = sorted((synthetic_dataset / "non_ivory").glob("*.jpg"))[0]
    code = main(["predict", str(img), "nonexistent.jpg", "https://shop.invalid/a.jpg", "--model", str(model_dir.parent)])
    out, err = capsys.readouterr()
    assert code == EXIT_SOME_UNREADABLE
    assert "https://shop.invalid/a.jpg: a URL, not a file (put it in a table's image column for 'artsentry screen" in err
    fields = out.strip().split("\t")
    assert fields[0] == str(img) and fields[1] == "non_ivory"
    assert fields[2].startswith("p(ivory)=") and "pass (threshold" in fields[3]
    assert "nonexistent.jpg: file not found" in err
    stale = tmp_path / "stale.jpg"  # a link whose photo was moved: named as such, given or found in a folder
    stale.symlink_to(tmp_path / "moved.jpg")
    for given in (stale, tmp_path):
        assert main(["predict", str(given), str(img), "--model", str(model_dir)]) == EXIT_SOME_UNREADABLE
        out, err = capsys.readouterr()
        assert f"stale.jpg: broken link: its target {tmp_path / 'moved.jpg'} is missing" in err
        assert out.count(str(img)) == 1
    stale.unlink()
    table = tmp_path / "listings.csv"
    table.write_text(f"image\n{img}\n")
    assert main(["predict", str(table), str(img), "--model", str(model_dir)]) == EXIT_SOME_UNREADABLE
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 1 and "listings.csv: a table, not an image ('artsentry screen' screens" in err
    # a file name with a tab, a line break and a carriage return in it stays one line of four fields
    odd = tmp_path / "odd" / "a\tb\nc\rd.jpg"
    odd.parent.mkdir()
    odd.write_bytes(img.read_bytes())
    assert main(["predict", str(odd.parent), "--model", str(model_dir)]) == 0
    lines = capsys.readouterr().out.split("\n")
    assert len(lines) == 2 and lines[1] == "" and lines[0].split("\t")[0] == str(odd.parent / "a\\tb\\nc\\rd.jpg")
    assert main(["predict", img.as_uri(), "--model", str(model_dir)]) == 0  # pasted from a browser: the file
    assert capsys.readouterr().out.split("\t")[0] == str(img)


def test_names_from_outside_reach_the_terminal_as_escapes_not_commands(model_dir, synthetic_dataset, tmp_path,
                                                                        capsys):
    """A file name holding ESC [ 8 m hid the rest of its line ("ivory FLAG") in the analyst's terminal; others
    erase lines, move the cursor, set the window title. Control characters are written as escapes, on stdout
    and stderr (the error lines and log warnings name files too)."""
    img = sorted((synthetic_dataset / "ivory").glob("*.jpg"))[0]
    folder = tmp_path / "seized"
    folder.mkdir()
    (folder / "a\x1b[8m.jpg").write_bytes(img.read_bytes())
    (folder / "b\x1b]0;title\x07\u202egpj.jpg").write_bytes(b"not an image")
    assert main(["-q", "predict", str(folder), "--model", str(model_dir)]) == EXIT_SOME_UNREADABLE
    out, err = capsys.readouterr()
    assert "\x1b" not in out + err and "\u202e" not in out + err and "\x07" not in err
    assert out.startswith(f"{folder}/a\\x1b[8m.jpg\t") and len(out.splitlines()) == 1
    assert f"{folder}/b\\x1b]0;title\\x07\\u202egpj.jpg: not a recognised image format" in err


def test_progress_bars_draw_through_the_escaping_stream_as_before():
    """tqdm's own control characters (a bar's line redrawn from "\\r", ESC [ A up to a bar above another)
    pass; a name in a bar's line does not."""
    import io

    from tqdm import tqdm

    from artsentry.cli import _Shown

    def draw(stream, name="x"):
        fixed = {"file": stream, "mininterval": 0, "bar_format": "{desc}: {n}/{total}"}  # no rate, no time
        with tqdm(total=2, desc="outer", **fixed) as outer:
            with tqdm(total=3, desc=name, **fixed) as inner:
                for _ in range(3):
                    inner.update()
            outer.update(2)

    plain, shown = io.StringIO(), io.StringIO()
    draw(plain)
    draw(_Shown(shown, progress=True))
    assert "\x1b[A" in plain.getvalue() and shown.getvalue() == plain.getvalue()
    evil = io.StringIO()
    draw(_Shown(evil, progress=True), name="x\x1b[2K\ry")
    assert "\x1b[2K" not in evil.getvalue() and "x\\x1b[2K\\ry" in evil.getvalue()


def test_a_name_the_terminals_encoding_lacks_is_written_as_its_escape():
    """On a terminal or file in ASCII or Latin-1 (LANG=en_US.ISO-8859-1), predict of a photo named 象牙.jpg
    ended at its line: "error: 'ascii' codec can't encode characters", the photo's result unprinted."""
    import io

    from artsentry.cli import _Shown

    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="ascii", newline="")
    _Shown(stream).write("/photos/象牙-ivoire.jpg\tivory\n")
    stream.flush()
    assert raw.getvalue() == b"/photos/\\u8c61\\u7259-ivoire.jpg\tivory\n"


def test_predict_with_a_multiclass_model_prints_the_label_and_its_probability(culture_model_dir, culture_dataset,
                                                                              capsys):
    """A culture model has no positive class and no threshold: each line is the photo, its likeliest label
    and that label's probability (a fourth field only for weak evidence); --json says threshold null."""
    from artsentry.inference import Predictor

    photo = sorted(culture_dataset.rglob("*.jpg"))[0]
    [pred] = Predictor.load(culture_model_dir).predict_files([str(photo)])
    assert main(["predict", str(photo), "--model", str(culture_model_dir)]) == 0
    fields = capsys.readouterr().out.rstrip("\n").split("\t")
    assert fields[:3] == [str(photo), pred.label, f"p={pred.score:.4f}"] and len(fields) in (3, 4)
    assert main(["predict", str(photo), "--model", str(culture_model_dir), "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["label"] == pred.label and row["threshold"] is None and "error" not in row


def test_predict_names_what_makes_a_photo_weak_evidence(model_dir, tmp_path, capsys):
    from PIL import Image, ImageFilter
    from skimage import data as skdata

    sharp = Image.fromarray(skdata.rocket()).convert("RGB")  # 640 x 427, crisp edges
    sharp.save(tmp_path / "sharp.jpg", quality=95)
    sharp.filter(ImageFilter.GaussianBlur(3)).save(tmp_path / "blurred.jpg", quality=95)
    small = sharp.copy()
    small.thumbnail((150, 150))
    small.save(tmp_path / "small.jpg", quality=95)
    assert main(["predict", str(tmp_path), "--model", str(model_dir), "--json"]) == 0
    rows = {r["source"].rsplit("/", 1)[1]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert rows["sharp.jpg"]["quality"]["warnings"] == [] and rows["sharp.jpg"]["quality"]["long_side"] == 640
    assert [w.split(":")[0] for w in rows["blurred.jpg"]["quality"]["warnings"]] == ["little fine detail"]
    assert [w.split(":")[0] for w in rows["small.jpg"]["quality"]["warnings"]] == ["small photo", "little fine detail"]
    # plain output: a fifth field only where there is something to say
    assert main(["predict", str(tmp_path), "--model", str(model_dir)]) == 0
    lines = {l.split("\t")[0].rsplit("/", 1)[1]: l.split("\t") for l in capsys.readouterr().out.splitlines()}
    assert len(lines["sharp.jpg"]) == 4
    assert lines["blurred.jpg"][4].startswith("weak evidence: little fine detail: sharpness 0.0")
    assert lines["small.jpg"][4].startswith("weak evidence: small photo: 150 px on its long side (under 224); ")


def test_evaluate_command_writes_outputs(model_dir, tmp_path, capsys):
    code = main(["-q", "evaluate", str(model_dir.parent), "--out", str(tmp_path), "--target-precision", "1.0"])
    assert code == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["threshold"]["rule"] == "target_precision"
    assert (tmp_path / "report.html").stat().st_size > 1000
    predictions = pd.read_csv(tmp_path / "predictions.csv")
    # the synthetic photos are 120 x 90 px: every one is warned small, and accuracy is split by it
    assert predictions["quality_warnings"].str.startswith("small photo: 120 px").all()
    assert set(predictions["photo_quality"]) == {"warned"}
    assert metrics["metrics"]["test"]["accuracy_by_photo_quality"]["warned"]["n"] == len(predictions)
    page = (tmp_path / "report.html").read_text()
    assert "accuracy by photo quality" in page
    # each proportion with its 95% interval, written, shown and printed
    from artsentry.evaluate import proportion_interval

    test = metrics["metrics"]["test"]
    n, right = test["n"], int(predictions["correct"].astype(bool).sum())
    assert test["ci95"]["accuracy"] == proportion_interval(right, n)
    lo, hi = test["ci95"]["accuracy"]
    assert f"<th>accuracy</th><td>{test['accuracy']:.4f}</td><td>{lo:.3f}–{hi:.3f}</td>" in page
    said = capsys.readouterr()
    assert f"accuracy {test['accuracy']:.4f} (95% CI {lo:.4f}-{hi:.4f})" in said.out
    assert "%|" not in said.err  # -q: no progress bars
    n_wrong = int((~predictions["correct"].astype(bool)).sum())
    mistakes = page.split("Most confident mistakes", 1)[1].split("Correct decisions", 1)[0]
    assert n_wrong > 0 and mistakes.count('class="weak">weak photo: small photo: 120 px') == min(24, n_wrong)
    # explained unless --no-explain: Grad-CAM overlays of the mistakes, and the feature map beside the report
    assert mistakes.count('alt="Grad-CAM overlay of ') == min(24, n_wrong)
    assert "<h2>Feature map</h2>" in page and (tmp_path / "projection" / "projection.html").exists()


def test_evaluate_without_out_reports_beside_its_own_model(model_dir, synthetic_dataset, tmp_path, capsys):
    """Two model folders kept side by side (soups, a run's epochs/01 and 02) both reported into their
    shared parent: the second evaluation replaced the first's metrics, predictions and report (found
    2026-12-06). A run's model still reports into its run folder."""
    import shutil

    for name, given in (("a", []), ("b", ["--model"])):  # the model named either way
        shutil.copytree(model_dir, tmp_path / "models" / name)
        assert main(["-q", "evaluate", *given, str(tmp_path / "models" / name), "--data", str(synthetic_dataset),
                     "--split", "all", "--no-explain"]) == 0
        assert f"report: {tmp_path / 'models' / name / 'report.html'}" in capsys.readouterr().out
    for name in ("a", "b"):
        metrics = json.loads((tmp_path / "models" / name / "metrics.json").read_text())
        assert metrics["model"] == str(tmp_path / "models" / name)
        assert (tmp_path / "models" / name / "predictions.csv").is_file()
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["a", "b"]
    run = tmp_path / "run"
    shutil.copytree(model_dir.parent / "model", run / "model")
    shutil.copy(model_dir.parent / "manifest.csv", run / "manifest.csv")
    assert main(["-q", "evaluate", str(run / "model"), "--no-explain"]) == 0
    assert f"report: {run / 'report.html'}" in capsys.readouterr().out
    assert json.loads((run / "metrics.json").read_text())["split"] == "test"
    assert not (run / "model" / "metrics.json").exists()


def test_evaluate_takes_its_model_as_the_other_commands_do_or_in_place_and_says_when_it_has_none_or_two(
        tmp_path, capsys):
    """predict, screen, explain and project take --model MODEL; evaluate took its model only in first place,
    and "evaluate --model M" ended on argparse's "unrecognized arguments". Either way now, one model."""
    for args, said in (
            (["--model", str(tmp_path / "nowhere")], f"{tmp_path / 'nowhere'}"),
            ([], "give the model to evaluate: artsentry evaluate MODEL (a run or model folder)"),
            (["a", "--model", "b"], "two models given, a and --model b: evaluate one, or several together with "
                                    "--ensemble")):
        assert main(["-q", "evaluate", *args]) == 1
        err = capsys.readouterr().err
        assert err.startswith("artsentry evaluate: error: ") and said in err and err.count("\n") == 1, err


def test_evaluate_with_an_unreadable_photo_measures_the_rest_and_exits_3(model_dir, synthetic_dataset, tmp_path,
                                                                         capsys):
    """As predict does: the metrics cover the readable photos, and a script learns of the others."""
    import shutil

    data = tmp_path / "data"
    for label in ("ivory", "non_ivory"):
        (data / label).mkdir(parents=True)
        for f in sorted((synthetic_dataset / label).glob("*.jpg"))[:3]:
            shutil.copy(f, data / label / f.name)
    (data / "ivory" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really")
    code = main(["-q", "evaluate", str(model_dir), "--data", str(data), "--split", "all", "--no-explain",
                 "--out", str(tmp_path / "e")])
    assert code == EXIT_SOME_UNREADABLE
    said = capsys.readouterr()
    assert "1 unreadable image(s) skipped; see predictions.csv" in said.out and "%|" not in said.err
    page = (tmp_path / "e" / "report.html").read_text()  # --no-explain: no overlays, no feature map
    assert "Grad-CAM overlay" not in page and "Feature map" not in page and not (tmp_path / "e" / "projection").exists()
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())["metrics"]["all"]
    assert metrics["n"] == 6 and metrics["unreadable"] == 1
    rows = pd.read_csv(tmp_path / "e" / "predictions.csv", keep_default_na=False).set_index("path")
    broken = rows.loc[str(data / "ivory" / "broken.jpg")]  # no decision: neither a label nor right or wrong
    assert broken["error"] and (broken["predicted"], broken["correct"], broken["score"]) == ("", "", "")
    assert set(rows.drop(index=str(data / "ivory" / "broken.jpg"))["predicted"]) <= {"ivory", "non_ivory"}
    # without --save-threshold the model is unchanged
    config = json.loads((model_dir / "config.json").read_text())
    assert config["threshold"] == 0.5 and config["threshold_rule"]["rule"] == "model config"


def test_errors_are_one_line_with_status_1(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "artsentry", "predict", "x.jpg", "--model", str(tmp_path / "none")],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "no such model folder" in proc.stderr
    assert "make ivory" not in proc.stderr  # a path the user gave: no hint about the default
    # run where the default model does not exist yet (a fresh clone before `make ivory`)
    proc = subprocess.run([sys.executable, "-m", "artsentry", "predict", "x.jpg"], capture_output=True, text=True,
                          cwd=tmp_path)
    assert proc.returncode == 1 and proc.stderr.strip().count("\n") == 0
    assert "runs/ivory/model: no such model folder" in proc.stderr and "make ivory" in proc.stderr
    # a library's message of several lines (pandas on a malformed CSV) is still one line
    bad = tmp_path / "manifest.csv"
    bad.write_text("label,path\nivory,x.jpg\nivory,data:image/png;base64,AAAA\n")
    proc = subprocess.run([sys.executable, "-m", "artsentry", "train", str(bad), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert "line 3 has 3 fields, the header 2" in proc.stderr


def test_help_usage_errors_and_log_checks_start_without_pytorch(tmp_path):
    """--help, a usage error and `verify LOG` must not pay PyTorch's import (seconds, ~0.9 GB)."""
    from artsentry import chainlog

    log = tmp_path / "audit.jsonl"
    log.write_text(chainlog.chained_lines([{"event": "a"}, {"event": "b"}], chainlog.GENESIS)[0], encoding="utf-8")
    proc = in_fresh_process([["verify", str(log)], ["train", "--help"], ["evaluate", "--help"],
                             ["train", "x", "--arch", "resnet"]])
    assert proc.returncode == 0, proc.stderr
    assert [line for line in proc.stdout.splitlines() if line.startswith("exit ")] == [
        "exit 0", "exit 0", "exit 0", "exit 2"]
    assert "2 linked record(s)" in proc.stdout and "efficientnet_lite2" in proc.stdout
    assert "invalid choice: 'resnet'" in proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "False"


def test_a_missing_model_or_register_folder_is_said_before_pytorch_loads(model_dir, tmp_path):
    """A mistyped --model took ~8 s (PyTorch's import) to say it names no model; a register made under a file ~9 s
    (the embedder loaded first). Each command that reads a model, or makes a register, says so at once now."""
    nope = str(tmp_path / "nope")
    (tmp_path / "a-file").write_text("x")
    argvs = [["predict", "x.jpg", "--model", nope], ["screen", "x.csv", "--model", nope, "--out", str(tmp_path / "o")],
             ["screen", "x.csv", "--model", "none", "--culture-model", nope, "--out", str(tmp_path / "o")],
             ["explain", "x.jpg", "--model", nope], ["export", nope],
             ["soup", nope, nope, "--out", str(tmp_path / "s")],
             ["project", "x.csv", "--model", nope], ["serve", "--model", nope], ["serve", "--culture-model", nope],
             ["evaluate", nope], ["evaluate", str(model_dir), "--ensemble", nope],
             ["register", "create", str(tmp_path / "a-file" / "reg")]]
    proc = in_fresh_process([["-q", *argv] for argv in argvs])
    assert proc.stdout.splitlines() == ["exit 1"] * len(argvs) + ["False"], proc.stderr
    said = proc.stderr.splitlines()
    assert len(said) == len(argvs)
    assert all(line.endswith(f"error: {nope}: no such model folder") for line in said[:-1]), said
    assert said[-1] == f"artsentry register: error: {tmp_path / 'a-file' / 'reg'}: Not a directory"
    assert not (tmp_path / "o").exists()  # nothing made on the way
    # a register whose embedder cannot be loaded leaves no folder behind
    assert main(["-q", "register", "create", str(tmp_path / "reg"), "--embedder", nope]) == 1
    assert not (tmp_path / "reg").exists()
    (tmp_path / "cases").mkdir()  # nor the folders made on the way to it, and none that was there before
    assert main(["-q", "register", "create", str(tmp_path / "cases" / "2026" / "reg"), "--embedder", nope]) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "cases"] and not any((tmp_path / "cases").iterdir())


def test_train_on_data_that_is_not_there_is_said_before_pytorch_loads(tmp_path, capsys):
    """`train` with a mistyped DATA took ~8 s (PyTorch's import) to say so. A resumed run may still name data that
    has moved since it started (it reads its saved split): that is let through, to the run's own checks."""
    nope = tmp_path / "nope.csv"
    proc = in_fresh_process([["-q", "train", str(nope), "--out", str(tmp_path / "run")]])
    assert proc.stdout.splitlines() == ["exit 1", "False"], proc.stderr
    assert proc.stderr.splitlines() == [f"artsentry train: error: {nope}: no such file or folder"]
    assert not (tmp_path / "run").exists()
    run = tmp_path / "started"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"fingerprint": "other", "source": str(nope.resolve())}))
    (run / "manifest.csv").write_text("path,label,object_id,split\n")
    assert main(["-q", "train", str(nope), "--out", str(run)]) == 1
    assert capsys.readouterr().err == f"artsentry train: error: {run} holds a run with other settings; use " \
                                      "--overwrite or another --out\n"


def test_choices_are_the_ones_the_models_know():
    from artsentry import choices
    from artsentry.data.transforms import RESIZE_STEPS
    from artsentry.models.efficientnet_lite import VARIANTS

    assert choices.ARCHITECTURES == ("smallcnn",) + tuple(f"efficientnet_{v}" for v in VARIANTS)
    assert set(choices.RESIZE_MODES) == set(RESIZE_STEPS)


def test_every_module_error_is_reported_in_one_line(tmp_path):
    """A register whose index file is corrupt used to end in a traceback (IndexFileError was a bare
    RuntimeError); every module's error now derives from the one base the command catches."""
    from artsentry.errors import ArtsentryError
    from artsentry.index.vectors import IndexFileError, VectorIndex

    bad = tmp_path / "index.faiss"
    bad.write_bytes(b"not faiss")
    with pytest.raises(ArtsentryError):
        VectorIndex.load(bad)
    assert issubclass(IndexFileError, ArtsentryError)


def test_evaluate_shift_reports_studio_listing_and_background(model_dir, tmp_path, capsys):
    code = main(["-q", "evaluate", str(model_dir.parent), "--out", str(tmp_path), "--shift", "--split", "all"])
    assert code == 0
    out = capsys.readouterr().out
    assert "drop studio -> listing" in out and "background_only" in out
    sh = json.loads((tmp_path / "metrics.json").read_text())["shift"]
    v = sh["variants"]
    # accuracy at chance can hide a ranking by the backdrop: the AUC is printed beside it
    bg_line = next(line for line in out.splitlines() if line.strip().startswith("background_only"))
    assert f"ROC-AUC {v['background_only']['roc_auc']:.4f}" in bg_line
    assert set(v) == {"studio", "listing", "background_only"} | {f"only_{f}" for f in
                                                                  ("background", "geometry", "lighting", "blur_noise",
                                                                   "overlay", "jpeg")}
    assert all(m["n"] == 48 for m in v.values())
    assert v["studio"]["accuracy"] >= 0.9  # the colour of the object decides, easily
    plain = json.loads((tmp_path / "metrics.json").read_text())["metrics"]["all"]
    # studio = the plain evaluation, same decoding; each variant's accuracy with its 95% interval
    assert {k: x for k, x in v["studio"].items() if k != "ci95"} == {k: plain[k] for k in v["studio"] if k != "ci95"}
    assert v["studio"]["ci95"] == {"accuracy": plain["ci95"]["accuracy"]}
    lo, hi = v["listing"]["ci95"]["accuracy"]
    assert lo <= v["listing"]["accuracy"] <= hi and f"(95% CI {lo:.4f}-{hi:.4f})" in out
    # with the object masked out both classes look the same: the model is at chance
    assert abs(v["background_only"]["accuracy"] - sh["chance_accuracy"]) <= 0.1
    assert sh["drop_points"] == round(100 * (v["studio"]["accuracy"] - v["listing"]["accuracy"]), 2)
    families = ("background", "geometry", "lighting", "blur_noise", "overlay", "jpeg")
    assert sh["drop_points_by_family"] == {f: round(100 * (v["studio"]["accuracy"] - v[f"only_{f}"]["accuracy"]), 2)
                                           for f in families}
    assert sh["drop_points_by_family"][sh["worst_family"]] == max(sh["drop_points_by_family"].values())
    assert sh["threshold"] == 0.5 and sh["chance_accuracy"] == 0.5  # the model's threshold; 24 photos a class
    # the listing-style set is fixed by its seed
    again = main(["-q", "evaluate", str(model_dir.parent), "--out", str(tmp_path / "b"), "--shift", "--split", "all"])
    assert again == 0
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["shift"] == sh


def test_train_says_which_fine_tuning_weights_it_kept_and_why_it_stopped():
    from artsentry.cli import _finetune_outcome

    def config(**finetune):
        return {"training": {"summary": {"finetune": finetune}}}

    stopped = config(best_epoch=-1, best_val_loss=0.2133, selected_on="studio", epochs_run=3, stopped_early=True)
    said = _finetune_outcome(stopped, 10)
    assert said.startswith("fine-tuning: stopped early after epoch 3 of 10")
    assert "kept the head stage it started from" in said and "--patience" in said
    ran = config(best_epoch=8, best_val_loss=0.17847, selected_on="studio+listing", epochs_run=10, stopped_early=False)
    assert _finetune_outcome(ran, 10) == ("fine-tuning: ran 10 epoch(s); kept epoch 9 (validation loss 0.1785 on "
                                          "studio+listing)")
    assert _finetune_outcome({"training": {"summary": {"head": {}}}}, 10) is None  # --mode frozen


def test_compare_prints_both_accuracies_and_the_paired_verdict(tmp_path, capsys):
    paths = [f"/p/{i}.jpg" for i in range(100)]
    a = pd.DataFrame({"path": paths, "label": "ivory", "correct": [True] * 82 + [False] * 18})
    b = a.assign(correct=[True] * 80 + [False] * 2 + [True] * 12 + [False] * 6)
    a.to_csv(tmp_path / "a.csv", index=False)
    b.to_csv(tmp_path / "b.csv", index=False)
    assert main(["compare", str(tmp_path / "a.csv"), str(tmp_path / "b.csv")]) == 0
    out = capsys.readouterr().out
    assert "100 photos judged by both\n" in out
    assert "A accuracy 0.8200 (95% CI 0.7333-0.8830)" in out and "B accuracy 0.9200 (95% CI" in out
    assert "both right 80, only A right 2, only B right 12, both wrong 6" in out
    assert "B - A: +10.00 points; McNemar exact p = 0.0129: B is better on these photos" in out
    a.to_csv(tmp_path / "a2.csv", index=False)  # the same predictions in another file: no difference
    assert main(["compare", str(tmp_path / "a.csv"), str(tmp_path / "a2.csv"), "--json"]) == 0
    same = json.loads(capsys.readouterr().out)
    assert same["p_value"] == 1.0 and same["only_a_right"] == same["only_b_right"] == 0
    assert main(["compare", str(tmp_path / "a.csv"), str(tmp_path / "a.csv")]) == 1  # the same file: a slip
    assert "A and B are the same file" in capsys.readouterr().err


@pytest.mark.parametrize("argv, quiet", [
    (["predict", "a.jpg"], False),
    (["-q", "predict", "a.jpg"], True),
    (["predict", "a.jpg", "-q"], True),
    (["screen", "in.csv", "--out", "o", "--quiet"], True),
    (["register", "search", "reg", "a.jpg", "-q"], True),
    (["register", "search", "reg", "a.jpg"], False),
])
def test_quiet_is_taken_before_or_after_the_command(argv, quiet):
    from artsentry.cli import build_parser

    assert build_parser().parse_args(argv).quiet is quiet


@pytest.mark.parametrize("argv, message", [
    (["register", "search", "REG", "a.jpg", "--threshold", "5"], "5 is outside the range of match scores, -1.5 to 1.5"),
    (["register", "set-threshold", "REG", "50"], "50 is outside the range of match scores"),
    (["register", "create", "REG", "--threshold", "-2"], "-2 is outside the range of match scores"),
    (["register", "search", "REG", "a.jpg", "-k", "0"], "0 is not a count of 1 or more"),
    (["screen", "IN", "--out", "OUT", "--batch-size", "0"], "0 is not a count of 1 or more"),
    (["screen", "IN", "--out", "OUT", "--top-k", "0"], "0 is not a count of 1 or more"),
    (["predict", "a.jpg", "--batch-size", "-3"], "-3 is not a count of 1 or more"),
    (["explain", "a.jpg", "--method", "occlusion", "--patch", "0"], "0 is not a count of 1 or more"),
    # a negative seed reached numpy ('expected non-negative integer', naming no option), a DataLoader worker
    # (evaluate --shift-seed: a worker's traceback as the message) or scikit-learn (project)
    (["train", "D", "--out", "R", "--seed", "-1"], "-1 is not a seed (a whole number from 0 to 4294967295)"),
    (["train", "D", "--out", "R", "--train-seed", "4294967296"], "4294967296 is not a seed"),
    (["evaluate", "RUN", "--shift", "--shift-seed", "-1"], "-1 is not a seed"),
    (["project", "D", "--seed", "-1"], "-1 is not a seed"),
    (["train-embedder", "D", "--out", "R", "--seed", "-1"], "-1 is not a seed"),
    (["build", "ivory", "C", "--out", "O", "--seed", "-1"], "-1 is not a seed"),
    (["register", "calibrate", "REG", "a.jpg", "--lots", "--compose", "0"], "0 is not a count of 1 or more"),
    (["explain", "a.jpg", "--method", "occlusion", "--stride", "-2"], "-2 is not a count of 1 or more"),
    (["serve", "--port", "99999"], "99999 is not a port (0 to 65535)"),
    (["collect", "--out", "C", "--ids", "1", "--limit", "-3"], "-3 is not a count of 1 or more"),
    (["collect", "--out", "C", "--ids", "1", "--limit", "0"], "0 is not a count of 1 or more"),
    (["collect", "--out", "C", "--ids", "1", "--workers", "0"], "0 is not a count of 1 or more"),
    (["collect", "--out", "C", "--ids", "1", "--timeout", "0"], "0 is not a number of seconds above 0"),
    (["collect", "--out", "C", "--ids", "1", "--retries", "-1"], "-1 is not a count of 0 or more"),
    (["collect", "--out", "C", "--ids", "1", "--backoff", "-1"], "-1 is not a number of seconds, 0 or more"),
    (["collect", "--out", "C", "--ids", "1", "--backoff", "nan"], "nan is not a number of seconds, 0 or more"),
    (["build", "culture", "COL", "--out", "OUT", "--top", "-1"], "-1 is not a count of 1 or more"),
    (["build", "instance", "COL", "--out", "OUT", "--min-images", "0"], "0 is not a count of 1 or more"),
    (["screen", "IN", "--out", "OUT", "--explain", "-1"], "-1 is not a count of 0 or more"),
    (["train", "DATA", "--out", "RUN", "--workers", "-1"], "-1 is not a count of 0 or more"),
    (["predict", "a.jpg", "--batch-size", "abc"], "argument --batch-size: 'abc' is not a whole number"),
    (["serve", "--port", "80.5"], "argument --port: '80.5' is not a whole number"),
    (["evaluate", "RUN", "--target-recall", "high"], "argument --target-recall: 'high' is not a number"),
])
def test_arguments_that_cannot_work_are_usage_errors(argv, message, capsys):
    """Found probing the commands' arguments (2026-12-05): a threshold of 5 (for 0.5) answered every
    register search 'no match' without a word; screen --batch-size 0 was a ZeroDivisionError, serve
    --port 99999 an OverflowError, both tracebacks; search -k 0 printed empty match lists. And on
    2026-12-07: collect --limit -3 collected all but the last 3 ids and --limit 0 every one; --timeout 0
    timed every request out, each after its 8 retries (~90 s); --workers 0 failed after the search; build
    --top -1 kept all culture groups but the smallest; a word for a number was 'invalid _count value',
    naming our function."""
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    assert message in capsys.readouterr().err


def test_photos_with_names_that_are_not_utf8_are_reported_with_the_results(model_dir, synthetic_dataset, tmp_path,
                                                                          capsys):
    """A seized phone's photos copied from an archive made with another encoding ('caf\\xe9.jpg'): they
    cannot be judged under a name no table can hold, and were left out with a warning only: predict
    exited 0 and screen's summary counted them nowhere. Now each is an error line (exit 3) for
    predict, and screen lists them in summary.json, says so, and exits 3."""
    import os

    folder = tmp_path / "dump"
    folder.mkdir()
    good = sorted((synthetic_dataset / "ivory").glob("*.jpg"))[0]
    shutil.copy(good, folder / "a.jpg")
    shutil.copy(good, os.fsdecode(bytes(folder) + b"/caf\xe9.jpg"))
    assert main(["-q", "predict", str(folder), "--model", str(model_dir)]) == EXIT_SOME_UNREADABLE
    out, err = capsys.readouterr()
    assert out.startswith(f"{folder / 'a.jpg'}\t") and len(out.splitlines()) == 1
    assert f"error: {folder}/caf\\xe9.jpg: not read: its file name is not UTF-8; rename it" in err
    alone = tmp_path / "alone"  # the folder's only photo: named for renaming, not called an empty folder
    alone.mkdir()
    shutil.copy(good, os.fsdecode(bytes(alone) + b"/caf\xe9.jpg"))
    assert main(["-q", "predict", str(alone), "--model", str(model_dir)]) == EXIT_SOME_UNREADABLE
    assert capsys.readouterr().err == (f"error: {alone}/caf\\xe9.jpg: not read: its file name is not UTF-8; rename "
                                       "it (for example with convmv) and run again\n")
    assert main(["-q", "screen", str(folder), "--out", str(tmp_path / "out"), "--model", str(model_dir)]) \
        == EXIT_SOME_UNREADABLE
    out, _ = capsys.readouterr()
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["recorded"] == 1 and summary["not_screened"]["files"] == [f"{folder}/caf\\xe9.jpg"]
    assert "1 image(s) of the folder not screened: their file names are not UTF-8" in out


def test_output_cut_short_by_its_reader_and_os_errors_are_not_tracebacks(model_dir, synthetic_dataset, tmp_path):
    """`artsentry predict photos/ | head -1` ended in a BrokenPipeError traceback; a folder that
    cannot be written (--out under a file, a full disk) in an OSError one (found 2026-12-05)."""
    folder = synthetic_dataset / "ivory"
    # 8 x 24 photos, ~100 KB of --json lines: more than a pipe holds, so writing goes on after head left
    proc = subprocess.run(f"'{sys.executable}' -m artsentry -q predict {(repr(str(folder)) + ' ') * 8} --json "
                          f"--model '{model_dir}' | head -1; echo \"status ${{PIPESTATUS[0]}}\"", shell=True,
                          executable="/bin/bash", capture_output=True, text=True)
    assert json.loads(proc.stdout.splitlines()[0])["source"].startswith(str(folder))
    assert proc.stdout.splitlines()[-1] == "status 141"
    assert proc.stderr == ""
    (tmp_path / "a-file").write_text("x")
    proc = subprocess.run([sys.executable, "-m", "artsentry", "-q", "register", "create", str(tmp_path / "a-file" / "reg")],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr == f"artsentry register: error: {tmp_path / 'a-file' / 'reg'}: Not a directory\n"


def _readme_commands():
    """Each ``artsentry`` command in the README: in its code blocks (continuation lines joined, comments
    cut, after any ``NAME=value`` settings) and in its prose's code spans."""
    import re

    from .conftest import REPO

    text = (REPO / "README.md").read_text()
    commands = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            found = re.match(r"^(?:[A-Z_]+=\S+\s+)*(?:\.venv/bin/)?artsentry\s+(.*)$", line.strip())
            if found:
                commands.append(found.group(1).split(" #")[0].strip())
            elif commands and line.startswith(" ") and line.strip().startswith("["):
                commands[-1] += " " + line.strip()  # the synopsis's continued line
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    spans = [" ".join(span.split()) for span in re.findall(r"`(?:\.venv/bin/)?artsentry\s+([^`]+)`", prose)]
    return commands, [span for span in spans if not span.split()[0].isupper()]  # not `artsentry COMMAND --help`


def test_every_command_and_option_the_readme_shows_exists():
    """Docs that match the code: each example command of the README's code blocks parses as written, and
    each option and choice that its synopsis lines (with ``[...]`` and ``a|b``, which cannot be parsed whole)
    and its prose name belongs to its command. Commands are parsed, not run."""
    import re
    import shlex

    from artsentry.cli import build_parser

    parser = build_parser()
    sub = {name: p for a in parser._subparsers._group_actions for name, p in a.choices.items()}
    blocks, prose = _readme_commands()
    examples = [c for c in blocks if not re.search(r"\[|\||\.\.\.", c)]
    assert len(examples) > 20 and len(blocks + prose) > 60
    for command in examples:
        try:
            parser.parse_args(shlex.split(command))
        except SystemExit:
            pytest.fail(f"README: 'artsentry {command}' does not parse")
    for line in blocks + prose:  # options in full, too: parsing accepts abbreviations (--has-image)
        name, rest = line.split(" ", 1) if " " in line else (line, "")
        assert name in sub, f"README: no command {name!r} ({line})"
        parsers = [sub[name]]
        actions = [a for a in sub[name]._actions if a.choices and not a.option_strings]
        first = rest.split(" ", 1)[0]
        if actions and first and not first.startswith(("[", "(", "-")) and not first.isupper():
            words = first.split("|")  # build ivory|culture|instance, register create|add|..., register rebuild
            choices = actions[0].choices
            for word in words:
                assert word in choices, f"README: artsentry {name} {word!r}: not one of {sorted(choices)}"
            if len(words) > 1:
                assert not set(choices) - set(words), \
                    f"README synopsis of {name} leaves out {sorted(set(choices) - set(words))}"
            if isinstance(choices, dict):
                parsers = [choices[w] for w in words]
        options = {o for p in parsers for a in p._actions for o in a.option_strings}
        for option in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", rest):
            assert option in options, f"README: {option} is not an option of 'artsentry {line}'"
        for option, values in re.findall(r"(--[a-z][a-z0-9-]*) ([a-z0-9_]+(?:\|[a-z0-9_]+)+)\b", rest):
            [action] = {a for p in parsers for a in p._actions if option in a.option_strings}
            if action.choices is not None:  # --split takes any split name a manifest has
                assert set(values.split("|")) <= set(action.choices), \
                    f"README: {option} {values}: its choices are {action.choices}"



def test_every_benchmark_script_is_named_in_the_readme():
    """README's "Tests and benchmarks" says what each script of benchmarks/ measures: four added since the
    list was last brought up to date were in no sentence of it."""
    from .conftest import REPO

    text = (REPO / "README.md").read_text()
    scripts = sorted(p.name for p in (REPO / "benchmarks").glob("*.py"))
    assert len(scripts) > 30 and [name for name in scripts if f"`{name}`" not in text
                                  and f"benchmarks/{name}" not in text] == []

@pytest.mark.parametrize("argv", [
    ["evaluate", "RUN", "--target-recall", "1"],  # a fraction in (0, 1]: 1 is one
    ["evaluate", "RUN", "--target-precision", "0.001"],
    ["register", "search", "REG", "a.jpg", "--threshold", "1.5", "-k", "1"],  # the ends of the match scores
    ["register", "create", "REG", "--threshold", "-1.5"],
    ["serve", "--port", "0"],  # any free port
    ["serve", "--port", "65535"],
    ["collect", "--out", "C", "--ids", "1", "--retries", "0", "--backoff", "0", "--limit", "1", "--timeout", "0.01"],
    ["screen", "IN", "--out", "OUT", "--explain", "0", "--workers", "0"],
])
def test_arguments_at_the_ends_of_their_ranges_are_taken(argv):
    from artsentry.cli import build_parser

    build_parser().parse_args(argv)  # a usage error would be SystemExit


@pytest.mark.parametrize("argv, message", [
    (["evaluate", "RUN", "--target-recall", "0"], "0 is not in (0, 1]"),
    (["evaluate", "RUN", "--target-precision", "1.01"], "1.01 is not in (0, 1]"),
    (["register", "search", "REG", "a.jpg", "--threshold", "-1.51"], "-1.51 is outside the range of match scores"),
    (["serve", "--port", "-1"], "-1 is not a port"),
    (["serve", "--port", "65536"], "65536 is not a port"),
])
def test_arguments_just_past_the_ends_of_their_ranges_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("argv, said", [
    (["collect", "--out", "C", "--ids", "1"],
     "collect: interrupted; the same command continues the crawl where it stopped"),
    (["screen", "IN", "--out", "OUT"], "screen: interrupted; the same command resumes the screening where it stopped"),
    (["register", "import", "REG", "T.csv"],
     "register: interrupted; the same command goes on (photos already registered are skipped)"),
    (["register", "search", "REG", "a.jpg"], "register: interrupted"),
    (["evaluate", "RUN"], "evaluate: interrupted"),
])
def test_an_interrupted_command_that_resumes_says_how(argv, said, capsys, monkeypatch):
    """Ctrl-C printed 'interrupted' alone; a user who stopped a long crawl, screening, import or training did
    not learn that running it again picks up where it stopped (train's line: the SIGTERM test)."""
    from artsentry import cli

    def ctrl_c(args):
        raise KeyboardInterrupt

    monkeypatch.setitem(cli.COMMANDS, argv[0], ctrl_c)
    assert main(argv) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"artsentry {said}"


@pytest.mark.parametrize("stop, said", [(KeyboardInterrupt, "artsentry screen: interrupted; the same command "
                                         "resumes the screening where it stopped"),
                                        (OSError(28, "No space left on device", "OUT/report.csv"),
                                         "artsentry screen: error: OUT/report.csv: No space left on device; free "
                                         "some disk space, then the same command resumes the screening where it "
                                         "stopped")])
def test_a_stopped_commands_last_line_starts_a_line_and_no_bar_is_drawn_after_it(stop, said, capsys, monkeypatch):
    """A progress bar the stop left open is closed only when its frame goes, after the stop's line: on a log
    file the last line ran on from the bar ('... 352/2829 [00:08, flagged=338]artsentry screen: interrupted')
    and the bar was drawn again after it. The bars are closed first now."""
    from tqdm.auto import tqdm

    from artsentry import cli

    def command(args):  # as Screener.run's bar, closed after its loop
        bar = tqdm(total=10, desc="screen", unit="img", mininterval=0)
        bar.update(1)
        raise stop

    monkeypatch.setitem(cli.COMMANDS, "screen", command)
    main(["screen", "IN", "--out", "OUT"])
    err = capsys.readouterr().err
    assert err.endswith("\n" + said + "\n") and err.count(said) == 1
    assert "screen:   0%" in err  # the bar was drawn, then ended with its line


@pytest.mark.parametrize("argv, stop, said", [
    (["collect", "--out", "C", "--ids", "1"], sqlite3.OperationalError("database or disk is full"),
     "collect: error: database or disk is full; free some disk space, then the same command continues the crawl "
     "where it stopped"),
    (["screen", "IN", "--out", "OUT"], OSError(28, "No space left on device"),
     "screen: error: No space left on device; free some disk space, then the same command resumes the screening "
     "where it stopped"),
    (["register", "import", "REG", "T.csv"], OSError(122, "Disk quota exceeded", "REG/index.faiss"),
     "register: error: REG/index.faiss: Disk quota exceeded; free some disk space, then the same command goes on "
     "(photos already registered are skipped)"),
    (["evaluate", "RUN"], OSError(28, "No space left on device", "RUN/report.html"),
     "evaluate: error: RUN/report.html: No space left on device; free some disk space"),
    (["register", "add", "REG", "A", "a.jpg"], sqlite3.DatabaseError("file is not a database"),
     "register: error: file is not a database"),
])
def test_a_full_disk_is_one_line_saying_how_to_go_on(argv, stop, said, capsys, monkeypatch):
    """A full disk stopped collect in a traceback (SQLite's error is no OSError), and screen with '[Errno 28]
    No space left on device', saying neither that what was done is kept nor how to go on."""
    from artsentry import cli

    def command(args):
        raise stop

    monkeypatch.setitem(cli.COMMANDS, argv[0], command)
    assert main(argv) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"artsentry {said}"


def test_train_defaults_depend_on_the_architecture_and_the_schedule():
    """What ``train`` runs when not told: lite0 fine-tunes 8 epochs and waits half the schedule (at least 3)
    for a better validation loss; the small CNN trains from scratch for 30 with a patience of 6; the head's
    peak rate 1e-3; the teachers' share 0.5, and a share without a teacher is refused."""
    from artsentry.cli import _settings_from_args, build_parser
    from artsentry.train import TrainSettings

    def settings(*extra):
        return _settings_from_args(build_parser().parse_args(["train", "DATA", "--out", "RUN", *extra]))

    s = settings()
    assert (s.architecture, s.mode, s.epochs, s.patience, s.lr) == ("efficientnet_lite0", "finetune", 8, 4, 1e-3)
    assert s.distill_weight == 0.5 and s.teacher == () and s.class_weighting and s.calibrate
    assert s.listing_p == TrainSettings().listing_p and s.crop_scale == TrainSettings().crop_scale
    assert (settings("--epochs", "10").patience, settings("--epochs", "4").patience) == (5, 3)
    assert settings("--epochs", "10", "--patience", "2").patience == 2
    small = settings("--arch", "smallcnn", "--mode", "frozen")
    assert (small.mode, small.epochs, small.patience) == ("finetune", 30, 6)  # nothing pretrained to freeze
    assert settings("--lr", "3e-4").lr == 3e-4 and settings("--listing-p", "0.9").listing_p == 0.9
    assert settings("--crop-scale", "0.3", "1").crop_scale == (0.3, 1.0)
    taught = settings("--teacher", "A", "--teacher", "B", "--distill-weight", "0.7")
    assert taught.teacher == ("A", "B") and taught.distill_weight == 0.7
    assert not settings("--no-class-weights", "--no-calibrate").class_weighting
    with pytest.raises(ValueError, match="give --teacher MODEL"):
        settings("--distill-weight", "0.3")


def test_options_naming_several_models_add_up_when_repeated():
    """``--teacher A --teacher B`` kept only B, and ``evaluate --ensemble A --ensemble B`` measured an ensemble
    without A, both without a word: each is now both A and B, as the serve options that repeat are."""
    from artsentry.cli import build_parser

    parse = build_parser().parse_args
    assert parse(["train", "D", "--out", "R", "--teacher", "A", "--teacher", "B", "C"]).teacher == ["A", "B", "C"]
    assert parse(["evaluate", "RUN", "--ensemble", "A", "--ensemble", "B"]).ensemble == ["A", "B"]
    assert parse(["soup", "M1", "M2", "--out", "S", "--weights", "1", "--weights", "2"]).weights == [1.0, 2.0]
    assert parse(["evaluate", "RUN"]).ensemble == [] and parse(["train", "D", "--out", "R"]).teacher == []
