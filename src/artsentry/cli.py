"""The ``artsentry`` command.

    artsentry train DATA --out RUN        train, pick the threshold on val, evaluate on test, report
    artsentry evaluate RUN_OR_MODEL       metrics.json + report.html (+ --target-recall / --target-precision)
    artsentry predict IMAGE_OR_FOLDER...  label, probability and decision for each image
    artsentry train-embedder DATA --out D  retrieval embedding for registers (metric learning on re-shots)

Exit status: 0 success; 1 a usage or data error (one line on stderr); 3 the command finished
but some images could not be read (``predict``, ``screen``, ``explain``, ``register add``,
``search`` and ``calibrate``; each listed on stderr).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import logging
import math
import os
import re
import shlex
import shutil
import signal
import socket
import sqlite3
import sys
import threading
from pathlib import Path

from . import __version__

EXIT_ERROR = 1
EXIT_SOME_UNREADABLE = 3
EXIT_BROKEN_PIPE = 141  # as a process ended by SIGPIPE: the output's reader stopped reading (`| head`)
#: where `make ivory` (the README's main job) puts its model; every command's default
DEFAULT_MODEL = "runs/ivory/model"


def _number(text: str, kind=float):
    """``text`` as a number of ``kind``; otherwise argparse's message would name the checking function
    ("invalid _count value: 'abc'")."""
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {'a whole number' if kind is int else 'a number'}") from None


def _fraction(text: str) -> float:
    value = _number(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text} is not in (0, 1]")
    return value


def _count(text: str) -> int:
    value = _number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a count of 1 or more")
    return value


def _zero_or_more(text: str) -> int:
    value = _number(text, int)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is not a count of 0 or more")
    return value


def _seconds(text: str) -> float:
    value = _number(text)
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"{text} is not a number of seconds, 0 or more")
    return value


def _above_zero(text: str) -> float:
    value = _number(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text} is not a number above 0")
    return value


def _seed(text: str) -> int:
    """A random seed: numpy's and scikit-learn's generators take 0 to 2**32 - 1 (their own messages, 'expected
    non-negative integer', named no option)."""
    value = _number(text, int)
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"{text} is not a seed (a whole number from 0 to {2**32 - 1})")
    return value


def _positive_seconds(text: str) -> float:
    value = _seconds(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"{text} is not a number of seconds above 0")
    return value


#: a register's match scores: a cosine similarity, less half the mean of the next objects' (contrast)
MATCH_SCORE_RANGE = (-1.5, 1.5)


def _match_threshold(text: str) -> float:
    """A register threshold on its match scores; 5 for 0.5, or 50 for 50%, would turn every search
    into 'no match', without a word."""
    value = _number(text)
    low, high = MATCH_SCORE_RANGE
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"{text} is outside the range of match scores, {low} to {high} "
                                         "(a cosine similarity, less half the next objects' mean)")
    return value


def _port(text: str) -> int:
    value = _number(text, int)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text} is not a port (0 to 65535)")
    return value


def _add_threshold_args(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--target-recall", type=_fraction, metavar="R",
                   help="choose the threshold on the validation split for at least this recall")
    g.add_argument("--target-precision", type=_fraction, metavar="P",
                   help="choose the threshold on the validation split for at least this precision")


