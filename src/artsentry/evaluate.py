"""Metrics as pure functions of arrays, threshold choice, and dataset evaluation.

Binary metrics take ``y_true`` (1 = positive class, e.g. ivory) and ``scores``
(probability of the positive class) and a threshold: an image is flagged when
``score >= threshold``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from sklearn import metrics as skm

from .files import can_write_into, read_json_object, write_csv_atomic, write_text_atomic


def _f(x) -> float | None:
    x = float(x)
    return None if math.isnan(x) else round(x, 6)


#: the normal quantile of a two-sided 95% interval
Z95 = 1.959963984540054


def proportion_interval(successes: int, n: int, z: float = Z95) -> list[float] | None:
    """Wilson's score interval (95% by default) for a proportion measured as ``successes`` of
    ``n``: where the true rate plausibly lies given that count. Unlike the normal approximation
    it stays inside [0, 1] and is not a zero-width interval at 0 or n successes, which small
    slices of a test set (one department, grey photos of one label) often have. None for n = 0."""
    if n <= 0:
        return None
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be between 0 and n ({n}), not {successes}")
    p = successes / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return [round(max(0.0, centre - half), 6), round(min(1.0, centre + half), 6)]


def paired_comparison(correct_a, correct_b) -> dict:
    """Two models judged on the same photos (``correct_a[i]``, ``correct_b[i]``: was each right on
    photo i): their accuracies with 95% intervals, the photos only one of them got right, the
    difference B - A in accuracy points, and McNemar's exact test of whether they differ (the
    two-sided binomial p-value of the photos only one got right splitting as they did if neither
    model were better). Photos both got right or both got wrong say nothing about which is better:
    this is why a paired comparison separates models whose intervals overlap."""
    from scipy.stats import binomtest

    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError("correct_a and correct_b must be 1-D, of the same length, and not empty")
    n = len(a)
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    discordant = only_a + only_b
    return {
        "n": n,
        "accuracy_a": _f(a.mean()), "accuracy_b": _f(b.mean()),
        "ci95": {"accuracy_a": proportion_interval(int(a.sum()), n),
                 "accuracy_b": proportion_interval(int(b.sum()), n)},
        "both_right": int((a & b).sum()), "only_a_right": only_a, "only_b_right": only_b,
        "both_wrong": int((~a & ~b).sum()),
        "difference_points": round(100 * (only_b - only_a) / n, 4),
        # not rounded as the other figures: two models 40 points apart have p ~ 1e-47, which 6 decimals made 0
        "p_value": float(binomtest(only_b, discordant, 0.5).pvalue) if discordant else 1.0,
    }


PREDICTIONS_NAME = "predictions.csv"


def compare_predictions(a, b, *, split: str | None = None) -> dict:
    """``paired_comparison`` of two evaluations' ``predictions.csv`` (a file, or a run or evaluation
    folder holding one), matched by photo path; only photos both read, with the same true label in
    both (a photo labelled differently means the two were not evaluated on the same data: an error).
    ``split`` keeps one split's rows. The counts of photos left out are returned with the figures."""
    import pandas as pd
    from pathlib import Path

    def read(where) -> tuple[Path, pd.DataFrame]:
        path = Path(where)
        if path.is_dir():
            path = path / PREDICTIONS_NAME
        if not path.is_file():
            raise FileNotFoundError(f"{where}: no {PREDICTIONS_NAME} (written by 'artsentry evaluate' and 'train')")
        df = pd.read_csv(path)
        missing = {"path", "label", "correct"} - set(df.columns)
        if missing:
            raise ValueError(f"{path}: not a predictions table (no {', '.join(sorted(missing))} column)")
        if split is not None:
            if "split" not in df.columns:
                raise ValueError(f"{path}: no split column to keep {split!r} rows from")
            held = sorted(df["split"].dropna().astype(str).unique())
            df = df[df["split"] == split]
            if df.empty:  # an evaluation holds the split it was run on: 'share no photo' hid that
                raise ValueError(f"{path}: no photo of split {split!r} (it holds {', '.join(held) or 'none'}: "
                                 "'artsentry evaluate RUN --split SPLIT --out DIR' evaluates another)")
        if df["path"].duplicated().any():
            raise ValueError(f"{path}: a photo appears twice ({df.loc[df['path'].duplicated(), 'path'].iloc[0]})")
        readable = df["correct"].notna() & (df["error"].isna() if "error" in df.columns else True)
        return path, df.assign(readable=readable)

    path_a, da = read(a)
    path_b, db = read(b)
    if path_a.resolve() == path_b.resolve():  # "no difference", of a model with itself: most likely a slip
        raise ValueError(f"A and B are the same file, {path_a}: give two evaluations' predictions.csv "
                         "(or their run or evaluation folders)")
    both = da.merge(db, on="path", suffixes=("_a", "_b"))
    if both.empty:
        raise ValueError(f"{path_a} and {path_b} share no photo" + (f" in split {split!r}" if split else ""))
    relabelled = both[both["label_a"].astype(str) != both["label_b"].astype(str)]
    if len(relabelled):
        r = relabelled.iloc[0]
        raise ValueError(f"{len(relabelled)} photo(s) labelled differently in the two tables, e.g. {r['path']}: "
                         f"{r['label_a']!r} vs {r['label_b']!r}; compare evaluations of the same data")
    read_both = both["readable_a"] & both["readable_b"]
    kept = both[read_both]
    if kept.empty:
        raise ValueError("no photo was read in both evaluations")

    def truth(col) -> np.ndarray:
        return col.map(lambda v: v if isinstance(v, bool) else str(v).strip().lower() == "true").to_numpy(bool)

    out = paired_comparison(truth(kept["correct_a"]), truth(kept["correct_b"]))
    out.update(a=str(path_a), b=str(path_b), split=split, only_in_a=int((~da["path"].isin(db["path"])).sum()),
               only_in_b=int((~db["path"].isin(da["path"])).sum()), unreadable_in_either=int((~read_both).sum()))
    return out


