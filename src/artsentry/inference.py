"""Using a trained model: ``Predictor.load(folder).predict_files(paths)``.

The predictor applies the preprocessing and the decision threshold stored in
the model's ``config.json``. Files that cannot be read come back as
predictions with ``error`` set; the others are unaffected.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from .data.dataset import ImageDataset, make_loader
from .data.images import ImageSource, as_sources, source_names
from .data.quality import quality_warnings
from .data.transforms import Preprocessing, eval_transform
from .models import check_input_size, inference_batch
from .models.artifact import ArtifactError, calibration_temperature, load_model
from .models.onnx import OnnxClassifier, onnx_damaged, onnx_ready, onnxruntime_available
from .models.classifier import ImageClassifier

log = logging.getLogger(__name__)


@dataclass
class Prediction:
    source: str
    label: str | None = None  # decision: at the threshold for binary models, else the top class
    score: float | None = None  # probability of the positive label (binary) or of the top class
    flagged: bool | None = None  # binary models: score >= threshold
    probabilities: dict[str, float] | None = None
    error: str | None = None
    # data.quality.PhotoQuality.to_dict(): sharpness, noise, brightness, long side, warnings
    quality: dict | None = None

    @property
    def warnings(self) -> list[str]:
        """What limits the evidence of this photo (``data.quality``); empty when nothing does."""
        return quality_warnings(self.quality)

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict:
        return asdict(self)


def default_workers(n_items: int) -> int:
    """Decode in background workers only when there is enough work to pay for them."""
    cpus = os.cpu_count() or 1
    return 0 if n_items < 64 or cpus < 2 else min(2, cpus - 1)


def iter_image_batches(sources: Sequence[ImageSource], transform, preprocessing: Preprocessing, *,
                       names: Sequence[str], batch_size: int = 32, num_workers: int | None = None,
                       progress: bool = False, desc: str = "images", quality: bool = False):
    """Load, decode and transform images in batches (in worker processes when there are
    many); unreadable ones arrive as ``batch.errors``; with ``quality``, each photo's
    ``PhotoQuality`` in ``batch.quality``. Shows a progress bar when asked."""
    dataset = ImageDataset(sources, transform, draft_size=preprocessing.draft_size, names=names, quality=quality)
    yield from iter_dataset_batches(dataset, batch_size=batch_size, num_workers=num_workers, progress=progress,
                                    desc=desc)


def iter_dataset_batches(dataset: ImageDataset, *, batch_size: int = 32, num_workers: int | None = None,
                         progress: bool = False, desc: str = "images"):
    """Batches of any ``ImageDataset`` (decoded in worker processes when there are many),
    with a progress bar when asked."""
    workers = default_workers(len(dataset)) if num_workers is None else num_workers
    bar = tqdm(total=len(dataset), unit="img", disable=not progress, desc=desc)
    for batch in make_loader(dataset, batch_size=batch_size, num_workers=workers):
        yield batch
        bar.update(len(batch.index) + len(batch.errors))
    bar.close()


RUNTIMES = ("auto", "torch", "onnx")


class Decider:
    """Labels, positive label and threshold: how class probabilities become a decision
    (shared by ``Predictor`` and ``Ensemble``)."""

    labels: list[str]
    positive_label: str | None
    threshold: float | None

    @property
    def binary(self) -> bool:
        return len(self.labels) == 2 and self.positive_label in self.labels

    @property
    def positive_index(self) -> int:
        return self.labels.index(self.positive_label)

    def decision_label(self, flagged: bool) -> str:
        """A binary model's label for a decision: the positive label when flagged, else the other one."""
        return self.positive_label if flagged else self.labels[1 - self.positive_index]

    def operating_threshold(self, threshold: float | None = None) -> float:
        """The threshold a binary decision is taken at: ``threshold`` when given, else the model's, else 0.5."""
        if threshold is not None:
            return threshold
        return 0.5 if self.threshold is None else self.threshold

    def flags(self, scores, threshold: float | None = None) -> np.ndarray:
        """Which positive-label ``scores`` a binary model flags: ``score >= threshold`` (the model's when None)."""
        return np.asarray(scores, dtype=np.float64) >= self.operating_threshold(threshold)

    def decide(self, source: str, probs: np.ndarray, threshold: float | None = None) -> Prediction:
        """``threshold``: decide at this one instead of the model's (a lot scan's, ``lots``)."""
        pdict = {label: float(p) for label, p in zip(self.labels, probs)}
        if self.binary:
            score = float(probs[self.positive_index])
            flagged = bool(self.flags(score, threshold))
            return Prediction(source, self.decision_label(flagged), score, flagged, pdict)
        top = int(np.argmax(probs))
        return Prediction(source, self.labels[top], float(probs[top]), None, pdict)