def build_parser() -> argparse.ArgumentParser:
    from .choices import ARCHITECTURES, POOLINGS, RESIZE_MODES

    parser = argparse.ArgumentParser(
        prog="artsentry", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Image recognition against the illicit trade in cultural objects and wildlife\n"
                    "products: train and evaluate classifiers, register known objects, screen listing\n"
                    "photos, serve a web page. 'artsentry COMMAND --help' tells more.",
        epilog="exit status: 0 success; 1 a usage or data error (one line on stderr); 3 the command\n"
               "finished but some images could not be read (predict, screen, explain, register add,\n"
               "import, search and calibrate, each listed on stderr; evaluate, counted and listed in\n"
               "predictions.csv); verify: 1 when a screened photo changed or is missing (--refetch: or gone, or\n"
               "a placeholder)")
    parser.add_argument("--version", action="version", version=f"artsentry {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser("train", help="train a classifier on a labelled folder or manifest",
                       description="Train, choose the threshold on the validation split, evaluate on the test "
                                   "split, and write RUN/model (the artifact), RUN/metrics.json and "
                                   "RUN/report.html. Run the same command again to resume an interrupted run.")
    t.add_argument("data", help="labelled folder (<label>/<images>) or manifest CSV/Parquet/XLSX")
    t.add_argument("--out", required=True, help="run folder")
    t.add_argument("--arch", default="efficientnet_lite0", choices=ARCHITECTURES)
    t.add_argument("--pooling", default="avg", choices=POOLINGS,
                   help="EfficientNet features: avg = global average of the last stage (default); texture = "
                        "second-order pooling of a mid-level stage, a texture descriptor; texture+avg = both, "
                        "side by side (see README)")
    t.add_argument("--mode", default="finetune", choices=("finetune", "frozen"),
                   help="finetune: train the whole network (slow, best); frozen: train only the head on cached "
                        "features (fast)")
    t.add_argument("--epochs", type=int, default=None, help="fine-tuning epochs (default 8; smallcnn 30)")
    t.add_argument("--head-epochs", type=int, default=60,
                   help="epochs of the head stage on cached features (the best by validation loss is kept; "
                        "with --val-fraction 0, all of them: give the number a validated run kept)")
    t.add_argument("--head-views", type=int, default=0, metavar="K",
                   help="the head stage also learns from cached features of K views of every training photo "
                        "drawn with --augment (the only way --mode frozen sees augmented, e.g. listing-style, "
                        "photos; K extra feature passes over the training split; default 0)")
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--lr", type=float, default=None, help="peak learning rate of the head (default 1e-3)")
    t.add_argument("--backbone-lr", type=float, default=None,
                   help="peak learning rate of the pretrained backbone when fine-tuning (default: --lr)")
    t.add_argument("--patience", type=int, default=None,
                   help="fine-tuning epochs without a better validation loss before stopping "
                        "(default: 3, or half of --epochs when that is more; smallcnn 6)")
    t.add_argument("--augment", default="standard", choices=("standard", "listing", "none"),
                   help="training augmentation; 'listing' adds listing-style re-photographing (see README)")
    t.add_argument("--image-size", type=int, default=None, help="input size (default: the architecture's own)")
    t.add_argument("--inference-size", type=int, default=None, metavar="PX",
                   help="input size the trained model runs at (default: --image-size, or the size matched "
                   "to --crop-scale). A fine-tuned "
                   "EfficientNet often reads larger inputs better, since random crops enlarge objects in "
                   "training: measure with 'evaluate --input-size' (BENCHMARKS.md)")
    t.add_argument("--ema-decay", type=float, default=None, metavar="D",
                   help="fine-tune with an exponential moving average of the weights (e.g. 0.995: about the "
                        "last 200 steps); validation, early stopping and the saved model use the average")
    t.add_argument("--drop-path", type=float, default=0.0, metavar="RATE",
                   help="stochastic depth while fine-tuning an EfficientNet: each residual block is skipped "
                        "with a probability rising to RATE at the last block (e.g. 0.2; default 0: off)")
    t.add_argument("--freeze-bn", action="store_true",
                   help="fine-tune with the backbone's BatchNorm statistics fixed at the pretrained ones (the "
                        "head stage's features stay what they were; scale and shift still train)")
    t.add_argument("--select-on", default="studio", choices=("studio", "studio+listing"),
                   help="what the validation loss that keeps the best fine-tuning epoch and stops early is "
                        "measured on: the studio validation photos (default), or the mean of that and the loss on "
                        "listing-style versions of them, made as 'evaluate --shift' makes them (~46 s more per "
                        "epoch for 283 photos on 2 cores)")
    t.add_argument("--keep-epochs", action="store_true",
                   help="also save each fine-tuning epoch's weights as a model folder, RUN/epochs/01, 02, ... "
                        "(evaluate one with 'artsentry evaluate RUN/epochs/03 --data RUN/manifest.csv')")
    t.add_argument("--listing-all", type=float, default=0.0, metavar="F",
                   help="with --augment listing: the fraction of re-photographed training photos that get "
                        "every listing family at once, as 'evaluate --shift' makes them (default 0: each "
                        "family drawn on its own)")
    t.add_argument("--listing-p", type=float, default=None, metavar="P",
                   help="with --augment listing: the share of training photos re-photographed listing-style "
                        "(default 0.6; the rest get only the standard augmentation)")
    t.add_argument("--detail-loss", type=float, default=0.0, metavar="P",
                   help="the share of training photos that then lose fine detail, beyond the listing "
                        "generator's mild blur: one of a Gaussian blur (sigma 1-3.5 px at 600 px), a shrink to "
                        "200-400 px and back, or colour noise (sigma 6-16 levels) (default 0: off; see README)")
    t.add_argument("--resize", default=None, choices=RESIZE_MODES,
                   help="how a photo becomes the model's square input at validation, test and use: 'fit' (the "
                        "EfficientNets' default) cuts a photo wider than 4:3 or taller than 3:4 to that at its "
                        "centre, then squashes it, so no object is squeezed further than the training crops ever "
                        "squeezed one; 'squash' the whole photo (the small CNN's default, as the published study); "
                        "'pad' with white; 'center_crop' the centre square")
    t.add_argument("--crop-scale", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                   help="share of the photo's area the random resized crop of training keeps (default 0.5 1.0). "
                        "Smaller crops show the surface at a higher resolution for the same training cost; the "
                        "model then runs at the input size that shows objects as large as the crops did (e.g. "
                        "0.2 0.8 at 320 px -> 480 px) unless --inference-size says otherwise")
    t.add_argument("--teacher", nargs="+", action="extend", default=[], metavar="MODEL",
                   help="distil these trained classifiers (model or run folders, same labels) into the model "
                        "while fine-tuning: the loss also follows their mean probabilities on each augmented batch")
    t.add_argument("--distill-weight", type=float, default=None, metavar="W",
                   help="with --teacher: the share of the loss that follows the teachers (default 0.5; the rest "
                        "follows the labels)")
    t.add_argument("--consistency", type=float, default=0.0, metavar="W",
                   help="with --augment listing: fine-tune on each photo twice per step, as it is (standard "
                        "augmentation) and re-photographed listing-style, and add W x the Jensen-Shannon divergence "
                        "between the two views' probabilities to the loss (AugMix's consistency term; its paper "
                        "uses 12). A step costs ~2x the time and memory (15 GB peak for lite0 at 320 px, batch 32): halve --epochs "
                        "for the same time, lower --batch-size if memory is short (default 0: off)")
    t.add_argument("--cutmix", type=float, default=0.0, metavar="P",
                   help="the share of fine-tuning batches mixed by CutMix: a random box of each photo is replaced "
                        "by the same box of another photo of the batch, and the loss follows both labels in "
                        "proportion to their areas (default 0: off)")
    t.add_argument("--sam", type=float, default=0.0, metavar="RHO",
                   help="sharpness-aware fine-tuning: each step follows the gradient at the steepest point within "
                        "RHO of the weights (e.g. 0.05); twice the forward and backward passes per step "
                        "(default 0: off)")
    t.add_argument("--layer-decay", type=float, default=1.0, metavar="D",
                   help="layer-wise learning rates while fine-tuning an EfficientNet: its last convolution runs at "
                        "the backbone's rate, each stage below at D times the rate of the one above, the stem "
                        "lowest (e.g. 0.75: Lite0's stem at 0.1x); 1 (default): one rate for the whole backbone")
    t.add_argument("--val-fraction", type=float, default=0.1,
                   help="share of the objects held out for validation, which keeps the best epoch, stops early and "
                        "sets a --target-recall/--target-precision threshold (default 0.1). 0: no validation, a fixed "
                        "schedule (all --head-epochs and --epochs, the last kept) on every photo not in test, e.g. to "
                        "train the final model on more photos with the epochs a validated run kept; a manifest's own "
                        "val rows are then trained on")
    t.add_argument("--test-fraction", type=float, default=0.2,
                   help="share of the objects held out for the test evaluation (default 0.2; 0: none, not evaluated)")
    t.add_argument("--seed", type=_seed, default=0,
                   help="seed of the split, and of training's randomness unless --train-seed is given (default 0)")
    t.add_argument("--train-seed", type=_seed, default=None, metavar="N",
                   help="seed of the order of the batches, the augmentation draws and dropout, leaving the split "
                        "and the head's starting weights to --seed: runs that differ only in it start alike and "
                        "train apart, the ingredients of a soup (--soup, `artsentry soup`; default: --seed)")
    t.add_argument("--soup", type=int, default=1, metavar="N",
                   help="train N runs that differ only in --train-seed (the given one, then +1, ...) into "
                        "RUN/ingredients/ and keep the mean of their weights as RUN/model, evaluated like one "
                        "model: N times the training time, one model's prediction time (default 1: one run)")
    t.add_argument("--positive-label", help="the class a binary model flags (default: 'ivory', or the label "
                                            "that is not named non_/not_...)")
    t.add_argument("--no-class-weights", action="store_true", help="unweighted loss")
    t.add_argument("--no-calibrate", action="store_true",
                   help="keep the network's raw probabilities (default: a temperature fitted on the validation "
                   "photos after training makes them calibrated; decisions do not change)")
    t.add_argument("--workers", type=_zero_or_more, default=None, help="image decoding worker processes")
    t.add_argument("--checkpoint-every", type=int, default=20, metavar="STEPS",
                   help="save a resumable checkpoint every STEPS fine-tuning steps (and at every epoch end)")
    t.add_argument("--overwrite", action="store_true",
                   help="empty RUN (a run's folder) and train again from the start, instead of resuming")
    t.add_argument("--no-export", action="store_true", help="do not export model.onnx after training (the export "
                   "makes predict and screen run on ONNX Runtime, 2.3x faster screening on 2 CPU cores)")
    _add_threshold_args(t)

    te = sub.add_parser("train-embedder", help="train a retrieval embedding for registers (metric learning)",
                        description="Train an embedding that finds an object again in listing-style photos: "
                        "the backbone stays frozen, a pooling + projection head is trained with a supervised "
                        "contrastive loss on re-photographed views of each photo (clutter background, rotation, "
                        "crop, light, blur, text, JPEG). Writes OUT/model (model.safetensors + config.json + the "
                        "lists of trained, validation and held-out objects); use it with "
                        "'artsentry register create REG --embedder OUT/model'.")
    te.add_argument("data", help="labelled folder or manifest (object ids group the photos of one object)")
    te.add_argument("--out", required=True, help="output folder (OUT/cache keeps the view features for re-runs)")
    te.add_argument("--views", type=int, default=6, help="listing-style re-shots per photo (default 6)")
    te.add_argument("--dim", type=int, default=256, help="embedding size (default 256)")
    te.add_argument("--pooling", default="attention+gem", choices=("attention+gem", "attention", "gem", "mean"))
    te.add_argument("--backbone", default="efficientnet_lite0",
                    choices=[a for a in ARCHITECTURES if a.startswith("efficientnet_")])
    te.add_argument("--image-size", type=int, default=224)
    te.add_argument("--resize", choices=RESIZE_MODES, default="fit",
                    help="how a photo becomes the square input, in training and in every register using the "
                         "embedder (default fit: a photo wider than 4:3 or taller than 3:4 cut to that at its "
                         "centre, then squashed; see train --resize)")
    te.add_argument("--trained-stages", type=int, default=0,
                    help="also train the backbone's last N stages (lite0 has 7; default 0: the head only, fastest)")
    te.add_argument("--backbone-lr", type=float, default=1e-4, help="learning rate of the trained stages")
    te.add_argument("--epochs", type=int, default=60)
    te.add_argument("--patience", type=int, default=10, help="epochs without a better validation top-1 before stopping")
    te.add_argument("--holdout", type=float, default=0.5,
                    help="share of objects never trained on, listed in holdout_objects.txt (default 0.5; 0 for none)")
    te.add_argument("--val-fraction", type=float, default=0.1, help="share of objects for early stopping")
    te.add_argument("--seed", type=_seed, default=0)
    te.add_argument("--workers", type=_zero_or_more, default=2, help="processes making the re-shots")
    te.add_argument("--overwrite", action="store_true",
                    help="replace an embedder at OUT/model trained with other settings or data (registers made with "
                    "it then refuse it); the same settings and data train again without it")

    e = sub.add_parser("evaluate", help="evaluate a model: metrics.json, predictions.csv, report.html",
                       description="Evaluate a model on data. With a run folder and no --data, uses the run's "
                                   "own manifest and its test split.")
    e.add_argument("model", nargs="?", help="run folder or model folder")
    e.add_argument("--model", dest="model_option", metavar="MODEL",
                   help="the same, named as predict, screen and project take it")
    e.add_argument("--data", help="labelled folder or manifest (default: the run's manifest.csv)")
    e.add_argument("--split", default="test", help="rows of this split when the manifest has one; 'all' for every row")
    e.add_argument("--out", help="folder for the outputs (default: the run folder; for a model folder outside a "
                   "run, that folder)")
    e.add_argument("--shift", action="store_true",
                   help="also evaluate on listing-style versions of the same photos (clutter background, geometry, "
                   "lighting, blur/noise, text overlays, JPEG; each family alone too) and on their background "
                   "only, and report the drop")
    e.add_argument("--shift-seed", type=_seed, default=0, help="seed of the listing-style versions (default 0)")
    e.add_argument("--no-explain", action="store_true",
                   help="leave the Grad-CAM overlays and the feature map out of the report (faster)")
    e.add_argument("--save-threshold", action="store_true",
                   help="store the chosen threshold and the metrics in the model's config.json")
    e.add_argument("--calibrate", action="store_true",
                   help="fit the model's temperature on the validation split (temperature scaling: the same "
                   "decisions, probabilities that mean what they say) and store it, with the threshold moved to "
                   "flag the same photos, in its config.json")
    e.add_argument("--ensemble", nargs="+", action="extend", metavar="MODEL", default=[],
                   help="more run or model folders (same labels): evaluate the mean of all their probabilities")
    e.add_argument("--input-size", type=int, metavar="PX",
                   help="measure the network at this input size instead of its config's (EfficientNets; "
                   "runs in PyTorch): a network trained on random crops often reads larger inputs better")
    e.add_argument("--lots", type=int, metavar="N",
                   help="also measure photos of several objects: N lot photos (four objects each) composed from the "
                   "validation photos choose the tile scan's threshold, N from the test photos measure it against "
                   "whole-photo decisions; the lot threshold and figures go into config.json under 'lots' (read "
                   "only by the --lots modes of predict, screen and the server: no other decision changes)")
    _add_threshold_args(e)

    c = sub.add_parser("collect", help="collect museum data (The Met Collection API)",
                       description="Crawl The Met Collection API into a collection folder: records, images, "
                                   "collection.csv and failures.csv. Run the same command again to resume.")
    c.add_argument("--out", required=True, help="collection folder")
    sel = c.add_mutually_exclusive_group(required=True)
    sel.add_argument("--search", metavar="Q", help="search query ('*' for any)")
    sel.add_argument("--ids", help="comma-separated object ids")
    sel.add_argument("--all", action="store_true", help="every object id (GET /objects)")
    sel.add_argument("--metobjects", metavar="CSV", help="the museum's bulk MetObjects.csv: import its public-domain "
                                                         "records, then fetch their API records and images")
    c.add_argument("--recipe", choices=("ivory", "culture"),
                   help="with --metobjects: import only the rows this recipe can label")
    c.add_argument("--offline", action="store_true", help="with --metobjects: import the metadata only, no requests")
    c.add_argument("--medium", help="search filter, e.g. 'Ivory|Ceramics'")
    c.add_argument("--has-images", action="store_true", help="search filter: only objects with images")
    c.add_argument("--department-id", type=int, help="search filter")
    c.add_argument("--culture", action="store_true", help="search Q in artist or culture fields (artistOrCulture)")
    c.add_argument("--limit", type=_count, help="only the first N ids (sorted)")
    c.add_argument("--images", default="primary", choices=("none", "primary", "all"),
                   help="which images to fetch (all = primary + additional)")
    c.add_argument("--image-size", default="large", choices=("large", "small"),
                   help="large: primaryImage; small: primaryImageSmall (web-large)")
    c.add_argument("--rate", type=float, default=20.0, help="request cap per second, all workers together "
                                                            "(the museum asks for at most 80)")
    c.add_argument("--workers", type=_count, default=8, help="concurrent requests")
    c.add_argument("--timeout", type=_positive_seconds, default=15.0, help="seconds per request")
    c.add_argument("--retries", type=_zero_or_more, default=8, help="retries per request on transient failures")
    c.add_argument("--backoff", type=_seconds, default=0.5,
                   help="first retry wait in seconds, doubled per attempt (Retry-After wins when given)")
    c.add_argument("--base-url", default=None, help="API base URL (default: the museum's)")

    b = sub.add_parser("build", help="build a training manifest from a collection by recipe",
                       description="Recipes: ivory (ivory as main material vs ceramics), culture (paintings by "
                                   "grouped culture, top N), instance (one class per object, objects with at "
                                   "least K photos). Writes OUT/manifest.csv, OUT/card.json, OUT/card.html.")
    b.add_argument("recipe", choices=("ivory", "culture", "instance"))
    b.add_argument("collection", help="collection folder (from artsentry collect) or its collection.csv")
    b.add_argument("--out", required=True, help="dataset folder")
    b.add_argument("--top", type=_count, default=4, help="culture: keep the N most frequent culture groups")
    b.add_argument("--min-images", type=_count, default=4, help="instance: objects with at least this many photos")
    b.add_argument("--seed", type=_seed, default=0)

    r = sub.add_parser("register", help="the register of known objects, searched by photo",
                       description="Objects are added and removed without retraining: their photos are embedded "
                                   "and indexed (FAISS).")
    rsub = r.add_subparsers(dest="action", required=True, metavar="ACTION")
    rc = rsub.add_parser("create", help="create an empty register")
    rc.add_argument("register")
    rc.add_argument("--embedder", default="pretrained:efficientnet_lite0",
                    help="'pretrained:efficientnet_lite0' or a model or run folder whose backbone embeds")
    rc.add_argument("--threshold", type=_match_threshold, help="match score under which search answers 'no match' (better: "
                    "`register calibrate`)")
    rc.add_argument("--scoring", choices=("contrast", "similarity"), default="contrast",
                    help="a match's score: its similarity minus half the mean similarity of the next four objects "
                    "('contrast', tells registered from unregistered objects better: BENCHMARKS.md), or the "
                    "similarity itself (default: %(default)s)")
    rc.add_argument("--reshots", type=int, default=0, metavar="K",
                    help="also index K listing-style re-shots of every photo added (clutter, light, angle, JPEG; "
                    "default 0)")
    rc.add_argument("--flip", action="store_true",
                    help="embed every photo with its mirror image (registered and searched photos alike; twice the "
                    "embedding time, better matches: BENCHMARKS.md)")
    rc.add_argument("--resize", choices=RESIZE_MODES, default=None,
                    help="how every photo, registered or searched, becomes the embedder's input: 'fit' (default for "
                    "the pretrained backbone: cut to 4:3 or 3:4 at the centre, then squashed; finds objects in "
                    "landscape and portrait shots far better than 'squash': BENCHMARKS.md) or as the --embedder "
                    "model's config.json says (default for a model folder)")
    ra = rsub.add_parser("add", help="add an object (one or more photos) or more photos of one")
    ra.add_argument("register")
    ra.add_argument("object_id")
    ra.add_argument("photos", nargs="+", help="image files or folders")
    for name in ("title", "department", "source", "status"):
        ra.add_argument(f"--{name}", help="stolen / at-risk / ..." if name == "status" else None)
    ri = rsub.add_parser("import", help="add many objects from a table or a folder of object folders",
                         description="Register every object of a table (CSV, TSV, JSON, JSONL, Parquet or XLSX; one "
                         "row per photo: an object id column such as object_id or accession_number, a photo column "
                         "such as image or path, relative to the table's folder, or image_url with --fetch-urls; "
                         "title, department, source, status and any other columns are kept as the object's metadata) "
                         "or of a folder with one sub-folder of photos per object (its name is the object id). Run it "
                         "again after an interruption or with more rows: photos already registered under their object "
                         "are skipped.")
    ri.add_argument("register")
    ri.add_argument("source", help="table of objects' photos, or folder of <object id>/<photos>")
    ri.add_argument("--fetch-urls", action="store_true",
                    help="download photos given as http(s) URLs (a stolen-object database's export; 8 at a time, 429, "
                    "5xx and timeouts tried up to 3 more times) and keep their bytes in the register's photos/ folder; "
                    "the history names each photo's URL, and a URL registered already is not fetched again")
    ri.add_argument("--fetch-private", action="store_true",
                    help="with --fetch-urls: also fetch from private addresses (an image host inside your own network)")
    rr = rsub.add_parser("remove", help="take objects out of the register")
    rr.add_argument("register")
    rr.add_argument("object_id", nargs="+", help="one or more object ids")
    ri = rsub.add_parser("info", help="what the register holds and how it decides (thresholds: set or not)")
    ri.add_argument("register")
    ri.add_argument("--json", action="store_true")
    rl = rsub.add_parser("list", help="list registered objects")
    rl.add_argument("register")
    rl.add_argument("--json", action="store_true")
    rg = rsub.add_parser("get", help="show one object")
    rg.add_argument("register")
    rg.add_argument("object_id")
    rh = rsub.add_parser("history", help="every change to the register (or to one object): when, by whom, what",
                         description="The register created (with its settings), objects added (with their photos' "
                         "SHA-256), photos added, objects removed (with what they were), thresholds set or calibrated; "
                         "oldest first; UTC times; the system user of the process that made the change (the web "
                         "server's for API writes).")
    rh.add_argument("register")
    rh.add_argument("object_id", nargs="?", help="only this object's changes")
    rh.add_argument("--json", action="store_true", help="one JSON object per line")
    rs = rsub.add_parser("search", help="which registered objects do these photos show?")
    rs.add_argument("register")
    rs.add_argument("images", nargs="+", help="image files or folders")
    rs.add_argument("-k", type=_count, default=5, help="matches per photo")
    rs.add_argument("--threshold", type=_match_threshold, help="override the register's no-match threshold (with "
                    "none set or given, matches are ranked and none decided: 'undecided')")
    rs.add_argument("--json", action="store_true")
    rs.add_argument("--lots", action="store_true",
                    help="photos of several objects: search the whole photo and its 3x3 half-size tiles, each object "
                    "scored by its best crop (named in the output), no match decided at the register's lot threshold "
                    "(register calibrate --lots)")
    rc = rsub.add_parser("copy", help="a new register of the same objects and photos, embedded again",
                         description="Make a new register holding this one's objects, metadata and photos, each "
                         "photo read again from its file and embedded with --embedder (default: this register's, as "
                         "its folder holds it now: the way on once it was trained again). Re-shots, mirror images and "
                         "scoring are kept, thresholds are not (calibrate the new register). A photo whose file is "
                         "gone or holds other bytes than were registered is left out and named. This register is "
                         "not changed.")
    rc.add_argument("register")
    rc.add_argument("target", help="folder of the new register")
    rc.add_argument("--embedder", help="'pretrained:ARCH' or a model or run folder (default: this register's)")
    rb = rsub.add_parser("rebuild", help="recreate the search index from the register database")
    rb.add_argument("register")
    rt = rsub.add_parser("set-threshold", help="set the no-match threshold (on the register's match score)")
    rt.add_argument("register")
    rt.add_argument("threshold", type=_match_threshold)
    rcal = rsub.add_parser("calibrate", help="choose the no-match threshold for a target false-match rate",
                           description="Search photos of objects that are NOT registered (e.g. listing photos of "
                           "other objects) and set the lowest threshold at which at most --target-fmr of them "
                           "match anything.")
    rcal.add_argument("register")
    rcal.add_argument("photos", nargs="+", help="image files or folders of unregistered objects")
    rcal.add_argument("--target-fmr", type=float, default=0.01, help="false-match rate to allow (default 0.01)")
    rcal.add_argument("--lots", action="store_true",
                      help="set the threshold of tile searches (register search --lots) instead, from the best match "
                      "over each photo's crops (give photos of several unregistered objects, or --compose)")
    rcal.add_argument("--compose", type=_count, metavar="N",
                      help="with --lots, when the photos show one unregistered object each: calibrate on N lot "
                      "photos composed of four of them each")

    pr = sub.add_parser("predict", help="classify images", description="Print label, probability and decision for "
                        "each image, and a last field 'weak evidence: ...' when the photo is blurred, grainy, dark, "
                        "small or narrow, or one frame of several (data.quality). Unreadable files are reported on "
                        "stderr and skipped.")
    pr.add_argument("images", nargs="+", help="image files or folders (searched recursively)")
    pr.add_argument("--model", default=DEFAULT_MODEL, help="model or run folder (default: %(default)s)")
    pr.add_argument("--json", action="store_true", help="one JSON object per line")
    pr.add_argument("--lots", action="store_true",
                    help="photos of several objects (a seller's table, a catalogue page): scan each photo whole and "
                    "in 3x3 half-size tiles, score it by its highest tile, decide at the model's lot threshold "
                    "(set by evaluate --lots N), and print that tile's box")
    pr.add_argument("--batch-size", type=_count, default=32)
    pr.add_argument("--runtime", default="auto", choices=("auto", "torch", "onnx"),
                    help="forward pass: PyTorch, ONNX Runtime, or the one the model's config names (default)")

    sc = sub.add_parser("screen", help="screen listing photos: decisions, register matches, review queue",
                        description="Screen a folder of images or a CSV/TSV/JSON/JSONL/Parquet/XLSX table of listings. "
                        "Writes evidence.jsonl (one record per image), results.csv, queue.csv/queue.html (the ranked "
                        "review queue), listings.csv (one row per listing id) and errors.csv into --out. "
                        "Run it again to resume an interrupted run, or after appending rows to its table or "
                        "adding files to its folder: only the new ones are screened.")
    sc.add_argument("input", help="folder of images, or a table with an image/path/url column")
    sc.add_argument("--out", required=True, help="output folder (resumed when it holds a run on the same input)")
    sc.add_argument("--model", default=DEFAULT_MODEL, help="model or run folder (default: %(default)s); "
                    "'none' to match against the register only")
    sc.add_argument("--register", help="register folder: also report matches to registered objects")
    sc.add_argument("--culture-model", default=None,
                    help="a multi-class model or run folder (e.g. culture of a painting): its label and "
                    "probability are added to every record")
    sc.add_argument("--top-k", type=_count, default=5, help="register matches kept per image")
    sc.add_argument("--runtime", default="auto", choices=("auto", "torch", "onnx"),
                    help="forward pass (default: the model config's; ONNX Runtime after artsentry export)")
    sc.add_argument("--batch-size", type=_count, default=32)
    sc.add_argument("--workers", type=_zero_or_more, default=None, help="image decoding worker processes")
    sc.add_argument("--group-folders", action="store_true",
                    help="folder input: the photos of one sub-folder are one listing, its path the listing id "
                    "(default: every photo its own listing); a table groups by its listing_id/id/listing column")
    sc.add_argument("--lots", action="store_true",
                    help="listings photograph several objects at once (a seller's table, a catalogue page): each "
                    "photo is scanned whole and in 3x3 half-size tiles and decided by its highest tile at the model's "
                    "lot threshold (set by evaluate --lots N; make ivory does it), and with --register each tile is "
                    "searched too (the register's lot threshold: register calibrate --lots); results.csv names the "
                    "tiles")
    sc.add_argument("--review-weak", action="store_true",
                    help="also queue the photos the model passed whose quality is weak (blurred, grainy, dark, small): "
                    "such a pass cannot clear a listing; they rank after the flagged ones")
    sc.add_argument("--fetch-urls", action="store_true", help="download http(s) image URLs (off by default; 8 of a "
                    "batch at once per decoding worker; 429, 5xx and timeouts are tried up to 3 more times)")
    sc.add_argument("--overwrite", action="store_true", help="start over instead of resuming")
    sc.add_argument("--explain", type=_zero_or_more, default=50, metavar="N",
                    help="Grad-CAM evidence overlays in queue.html for the first N flagged photos (default 50; 0: none)")
    sc.add_argument("--fetch-private", action="store_true",
                    help="with --fetch-urls: also fetch from private addresses (an image host inside your own "
                    "network); by default a URL naming this machine or its network is refused, since a "
                    "listing's URL is the seller's to choose")
    sc.add_argument("--keep-fetched", type=Path, default=None, metavar="DIR",
                    help="with --fetch-urls: keep every fetched image's bytes in DIR, named by its SHA-256 (the "
                    "listing may be gone tomorrow; results.csv kept_file, queue.html shows them)")
    sc.add_argument("--engine", default="local", choices=("local", "ray"),
                    help="local: decode workers + batched inference here; ray: Ray Data map_batches, the model "
                    "loaded once per worker (pip install 'artsentry[ray]')")
    sc.add_argument("--ray-address", default=None, help="Ray cluster to join (e.g. ray://head:10001 or 'auto'; "
                    "default: $RAY_ADDRESS, else a local Ray instance)")
    sc.add_argument("--ray-workers", type=_count, default=1, help="Ray actors, each with its own copy of the model")
    sc.add_argument("--ray-cpus", type=float, default=1.0, help="CPUs reserved per Ray actor")

    xp = sub.add_parser("explain", help="heat maps: which regions decided (saliency, occlusion, Grad-CAM)",
                        description="Write an overlay PNG per image (heat map on the photo, colour bar) and "
                        "explanations.json into --out (a later run adds to it). With --model: why the model "
                        "chose its class (or --target). With --register: which regions made the photo similar to its "
                        "best register match.")
    xp.add_argument("images", nargs="+", help="image files or folders (searched recursively)")
    src = xp.add_mutually_exclusive_group()
    src.add_argument("--model", help=f"model or run folder (default: {DEFAULT_MODEL})")
    src.add_argument("--register", help="register folder: explain the similarity to the best match")
    xp.add_argument("--method", default="gradcam", choices=("gradcam", "saliency", "occlusion"),
                    help="gradcam: coarse, stable; saliency: gradient per pixel; occlusion: slide a grey patch "
                    "and record the score drop (black box; ONNX Runtime when exported)")
    xp.add_argument("--target", help="class label to explain (default: the predicted class)")
    xp.add_argument("--lots", action="store_true",
                    help="photos of several objects, decided as predict --lots decides them (the model's lot "
                    "threshold): a photo flagged for one tile is explained by that tile's map, drawn in its place "
                    "on the photo with the tile outlined (its box in explanations.json)")
    xp.add_argument("--patch", type=_count, default=32, help="occlusion patch side in input pixels (default 32)")
    xp.add_argument("--stride", type=_count, default=16, help="occlusion stride in input pixels (default 16)")
    xp.add_argument("--out", default="explanations", help="output folder (default: %(default)s)")

    pj = sub.add_parser("project", help="2-D maps (PCA, t-SNE, UMAP) of a model's features over a dataset",
                        description="Write projection.html (interactive: hover for thumbnail and metadata), "
                        "projection.png and projection.csv into --out.")
    pj.add_argument("data", help="labelled folder or manifest CSV/Parquet/XLSX")
    pj.add_argument("--model", default=DEFAULT_MODEL, help="model or run folder (default: %(default)s)")
    pj.add_argument("--split", default=None, help="only this split of the manifest (e.g. test)")
    pj.add_argument("--methods", default="pca,tsne,umap", help="comma-separated of pca, tsne, umap")
    pj.add_argument("--color-by", default=None,
                    help="comma-separated columns to colour by (default: label, correct, department)")
    pj.add_argument("--seed", type=_seed, default=0)
    pj.add_argument("--out", default="projection", help="output folder (default: %(default)s)")

    sv = sub.add_parser("serve", help="web page and JSON API (FastAPI) on 127.0.0.1",
                        description="Serve the page (upload a photo: verdict, matches, evidence overlay) and the "
                        "JSON API documented at /openapi.json. Register writes need the token.")
    sv.add_argument("--model", default=None, help=f"ivory model or run folder (default: {DEFAULT_MODEL} if present)")
    sv.add_argument("--culture-model", default=None, help="a second, multi-class model (e.g. culture of a painting)")
    sv.add_argument("--register", default=None, help="register folder for known-object matches")
    sv.add_argument("--host", default="127.0.0.1", help="interface (default %(default)s: this machine only)")
    sv.add_argument("--port", type=_port, default=8000)
    sv.add_argument("--token", default=None, help="bearer token for register writes (default: $ARTSENTRY_TOKEN; "
                    "none: writes disabled)")
    sv.add_argument("--max-upload-mb", type=_above_zero, default=20.0, help="largest upload (default %(default)s MB; "
                    "for /v1/listing, all of a listing's photos together)")
    sv.add_argument("--max-listing-photos", type=_count, default=24, help="photos in one /v1/listing request "
                    "(default %(default)s)")
    sv.add_argument("--allow-url-fetch", action="store_true", help="let /v1/analyze fetch {\"url\": ...} images "
                    "(from public addresses only, unless hosts are named with --url-allow-host)")
    sv.add_argument("--url-allow-host", action="append", default=[], help="only fetch from this host, even a "
                    "private one (repeatable)")
    sv.add_argument("--audit-log", type=Path, default=None, help="append one JSON line per analysis, register "
                    "change and refused register write to this file (photo SHA-256, model versions, decisions, "
                    "client address; never the photo or the token)")
    sv.add_argument("--cors-origin", action="append", default=[], help="allow this browser origin (repeatable; "
                    "default: CORS off)")
    sv.add_argument("--workers", type=_count, default=1, help="concurrent analyses (default 1: the model uses both "
                    "cores already)")
    sv.add_argument("--max-queue", type=_zero_or_more, default=32,
                    help="analyses waiting before 503 + Retry-After (default 32)")
    sv.add_argument("--threads", type=_count, default=None, help="torch threads (default: all cores)")
    sv.add_argument("--runtime", default="auto", choices=("auto", "torch", "onnx"))
    sv.add_argument("--register-wait", type=_seconds, default=10.0, metavar="SECONDS",
                    help="how long a register change waits for another process's (a terminal's import) before "
                    "it is answered 503 + Retry-After (default %(default)s)")

    ve = sub.add_parser("verify", help="check a screening run's evidence against its photos, or an audit log's chain "
                        "(changes nothing)",
                        description="A screening run's folder: every photo it recorded (local files, and the kept "
                        "copies of fetched ones: screen --keep-fetched) must still hash to the SHA-256 in its evidence "
                        "record, and every record must link to the one before it. A log file (serve --audit-log, or an "
                        "evidence.jsonl): its chain only. Prints the counts, what changed or is missing, and the "
                        "log's head: the hash of its last record, which stands for every record up to it; note it "
                        "down, and --expect HEAD later shows whether those records are still there unchanged, also "
                        "after more were appended. Exit status 0 when all is as recorded, 1 otherwise.")
    ve.add_argument("out", nargs="+", metavar="OUT", help="the screening run's --out folder, or a log file; or the "
                    "files of a rotated log, oldest first (audit.log.2 audit.log.1 audit.log): one chain through them")
    ve.add_argument("--refetch", action="store_true", help="fetch again the photos screened by URL without a kept "
                    "copy (screen --fetch-urls without --keep-fetched) and compare them: is the listing still showing "
                    "what was screened, another photo, a placeholder (one image now shown under listings that showed "
                    "different photos), or gone (404/410)?")
    ve.add_argument("--fetch-private", action="store_true", help="with --refetch: also from private addresses (as "
                    "screen --fetch-private)")
    ve.add_argument("--expect", metavar="HEAD", help="a head noted down earlier: exit 1 unless the records it stood for "
                    "are still in the log, unchanged")
    so = sub.add_parser("soup", help="one model from the mean of several fine-tuned models' weights",
                        description="A model soup (Wortsman et al. 2022): the weighted mean of the weights of "
                        "classifiers fine-tuned from the same pretrained network (same architecture and classes), "
                        "one forward pass per photo, usually better than each of them (BENCHMARKS.md, 'Model "
                        "soups'). It reads photos as the first model does; its threshold is 0.5 and it has no "
                        "calibration until 'artsentry evaluate OUT --data RUN/manifest.csv --split val "
                        "--calibrate --save-threshold' fits them on validation photos none of the models "
                        "trained on.")
    so.add_argument("models", nargs="+", metavar="MODEL", help="two or more model or run folders")
    so.add_argument("--out", required=True, help="the soup's model folder")
    so.add_argument("--weights", type=float, nargs="+", action="extend", metavar="W",
                    help="one positive weight per model, in their order (default: equal)")
    so.add_argument("--no-export", action="store_true", help="do not export the soup to ONNX")
    so.add_argument("--overwrite", action="store_true", help="replace a model folder already at --out")
    cp = sub.add_parser("compare", help="is one model better than another on the same photos? (paired test)",
                        description="Matches two evaluations' predictions.csv by photo and counts the photos only "
                        "one model got right; McNemar's exact test says whether that split could be chance. Two "
                        "models a point apart on a few hundred photos have overlapping accuracy intervals, yet may "
                        "differ clearly photo by photo, or not at all.")
    cp.add_argument("a", metavar="A", help="predictions.csv, or a run or evaluation folder holding one")
    cp.add_argument("b", metavar="B", help="the same for the other model")
    cp.add_argument("--split", help="keep one split's photos (e.g. test)")
    cp.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    ex = sub.add_parser("export", help="export a model to ONNX for fast screening and edge use",
                        description="Writes model.onnx (input 'input', NCHW float32 preprocessed as in config.json; "
                        "output 'logits') after checking it matches PyTorch to 1e-3 in probability. Into the model "
                        "folder by default, where screen/predict then use ONNX Runtime.")
    ex.add_argument("model", help="model or run folder")
    ex.add_argument("--format", default="onnx", choices=("onnx",))
    ex.add_argument("--out", help="folder for a standalone copy (model.onnx + config.json); default: the model folder")
    _quiet_anywhere(parser)
    return parser


