import math
import os

import numpy as np
import pandas as pd
import pytest

from artsentry.evaluate import (accuracy_by, apply_temperature, binary_metrics, choose_threshold, compare_predictions,
                                fit_temperature, multiclass_metrics, paired_comparison, proportion_interval, reliability, temperature_threshold, threshold_for_precision,
                                threshold_for_recall, top_k_accuracy)


def test_binary_metrics_by_hand():
    y = [1, 1, 1, 0, 0, 0, 0, 1]
    s = [0.9, 0.8, 0.4, 0.6, 0.1, 0.2, 0.3, 0.7]
    m = binary_metrics(y, s, threshold=0.5)
    # flagged: 0.9 0.8 0.6 0.7 -> tp 3, fp 1, fn 1, tn 3
    assert m["confusion_matrix"] == [[3, 1], [1, 3]]
    assert m["accuracy"] == 0.75 and m["precision"] == 0.75 and m["recall"] == 0.75 and m["f1"] == 0.75
    assert m["specificity"] == 0.75
    # AUC: 16 pos-neg pairs; only (0.4 vs 0.6) is misordered -> 15/16
    assert m["roc_auc"] == pytest.approx(15 / 16)


def test_proportion_interval_is_wilsons():
    from scipy.stats import binomtest

    for k, n in ((526, 566), (81, 263), (0, 10), (10, 10), (1, 1), (3, 7)):
        ref = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        assert proportion_interval(k, n) == pytest.approx([ref.low, ref.high], abs=1e-6), (k, n)
    assert proportion_interval(0, 0) is None
    with pytest.raises(ValueError):
        proportion_interval(5, 4)
    # more photos, a narrower interval around the same rate
    lo1, hi1 = proportion_interval(90, 100)
    lo2, hi2 = proportion_interval(900, 1000)
    assert lo1 < lo2 < 0.9 < hi2 < hi1


def test_metrics_carry_intervals_of_their_proportions():
    y = [1, 1, 1, 0, 0, 0, 0, 1]
    s = [0.9, 0.8, 0.4, 0.6, 0.1, 0.2, 0.3, 0.7]
    ci = binary_metrics(y, s, threshold=0.5)["ci95"]  # tp 3, fp 1, fn 1, tn 3
    assert ci["accuracy"] == proportion_interval(6, 8)
    assert ci["precision"] == ci["recall"] == ci["specificity"] == proportion_interval(3, 4)
    assert binary_metrics([0, 0], [0.1, 0.2], 0.5)["ci95"]["recall"] is None  # no positives: no recall
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.5, 0.3, 0.2]])
    assert multiclass_metrics([0, 1, 2], probs, list("abc"))["ci95"]["accuracy"] == proportion_interval(2, 3)
    import pandas as pd

    table = pd.DataFrame({"dept": ["a", "a", "a", "b"], "correct": [True, True, False, True],
                          "label": ["x", "y", "x", "y"], "error": [None] * 4})
    by = accuracy_by(table, "dept")
    assert by["a"]["ci95"] == proportion_interval(2, 3) and by["b"]["ci95"] == proportion_interval(1, 1)


def test_paired_comparison_counts_the_photos_only_one_model_got_right():
    # 100 photos: both right on 80, A alone on 2, B alone on 12, both wrong on 6
    a = [True] * 80 + [True] * 2 + [False] * 12 + [False] * 6
    b = [True] * 80 + [False] * 2 + [True] * 12 + [False] * 6
    c = paired_comparison(a, b)
    assert (c["both_right"], c["only_a_right"], c["only_b_right"], c["both_wrong"]) == (80, 2, 12, 6)
    assert c["accuracy_a"] == 0.82 and c["accuracy_b"] == 0.92 and c["difference_points"] == 10.0
    # McNemar exact: P(at most 2 of 14 fair coin flips, or at least 12) = 2 * (1 + 14 + 91) / 2**14
    assert c["p_value"] == pytest.approx(2 * 106 / 2**14, abs=1e-6)
    assert c["ci95"]["accuracy_b"] == proportion_interval(92, 100)
    # the same accuracies reached on the same photos: nothing to tell them apart
    same = paired_comparison(a, a)
    assert same["p_value"] == 1.0 and same["difference_points"] == 0.0
    # one model ahead by one photo of 14 that differ: no evidence
    assert paired_comparison([True] * 7 + [False] * 7, [False] * 7 + [True] * 7)["p_value"] == 1.0
    # far apart: a p-value far under 1e-6 is still one, not 0 (rounded to 6 decimals, it printed "p = 0")
    far = paired_comparison([True] * 287 + [False] * 29, [False] * 287 + [True] * 29)
    assert far["p_value"] == pytest.approx(2 * sum(math.comb(316, k) for k in range(30)) / 2**316, rel=1e-6)
    assert 0 < far["p_value"] < 1e-40
    with pytest.raises(ValueError):
        paired_comparison([True], [True, False])


def test_compare_predictions_matches_photos_by_path(tmp_path):
    import pandas as pd

    rows = [(f"/p/{i}.jpg", "ivory" if i % 2 else "other", "test" if i < 8 else "val") for i in range(10)]
    a = pd.DataFrame(rows, columns=["path", "label", "split"]).assign(correct=[True] * 10, error=None)
    b = a.copy()
    b["correct"] = pd.Series([False, False, True, True, True, True, True, True, False, True], dtype=object)
    b.loc[7, "error"], b.loc[7, "correct"] = "7.jpg: truncated", None  # unreadable in B only
    b = pd.concat([b.iloc[1:], pd.DataFrame([{"path": "/p/new.jpg", "label": "ivory", "split": "test",
                                              "correct": True}])])  # photo 0 only in A, new.jpg only in B
    a.to_csv(tmp_path / "a.csv", index=False)
    (tmp_path / "run").mkdir()
    b.to_csv(tmp_path / "run" / "predictions.csv", index=False)
    c = compare_predictions(tmp_path / "a.csv", tmp_path / "run")
    # photos 1-6, 8, 9 judged by both: B wrong on 1 and 8
    assert c["n"] == 8 and (c["only_a_right"], c["only_b_right"], c["both_right"]) == (2, 0, 6)
    assert (c["only_in_a"], c["only_in_b"], c["unreadable_in_either"]) == (1, 1, 1)
    assert c["b"].endswith("run/predictions.csv")
    assert compare_predictions(tmp_path / "a.csv", tmp_path / "run", split="test")["n"] == 6  # 1-6
    b.loc[b["path"] == "/p/3.jpg", "label"] = "other"
    b.to_csv(tmp_path / "run" / "predictions.csv", index=False)
    with pytest.raises(ValueError, match="labelled differently.*3.jpg"):
        compare_predictions(tmp_path / "a.csv", tmp_path / "run")
    with pytest.raises(FileNotFoundError, match="no predictions.csv"):
        compare_predictions(tmp_path / "a.csv", tmp_path)