def binary_metrics(y_true, scores, threshold: float = 0.5) -> dict:
    """Accuracy, precision, recall, specificity, F1, ROC-AUC, average precision and
    the confusion matrix ``[[tn, fp], [fn, tp]]`` at ``threshold``; ``ci95``: Wilson 95%
    intervals of the four proportions (``proportion_interval``), how far each could move on
    another sample of as many photos."""
    y = np.asarray(y_true).astype(int)
    s = np.asarray(scores, dtype=float)
    if y.shape != s.shape or y.ndim != 1:
        raise ValueError("y_true and scores must be 1-D arrays of the same length")
    pred = (s >= threshold).astype(int)
    tn, fp, fn, tp = skm.confusion_matrix(y, pred, labels=[0, 1]).ravel()
    both = len(np.unique(y)) == 2
    return {
        "n": int(len(y)),
        "threshold": _f(threshold),
        "accuracy": _f((tp + tn) / max(len(y), 1)),
        "precision": _f(tp / (tp + fp)) if tp + fp else None,
        "recall": _f(tp / (tp + fn)) if tp + fn else None,
        "specificity": _f(tn / (tn + fp)) if tn + fp else None,
        "f1": _f(2 * tp / (2 * tp + fp + fn)) if tp + fp + fn else None,
        "roc_auc": _f(skm.roc_auc_score(y, s)) if both else None,
        "average_precision": _f(skm.average_precision_score(y, s)) if both else None,
        "confusion_matrix": [[int(tn), int(fp)], [int(fn), int(tp)]],
        "brier": _f(np.mean((s - y) ** 2)) if len(y) else None,
        "log_loss": _f(_log_loss(y, np.c_[1 - s, s])) if len(y) else None,
        "ece": _f(reliability(y, s)["ece"]) if len(y) else None,
        "ci95": {"accuracy": proportion_interval(int(tp + tn), len(y)),
                 "precision": proportion_interval(int(tp), int(tp + fp)),
                 "recall": proportion_interval(int(tp), int(tp + fn)),
                 "specificity": proportion_interval(int(tn), int(tn + fp))},
    }


# -- calibration: does a score of 0.8 come true 80% of the time? -------------------------------
def reliability(y_true, scores, bins: int = 10) -> dict:
    """Reliability of binary probabilities: ``scores`` (probability of the positive class) in
    ``bins`` equal-width bins, each with its count, mean score and share of positives, and the
    expected calibration error ``ece`` (the count-weighted mean gap between the two; Guo et al.
    2017 measure it the same way on the top-class confidence)."""
    y = np.asarray(y_true, dtype=float)
    s = np.asarray(scores, dtype=float)
    which = np.clip((s * bins).astype(int), 0, bins - 1)
    rows, ece = [], 0.0
    for b in range(bins):
        m = which == b
        if not m.any():
            continue
        mean_s, share = float(s[m].mean()), float(y[m].mean())
        ece += m.sum() / len(s) * abs(mean_s - share)
        rows.append({"low": b / bins, "high": (b + 1) / bins, "n": int(m.sum()), "mean_score": round(mean_s, 6),
                     "positive_share": round(share, 6)})
    return {"bins": rows, "ece": ece}


def _log_loss(y, probs) -> float:
    """Mean negative log-likelihood of the true classes (rows of ``probs`` renormalised: float32
    probabilities sum to one only to ~1e-7)."""
    p = np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1.0)
    p = p / p.sum(axis=1, keepdims=True)
    return float(-np.mean(np.log(p[np.arange(len(p)), np.asarray(y).astype(int)])))


def top_label_ece(y_true, probs, bins: int = 10) -> float:
    """Expected calibration error of the top class's probability (multi-class models)."""
    p = np.asarray(probs, dtype=float)
    hit = (p.argmax(1) == np.asarray(y_true).astype(int)).astype(float)
    return reliability(hit, p.max(1), bins)["ece"]


def apply_temperature(probs, temperature: float) -> np.ndarray:
    """Class probabilities as the network would give them with its logits divided by
    ``temperature`` (``softmax(log p / T)``; > 1 softens, < 1 sharpens). The order of the
    classes in every row is kept, so arg-max decisions do not change."""
    logp = np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1.0)) / temperature
    logp -= logp.max(axis=1, keepdims=True)
    e = np.exp(logp)
    return e / e.sum(axis=1, keepdims=True)


#: the range ``fit_temperature`` searches; a fit at either end has no finite answer (``calibrate_predictor``)
TEMPERATURE_BOUNDS = (0.05, 20.0)


