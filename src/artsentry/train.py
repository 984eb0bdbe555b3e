"""Training: from a manifest to a model artifact, resumable.

Two modes:

- ``frozen``: the pretrained backbone is fixed; its features are computed once
  per image (cached on disk) and only the head is trained. Minutes on a CPU.
- ``finetune``: the head is first trained on the cached features (a warm
  start, so the random head does not wreck the pretrained features: "linear
  probe then fine-tune"), then the whole network is trained on augmented
  images with a cosine learning-rate schedule.

Both use a class-weighted cross-entropy (weights inversely proportional to the
class frequencies in the training split) and early stopping on the validation
loss, keeping the best epoch's weights; fine-tuning counts the head stage it starts from as
an epoch to beat (validated once before the first step; ``best_epoch`` -1 in the summary when
no epoch beat it, so a fine-tune that only made things worse ships the head stage, not its
least bad epoch). ``finetune`` writes a checkpoint every
``checkpoint_every`` steps and at every epoch end; a run that is killed and
started again with the same command continues from its last checkpoint.
Checkpoints are safetensors plus JSON: nothing is pickled.

``inference_size`` (default: the training size) lets an EfficientNet run at a
larger input than it was trained at: random-crop augmentation shows objects
larger in training than a whole photo does (FixRes, Touvron et al. 2019). On
met-ivory 1.2x raised studio accuracy by 0.5-1.4 points (four models) and moved listing-style
accuracy by -0.5 to +0.5 (three) for a 1.43x slower forward pass, so it is not the default
(BENCHMARKS.md).
The training size stays in ``config.json`` under ``architecture.input_size``.

``crop_scale`` (default 0.5-1.0) is the share of the photo's area the random resized crop of
fine-tuning keeps. Smaller crops show the surface at a higher resolution for the same cost per
step; the model then runs, unless ``inference_size`` says otherwise, at the size where a whole
photo shows objects as large as the crops did (``TrainSettings.run_size``,
``transforms.fixres_size``), and validation judges it there. On met-ivory (one run, 0.2-0.8 at
320 px, so 480 px at inference) studio accuracy was that of the default crops, so the default
stays (BENCHMARKS.md).

``ema_decay`` (off by default) keeps an exponential moving average of the
weights and BatchNorm statistics during fine-tuning, ``avg = d * avg + (1 - d) *
weights`` after every step, starting from the head-stage weights; validation, the
choice of the best epoch and the saved model then use the average (Polyak
averaging; timm's ``ModelEmaV3`` does the same). On met-ivory (one run, 0.995) it
lowered the validation loss and raised test ROC-AUC but not accuracy, so it is
off by default (BENCHMARKS.md).

``drop_path`` (off by default) is stochastic depth while fine-tuning an
EfficientNet: timm skips each residual block with a probability rising linearly
to the rate at the last block. On met-ivory (one run, 0.2) studio accuracy fell
below both runs without it, so it is off by default (BENCHMARKS.md).

``pooling`` (``avg`` by default) is how an EfficientNet's features reach the head: ``texture``
cuts the network after stage 4 and second-order pools that map (``models.pooling``). On
met-ivory its frozen mode scores 0.940 studio on the seed-0 split in 5 minutes but, trained on
studio photos only, it is not robust to listing photos (0.714; 0.843 with four listing-style
``head_views``, 21 minutes, against 0.878-0.903 for ``make ivory``). Fine-tuned from that head
stage with ``freeze_bn`` it is the best studio model measured (0.949, one run), still not a
listing-robust one (0.836); fine-tuned without it (standard augmentation, backbone learning rate
1e-4) it lost studio accuracy (0.915, one run). ``texture+avg`` runs the whole network and gives
the head both descriptors; with ``make ivory``'s recipe it scored 0.917 studio and 0.883
listing-style (one run), no better than ``avg``; with the low-learning-rate ``freeze_bn`` recipe,
0.931 and 0.875 (one run), between ``texture`` and ``avg``. So ``make ivory`` keeps ``avg``
(BENCHMARKS.md).

``freeze_bn`` (off by default) keeps the backbone's BatchNorm layers in eval mode while
fine-tuning: they normalise with the pretrained running statistics and never update them
(their scale and shift still train). The head stage learnt on features computed with those
statistics; in training mode the features change at the first step whatever the learning rate
(batch statistics of augmented photos, then running statistics that drift towards them). On
met-ivory (texture pooling, listing augmentation, backbone learning rate 2e-5) the first
fine-tuning epoch's validation loss was 0.141 with it against 0.197 without (head stage 0.138).

``select_on`` (``studio`` by default) is what fine-tuning's validation loss, which keeps the best
epoch and stops early, is measured on: the validation photos, or (``studio+listing``) the mean of
that loss and the loss on listing-style versions of them, made by ``evaluate --shift``'s generator
(every family, photo i's draw fixed by the seed and i). Both are kept in the history.

``head_views`` (0 by default) makes the head stage learn from K augmented views of every
training photo besides the photo itself: each view's backbone features are computed once with
the training transform (``augment``, ``listing_all``, ``crop_scale``) from a random stream fixed
by the seed and the view's number, and cached in ``features/`` like the plain ones. It is the
only way a ``frozen`` model sees augmented photos (``--mode frozen --augment listing`` without it
is refused); in ``finetune`` mode it shapes the head stage the fine-tune starts from.

``teacher`` (off by default) distils one or more trained classifiers into the model being
fine-tuned (Hinton et al. 2015; "born-again" networks when the teacher has the student's own
architecture): every training batch, augmented as the student sees it, also goes through the
teachers (frozen, eval mode), and the loss is ``(1 - distill_weight)`` x the usual
cross-entropy against the labels plus ``distill_weight`` x the cross-entropy against the
teachers' mean class probabilities. Only fine-tuning distils; the head stage and validation
use the labels.

``consistency`` (0, off, by default; AugMix uses 12) makes every fine-tuning step see each
photo twice: through the ``standard`` augmentation, and re-photographed listing-style (every
time, then ``standard``; ``transforms.paired_views``). The loss is the mean of the two views'
cross-entropies plus ``consistency`` x the Jensen-Shannon divergence between their class
probabilities (``consistency_loss``, Hendrycks et al. 2020): the model is asked to judge a
listing photo as it judges the studio photo of the same object, not only to get both right.
A step costs about twice as much time and memory (two views of each photo: 15 GB peak for
Lite0 at 320 px and batch 32 on met-ivory), so half the epochs cost what ``--augment listing``
alone does. Requires ``augment="listing"``.

``cutmix`` (0, off, by default) is the share of fine-tuning batches mixed by CutMix (Yun et al.
2019; ``cutmix``): a box covering a share 1 - lam of the picture (lam ~ Beta(1, 1)) is replaced
by the same box of another photo of the batch, and the loss is lam x the cross-entropy against
the photo's label + (1 - lam) x the one against the other photo's. Which batches, the boxes and the
pairs are fixed by the seed and the step (a resumed run mixes as the uninterrupted one). Only
fine-tuning mixes; not with ``consistency`` or ``teacher``. On met-ivory, ``make ivory``'s recipe
with 0.5 validated worse and scored studio 0.926, listing-style 0.880 (one run; BENCHMARKS.md).

``sam`` (0, off, by default) is sharpness-aware minimisation's radius rho while fine-tuning (Foret
et al. 2021; ``sharpness_aware_gradients``): every step computes the gradient g as usual, moves the
weights by rho * g / ||g||, takes the gradient there, moves them back and lets the optimizer step with
that second gradient, so training seeks weights whose whole neighbourhood has a low loss. Each step
costs two forward and backward passes; the second pass leaves BatchNorm's running statistics alone.
On met-ivory (``make ivory``'s recipe with 0.05, one run) studio 0.935 and listing-style 0.910 on test,
but 1.4 points under the recipe on validation, for ~1.6x the time: off by default (BENCHMARKS.md).

``val_fraction`` 0 trains without validation photos: the head stage runs all ``head_epochs``
and fine-tuning all ``epochs``, and each keeps its last epoch (no early stopping, no start to
beat, no target threshold, ``select_on`` only ``studio``); the photos a manifest's split column
puts in val are trained on. Meant for the model to deploy, trained on more photos with the
epoch counts a validated run kept (``config.json``: ``training.summary``). ``test_fraction`` 0
(no test photos) skips the evaluation.

The run folder (``--out``) holds::

    run.json             the settings' fingerprint and the data's path; written first, it marks the
                         folder as a run's (``RUN_MARKERS``: ``train`` refuses a folder of other files)
    manifest.csv         the data with its train/val/test split (reused on resume)
    features/            cached backbone features for the head stage (and of the augmented
                         views of the training photos, with ``head_views``)
    checkpoint/          resumable training state (``state.json``, written last, names its
                         ``state-N`` and ``best-M`` tensor files), with the foreground masks of the
                         listing augmentation (deleted when training ends)
    epochs/01, 02, ...   with ``keep_epochs``: each fine-tuning epoch's weights as a model folder
                         (what validation judged; ``artsentry evaluate`` takes it with ``--data``)
    model/               the artifact: model.safetensors + config.json
    metrics.json, report.html, predictions.csv   written by the evaluation

``train_soup`` trains ``n`` such runs into ``ingredients/0``, ``ingredients/1``, ... (``train_seed``
the run's own, then +1, +2, ...: the same split and head start, other batches and augmentation draws)
and writes their soup, the mean of their weights (``models.soup``), as the run's ``model/``,
calibrated, thresholded on validation and evaluated like one model. On met-ivory the soup of two
``make ivory`` runs beat both runs on studio and listing-style test photos and on nine of ten photo
changes the generator never makes (BENCHMARKS.md, "Model soups").
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import math
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from torch import nn
from tqdm.auto import tqdm

from .data.dataset import ImageDataset, item_seed, make_loader
from .data.listing import ListingStyleDataset, MaskCache, shift_variants
from .data.manifest import ManifestError, label_counts, read_manifest, write_manifest
from .data.splits import split_manifest
from .data.transforms import (AUGMENTATIONS, CROP_SCALE, LISTING_P, RESIZE_MODES, Preprocessing, check_crop_scale,
                              eval_transform, fixres_size, paired_views, train_transform)
from .errors import ArtsentryError
from .files import LOCK_NAME, entries, exclusive, first_names, read_json_object, write_text_atomic
from .inference import default_workers
from .models import (POOLINGS, ImageClassifier, check_input_size, create_model, default_preprocessing,
                     training_step_mib)
from .models.artifact import save_model, save_tensors_atomic

log = logging.getLogger(__name__)

NEGATIVE_PREFIXES = ("non_", "non-", "not_", "not-", "no_", "no-", "other")
# what fine-tuning's validation loss, which picks the kept epoch and stops early, is measured on
SELECTIONS = ("studio", "studio+listing")


def layer_depths(backbone: nn.Module) -> dict[str, int]:
    """Depth of each parameter of an EfficientNet backbone, for layer-wise learning rates: 0 for the
    stem, 1 + i for stage i of ``blocks`` (and of a texture backbone's ``later_blocks``, which go on
    where its ``blocks`` stop), and one more for the last convolution (``conv_head``, ``bn2``)."""
    blocks = getattr(backbone, "blocks", None)
    if blocks is None:
        raise ValueError(f"layer-wise rates need an EfficientNet backbone, not {type(backbone).__name__}")
    later = len(getattr(backbone, "later_blocks", ()))
    depths = {}
    for name, _ in backbone.named_parameters():
        head, _, rest = name.partition(".")
        if head in ("conv_stem", "bn1"):
            depths[name] = 0
        elif head == "blocks":
            depths[name] = 1 + int(rest.split(".", 1)[0])
        elif head == "later_blocks":
            depths[name] = 1 + len(blocks) + int(rest.split(".", 1)[0])
        elif head in ("conv_head", "bn2"):
            depths[name] = 1 + len(blocks) + later
        else:
            raise ValueError(f"no depth for the backbone's parameter {name!r}")
    return depths


@dataclass
class TrainSettings:
    architecture: str = "efficientnet_lite0"
    mode: str = "finetune"  # "frozen" or "finetune"
    epochs: int = 8  # fine-tuning epochs (finetune mode)
    head_epochs: int = 60  # head-only epochs on cached features
    batch_size: int = 32
    lr: float = 1e-3  # peak learning rate of fine-tuning (head)
    backbone_lr: float | None = None  # peak learning rate of the pretrained backbone (default: lr)
    head_lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_fraction: float = 0.15
    label_smoothing: float = 0.1
    patience: int = 3  # fine-tuning epochs without val-loss improvement before stopping (CLI default: max(3, epochs // 2))
    head_patience: int = 10
    augment: str = "standard"
    class_weighting: bool = True
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    seed: int = 0  # the split, and (unless train_seed is given) everything random in training
    train_seed: int | None = None  # the batches, augmentation draws and dropout (default: seed); not the head's start
    positive_label: str | None = None
    target_recall: float | None = None
    target_precision: float | None = None
    calibrate: bool = True  # fit a temperature on the validation photos after training (evaluate.calibrate_predictor)
    image_size: int | None = None  # default: the architecture's own
    inference_size: int | None = None  # input size the trained model runs at (default: see run_size)
    checkpoint_every: int = 20  # steps
    ema_decay: float | None = None  # fine-tune with a moving average of the weights (e.g. 0.995)
    drop_path: float = 0.0  # stochastic depth while fine-tuning an EfficientNet (e.g. 0.2)
    listing_all: float = 0.0  # of the listing-augmented photos, the fraction with every family at once
    listing_p: float = LISTING_P  # with augment="listing", the share of training photos re-photographed
    detail_loss: float = 0.0  # share of training photos blurred, shrunk or noised beyond the listing generator
    crop_scale: tuple[float, float] = CROP_SCALE  # share of the photo's area a random resized crop keeps
    teacher: tuple[str, ...] = ()  # classifiers (model or run folders) distilled into the model while fine-tuning
    distill_weight: float = 0.5  # share of the loss that follows the teachers' probabilities
    consistency: float = 0.0  # weight of the Jensen-Shannon term between a studio and a listing-style view of each photo
    cutmix: float = 0.0  # share of fine-tuning batches in which a box of each photo is replaced by another photo's
    sam: float = 0.0  # sharpness-aware minimisation's radius rho while fine-tuning (e.g. 0.05; 0: plain steps)
    layer_decay: float = 1.0  # fine-tuning: each backbone stage below the top runs at this times the rate above it
    num_workers: int | None = None
    pretrained: bool = True
    pooling: str = "avg"  # how an EfficientNet's features are pooled: "avg", "texture", "texture+avg" (models.pooling)
    head_views: int = 0  # head stage: cached features of this many augmented views of each training photo too
    freeze_bn: bool = False  # fine-tuning keeps the backbone's BatchNorm statistics as the head stage saw them
    select_on: str = "studio"  # fine-tuning keeps the epoch of lowest val loss on "studio" photos or "studio+listing"
    keep_epochs: bool = False  # also save every fine-tuning epoch's weights as a model folder (epochs/NN/)
    resize: str | None = None  # how a photo becomes the square input at validation, test and use (None: see fit_mode)

    def validate(self) -> None:
        if self.mode not in ("frozen", "finetune"):
            raise ValueError(f"mode must be 'frozen' or 'finetune', not {self.mode!r}")
        if self.augment not in AUGMENTATIONS:
            raise ValueError(f"augment must be one of {AUGMENTATIONS}")
        if self.architecture == "smallcnn" and self.mode == "frozen":
            raise ValueError("smallcnn has no pretrained backbone to freeze; use --mode finetune")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, not {self.pooling!r}")
        if self.pooling != "avg" and self.architecture == "smallcnn":
            raise ValueError(f"--pooling {self.pooling} pools an EfficientNet's stages; smallcnn has its own dense layer")
        if self.head_views < 0:
            raise ValueError(f"head views must be >= 0, not {self.head_views}")
        if self.image_size is not None:  # the size rule, said before the run folder is made
            check_input_size(self.architecture, self.image_size)
        if self.head_views and self.augment == "none":
            raise ValueError("--head-views caches augmented views of the training photos; --augment none makes none")
        if self.mode == "frozen" and self.augment == "listing" and not self.head_views:
            raise ValueError("--mode frozen trains the head on features of the photos as they are: add "
                             "--head-views K for it to learn from K listing-style views of each")
        if self.freeze_bn and self.mode == "frozen":
            raise ValueError("--freeze-bn keeps BatchNorm statistics fixed while fine-tuning; --mode frozen "
                             "never changes them")
        if self.freeze_bn and self.architecture == "smallcnn":
            raise ValueError("--freeze-bn keeps pretrained BatchNorm statistics; smallcnn trains from scratch")
        if self.head_views and self.architecture == "smallcnn":
            raise ValueError("--head-views feeds the head stage on cached features; smallcnn has no head stage")
        if self.select_on not in SELECTIONS:
            raise ValueError(f"select-on must be one of {', '.join(SELECTIONS)}, not {self.select_on!r}")
        if self.select_on != "studio" and self.mode == "frozen":
            raise ValueError(f"--select-on {self.select_on} chooses among fine-tuning epochs; --mode frozen has none")
        if self.keep_epochs and self.mode == "frozen":
            raise ValueError("--keep-epochs saves the weights of each fine-tuning epoch; --mode frozen has none")
        if self.target_recall is not None and self.target_precision is not None:
            raise ValueError("give --target-recall or --target-precision, not both")
        for name, value, least in (("--epochs", self.epochs, 0), ("--head-epochs", self.head_epochs, 0),
                                   ("--batch-size", self.batch_size, 1), ("--patience", self.patience, 1),
                                   ("the head stage's patience", self.head_patience, 1),
                                   ("--checkpoint-every", self.checkpoint_every, 1)):  # the one wrong, named
            if value < least:
                raise ValueError(f"{name} must be {least} or more, not {value}")
        for name in ("lr", "head_lr", "backbone_lr"):  # a negative rate climbs the loss, without a word
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"--{name.replace('_', '-')} must be a positive number, not {value}")
        if not (math.isfinite(self.layer_decay) and 0.0 < self.layer_decay <= 1.0):
            raise ValueError(f"layer decay must be in (0, 1] (1: one rate for the whole backbone), "
                             f"not {self.layer_decay}")
        if self.layer_decay != 1.0 and self.mode == "frozen":
            raise ValueError("--layer-decay sets the backbone's rates while fine-tuning; --mode frozen trains "
                             "only the head")
        if self.layer_decay != 1.0 and self.architecture == "smallcnn":
            raise ValueError("--layer-decay scales a pretrained backbone's stages; smallcnn trains from scratch")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"weight decay must be >= 0, not {self.weight_decay}")
        if not 0.0 <= self.warmup_fraction < 1.0 or not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError("warmup fraction and label smoothing must be in [0, 1)")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"ema decay must be between 0 and 1 (exclusive), not {self.ema_decay}")
        if self.ema_decay is not None and self.mode == "frozen":
            raise ValueError("--ema-decay averages the weights of fine-tuning; --mode frozen trains only the head")
        if not 0.0 <= self.drop_path < 1.0:
            raise ValueError(f"drop path rate must be in [0, 1), not {self.drop_path}")
        if self.drop_path and self.mode == "frozen":
            raise ValueError("--drop-path regularises fine-tuning of the backbone; --mode frozen trains only the head")
        if self.drop_path and self.architecture == "smallcnn":
            raise ValueError("--drop-path needs residual blocks; smallcnn has none")
        if not 0.0 <= self.listing_all <= 1.0:
            raise ValueError(f"listing-all must be in [0, 1], not {self.listing_all}")
        if self.listing_all and self.augment != "listing":
            raise ValueError("--listing-all shapes the listing augmentation; use it with --augment listing")
        if not 0.0 <= self.listing_p <= 1.0:
            raise ValueError(f"listing-p must be in [0, 1], not {self.listing_p}")
        if self.listing_p != LISTING_P and self.augment != "listing":
            raise ValueError("--listing-p shapes the listing augmentation; use it with --augment listing")
        if not 0.0 <= self.detail_loss <= 1.0:
            raise ValueError(f"detail-loss must be in [0, 1], not {self.detail_loss}")
        if self.detail_loss and self.augment == "none":
            raise ValueError("--detail-loss is an augmentation; --augment none makes none")
        if self.detail_loss and self.mode == "frozen" and not self.head_views:
            raise ValueError("--mode frozen trains the head on features of the photos as they are: add "
                             "--head-views K for it to learn from K views that may lose detail")
        check_crop_scale(self.crop_scale)
        if self.resize is not None and self.resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {RESIZE_MODES}, not {self.resize!r}")
        if not 0.0 <= self.distill_weight <= 1.0:
            raise ValueError(f"distill weight must be in [0, 1], not {self.distill_weight}")
        if self.teacher and self.mode == "frozen":
            raise ValueError("--teacher distils into fine-tuning; --mode frozen trains only the head")
        if self.consistency < 0:
            raise ValueError(f"consistency weight must be >= 0, not {self.consistency}")
        if self.consistency and self.augment != "listing":
            raise ValueError("--consistency pairs each photo with a listing-style view of it: use --augment listing")
        if self.consistency and self.mode == "frozen":
            raise ValueError("--consistency shapes fine-tuning; --mode frozen trains only the head")
        if self.consistency and self.teacher:
            raise ValueError("--consistency and --teacher are two different targets for the same views: give one")
        if self.consistency and self.listing_p != LISTING_P:
            raise ValueError("--consistency re-photographs one view of every photo; --listing-p does not apply to it")
        if not 0.0 <= self.cutmix <= 1.0:
            raise ValueError(f"cutmix must be a share of the batches, in [0, 1], not {self.cutmix}")
        if self.cutmix and self.mode == "frozen":
            raise ValueError("--cutmix mixes the photos of fine-tuning batches; --mode frozen trains only the head")
        if self.cutmix and (self.consistency or self.teacher):
            raise ValueError("--cutmix mixes the labels of a batch; --consistency and --teacher set other targets "
                             "for it: give one")
        if not 0.0 <= self.sam <= 1.0:
            raise ValueError(f"sam radius must be in [0, 1], not {self.sam}")
        if self.sam and self.mode == "frozen":
            raise ValueError("--sam shapes fine-tuning steps; --mode frozen trains only the head")
        if not self.validated:
            if self.target_recall is not None or self.target_precision is not None:
                raise ValueError("--val-fraction 0 trains without validation photos, and a threshold for a target "
                                 "recall or precision is chosen on them")
            if self.select_on != "studio":
                raise ValueError(f"--select-on {self.select_on} chooses an epoch on validation photos; "
                                 "--val-fraction 0 has none (the last epoch is kept)")
        if self.test_fraction == 0 and (self.target_recall is not None or self.target_precision is not None):
            raise ValueError("the threshold for a target recall or precision is set by the evaluation after "
                             "training, which --test-fraction 0 skips")
        if self.inference_size is not None:
            check_input_size(self.architecture, self.inference_size,
                             self.image_size or default_preprocessing(self.architecture).input_size)

    @property
    def validated(self) -> bool:
        """Whether the run holds photos out for validation: ``val_fraction`` 0 trains on a fixed
        schedule (every head and fine-tuning epoch, the last kept) on every photo not in test."""
        return self.val_fraction > 0

    @property
    def fit_mode(self) -> str:
        """``resize`` as given, else ``fit`` for the EfficientNets (a photo wider than 4:3 or taller than 3:4
        cut to that at its centre, then squashed: no shape the training crops never had; BENCHMARKS.md,
        "Photos wider or taller than the training crops") and ``squash`` for the small CNN (as the
        published study resized)."""
        return self.resize or ("squash" if self.architecture == "smallcnn" else "fit")

    def run_size(self, train_size: int) -> int:
        """The input size the trained model runs at: ``inference_size`` when given; else, with
        other crops than the default, the size that matches their magnification
        (``transforms.fixres_size``: a model trained on small crops sees objects far larger than a
        whole photo at the training size shows them); else the training size."""
        if self.inference_size is not None:
            return self.inference_size
        if check_crop_scale(self.crop_scale) != CROP_SCALE and self.architecture != "smallcnn":
            return fixres_size(train_size, self.crop_scale)
        return train_size

    @property
    def run_seed(self) -> int:
        """The seed of training's randomness: ``train_seed``, or the split's ``seed`` when none is given. Two
        runs on one split that differ only in it are two draws of the same recipe (soup ingredients)."""
        return self.seed if self.train_seed is None else self.train_seed

    def fingerprint(self) -> str:
        """What a checkpoint must agree on to be resumed (not the threshold targets)."""
        keep = {k: v for k, v in asdict(self).items()
                if k not in ("target_recall", "target_precision", "calibrate", "num_workers", "inference_size",
                             "keep_epochs")}
        # added later: checkpoints written before these settings existed stay resumable
        if keep["ema_decay"] is None:
            del keep["ema_decay"]
        for k in ("drop_path", "listing_all", "detail_loss", "head_views", "freeze_bn", "consistency", "cutmix", "sam"):
            if not keep[k]:
                del keep[k]
        if keep["listing_p"] == LISTING_P:
            del keep["listing_p"]
        if keep["layer_decay"] == 1.0:
            del keep["layer_decay"]
        if keep["train_seed"] is None:
            del keep["train_seed"]
        if keep["pooling"] == "avg":
            del keep["pooling"]
        if keep["select_on"] == "studio":
            del keep["select_on"]
        if not keep["teacher"]:
            del keep["teacher"], keep["distill_weight"]
        else:
            keep["teacher"] = list(keep["teacher"])
        keep["resize"] = self.fit_mode
        if keep["resize"] == "squash":  # every run before the setting existed
            del keep["resize"]
        keep["crop_scale"] = list(check_crop_scale(keep["crop_scale"]))
        if keep["crop_scale"] == list(CROP_SCALE):
            del keep["crop_scale"]
        return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, d: dict) -> "TrainSettings":
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        if "crop_scale" in d:  # a JSON list
            d["crop_scale"] = tuple(float(v) for v in d["crop_scale"])
        if "teacher" in d:
            d["teacher"] = tuple(str(v) for v in d["teacher"])
        return cls(**d)


@dataclass
class TrainResult:
    run_dir: Path
    model_dir: Path
    history: list[dict] = field(default_factory=list)
    resumed_from_step: int = 0
    evaluation: dict = field(default_factory=dict)  # run_evaluation's result on the test split


class TrainingError(ArtsentryError, RuntimeError):
    pass


# -- helpers ---------------------------------------------------------------------------------


def choose_positive_label(labels: list[str], requested: str | None) -> str | None:
    """The class flagged by a binary model: ``requested``, else ``ivory``, else the one
    label that is not named like a negative (``non_...``, ``not_...``)."""
    if len(labels) != 2:
        if requested is not None:
            raise ValueError("--positive-label only applies to two-class data")
        return None
    if requested is not None:
        if requested not in labels:
            raise ValueError(f"positive label {requested!r} is not one of the labels {labels}")
        return requested
    if "ivory" in labels:
        return "ivory"
    negative = [l for l in labels if l.lower().startswith(NEGATIVE_PREFIXES)]
    if len(negative) == 1:
        return next(l for l in labels if l != negative[0])
    raise ValueError(f"cannot tell which of {labels} is the positive class; pass --positive-label")


def class_weights(targets: np.ndarray, num_classes: int) -> torch.Tensor:
    counts = np.bincount(targets, minlength=num_classes).astype(np.float64)
    if (counts == 0).any():
        missing = np.where(counts == 0)[0].tolist()
        raise TrainingError(f"class indices {missing} have no training images")
    return torch.tensor(len(targets) / (num_classes * counts), dtype=torch.float32)


def distillation_loss(logits: torch.Tensor, targets: torch.Tensor, teacher_probs: torch.Tensor, weight: float,
                      hard_loss: nn.Module) -> torch.Tensor:
    """``(1 - weight) * hard_loss(logits, targets)`` plus ``weight`` x the cross-entropy of the
    student's class probabilities against the teacher's (temperature 1)."""
    soft = -(teacher_probs * torch.log_softmax(logits, dim=1)).sum(dim=1).mean()
    return (1.0 - weight) * hard_loss(logits, targets) + weight * soft


def _step_generator(seed: int, step: int) -> torch.Generator:
    """A random stream fixed by the run's seed and the step: a resumed run mixes its batches as the
    uninterrupted one would have."""
    return torch.Generator().manual_seed(item_seed(seed, step))


def consistency_loss(logits_a: torch.Tensor, logits_b: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon divergence between the class probabilities of two views of the same photos
    (AugMix's consistency term, Hendrycks et al. 2020): the mean KL divergence of each from their
    average. 0 when the views are judged alike, at most log 2."""
    pa, pb = logits_a.softmax(dim=1), logits_b.softmax(dim=1)
    log_mean = ((pa + pb) / 2).clamp(1e-7, 1.0).log()
    return (nn.functional.kl_div(log_mean, pa, reduction="batchmean")
            + nn.functional.kl_div(log_mean, pb, reduction="batchmean")) / 2