def test_what_a_paired_comparison_refuses_and_how_it_rounds(tmp_path):
    """Empty or unequal inputs are refused; a single photo is a comparison; the difference is in points to 4
    decimals. Two tables without a photo in common, or a table naming one photo twice, are refused naming
    the cause (and the split asked for, or the photo)."""
    import pandas as pd

    with pytest.raises(ValueError, match="not be empty|not empty"):
        paired_comparison([], [])
    one = paired_comparison([True], [False])
    assert (one["n"], one["only_a_right"], one["difference_points"], one["p_value"]) == (1, 1, -100.0, 1.0)
    third = paired_comparison([False, False, False], [True, False, False])
    assert third["difference_points"] == 33.3333 and third["accuracy_b"] == 0.333333
    row = {"label": "ivory", "split": "test", "correct": True}
    pd.DataFrame([{"path": "/p/a.jpg", **row}]).to_csv(tmp_path / "a.csv", index=False)
    pd.DataFrame([{"path": "/p/b.jpg", **row}]).to_csv(tmp_path / "b.csv", index=False)
    with pytest.raises(ValueError) as refused:
        compare_predictions(tmp_path / "a.csv", tmp_path / "b.csv")
    assert str(refused.value) == f"{tmp_path / 'a.csv'} and {tmp_path / 'b.csv'} share no photo"
    with pytest.raises(ValueError) as refused:
        compare_predictions(tmp_path / "a.csv", tmp_path / "b.csv", split="test")
    assert str(refused.value).endswith("share no photo in split 'test'")
    paths = ["/p/a.jpg", "/p/x.jpg", "/p/x.jpg", "/p/y.jpg", "/p/y.jpg"]
    pd.DataFrame([{"path": p, **row} for p in paths]).to_csv(tmp_path / "twice.csv", index=False)
    with pytest.raises(ValueError) as refused:
        compare_predictions(tmp_path / "a.csv", tmp_path / "twice.csv")
    assert str(refused.value) == f"{tmp_path / 'twice.csv'}: a photo appears twice (/p/x.jpg)"
    (tmp_path / "run2").mkdir()
    pd.DataFrame([{"path": "/p/a.jpg", **row}]).to_csv(tmp_path / "run2" / "predictions.csv", index=False)
    with pytest.raises(ValueError) as refused:  # compared with itself: "no difference" of a slip of the hand
        compare_predictions(tmp_path / "run2", tmp_path / "run2" / ".." / "run2" / "predictions.csv")
    assert str(refused.value).startswith(f"A and B are the same file, {tmp_path / 'run2' / 'predictions.csv'}: ")


def test_calibration_figures_by_hand():
    y = [1, 0, 1, 1]
    s = [0.9, 0.15, 0.6, 0.6]
    r = reliability(y, s, bins=10)
    # bins: [0.1, 0.2) one negative at 0.15; [0.6, 0.7) two positives at 0.6; [0.9, 1] one positive at 0.9
    assert [(b["low"], b["n"]) for b in r["bins"]] == [(0.1, 1), (0.6, 2), (0.9, 1)]
    assert r["ece"] == pytest.approx((0.15 + 2 * 0.4 + 0.1) / 4)
    m = binary_metrics(y, s)
    assert m["ece"] == pytest.approx(r["ece"])
    assert m["brier"] == pytest.approx((0.01 + 0.0225 + 0.16 + 0.16) / 4)
    assert m["log_loss"] == pytest.approx(-np.mean(np.log([0.9, 0.85, 0.6, 0.6])), abs=1e-6)
    assert reliability([1, 0], [1.0, 0.0])["ece"] == 0.0  # a score of exactly 1 falls in the last bin


def test_temperature_scaling_recovers_the_temperature_and_keeps_every_decision():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (4000, 3))
    true = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y = np.array([rng.choice(3, p=p) for p in true])
    soft = apply_temperature(true, 2.5)  # an under-confident model: its logits shrunk 2.5x
    assert (soft.argmax(1) == true.argmax(1)).all() and soft.max(1).mean() < true.max(1).mean()
    t = fit_temperature(soft, y)
    assert t == pytest.approx(1 / 2.5, rel=0.08)
    assert np.allclose(apply_temperature(soft, t), true, atol=0.03)
    assert multiclass_metrics(y, apply_temperature(soft, t), list("abc"))["ece"] < \
        multiclass_metrics(y, soft, list("abc"))["ece"]
    # binary: the moved threshold flags exactly the photos the old one flagged
    p = rng.uniform(0.001, 0.999, 2000)
    for old, temp in ((0.5, 0.4), (0.3, 0.4), (0.87, 2.0)):
        new = temperature_threshold(old, temp)
        scaled = apply_temperature(np.c_[1 - p, p], temp)[:, 1]
        assert ((scaled >= new) == (p >= old)).all(), (old, temp)
    assert temperature_threshold(0.5, 0.3) == pytest.approx(0.5)


def test_threshold_edges():
    y, s = [1, 0], [0.5, 0.49]
    assert binary_metrics(y, s, 0.5)["recall"] == 1.0  # score == threshold is flagged
    m = binary_metrics([0, 0], [0.1, 0.2], 0.5)
    assert m["recall"] is None and m["roc_auc"] is None and m["accuracy"] == 1.0


def test_threshold_for_recall_is_the_most_precise_that_reaches_it():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    s = np.clip(y * 0.3 + rng.normal(0.35, 0.2, 500), 0, 1)
    for target in (0.5, 0.8, 0.95, 1.0):
        t = threshold_for_recall(y, s, target)
        assert binary_metrics(y, s, t)["recall"] >= target
        higher = np.min(s[s > t]) if (s > t).any() else None
        if higher is not None:
            assert binary_metrics(y, s, higher)["recall"] < target


def test_threshold_for_precision_is_the_most_sensitive_that_reaches_it():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 500)
    s = np.clip(y * 0.3 + rng.normal(0.35, 0.2, 500), 0, 1)
    for target in (0.7, 0.9):
        t = threshold_for_precision(y, s, target)
        assert binary_metrics(y, s, t)["precision"] >= target
        lower = s[s < t]
        for t2 in np.sort(lower)[::-1][:20]:  # every lower cut misses the target
            assert binary_metrics(y, s, t2)["precision"] < target


