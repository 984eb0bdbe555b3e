"""Train an embedding for finding objects again: metric learning on re-photographed views.

For every training photo, ``views`` listing-style versions are made with the same
generator the benchmarks use (``artsentry.data.listing.rephotograph``, other seeds):
clutter background behind the cut-out object, rotation, perspective, crops, light and
colour, blur, text, phone JPEG. The backbone's first stages stay frozen, so each view's
trunk output is computed once and kept (in memory and in ``out/cache/``); the retrieval
head (``RetrievalHead``: attention + GeM pooling, LayerNorm, linear projection) and, with
``trained_stages``, the backbone's last stages are then trained on them with a supervised
contrastive loss: in a batch of objects, each with its studio
photo and two re-shots, every view must be closer to the other views of its object than
to any view of another object. Early stopping on validation objects (never trained on):
top-1 of their re-shots searched among their studio photos.

Objects of the ``holdout`` share are left out entirely and listed in ``holdout_objects.txt``
so that a benchmark can tell objects seen in training from objects added after it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..data.dataset import item_seed, worker_options
from ..data.images import ImageLoadError, load_image
from ..data.listing import GENERATOR_VERSION, reshots
from ..data.manifest import read_manifest
from ..data.splits import split_manifest
from ..data.transforms import Preprocessing, eval_transform
from ..files import entries, exclusive, first_names, write_text_atomic
from ..models import default_preprocessing
from ..models.artifact import CONFIG_NAME, is_embedding, read_config, save_embedding, save_tensors_atomic
from ..models.embedding import EmbeddingNet

log = logging.getLogger(__name__)


@dataclass
class EmbedderSettings:
    backbone: str = "efficientnet_lite0"
    dim: int = 256
    pooling: str = "attention+gem"
    image_size: int = 224
    resize: str = "fit"          # how a photo becomes the square input (data.transforms.RESIZE_STEPS), kept in config
    trained_stages: int = 0      # last backbone stages trained too (0: the head only)
    backbone_lr: float = 1e-4
    views: int = 6               # listing-style re-shots per training photo (plus the photo itself)
    max_side: int = 448          # photos are shrunk to this long side before re-shooting (speed)
    holdout: float = 0.5         # share of objects never trained on (for "added after training")
    val_fraction: float = 0.1    # share of objects for early stopping
    epochs: int = 60
    batch_objects: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-4
    temperature: float = 0.05
    patience: int = 10
    seed: int = 0
    workers: int = 2

    def validate(self) -> None:
        for name in ("lr", "backbone_lr", "temperature"):  # a negative rate climbs the loss, without a word
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name.replace('_', '-')} must be a positive number, not {value}")
        if self.weight_decay < 0:
            raise ValueError(f"weight decay must be >= 0, not {self.weight_decay}")
        for name in ("dim", "epochs", "patience", "batch_objects", "max_side"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', '-')} must be at least 1, not {getattr(self, name)}")
        if self.views < 2:  # each training batch holds two distinct re-shots of every object
            raise ValueError(f"views must be at least 2, not {self.views}")
        for name in ("trained_stages", "workers"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name.replace('_', '-')} must be 0 or more, not {getattr(self, name)}")
        for name in ("holdout", "val_fraction"):  # the split's own message names its test_fraction, not --holdout
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', '-')} must be a share of the objects in [0, 1), "
                                 f"not {getattr(self, name)}")
        if self.holdout + self.val_fraction >= 1:
            raise ValueError(f"holdout ({self.holdout}) and val-fraction ({self.val_fraction}) leave no objects "
                             "to train on: their sum must be under 1")

    def cache_key(self, data_fingerprint: str) -> str:
        parts = {k: getattr(self, k) for k in ("backbone", "image_size", "views", "max_side", "seed")}
        parts["listing_generator"] = GENERATOR_VERSION  # views made by another generator are stale
        if self.trained_stages:  # the cache then holds the frozen trunk's output, not the feature map
            parts["trained_stages"] = self.trained_stages
        if self.resize != "squash":  # caches made before the setting existed are squash's: their key stays
            parts["resize"] = self.resize
        return hashlib.sha256(json.dumps([parts, data_fingerprint], sort_keys=True).encode()).hexdigest()[:16]


class ViewSet(Dataset):
    """Item i: the photo ``paths[i]`` and ``views`` re-shots of it, as one tensor (views+1, 3, S, S),
    or None with the reason when the photo is unreadable."""

    def __init__(self, paths: list[str], views: int, transform, max_side: int, seed: int):
        self.paths, self.views, self.transform, self.max_side, self.seed = paths, views, transform, max_side, seed

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            img = load_image(self.paths[i], draft_size=(self.max_side, self.max_side))
        except ImageLoadError as exc:
            return i, None, str(exc)
        if max(img.size) > self.max_side:
            img.thumbnail((self.max_side, self.max_side), Image.BICUBIC)
        shots = [img] + reshots(img, [item_seed(self.seed, i) * 64 + v for v in range(self.views)])
        return i, torch.stack([self.transform(s) for s in shots]), ""


def _as_is(item):
    return item


@torch.inference_mode()
def view_feature_maps(net: EmbeddingNet, paths: list[str], settings: EmbedderSettings, preprocessing: Preprocessing,
                      progress: bool = True) -> tuple[torch.Tensor, list[str | None]]:
    """Frozen-trunk outputs of every photo's views (the feature map when only the head
    trains): (n, views+1, C, H, W) float16, and per photo the reason it was unreadable (its
    rows stay zero)."""
    dataset = ViewSet(paths, settings.views, eval_transform(preprocessing), settings.max_side, settings.seed)
    loader = DataLoader(dataset, batch_size=None, collate_fn=_as_is, num_workers=settings.workers,
                        prefetch_factor=4 if settings.workers else None,
                        **worker_options(settings.workers))
    maps = None
    errors: list[str | None] = [None] * len(paths)
    net.eval()
    with tqdm(total=len(paths), unit="photo", desc="views", disable=not progress) as bar:
        for i, x, err in loader:
            if x is None:
                errors[i] = err
                log.warning("skipped: %s", err)
            else:
                f = net.trunk_output(x.contiguous(memory_format=torch.channels_last)).to(torch.float16)
                if maps is None:
                    maps = torch.zeros((len(paths), *f.shape), dtype=torch.float16)
                maps[i] = f
            bar.update(1)
    if maps is None:
        raise ValueError("no readable photo to train on")
    return maps, errors


def supcon_loss(z: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020) of L2-normalised ``z`` (n, d)."""
    sim = z @ z.T / temperature
    self_mask = torch.eye(len(z), dtype=torch.bool)
    sim = sim.masked_fill(self_mask, float("-inf"))
    positive = (labels[:, None] == labels[None, :]) & ~self_mask
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    return -(log_prob.masked_fill(~positive, 0).sum(1) / positive.sum(1).clamp(min=1)).mean()


