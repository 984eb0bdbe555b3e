"""Why did the model decide that? Heat maps over the input photo.

Three methods, each answering for one class (the predicted one by default):

- ``saliency`` (Simonyan et al. 2014, via Captum): |d score / d pixel|, the
  largest over the colour channels. Sharp, noisy, needs gradients.
- ``gradcam`` (Selvaraju et al. 2017, via pytorch-grad-cam): the last feature
  map weighted by its pooled gradients, upsampled to the photo. Coarse, stable.
- ``occlusion`` (Zeiler & Fergus 2014, via Captum): slide a mid-grey patch over
  the photo and record how much the class probability falls. Needs only the
  model's scores, so it treats the model as a black box; ``patch`` and
  ``stride`` in input pixels; occluded copies are run ``batch_size`` at a time.

Every map is returned at the model's input size, non-negative, and scaled so
its maximum is 1 (all zeros when nothing moved the score).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..data.transforms import Preprocessing, eval_transform
from ..files import atomic_path, write_text_atomic
from ..models import inference_batch

METHODS = ("gradcam", "saliency", "occlusion")


def _normalise(h: np.ndarray) -> np.ndarray:
    h = np.clip(np.nan_to_num(h.astype(np.float32)), 0, None)
    top = float(h.max())
    return h / top if top > 0 else h


def gradcam_layer(model: nn.Module, input_size: int) -> nn.Module:
    """The map Grad-CAM explains: the one the backbone names (``backbone.cam_layer``: texture
    pooling's stage-4 map, which every path to the head starts from), else the last module (in
    execution order) whose output is a spatial feature map: for timm EfficientNets the
    activation of ``bn2`` (after the head convolution), for the small CNN the last ReLU before
    pooling and flattening."""
    named = getattr(getattr(model, "backbone", None), "cam_layer", None)
    if isinstance(named, nn.Module):
        return named
    seen: list[nn.Module] = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: seen.append(mod) if getattr(out, "ndim", 0) == 4
                                     and out.shape[-1] > 1 and not isinstance(mod, nn.MaxPool2d) else None)
             for m in model.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, input_size, input_size))
    finally:
        for h in hooks:
            h.remove()
    if not seen:
        raise ValueError("no convolutional feature map to explain with Grad-CAM")
    return seen[-1]


def grey_baseline(pre: Preprocessing) -> torch.Tensor:
    """Mid-grey in the model's input space, one value per channel (3, 1, 1)."""
    return ((0.5 - torch.tensor(pre.mean)) / torch.tensor(pre.std)).view(3, 1, 1)