def fit_temperature(probs, y_true, bounds: tuple[float, float] = TEMPERATURE_BOUNDS) -> float:
    """The temperature minimising the negative log-likelihood of ``y_true`` under
    ``apply_temperature(probs, T)`` (temperature scaling, Guo et al. 2017: one number fitted
    on validation data, so it barely over-fits even a few hundred photos)."""
    from scipy.optimize import minimize_scalar

    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y_true).astype(int)
    if p.ndim != 2 or len(p) != len(y) or len(y) == 0:
        raise ValueError("probs must be (n, classes) and y_true n labels, n > 0")

    def nll(log_t: float) -> float:
        return _log_loss(y, apply_temperature(p, math.exp(log_t)))

    res = minimize_scalar(nll, bounds=(math.log(bounds[0]), math.log(bounds[1])), method="bounded",
                          options={"xatol": 1e-5})
    return float(math.exp(res.x))


def temperature_threshold(threshold: float, temperature: float) -> float:
    """The threshold on probabilities at ``temperature`` that flags exactly the photos
    ``threshold`` flagged before (binary softmax: p_T = sigmoid(logit(p) / T))."""
    t = min(max(float(threshold), 1e-12), 1 - 1e-12)
    return float(1.0 / (1.0 + math.exp(-math.log(t / (1 - t)) / temperature)))


def multiclass_metrics(y_true, probs, labels: list[str], ks=(1, 3, 5, 10)) -> dict:
    """Accuracy, macro precision/recall/F1, top-k accuracy and confusion matrix."""
    y = np.asarray(y_true).astype(int)
    p = np.asarray(probs, dtype=float)
    pred = p.argmax(1)
    prec, rec, f1, _ = skm.precision_recall_fscore_support(y, pred, labels=range(len(labels)), average="macro",
                                                          zero_division=0)
    out = {
        "n": int(len(y)),
        "accuracy": _f((pred == y).mean()),
        "precision_macro": _f(prec),
        "recall_macro": _f(rec),
        "f1_macro": _f(f1),
        "confusion_matrix": skm.confusion_matrix(y, pred, labels=range(len(labels))).tolist(),
        "log_loss": _f(_log_loss(y, p)) if len(y) else None,
        "ece": _f(top_label_ece(y, p)) if len(y) else None,
        "ci95": {"accuracy": proportion_interval(int((pred == y).sum()), len(y))},
    }
    for k in ks:
        if k < len(labels):
            out[f"top{k}_accuracy"] = _f(top_k_accuracy(y, p, k))
    return out


def top_k_accuracy(y_true, probs, k: int) -> float:
    y = np.asarray(y_true).astype(int)
    topk = np.argsort(-np.asarray(probs), axis=1)[:, :k]
    return float((topk == y[:, None]).any(1).mean())


def pr_curve(y_true, scores) -> dict:
    precision, recall, thresholds = skm.precision_recall_curve(np.asarray(y_true).astype(int), scores)
    return {"precision": precision.tolist(), "recall": recall.tolist(), "thresholds": thresholds.tolist()}


def roc_curve(y_true, scores) -> dict:
    fpr, tpr, thresholds = skm.roc_curve(np.asarray(y_true).astype(int), scores)
    return {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "thresholds": np.clip(thresholds, 0, 1).tolist()}


def threshold_for_recall(y_true, scores, target: float) -> float:
    """Highest threshold whose recall on (y_true, scores) is at least ``target``
    (the most precise operating point that keeps the recall)."""
    if not 0 < target <= 1:
        raise ValueError("target recall must be in (0, 1]")
    y = np.asarray(y_true).astype(int)
    pos = np.sort(np.asarray(scores, dtype=float)[y == 1])[::-1]
    if len(pos) == 0:
        raise ValueError("no positive examples to set a recall threshold on")
    need = math.ceil(target * len(pos) - 1e-9)  # positives that must be flagged
    return float(pos[max(need, 1) - 1])


def threshold_for_precision(y_true, scores, target: float) -> float:
    """Lowest threshold whose precision is at least ``target`` (the highest recall
    that keeps the precision). Falls back to the most precise threshold with a
    warning flag in the caller when the target cannot be reached."""
    if not 0 < target <= 1:
        raise ValueError("target precision must be in (0, 1]")
    y = np.asarray(y_true).astype(int)
    s = np.asarray(scores, dtype=float)
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    tp = np.cumsum(y_sorted)
    flagged = np.arange(1, len(s) + 1)
    # Only cut where the score changes (ties are flagged together).
    last_of_tie = np.r_[s_sorted[1:] != s_sorted[:-1], True]
    precision = tp / flagged
    ok = np.where(last_of_tie & (precision >= target - 1e-12))[0]
    if len(ok) == 0:
        raise ValueError(f"no threshold reaches precision {target} on this data")
    return float(s_sorted[ok.max()])


@dataclass
class ThresholdChoice:
    threshold: float
    rule: str  # "default", "target_recall" or "target_precision"
    target: float | None = None
    note: str = ""
    val_metrics: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"threshold": self.threshold, "rule": self.rule, "target": self.target, "note": self.note}


