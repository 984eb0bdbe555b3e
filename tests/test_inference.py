"""How class probabilities become decisions (``inference.Decider``), and how an ``Ensemble`` averages its
members: pure functions of arrays, tested without a network."""

from __future__ import annotations

import numpy as np
import pytest

from artsentry.inference import Decider, Ensemble, Prediction


def decider(labels, positive_label=None, threshold=None) -> Decider:
    d = Decider()
    d.labels, d.positive_label, d.threshold = list(labels), positive_label, threshold
    return d


def test_a_binary_decision_is_taken_at_the_threshold_whichever_position_the_positive_label_has():
    for labels in (["ivory", "bronze"], ["bronze", "ivory"]):
        d = decider(labels, "ivory", threshold=0.3)
        pos = labels.index("ivory")
        assert d.binary and d.positive_index == pos

        def probs(p_ivory):
            out = np.zeros(2)
            out[pos], out[1 - pos] = p_ivory, 1 - p_ivory
            return out

        at = d.decide("a.jpg", probs(0.3))  # exactly at the threshold: flagged
        assert (at.label, at.flagged, at.score) == ("ivory", True, pytest.approx(0.3))
        below = d.decide("b.jpg", probs(0.2999))
        assert (below.label, below.flagged) == ("bronze", False)
        assert below.score == pytest.approx(0.2999) and below.probabilities == {"ivory": pytest.approx(0.2999),
                                                                               "bronze": pytest.approx(0.7001)}
        # a threshold given for this decision only (a lot scan's) replaces the model's
        assert d.decide("c.jpg", probs(0.45), threshold=0.5).flagged is False
        assert d.decide("c.jpg", probs(0.45)).flagged is True


def test_a_binary_model_without_a_threshold_decides_at_one_half():
    d = decider(["non_ivory", "ivory"], "ivory")
    assert d.decide("a", np.array([0.5, 0.5])).label == "ivory"
    assert d.decide("b", np.array([0.5001, 0.4999])).label == "non_ivory"


def test_the_operating_threshold_is_the_one_given_else_the_models_else_one_half():
    d = decider(["non_ivory", "ivory"], "ivory", threshold=0.3)
    assert (d.operating_threshold(), d.operating_threshold(0.8), d.operating_threshold(0.0)) == (0.3, 0.8, 0.0)
    assert decider(["non_ivory", "ivory"], "ivory").operating_threshold() == 0.5
    scores = np.array([0.1, 0.3, 0.7999, 0.8, np.nan])
    assert d.flags(scores).tolist() == [False, True, True, True, False]
    assert d.flags(scores, 0.8).tolist() == [False, False, False, True, False]
    assert [d.decide("x", np.array([1 - s, s])).flagged for s in scores[:4]] == d.flags(scores[:4]).tolist()


def test_without_a_positive_label_the_decision_is_the_top_class():
    for d in (decider(["red", "green", "blue"]), decider(["cat", "dog"]), decider(["cat", "dog"], "bird", 0.1)):
        assert not d.binary
        p = d.decide("x", np.array([0.2, 0.7, 0.1][: len(d.labels)]))
        assert (p.label, p.score, p.flagged) == ("green" if len(d.labels) == 3 else "dog", pytest.approx(0.7), None)


class Member:
    """Stands in for a loaded ``Predictor``: fixed probabilities per photo name, in its own label order."""

    def __init__(self, labels, probs, positive_label="ivory", errors=(), quality=None):
        self.labels, self.probs, self.positive_label = list(labels), probs, positive_label
        self.errors, self.quality = set(errors), quality
        self.batch_size, self.folder, self.runtime = 32, None, "torch"
        self.asked_quality = []

    def info(self):
        return {"labels": self.labels}

    def predict_files(self, sources, names, progress, quality):
        self.asked_quality.append(quality)
        out = []
        for name in names:
            if name in self.errors:
                out.append(Prediction(name, error=f"{name}: unreadable"))
            else:
                p = Prediction(name, probabilities=dict(zip(self.labels, self.probs[name])))
                p.quality = self.quality if quality else None
                out.append(p)
        return out


def test_an_ensemble_averages_by_label_name_and_decides_as_one_model():
    a = Member(["ivory", "non_ivory"], {"x": [0.9, 0.1], "y": [0.2, 0.8], "z": [0.6, 0.4]}, quality={"q": 1})
    b = Member(["non_ivory", "ivory"], {"x": [0.5, 0.5], "y": [0.9, 0.1], "z": [0.6, 0.4]}, errors={"z"},
               quality={"q": 2})
    ens = Ensemble([a, b])
    assert ens.binary and ens.labels == ["ivory", "non_ivory"] and ens.info()["threshold"] == 0.5
    assert ens.info()["members"] == [{"labels": ["ivory", "non_ivory"]}, {"labels": ["non_ivory", "ivory"]}]
    x, y, z = ens.predict_files(["x", "y", "z"], names=["x", "y", "z"])
    assert x.score == pytest.approx(0.7) and x.label == "ivory" and x.flagged
    assert y.score == pytest.approx(0.15) and y.label == "non_ivory"
    assert z.error == "z: unreadable" and z.score is None  # unreadable to one member: unreadable
    assert x.quality == {"q": 1} and a.asked_quality == [True] and b.asked_quality == [False]
    ens.threshold = 0.1  # as evaluate --target-recall sets it
    assert ens.predict_files(["y"], names=["y"])[0].label == "ivory" and ens.info()["threshold"] == 0.1


def test_an_ensemble_needs_two_members_over_the_same_labels():
    a = Member(["ivory", "non_ivory"], {})
    with pytest.raises(ValueError, match="at least two"):
        Ensemble([a])
    with pytest.raises(ValueError, match="disagree on labels"):
        Ensemble([a, Member(["ivory", "bone"], {})])
    with pytest.raises(ValueError, match="disagree on the positive label: 'ivory' vs 'non_ivory'"):
        Ensemble([a, Member(["non_ivory", "ivory"], {}, positive_label="non_ivory")])