def test_choose_threshold_rules():
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    s = np.array([0.9, 0.8, 0.7, 0.2, 0.6, 0.3, 0.1, 0.05])
    assert choose_threshold(y, s).threshold == 0.5
    c = choose_threshold(y, s, target_recall=1.0)
    assert c.threshold == 0.2 and c.val_metrics["recall"] == 1.0
    c = choose_threshold(y, s, target_precision=1.0)
    assert c.threshold == 0.7 and c.val_metrics["precision"] == 1.0
    with pytest.raises(ValueError):
        choose_threshold(y, s, target_recall=0.9, target_precision=0.9)
    # no threshold reaches the precision (the best-scored photo is a negative): the highest score, said so
    c = choose_threshold(np.array([0, 1, 1, 0]), np.array([0.9, 0.8, 0.4, 0.3]), target_precision=0.9)
    assert c.threshold == 0.9 and c.rule == "target_precision" and c.target == 0.9
    assert c.note == "no threshold reaches precision 0.9 on this data; using the highest score"
    assert c.val_metrics["recall"] == 0.0
    # four positives cannot tell a recall of 0.9 from 1 (one miss is 0.75): the threshold keeps all four, said so
    c = choose_threshold(y, s, target_recall=0.9)
    assert c.threshold == 0.2 and c.note == ("4 positive validation photo(s): recall moves in steps of 1/4, so the "
                                             "threshold keeps all of them (recall 1 there, more flags than 0.9 "
                                             "needs; 10 or more tell them apart)")
    assert choose_threshold(y, s, target_recall=0.75).note == ""  # one miss of four is 0.75: measured
    assert choose_threshold(y, s, target_recall=1.0).note == ""  # asked for all of them
    assert choose_threshold(y, s, target_precision=1.0).note == ""  # asked for no false flag
    assert choose_threshold(y, s, target_precision=0.75).note == ""  # one false flag of four is 0.75: measured
    # three flagged photos cannot tell a precision of 0.9 from 1: the threshold lets no false flag in, said so
    c = choose_threshold(y, s, target_precision=0.9)
    assert c.threshold == 0.7 and c.note == ("3 validation photo(s) flagged at this threshold: precision moves in "
                                             "steps of about 1/3 there, so it is set where none of them is a false "
                                             "flag (precision 1 there, fewer flags than 0.9 allows; 10 or more "
                                             "flagged tell them apart)")
    # validation photos of the positive class only: precision is 1 at any threshold, and the lowest was taken
    c = choose_threshold(np.array([1, 1, 1]), np.array([0.2, 0.5, 0.9]), target_precision=0.99)
    assert c.threshold == 0.2 and c.note == ("no negative validation photo: precision is 1 at any threshold, so this "
                                             "one (0.2) flags every validation photo; choose it on validation photos "
                                             "of both classes")


def test_the_threshold_choices_note_is_printed(capsys):
    """The note of a threshold choice (a precision out of reach: the highest score used instead) was in
    metrics.json only: `evaluate --target-precision 0.99` printed the threshold as if the target were met."""
    from artsentry.cli import _print_metrics

    _print_metrics({"split": "test", "metrics": {"test": {"n": 4, "accuracy": 0.5}},
                    "threshold": {"threshold": 0.9, "rule": "target_precision", "target": 0.99,
                                  "note": "no threshold reaches precision 0.99 on this data; using the highest score"}})
    assert capsys.readouterr().out.splitlines()[-2:] == [
        "threshold 0.9000 (target_precision, target 0.99)",
        "note: no threshold reaches precision 0.99 on this data; using the highest score"]


def test_multiclass_and_topk():
    probs = np.array([[0.6, 0.3, 0.1], [0.2, 0.3, 0.5], [0.1, 0.7, 0.2], [0.5, 0.4, 0.1]])
    y = np.array([0, 1, 1, 2])
    assert top_k_accuracy(y, probs, 1) == 0.5
    assert top_k_accuracy(y, probs, 2) == 0.75
    m = multiclass_metrics(y, probs, ["a", "b", "c"])
    assert m["accuracy"] == 0.5 and m["top1_accuracy"] == 0.5
    assert m["confusion_matrix"][1] == [0, 1, 1]


def test_accuracy_by_value_and_by_value_and_label():
    import pandas as pd

    from artsentry.evaluate import accuracy_by

    table = pd.DataFrame({"label": ["ivory", "ivory", "ivory", "other", "other", "ivory"],
                          "photo_colour": ["greyscale", "greyscale", "colour", "greyscale", "colour", None],
                          "correct": [False, True, True, True, True, False],
                          "error": [None, None, None, None, None, "x.jpg: empty file"]})
    assert accuracy_by(table, "photo_colour") == {
        "colour": {"accuracy": 1.0, "n": 2, "ci95": proportion_interval(2, 2)},
        "greyscale": {"accuracy": pytest.approx(2 / 3, abs=1e-6), "n": 3, "ci95": proportion_interval(2, 3)}}
    by_label = accuracy_by(table, "photo_colour", per_label=True)  # the unreadable row is left out
    assert by_label["greyscale / ivory"] == {"accuracy": 0.5, "n": 2, "ci95": proportion_interval(1, 2)}
    assert by_label["greyscale / other"] == {"accuracy": 1.0, "n": 1, "ci95": proportion_interval(1, 1)}
    assert sum(v["n"] for v in by_label.values()) == 5


# -- the instance task: one class per object, photos of each object split ------------------
@pytest.fixture(scope="module")
def instance_manifest(tmp_path_factory):
    """Six objects (two departments) with 3 to 7 photos each; no split column."""
    import pandas as pd
    from PIL import Image, ImageDraw

    root = tmp_path_factory.mktemp("instances")
    rows = []
    for k, n_photos in enumerate((3, 4, 5, 6, 7, 7)):
        colour = [(200, 40, 40), (40, 160, 60), (50, 60, 200), (220, 200, 60), (150, 60, 170), (30, 30, 30)][k]
        for j in range(n_photos):
            rng = np.random.default_rng(100 * k + j)
            img = Image.new("RGB", (96, 80), (240, 238, 235))
            x, y = (int(v) for v in rng.integers(5, 25, 2))
            ImageDraw.Draw(img).ellipse([x, y, x + 50, y + 40], fill=colour)
            path = root / f"obj{k}_{j}.jpg"
            img.save(path)
            rows.append({"path": str(path), "label": f"O{k}", "object_id": f"O{k}",
                         "department": "Asian Art" if k % 2 else "Arms and Armor"})
    manifest = root / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    return manifest


@pytest.fixture(scope="module")
def instance_models(instance_manifest, tmp_path_factory):
    from artsentry.train import TrainSettings, train

    out = []
    for seed in (0, 1):
        settings = TrainSettings(mode="frozen", image_size=64, val_fraction=0.2, test_fraction=0.2, seed=seed)
        out.append(train(instance_manifest, tmp_path_factory.mktemp(f"inst{seed}") / "run", settings,
                         progress=False).model_dir)
    return out