def choose_threshold(y_val, s_val, target_recall: float | None = None,
                     target_precision: float | None = None) -> ThresholdChoice:
    """Pick the operating threshold on validation data."""
    if target_recall is not None and target_precision is not None:
        raise ValueError("give a target recall or a target precision, not both")
    if target_recall is not None:
        t = threshold_for_recall(y_val, s_val, target_recall)
        choice = ThresholdChoice(t, "target_recall", target_recall)
        n_pos = int((np.asarray(y_val).astype(int) == 1).sum())
        if target_recall < 1 and n_pos * (1 - target_recall) < 1:  # not one positive may be missed
            choice.note = (f"{n_pos} positive validation photo(s): recall moves in steps of 1/{n_pos}, so the "
                           f"threshold keeps all of them (recall 1 there, more flags than {target_recall} needs; "
                           f"{math.ceil(1 / (1 - target_recall) - 1e-9)} or more tell them apart)")
    elif target_precision is not None:
        try:
            t = threshold_for_precision(y_val, s_val, target_precision)
            choice = ThresholdChoice(t, "target_precision", target_precision)
            n_flag = int((np.asarray(s_val, dtype=float) >= t).sum())
            if not (np.asarray(y_val).astype(int) == 0).any():  # no photo can be a false flag: nothing was measured
                choice.note = (f"no negative validation photo: precision is 1 at any threshold, so this one "
                               f"({t:.4g}) flags every validation photo; choose it on validation photos of both "
                               "classes")
            elif target_precision < 1 and n_flag * (1 - target_precision) < 1:  # not one false flag may be among them
                choice.note = (f"{n_flag} validation photo(s) flagged at this threshold: precision moves in steps of "
                               f"about 1/{n_flag} there, so it is set where none of them is a false flag (precision "
                               f"1 there, fewer flags than {target_precision} allows; "
                               f"{math.ceil(1 / (1 - target_precision) - 1e-9)} or more flagged tell them apart)")
        except ValueError as exc:
            t = float(np.max(s_val))
            choice = ThresholdChoice(t, "target_precision", target_precision, note=f"{exc}; using the highest score")
    else:
        choice = ThresholdChoice(0.5, "default")
    choice.val_metrics = binary_metrics(y_val, s_val, choice.threshold)
    return choice


#: bins of photos per object, as (largest count, name)
PHOTO_COUNT_BINS = ((1, "1"), (2, "2"), (3, "3"), (4, "4"), (5, "5"), (9, "6-9"), (10**9, "10+"))


def accuracy_by(table, column: str, *, per_label: bool = False) -> dict:
    """Accuracy and count per value of a metadata column (e.g. department).
    ``per_label``: per (value, true label) instead, keyed "value / label": the accuracy
    within one label is its recall, which shows a slice that hurts one class only."""
    ok = table[table["error"].isna()] if "error" in table else table
    if column not in ok or ok.empty:
        return {}
    key = ok[column].astype(str)
    if per_label:
        key = key + " / " + ok["label"].astype(str)
    grouped = ok["correct"].astype(bool).groupby(key).agg(["mean", "size", "sum"])
    bins = {name: i for i, (_, name) in enumerate(PHOTO_COUNT_BINS)}  # "2" before "10+"
    rows = sorted(grouped.iterrows(), key=lambda kv: (bins.get(kv[0], len(bins)), kv[0]))
    return {str(k): {"accuracy": _f(r["mean"]), "n": int(r["size"]),
                     "ci95": proportion_interval(int(r["sum"]), int(r["size"]))}
            for k, r in rows}


@dataclass
class Evaluation:
    """Per-image results and metrics of one model on one set of images."""

    table: "object"  # pandas DataFrame: manifest columns + score, predicted, correct, error
    metrics: dict
    labels: list[str]
    positive_label: str | None
    threshold: float | None

    def confident_mistakes(self, n: int):
        """The ``n`` wrong rows the model was surest of: binary models by distance from the
        threshold on the wrong side, others by the probability of the wrong class."""
        wrong = self.table[self.table["error"].isna() & ~self.table["correct"].astype(bool)].copy()
        threshold = 0.5 if self.threshold is None else self.threshold
        wrong["confidence"] = (wrong["score"] - threshold).abs() if self.positive_label else wrong["score"]
        return wrong.sort_values("confidence", ascending=False).head(n)


def photos_per_object(df):
    """For each row of manifest ``df``: how many photos its object has in ``df``, as a bin
    ("1" ... "5", "6-9", "10+"). The instance study reports accuracy by this count."""
    counts = df.groupby("object_id")["object_id"].transform("size").to_numpy()
    return [next(name for top, name in PHOTO_COUNT_BINS if c <= top) for c in counts]


def photo_colour(paths) -> list[str | None]:
    """"colour" or "greyscale" for each image (None when it cannot be read). Decoded at
    1/8 scale where JPEG allows: a few milliseconds a photo."""
    from .data.images import ImageLoadError, is_greyscale, load_image

    out: list[str | None] = []
    for path in paths:
        try:
            out.append("greyscale" if is_greyscale(load_image(path, draft_size=(64, 64))) else "colour")
        except ImageLoadError:
            out.append(None)
    return out