def _quiet_anywhere(parser: argparse.ArgumentParser) -> None:
    """``-q`` after the command too (``artsentry screen IN --out OUT -q``), as before it: each
    command's own copy leaves the top-level value alone when not given."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command in action.choices.values():
                command.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                                     help="no progress bars")
                _quiet_anywhere(command)


def _settings_from_args(a) -> "object":
    from .train import TrainSettings

    small = a.arch == "smallcnn"
    if a.distill_weight is not None and not a.teacher:
        raise ValueError("--distill-weight is the teachers' share of the loss: give --teacher MODEL")
    epochs = a.epochs if a.epochs is not None else (30 if small else 8)
    # The warm-up + cosine schedule spans all epochs, and validation loss can rise for a few epochs
    # while the learning rate is at its peak: a longer schedule waits longer before stopping. Half
    # the schedule: with a third, a 10-epoch fine-tune with standard augmentation stopped after
    # epoch 3 and shipped its head stage (studio 0.919); run on, it beat it from epoch 4 and kept
    # epoch 9 (0.933, BENCHMARKS.md 2026-12-04).
    patience = a.patience if a.patience is not None else (6 if small else max(3, epochs // 2))
    return TrainSettings(
        architecture=a.arch,
        mode="finetune" if small else a.mode,
        epochs=epochs,
        head_epochs=a.head_epochs,
        head_views=a.head_views,
        freeze_bn=a.freeze_bn,
        select_on=a.select_on,
        keep_epochs=a.keep_epochs,
        batch_size=a.batch_size,
        lr=a.lr if a.lr is not None else 1e-3,
        backbone_lr=a.backbone_lr,
        patience=patience,
        augment=a.augment,
        image_size=a.image_size,
        inference_size=a.inference_size,
        resize=a.resize,
        ema_decay=a.ema_decay,
        drop_path=a.drop_path,
        pooling=a.pooling,
        listing_all=a.listing_all,
        **({} if a.listing_p is None else {"listing_p": a.listing_p}),
        detail_loss=a.detail_loss,
        teacher=tuple(a.teacher),
        distill_weight=0.5 if a.distill_weight is None else a.distill_weight,
        consistency=a.consistency,
        cutmix=a.cutmix,
        sam=a.sam,
        layer_decay=a.layer_decay,
        **({} if a.crop_scale is None else {"crop_scale": tuple(a.crop_scale)}),
        val_fraction=a.val_fraction,
        test_fraction=a.test_fraction,
        seed=a.seed,
        train_seed=a.train_seed,
        positive_label=a.positive_label,
        class_weighting=not a.no_class_weights,
        num_workers=a.workers,
        checkpoint_every=a.checkpoint_every,
        target_recall=a.target_recall,
        target_precision=a.target_precision,
        calibrate=not a.no_calibrate,
    )


def _interval(ci) -> str:
    """`` (95% CI 0.9058-0.9483)`` for a [low, high] pair; nothing for None."""
    return f" (95% CI {ci[0]:.4f}-{ci[1]:.4f})" if ci else ""


def _print_metrics(result: dict) -> None:
    name = result["split"]
    m = result["metrics"][name]
    keys = ("n", "accuracy", "precision", "recall", "f1", "roc_auc", "top3_accuracy", "top5_accuracy",
            "top10_accuracy")
    ci = m.get("ci95") or {}
    shown = ", ".join((f"{k} {m[k]:.4f}" if isinstance(m[k], float) else f"{k} {m[k]}") + _interval(ci.get(k))
                      for k in keys if m.get(k) is not None)
    size = result.get("input_size")
    print(f"{name}: {shown}" + (f" (input {size} px)" if isinstance(size, int) else ""))
    by_count = m.get("accuracy_by_photos_per_object")
    if by_count:
        print("accuracy by photos per object: " + ", ".join(f"{k}: {v['accuracy']:.4f} (n {v['n']})"
                                                             for k, v in by_count.items()))
    by_colour = m.get("accuracy_by_photo_colour_and_label")
    if by_colour:
        print("accuracy by photo colour and label: " + ", ".join(f"{k}: {v['accuracy']:.4f} (n {v['n']})"
                                                                 for k, v in by_colour.items()))
    by_quality = m.get("accuracy_by_photo_quality")
    if by_quality:
        print("accuracy by photo quality (warned: blurred, grainy, dark, small or narrow): "
              + ", ".join(f"{k}: {v['accuracy']:.4f} (n {v['n']})" for k, v in by_quality.items()))
    c = result.get("calibration")
    if c and not c["applied"]:
        print(f"not calibrated: {c['note']}")
    elif c:
        print(f"calibrated on {c['fitted_on']['n']} validation photos: temperature {c['temperature']:.4f}; "
              f"val log loss {c['val_before']['log_loss']:.4f} -> {c['val_after']['log_loss']:.4f}, "
              f"calibration error {c['val_before']['ece']:.4f} -> {c['val_after']['ece']:.4f} (saved)")
    t = result["threshold"]
    if t.get("threshold") is not None:
        print(f"threshold {t['threshold']:.4f} ({t['rule']}{', target ' + str(t['target']) if t.get('target') else ''})")
        if t.get("note"):  # a target precision out of reach, too few validation photos for the recall asked
            print(f"note: {t['note']}")
    if m.get("unreadable"):
        print(f"{m['unreadable']} unreadable image(s) skipped; see predictions.csv")


def _finetune_outcome(config: dict, epochs: int) -> str | None:
    """One line on which weights fine-tuning kept, and whether it stopped early (None: no fine-tuning)."""
    f = (config.get("training", {}).get("summary") or {}).get("finetune")
    if not f:
        return None
    run = f.get("epochs_run", epochs)
    stopped = (f" stopped early after epoch {run} of {epochs} (no better validation loss for --patience epochs);"
               if f.get("stopped_early") else f" ran {run} epoch(s);")
    if f.get("best_epoch") == -1:
        kept = "kept the head stage it started from: no epoch validated better"
        if f.get("stopped_early"):
            kept += " (a longer --patience lets the schedule's lower rates try)"
    elif f.get("best_val_loss") is None:
        kept = "kept the last epoch (no validation split)"
    else:
        kept = f"kept epoch {f['best_epoch'] + 1} (validation loss {f['best_val_loss']:.4f} on {f['selected_on']})"
    return f"fine-tuning:{stopped} {kept}"


def train_data(data: str, out: str) -> None:
    """A DATA naming nothing, said before PyTorch loads (it took ~8 s): unless it is the data the run in ``out``
    was started on, whose saved split a resumed run reads (its manifest may have moved since)."""
    if Path(data).exists():
        return
    for started in (Path(out) / "run.json", Path(out) / "ingredients" / "0" / "run.json"):  # a run, a soup's
        with contextlib.suppress(OSError, ValueError, AttributeError):
            if json.loads(started.read_text(encoding="utf-8")).get("source") == str(Path(data).resolve()):
                return
    raise ValueError(f"{data}: no such file or folder")


def cmd_train(a) -> int:
    train_data(a.data, a.out)
    from .models.artifact import read_config
    from .train import train, train_soup

    settings = _settings_from_args(a)
    if a.soup < 1:
        raise ValueError(f"--soup needs at least 1 run, not {a.soup}")
    if a.soup > 1:
        result = train_soup(a.data, a.out, settings, a.soup, overwrite=a.overwrite, progress=not a.quiet)
        for m in read_config(result.model_dir)["soup"]["models"]:
            test = m["test"]
            figures = f"test accuracy {test['accuracy']:.4f}" if "accuracy" in test else "not evaluated"
            print(f"soup ingredient {m['folder']}: {figures}")
    else:
        result = train(a.data, a.out, settings, overwrite=a.overwrite, progress=not a.quiet)
    if result.resumed_from_step:
        print(f"resumed from step {result.resumed_from_step}")
    config = read_config(result.model_dir)
    said = _finetune_outcome(config, settings.epochs)
    if said:
        print(said)
    skipped = config.get("data", {}).get("skipped_unreadable")
    if skipped:  # each warned of as it was met, long before this
        print(f"{len(skipped)} training or validation image(s) could not be read and were left out: listed in "
              f"{result.model_dir / 'config.json'} (data.skipped_unreadable)")
    if not result.evaluation:  # no test photos
        print(f"no test split (--test-fraction {a.test_fraction:g}): not evaluated\nmodel: {result.model_dir}")
    else:
        _print_metrics(result.evaluation)
        print(f"model: {result.model_dir}\nreport: {Path(a.out) / 'report.html'}")
    if not a.no_export:
        from .models.onnx import export_onnx, onnx_ready

        if not onnx_ready(result.model_dir):
            export_onnx(result.model_dir)
        print("exported model.onnx: predict and screen run on ONNX Runtime")
    return 0


def _evaluate_lots(a, model_dir: Path) -> None:
    """``evaluate --lots N``: the tile scan's threshold from lots of validation photos, its figures
    on lots of test photos (``lots.measure_lots``), into lots.json and the model's config.json
    (``lots``: read only by the ``--lots`` modes, so no other decision changes)."""
    import pandas as pd

    from .data.manifest import read_manifest
    from .files import write_text_atomic
    from .inference import Predictor
    from .lots import measure_lots
    from .models.artifact import update_config

    if a.data:
        manifest = read_manifest(a.data)[0]
    else:
        saved = model_dir.parent / "manifest.csv"
        if not saved.is_file():
            raise ValueError(f"{model_dir}: no run manifest beside the model; give --data with a split column")
        manifest = pd.read_csv(saved, dtype=str, keep_default_na=False)
    if "split" not in manifest.columns:
        raise ValueError("--lots needs a manifest with val and test splits")
    predictor = Predictor.load(model_dir)
    lots = measure_lots(predictor, manifest, n=a.lots, progress=not a.quiet)
    update_config(model_dir, lots=lots)
    out = Path(a.out) if a.out else model_dir.parent
    write_text_atomic(out / "lots.json", json.dumps(lots, indent=2) + "\n")  # after config.json: make's order
    t, w = lots["test"]["tile_scan"], lots["test"]["whole_photo"]
    print(f"photos of {lots['objects_per_lot']} objects ({lots['lots']} test lots, half with one "
          f"{predictor.positive_label} object):")
    for name, m in (("whole photo", w), (f"{lots['grid']}x{lots['grid']} tile scan", t)):
        print(f"  {name:<15} threshold {m['threshold']:.4f}: accuracy {m['accuracy']:.4f}, recall {m['recall']:.4f}, "
              f"false flags {m['false_flag_rate']:.4f}, ROC-AUC {m['roc_auc']:.4f}")
    print(f"lot threshold {lots['threshold']:.4f} saved in {model_dir / 'config.json'} (used by predict/screen --lots)")


def cmd_evaluate(a) -> int:
    if a.model and a.model_option and a.model != a.model_option:
        raise ValueError(f"two models given, {a.model} and --model {a.model_option}: evaluate one, or several "
                         "together with --ensemble")
    a.model = a.model or a.model_option
    if not a.model:
        raise ValueError("give the model to evaluate: artsentry evaluate MODEL (a run or model folder)")
    for folder in [a.model, *(a.ensemble or [])]:
        model_folder(folder)  # a wrong path is said at once, before the models load
    from .evaluate import default_out_dir, run_evaluation

    if a.lots is not None:  # checked before the evaluation it follows
        if a.ensemble:
            raise ValueError("--lots measures one model, not an ensemble")
        if a.input_size is not None:
            raise ValueError("--lots stores a threshold for the model at its own input size; drop --input-size")
        if a.lots < 2:
            raise ValueError("--lots needs at least 2 lot photos per split")

    split = None if a.split == "all" else a.split
    result = run_evaluation(a.model, a.data, split=split, out_dir=a.out, target_recall=a.target_recall,
                            target_precision=a.target_precision, save_threshold=a.save_threshold,
                            progress=not a.quiet, shift=a.shift, shift_seed=a.shift_seed,
                            explain=not a.no_explain, ensemble=a.ensemble, input_size=a.input_size,
                            calibrate=a.calibrate)
    _print_metrics(result)
    if a.lots:
        _evaluate_lots(a, Path(result["model"]))
    if a.shift:
        sh = result["shift"]
        print(f"listing-style shift (seed {sh['seed']}):")
        for name, m in sh["variants"].items():
            auc = f", ROC-AUC {m['roc_auc']:.4f}" if m.get("roc_auc") is not None else ""
            print(f"  {name:<22} accuracy {m['accuracy']:.4f}{_interval(m['ci95']['accuracy'])}{auc}  (n {m['n']})")
        print(f"  drop studio -> listing: {sh['drop_points']:.2f} points; worst family alone: {sh['worst_family']} "
              f"({sh['drop_points_by_family'][sh['worst_family']]:.2f} points); background only vs chance "
              f"{sh['chance_accuracy']:.4f}")
    out = Path(a.out) if a.out else default_out_dir(Path(result["model"]))
    print(f"report: {out / 'report.html'}")
    # the metrics cover the readable photos (said above); a script learns of the rest as from predict
    return EXIT_SOME_UNREADABLE if result["metrics"][result["split"]].get("unreadable") else 0


def _print_errors(messages) -> None:
    """One ``error:`` line on stderr per message (unreadable files and the like; the run goes on)."""
    for msg in messages:
        print(f"error: {msg}", file=sys.stderr)


def _warn_shared_photos(shared: dict[str, list[str]]) -> None:
    """Say which photos are registered under more than one object (``Register.shared_photos``): most often
    one object recorded twice, and a search for such a photo matches each of them alike."""
    if not shared:
        return
    examples = "; ".join(f"{sha[:12]} under {', '.join(objects)}" for sha, objects in list(shared.items())[:3])
    more = f" and {len(shared) - 3} more" if len(shared) > 3 else ""
    logging.getLogger(__name__).warning(
        "%d photo(s) registered under more than one object (%s%s): one object recorded twice? A search for such a "
        "photo matches each of them alike", len(shared), examples, more)


def expand_images(items: list[str], fetched_by: str = "screen") -> tuple[list[str], list[str]]:
    """Files as given, folders searched recursively for image files. Returns (files, problems); a URL is
    a problem, naming the command that fetches a table's URLs (``fetched_by``: screen, register import)."""
    from .data.images import find_images
    from .data.manifest import TABLE_SUFFIXES, file_url_path
    from .fetch import is_http_url

    files, problems = [], []
    for item in items:
        item = file_url_path(item) or item  # a file:// URL pasted from a browser's address bar: its file
        p = Path(item)
        if p.is_dir():
            not_utf8: list[str] = []
            found = [str(f) for f in find_images(p, not_utf8=not_utf8)]
            if not found and not not_utf8:
                problems.append(f"{item}: no image files in folder")
            files.extend(found)
            problems += [f"{name}: not read: its file name is not UTF-8; rename it (for example with convmv) "
                         "and run again" for name in not_utf8]
        elif p.suffix.lower() in TABLE_SUFFIXES and p.exists():
            problems.append(f"{item}: a table, not an image ('artsentry screen' screens the photos a table lists, "
                            "'artsentry register import' registers them)")
        elif p.exists() or p.is_symlink():  # a broken link fails in the loader, which names its target
            files.append(item)
        elif is_http_url(item):
            problems.append(f"{item}: a URL, not a file (put it in a table's image column for 'artsentry "
                            f"{fetched_by} --fetch-urls', or download it first)")
        else:
            problems.append(f"{item}: file not found")
    return files, problems