class Explainer:
    """Heat maps for a classifier ``model`` (logits out) fed inputs made by ``pre``.

    ``score`` (optional, per call) maps the model's output to one scalar per image
    instead of a class probability: used to explain similarity to a register match.
    ``proba`` (optional): a black-box function, preprocessed batch -> class
    probabilities (a ``Predictor``'s ONNX Runtime session, say); occlusion then
    runs on it instead of on ``model``, which only gradient methods need.
    ``temperature``: the model's calibration, so gradient methods explain the probabilities
    the predictor reports.
    """

    def __init__(self, model: nn.Module, pre: Preprocessing, *, batch_size: int = 32,
                 proba: Callable[[torch.Tensor], torch.Tensor] | None = None, temperature: float = 1.0):
        self.model = model.eval()
        self.temperature = temperature  # the model's calibration: its probabilities are softmax(logits / T)
        self.pre = pre
        self.batch_size = inference_batch(batch_size, pre.input_size)  # occluded copies: fewer at large sizes
        self.proba = proba
        self._cam_layers: dict[int, nn.Module] = {}  # by input size: found once, not per call

    def _without_inplace(self):
        """Captum and Grad-CAM hook tensors that in-place activations would overwrite."""
        changed = [m for m in self.model.modules() if getattr(m, "inplace", False)]
        for m in changed:
            m.inplace = False
        return changed

    def explain(self, x: torch.Tensor, method: str = "gradcam", target: int | None = None, *,
                patch: int = 32, stride: int = 16, score: Callable | None = None) -> np.ndarray:
        """Heat maps (n, H, W) in [0, 1] for a preprocessed batch ``x`` (n, 3, H, W)."""
        if method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
        if method == "occlusion" and not 1 <= stride <= patch <= min(x.shape[-2:]):
            raise ValueError(f"occlusion needs 1 <= stride <= patch <= the input size ({min(x.shape[-2:])} px), "
                             f"not patch {patch} and stride {stride}")
        x = x.detach().float().contiguous()
        changed = self._without_inplace()
        try:
            if score is None:
                if target is None:
                    with torch.no_grad():
                        targets = self.model(x).argmax(1)
                else:
                    targets = torch.full((len(x),), int(target), dtype=torch.long)
            if method == "gradcam":
                from pytorch_grad_cam import GradCAM

                class _Target:
                    def __init__(self, i):
                        self.i = i

                    def __call__(self, out):
                        return score(out[None])[0] if score is not None else out[targets[self.i]]

                size = x.shape[-1]
                if size not in self._cam_layers:
                    self._cam_layers[size] = gradcam_layer(self.model, size)
                with GradCAM(self.model, [self._cam_layers[size]]) as cam:
                    maps = cam(input_tensor=x, targets=[_Target(i) for i in range(len(x))])
                return np.stack([_normalise(m) for m in maps])
            if method == "saliency":
                forward = self._probability_forward(score)
                from captum.attr import Saliency

                attr = Saliency(forward).attribute(x.requires_grad_(True), target=None if score else targets, abs=True)
                return np.stack([_normalise(a.max(0).values.numpy()) for a in attr.detach()])
            from captum.attr import Occlusion

            base = grey_baseline(self.pre).expand_as(x[0]).unsqueeze(0).expand_as(x).contiguous()
            with torch.no_grad():
                forward = self._probability_forward(score)
                attr = Occlusion(forward).attribute(
                    x, sliding_window_shapes=(3, patch, patch), strides=(3, stride, stride), baselines=base,
                    target=None if score else targets, perturbations_per_eval=self.batch_size)
            return np.stack([_normalise(a.sum(0).numpy()) for a in attr])
        finally:
            for m in changed:
                m.inplace = True

    def _probability_forward(self, score: Callable | None):
        """What the attribution explains: the class probability, or the given score."""
        if score is not None:
            return lambda inp: score(self.model(inp))
        if self.proba is not None and not torch.is_grad_enabled():
            return self.proba
        return lambda inp: torch.softmax(self.model(inp) / self.temperature, dim=1)


# -- applying it to photos ---------------------------------------------------------------------


@dataclass
class Explanation:
    """One heat map: ``heat`` (S, S) in [0, 1] on the model's input, for ``target``
    (a class label, or ``match:<object id>``) whose score was ``score``."""

    source: str
    method: str
    target: str | None = None
    score: float | None = None
    heat: np.ndarray | None = field(default=None, repr=False)
    probabilities: dict[str, float] | None = None
    overlay: str | None = None
    error: str | None = None
    #: ``explain --lots``: the tile the map is of, (left, top, right, bottom) in the photo's pixels as
    #: ``predict --lots`` gives it; None: the photo whole
    box: list[int] | None = None

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "heat"}


def _batches(n: int, size: int):
    for i in range(0, n, size):
        yield slice(i, min(n, i + size))


