import numpy as np
import pytest

from artsentry.evaluate import (binary_metrics, choose_threshold, multiclass_metrics, threshold_for_precision,
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


def test_multiclass_and_topk():
    probs = np.array([[0.6, 0.3, 0.1], [0.2, 0.3, 0.5], [0.1, 0.7, 0.2], [0.5, 0.4, 0.1]])
    y = np.array([0, 1, 1, 2])
    assert top_k_accuracy(y, probs, 1) == 0.5
    assert top_k_accuracy(y, probs, 2) == 0.75
    m = multiclass_metrics(y, probs, ["a", "b", "c"])
    assert m["accuracy"] == 0.5 and m["top1_accuracy"] == 0.5
    assert m["confusion_matrix"][1] == [0, 1, 1]