def _quality_note(pred) -> str:
    """A last tab-separated field naming what limits the photo's evidence, or nothing."""
    from .data.quality import warnings_text

    text = warnings_text(pred.quality)
    return f"\tweak evidence: {text}" if text else ""


def _predict_lots(a, predictor, files: list[str], n_bad: int) -> int:
    """``predict --lots``: each photo scanned whole and in tiles (``lots.scan``)."""
    from .data.images import ImageLoadError, load_image
    from .lots import decode_draft, lot_threshold, scan

    if not predictor.binary:
        raise ValueError("--lots needs a two-class model with a positive label")
    try:
        threshold, grid = lot_threshold(predictor.config)
    except ValueError as exc:
        raise ValueError(f"{predictor.folder}: {exc}") from None
    draft = decode_draft([(predictor.preprocessing, grid)])  # as screen --lots and the server read it
    for f in files:
        try:
            img = load_image(f, draft_size=draft)
        except ImageLoadError as exc:
            n_bad += 1
            print(f"error: {exc}", file=sys.stderr)
            continue
        r = scan(predictor, [img], threshold, grid=grid)[0]
        if a.json:
            print(json.dumps({"source": f, **r.to_dict(), "threshold": threshold, "mode": "lots"}))
        else:
            where = "whole photo" if r.box is None else "tile " + ",".join(str(v) for v in r.box)
            print(f"{_tsv(f)}\t{'FLAG' if r.flagged else 'pass'} (lot threshold {threshold:.4f})\t"
                  f"max p({predictor.positive_label})={r.score:.4f} in {where}\twhole photo {r.whole:.4f}")
    return EXIT_SOME_UNREADABLE if n_bad else 0