def cutmix(x: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, float]:
    """CutMix (Yun et al. 2019): in each photo of the batch ``x`` (N, C, H, W) one box, at the same
    place in all, is replaced by that box of the photo a random permutation pairs it with (now and
    then itself, which leaves it whole under its own label). The box's area is a share
    1 - lam of the picture with lam ~ Beta(1, 1), clipped at the borders, and lam is then the share
    the photo keeps. Returns (the mixed batch, the permutation, lam): the loss is lam x the loss
    against the photos' labels + (1 - lam) x the loss against the labels of ``x[perm]``. Unlike
    mixup, every pixel stays a real pixel of one photo, so surfaces (ivory grain, glaze crazing)
    are never blended into textures neither material has."""
    n, _, h, w = x.shape
    perm = torch.randperm(n, generator=generator)
    lam = float(torch.rand((), generator=generator))  # Beta(1, 1)
    cut = math.sqrt(1.0 - lam)
    bh, bw = int(round(h * cut)), int(round(w * cut))
    cy, cx = int(torch.randint(0, h, (), generator=generator)), int(torch.randint(0, w, (), generator=generator))
    y0, y1 = max(cy - bh // 2, 0), min(cy + bh - bh // 2, h)
    x0, x1 = max(cx - bw // 2, 0), min(cx + bw - bw // 2, w)
    mixed = x.clone()
    mixed[:, :, y0:y1, x0:x1] = x[perm, :, y0:y1, x0:x1]
    return mixed, perm, 1.0 - (y1 - y0) * (x1 - x0) / (h * w)


class Teachers(nn.Module):
    """Trained classifiers (frozen, eval mode) whose mean class probabilities a student learns
    from, each as its predictor gives them (with its calibration temperature). They must have the
    student's labels, in its order, and take its input normalisation (they see the student's
    training batches as they are)."""

    def __init__(self, folders, labels: list[str], preprocessing: Preprocessing):
        from .models.artifact import ArtifactError, calibration_temperature, load_model, resolve_model_dir

        super().__init__()
        members, self.digests, self.temperatures = [], {}, []
        for folder in folders:
            folder = resolve_model_dir(folder)
            try:
                model, config = load_model(folder)
            except ArtifactError as exc:  # no such folder, no config, unreadable weights...
                raise TrainingError(f"teacher {exc}") from None
            if list(config["labels"]) != list(labels):
                raise TrainingError(f"teacher {folder} has labels {config['labels']}, the data {labels}")
            pre = Preprocessing.from_dict(config["preprocessing"])
            norm = lambda p: tuple(float(v) for v in (*p.mean, *p.std))  # noqa: E731
            if norm(pre) != norm(preprocessing):
                raise TrainingError(f"teacher {folder} normalises its input with mean {pre.mean} / std {pre.std}, "
                                    f"the student with {preprocessing.mean} / {preprocessing.std}")
            model.requires_grad_(False)
            members.append(model.eval().to(memory_format=torch.channels_last))
            try:
                self.temperatures.append(calibration_temperature(config))
            except ArtifactError as exc:
                raise TrainingError(f"teacher {folder}: {exc}") from None
            self.digests[str(folder)] = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
        self.members = nn.ModuleList(members)  # in eval mode: BatchNorm statistics and dropout stay fixed

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([(m(x) / t).softmax(dim=1) for m, t in zip(self.members, self.temperatures)]).mean(dim=0)


def _selection_loss(scores: dict) -> float:
    """The loss fine-tuning keeps its best weights on, from ``Trainer._judge``'s scores: the mean of
    studio and listing-style validation loss when it judged both, else the studio loss."""
    return scores.get("selection_loss", scores["val_loss"])


def _batchnorm_layers(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def freeze_batchnorm_statistics(module: nn.Module) -> None:
    """Put every BatchNorm layer of ``module`` in eval mode: it normalises with its running
    statistics and stops updating them (its scale and shift still train). Call after
    ``model.train()``. Fine-tuning at a low learning rate then starts from exactly the features
    the head stage learnt on, instead of from batch statistics of augmented photos."""
    for m in _batchnorm_layers(module):
        m.eval()


@contextlib.contextmanager
def batchnorm_statistics_held(module: nn.Module):
    """BatchNorm layers in training mode normalise with the batch's statistics but leave their running
    statistics as they are (momentum 0) inside the block."""
    layers = [m for m in _batchnorm_layers(module) if m.training]
    saved = [(m, m.momentum, m.num_batches_tracked.clone() if m.num_batches_tracked is not None else None)
             for m in layers]
    try:
        for m in layers:
            m.momentum = 0.0
        yield
    finally:
        for m, momentum, tracked in saved:
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)


def sharpness_aware_gradients(model: nn.Module, optimizer: torch.optim.Optimizer, loss_of, rho: float) -> None:
    """Replace the gradients that ``loss.backward()`` left in ``model`` by SAM's (Foret et al. 2021): the
    gradients at ``w + rho * g / ||g||``, the steepest point within ``rho`` of the weights, so that the
    optimizer's step goes towards weights whose whole neighbourhood has a low loss. The weights are put
    back before returning; BatchNorm running statistics are updated by the first pass only."""
    params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    if not params:
        return
    with torch.no_grad():
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
        scale = rho / (norm + 1e-12)
        weights = [p.detach().clone() for p in params]  # put back exactly, not as (w + e) - e
        for p in params:
            p.add_(p.grad * scale)
    optimizer.zero_grad(set_to_none=True)
    try:
        with batchnorm_statistics_held(model):
            loss_of(model).backward()
    finally:
        with torch.no_grad():
            for p, w in zip(params, weights):
                p.copy_(w)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def _lr_factor(step: int, total: int, warmup: int) -> float:
    if total <= 0:
        return 1.0
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _set_lr(optimizer: torch.optim.Optimizer, factor: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * factor


def _flatten_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, state in sd["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"optim.{pid}.{key}"] = value.detach().contiguous().cpu()
            else:
                scalars[f"{pid}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, pid, key = name.split(".", 2)
            state.setdefault(int(pid), {})[key] = value
    for name, value in meta["scalars"].items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


class WeightAverage:
    """Exponential moving average of a model's weights and buffers (BatchNorm statistics).

    ``update(model)`` after every optimiser step: ``avg = decay * avg + (1 - decay) * weights``;
    integer buffers (BatchNorm's step count) are copied. ``model`` holds the average.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        floats_avg, floats_new = [], []
        for avg, new in zip(self.model.state_dict().values(), model.state_dict().values(), strict=True):
            if avg.dtype.is_floating_point:
                floats_avg.append(avg)
                floats_new.append(new)
            else:
                avg.copy_(new)
        torch._foreach_lerp_(floats_avg, floats_new, 1.0 - self.decay)


# -- the trainer ---------------------------------------------------------------------------


def data_changed_since(source: str | Path, saved: pd.DataFrame) -> str | None:
    """How the images and labels ``read_manifest(source)`` finds now differ from a run's saved
    manifest ("3 image(s) added, 1 relabelled"), or None when they do not (or cannot be read)."""
    manifest_log = logging.getLogger(read_manifest.__module__)
    level = manifest_log.level
    manifest_log.setLevel(logging.ERROR)  # its notes were logged when the run started
    try:
        now, _ = read_manifest(source)
    except (ManifestError, OSError, ValueError):
        return None
    finally:
        manifest_log.setLevel(level)
    before = dict(zip(saved["path"].astype(str), saved["label"].astype(str)))
    after = dict(zip(now["path"].astype(str), now["label"].astype(str)))
    added, gone = len(after.keys() - before.keys()), len(before.keys() - after.keys())
    relabelled = sum(before[p] != after[p] for p in before.keys() & after.keys())
    parts = [f"{n} image(s) {what}" if what != "relabelled" else f"{n} relabelled"
             for n, what in ((added, "added"), (gone, "gone"), (relabelled, "relabelled")) if n]
    return ", ".join(parts) or None


class Trainer:
    """Trains one model into ``run_dir``. Use ``train()`` for the common case."""

    def __init__(self, run_dir: str | Path, settings: TrainSettings, progress: bool = True):
        settings.validate()
        self.run_dir = Path(run_dir)
        self.settings = settings
        self.progress = progress
        self.ckpt_dir = self.run_dir / "checkpoint"
        self.model_dir = self.run_dir / "model"
        self.history: list[dict] = []
        self.head_summary: dict | None = None  # the head stage's best epoch and loss (train_head)
        self.skipped: dict[str, str] = {}  # path -> reason, images that could not be read
        self.teachers: Teachers | None = None  # distilled into fine-tuning (settings.teacher)

    # data ---------------------------------------------------------------------------------
    def prepare_data(self, source: str | Path | None) -> pd.DataFrame:
        """Read and split the data, or reuse the split a previous attempt saved."""
        saved = self.run_dir / "manifest.csv"
        state_file = self.run_dir / "run.json"
        if saved.is_file() and state_file.is_file():
            try:
                state = read_json_object(state_file)
            except ValueError as exc:  # JSON's bare message named no file
                raise TrainingError(f"{state_file}: the run's record is damaged{f' ({exc})' if str(exc) else ''}; "
                                    "use --overwrite to train again from the start, or another --out") from None
            if state.get("fingerprint") != self.settings.fingerprint():
                raise TrainingError(
                    f"{self.run_dir} holds a run with other settings; use --overwrite or another --out"
                )
            if source is not None and state.get("source") != str(Path(source).resolve()):
                raise TrainingError(f"{self.run_dir} holds a run on other data ({state.get('source')}); "
                                    "use --overwrite or another --out")
            df = pd.read_csv(saved, dtype=str, keep_default_na=False)
            log.info("resuming %s with its saved split", self.run_dir)
            self.source = state.get("source")
            if source is not None:
                changed = data_changed_since(source, df)
                if changed:
                    log.warning("%s has changed since %s was started (%s): resuming with the saved split; "
                                "--overwrite trains on the data as it is now", source, self.run_dir, changed)
            self._check_split(df)
        else:
            if source is None:
                raise TrainingError("no data given and no run to resume")
            df, report = read_manifest(source)
            self.manifest_notes = report.lines()
            s = self.settings
            df = split_manifest(df, val_fraction=s.val_fraction, test_fraction=s.test_fraction, seed=s.seed)
            if not s.validated and (df["split"] == "val").any():  # a manifest's own split column
                self.manifest_notes.append(f"{int((df['split'] == 'val').sum())} image(s) the manifest puts in "
                                           "the val split are trained on (--val-fraction 0: no validation)")
                df = df.assign(split=df["split"].replace("val", "train"))
            self._check_split(df)  # before anything is saved: a run too small to train is not resumed later
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.source = str(Path(source).resolve())
            # run.json first: it marks the folder as a run's (RUN_MARKERS) before any other file is there, and
            # without manifest.csv beside it the next attempt splits afresh
            write_text_atomic(state_file, json.dumps({"fingerprint": self.settings.fingerprint(), "source": self.source,
                                                      "settings": asdict(self.settings), "notes": self.manifest_notes},
                                                     indent=2))
            write_manifest(df, saved)
        self.df = df
        self.labels = sorted(df["label"].unique().tolist())
        self.positive_label = choose_positive_label(self.labels, self.settings.positive_label)
        self.label_index = {l: i for i, l in enumerate(self.labels)}
        return df

    def _check_split(self, df: pd.DataFrame) -> None:
        from .models.artifact import read_config, resolve_model_dir

        labels = sorted(df["label"].unique().tolist())
        if len(labels) < 2:
            raise TrainingError(f"a classifier needs images of at least two labels; found only {labels} "
                                f"({len(df)} image(s))")
        # before run.json is written: a refusal there made the corrected command meet "a run with other settings"
        choose_positive_label(labels, self.settings.positive_label)
        for folder in self.settings.teacher or ():  # before the run folder names it (read by _check_teachers)
            folder = resolve_model_dir(folder)
            taught = read_config(folder)["labels"]
            if list(taught) != labels:
                raise TrainingError(f"teacher {folder} has labels {taught}, the data {labels}")
        counts = df["split"].value_counts()
        sizes = ", ".join(f"{counts.get(k, 0)} {k}" for k in ("train", "val", "test"))
        if not counts.get("train", 0):
            raise TrainingError(f"the train split is empty ({sizes} of {len(df)} images); "
                                "the data set is too small for these fractions")
        if self.settings.validated and not counts.get("val", 0):
            raise TrainingError(f"the val split is empty ({sizes} of {len(df)} images); the data set is too small "
                                "for these fractions (--val-fraction 0 trains without validation, on a fixed schedule)")

    def split(self, name: str) -> pd.DataFrame:
        return self.df[self.df["split"] == name].reset_index(drop=True)

    def targets(self, part: pd.DataFrame) -> np.ndarray:
        return part["label"].map(self.label_index).to_numpy().astype(np.int64)

    # model --------------------------------------------------------------------------------
    def build_model(self) -> ImageClassifier:
        s = self.settings
        model = create_model(s.architecture, len(self.labels), pretrained=s.pretrained, input_size=s.image_size,
                             drop_path_rate=s.drop_path, pooling=s.pooling)
        pre = replace(default_preprocessing(s.architecture), resize=s.fit_mode)
        if s.image_size:
            pre = replace(pre, input_size=s.image_size)
        self.preprocessing = pre
        # what the trained model will run at: validation judges it there
        self.inference_preprocessing = replace(pre, input_size=s.run_size(pre.input_size))
        # channels-last runs these convolutions ~1.7x faster on CPU
        self.model = model.to(memory_format=torch.channels_last)
        return self.model

    def _loader(self, part: pd.DataFrame, transform, shuffle_seed: int | None = None, skip_batches: int = 0,
                workers: int | None = None, pre: Preprocessing | None = None, masks: MaskCache | None = None,
                draw_seed: int | None = None):
        """Batches of ``part`` through ``transform``; JPEGs decoded no smaller than ``pre`` (default: the
        training preprocessing) needs. With ``masks``: listing-style versions of the photos instead,
        made as ``evaluate --shift`` makes them (every family; photo i's draw fixed by the seed and i).
        ``draw_seed``: a random ``transform`` draws photo i's randomness from it and i (``ImageDataset``),
        and the loader takes nothing from the run's random state, which dropout draws from."""
        if masks is None:
            ds = ImageDataset(part["path"].tolist(), transform, targets=self.targets(part),
                              draft_size=(pre or self.preprocessing).draft_size, draw_seed=draw_seed)
        else:
            ds = ListingStyleDataset(part["path"].tolist(), transform, shift_variants()["listing"], self.settings.seed,
                                     mask_cache=masks, targets=self.targets(part))
        if workers is None:
            workers = self.settings.num_workers if self.settings.num_workers is not None else default_workers(len(ds))
        sampler = None
        if shuffle_seed is not None:
            g = torch.Generator().manual_seed(shuffle_seed)
            sampler = torch.randperm(len(ds), generator=g).tolist()[skip_batches * self.settings.batch_size :]
        own = torch.Generator().manual_seed(draw_seed) if draw_seed is not None else None  # the workers' seeds
        return make_loader(ds, self.settings.batch_size, num_workers=workers, sampler=sampler, generator=own)

    def _note_errors(self, part: pd.DataFrame, errors) -> dict[str, str]:
        """Record and warn of the unreadable photos of a batch (each once a run); their paths and reasons."""
        found = {part["path"].iloc[idx]: msg for idx, msg in errors}
        self._note_skipped(found)
        return found

    def _note_skipped(self, found: dict[str, str]) -> None:
        for path, msg in found.items():
            if path not in self.skipped:
                self.skipped[path] = msg
                log.warning("skipped %s", msg)

    # head stage ---------------------------------------------------------------------------
    @torch.no_grad()
    def extract_features(self, part_name: str, view: int | None = None,
                         masks: MaskCache | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Backbone features of one split (cached in ``features/``); ``view`` k: of the training
        augmentation's k-th view of every photo instead of the photo itself (the draws are fixed by
        the seed and k, so a resumed run caches the same views; ``masks`` keeps each photo's
        foreground estimate from one view to the next). The photos that could not be read are kept with
        the cache, so a resumed run still warns of them and records them."""
        name = part_name if view is None else f"{part_name}_view{view}"
        cache = self.run_dir / "features" / f"{name}.safetensors"
        if cache.is_file():
            try:
                with safe_open(str(cache), framework="pt") as f:
                    skipped = json.loads((f.metadata() or {}).get("skipped", "{}"))
                    features, targets = f.get_tensor("features"), f.get_tensor("targets")
                self._note_skipped(skipped)
                return features, targets
            except (SafetensorError, ValueError) as exc:  # cut short, overwritten: made again, as it was made
                log.warning("%s is damaged (%s): extracting its features again", cache, " ".join(str(exc).split()))
        s = self.settings
        cache.parent.mkdir(parents=True, exist_ok=True)
        part = self.split(part_name)
        backbone = self.model.backbone.eval()
        feats, targets, skipped = [], [], {}
        if view is None:
            loader = self._loader(part, eval_transform(self.preprocessing))
        else:  # a view's draws are fixed by the training seed, the view and the photo, leaving the run's untouched
            transform = train_transform(self.preprocessing, s.augment, s.listing_all, s.crop_scale, masks,
                                        listing_p=s.listing_p, detail_loss=s.detail_loss)
            loader = self._loader(part, transform, draw_seed=s.run_seed * 1000 + 500 + view)
        with tqdm(total=len(part), desc=f"features {name}", unit="img", disable=not self.progress) as bar:
            for batch in loader:
                skipped.update(self._note_errors(part, batch.errors))
                if len(batch.index):
                    feats.append(backbone(batch.x.contiguous(memory_format=torch.channels_last)).float())
                    targets.append(batch.y)
                bar.update(len(batch.index) + len(batch.errors))
        if not feats:
            raise TrainingError(f"no readable images in the {part_name} split")
        out = {"features": torch.cat(feats), "targets": torch.cat(targets)}
        save_tensors_atomic(cache, out, metadata={"skipped": json.dumps(skipped)})
        return out["features"], out["targets"]

    def train_head(self) -> dict:
        """Train the head on cached features with early stopping; keeps the best epoch (without a
        validation split: trains every epoch, keeps the last)."""
        s = self.settings
        xtr, ytr = self.extract_features("train")
        if s.head_views:
            listing = s.augment == "listing"  # only the listing generator needs foreground estimates
            scratch = tempfile.TemporaryDirectory(dir=self.run_dir / "features") if listing else contextlib.nullcontext()
            with scratch as tmp:
                masks = MaskCache(tmp) if listing else None
                views = [self.extract_features("train", k, masks) for k in range(s.head_views)]
            xtr, ytr = torch.cat([xtr] + [v[0] for v in views]), torch.cat([ytr] + [v[1] for v in views])
        xva, yva = self.extract_features("val") if s.validated else (None, None)
        head = self.model.head
        weights = class_weights(ytr.numpy(), len(self.labels)) if s.class_weighting else None
        loss_fn = nn.CrossEntropyLoss(weight=weights, label_smoothing=s.label_smoothing)
        val_loss_fn = nn.CrossEntropyLoss(weight=weights)
        opt = torch.optim.AdamW(head.parameters(), lr=s.head_lr, weight_decay=s.weight_decay)
        g = torch.Generator().manual_seed(s.run_seed)
        best = (math.inf, None, -1)
        bad = 0
        for epoch in range(s.head_epochs):
            head.train()
            perm = torch.randperm(len(xtr), generator=g)
            losses = []
            for i in range(0, len(perm), s.batch_size):
                idx = perm[i : i + s.batch_size]
                if len(idx) < 2:  # BatchNorm needs two rows
                    continue
                loss = loss_fn(head(xtr[idx]), ytr[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                losses.append(loss.item())
            train_loss = float(np.mean(losses)) if losses else None
            if not s.validated:
                self.history.append({"stage": "head", "epoch": epoch, "train_loss": train_loss})
                continue
            vloss, vacc = self._validate_head(val_loss_fn, xva, yva)
            self.history.append({"stage": "head", "epoch": epoch, "train_loss": train_loss,
                                 "val_loss": vloss, "val_accuracy": vacc})
            if vloss < best[0] - 1e-4:
                best = (vloss, {k: v.clone() for k, v in head.state_dict().items()}, epoch)
                bad = 0
            else:
                bad += 1
                if bad >= s.head_patience:
                    break
        if not s.validated:  # a fixed schedule: the head as the last epoch left it
            return {"best_val_loss": None, "best_epoch": s.head_epochs - 1}
        if best[1] is not None:
            head.load_state_dict(best[1])
        log.info("head: best val loss %.4f at epoch %d", best[0], best[2])
        return {"best_val_loss": best[0], "best_epoch": best[2]}

    @torch.no_grad()
    def _validate_head(self, loss_fn, features: torch.Tensor, targets: torch.Tensor) -> tuple[float, float]:
        """Validation loss and accuracy of the head on the validation photos' cached features."""
        head = self.model.head.eval()
        logits = head(features)
        return float(loss_fn(logits, targets)), float((logits.argmax(1) == targets).float().mean())

    # fine-tuning --------------------------------------------------------------------------
    def _param_groups(self):
        s = self.settings
        groups = [{"params": list(self.model.head.parameters()), "base_lr": s.lr, "lr": s.lr}]
        lr = s.lr if s.backbone_lr is None else s.backbone_lr
        if s.layer_decay == 1.0:
            backbone = [p for p in self.model.backbone.parameters() if p.requires_grad]
            if backbone:
                groups.append({"params": backbone, "base_lr": lr, "lr": lr})
            return groups
        depths = layer_depths(self.model.backbone)
        top = max(depths.values())
        by_depth: dict[int, list] = {}
        for name, p in self.model.backbone.named_parameters():
            if p.requires_grad:
                by_depth.setdefault(depths[name], []).append(p)
        for depth in sorted(by_depth):  # the stem first; an optimizer's groups keep this order in checkpoints
            rate = lr * s.layer_decay ** (top - depth)
            groups.append({"params": by_depth[depth], "base_lr": rate, "lr": rate})
        return groups

    def _save_checkpoint(self, optimizer, state: dict, best_state: dict | None,
                         average: WeightAverage | None = None) -> None:
        """Write a checkpoint: its tensors under new names, then the record (state.json) that names them, then
        remove the files no record names. A run stopped at any instant leaves a record whose files are whole
        and go with it; ``best_state`` None: the record keeps naming the best weights saved before."""
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        opt_tensors, opt_meta = _flatten_optimizer(optimizer)
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        if average is not None:
            tensors.update({f"ema.{k}": v for k, v in average.model.state_dict().items()})
        tensors.update(opt_tensors)
        tensors["rng.torch"] = torch.get_rng_state()
        serial = state["serial"] + 1
        files = {"state": f"state-{serial}.safetensors",
                 "best": state["files"]["best"] if best_state is None else f"best-{serial}.safetensors"}
        save_tensors_atomic(self.ckpt_dir / files["state"], tensors)
        if best_state is not None:
            save_tensors_atomic(self.ckpt_dir / files["best"], best_state)
        state.update(serial=serial, files=files)
        # the photos skipped so far: a run resumed part-way through an epoch does not read them again
        write_text_atomic(self.ckpt_dir / "state.json", json.dumps({**state, "optimizer": opt_meta,
                                                                     "fingerprint": self.settings.fingerprint(),
                                                                     "skipped": self.skipped}, indent=2))
        for old in self.ckpt_dir.glob("*.safetensors"):
            if old.name not in files.values():
                old.unlink(missing_ok=True)

    def _load_checkpoint(self, optimizer, average: WeightAverage | None = None) -> tuple[dict, dict | None] | None:
        meta_file = self.ckpt_dir / "state.json"
        if not meta_file.is_file():
            return None
        meta = json.loads(meta_file.read_text())
        if meta.get("fingerprint") != self.settings.fingerprint():
            raise TrainingError(f"{self.ckpt_dir} was written with other settings; use --overwrite")
        files = meta.get("files")
        if files is None:  # a record written before 2026-12-06 names no files: the one name each had then
            best = self.ckpt_dir / "best.safetensors"
            files = {"state": "state.safetensors", "best": best.name if best.is_file() else None}
            meta["files"] = files  # named in the next record, until replaced
        missing = [name for name in files.values() if name and not (self.ckpt_dir / name).is_file()]
        if missing:
            raise TrainingError(f"{self.ckpt_dir} is incomplete ({', '.join(missing)} missing); "
                                "use --overwrite to train again from the start")
        try:
            tensors = load_file(str(self.ckpt_dir / files["state"]))
            best = load_file(str(self.ckpt_dir / files["best"])) if files["best"] else None
        except SafetensorError as exc:  # a file cut short: safetensors' own traceback before
            raise TrainingError(f"{self.ckpt_dir}: a checkpoint is damaged ({' '.join(str(exc).split())}); use "
                                "--overwrite to train again from the start") from None
        self.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, strict=True)
        if average is not None:
            average.model.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")}, strict=True)
        _restore_optimizer(optimizer, tensors, meta["optimizer"])
        torch.set_rng_state(tensors["rng.torch"])
        self._note_skipped(meta.get("skipped") or {})  # none in a record written before 2026-12-07
        return meta, best

    @torch.no_grad()
    def _validate(self, loss_fn, model: nn.Module, masks: MaskCache | None = None) -> tuple[float, float]:
        """Loss and accuracy on the validation photos (``masks``: on their listing-style versions)."""
        model.eval()
        part = self.split("val")
        total, correct, n = 0.0, 0, 0
        for batch in self._loader(part, eval_transform(self.inference_preprocessing), pre=self.inference_preprocessing,
                                  masks=masks):
            self._note_errors(part, batch.errors)
            if not len(batch.index):
                continue
            logits = model(batch.x.contiguous(memory_format=torch.channels_last))
            total += float(loss_fn(logits, batch.y)) * len(batch.y)
            correct += int((logits.argmax(1) == batch.y).sum())
            n += len(batch.y)
        if n == 0:
            raise TrainingError("no readable validation images")
        return total / n, correct / n

    def _judge(self, loss_fn, model: nn.Module, masks: MaskCache) -> tuple[dict, str]:
        """Validation figures of ``model`` as fine-tuning selects on them (``selection_loss``: the mean of
        the studio and listing-style losses with ``select_on="studio+listing"``), and a line saying them."""
        vloss, vacc = self._validate(loss_fn, model)
        scores = {"val_loss": vloss, "val_accuracy": vacc}
        said = f"val loss {vloss:.4f}, val accuracy {vacc:.4f}"
        if self.settings.select_on == "studio+listing":
            lloss, lacc = self._validate(loss_fn, model, masks)
            scores.update(val_listing_loss=lloss, val_listing_accuracy=lacc, selection_loss=(vloss + lloss) / 2)
            said += f"; listing-style {lloss:.4f}, {lacc:.4f}; mean loss {scores['selection_loss']:.4f}"
        return scores, said

    def _save(self, model: nn.Module, folder: Path, **extra) -> Path:
        """``model`` as a model folder with this run's labels, preprocessing and default threshold."""
        return save_model(model.to(memory_format=torch.contiguous_format), folder, labels=self.labels,
                          preprocessing=self.inference_preprocessing,
                          threshold=0.5 if self.positive_label else None, positive_label=self.positive_label, **extra)

    def _save_epoch(self, judged: nn.Module, record: dict) -> Path:
        """``epochs/NN/``: the weights validation judged at the end of epoch NN (from 1), as a model folder."""
        return self._save(copy.deepcopy(judged).eval(), self.run_dir / "epochs" / f"{record['epoch'] + 1:02d}",
                          training={"settings": asdict(self.settings), "epoch": record},
                          data={"source": self.source, "manifest": "../../manifest.csv (the run's, with the split of every image)"})

    def _batch_loss(self, batch, loss_fn, step: int):
        """The loss of one fine-tuning batch, as a function of the model: its inputs, CutMix boxes and
        teachers' probabilities are fixed here, once, so a second evaluation (``sam``) sees the same batch."""
        s = self.settings
        mixing = _step_generator(s.run_seed, step) if s.cutmix else None
        if s.consistency:  # (the n studio views, the n listing-style ones): one forward pass
            x = torch.cat(batch.x).contiguous(memory_format=torch.channels_last)

            def loss_of(model):
                studio, listing = model(x).chunk(2)
                return ((loss_fn(studio, batch.y) + loss_fn(listing, batch.y)) / 2
                        + s.consistency * consistency_loss(studio, listing))
        elif mixing is not None and float(torch.rand((), generator=mixing)) < s.cutmix:
            mixed, perm, lam = cutmix(batch.x, mixing)
            x = mixed.contiguous(memory_format=torch.channels_last)

            def loss_of(model):
                out = model(x)
                return lam * loss_fn(out, batch.y) + (1.0 - lam) * loss_fn(out, batch.y[perm])
        else:
            x = batch.x.contiguous(memory_format=torch.channels_last)
            if self.teachers is None:
                def loss_of(model):
                    return loss_fn(model(x), batch.y)
            else:
                taught = self.teachers(x)

                def loss_of(model):
                    return distillation_loss(model(x), batch.y, taught, s.distill_weight, loss_fn)
        return loss_of

    def finetune(self) -> int:
        """Fine-tune the whole network; returns the global step it resumed from."""
        s = self.settings
        model = self.model
        model.set_backbone_trainable(True)
        train_part = self.split("train")
        weights = class_weights(self.targets(train_part), len(self.labels)) if s.class_weighting else None
        loss_fn = nn.CrossEntropyLoss(weight=weights, label_smoothing=s.label_smoothing)
        val_loss_fn = nn.CrossEntropyLoss(weight=weights)
        optimizer = torch.optim.AdamW(self._param_groups(), lr=s.lr, weight_decay=s.weight_decay)
        steps_per_epoch = math.ceil(len(train_part) / s.batch_size)
        total_steps = steps_per_epoch * s.epochs
        warmup = max(1, int(total_steps * s.warmup_fraction))

        # the head stage's summary and history ride in the checkpoint: a resumed run skips the head
        # stage, and its model's config.json still reports it
        state = {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "best_val_loss": math.inf, "best_epoch": -1,
                 "bad_epochs": 0, "history": self.history, "head": self.head_summary, "start": None,
                 "serial": 0, "files": {"state": None, "best": None}}
        best_state = None
        # the average starts from the head-stage weights, and replaces them when resuming
        average = WeightAverage(model, s.ema_decay) if s.ema_decay is not None else None
        # the foreground estimate of each photo is the same every epoch: computed once, kept with
        # the checkpoint (so a resumed run keeps it too, and it goes when training ends); for the
        # listing augmentation and for listing-style validation photos
        masks = MaskCache(self.ckpt_dir / "masks")
        loaded = self._load_checkpoint(optimizer, average)
        resumed_from = 0
        if loaded is not None:
            meta, best_state = loaded
            state.update({k: meta[k] for k in state if k in meta})
            self.history = state["history"]  # the head stage's records and the epochs done (one list, as in state)
            self.head_summary = state["head"]
            resumed_from = state["global_step"]
            # said when it happens, not only in the summary hours later: a re-run that resumes is not a new run
            tqdm.write(f"resuming fine-tuning from its checkpoint: epoch {state['epoch'] + 1}/{s.epochs}, "
                       f"step {resumed_from} of {total_steps}", file=sys.stderr)
        else:
            if s.architecture != "smallcnn" and s.validated:
                # the head stage is the model to beat: a fine-tune that validates worse at every epoch keeps
                # it (BENCHMARKS.md, "Fine-tuning that never beats its start")
                start, said = self._judge(val_loss_fn, model, masks)
                state.update(start=start, best_val_loss=_selection_loss(start))
                best_state = {k: v.clone() for k, v in model.state_dict().items()}
                tqdm.write(f"head stage, where fine-tuning starts: {said}", file=sys.stderr)
            # the head stage is part of this state: save it before the first step
            self._save_checkpoint(optimizer, state, best_state, average)

        if s.consistency:
            transform = paired_views(self.preprocessing, s.listing_all, s.crop_scale, masks, s.detail_loss)
        else:
            transform = train_transform(self.preprocessing, s.augment, s.listing_all, s.crop_scale, masks,
                                        listing_p=s.listing_p, detail_loss=s.detail_loss)
        bar = tqdm(total=total_steps, initial=state["global_step"], desc="fine-tune", unit="step",
                   disable=not self.progress)
        stop = state["bad_epochs"] >= s.patience
        while state["epoch"] < s.epochs and not stop:
            epoch = state["epoch"]
            model.train()
            if s.freeze_bn:
                freeze_batchnorm_statistics(model.backbone)
            # The order of an epoch and each photo's augmentation draws are functions of (seed, epoch):
            # a resumed epoch skips exactly the batches it had already done and draws as the
            # uninterrupted one would have, with any number of workers.
            epoch_seed = s.run_seed * 1000 + epoch
            loader = self._loader(train_part, transform, shuffle_seed=epoch_seed, skip_batches=state["step_in_epoch"],
                                  draw_seed=epoch_seed)
            t0 = time.time()
            losses = []  # of the steps this process runs (a resumed epoch: those after the checkpoint)
            for b, batch in enumerate(loader, start=state["step_in_epoch"]):
                self._note_errors(train_part, batch.errors)
                if len(batch.index) >= 2:
                    _set_lr(optimizer, _lr_factor(state["global_step"], total_steps, warmup))
                    loss_of = self._batch_loss(batch, loss_fn, state["global_step"])
                    loss = loss_of(model)
                    if not torch.isfinite(loss):
                        raise TrainingError(f"loss became {float(loss)} at step {state['global_step']}; "
                                            "lower --lr")
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    if s.sam:
                        sharpness_aware_gradients(model, optimizer, loss_of, s.sam)
                    optimizer.step()
                    if average is not None:
                        average.update(model)
                    losses.append(loss.item())
                    bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)  # drawn by the update below
                state["step_in_epoch"] = b + 1
                state["global_step"] += 1
                bar.update(1)
                if s.checkpoint_every and state["global_step"] % s.checkpoint_every == 0:
                    self._save_checkpoint(optimizer, state, None, average)
            judged = model if average is None else average.model  # the weights the model would keep
            train_loss = float(np.mean(losses)) if losses else None
            if s.validated:
                scores, said = self._judge(val_loss_fn, judged, masks)
            else:
                scores = {}
                said = ("no validation split, the last epoch is kept" if train_loss is None else
                        f"training loss {train_loss:.4f} (no validation split: the last epoch is kept)")
            record = {"stage": "finetune", "epoch": epoch, "train_loss": train_loss, **scores,
                      "seconds": round(time.time() - t0, 1)}
            self.history.append(record)  # state["history"] is the same list
            bar.write(f"epoch {epoch + 1}/{s.epochs}: {said}", file=sys.stderr)
            if s.keep_epochs:  # before the checkpoint that moves past this epoch: a resumed run never lacks it
                self._save_epoch(judged, record)
            if not s.validated:  # a fixed schedule: the weights of the last epoch
                state["best_epoch"] = epoch
            elif (chosen_by := _selection_loss(record)) < state["best_val_loss"] - 1e-4:
                state.update(best_val_loss=chosen_by, best_epoch=epoch, bad_epochs=0)
                best_state = {k: v.clone() for k, v in judged.state_dict().items()}
            else:
                state["bad_epochs"] += 1
                stop = state["bad_epochs"] >= s.patience
            state.update(epoch=epoch + 1, step_in_epoch=0)
            self._save_checkpoint(optimizer, state, best_state, average)
        bar.close()
        if best_state is not None:
            model.load_state_dict(best_state)
        elif average is not None:
            model.load_state_dict(average.model.state_dict())
        self.finetune_summary = {"best_epoch": state["best_epoch"],
                                 "best_val_loss": state["best_val_loss"] if s.validated else None,
                                 "selected_on": s.select_on if s.validated else "the last epoch (no validation split)",
                                 "epochs_run": state["epoch"], "stopped_early": stop}
        if state["start"] is not None:  # best_epoch -1: no fine-tuning epoch validated better than the head stage
            self.finetune_summary["start"] = state["start"]
        if self.teachers is not None:  # which weights taught it (SHA-256 of each teacher's model.safetensors)
            self.finetune_summary["teachers"] = self.teachers.digests
        return resumed_from

    # whole run ----------------------------------------------------------------------------
    def run(self, source: str | Path | None) -> TrainResult:
        s = self.settings
        seed_everything(s.seed)
        self.prepare_data(source)
        model = self.build_model()
        # The head starts from the split seed's draw in every run of a soup: fine-tunes from one start stay in
        # one basin, and the mean of their weights is a model (two heads drawn apart would mean their hidden
        # units in any order). The batches, augmentation draws and dropout follow the training seed.
        if s.run_seed != s.seed:
            seed_everything(s.run_seed)
        # loaded (and checked against the data) before hours of training, not after the head stage
        self.teachers = Teachers(s.teacher, self.labels, self.preprocessing) if s.teacher else None
        resuming = (self.ckpt_dir / "state.json").is_file()
        resumed_from = 0
        summary: dict = {}
        if s.architecture == "smallcnn":
            resumed_from = self.finetune()  # trained from scratch: there is no pretrained head stage
            summary["finetune"] = self.finetune_summary
        else:
            model.set_backbone_trainable(False)
            if not (s.mode == "finetune" and resuming):
                self.head_summary = self.train_head()
            if s.mode == "finetune" and s.epochs > 0:
                resumed_from = self.finetune()
                summary["finetune"] = self.finetune_summary
            if self.head_summary is not None:  # None: resumed from a checkpoint older than this record
                summary = {"head": self.head_summary, **summary}
        self.model.eval()
        self._save(
            self.model,
            self.model_dir,
            training={"settings": asdict(s), "summary": summary, "history": self.history},
            data={
                "source": self.source,
                "n_images": int(len(self.df)),
                "splits": {k: label_counts(self.split(k)) for k in ("train", "val", "test")},
                "skipped_unreadable": self.skipped,
                "manifest": "manifest.csv (beside the model folder, with the split of every image)",
            },
        )
        if self.ckpt_dir.exists():
            shutil.rmtree(self.ckpt_dir)
        return TrainResult(self.run_dir, self.model_dir, self.history, resumed_from)


def _has_test(run_dir: Path) -> bool:
    """Whether the run's saved split holds test photos to evaluate on."""
    split = pd.read_csv(run_dir / "manifest.csv", dtype=str, keep_default_na=False, usecols=["split"])["split"]
    return bool((split == "test").any())


def _trained(run_dir: Path) -> bool:
    """Whether the run's training ended: its model saved, no checkpoint left to resume from."""
    return (run_dir / "model" / "config.json").is_file() and not (run_dir / "checkpoint").exists()


def _finished(run_dir: Path) -> bool:
    """Whether the run is done: trained, and evaluated unless it has no test photos."""
    from .models.artifact import read_config

    return _trained(run_dir) and ("metrics" in read_config(run_dir / "model") or not _has_test(run_dir))


def train(source: str | Path | None, run_dir: str | Path, settings: TrainSettings | None = None, *,
          overwrite: bool = False, progress: bool = True) -> TrainResult:
    """Train a model on ``source`` (manifest or folder) into ``run_dir``, fit its temperature
    on the validation split (``settings.calibrate``), choose the threshold there
    (``settings.target_recall`` / ``target_precision``, else 0.5) and evaluate on the test split (``result.evaluation``
    stays empty when the split has no test photos: ``test_fraction`` 0).

    Resumes an interrupted run in ``run_dir`` when its settings match. A run
    that already finished is refused unless ``overwrite``.
    """
    settings = settings or TrainSettings()
    run_dir = Path(run_dir)
    _check_teachers(settings.teacher)
    settings.validate()  # the settings' own rules first: an input size over 4,096 px is said as such
    _check_memory(settings)
    _check_run_folder(run_dir)  # before the lock: a refused folder is left without one
    with exclusive(run_dir, "train"):  # `make ivory` started twice: the second stops here
        if overwrite:
            _check_source(source)
            _clear_run_folder(run_dir)
        if _finished(run_dir):
            raise TrainingError(f"{run_dir} already holds a trained model; use --overwrite or another --out")
        if _trained(run_dir):  # trained, but stopped before its evaluation finished: evaluate only
            result = TrainResult(run_dir, run_dir / "model")
        else:
            result = Trainer(run_dir, settings, progress=progress).run(source)
            if not _has_test(run_dir):  # (the branch above only gets here with test photos)
                return result
        result.evaluation = _evaluate_run(run_dir, result.model_dir, settings, progress)
        return result


# What marks a folder as a run's: its run.json (a run writes it first), a trained model, a soup's first run
RUN_MARKERS = ("run.json", "model/config.json", "ingredients/0")


def _check_run_folder(run_dir: Path) -> None:
    """Refuse a folder that holds anything but no run, before anything there is touched: a run writes its
    manifest.csv, run.json, features/ and model/ into its folder, and --overwrite empties it (an --out
    mistyped as the data's folder, a home folder or a folder of runs lost their files)."""
    if not run_dir.is_dir():
        return
    others = entries(run_dir)
    if others and not any((run_dir / marker).exists() for marker in RUN_MARKERS):
        raise TrainingError(f"{run_dir} holds {first_names(others)} but no artsentry run: a run writes manifest.csv, "
                            "model/ and more into its folder, and --overwrite empties it; choose a new or empty --out")


#: what a training process holds besides its steps (the model, its optimizer state, the data, decoding workers)
TRAIN_RESERVE_MIB = 2048


def _check_memory(s: TrainSettings, available: float | None = None) -> None:
    """Refuse fine-tuning whose steps would not fit in the memory free now (``available`` MiB, default: this
    machine's), before anything is read or written: at 768 px, 32 photos a step take ~30 GiB, and the kernel
    would kill the process at its first step, after the head stage's minutes, saying nothing of why."""
    if not (s.architecture == "smallcnn" or (s.mode == "finetune" and s.epochs > 0)):
        return  # a frozen backbone: features are made in inference's bounded batches
    from .memory import available_mib

    size = s.image_size or default_preprocessing(s.architecture).input_size
    views = 2 if s.consistency else 1  # a studio and a listing-style view of each photo in one step
    per_photo = training_step_mib(s.architecture, views, size)
    need = per_photo * s.batch_size
    free = available_mib() if available is None else available
    if free is None or need + TRAIN_RESERVE_MIB <= free:
        return
    fits = int((free - TRAIN_RESERVE_MIB) // per_photo)
    then = f"--batch-size {fits} would fit" if fits > 0 else "not one photo a step fits: a smaller --image-size"
    raise TrainingError(f"fine-tuning {s.architecture} at {size} px, {s.batch_size} photo(s) a step"
                        f"{' (two views each)' if views == 2 else ''}, takes about {need / 1024:.1f} GiB; this machine "
                        f"has {free / 1024:.1f} GiB free: {then} (or free memory)")


def _check_teachers(folders) -> None:
    """Each --teacher a model folder with a readable config, said before the run folder is made: a mistyped
    teacher used to fail after the data was split into it, and the corrected command was then refused as 'a
    run with other settings' (the teacher is one of them). Its labels are checked against the data's with the
    split (``Trainer._check_split``), still before the run folder; its weights when it loads."""
    from .models.artifact import ArtifactError, read_config, resolve_model_dir

    for folder in folders or ():
        try:
            read_config(resolve_model_dir(folder))
        except ArtifactError as exc:
            raise TrainingError(f"teacher {exc}") from None


def _check_source(source: str | Path | None) -> None:
    """--overwrite deletes a run only once the data to train it again is there (a mistyped path or a
    forgotten argument used to cost the run, and then the command failed)."""
    if source is None:
        raise TrainingError("--overwrite trains again from the start: give the data to train on; nothing was deleted")
    if not Path(source).exists():
        raise TrainingError(f"{source}: no such file or folder; nothing was deleted")


def _clear_run_folder(run_dir: Path) -> None:
    """``--overwrite``: everything in the run folder but its lock, held by this run."""
    for entry in run_dir.iterdir():
        if entry.name == LOCK_NAME:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _saved_fingerprint(config: dict) -> str | None:
    """The fingerprint of the settings a trained model's config.json records (None: none recorded)."""
    saved = (config.get("training") or {}).get("settings")
    if saved is None:
        return None
    names = {f.name for f in fields(TrainSettings)}
    return TrainSettings(**{k: v for k, v in saved.items() if k in names}).fingerprint()


def _evaluate_run(run_dir: Path, model_dir: Path, settings: TrainSettings, progress: bool) -> dict:
    """Fit the model's temperature and threshold on the run's validation photos, evaluate it on its test
    photos, and write the run's report (``evaluate.run_evaluation``)."""
    from .evaluate import run_evaluation
    from .models.artifact import read_config

    # calibrated once: an evaluation resumed after the temperature was saved does not fit it again
    calibrate = settings.calibrate and settings.validated and "calibration" not in read_config(model_dir)
    return run_evaluation(model_dir, run_dir / "manifest.csv", split="test", out_dir=run_dir,
                          target_recall=settings.target_recall, target_precision=settings.target_precision,
                          save_threshold=True, progress=progress, calibrate=calibrate)


def train_soup(source: str | Path | None, run_dir: str | Path, settings: TrainSettings | None = None, n: int = 2, *,
               overwrite: bool = False, progress: bool = True) -> TrainResult:
    """Train ``n`` runs of one recipe on one split, differing only in their training seed (the first keeps
    ``settings``' own, run k adds k), into ``run_dir/ingredients/K``, then their soup (``models.soup``) into
    ``run_dir/model``: calibrated, thresholded and evaluated on the test split as ``train`` does one model.

    Each run is a complete ``train`` run (resumed when interrupted, skipped when finished), so a stopped
    soup starts again where it stopped. The runs must end on the same split: a soup is judged on photos
    none of its runs trained on.
    """
    settings = settings or TrainSettings()
    if n < 2:
        raise TrainingError(f"a soup needs at least 2 runs, not {n}")
    if settings.architecture == "smallcnn":
        raise TrainingError("smallcnn trains from scratch: runs of it share no start, and the mean of their "
                            "weights is no model")
    run_dir = Path(run_dir)
    _check_run_folder(run_dir)
    with exclusive(run_dir, "train"):  # the soup's folder too, not only each ingredient's
        if overwrite:
            _check_source(source)
            _clear_run_folder(run_dir)
        return _train_soup(source, run_dir, settings, n, progress)


def _train_soup(source, run_dir: Path, settings: TrainSettings, n: int, progress: bool) -> TrainResult:
    from .models.artifact import read_config
    from .models.soup import make_soup

    model_dir = run_dir / "model"
    if (model_dir / "config.json").is_file() and "metrics" in read_config(model_dir):
        raise TrainingError(f"{run_dir} already holds a trained model; use --overwrite or another --out")
    folders, split = [], None
    seeds = [settings.run_seed + k for k in range(n)]
    for k in range(n):
        part = run_dir / "ingredients" / str(k)
        wanted = replace(settings, train_seed=settings.train_seed if k == 0 else seeds[k])
        if not _finished(part):
            train(source, part, wanted, progress=progress)  # (an unfinished run refuses other settings itself)
        elif _saved_fingerprint(read_config(part / "model")) != wanted.fingerprint():
            raise TrainingError(f"{part} was trained with other settings than these; a soup of runs of different "
                                "recipes is not what was asked: use the settings it was trained with, --overwrite, "
                                "or another --out")
        rows = pd.read_csv(part / "manifest.csv", dtype=str, keep_default_na=False)
        if split is None:
            split = rows
        elif not rows[["path", "split"]].equals(split[["path", "split"]]):
            raise TrainingError(f"{part} was trained on another split than {folders[0].parent} (did the data "
                                "change between the runs?); a soup of them could not be judged on held-out photos")
        folders.append(part / "model")
    write_text_atomic(run_dir / "manifest.csv", (folders[0].parent / "manifest.csv").read_text())
    if not (model_dir / "config.json").is_file():
        _, notes = make_soup(folders, model_dir, training={"settings": asdict(settings), "soup_train_seeds": seeds})
        for note in notes:  # the runs share the recipe and the split: anything here is a surprise worth saying
            log.warning(note)
    result = TrainResult(run_dir, model_dir)
    if _has_test(run_dir):
        result.evaluation = _evaluate_run(run_dir, model_dir, settings, progress)
    return result