def evaluate_predictor(predictor, df, *, threshold: float | None = None, progress: bool = True,
                       by: tuple[str, ...] = ("department", "photos_per_object", "photo_quality"),
                       by_label: tuple[str, ...] = ("photo_colour",)) -> Evaluation:
    """Run ``predictor`` on every image of manifest ``df`` and score it against ``label``.

    Images that cannot be read are kept in the table with their error and
    counted in ``metrics['unreadable']``; metrics cover the readable ones.
    ``threshold`` overrides the model's own (binary models). ``by`` columns give
    ``accuracy_by_<column>``; ``by_label`` ones ``accuracy_by_<column>_and_label``, and
    ``photo_colour`` (black-and-white photo or not) is measured when asked for: old museum
    photos are often grey, more often for one class than the other. ``photo_quality`` is
    "warned" for a photo with a quality warning (``data.quality``: little fine detail, grainy, dark,
    small), else "ok"; the warnings themselves are in ``quality_warnings``.
    """
    import pandas as pd

    from .data.manifest import carried_names
    from .data.quality import warnings_text

    unknown = sorted(set(df["label"]) - set(predictor.labels))
    if unknown:
        raise ValueError(f"labels {unknown} are not among the model's labels {predictor.labels}")
    preds = predictor.predict_files(df["path"].tolist(), progress=progress)
    made = {"error", "quality_warnings", "photo_quality", "score", "predicted", "correct",
            *(f"p_{label}" for label in predictor.labels)}  # a manifest's own "score" is kept as input_score
    table = df.rename(columns=carried_names(df.columns, made)).reset_index(drop=True)
    table["error"] = [p.error for p in preds]
    table["quality_warnings"] = [warnings_text(p.quality) for p in preds]
    table["photo_quality"] = [("warned" if p.warnings else "ok") if p.ok else None for p in preds]
    ok = table["error"].isna().to_numpy()
    y = np.array([predictor.labels.index(l) for l in table["label"]])
    probs = np.array([[p.probabilities[l] for l in predictor.labels] if p.ok else [np.nan] * len(predictor.labels)
                      for p in preds])
    for j, label in enumerate(predictor.labels):
        table[f"p_{label}"] = probs[:, j]
    if predictor.binary:
        pos = predictor.positive_index
        t = predictor.operating_threshold(threshold)
        table["score"] = probs[:, pos]
        # an unreadable photo has no decision: never the negative label, which would read as cleared
        table["predicted"] = [predictor.decision_label(bool(f)) if o else None
                              for f, o in zip(predictor.flags(probs[:, pos], t), ok)]
        m = binary_metrics((y[ok] == pos).astype(int), table["score"].to_numpy()[ok], t) if ok.any() else {}
    else:
        t = None
        table["score"] = np.nanmax(probs, axis=1)
        table["predicted"] = [predictor.labels[int(i)] if o else None for i, o in
                              zip(np.nan_to_num(probs).argmax(1), ok)]
        m = multiclass_metrics(y[ok], probs[ok], predictor.labels) if ok.any() else {}
    table["correct"] = np.where(ok, table["predicted"] == table["label"], None)  # empty where there is no decision
    m["unreadable"] = int((~ok).sum())
    if "photo_colour" in by_label and "photo_colour" not in table.columns:
        table["photo_colour"] = photo_colour(table["path"].tolist())
    for col in by:
        if col in table.columns:
            m[f"accuracy_by_{col}"] = accuracy_by(table, col)
    for col in by_label:
        if col in table.columns:
            m[f"accuracy_by_{col}_and_label"] = accuracy_by(table, col, per_label=True)
    return Evaluation(table=pd.DataFrame(table), metrics=m, labels=predictor.labels,
                      positive_label=predictor.positive_label, threshold=t)


def variant_probabilities(predictor, paths: list[str], variant, *, seed: int = 0, progress: bool = False,
                          desc: str = "images", mask_cache=None) -> np.ndarray:
    """Class probabilities (n, C) of ``predictor`` on listing-style versions of ``paths``
    (see ``data.listing.ListingStyleDataset``, which ``mask_cache`` is passed to); NaN rows
    for unreadable files."""
    from .data.listing import ListingStyleDataset
    from .data.transforms import EachTransform
    from .inference import iter_dataset_batches

    # An ensemble's members read the very same pictures (each drawn from the seed and the photo's
    # position), made once and put through each member's own transform: the generator, not the
    # networks, is most of the cost. Studio photos are decoded exactly as in prediction, at each
    # member's ``Preprocessing.draft_size`` (JPEG draft scaling moves accuracy by ~0.5 points on
    # met-ivory), so members that decode at different draft sizes read them separately;
    # listing-style versions are made from the full-resolution photo.
    ensemble = hasattr(predictor, "members")
    members = list(predictor.members) if ensemble else [predictor]
    groups: dict = {}
    for k, m in enumerate(members):
        groups.setdefault(m.preprocessing.draft_size if variant is None else None, []).append(k)
    per_member = [np.full((len(paths), len(m.labels)), np.nan, dtype=np.float32) for m in members]
    for draft, ks in groups.items():
        ds = ListingStyleDataset(paths, EachTransform([members[k].transform for k in ks]), variant, seed,
                                 mask_cache=mask_cache, draft_size=draft)
        for batch in iter_dataset_batches(ds, batch_size=members[ks[0]].batch_size, progress=progress, desc=desc):
            if len(batch.index):
                for k, x in zip(ks, batch.x):
                    per_member[k][batch.index] = members[k].proba_tensor(x)
    if not ensemble:
        return per_member[0]
    # the mean in the ensemble's label order; NaN where the photo could not be read, as in prediction
    return np.mean([p[:, [m.labels.index(l) for l in predictor.labels]] for p, m in zip(per_member, members)], axis=0)