def _tsv(name: str) -> str:
    """A file name (or a title, an id) as one tab-separated field: a tab or line break in it written as \\t,
    \\n, \\r."""
    return str(name).translate({9: "\\t", 10: "\\n", 13: "\\r"})


def model_folder(path: str | Path) -> Path:
    """The model folder ``path`` names (a training run's folder: its ``model/``), its config.json read before
    any command loads PyTorch: a mistyped or missing model is said at once, not after seconds of importing."""
    from .models.artifact import read_config, resolve_model_dir

    folder = resolve_model_dir(path)
    read_config(folder)
    return folder


def cmd_predict(a) -> int:
    model = model_folder(a.model)
    from .inference import Predictor

    predictor = Predictor.load(model, runtime=a.runtime, batch_size=a.batch_size)
    files, problems = expand_images(a.images)
    _print_errors(problems)
    if a.lots:
        return _predict_lots(a, predictor, files, len(problems))
    n_bad = len(problems)
    threshold = predictor.operating_threshold()
    for _, pred in predictor.iter_predict(files, progress=not a.quiet and len(files) > 64):
        if not pred.ok:
            n_bad += 1
            print(f"error: {pred.error}", file=sys.stderr)
            continue
        if a.json:
            d = pred.to_dict()
            d.pop("error")
            d["threshold"] = threshold if predictor.binary else None
            print(json.dumps(d))
        elif predictor.binary:
            decision = "FLAG" if pred.flagged else "pass"
            print(f"{_tsv(pred.source)}\t{pred.label}\tp({predictor.positive_label})={pred.score:.4f}\t"
                  f"{decision} (threshold {threshold:.4f})" + _quality_note(pred))
        else:
            print(f"{_tsv(pred.source)}\t{pred.label}\tp={pred.score:.4f}" + _quality_note(pred))
    return EXIT_SOME_UNREADABLE if n_bad else 0