def test_instance_training_splits_the_photos_of_each_object(instance_models):
    import pandas as pd

    df = pd.read_csv(instance_models[0].parent / "manifest.csv")
    for _, g in df.groupby("object_id"):  # every object is learned and tested: its photos are split
        assert (g["split"] == "train").any() and (g["split"] == "test").any()


def test_instance_evaluation_top_k_by_photo_count_and_department(instance_models, instance_manifest, tmp_path):
    from artsentry.evaluate import run_evaluation

    result = run_evaluation(instance_models[0].parent, split="test", out_dir=tmp_path / "one", progress=False,
                            explain=False)
    m = result["metrics"]["test"]
    assert m["n"] == 6 and {"top3_accuracy", "top5_accuracy"} <= set(m) and "top10_accuracy" not in m  # 6 classes
    assert m["top5_accuracy"] >= m["top3_accuracy"] >= m["accuracy"]
    by_count = m["accuracy_by_photos_per_object"]
    assert {k: v["n"] for k, v in by_count.items()} == {"3": 1, "4": 1, "5": 1, "6-9": 3}  # counted in the manifest
    assert sum(v["n"] for v in m["accuracy_by_department"].values()) == 6
    by_colour = m["accuracy_by_photo_colour_and_label"]  # blobs on an off-white backdrop: colour photos
    assert set(by_colour) <= {f"colour / O{k}" for k in range(6)} and sum(v["n"] for v in by_colour.values()) == 6


def test_a_refused_evaluation_leaves_no_empty_out_folder(model_dir, synthetic_dataset, tmp_path, monkeypatch):
    """--out was made before the data were checked: labels the model does not know, or a target recall without
    validation photos, left an empty folder behind. A --out that is a file is refused before evaluating."""
    from artsentry.evaluate import run_evaluation

    photos = sorted(str(p) for p in (synthetic_dataset / "ivory").glob("*.jpg"))[:4]
    pd.DataFrame({"path": photos, "label": ["ivory", "plastic"] * 2}).to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(ValueError, match=r"labels \['plastic'\] are not among the model's labels"):
        run_evaluation(model_dir, tmp_path / "m.csv", out_dir=tmp_path / "out", progress=False, explain=False)
    with pytest.raises(ValueError, match="a target recall/precision needs a binary model and data with a 'val'"):
        run_evaluation(model_dir, synthetic_dataset, out_dir=tmp_path / "out", target_recall=0.9, progress=False,
                       explain=False)
    assert not (tmp_path / "out").exists()
    (tmp_path / "file").write_text("notes")
    with pytest.raises(ValueError, match="file is a file, not a folder for the evaluation's outputs"):
        run_evaluation(model_dir, synthetic_dataset, out_dir=tmp_path / "file", progress=False, explain=False)
    # a folder that cannot be written (a run on a read-only share), said before the evaluation, not at its end
    real_access = os.access
    shared = tmp_path / "share"
    shared.mkdir()
    monkeypatch.setattr("artsentry.files.os.access", lambda path, mode: False if mode == os.W_OK and
                        str(path).startswith(str(shared)) else real_access(path, mode))
    with pytest.raises(ValueError, match="share/out: cannot write the evaluation's outputs here .*give --out"):
        run_evaluation(model_dir, synthetic_dataset, out_dir=shared / "out", progress=False, explain=False)


def test_ensemble_is_measured_on_listing_style_photos_as_its_members_are(instance_models, monkeypatch):
    from artsentry.data.listing import shift_variants
    from artsentry.data.manifest import read_manifest
    from artsentry.evaluate import evaluate_shift, variant_probabilities
    from artsentry.inference import Ensemble, Predictor

    members = [Predictor.load(m) for m in instance_models]
    ensemble = Ensemble(members)
    df, _ = read_manifest(instance_models[0].parent / "manifest.csv")
    df = df[df["split"] == "test"]
    paths = df["path"].tolist()
    listing = shift_variants()["listing"]
    expected = np.mean([variant_probabilities(m, paths, listing, seed=3) for m in members], axis=0)

    # the mean of the members', each listing-style picture made once and read by every member
    import artsentry.data.listing as listing_module

    made = []
    real = listing_module.rephotograph
    monkeypatch.setattr(listing_module, "rephotograph", lambda img, seed, *a, **k: made.append(seed) or real(img, seed, *a, **k))
    assert np.allclose(variant_probabilities(ensemble, paths, listing, seed=3), expected, atol=1e-6)
    assert sorted(made) == [3 * 1_000_003 + i for i in range(len(paths))]
    # members that decode studio photos at different sizes each read them as they would alone
    mixed = [members[0], Predictor.load(instance_models[1], input_size=352)]  # over the 320 decoded at least
    assert mixed[0].preprocessing.draft_size != mixed[1].preprocessing.draft_size
    for variant in (None, listing):
        expected = np.mean([variant_probabilities(m, paths, variant, seed=3) for m in mixed], axis=0)
        assert np.allclose(variant_probabilities(Ensemble(mixed), paths, variant, seed=3), expected, atol=1e-6)

    result = evaluate_shift(ensemble, df, seed=3, progress=False)  # crashed before: an ensemble has no preprocessing
    assert set(result["variants"]) == set(shift_variants())
    predicted = [p.label for p in ensemble.predict_files(paths)]  # the studio pass reads photos as prediction does
    assert result["variants"]["studio"]["accuracy"] == pytest.approx(np.mean(np.array(predicted) == df["label"].to_numpy()))


def test_ensemble_averages_member_probabilities(instance_models, tmp_path, capsys):
    import pandas as pd

    from artsentry.cli import main
    from artsentry.inference import Ensemble, Predictor

    out = tmp_path / "ens"
    assert main(["-q", "evaluate", str(instance_models[0].parent), "--ensemble", str(instance_models[1].parent),
                 "--out", str(out), "--split", "all"]) == 0
    assert "accuracy by photos per object" in capsys.readouterr().out
    table = pd.read_csv(out / "predictions.csv")
    members = [Predictor.load(m).predict_files(table["path"].tolist()) for m in instance_models]
    for label in members[0][0].probabilities:
        expected = [(a.probabilities[label] + b.probabilities[label]) / 2 for a, b in zip(*members)]
        assert np.allclose(table[f"p_{label}"], expected, atol=1e-6)
    assert "ensemble" in (out / "report.html").read_text()
    # members must answer the same question
    with pytest.raises(ValueError, match="disagree on labels"):
        Ensemble([Predictor.load(instance_models[0]), _other_labels(instance_models[0], tmp_path)])