def evaluate_shift(predictor, df, *, seed: int = 0, threshold: float | None = None, progress: bool = True) -> dict:
    """Accuracy on the studio photos of ``df``, on listing-style versions of them (all
    transform families at once, then each family alone) and on their background only
    (the object masked out: near chance unless the model reads backgrounds). The
    listing-style set is fixed by ``seed``. Drops are in accuracy points."""
    import tempfile

    from .data.listing import MaskCache, shift_variants

    paths = df["path"].tolist()
    y = np.array([predictor.labels.index(l) for l in df["label"]])
    t = predictor.operating_threshold(threshold)
    results = {}
    # three variants cut the object out of the same photo: its foreground is estimated once
    with tempfile.TemporaryDirectory(prefix="artsentry-masks-") as tmp:
        masks = MaskCache(tmp)
        probs_by_variant = {name: variant_probabilities(predictor, paths, variant, seed=seed, progress=progress,
                                                        desc=name, mask_cache=masks)
                            for name, variant in shift_variants().items()}
    for name, probs in probs_by_variant.items():
        ok = ~np.isnan(probs).any(1)
        if predictor.binary:
            pos = predictor.positive_index
            m = binary_metrics((y[ok] == pos).astype(int), probs[ok, pos], t)
            results[name] = {k: m[k] for k in ("n", "accuracy", "precision", "recall", "roc_auc")}
        else:
            m = multiclass_metrics(y[ok], probs[ok], predictor.labels, ks=(1,))
            results[name] = {"n": int(ok.sum()), "accuracy": m["accuracy"]}
        results[name]["ci95"] = {"accuracy": m["ci95"]["accuracy"]}
    studio = results["studio"]["accuracy"]

    def drop(name):
        return round(100 * (studio - results[name]["accuracy"]), 2)

    families = {k[5:]: drop(k) for k in results if k.startswith("only_")}
    return {"seed": seed, "threshold": t if predictor.binary else None, "variants": results,
            "drop_points": drop("listing"), "drop_points_by_family": families,
            "worst_family": max(families, key=families.get),
            "chance_accuracy": round(float(np.bincount(y).max() / len(y)), 4)}


def input_sizes(predictor) -> int | list[int]:
    """The input resolution a predictor runs at (a list for an ensemble, one per member)."""
    if hasattr(predictor, "members"):
        return [m.preprocessing.input_size for m in predictor.members]
    return predictor.preprocessing.input_size


def report_explanations(predictor, ev: Evaluation, df, out_dir, *, n_mistakes: int = 12, n_correct: int = 8,
                        seed: int = 0, progress: bool = False) -> dict:
    """What the report shows beyond the metrics: Grad-CAM overlays (data URIs, keyed by
    image path) of the most confident mistakes and of a seeded sample of correct
    decisions, and the feature map (``projection/`` in ``out_dir``). ``predictor`` is the
    one the evaluation ran, so the model is loaded once."""
    from pathlib import Path

    from .explain import ClassifierExplainer
    from .explain.project import write_projection
    from .htmlembed import data_uri

    table = ev.table
    right = table[table["error"].isna() & table["correct"].astype(bool)]
    sample = [str(p) for p in right.sample(min(n_correct, len(right)), random_state=seed)["path"]]
    picked = [str(p) for p in ev.confident_mistakes(n_mistakes)["path"]] + sample
    overlays: dict[str, str] = {}
    if picked:
        engine = ClassifierExplainer(predictor)
        for path in picked:
            uri = engine.overlay_uri(path)
            if uri:
                overlays[path] = uri
    try:
        proj = write_projection(predictor, df, Path(out_dir) / "projection", methods=("pca", "tsne"),
                                color_by=["correct"] + [c for c in ("label", "department") if c in df.columns],
                                progress=progress,
                                title=f"Feature map: {predictor.folder.resolve().parent.name} on these images")
        feature_map = {"png": data_uri(Path(proj["png"]).read_bytes()), "html": "projection/projection.html"}
    except ValueError as exc:  # too few readable images for a map
        feature_map = {"note": str(exc)}
    return {"overlays": overlays, "correct_sample": sample, "feature_map": feature_map}