def cmd_collect(a) -> int:
    from .collect import DEFAULT_BASE_URL, Crawler, MetClient, RetryPolicy, resolve_ids

    ids = None
    if a.ids:
        try:
            ids = [int(x) for x in a.ids.split(",") if x.strip()]
        except ValueError:
            raise ValueError("--ids takes comma-separated integers") from None
    if a.rate <= 0 or a.rate > 80:
        raise ValueError("--rate must be in (0, 80]: the museum asks clients to stay at or below 80 requests/s")
    filters = {"medium": a.medium, "hasImages": True if a.has_images else None, "departmentId": a.department_id,
               "artistOrCulture": True if a.culture else None}
    if (a.recipe or a.offline) and not a.metobjects:
        raise ValueError("--recipe and --offline go with --metobjects")
    with MetClient(a.base_url or DEFAULT_BASE_URL, rate=a.rate, timeout=a.timeout,
                   policy=RetryPolicy(retries=a.retries, backoff=a.backoff)) as client:
        crawler = Crawler(client, a.out, images=a.images, image_size=a.image_size, workers=a.workers,
                          progress=not a.quiet)
        try:
            if a.metobjects:
                from .collect.metobjects import import_metobjects
                from .data.recipes import recipe_filter

                ids = import_metobjects(a.metobjects, crawler.store, keep=recipe_filter(a.recipe))
                print(f"imported {len(ids)} record(s) from {a.metobjects}")
                if a.offline:
                    return 0
            chosen = resolve_ids(client, crawler.store, search=a.search, all_objects=a.all, ids=ids, limit=a.limit,
                                 **filters)
            print(f"{len(chosen)} object(s) to collect into {a.out}")
            summary = crawler.crawl(chosen)
        finally:
            crawler.close()
    print("\n".join(summary.lines()))
    print(f"collection: {Path(a.out) / 'collection.csv'}; failures: {Path(a.out) / 'failures.csv'}")
    return 0


def cmd_train_embedder(a) -> int:
    from .index.metric import EmbedderSettings, train_embedder

    settings = EmbedderSettings(backbone=a.backbone, dim=a.dim, pooling=a.pooling, image_size=a.image_size,
                                resize=a.resize, trained_stages=a.trained_stages, backbone_lr=a.backbone_lr,
                                views=a.views, holdout=a.holdout, val_fraction=a.val_fraction, epochs=a.epochs,
                                patience=a.patience, seed=a.seed, workers=a.workers)
    model_dir = train_embedder(a.data, a.out, settings, progress=not a.quiet, overwrite=a.overwrite)
    config = json.loads((model_dir / "config.json").read_text())
    print(f"validation re-shot top-1 {config['metrics']['val_reshot_top1']:.4f} (epoch {config['metrics']['best_epoch']})")
    print(f"embedding model: {model_dir}\nuse it: artsentry register create REG --embedder {model_dir}")
    return 0


BUILD_CLASSES_SHOWN = 20  # classes whose photos `build` counts on its summary line


def cmd_build(a) -> int:
    from .data.recipes import build

    df = build(a.recipe, a.collection, a.out, top=a.top, min_images=a.min_images, seed=a.seed)
    per_class = df["label"].value_counts().sort_index()
    counts = ", ".join(f"{k} {v}" for k, v in per_class.head(BUILD_CLASSES_SHOWN).items())
    if len(per_class) > BUILD_CLASSES_SHOWN:  # an instance recipe's hundreds of classes: the card counts each
        counts += f", ... and {len(per_class) - BUILD_CLASSES_SHOWN} more (card.html counts each)"
    print(f"{len(df)} images of {df['object_id'].nunique()} objects, {len(per_class)} classes: {counts}")
    print(f"manifest: {Path(a.out) / 'manifest.csv'}; card: {Path(a.out) / 'card.html'}")
    return 0


def cmd_register(a) -> int:
    from .index import NotRegistered, Register, RegisterError

    if a.action == "create":
        reg = Register.create(a.register, a.embedder, threshold=a.threshold, reshots=a.reshots, flip=a.flip,
                              scoring=a.scoring, resize=a.resize)
        print(f"created register {a.register} (embedder {reg.embedder.spec}, photos read with "
              f"{reg.embedder.preprocessing.resize}{', with mirror images' if a.flip else ''})")
        reg.close()
        return 0
    reg = Register.open(a.register, rebuild_index=a.action == "rebuild")
    try:
        if a.action == "add":
            photos, problems = expand_images(a.photos, fetched_by="register import")
            _print_errors(problems)
            if not photos:
                raise ValueError("no photos to add")
            n, errors, already = reg.add(a.object_id, photos, title=a.title, department=a.department,
                                         source=a.source, status=a.status)
            _print_errors(errors)
            shots = f" with {reg.reshots} re-shot(s) each" if reg.reshots else ""
            skipped = f" ({already} skipped: registered under it already, or given twice)" if already else ""
            print(f"{a.object_id}: {n} photo(s) registered{shots}{skipped}; register holds {len(reg)} "
                  "object(s)")
            _warn_shared_photos(reg.shared_photos([a.object_id]))
            return EXIT_SOME_UNREADABLE if errors or problems else 0
        if a.action == "copy":
            done = reg.copy_to(a.target, a.embedder, progress=not a.quiet)
            _print_errors(done["problems"])
            lost = (f"; {len(done['objects_left_out'])} object(s) not copied, none of their photos read again: "
                    + ", ".join(done["objects_left_out"][:10])) if done["objects_left_out"] else ""
            print(f"copied {done['objects']} object(s), {done['photos']} photo(s) into {a.target} (embedder "
                  f"{done['embedder']}){lost}; no threshold is set there: 'artsentry register calibrate {a.target} "
                  "PHOTOS'")
            return EXIT_SOME_UNREADABLE if done["problems"] else 0
        if a.action == "import":
            from .index.register import read_objects

            if a.fetch_private and not a.fetch_urls:
                raise ValueError("--fetch-private applies to the photos --fetch-urls downloads: give it too")
            from .data.manifest import Pictures

            pictures = Pictures(reg.folder / "photos")  # a workbook's pictures on its photo cells: kept there
            objects, problems = read_objects(a.source, fetch_urls=a.fetch_urls, pictures=pictures)
            _print_errors(problems)
            done = reg.import_objects(objects, progress=not a.quiet, allow_private=a.fetch_private, pictures=pictures)
            _print_errors(done["errors"])
            print(f"imported {done['photos_added']} photo(s), {done['objects_added']} new object(s) of the "
                  f"{done['objects_in_table']} in {a.source}; {done['already_registered']} photo(s) already registered "
                  f"were skipped; register holds {len(reg)} object(s)")
            _warn_shared_photos(done["shared_photos"])
            return EXIT_SOME_UNREADABLE if problems or done["errors"] else 0
        if a.action == "remove":
            missing = []
            for object_id in a.object_id:
                try:
                    n = reg.remove(object_id)
                except NotRegistered:  # others (busy, read-only) end the command: they are no missing id
                    missing.append(object_id)
                    continue
                print(f"{object_id}: removed with its {n} photo(s)")
            print(f"register holds {len(reg)} object(s)")
            if missing:
                raise ValueError(f"not in the register, nothing removed for: {', '.join(missing)}")
        elif a.action == "info":
            info = reg.info()
            shared = reg.shared_photos()  # here, not in info(): a scan of the photos the server's /v1/models spares
            if a.json:
                print(json.dumps(info | {"shared_photos": len(shared)}))
            else:
                unset = "not set: matches are ranked, none decided ('register calibrate')"
                # a calibrated threshold sits one float step above a score: 0.13809200000000002, shown 0.138092
                threshold, lot = (None if t is None else format(t, ".6g") for t in (info["threshold"],
                                                                                   info["lot_threshold"]))
                shots = f", {info['reshots_per_photo']} re-shot(s) each" if info["reshots_per_photo"] else ""
                print(f"objects\t{info['objects']}\nphotos\t{info['photos']}{shots} "
                      f"({info['indexed_vectors']} vectors indexed, {info['index']} search)\n"
                      f"embedder\t{info['embedder']} ({info['dim']} dimensions, photos read with {info['resize']}"
                      f"{', with mirror images' if info['flip'] else ''})\nscoring\t{info['scoring']}\n"
                      f"no-match threshold\t{unset if threshold is None else threshold}\n"
                      f"lot threshold\t{'not set' if lot is None else lot}\n"
                      f"changes\t{info['changes']}{', the last ' + info['changed'] if info['changed'] else ''}")
                if not info["writable"]:
                    print("writable\tno: the register is read-only here (searched, not changed)")
                if shared:
                    print(f"shared photos\t{len(shared)} photo(s) under more than one object (e.g. "
                          f"{next(iter(shared))[:12]} under {', '.join(next(iter(shared.values())))})")
            if info.get("embedder_refused"):  # said after what the register holds, as any command's error
                raise RegisterError(info["embedder_refused"])
        elif a.action == "list":
            rows = reg.list()
            for row in rows:
                shots = f" + {row['reshots']} re-shot(s)" if row["reshots"] else ""
                print(json.dumps(row) if a.json else
                      # a catalogue's title may hold line breaks and tabs: one line, one field each still
                      f"{_tsv(row['object_id'])}\t{row['photos']} photo(s){shots}\t{_tsv(row['status'] or '')}\t"
                      f"{_tsv(row['title'] or '')}")
        elif a.action == "get":
            obj = reg.get(a.object_id)
            if obj is None:
                raise ValueError(f"object {a.object_id!r} is not in the register")
            print(json.dumps(obj, indent=2))
        elif a.action == "history":
            rows = reg.history(a.object_id)
            if a.object_id is not None and not rows and reg.get(a.object_id) is None:
                raise ValueError(f"object {a.object_id!r} is not in the register and has no history in it")
            for row in rows:
                if a.json:
                    print(json.dumps(row))
                    continue
                rest = {k: v for k, v in row.items() if k not in ("time", "user", "action", "object_id", "photos")}
                photos = f"{len(row['photos'])} photo(s)" if "photos" in row else ""
                words = " ".join(x for x in (photos, json.dumps(rest) if rest else "") if x)
                print(f"{row['time']}\t{_tsv(row['user'] or '')}\t{row['action']}\t{_tsv(row['object_id'] or '')}\t"
                      f"{words}")
        elif a.action == "search":
            images, problems = expand_images(a.images)
            _print_errors(problems)
            bad = len(problems)
            if not len(reg):  # every photo comes back "no match", which reads as an answer about the photo
                print(f"note: {a.register} holds no objects: nothing can match ('artsentry register add' or "
                      "'register import' first)", file=sys.stderr)
            elif not a.lots and a.threshold is None and reg.threshold is None and len(reg.index):
                print("note: the register has no no-match threshold: matches are ranked, none decided "
                      "('artsentry register calibrate', 'register set-threshold' or --threshold)", file=sys.stderr)
            for res in reg.search(images, k=a.k, threshold=a.threshold, lots=a.lots):
                if res.error:
                    bad += 1
                    print(f"error: {res.error}", file=sys.stderr)
                elif a.json:
                    print(json.dumps(res.to_dict()))
                else:
                    best = ("no match" if res.no_match else f"match {res.matches[0].object_id}"
                            if res.no_match is False else "undecided")
                    shown = ", ".join((f"{m.object_id} {m.score:.3f} (similarity {m.similarity:.3f})"
                                       if m.score != m.similarity else f"{m.object_id} {m.score:.3f}")
                                      + (f" in tile {' '.join(f'{v:g}' for v in m.box)}" if m.box else "")
                                      for m in res.matches)
                    print(f"{_tsv(res.query)}\t{best}\t[{shown}]" + _quality_note(res))
            return EXIT_SOME_UNREADABLE if bad else 0
        elif a.action == "rebuild":
            print(f"index rebuilt from {len(reg.index)} photo vector(s)")
        elif a.action == "set-threshold":
            reg.set_threshold(a.threshold)
            print(f"no-match threshold set to {a.threshold}")
        elif a.action == "calibrate":
            images, problems = expand_images(a.photos)
            _print_errors(problems)
            done = reg.calibrate(images, a.target_fmr, progress=not a.quiet, lots=a.lots, compose=a.compose)
            _print_errors(done["unreadable"])
            print(f"{'lot ' if a.lots else ''}no-match threshold set to {done['threshold']:.6f}: "
                  f"{done['false_matches']} of {done['photos']} unregistered photo(s) still match (target false-match "
                  f"rate {a.target_fmr})")
            return EXIT_SOME_UNREADABLE if problems or done["unreadable"] else 0
    finally:
        reg.close()
    return 0