def test_an_ensemble_of_one_model_given_twice_is_said(instance_models, tmp_path, caplog):
    """evaluate RUN --ensemble RUN/model measured one model and called it an ensemble, without a word (a soup
    of the same weights already said so)."""
    import logging
    import shutil

    from artsentry.inference import Ensemble, Predictor

    copy = shutil.copytree(instance_models[0], tmp_path / "copy")
    with caplog.at_level(logging.WARNING, logger="artsentry"):
        Ensemble([Predictor.load(m) for m in instance_models])
        assert caplog.records == []  # two models
        Ensemble([Predictor.load(instance_models[0]), Predictor.load(instance_models[1]), Predictor.load(copy)])
    assert [r.getMessage() for r in caplog.records] == [
        f"{copy} holds the same weights as {instance_models[0]}: the ensemble counts them twice, and its figures "
        "are not those of more models"]


def _other_labels(model_dir, tmp_path):
    import shutil

    from artsentry.inference import Predictor
    from artsentry.models.artifact import read_config, update_config

    copy = tmp_path / "other"
    shutil.copytree(model_dir, copy)
    labels = read_config(copy)["labels"]
    update_config(copy, labels=[f"X{i}" for i in range(len(labels))])
    return Predictor.load(copy)


def test_measuring_a_network_at_another_input_size(model_dir, synthetic_dataset, tmp_path):
    import json

    import torch
    from PIL import Image

    from artsentry.data.transforms import eval_transform
    from artsentry.evaluate import run_evaluation
    from artsentry.inference import Predictor
    from artsentry.models import create_model

    own, larger = Predictor.load(model_dir), Predictor.load(model_dir, input_size=96)
    assert own.preprocessing.input_size == 64 and larger.preprocessing.input_size == 96
    image = Image.open(sorted((synthetic_dataset / "ivory").iterdir())[0]).convert("RGB")
    x = eval_transform(larger.preprocessing)(image)
    assert x.shape == (3, 96, 96)  # the network really sees 96 px
    with torch.inference_mode():
        expected = torch.softmax(larger.model(x[None]), dim=1).numpy()
    assert np.allclose(larger.predict_proba([image]), expected, atol=1e-5)
    assert not np.allclose(own.predict_proba([image]), expected, atol=1e-4)

    result = run_evaluation(model_dir.parent, split=None, out_dir=tmp_path / "e96", progress=False, explain=False,
                            input_size=96)
    assert result["input_size"] == 96 and json.loads((tmp_path / "e96" / "metrics.json").read_text())["input_size"] == 96
    assert run_evaluation(model_dir.parent, split=None, out_dir=tmp_path / "e64", progress=False,
                          explain=False)["input_size"] == 64
    with pytest.raises(ValueError, match="save-threshold"):  # figures in config.json are at the model's own size
        run_evaluation(model_dir.parent, input_size=96, save_threshold=True, progress=False, explain=False)
    with pytest.raises(ValueError, match="configured input size only"):
        Predictor.load(model_dir, runtime="onnx", input_size=96)
    config = {"architecture": {"name": "smallcnn"}, "labels": ["a", "b"],
              "preprocessing": {"input_size": 150}}
    with pytest.raises(ValueError, match="dense layer"):
        Predictor(create_model("smallcnn", 2), config, input_size=192)


def test_photos_per_forward_pass_shrink_at_large_input_sizes_so_memory_stays_bounded(model_dir):
    """evaluate --input-size 4000 (the range goes to 4,096) ran 32 photos per forward pass, ~130 GB: the
    process was killed for want of memory. Predictors, embedders and explainers now take fewer photos per
    pass where a batch would take over FORWARD_BATCH_MIB, at least one, and the answers stay the same."""
    from PIL import Image

    from artsentry.data.transforms import Preprocessing
    from artsentry.explain import Explainer
    from artsentry.index.embedder import Embedder
    from artsentry.inference import Predictor
    from artsentry.models import create_model, inference_batch
    from artsentry.models.factory import FORWARD_BATCH_MIB, FORWARD_MIB_PER_MEGAPIXEL

    assert [inference_batch(32, s) for s in (150, 320, 720, 1024, 2048, 4000, 4096)] == [32, 32, 31, 15, 3, 1, 1]
    assert inference_batch(8, 1024) == 8 and inference_batch(1, 4096) == 1  # fewer asked: as asked
    for size in (730, 1024, 2048, 4000):  # the batch taken is the largest under the budget
        n = inference_batch(32, size)
        per_photo = FORWARD_MIB_PER_MEGAPIXEL * size * size / 1e6
        assert n * per_photo <= FORWARD_BATCH_MIB < (n + 1) * per_photo or n == 1
    assert Predictor.load(model_dir).batch_size == 32
    assert Predictor.load(model_dir, input_size=2048).batch_size == 3
    assert Predictor.load(model_dir, batch_size=64, input_size=1024).batch_size == 15
    net = create_model("efficientnet_lite0", 2, pretrained=False)
    assert Embedder(net.backbone, Preprocessing(input_size=2048), "x", 1280).batch_size == 3
    assert Explainer(net, Preprocessing(input_size=4000)).batch_size == 1
    # the same answers in passes of fewer photos
    photos = [Image.new("RGB", (90, 70), (40 * i, 120, 200 - 30 * i)) for i in range(5)]
    whole, by_two = Predictor.load(model_dir, input_size=96), Predictor.load(model_dir, input_size=96, batch_size=2)
    assert np.allclose(whole.predict_proba(photos), by_two.predict_proba(photos), atol=1e-5)


def test_a_predictor_can_fit_photos_another_way_than_its_config(model_dir):
    from PIL import Image

    from artsentry.data.transforms import eval_transform
    from artsentry.inference import Predictor

    wide = Image.new("RGB", (300, 100), "white")
    wide.paste((120, 40, 30), (0, 0, 60, 100))  # a dark band at the left edge: squash keeps it, center_crop cuts it
    own = Predictor.load(model_dir)
    squashed, cropped = Predictor.load(model_dir, resize="squash"), Predictor.load(model_dir, resize="center_crop")
    assert (squashed.preprocessing.resize, cropped.preprocessing.resize) == ("squash", "center_crop")
    assert squashed.preprocessing.input_size == cropped.preprocessing.input_size == own.preprocessing.input_size
    x = eval_transform(cropped.preprocessing)(wide)
    assert np.allclose(cropped.predict_proba([wide]), cropped.proba_tensor(x[None]), atol=1e-6)
    assert np.allclose(x, 1.0)  # only the white centre is left
    assert not np.allclose(squashed.transform(wide), x)  # the photo really reaches the network another way
    assert Predictor.load(model_dir, resize=own.preprocessing.resize).preprocessing == own.preprocessing
    with pytest.raises(ValueError, match="resize must be one of"):
        Predictor.load(model_dir, resize="stretch")