class Predictor(Decider):
    """A loaded model plus everything needed to apply it to image files.

    The forward pass runs in PyTorch (channels-last, inference mode) or, when
    ``onnx`` is given, in ONNX Runtime; the answers agree to 1e-3 in probability
    (checked when the ONNX file is exported)."""

    def __init__(self, model: ImageClassifier, config: dict, *, batch_size: int = 32, num_workers: int | None = None,
                 onnx: OnnxClassifier | None = None, input_size: int | None = None, resize: str | None = None):
        self.model = model.eval()
        if config["architecture"]["name"].startswith("efficientnet"):
            self.model = self.model.to(memory_format=torch.channels_last)  # ~1.7x faster on CPU
        self.onnx = onnx
        self.runtime = "onnxruntime" if onnx is not None else "torch"
        self.config = config
        self.labels: list[str] = list(config["labels"])
        self.positive_label: str | None = config.get("positive_label")
        self.threshold: float | None = config.get("threshold")
        self.temperature = calibration_temperature(config)  # logits / T before the softmax; 1: not calibrated
        self.preprocessing = Preprocessing.from_dict(config["preprocessing"])
        if input_size is not None and input_size != self.preprocessing.input_size:
            # measuring the network at another resolution than its config's (the convolutions
            # and the global pooling accept any size; the ONNX graph does not)
            if onnx is not None:
                raise ValueError(f"the ONNX graph takes {self.preprocessing.input_size} px inputs, not {input_size}")
            check_input_size(config["architecture"]["name"], input_size, self.preprocessing.input_size)
            self.preprocessing = replace(self.preprocessing, input_size=int(input_size))
        if resize is not None and resize != self.preprocessing.resize:
            # fitting photos to the square input another way than the config's (done before the
            # network, so the ONNX graph runs unchanged; Preprocessing checks the mode)
            self.preprocessing = replace(self.preprocessing, resize=resize)
        self.transform = eval_transform(self.preprocessing)
        self.batch_size = inference_batch(batch_size, self.preprocessing.input_size)  # fewer at large sizes
        self.num_workers = num_workers
        self.folder: Path | None = None  # set by ``load``: where the weights came from

    @classmethod
    def load(cls, folder: str | Path, runtime: str = "auto", **kwargs) -> "Predictor":
        """``runtime``: ``torch``, ``onnx`` (needs ``artsentry export``), or ``auto``: the
        one the model's config names, when its ONNX file matches the weights."""
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {RUNTIMES}, not {runtime!r}")
        model, config = load_model(folder)
        onnx = None
        resized = kwargs.get("input_size") not in (None, config["preprocessing"]["input_size"])
        if runtime == "onnx" and resized:
            raise ValueError(f"{folder}: the ONNX export runs at the configured input size only; use runtime 'torch'")
        if runtime == "onnx" and not onnx_ready(folder, config):
            raise ArtifactError(f"{folder}: no ONNX export of these weights; run: artsentry export {folder}")
        if runtime == "onnx" or (runtime == "auto" and not resized and config.get("runtime") == "onnxruntime"
                                 and onnx_ready(folder, config) and onnxruntime_available()):
            damaged = onnx_damaged(folder, config)
            if damaged and runtime == "onnx":
                raise ArtifactError(f"{damaged}: run 'artsentry export {folder}' again, or use runtime 'torch'")
            if damaged:  # the weights beside it answer the same, slower: said, not a stop
                log.warning("%s; running on PyTorch (run 'artsentry export %s' again for ONNX Runtime's speed)",
                            damaged, folder)
            else:
                onnx = OnnxClassifier(Path(folder) / config["onnx"]["file"])
        predictor = cls(model, config, onnx=onnx, **kwargs)
        predictor.folder = Path(folder)
        return predictor

    def info(self) -> dict:
        """What a decision must be traced to: architecture, folder, version (the first 16 hex
        digits of the weights' SHA-256: of the weights this predictor loaded, even once the file was
        replaced by a later training into the same folder), creation time, threshold, runtime."""
        folder = self.folder
        sha = getattr(self.model, "weights_sha256", None)
        if sha is None and folder is not None:  # a model handed in, not loaded by ``load``: the file's, once
            from .files import file_sha256
            from .models.artifact import WEIGHTS_NAME

            sha = self.model.weights_sha256 = file_sha256(folder / WEIGHTS_NAME)
        info = {
            "name": self.config["architecture"]["name"], "path": str(folder.resolve()) if folder else None,
            "version": sha[:16] if sha else None, "created": self.config.get("created"),
            "threshold": self.threshold if self.threshold is not None else (0.5 if self.binary else None),
            "positive_label": self.positive_label, "runtime": self.runtime,
        }
        if self.temperature != 1.0:  # calibrated: the probabilities depend on it (absent before calibration existed)
            info["temperature"] = self.temperature
        return info

    # -- tensors ---------------------------------------------------------------------------
    @torch.inference_mode()
    def proba_tensor(self, x: torch.Tensor) -> np.ndarray:
        """Preprocessed batch (n, 3, S, S) -> class probabilities (n, C)."""
        if x.numel() == 0:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        if self.onnx is not None:
            logits = torch.from_numpy(self.onnx.logits(x.numpy()))
        else:
            logits = self.model(x.contiguous(memory_format=torch.channels_last)).float()
        return torch.softmax(logits / self.temperature, dim=1).numpy()

    def predict_proba(self, images: Sequence[Image.Image]) -> np.ndarray:
        """RGB PIL images -> class probabilities (n, C), columns in ``labels`` order."""
        if not images:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        return np.concatenate(
            [self.proba_tensor(torch.stack([self.transform(im) for im in images[i : i + self.batch_size]]))
             for i in range(0, len(images), self.batch_size)]
        )

    # -- files -----------------------------------------------------------------------------
    def iter_predict(self, sources: Sequence[ImageSource], names: Sequence[str] | None = None,
                     progress: bool = False, quality: bool = True) -> Iterator[tuple[int, Prediction]]:
        """Yield ``(index, Prediction)`` for every source, in input order, as batches finish.
        ``quality``: assess each photo (``data.quality``) into ``Prediction.quality``."""
        sources = as_sources(sources)
        names = source_names(sources, names)
        for batch in iter_image_batches(sources, self.transform, self.preprocessing, names=names,
                                        batch_size=self.batch_size, num_workers=self.num_workers,
                                        progress=progress, desc="predict", quality=quality):
            done = {idx: Prediction(names[idx], error=err) for idx, err in batch.errors}
            probs = self.proba_tensor(batch.x)
            for j, (idx, p) in enumerate(zip(batch.index, probs)):
                done[idx] = self.decide(names[idx], p)
                if batch.quality is not None:
                    done[idx].quality = batch.quality[j].to_dict()
            yield from sorted(done.items(), key=lambda kv: kv[0])

    def predict_files(self, sources: Sequence[ImageSource], names: Sequence[str] | None = None,
                      progress: bool = False, quality: bool = True) -> list[Prediction]:
        """One ``Prediction`` per source, in input order."""
        sources = as_sources(sources)
        out: list[Prediction | None] = [None] * len(sources)
        for idx, pred in self.iter_predict(sources, names, progress, quality):
            out[idx] = pred
        return out  # type: ignore[return-value]