def calibrate_predictor(predictor, val_df, *, progress: bool = True) -> dict:
    """Fit ``predictor``'s temperature on the photos of ``val_df`` (temperature scaling) and
    set it, composed with the one it had; a binary model's threshold moves with it so that
    exactly the same photos are flagged. Returns what ``config.json`` keeps under
    ``calibration``: the temperature, the photos it was fitted on, and the validation log
    loss and calibration error before and after."""
    ev = evaluate_predictor(predictor, val_df, progress=progress, by=(), by_label=())
    ok = ev.table["error"].isna().to_numpy()
    if ok.sum() == 0:
        raise ValueError("no readable validation photos to calibrate on")
    probs = ev.table.loc[ok, [f"p_{l}" for l in predictor.labels]].to_numpy(dtype=np.float64)
    y = np.array([predictor.labels.index(l) for l in ev.table.loc[ok, "label"]])
    bounds = TEMPERATURE_BOUNDS
    fitted = fit_temperature(probs, y, bounds)
    note = ""
    if not bounds[0] * 1.02 < fitted < bounds[1] / 1.02:
        # every validation photo on the right side with room to spare: the likelihood only grows
        # as the temperature shrinks, and no finite one is the answer (a tiny or too easy val split)
        note = (f"not applied: the best temperature on these {int(ok.sum())} validation photos is at the bound "
                f"of the search ({fitted:.3g}); they are too few or too easily separated to calibrate on")
        fitted = 1.0
    after = apply_temperature(probs, fitted)

    def figures(p) -> dict:
        out = {"log_loss": _f(_log_loss(y, p))}
        if predictor.binary:
            pos = predictor.positive_index
            out["ece"] = _f(reliability((y == pos).astype(int), p[:, pos])["ece"])
        else:
            out["ece"] = _f(top_label_ece(y, p))
        return out

    before_t = predictor.temperature
    predictor.temperature = before_t * fitted
    if predictor.binary and predictor.threshold is not None:
        predictor.threshold = temperature_threshold(predictor.threshold, fitted)
    return {"temperature": predictor.temperature, "method": "temperature scaling (Guo et al. 2017)",
            "fitted_on": {"split": "val", "n": int(ok.sum())}, "previous_temperature": before_t,
            "applied": not note, **({"note": note} if note else {}),
            "val_before": figures(probs), "val_after": figures(after)}


def default_out_dir(model_dir: Path) -> Path:
    """Where an evaluation writes without ``--out``: a run's model into its run folder (the one whose
    manifest.csv it defaults to), any other model folder into itself. (Into the parent of a standalone
    model folder, two models kept side by side, soups or ``epochs/01`` and ``02``, wrote over each
    other's metrics, predictions and report.)"""
    parent = model_dir.parent
    return parent if (parent / "manifest.csv").is_file() or (parent / "run.json").is_file() else model_dir


def _keep_runs_own_evaluation(out_dir: Path, data, split: str, ensemble, input_size: int | None) -> None:
    """Without ``--out`` a run's model is evaluated into its run folder, where ``train`` wrote the run's own
    evaluation: the model alone, at its own input size, on the test photos of the run's manifest. Another
    evaluation there (other data, another split, an ensemble, another input size) replaced it without a word,
    and the run's report, ``compare`` and anyone reading the run then took the other figures for the run's:
    refused, pointing at ``--out``. Evaluating the run's test photos again (``--shift``, a new threshold) is not."""
    from pathlib import Path

    manifest, metrics = out_dir / "manifest.csv", out_dir / "metrics.json"
    if not (manifest.is_file() and metrics.is_file()):
        return
    try:
        held = read_json_object(metrics)
    except (OSError, ValueError):  # unreadable, or no JSON object: not the run's own evaluation
        return
    if held.get("split") != "test" or held.get("ensemble"):
        return  # not the run's own evaluation: replaced by an earlier command already
    other = ([f"data {data}"] if Path(data).resolve() != manifest.resolve() else []) + \
        ([f"split {split!r}"] if split != "test" else []) + (["an ensemble"] if ensemble else []) + \
        ([f"input size {input_size} px"] if input_size is not None else [])
    if other:
        raise ValueError(f"{out_dir} holds the run's own evaluation (its test photos: metrics.json, predictions.csv, "
                         f"report.html); this one ({', '.join(other)}) would replace it: give --out DIR")