def test_evaluate_calibrate_saves_a_temperature_and_flags_the_same_photos(model_dir, tmp_path, capsys):
    import json
    import shutil

    import pandas as pd

    from artsentry.cli import main
    from artsentry.inference import Predictor
    from artsentry.models.artifact import read_config, update_config
    from artsentry.models.onnx import export_onnx

    run = tmp_path / "run"
    shutil.copytree(model_dir.parent, run)  # the shared fixture stays as it is
    # its tiny validation split is separated perfectly: training left the probabilities alone
    trained = read_config(run / "model")["calibration"]
    assert trained["applied"] is False and "bound" in trained["note"] and trained["temperature"] == 1.0
    update_config(run / "model", threshold=0.42)  # an operating point the user chose
    before = Predictor.load(run / "model")
    assert before.temperature == 1.0 and "temperature" not in before.info()
    # validation photos a model gets wrong (two labels swapped) give a finite temperature to fit
    table = pd.read_csv(run / "manifest.csv")
    val = table.index[table["split"] == "val"][:2]
    table.loc[val, "label"] = table.loc[val, "label"].map({"ivory": "non_ivory", "non_ivory": "ivory"})
    table.to_csv(run / "manifest.csv", index=False)
    assert main(["-q", "evaluate", str(run), "--split", "all", "--no-explain", "--out", str(tmp_path / "e0")]) == 0
    assert main(["-q", "evaluate", str(run), "--split", "all", "--no-explain", "--calibrate",
                 "--out", str(tmp_path / "e1")]) == 0
    assert "calibrated on" in capsys.readouterr().out
    config = read_config(run / "model")
    cal = config["calibration"]
    t = cal["temperature"]
    assert cal["applied"] and 0.05 < t < 20 and t != 1.0 and cal["fitted_on"]["split"] == "val"
    assert cal["fitted_on"]["n"] == (table["split"] == "val").sum()
    assert cal["val_after"]["log_loss"] <= cal["val_before"]["log_loss"] + 1e-9
    assert config["threshold"] == pytest.approx(temperature_threshold(0.42, t), abs=1e-9)
    e0, e1 = (pd.read_csv(tmp_path / d / "predictions.csv") for d in ("e0", "e1"))
    assert (e0["predicted"] == e1["predicted"]).all()  # the same decisions
    ivory = np.c_[e0["p_non_ivory"], e0["p_ivory"]]
    assert np.allclose(apply_temperature(ivory, t)[:, 1], e1["p_ivory"], atol=1e-4)
    metrics = json.loads((tmp_path / "e1" / "metrics.json").read_text())
    assert metrics["calibration"]["temperature"] == t and metrics["temperature"] == t
    assert {"ece", "brier", "log_loss"} <= set(metrics["metrics"]["all"])
    assert 'alt="reliability plot"' in (tmp_path / "e1" / "report.html").read_text()
    after = Predictor.load(run / "model")
    assert after.temperature == t and after.info()["temperature"] == t
    # ONNX Runtime applies the same temperature; a standalone export carries it
    export_onnx(run / "model")
    onnx = Predictor.load(run / "model", runtime="onnx")
    files = e0["path"].tolist()[:6]
    got = np.array([[p.probabilities[l] for l in onnx.labels] for p in onnx.predict_files(files)])
    want = np.array([[p.probabilities[l] for l in after.labels] for p in after.predict_files(files)])
    assert np.allclose(got, want, atol=1e-3)
    export_onnx(run / "model", tmp_path / "edge")
    assert json.loads((tmp_path / "edge" / "config.json").read_text())["calibration"]["temperature"] == t
    with pytest.raises(ValueError, match="no 'val' split"):
        from artsentry.evaluate import run_evaluation

        table = pd.read_csv(run / "manifest.csv")
        table[table["split"] != "val"].to_csv(tmp_path / "noval.csv", index=False)
        run_evaluation(run, tmp_path / "noval.csv", calibrate=True, progress=False, explain=False)


def test_a_manifest_column_named_like_a_prediction_column_is_kept_beside_it(model_dir, synthetic_dataset):
    """A curator's own "score" or "correct" column survives into predictions.csv as input_score...,
    and the model's columns are the model's."""
    from artsentry.data.manifest import read_manifest
    from artsentry.evaluate import evaluate_predictor
    from artsentry.inference import Predictor

    df, _ = read_manifest(synthetic_dataset)
    df = df.iloc[::6].reset_index(drop=True)
    predictor = Predictor.load(model_dir)
    plain = evaluate_predictor(predictor, df, progress=False).table
    own = df.assign(score="curator-score", correct="yes", p_ivory="-", department="Asian Art")
    table = evaluate_predictor(predictor, own, progress=False).table
    assert (table["input_score"] == "curator-score").all() and (table["input_correct"] == "yes").all()
    assert (table["input_p_ivory"] == "-").all() and (table["department"] == "Asian Art").all()  # not a clash
    for c in ("score", "correct", "predicted", "p_ivory", "p_non_ivory"):
        assert table[c].tolist() == plain[c].tolist(), c