class Ensemble(Decider):
    """Several classifiers over the same labels, their class probabilities averaged (as in
    the Durham instance study). Each member applies its own preprocessing and runtime; a
    photo unreadable to one member is reported unreadable. Binary ensembles decide at 0.5
    unless a threshold is set (``evaluate --target-recall`` chooses one on validation)."""

    def __init__(self, members: Sequence[Predictor], threshold: float | None = None):
        if len(members) < 2:
            raise ValueError("an ensemble needs at least two models")
        self.members = list(members)
        self.labels = list(members[0].labels)
        for m in self.members[1:]:
            if sorted(m.labels) != sorted(self.labels):
                raise ValueError(f"ensemble members disagree on labels: {self.labels} vs {m.labels} ({m.folder})")
            if m.positive_label != members[0].positive_label:  # the averaged probability of which label is flagged?
                raise ValueError(f"ensemble members disagree on the positive label: {members[0].positive_label!r} vs "
                                 f"{m.positive_label!r} ({m.folder})")
        seen: dict[str, Path | None] = {}
        for m in self.members:  # the same model given twice (a run folder and its model folder, a copy)
            version = m.info().get("version") if hasattr(m, "info") else None  # None: no weights file (a test's)
            if version is not None and version in seen:
                log.warning("%s holds the same weights as %s: the ensemble counts them twice, and its figures are "
                            "not those of more models", m.folder, seen[version])
            seen.setdefault(version, m.folder)
        self.positive_label = members[0].positive_label
        self.threshold = threshold
        self.batch_size = members[0].batch_size
        self.folder = members[0].folder
        self.runtime = "+".join(sorted({m.runtime for m in self.members}))

    @classmethod
    def load(cls, folders: Sequence[str | Path], runtime: str = "auto", **kwargs) -> "Ensemble":
        return cls([Predictor.load(f, runtime=runtime, **kwargs) for f in folders])

    def info(self) -> dict:
        return {"name": "ensemble (mean of probabilities)", "members": [m.info() for m in self.members],
                "threshold": self.threshold if self.threshold is not None else (0.5 if self.binary else None),
                "positive_label": self.positive_label, "runtime": self.runtime}

    def predict_files(self, sources: Sequence[ImageSource], names: Sequence[str] | None = None,
                      progress: bool = False, quality: bool = True) -> list[Prediction]:
        sources = as_sources(sources)
        names = source_names(sources, names)
        # the photo's quality does not depend on the model: the first member assesses it
        per_member = [m.predict_files(sources, names, progress, quality and k == 0) for k, m in enumerate(self.members)]
        out = []
        for i, name in enumerate(names):
            preds = [p[i] for p in per_member]
            bad = next((p for p in preds if not p.ok), None)
            if bad is not None:
                out.append(Prediction(name, error=bad.error))
                continue
            probs = np.mean([[p.probabilities[label] for label in self.labels] for p in preds], axis=0)
            out.append(self.decide(name, probs))
            out[-1].quality = preds[0].quality
        return out