def cmd_screen(a) -> int:
    if (a.keep_fetched or a.fetch_private) and not a.fetch_urls:
        raise ValueError("--keep-fetched and --fetch-private apply to the images --fetch-urls downloads: give it too")
    model = None if a.model == "none" else model_folder(a.model)
    culture = model_folder(a.culture_model) if a.culture_model else None
    from .screen import Screener

    screener = Screener(model, a.register, culture_dir=culture, runtime=a.runtime, k=a.top_k, batch_size=a.batch_size,
                        num_workers=a.workers, fetch_urls=a.fetch_urls, keep_fetched=a.keep_fetched,
                        fetch_private=a.fetch_private,
                        progress=not a.quiet,
                        ray_address=a.ray_address, ray_workers=a.ray_workers, ray_cpus_per_worker=a.ray_cpus,
                        explain=a.explain, lots=a.lots)
    summary = screener.run(a.input, a.out, overwrite=a.overwrite, engine=a.engine, group_folders=a.group_folders,
                           review_weak=a.review_weak)
    run = summary["this_run"]
    print(f"screened {run['images']} image(s) in {run['seconds']:.1f} s ({run['images_per_second'] or 0:.1f} img/s); "
          f"{summary['recorded']}/{summary['rows']} recorded")
    if summary["complete"]:
        print(f"flagged {summary['flagged']}, register matches {summary['matched']}, unreadable "
              f"{summary['unreadable']}; review queue: {Path(a.out) / 'queue.html'} ({summary['queue']} photo(s)); "
              f"listings to review: {summary['listings_to_review']} of {summary['listings']} "
              f"({Path(a.out) / 'listings.csv'})")
        if summary.get("listings_not_screened") or summary.get("listings_partly_screened"):
            print(f"not screened (no photo could be read): {summary['listings_not_screened']} listing(s); partly "
                  f"screened: {summary['listings_partly_screened']} (status in listings.csv, reasons in errors.csv; "
                  f"once the cause is mended, 'artsentry screen {shlex.quote(str(Path(a.out) / 'errors.csv'))} --out "
                  "NEW_FOLDER' screens those photos alone)")
        if summary.get("weak_photos"):
            where = ", and in the queue)" if a.review_weak else "; --review-weak queues those passed)"
            print(f"{summary['weak_photos']} photo(s) blurred, grainy, dark, small or narrow: their decisions are weak "
                  f"evidence (quality_warnings in results.csv{where}")
        if summary.get("photos_in_several_listings"):
            print(f"{summary['photos_in_several_listings']} photo(s) appear, byte for byte, in more than one listing "
                  "(shared_with in results.csv and listings.csv)")
    if summary.get("not_screened"):
        left = summary["not_screened"]["files"]
        print(f"{len(left)} image(s) of the folder not screened: their file names are not UTF-8 (e.g. {left[0]}; all "
              f"in summary.json); rename them and run again")
    return EXIT_SOME_UNREADABLE if summary.get("unreadable") or summary.get("not_screened") else 0


def cmd_verify(a) -> int:
    paths = [Path(p) for p in a.out]
    if len(paths) > 1 or paths[0].is_file():  # logs: their chain only
        if a.refetch or a.fetch_private:
            raise ValueError("--refetch and --fetch-private check a screening run's photos: give its folder")
        return 1 if _verify_logs(paths, a.expect) else 0
    path = paths[0]
    if a.fetch_private and not a.refetch:
        raise ValueError("--fetch-private applies to the photos --refetch fetches: give it too")
    from .screen import EVIDENCE, verify_run

    v = verify_run(path, progress=not a.quiet, expect=a.expect, refetch=a.refetch, fetch_private=a.fetch_private)
    again = (f", gone {v['gone']}, placeholder {v['placeholder']}, unreachable {v['unreachable']}" if a.refetch
             else "")
    print(f"{v['verified']} of {v['records']} photo(s) hash as screened; changed {v['changed']}, missing "
          f"{v['missing']}{again}, fetched and not kept {v['not_kept']}, unreadable then {v['unread']}")
    for what in ("changed", "missing", "gone", "placeholder", "unreachable"):
        if f"{what}_photos" not in v:
            continue
        for p in v[f"{what}_photos"][:20]:
            print(f"{what}: {p}", file=sys.stderr)
        if len(v[f"{what}_photos"]) > 20:
            print(f"... and {len(v[f'{what}_photos']) - 20} more {what}", file=sys.stderr)
    print(f"{EVIDENCE} sha256 {v['evidence_sha256']}")
    chain, name, failed = v["chain"], EVIDENCE, bool(v["changed"] or v["missing"] or v.get("gone")
                                                     or v.get("placeholder"))
    return 1 if _print_chain(chain, name, a.expect) or failed else 0


def _verify_logs(paths: list[Path], expect: str | None) -> bool:
    """``verify`` of log files: each one's chain, the first record of each after the first linked to the
    last of the one before (a log rotated into several files, oldest first). True when something is not as
    recorded."""
    from . import chainlog

    checked, prev = [], None
    for path in paths:
        if path.is_dir():
            raise ValueError(f"{path}: a folder; give a screening run's folder alone, or log files")
        if not path.is_file():
            raise ValueError(f"{path}: no such file")
        data = path.read_bytes()
        if not data:
            raise ValueError(f"{path}: empty")
        chain = chainlog.check(data, prev)
        if not chain["records"]:  # a mistyped name (a CSV, the server's config) is not a log that checks out
            raise ValueError(f"{path}: not an audit or evidence log: it holds no JSON record")
        checked.append((path, chain))
        prev = chain["head"]
    if len(checked) == 1:
        path, chain = checked[0]
        if expect is not None:
            chain["expected"] = chainlog.find_head(chain, expect)
        return _print_chain(chain, path.name, expect)
    bad = False
    for i, (path, chain) in enumerate(checked):
        bad |= _print_chain(chain, path.name, None)
        first_line = next(n for n in range(1, len(chain["bad_lines"]) + 2) if n not in chain["bad_lines"])
        if i and chain["broken"] and chain["broken"][0] == first_line:  # its first record
            print(f"{path.name}: its first record does not link to the last of {checked[i - 1][0].name}: give the "
                  "files oldest first, none missing between them")
    if expect is not None:  # the records a head stood for, in whichever file they end
        before, found = 0, None
        for path, chain in checked:
            n = chainlog.find_head(chain, expect)
            if n is not None:
                found = (before + n, path.name)
                break
            if chain["broken"] or chain["continues"]:
                break  # a head past a break stands for records no longer as they were
            before += chain["records"]
        if found is None:
            print(f"the head {expect} stands for no record of these logs as they are now: the records it stood for "
                  "were changed or removed, or it is another log's")
            bad = True
        else:
            print(f"the head {expect} stands for the first {found[0]} record(s), up to {found[1]}: still there, "
                  "unchanged")
    return bad


def _print_chain(c: dict, name: str, expect: str | None) -> bool:
    """Say what a ``chainlog.report`` found; True when something is not as recorded."""
    linked = c["records"] - c["unchained"]
    bad = False
    if c["broken"]:
        lines = ", ".join(map(str, c["broken"][:10])) + (" ..." if len(c["broken"]) > 10 else "")
        print(f"{name}: chain BROKEN: the record on line(s) {lines} does not link to the record before it (a record "
              "there or before it was changed, removed or inserted)")
        bad = True
    elif linked:
        print(f"{name}: chain intact, {linked} linked record(s)")
    else:
        print(f"{name}: no linked records (written before records were chained)")
    if c["continues"]:
        print(f"{name}: its first record links to a record that is not in it: the records before it were removed, or "
              "it is a rotated log's later file: verify it after the earlier ones, oldest first (artsentry verify "
              f"LOG.1 LOG)")
        bad = True
    if c["unchained"] and linked:
        print(f"{name}: the first {c['unchained']} record(s) were written before records were chained: they do not "
              "link to each other (the chain covers only the last of them)")
    if c["bad_lines"]:
        print(f"{name}: {len(c['bad_lines'])} line(s) that are not records (a write cut short?), line(s) "
              + ", ".join(map(str, c["bad_lines"][:10])) + (" ..." if len(c["bad_lines"]) > 10 else ""),
              file=sys.stderr)
    if expect is not None:
        if c["expected"] is None:
            print(f"{name}: the head {expect} stands for no record of this log as it is now: the records it stood "
                  "for were changed or removed, or it is another log's")
            bad = True
        else:
            print(f"{name}: the head {expect} stands for the first {c['expected']} record(s): still there, unchanged")
    if linked:
        print(f"{name} head {c['head']}")
    return bad


def cmd_export(a) -> int:
    folder = model_folder(a.model)
    from .models.onnx import export_onnx

    block = export_onnx(folder, a.out)
    where = Path(a.out) if a.out else folder
    print(f"wrote {where / block['file']} (opset {block['opset']}; max |dprob| vs PyTorch "
          f"{block['parity']['max_prob_diff']:.1e})")
    return 0


def cmd_compare(a) -> int:
    from .evaluate import compare_predictions

    c = compare_predictions(a.a, a.b, split=a.split)
    if a.json:
        print(json.dumps(c))
        return 0
    left_out = [f"{c[k]} {what}" for k, what in (("only_in_a", "only in A"), ("only_in_b", "only in B"),
                                                  ("unreadable_in_either", "unreadable in either"))
                if c[k]]
    print(f"A: {c['a']}\nB: {c['b']}")
    print(f"{c['n']} photos judged by both" + (f" ({', '.join(left_out)}: left out)" if left_out else ""))
    for k in ("a", "b"):
        print(f"{k.upper()} accuracy {c['accuracy_' + k]:.4f}{_interval(c['ci95']['accuracy_' + k])}")
    print(f"both right {c['both_right']}, only A right {c['only_a_right']}, only B right {c['only_b_right']}, "
          f"both wrong {c['both_wrong']}")
    verdict = (f"{'B' if c['only_b_right'] > c['only_a_right'] else 'A'} is better on these photos"
               if c["p_value"] < 0.05 else "no evidence that either is better on these photos")
    print(f"B - A: {c['difference_points']:+.2f} points; McNemar exact p = {c['p_value']:.3g}: {verdict}")
    return 0