def test_an_evaluation_decides_at_the_threshold_it_is_given_and_leaves_unreadable_photos_undecided(
        model_dir, synthetic_dataset, tmp_path):
    """evaluate --target-recall/--target-precision passes the threshold chosen on validation: the test photos
    are decided at it, a score exactly at it flagged. An unreadable photo once read "non_ivory" in
    predictions.csv, as if it had been looked at and cleared."""
    from artsentry.data.manifest import read_manifest
    from artsentry.evaluate import evaluate_predictor
    from artsentry.inference import Predictor

    df, _ = read_manifest(synthetic_dataset)
    df = df.iloc[::4].reset_index(drop=True)
    predictor = Predictor.load(model_dir)
    plain = evaluate_predictor(predictor, df, progress=False, by=(), by_label=()).table
    scores = plain["score"].to_numpy()
    at = float(np.sort(scores)[len(scores) // 2 - 1])  # exactly at one photo's score, under the model's 0.5
    table = evaluate_predictor(predictor, df, threshold=at, progress=False, by=(), by_label=()).table
    assert (table["predicted"] == np.where(scores >= at, "ivory", "non_ivory")).all()
    assert table.loc[scores == at, "predicted"].tolist() == ["ivory"]
    assert at < 0.5 and (table["predicted"] != plain["predicted"]).any()  # the model's own 0.5 decides otherwise
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff not really")
    with_bad = pd.concat([df, pd.DataFrame({"path": [str(broken)], "label": ["ivory"], "object_id": ["x"]})],
                         ignore_index=True)
    ev = evaluate_predictor(predictor, with_bad, progress=False, by=("department",), by_label=())
    row = ev.table.iloc[-1]
    assert row["error"] and pd.isna(row["predicted"]) and pd.isna(row["correct"]) and np.isnan(row["score"])
    assert ev.metrics["n"] == len(df) and ev.metrics["unreadable"] == 1
    assert ev.table["correct"].iloc[:-1].tolist() == (plain["predicted"] == plain["label"]).tolist()


# -- edges found by mutation testing (benchmarks/mutants.py): each of these went unchecked --------
def test_multiclass_accuracy_counts_the_right_rows_and_top_k_stops_below_the_class_count():
    probs = np.array([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.1, 0.7, 0.2], [0.5, 0.4, 0.1]])
    m = multiclass_metrics([0, 1, 1, 2], probs, ["a", "b", "c"])
    assert m["accuracy"] == 0.75 and m["top1_accuracy"] == 0.75
    assert "top3_accuracy" not in m  # with 3 classes, top-3 is always right: not a figure


def test_reliability_bins_are_labelled_by_their_edges_and_the_top_bin_holds_scores_up_to_1():
    r = reliability([1, 1, 0], [0.95, 1.0, 0.05], bins=10)
    assert [(b["low"], b["high"], b["n"]) for b in r["bins"]] == [(0.0, 0.1, 1), (0.9, 1.0, 2)]
    assert r["bins"][1]["mean_score"] == 0.975 and r["bins"][1]["positive_share"] == 1.0


def test_binary_figures_when_as_many_photos_are_wrongly_as_rightly_flagged():
    m = binary_metrics([1, 0, 1, 0], [0.9, 0.8, 0.2, 0.1], 0.5)  # tp 1, fp 1, fn 1, tn 1
    assert m["precision"] == m["recall"] == m["specificity"] == m["f1"] == m["accuracy"] == 0.5


def test_operating_thresholds_at_their_exact_targets():
    y, s = [1, 1, 0, 1], [0.9, 0.8, 0.7, 0.6]
    assert threshold_for_precision(y, s, 0.75) == 0.6  # flagging all four is precision 3/4 exactly
    assert threshold_for_precision([1, 0, 1], [0.9, 0.9, 0.2], 0.5) == 0.2  # tied scores flagged together
    assert threshold_for_recall([1, 1, 1, 1, 1, 0], [0.9, 0.8, 0.7, 0.6, 0.5, 0.95], 0.1) == 0.9  # one of five
    assert threshold_for_recall([0, 1], [0.9, 0.3], 1.0) == 0.3
    assert threshold_for_precision([0, 1], [0.9, 0.3], 0.5) == 0.3  # the one cut that reaches it
    for target in (0.0, 1.1):
        with pytest.raises(ValueError):
            threshold_for_recall(y, s, target)
        with pytest.raises(ValueError):
            threshold_for_precision(y, s, target)
    with pytest.raises(ValueError, match="no positive"):
        threshold_for_recall([0, 0], [0.1, 0.2], 0.9)


def test_temperature_threshold_at_the_ends_of_the_scale():
    hi, lo = temperature_threshold(1.0, 2.0), temperature_threshold(0.0, 2.0)
    assert 0.99 < hi <= 1.0 and 0.0 <= lo < 0.01


def test_the_report_gallery_shows_the_surest_mistakes_first():
    import pandas as pd

    from artsentry.evaluate import Evaluation

    table = pd.DataFrame({"path": list("abcde"), "score": [0.97, 0.6, 0.05, 0.3, 0.99],
                          "correct": [False, False, False, True, True], "error": [None] * 5})
    ev = Evaluation(table, {}, ["ivory", "other"], "ivory", 0.5)
    assert ev.confident_mistakes(2)["path"].tolist() == ["a", "c"]  # 0.47 and 0.45 from 0.5 on the wrong side, then 0.1
    assert ev.confident_mistakes(5)["path"].tolist() == ["a", "c", "b"]
    ev = Evaluation(table, {}, ["ivory", "other"], "ivory", 0.08)  # measured from the model's own threshold
    assert ev.confident_mistakes(3)["path"].tolist() == ["a", "b", "c"]
    ev = Evaluation(table, {}, ["ivory", "other"], "ivory", 0.0)  # a threshold of 0 is one, not "none": 0.5 was used
    assert ev.confident_mistakes(3)["path"].tolist() == ["a", "b", "c"]
    ev = Evaluation(table, {}, list("xyz"), None, None)  # multi-class: by the wrong class's probability
    assert ev.confident_mistakes(3)["path"].tolist() == ["a", "b", "c"]


def test_photos_per_object_bins():
    import pandas as pd

    from artsentry.evaluate import photos_per_object

    counts = {"o1": 1, "o2": 2, "o5": 5, "o6": 6, "o9": 9, "o10": 10}
    df = pd.DataFrame({"object_id": [o for o, n in counts.items() for _ in range(n)]})
    bins = dict(zip(df["object_id"], photos_per_object(df)))
    assert bins == {"o1": "1", "o2": "2", "o5": "5", "o6": "6-9", "o9": "6-9", "o10": "10+"}


def test_the_report_page_shows_metrics_groups_mistakes_and_unreadable_photos(synthetic_dataset, tmp_path):
    """``write_report`` from an evaluation made by hand: every figure in its row with its interval, groups
    largest first, the mistakes surest first with the label and score each card claims, correct decisions with
    their overlays, the unreadable photos listed, the binary plots, text from the data escaped; a multi-class
    evaluation has a confusion matrix and no binary plots."""
    import re

    import pandas as pd

    from artsentry.evaluate import Evaluation, binary_metrics
    from artsentry.report import confusion_labels, write_report

    photos = sorted((synthetic_dataset / "ivory").glob("*.jpg"))[:3] + sorted(
        (synthetic_dataset / "non_ivory").glob("*.jpg"))[:3]
    table = pd.DataFrame({"path": [str(p) for p in photos] + [str(tmp_path / "gone.jpg")],
                          "label": ["ivory"] * 3 + ["non_ivory"] * 3 + ["ivory"],
                          "score": [0.9, 0.8, 0.3, 0.1, 0.55, 0.95, np.nan],
                          "predicted": ["ivory", "ivory", "non_ivory", "non_ivory", "ivory", "ivory", None],
                          "error": [None] * 6 + ["gone.jpg: <no such file>"]})
    table["correct"] = (table["label"] == table["predicted"]).where(table["error"].isna())
    table["quality_warnings"] = [np.nan] * 4 + ["small photo: 120 px", np.nan, np.nan]  # as predictions.csv reads
    readable = table[table["error"].isna()]
    metrics = binary_metrics((readable["label"] == "ivory").astype(int), readable["score"], 0.5)
    metrics["ci95"] = {"accuracy": [0.3, 0.9]}
    metrics["accuracy_by_department"] = {"Arms": {"accuracy": 1.0, "n": 2, "ci95": [0.34, 1.0]},
                                         "Asian <Art>": {"accuracy": 0.25, "n": 4, "ci95": [0.05, 0.7]}}
    ev = Evaluation(table, metrics, ["ivory", "non_ivory"], "ivory", 0.5)
    overlay = "data:image/png;base64,AAAA"
    page = write_report(ev, tmp_path / "r.html", title="Test <run>", context={"model": "m<1>"},
                        overlays={str(photos[5]): overlay}, correct_sample=[str(photos[0]), str(photos[3])],
                        feature_map={"note": "fewer than 3 readable photos"}).read_text()
    assert "<title>Test &lt;run&gt;</title>" in page and "m&lt;1&gt;" in page and "<run>" not in page
    assert f"<th>accuracy</th><td>{metrics['accuracy']:.4f}</td><td>0.300–0.900</td>" in page
    assert f"<th>n</th><td>{metrics['n']}</td><td></td>" in page  # no interval: an empty cell, not a shifted row
    assert "95% interval: Wilson's score interval" in page
    groups = page.split("<h2>accuracy by department</h2>", 1)[1].split("</table>", 1)[0]
    assert groups.index("Asian &lt;Art&gt;") < groups.index("Arms")  # the larger group first
    assert "<td>0.250</td><td>0.050–0.700</td><td>4</td>" in groups
    mistakes = page.split("Most confident mistakes (3 shown)", 1)[1].split("<h2>", 1)[0]
    names = re.findall(r"<figcaption>([^<]+)<br>", mistakes)
    assert names == [photos[5].name, photos[2].name, photos[4].name]  # 0.45, 0.2 and 0.05 off the threshold
    assert f'<img src="{overlay}" alt="Grad-CAM overlay of {photos[5].name}">' in mistakes
    assert "true <b>non_ivory</b>, predicted <b>ivory</b><br>score 0.950</figcaption>" in mistakes
    assert mistakes.count("weak photo") == 1
    assert 'score 0.550<br><span class="weak">weak photo: small photo' in mistakes
    assert mistakes.count('alt="') == 3  # the others shown by their thumbnails
    # which mistakes have an overlay is said (the report showed 24 and explained the surest 12 without a word)
    assert "regions that raised its score). The surest mistake has one; the others are shown as they are.</p>" \
        in mistakes
    correct = page.split("Correct decisions, explained (2 sampled)", 1)[1].split("<h2>", 1)[0]
    assert re.findall(r"<figcaption>([^<]+)<br>", correct) == [photos[0].name, photos[3].name]
    assert "<h2>Unreadable images (1)</h2><ul><li>gone.jpg: &lt;no such file&gt;</li></ul>" in page
    assert "<p>fewer than 3 readable photos</p>" in page
    for plot in ("confusion", "curves", "scores", "reliability"):
        assert f'alt="{plot} plot"' in page
    assert confusion_labels(ev) == ["non_ivory", "ivory"]  # [[tn, fp], [fn, tp]]: the negative label first

    multi = table.assign(label=["x", "y", "z", "x", "y", "z", "x"], predicted=["x", "y", "x", "x", "z", "z", None])
    multi["correct"] = (multi["label"] == multi["predicted"]).where(multi["error"].isna())
    ev = Evaluation(multi, {"accuracy": 4 / 6, "confusion_matrix": [[2, 0, 0], [0, 1, 1], [1, 0, 1]]},
                    ["x", "y", "z"], None, None)
    page = write_report(ev, tmp_path / "m.html", title="three").read_text()
    assert 'alt="confusion plot"' in page and "curves plot" not in page and "reliability plot" not in page
    assert "95% interval" not in page and "Most confident mistakes (2 shown)" in page
    assert "<p>Shown as they are: this evaluation made no heat maps.</p>" in page
    assert "<h2>Feature map</h2>" not in page and "Correct decisions" not in page
    assert confusion_labels(ev) == ["x", "y", "z"]

    one = table.iloc[:3].assign(predicted=["ivory", "ivory", "non_ivory"])  # ivory photos only: a seizure's folder
    one["correct"] = one["label"] == one["predicted"]
    ev = Evaluation(one, binary_metrics([1, 1, 1], one["score"], 0.5), ["ivory", "non_ivory"], "ivory", 0.5)
    page = write_report(ev, tmp_path / "one.html", title="one class").read_text()
    assert 'alt="confusion plot"' in page and "curves plot" not in page  # no ROC or PR curve of one class


def test_another_evaluation_of_a_run_does_not_replace_its_own_without_out(model_dir, tmp_path, capsys):
    """Without --out a run's model is evaluated into its run folder, over the run's own test evaluation. An
    evaluation of another split, other data, an ensemble or another input size replaced it without a word,
    and the run's report and ``compare`` then gave the other figures as the run's."""
    import json
    import shutil

    from artsentry.cli import main

    run = tmp_path / "run"
    shutil.copytree(model_dir.parent, run)  # the shared fixture stays as it is
    own = {name: (run / name).read_bytes() for name in ("metrics.json", "predictions.csv", "report.html")}
    for extra, what in ((["--split", "val"], "split 'val'"), (["--input-size", "96"], "input size 96 px"),
                        (["--ensemble", str(run)], "an ensemble"),
                        (["--data", str(run / "manifest.csv"), "--split", "all"], "split 'all'")):
        assert main(["-q", "evaluate", str(run), "--no-explain", *extra]) == 1, extra
        said = capsys.readouterr().err
        assert f"{run} holds the run's own evaluation (its test photos: metrics.json, predictions.csv, report.html); " \
               f"this one ({what}) would replace it: give --out DIR" in said, said
    assert {name: (run / name).read_bytes() for name in own} == own
    assert main(["-q", "evaluate", str(run), "--no-explain", "--split", "val", "--out", str(tmp_path / "val")]) == 0
    assert json.loads((tmp_path / "val" / "metrics.json").read_text())["split"] == "val"
    # its own test photos again (another threshold, --shift): the run's evaluation, brought up to date
    assert main(["-q", "evaluate", str(run / "model"), "--no-explain", "--target-recall", "1"]) == 0
    assert json.loads((run / "metrics.json").read_text())["threshold"]["rule"] != "model config"