def run_evaluation(model, data=None, *, split: str | None = "test", out_dir=None, target_recall: float | None = None,
                   target_precision: float | None = None, save_threshold: bool = False,
                   progress: bool = True, shift: bool = False, shift_seed: int = 0, explain: bool = True,
                   ensemble=(), input_size: int | None = None, calibrate: bool = False) -> dict:
    """Evaluate a model folder (or run folder) on data and write metrics.json,
    predictions.csv and report.html into ``out_dir`` (default: ``default_out_dir``, where an evaluation
    other than the run's own is refused: ``_keep_runs_own_evaluation``).

    ``data`` defaults to the run's own ``manifest.csv``; ``split`` picks its
    rows when the manifest has a split column (None: all rows). A target recall
    or precision sets the threshold on the ``val`` rows first; the figures on
    ``split`` are then reported at that threshold. ``save_threshold`` writes the
    threshold and the metrics into the model's config.json. ``shift`` adds
    ``evaluate_shift`` on the same rows (studio vs listing-style photos, per
    transform family, background only) as ``result['shift']``, in metrics.json too.
    ``explain`` adds to the report Grad-CAM overlays of the most confident mistakes and
    of a sample of correct decisions, and a feature map (PCA and t-SNE of the backbone's
    features, coloured by correctness; interactive in ``projection/projection.html``).
    ``ensemble``: more model folders whose probabilities are averaged with ``model``'s
    (same labels); the report then has no overlays or feature map (no single network).
    Multi-photo objects add accuracy by photos per object (counted in the whole manifest).
    ``input_size`` measures the network(s) at another input resolution than the config's
    (EfficientNets only; runs in PyTorch); it cannot be combined with ``save_threshold``.
    ``calibrate`` first fits the model's temperature on the ``val`` rows (``calibrate_predictor``:
    the same decisions, probabilities that mean what they say) and saves it, with the threshold
    moved to flag the same photos, in config.json; the figures are the calibrated model's.
    """
    import json
    from pathlib import Path

    from .data.manifest import read_manifest
    from .inference import Ensemble, Predictor
    from .models.artifact import resolve_model_dir, update_config
    from .report import write_report

    model_dir = resolve_model_dir(model)
    if (save_threshold or calibrate) and input_size is not None:
        raise ValueError("--save-threshold and --calibrate store what is measured at the model's own input size; "
                         "drop --input-size")
    if calibrate and ensemble:
        raise ValueError("--calibrate fits one model's temperature; an ensemble has none")
    sized = {} if input_size is None else {"input_size": input_size}
    if ensemble:
        if save_threshold:
            raise ValueError("--save-threshold writes into one model's config; an ensemble has none")
        predictor = Ensemble.load([model_dir] + [resolve_model_dir(m) for m in ensemble], **sized)
        explain = False
    else:
        predictor = Predictor.load(model_dir, **sized)
    if data is None:
        data = model_dir.parent / "manifest.csv"
        if not data.is_file():
            raise ValueError(f"no data given and no manifest.csv beside {model_dir}")
    df, _ = read_manifest(data)
    if df["object_id"].duplicated().any():
        df = df.assign(photos_per_object=photos_per_object(df))
    has_split = "split" in df.columns
    if split is not None and has_split:
        eval_df = df[df["split"] == split]
        if eval_df.empty:
            raise ValueError(f"{data}: no rows in split {split!r}")
    else:
        eval_df = df
    if calibrate and not (has_split and (df["split"] == "val").any()):
        raise ValueError(f"--calibrate fits on validation photos: {data} has no 'val' split")
    if out_dir is None:
        out_dir = default_out_dir(model_dir)
        _keep_runs_own_evaluation(out_dir, data, split if (split is not None and has_split) else "all", ensemble,
                                  input_size)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():  # said now, not after the evaluation's minutes
        raise ValueError(f"{out_dir} is a file, not a folder for the evaluation's outputs")
    if not can_write_into(out_dir):  # likewise (a run on a read-only share): it failed at the first output
        raise ValueError(f"{out_dir}: cannot write the evaluation's outputs here (read-only, or no permission): "
                         "give --out FOLDER")
    if (save_threshold or calibrate) and not can_write_into(model_dir):
        raise ValueError(f"{model_dir}: cannot write the model's config.json (read-only, or no permission): "
                         f"drop --{'save-threshold' if save_threshold else 'calibrate'}, or copy the model folder")

    calibration = None
    if calibrate:
        calibration = calibrate_predictor(predictor, df[df["split"] == "val"], progress=progress)
        update_config(model_dir, calibration=calibration,
                      **({"threshold": predictor.threshold} if predictor.threshold is not None else {}))
    threshold = predictor.threshold
    choice_info = {"threshold": threshold, "rule": "model config"}
    val_metrics = None
    if predictor.binary and has_split and (df["split"] == "val").any():
        val_ev = evaluate_predictor(predictor, df[df["split"] == "val"], progress=progress)
        ok = val_ev.table["error"].isna()
        y_val = (val_ev.table.loc[ok, "label"] == predictor.positive_label).astype(int).to_numpy()
        s_val = val_ev.table.loc[ok, "score"].to_numpy()
        if target_recall is not None or target_precision is not None:
            choice = choose_threshold(y_val, s_val, target_recall, target_precision)
            threshold = choice.threshold
            choice_info = choice.to_dict()
        val_metrics = binary_metrics(y_val, s_val, predictor.operating_threshold(threshold))
    elif target_recall is not None or target_precision is not None:
        raise ValueError("a target recall/precision needs a binary model and data with a 'val' split")

    ev = evaluate_predictor(predictor, eval_df, threshold=threshold, progress=progress)
    name = split if (split is not None and has_split) else "all"
    result = {
        "model": str(model_dir),
        **({"ensemble": [m["path"] for m in predictor.info()["members"]]} if ensemble else {}),
        "data": str(data),
        "split": name,
        "input_size": input_sizes(predictor),
        "threshold": choice_info,
        **({"calibration": calibration} if calibration else {}),
        **({"temperature": predictor.temperature} if getattr(predictor, "temperature", 1.0) != 1.0 else {}),
        "metrics": {name: ev.metrics, **({"val": val_metrics} if val_metrics is not None and name != "val" else {})},
    }
    if shift:
        result["shift"] = evaluate_shift(predictor, eval_df, seed=shift_seed, threshold=ev.threshold, progress=progress)
    out_dir.mkdir(parents=True, exist_ok=True)  # only now: a refused evaluation leaves no empty --out behind
    write_text_atomic(out_dir / "metrics.json", json.dumps(result, indent=2) + "\n")
    write_csv_atomic(ev.table, out_dir / PREDICTIONS_NAME)
    extras = report_explanations(predictor, ev, eval_df, out_dir, progress=progress) if explain else {}
    shown = f"{model_dir.name} + {len(ensemble)} (ensemble)" if ensemble else model_dir.name
    write_report(ev, out_dir / "report.html", title=f"artsentry evaluation: {shown} on {name}",
                 context={k: v for k, v in result.items() if k != "metrics"} | {"val_metrics": val_metrics},
                 **extras)
    if save_threshold and predictor.binary:
        update_config(model_dir, threshold=ev.threshold, threshold_rule=choice_info, metrics=result["metrics"])
    result["evaluation"] = ev
    return result