def cmd_soup(a) -> int:
    from .models.artifact import CONFIG_NAME

    out = Path(a.out)
    folders = [model_folder(m) for m in a.models]
    if out.exists() and any(out.resolve() == f.resolve() for f in folders):
        raise ValueError(f"--out {out} is one of the models of the soup; choose another folder")
    if out.exists() and any(out.iterdir()):
        if not a.overwrite:
            raise ValueError(f"{out} exists and is not empty; choose another --out or add --overwrite")
        if not (out / CONFIG_NAME).is_file():
            raise ValueError(f"{out} is not a model folder; --overwrite replaces only a model folder")
        shutil.rmtree(out)
    from .models.soup import make_soup

    folder, notes = make_soup(folders, out, a.weights)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"wrote the soup of {len(folders)} models to {folder}")
    if not a.no_export:
        from .models.onnx import export_onnx

        export_onnx(folder)
        print(f"exported {folder / 'model.onnx'}")
    return 0


def cmd_explain(a) -> int:
    if a.lots and a.register:
        raise ValueError("--lots explains a model's tile scan: give --model, not --register")
    if a.target is not None and a.register:  # it was ignored: the map explained the best match all the same
        raise ValueError("--target names a model's class; with --register the similarity to the best match is "
                         "explained")
    model = None if a.register else model_folder(a.model or DEFAULT_MODEL)
    files, problems = expand_images(a.images)
    _print_errors(problems)
    from .explain import explain_files

    results = explain_files(files, model=model, register=a.register, method=a.method, target=a.target,
                            patch=a.patch, stride=a.stride, out_dir=a.out, progress=not a.quiet and len(files) > 4,
                            lots=a.lots)
    n_bad = len(problems)
    for r in results:
        if r.error:
            n_bad += 1
            print(f"error: {r.error}", file=sys.stderr)
        else:
            print(f"{_tsv(r.source)}\t{r.target}\t{r.score:.4f}\t{_tsv(r.overlay)}")
    return EXIT_SOME_UNREADABLE if n_bad else 0


def cmd_project(a) -> int:
    from .data.manifest import read_manifest

    model = model_folder(a.model)
    df, _ = read_manifest(a.data)
    if a.split is not None:
        if "split" not in df.columns:
            raise ValueError(f"{a.data} has no split column: a run's manifest.csv holds its split (e.g. "
                             "runs/ivory/manifest.csv), or leave --split out to map every photo")
        df = df[df["split"] == a.split]
    methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    colour = [c.strip() for c in a.color_by.split(",")] if a.color_by else None
    from .explain.project import write_projection

    res = write_projection(model, df, a.out, methods=methods, color_by=colour, seed=a.seed, progress=not a.quiet)
    print(f"{res['images']} images mapped ({res['unreadable']} unreadable)\nhtml: {res['html']}\npng: {res['png']}")
    return 0


def _register_writes(register, token: str | None) -> str:
    """What the server's start line says of register writes."""
    if register is None:
        return "no register"
    if not register.writable:
        return "register writes disabled: the register is read-only here"
    return f"register writes {'need the token' if token else 'disabled: no token'}"


def cmd_serve(a) -> int:
    import uvicorn

    from .serve import ServeSettings, create_app

    model = a.model
    if model is None and a.culture_model is None and a.register is None:
        model = DEFAULT_MODEL
    if model is not None and model.lower() == "none":
        model = None
    for folder in (model, a.culture_model):
        if folder is not None:
            model_folder(folder)  # a wrong path is said at once, before the models load
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    settings = ServeSettings(model=Path(model) if model else None,
                             culture_model=Path(a.culture_model) if a.culture_model else None,
                             register=Path(a.register) if a.register else None,
                             token=a.token or os.environ.get("ARTSENTRY_TOKEN") or None,
                             max_upload_bytes=int(a.max_upload_mb * 1_000_000), allow_url_fetch=a.allow_url_fetch,
                             url_allowlist=tuple(a.url_allow_host), cors_origins=tuple(a.cors_origin),
                             inference_workers=a.workers, max_queue=a.max_queue, runtime=a.runtime,
                             max_listing_photos=a.max_listing_photos, audit_log=a.audit_log,
                             register_busy_seconds=a.register_wait)
    host = f"[{a.host}]" if ":" in a.host else a.host  # an IPv6 address, as a URL writes it
    # the address is taken first (not listened on until the models are loaded): a port in use was announced as
    # served, then uvicorn said otherwise and ended with its exit status 3 (here: 'some images could not be read')
    sock = socket.socket(socket.AF_INET6 if ":" in a.host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn's own: a port in TIME_WAIT is free
    try:
        sock.bind((a.host, a.port))
    except OSError as exc:
        sock.close()
        why = "another program listens there: --port N" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise ValueError(f"cannot listen on {host}:{a.port}: {why}") from None
    try:
        app = create_app(settings)
    except BaseException:
        sock.close()
        raise
    print(f"artsentry serving on http://{host}:{a.port}/  (API schema: /openapi.json; "
          f"{_register_writes(app.state.analyzer.register, settings.token)})", file=sys.stderr)
    # no colours: in a terminal they are escape sequences, which main()'s stderr writes as text (_Shown)
    config = uvicorn.Config(app, host=a.host, port=a.port, log_level="warning" if a.quiet else "info",
                            use_colors=False)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn raises the stop again once it has shut down; a clean stop (as uvicorn.run)
        pass
    return 0


COMMANDS = {"train": cmd_train, "train-embedder": cmd_train_embedder, "evaluate": cmd_evaluate,
            "predict": cmd_predict, "collect": cmd_collect, "build": cmd_build, "register": cmd_register, "screen": cmd_screen, "verify": cmd_verify, "export": cmd_export,
            "soup": cmd_soup, "compare": cmd_compare,
            "explain": cmd_explain, "project": cmd_project, "serve": cmd_serve}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    streams = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Shown(sys.stdout), _Shown(sys.stderr, progress=True)
    try:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")  # on the wrapped stderr
        return _run(args)
    finally:
        sys.stdout, sys.stderr = streams


#: what a terminal takes as a command, not a character: C0 controls but tab and line feed, DEL, C1 controls
#: (U+009B is CSI to some terminals), and Unicode's bidirectional overrides and isolates
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
#: a progress bar's own writes on stderr: its line drawn again from its start ("\r"), and tqdm's moves down
#: and back up to a bar drawn below another (a write of line feeds and ESC [ A alone)
_BAR_MOVE = re.compile(r"(?:\n|\x1b\[A)*")


class _Shown:
    """A text stream writing control characters as escapes (ESC as the four characters \\x1b): file
    names, listing ids, titles and object ids come from outside (a seized drive, a marketplace scrape), and
    one holding ESC [ 8 m hid the rest of its line in the analyst's terminal ("... ivory  FLAG" unseen);
    others move the cursor, erase lines, set the window title or the clipboard (OSC 52). ``progress``: the
    stream progress bars draw on, which keeps their carriage returns and cursor moves. A character the
    stream's encoding lacks is written as its escape too."""

    def __init__(self, stream, progress: bool = False):
        self._stream, self._progress = stream, progress

    def write(self, text: str) -> int:
        if self._progress and _BAR_MOVE.fullmatch(text):
            return self._put(text)
        if self._progress:  # a carriage return at the write's either end only: a bar's, not a name's
            start = "\r" if text.startswith("\r") else ""
            end = "\r" if text.endswith("\r") and len(text) > len(start) else ""
            return self._put(start + _escaped(text[len(start):len(text) - len(end)]) + end)
        return self._put(_escaped(text))

    def _put(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except UnicodeEncodeError:  # a terminal or file in an encoding without them (LANG=en_US.ISO-8859-1):
            encoding = self._stream.encoding  # "象牙.jpg" as \u8c61\u7259.jpg, not the command's end
            return self._stream.write(text.encode(encoding, "backslashreplace").decode(encoding))

    def __getattr__(self, name):  # flush, fileno, isatty, encoding...: the stream's own
        return getattr(self._stream, name)


def _escaped(text: str) -> str:
    return _CONTROLS.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def _run(args) -> int:
    # Pillow logs why a hostile file fails ("ERROR: More samples per pixel than can be decoded"),
    # naming no file, just before the loader's own line for it ("error: x.tif: not a recognised image
    # format"): in a scan it read as a fatal error of the run
    logging.getLogger("PIL").setLevel(logging.CRITICAL)
    from .memory import keep_freed_memory

    keep_freed_memory()  # before the first large tensor: fine-tuning steps 2x faster (memory.py)
    from .errors import ArtsentryError  # each module's own error derives from it: no heavy import here
    from .files import disk_full

    terminated: list = []
    try:
        with _stop_on_sigterm(terminated):
            return COMMANDS[args.command](args)
    except BrokenPipeError:
        # the reader of the output went away (`artsentry predict photos/ | head`): stop quietly, as
        # Unix tools do, instead of a traceback; stdout is pointed at /dev/null so that the flush at
        # exit does not raise again (the recipe of Python's signal module documentation)
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):  # a stdout with no file behind it (an embedding program's)
            pass
        return EXIT_BROKEN_PIPE
    except (ArtsentryError, ValueError, OSError, sqlite3.Error) as exc:
        hint = ""
        if getattr(exc, "folder", None) == Path(DEFAULT_MODEL):  # ModelNotFound for the default model
            hint = " (the default model: train it first with `make ivory`, see README, or pass --model)"
        if disk_full(exc):  # what was done is kept: say so, and how to go on
            again = _resumed_by_running_again(args)
            hint = f"; free some disk space{', then' + again[1:] if again else ''}"
        if isinstance(exc, OSError) and not isinstance(exc, ArtsentryError) and exc.strerror:
            # a full disk, a folder without permission...: the file when the error names one, no "[Errno 28]"
            said = f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
        else:
            said = " ".join(str(exc).split())  # one line, even when a library's message has several
        _end_progress_bars()
        print(f"artsentry {args.command}: error: {said}{hint}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        again = _resumed_by_running_again(args)
        _end_progress_bars()
        print(f"artsentry {args.command}: {'terminated' if terminated else 'interrupted'}{again}", file=sys.stderr)
        return 143 if terminated else 130


def _end_progress_bars() -> None:
    """Close the progress bars a stopped command left open, before its last line: a bar in a loop the stop
    left is closed only when the loop's frame goes, so on a log file (no terminal) the line ran on from the
    bar ('... 352/2829 [00:08, flagged=338]artsentry screen: interrupted') and the bar was drawn again after."""
    std = sys.modules.get("tqdm.std")  # not imported: no bar was made
    for bar in list(std.tqdm._instances) if std else ():  # every bar, tqdm.auto's too (a subclass's)
        bar.close()


def _resumed_by_running_again(args) -> str:
    """``RESUMED_BY_RUNNING_AGAIN``'s words for the command (and action) ``args`` ran, or ""."""
    return RESUMED_BY_RUNNING_AGAIN.get(f"{args.command} {getattr(args, 'action', '')}".strip(), "")


#: what running an interrupted command again does, for the commands that pick up where they stopped
RESUMED_BY_RUNNING_AGAIN = {
    "train": "; the same command resumes the run from its last checkpoint",
    "collect": "; the same command continues the crawl where it stopped",
    "screen": "; the same command resumes the screening where it stopped",
    "register import": "; the same command goes on (photos already registered are skipped)",
}


#: how long a command stopped by SIGTERM may take to shut its workers down before it is ended outright
UNWIND_SECONDS = 30


@contextlib.contextmanager
def _stop_on_sigterm(came: list):
    """While a command runs, SIGTERM (``kill``, ``timeout``, a service manager) stops it as Ctrl-C does,
    unwinding instead of dying at once: a killed training never shut its image-decoding workers down, and
    they and the process that forked them stayed behind holding ~1.2 GB. ``came`` gets the signal once one
    came (main's exit status reports it); the previous handler is put back after. The stop is bounded: a
    second SIGTERM, or a clean-up still running after UNWIND_SECONDS, ends the process at once as before."""
    def stop(signum, frame):
        came.append(signum)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the next one is not asked twice
        signal.alarm(UNWIND_SECONDS)  # SIGALRM's default action ends the process if unwinding hangs
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():  # signals reach only the main thread
        yield
        return
    before = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


if __name__ == "__main__":
    sys.exit(main())