class ClassifierExplainer:
    """Explains a model folder's decisions (ivory, culture, any classifier artifact).

    Gradient methods run on the PyTorch model; occlusion, which needs only scores,
    runs on the fastest runtime the folder offers (ONNX Runtime when exported)."""

    def __init__(self, predictor, batch_size: int = 32):
        self.predictor = predictor
        self.pre = predictor.preprocessing
        self.labels = predictor.labels
        model = predictor.model

        def proba(x: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(predictor.proba_tensor(x))

        self.explainer = Explainer(model, self.pre, batch_size=batch_size, proba=proba,
                                   temperature=predictor.temperature)

    @classmethod
    def load(cls, folder, runtime: str = "auto", batch_size: int = 32) -> "ClassifierExplainer":
        from ..inference import Predictor

        return cls(Predictor.load(folder, runtime=runtime), batch_size=batch_size)

    def explain_tensor(self, x: torch.Tensor, method: str = "gradcam", target: str | None = None,
                       patch: int = 32, stride: int = 16) -> tuple[np.ndarray, np.ndarray, list[int]]:
        """(heat maps (n, S, S), probabilities (n, C), explained class index per image)."""
        if target is not None and target not in self.labels:
            raise ValueError(f"target {target!r} is not one of the model's labels {self.labels}")
        probs = self.predictor.proba_tensor(x)
        if target is not None:
            idx = [self.labels.index(target)] * len(x)
        else:  # the decided class: at the model's threshold for binary models, not always the likelier one
            idx = [self.labels.index(self.predictor.decide("", p).label) for p in probs]
        heats = []
        for t in sorted(set(idx)):
            rows = [i for i, v in enumerate(idx) if v == t]
            heats.append((rows, self.explainer.explain(x[rows], method, t, patch=patch, stride=stride)))
        heat = np.zeros((len(x),) + tuple(x.shape[-2:]), np.float32)
        for rows, h in heats:
            heat[rows] = h
        return heat, probs, idx

    def explain_images(self, images: Sequence[Image.Image], names: Sequence[str], method: str = "gradcam",
                       target: str | None = None, patch: int = 32, stride: int = 16) -> list[Explanation]:
        out = []
        for sl in _batches(len(images), self.explainer.batch_size):
            x = torch.stack([self.predictor.transform(im) for im in images[sl]])
            heat, probs, idx = self.explain_tensor(x, method, target, patch, stride)
            for j, name in enumerate(names[sl]):
                out.append(Explanation(name, method, self.labels[idx[j]], float(probs[j, idx[j]]), heat[j],
                                       {l: round(float(p), 6) for l, p in zip(self.labels, probs[j])}))
        return out

    def overlay_uri(self, source, display: int = 240, draft_size: tuple[int, int] | None = None,
                    target: str | None = None, tile: tuple[int, int] | None = None) -> str | None:
        """The Grad-CAM overlay of an image file as a PNG data URI (for self-contained pages),
        or None when the file cannot be read. ``draft_size``: the JPEG decode scale the photo was decided at
        (``screen`` decodes larger beside a second model or lots); default: the model's own, as ``predict``.
        ``target``: the class explained (default: the one the photo whole is decided as). ``tile``: (grid, k),
        the crop ``k`` of ``lots.tile_crops`` (0: the whole photo) a lot scan decided on: the map of that crop,
        drawn in its place on the whole photo, the tile outlined."""
        from ..data.images import ImageLoadError, load_image
        from ..htmlembed import png_uri
        from .overlay import render

        try:
            img = load_image(source, draft_size=draft_size or self.pre.draft_size)
        except ImageLoadError:
            return None
        crop, box = img, None
        if tile is not None and tile[1] > 0:
            from ..lots import tile_crops

            crops, boxes = tile_crops(img, tile[0])
            crop, box = crops[tile[1]], boxes[tile[1]]
        e = self.explain_images([crop], [str(source)], "gradcam", target=target)[0]
        caption = f"Grad-CAM{' of the outlined tile' if box else ''}: {e.target} {e.score:.3f}"
        return png_uri(render(img, e.heat, self.pre, caption, display=display, method="gradcam", box=box))


class SimilarityExplainer:
    """Which regions of a photo made it similar to a reference embedding (a register
    match): the score explained is the cosine similarity of the photo's embedding with
    the reference vector."""

    def __init__(self, embedder, batch_size: int = 16):
        self.embedder = embedder
        self.pre = embedder.preprocessing
        self.backbone = embedder.backbone
        self.explainer = Explainer(self.backbone, self.pre, batch_size=batch_size)

    def explain_tensor(self, x: torch.Tensor, reference: np.ndarray, method: str = "gradcam",
                       patch: int = 32, stride: int = 16) -> tuple[np.ndarray, np.ndarray]:
        """(heat maps (n, S, S), similarities (n,)) of each image in ``x`` to ``reference[i]``."""
        ref = torch.from_numpy(np.asarray(reference, dtype=np.float32))
        heats, sims = [], []
        for i in range(len(x)):
            r = ref[i]

            def score(feats, r=r):
                return torch.nn.functional.normalize(feats, dim=-1) @ r

            with torch.no_grad():
                sims.append(float(score(self.backbone(x[i:i + 1]))[0]))
            heats.append(self.explainer.explain(x[i:i + 1], method, patch=patch, stride=stride, score=score)[0])
        return np.stack(heats), np.array(sims)


def explain_files(sources: Sequence, *, model=None, register=None, method: str = "gradcam",
                  target: str | None = None, patch: int = 32, stride: int = 16, out_dir=None,
                  progress: bool = False, lots: bool = False) -> list[Explanation]:
    """Explain image files with a model folder (``model``) or by their best match in a
    register folder (``register``: the similarity the search reports, ``Register.reference``; in a
    register made with mirror images, of the photo as given, which can score a little differently
    from the search's mean of it and its mirror image); with ``out_dir``, write one overlay PNG per
    explanation (``<name>.<method>.png``; ``<name>.match.<method>.png``) and
    ``explanations.json``, adding to the records of earlier runs into ``out_dir`` (``_earlier_records``).
    ``lots`` (with ``model``): each photo as ``predict --lots`` decides it (``_lot_explanation``).
    Unreadable files come back with ``error`` set."""
    import json

    from tqdm import tqdm

    from ..data.images import ImageLoadError, load_image
    from .overlay import render

    if (model is None) == (register is None):
        raise ValueError("give a model folder or a register folder (one of them)")
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
    if lots and model is None:
        raise ValueError("lot scanning explains a model's decision: give a model folder, not a register")
    if model is not None:
        engine = ClassifierExplainer.load(model)
        pre = engine.pre
    else:
        from ..index.register import Register

        reg = register if not isinstance(register, (str, Path)) else Register.open(register)
        engine = SimilarityExplainer(reg.embedder)
        pre = engine.pre
    draft = pre.draft_size  # as predict and search read a photo
    if lots:  # (a model's, checked above)
        from ..lots import decode_draft, lot_threshold

        if not engine.predictor.binary:
            raise ValueError("lot scanning needs a two-class model with a positive label")
        try:
            lot_setting = lot_threshold(engine.predictor.config)
        except ValueError as exc:
            raise ValueError(f"{model}: {exc}") from None
        draft = decode_draft([(pre, lot_setting[1])])  # as predict --lots reads it, large enough for its tiles
    out = Path(out_dir) if out_dir is not None else None
    earlier: list[dict] = []
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        earlier = _earlier_records(out)
    kind = "match" if register is not None else "model"
    sources = list(sources)  # read twice: which earlier records are replaced, then each photo
    again = {(str(s), method) for s in sources}
    replaced, kept = [], []
    for r in earlier:
        again_now = (r["source"], r["method"]) in again and _kind(r) in (kind, None)
        (replaced if again_now else kept).append(r)
    used = {Path(r["overlay"]).name for r in kept if r.get("overlay")}  # file names in `out`
    # this run may overwrite these: the overlays of the photos it explains again
    theirs = {Path(r["overlay"]).name for r in replaced if r.get("overlay")}
    results: list[Explanation] = []

    def record(final: bool) -> None:
        """explanations.json: the earlier runs' records, then this run's; stopped part way (``final`` False),
        also the records of photos it was to explain again and has not yet, whose overlays are still there."""
        done = {e.source for e in results}
        waiting = [] if final else [r for r in replaced if r["source"] not in done
                                    and Path(r.get("overlay") or "").name not in used]
        write_text_atomic(out / EXPLANATIONS, json.dumps(kept + waiting + [e.to_dict() for e in results], indent=2))

    saved, finished = time.monotonic(), False
    try:
        for src in tqdm(sources, desc=f"explain ({method})", unit="img", disable=not progress):
            if out is not None and time.monotonic() - saved > RECORD_SECONDS:  # a run killed outright loses less
                record(final=False)
                saved = time.monotonic()
            name = str(src)
            try:
                img = load_image(src, name=name, draft_size=draft)
            except ImageLoadError as exc:
                results.append(Explanation(name, method, error=str(exc)))
                continue
            drawn_on = None  # the part of the photo the map is of, for a lot scan's photo
            if model is not None and lots:
                e, drawn_on = _lot_explanation(engine, img, name, method, target, patch, stride, *lot_setting)
                caption = f"{method}{' of the outlined tile' if e.box else ''}: {e.target} {e.score:.3f}"
            elif model is not None:
                e = engine.explain_images([img], [name], method, target, patch, stride)[0]
                caption = f"{method}: {e.target} {e.score:.3f}"
            else:
                x = torch.stack([eval_transform(pre)(img)])
                vec = reg.embedder.embed_tensor(x)
                found = reg.search_vectors(vec, k=1)[0]
                if not found:
                    results.append(Explanation(name, method, error="the register is empty"))
                    continue
                best = found[0]
                ref = reg.reference(best.object_id, vec[0])  # its photo's re-shots averaged as the search does
                heat, sims = engine.explain_tensor(x, ref[None], method, patch, stride)
                e = Explanation(name, method, f"match:{best.object_id}", float(sims[0]), heat[0])
                caption = f"{method}: like {best.object_id} ({e.score:.3f})"
            if out is not None:
                stem = _overlay_stem(name)
                base = f"{stem}.match" if register is not None else stem
                candidate, n = base, 2
                while True:
                    file = f"{candidate}.{method}.png"
                    if file not in used and (file in theirs or not (out / file).exists()):  # never a file not ours
                        break
                    candidate, n = f"{base}-{n}", n + 1
                path = out / file
                with atomic_path(path) as tmp:
                    render(img, e.heat, pre, caption, method=method, box=drawn_on).save(tmp, format="PNG")
                used.add(file)  # once written: an earlier record of this file stays listed until then
                e.overlay = str(path)
            results.append(e)  # once its overlay is written
        finished = True
    finally:  # stopped (Ctrl-C, a full disk): the overlays written are listed, so that the same command
        if out is not None and not finished:  # again writes over them, not beside them
            with contextlib.suppress(OSError):  # a full disk's own error is the one to say
                record(final=False)
    if out is not None:
        for stale in theirs - used:  # an earlier overlay of a photo explained again, under another name now
            (out / stale).unlink(missing_ok=True)
        record(final=True)
    return results


def _lot_explanation(engine: ClassifierExplainer, img: Image.Image, name: str, method: str, target: str | None,
                     patch: int, stride: int, threshold: float, grid: int) -> tuple[Explanation, tuple]:
    """A photo of several objects explained as the lot scan decided it (``lots.scan`` at the model's lot
    threshold): flagged for one tile, by that tile's map (``box`` set: the tile in the photo's pixels); else by
    the photo whole's, for the label decided (or ``target``). With the box in ``img``'s pixels the map is of,
    to draw it in place on the whole photo (``overlay.photo_and_heat``)."""
    from ..lots import deciding_tile, scan

    decided = scan(engine.predictor, [img], threshold, grid=grid)[0]
    crop, box = deciding_tile(img, decided, grid) or (img, (0, 0, *img.size))
    e = engine.explain_images([crop], [name], method, target or engine.predictor.decision_label(decided.flagged),
                              patch, stride)[0]
    e.box = list(decided.box) if crop is not img else None
    return e, box


#: UTF-8 bytes of a photo's file name kept in its overlay's: with ``.match-NN.occlusion.png`` and the temporary
#: name a write goes through (``files.atomic_path``: ``.NAME.PID.THREAD.tmp``), within the 255 bytes of a file name
OVERLAY_STEM_BYTES = 150


def _overlay_stem(name: str) -> str:
    """The start of an overlay's file name: the photo's own name without its ending, cut to
    ``OVERLAY_STEM_BYTES`` (at a whole character) so that a photo with a long name is explained like any other
    instead of failing the run; two photos cut to one name get ``-2``, ``-3``... like any namesakes."""
    stem = Path(name).stem or "image"
    return stem.encode("utf-8")[:OVERLAY_STEM_BYTES].decode("utf-8", "ignore") or "image"


#: the record of every explanation in an output folder, one run's added to the earlier runs'
EXPLANATIONS = "explanations.json"
#: how often a run writes explanations.json as it goes (and once more when it ends or is stopped)
RECORD_SECONDS = 30.0


def _earlier_records(out) -> list[dict]:
    """The records an earlier run left in ``out``, whose overlays are still there (error records too).
    A run into the same folder adds to them, replacing the records of photos it explains again by the
    same method, so that explanations.json lists every overlay in the folder and no other."""
    import json

    path = out / EXPLANATIONS
    if not path.exists():
        return []
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not an explanations.json this command wrote ({exc}): give another --out, "
                         "or move it away") from exc
    if not isinstance(records, list) or not all(isinstance(r, dict) and isinstance(r.get("source"), str)
                                                and isinstance(r.get("method"), str) for r in records):
        raise ValueError(f"{path} is not an explanations.json this command wrote: give another --out, "
                         "or move it away")
    kept = []
    for r in records:
        if r.get("overlay"):
            if not (out / Path(str(r["overlay"])).name).is_file():
                continue  # deleted since: no longer listed
            r = {**r, "overlay": str(out / Path(str(r["overlay"])).name)}  # as this run names its own
        kept.append(r)
    return kept


def _kind(record: dict) -> str | None:
    """``match`` for a register's explanation, ``model`` for a classifier's, None when an error record
    does not say."""
    if record.get("target"):
        return "match" if str(record["target"]).startswith("match:") else "model"
    return None
