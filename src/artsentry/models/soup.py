"""Model soups (Wortsman et al. 2022): one classifier whose weights are the mean of several classifiers'
weights, fine-tuned from the same pretrained start.

Fine-tunes of one pretrained network stay in one basin of the loss, and the mean of their weights
usually scores better than each of them, on photos unlike the training ones too, for one forward pass
(an ensemble needs one per member). Measured on met-ivory: the soup of two ``make ivory`` runs scored
0.940 on studio and 0.912 on listing-style test photos against 0.935–0.936 and 0.896–0.898 for the runs
alone (BENCHMARKS.md, "Model soups").

Every floating-point tensor is averaged, BatchNorm running statistics included; integer ones (BatchNorm's
step counters) are the first model's. The soup reads photos as the first model does. What the first
model's config held about its own outputs (threshold chosen on validation, calibration temperature, test
metrics, lot threshold, ONNX export) does not hold for the soup and is not copied: the threshold is 0.5
(or none for several classes) until ``evaluate --split val --calibrate --save-threshold`` chooses one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch

from ..data.transforms import Preprocessing
from .artifact import ArtifactError, load_model, save_model

#: what the models of a soup must share: the same network, reading the same input, with the same classes
SAME = ("labels", "positive_label", "architecture")


def soup_state(states: Sequence[dict[str, torch.Tensor]], weights: Sequence[float]) -> dict[str, torch.Tensor]:
    """The weighted mean of state dicts with the same names and shapes (floats averaged in float64;
    integer tensors taken from the first)."""
    first = states[0]
    out = {}
    for name, t in first.items():
        if t.is_floating_point():
            mean = sum(w * s[name].double() for w, s in zip(weights, states))
            out[name] = mean.to(t.dtype)
        else:
            out[name] = t.clone()
    return out


def make_soup(folders: Sequence[str | Path], out: str | Path, weights: Sequence[float] | None = None,
              **extra) -> tuple[Path, list[str]]:
    """Write the soup of the classifier folders ``folders`` to the model folder ``out``. ``weights``: one
    positive number per model (normalised to sum to 1; default equal); ``extra``: more config.json entries
    (``train_soup`` records how its runs were trained). Returns the folder and notes worth telling the user
    (preprocessing or training data that differ between the models)."""
    folders = [Path(f) for f in folders]
    if len(folders) < 2:
        raise ArtifactError("a soup needs at least two models")
    if weights is None:
        weights = [1.0] * len(folders)
    if len(weights) != len(folders):
        raise ArtifactError(f"{len(weights)} weights for {len(folders)} models: give one per model")
    if not all(w > 0 and math.isfinite(w) for w in weights):
        raise ArtifactError(f"soup weights must be positive, not {list(weights)}")
    weights = [w / sum(weights) for w in weights]
    loaded = [load_model(f) for f in folders]
    model, first = loaded[0]
    if first["architecture"]["name"] == "smallcnn":
        raise ArtifactError("smallcnn models are trained from scratch: they share no start, and the mean of "
                            "their weights is no model; a soup is of fine-tunes of one pretrained network")
    notes = []
    seen: dict[str, Path] = {}
    for folder, (net, _) in zip(folders, loaded):  # the same model given twice (or a copy of it) is a slip
        if net.weights_sha256 in seen:
            notes.append(f"{folder} holds the same weights as {seen[net.weights_sha256]}: they count twice in the "
                         "soup (--weights sets each model's share)")
        seen.setdefault(net.weights_sha256, folder)
    for folder, (_, config) in zip(folders[1:], loaded[1:]):
        for key in SAME:
            if config.get(key) != first.get(key):
                raise ArtifactError(f"{folder}: {key} {config.get(key)!r} differs from {folders[0]}'s "
                                    f"{first.get(key)!r}; a soup is of one network with one set of classes")
        differ = {k: v for k, v in config["preprocessing"].items() if first["preprocessing"].get(k) != v}
        if {"mean", "std"} & set(differ):
            raise ArtifactError(f"{folder} scales its inputs otherwise (mean {config['preprocessing']['mean']}, std "
                                f"{config['preprocessing']['std']}) than {folders[0]}: its weights mean other things")
        if differ:
            said = ", ".join(f"{k} {v} (not {first['preprocessing'].get(k)})" for k, v in differ.items())
            notes.append(f"{folder} reads photos otherwise: {said}; the soup reads them as {folders[0]} does")
        data, data0 = config.get("data") or {}, first.get("data") or {}
        if (data.get("source"), data.get("splits")) != (data0.get("source"), data0.get("splits")):
            notes.append(f"{folder} was trained on other data or another split than {folders[0]}: evaluate the "
                         "soup only on photos none of its models trained on")
    model.load_state_dict(soup_state([m.state_dict() for m, _ in loaded], weights), strict=True)
    binary = len(first["labels"]) == 2
    save_model(
        model, out,
        labels=first["labels"],
        preprocessing=Preprocessing.from_dict(first["preprocessing"]),
        threshold=0.5 if binary else None,
        positive_label=first.get("positive_label"),
        threshold_rule={"threshold": 0.5, "rule": "default of a soup"} if binary else None,
        data=first.get("data"),
        soup={"models": [{"folder": str(f), "created": c.get("created"), "weight": w,
                          "test": {k: v for k, v in ((c.get("metrics") or {}).get("test") or {}).items()
                                   if k in ("n", "accuracy", "roc_auc")}}
                         for f, (_, c), w in zip(folders, loaded, weights)],
              "method": "weighted mean of the weights (Wortsman et al. 2022, model soups)"},
        **extra,
    )
    return Path(out), notes
