"""Batches of images for training and inference that survive bad files.

A file that fails to load yields an error record instead of an exception, so a
run over thousands of images reports the bad ones and finishes.
"""

from __future__ import annotations

import functools
import os
import select
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from .images import ImageLoadError, ImageSource, load_image
from .quality import assess_quality, measuring_draft


#: a prime larger than any dataset or step count here, so (seed, i) pairs never share a seed
_ITEM_STRIDE = 1_000_003


def item_seed(seed: int, i: int) -> int:
    """The seed of item ``i`` (a photo, a training step) of a run seeded with ``seed``: fixed, so a
    re-run or a resumed run draws the same, and distinct for every pair with ``0 <= i < 1_000_003``.
    The listing-style test pictures, the metric-learning re-shots and the training batches' random
    streams all derive their seeds here."""
    return seed * _ITEM_STRIDE + i


@dataclass
class Batch:
    x: torch.Tensor  # (n, 3, S, S), n may be 0; a tuple of them when the transform is a transforms.EachTransform
    y: torch.Tensor  # (n,) targets, -1 where unknown
    index: list[int]  # dataset index of each row of x
    errors: list[tuple[int, str]] = field(default_factory=list)  # (index, one-line reason)
    quality: list | None = None  # a quality.PhotoQuality per row of x, when the dataset assesses photos


class ImageDataset(Dataset):
    """``sources[i]`` (path or bytes) -> (tensor or None, target, i, error), and with
    ``quality=True`` a fifth item: the ``quality.PhotoQuality`` of the photo the transform got.

    ``draw_seed``: a random transform (training augmentation) draws photo i's randomness from
    ``item_seed(draw_seed, i)`` instead of the torch random state of the process that happens to
    apply it. The draws then depend neither on the number of decoding workers nor on where in an epoch
    a resumed run starts them, and the caller's own random state is left as it was."""

    def __init__(
        self,
        sources: Sequence[ImageSource],
        transform: Callable,
        targets: Sequence[int] | None = None,
        draft_size: tuple[int, int] | None = None,
        names: Sequence[str] | None = None,
        quality: bool = False,
        draw_seed: int | None = None,
    ):
        self.sources = list(sources)
        self.targets = list(targets) if targets is not None else [-1] * len(self.sources)
        self.transform = transform
        # measured photos are decoded at least at the measuring scale (data.quality.measuring_draft)
        self.draft_size = measuring_draft(draft_size) if quality else draft_size
        self.names = list(names) if names is not None else None
        self.quality = quality
        self.draw_seed = draw_seed

    def __len__(self) -> int:
        return len(self.sources)

    def prepare(self, img, i: int):
        """Hook between loading and the transform (identity here; see ``ListingStyleDataset``)."""
        return img

    def apply_transform(self, img, i: int):
        if self.draw_seed is None:
            return self.transform(img)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(item_seed(self.draw_seed, i))
            return self.transform(img)

    def __getitem__(self, i: int):
        name = self.names[i] if self.names is not None else None
        try:
            img = self.prepare(load_image(self.sources[i], name=name, draft_size=self.draft_size), i)
            item = (self.apply_transform(img, i), self.targets[i], i, "")
            return item + ((assess_quality(img),) if self.quality else ())
        except ImageLoadError as exc:
            return (None, self.targets[i], i, str(exc)) + ((None,) if self.quality else ())


def collate(items) -> Batch:
    good = [it for it in items if it[0] is not None]
    errors = [(it[2], it[3]) for it in items if it[0] is None]
    if good and isinstance(good[0][0], tuple):
        x = tuple(torch.stack(xs) for xs in zip(*(it[0] for it in good)))
    elif good:
        x = torch.stack([it[0] for it in good])
    else:
        x = torch.empty(0)
    y = torch.tensor([int(it[1]) for it in good], dtype=torch.long)
    quality = [it[4] for it in good] if items and len(items[0]) > 4 else None
    return Batch(x=x, y=y, index=[it[2] for it in good], errors=errors, quality=quality)


#: modules the workers' server imports once, so each worker starts in a fraction of a second
WORKER_PRELOAD = ["artsentry.data.dataset", "artsentry.data.listing", "artsentry.data.transforms"]


def worker_context():
    """Where decoding workers come from. In a process that keeps its freed memory
    (``memory.keep_freed_memory``, as the ``artsentry`` command does): a ``forkserver``, a small
    clean process started once. A fork would inherit the caller's whole kept heap (15 GB while
    fine-tuning with ``--consistency``) and its malloc settings, and such a worker grew by ~0.6 GB
    a minute re-photographing listing-style pictures until the kernel killed the training
    (BENCHMARKS.md, "Decoding workers"). Elsewhere: the platform default (None)."""
    import multiprocessing

    from ..memory import keeping_freed_memory

    if not keeping_freed_memory():
        return None
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(WORKER_PRELOAD)
    return ctx


def worker_init():
    """The ``worker_init_fn`` of every decoding loader: each worker ends when the process it
    decodes for ends, however that ends. PyTorch's own check watches a worker's parent, which for a
    forkserver's worker is the forkserver; and the forkserver stays up while any worker holds the write
    end of its "alive" pipe, as each one does. So a trainer killed outright (SIGKILL, the kernel's
    out-of-memory killer, a SIGTERM in the instant a loader starts its workers) left the forkserver and
    its workers waiting on each other for ever (~1.2 GB in all, by ``ps``, after a killed training on
    2026-12-04)."""
    return functools.partial(_end_with, os.getpid())


def worker_options(num_workers: int) -> dict:
    """The ``DataLoader`` arguments that say how ``num_workers`` decoding workers start: where they come
    from (``worker_context``) and that they end with their caller (``worker_init``); none without workers.
    Every loader of the package takes them from here."""
    if num_workers <= 0:
        return {}
    return {"multiprocessing_context": worker_context(), "worker_init_fn": worker_init()}


#: how often a worker looks for its caller where the kernel cannot tell it (no pidfd)
_PARENT_POLL_SECONDS = 1.0


def _end_with(caller: int, worker_id: int) -> None:
    try:
        pidfd = os.pidfd_open(caller)  # Linux >= 5.3: readable once the process has ended
    except ProcessLookupError:
        os._exit(0)  # it ended before this worker started
    except (AttributeError, OSError):
        pidfd = None

    def watch():
        if pidfd is not None:
            select.select([pidfd], [], [])
        else:
            while True:
                time.sleep(_PARENT_POLL_SECONDS)
                try:
                    os.kill(caller, 0)
                except OSError:  # gone (or its number now another user's process)
                    break
        os._exit(0)

    threading.Thread(target=watch, name="end-with-caller", daemon=True).start()


def make_loader(
    dataset: ImageDataset,
    batch_size: int = 32,
    shuffle: bool = False,
    num_workers: int = 0,
    generator: torch.Generator | None = None,
    sampler=None,
    collate_fn: Callable = collate,
) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle if sampler is None else False,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_fn,
        generator=generator,
        **worker_options(num_workers),
        persistent_workers=False,
        prefetch_factor=2 if num_workers > 0 else None,
    )