def _embed_cached(net: EmbeddingNet, z: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(net.head(net.tail(z.float())), dim=1)


@torch.inference_mode()
def reshot_top1(net: EmbeddingNet, maps: torch.Tensor, batch: int = 256) -> float:
    """Top-1 of each photo's re-shots (views 1..) searched among all studio photos (view 0)."""
    net.eval()

    def embed(m):
        return torch.cat([_embed_cached(net, m[i:i + batch]) for i in range(0, len(m), batch)])

    gallery = embed(maps[:, 0])
    n, v = maps.shape[:2]
    queries = embed(maps[:, 1:].reshape(n * (v - 1), *maps.shape[2:]))
    best = (queries @ gallery.T).argmax(1)
    return float((best == torch.arange(n).repeat_interleave(v - 1)).float().mean())


def train_head(net: EmbeddingNet, train_maps: torch.Tensor, objects: torch.Tensor, val_maps: torch.Tensor,
               settings: EmbedderSettings, progress: bool = True) -> list[dict]:
    """Train ``net.head`` (and the trained stages) on cached trunk outputs (photo i shows
    object ``objects[i]``); keeps the weights of the best validation epoch."""
    g = torch.Generator().manual_seed(settings.seed)
    torch.manual_seed(settings.seed)
    groups = [{"params": list(net.head.parameters()), "lr": settings.lr}]
    if net.trained_stages:
        groups.append({"params": net.tail_parameters(), "lr": settings.backbone_lr})
    opt = torch.optim.AdamW(groups, weight_decay=settings.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=settings.epochs)
    n, v = train_maps.shape[:2]
    history: list[dict] = []
    best, best_state, waited = -1.0, None, 0
    bar = tqdm(range(settings.epochs), desc="embedding", unit="epoch", disable=not progress)
    for epoch in bar:
        net.eval()  # BatchNorm keeps its pretrained statistics
        net.head.train()
        order = torch.randperm(n, generator=g)
        losses = []
        for s in range(0, n, settings.batch_objects):
            idx = order[s:s + settings.batch_objects]
            # the studio photo and two distinct re-shots of each object
            shots = torch.stack([torch.randperm(v - 1, generator=g)[:2] + 1 for _ in idx])
            chosen = torch.cat([train_maps[idx, 0], train_maps[idx, shots[:, 0]], train_maps[idx, shots[:, 1]]])
            labels = objects[idx].repeat(3)
            z = _embed_cached(net, chosen)
            loss = supcon_loss(z, labels, settings.temperature)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        sched.step()
        top1 = reshot_top1(net, val_maps)
        history.append({"epoch": epoch + 1, "loss": round(float(np.mean(losses)), 4), "val_reshot_top1": round(top1, 4)})
        bar.set_postfix(loss=history[-1]["loss"], val_top1=top1)
        if top1 > best:
            best, waited = top1, 0
            best_state = {k: t.detach().clone() for k, t in net.state_dict().items()}
        else:
            waited += 1
            if waited >= settings.patience:
                break
    bar.close()
    net.load_state_dict(best_state)
    net.eval()
    return history


def _cached_maps(net, paths, settings, preprocessing, cache: Path, progress: bool):
    if cache.is_file():
        try:
            maps = load_file(str(cache))["maps"]
            errors = json.loads(cache.with_suffix(".json").read_text())
        except (SafetensorError, KeyError, OSError, ValueError) as exc:  # derived data: made again, not a traceback
            log.warning("%s is damaged (%s): making the views' feature maps again", cache,
                        " ".join(str(exc).split()))
        else:
            log.info("re-using the view feature maps in %s", cache)
            for err in filter(None, errors):  # still said: the cache stands for the photos' reading
                log.warning("skipped: %s", err)
            return maps, errors
    maps, errors = view_feature_maps(net, paths, settings, preprocessing, progress)
    cache.parent.mkdir(parents=True, exist_ok=True)
    # the maps last: their file is what marks the cache complete, so a kill between the two writes
    # leaves a cache that is computed again, never maps without their errors
    write_text_atomic(cache.with_suffix(".json"), json.dumps(errors))
    save_tensors_atomic(cache, {"maps": maps})
    return maps, errors


def train_embedder(data: str | Path, out: str | Path, settings: EmbedderSettings | None = None,
                   progress: bool = True, overwrite: bool = False) -> Path:
    """Train a retrieval embedding on the objects of ``data`` (folder or manifest);
    returns the model folder ``out/model``. A second run into the same ``out`` is refused while
    this one runs (``files.exclusive``). Run again with the same settings and data, it trains again
    (on its cached views); an ``out`` holding an embedder trained otherwise is replaced only with
    ``overwrite`` (``_check_out``)."""
    settings = settings or EmbedderSettings()
    settings.validate()
    _check_out(Path(out), data, settings, overwrite)  # before the lock: a refused folder is left without one
    with exclusive(out, "train-embedder"):
        return _train_embedder(data, Path(out), settings, progress)


def _check_out(out: Path, data: str | Path, settings: EmbedderSettings, overwrite: bool) -> None:
    """``train-embedder`` writes cache/ and model/ into ``out``. Refused, before anything is written:
    a folder of other files; a classifier's run or model folder (its model/ would become the embedder);
    without ``overwrite``, an embedder trained with other settings or data (the registers made with it
    would refuse it once replaced, ``Register.embedder``)."""
    if not out.is_dir():
        return
    if (out / "model" / CONFIG_NAME).is_file():
        config = read_config(out / "model")
        if not is_embedding(config):
            raise ValueError(f"{out / 'model'} holds a classifier, which train-embedder would replace with an "
                             "embedder; choose another --out")
        trained = config.get("training") or {}
        changed = [k.replace("_", "-") for k, v in asdict(settings).items()
                   if k != "workers" and trained.get(k) != v]  # the processes making re-shots change no result
        if (config.get("data") or {}).get("source") != str(Path(data).resolve()):
            changed.append("data")
        if changed and not overwrite:
            raise ValueError(f"{out / 'model'} holds an embedder trained with other {', '.join(changed)}; registers "
                             "made with it refuse it once replaced: use --overwrite to replace it, or another --out")
        return
    if (out / CONFIG_NAME).is_file():
        raise ValueError(f"{out} is a model folder; train-embedder writes cache/ and model/ into --out: choose a "
                         "new or empty folder")
    others = entries(out)
    if others and not (out / "cache").is_dir():
        raise ValueError(f"{out} holds {first_names(others)} but no train-embedder run: it writes cache/ and "
                         "model/ into its folder; choose a new or empty --out")


def _train_embedder(data: str | Path, out: Path, settings: EmbedderSettings, progress: bool) -> Path:
    # built first: Preprocessing refuses an unknown resize mode before any photo is read
    pre = replace(default_preprocessing(settings.backbone), input_size=settings.image_size, resize=settings.resize)
    out = Path(out)
    t0 = time.time()
    df, _ = read_manifest(data)
    split = split_manifest(df, val_fraction=settings.val_fraction, test_fraction=settings.holdout,
                           seed=settings.seed)
    parts = {name: split[split["split"] == name] for name in ("train", "val", "test")}
    objects_in = {name: part["object_id"].nunique() for name, part in parts.items()}
    if objects_in["train"] < 2 or objects_in["val"] < 2:
        raise ValueError(f"too few objects to train an embedding: {objects_in['train']} for training and "
                         f"{objects_in['val']} for validation; need at least 2 of each")
    net = EmbeddingNet(settings.backbone, settings.dim, settings.pooling, pretrained=True,
                       trained_stages=settings.trained_stages)
    net.backbone.to(memory_format=torch.channels_last)
    paths = parts["train"]["path"].tolist() + parts["val"]["path"].tolist()
    fingerprint = hashlib.sha256("\n".join(paths).encode()).hexdigest()
    maps, errors = _cached_maps(net, paths, settings, pre, out / "cache" / f"views-{settings.cache_key(fingerprint)}"
                                ".safetensors", progress)
    ok = np.array([e is None for e in errors])
    n_train = len(parts["train"])
    train_ok, val_ok = np.flatnonzero(ok[:n_train]), n_train + np.flatnonzero(ok[n_train:])
    # photos of one object are positives of each other
    objects = torch.as_tensor(parts["train"]["object_id"].astype(str).factorize()[0][train_ok])
    history = train_head(net, maps[torch.as_tensor(train_ok)], objects, maps[torch.as_tensor(val_ok)], settings,
                         progress)
    best = max(history, key=lambda h: h["val_reshot_top1"])
    model_dir = out / "model"
    save_embedding(net, model_dir, preprocessing=pre, embedding={
        "layer": f"{settings.backbone} last conv stage (forward_features), {net.num_features} channels"
                 + (f"; its last {settings.trained_stages} stage(s) trained for retrieval" if settings.trained_stages
                    else ""),
        "pooling": net.head.describe(),
        "dim": settings.dim, "normalisation": "L2"},
        data={"source": str(Path(data).resolve()), "photos": len(df), "trained_objects": objects_in["train"],
              "validation_objects": objects_in["val"], "holdout_objects": objects_in["test"],
              "unreadable": int((~ok).sum()),
              "skipped_unreadable": {path: err for path, err in zip(paths, errors) if err},
              "object_lists": ["trained_objects.txt", "validation_objects.txt", "holdout_objects.txt"]},
        training={**asdict(settings), "listing_generator": GENERATOR_VERSION,
                  "backbone_frozen": settings.trained_stages == 0,
                  "loss": "supervised contrastive",
                  "seconds": round(time.time() - t0, 1)},
        history=history, metrics={"val_reshot_top1": best["val_reshot_top1"], "best_epoch": best["epoch"]})
    for part, name in (("train", "trained"), ("val", "validation"), ("test", "holdout")):
        ids = sorted(set(parts[part]["object_id"].astype(str)))
        write_text_atomic(model_dir / f"{name}_objects.txt", "\n".join(ids) + "\n")
    return model_dir
