"""Image embeddings for the register: a backbone's pooled features, L2-normalised.

``Embedder.from_spec("pretrained:efficientnet_lite0")`` uses the ImageNet
backbone as shipped; ``Embedder.from_spec("runs/ivory/model")`` uses the
backbone of a trained classifier. Either way the embedding is the global average
pool of the last convolutional stage (the input of the classifier head), 1280
numbers for EfficientNet-Lite0, divided by its L2 norm.
``Embedder.from_spec("runs/embedder/model")`` uses a retrieval embedding trained by
``artsentry train-embedder`` (``artsentry.index.metric``): attention and GeM pooling of
the same stage, projected to 256 numbers, L2-normalised.

``resize`` reads photos another way than the spec's own preprocessing says (``data.transforms``:
``fit``, ``squash``...); a register keeps the mode it was made with and reads every photo so.

``flip=True`` embeds each photo as the normalised sum of its embedding and its mirror
image's (test-time augmentation; twice the compute). A listing photo is as often mirrored
as not, so a register uses the same setting for the photos it holds and the ones it searches.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..data.images import ImageSource, as_sources, source_names
from ..data.transforms import Preprocessing, eval_transform
from ..inference import iter_image_batches
from ..models import create_model, default_preprocessing, inference_batch

PRETRAINED_PREFIX = "pretrained:"


def spec_key(spec: str) -> str:
    """An embedder spec as a register records it: ``pretrained:ARCH`` as given, a model folder by its
    resolved path (a training run's folder, as ``--model`` takes it everywhere, by its ``model/``)."""
    from ..models.artifact import resolve_model_dir

    return spec if spec.startswith(PRETRAINED_PREFIX) else str(resolve_model_dir(spec).resolve())


class Embedder:
    def __init__(self, backbone: torch.nn.Module, preprocessing: Preprocessing, spec: str, dim: int,
                 batch_size: int = 32, layer: str | None = None, pooling: str | None = None, flip: bool = False,
                 weights_sha256: str | None = None):
        self.backbone = backbone.eval().to(memory_format=torch.channels_last)
        self.preprocessing = preprocessing
        self.transform = eval_transform(preprocessing)
        self.spec = spec
        self.dim = dim
        self.batch_size = inference_batch(batch_size, preprocessing.input_size)  # fewer at large sizes
        self.layer = layer or "backbone output: global average pool of the last conv stage, before the classifier head"
        self.pooling = pooling or "mean over spatial positions"
        self.flip = bool(flip)
        # a model folder's weights, as loaded: a register's vectors are only comparable with the same ones
        self.weights_sha256 = weights_sha256

    @classmethod
    def from_spec(cls, spec: str, flip: bool = False, resize: str | None = None) -> "Embedder":
        emb = cls._from_spec(spec, flip)
        if resize is not None and resize != emb.preprocessing.resize:
            from dataclasses import replace

            emb.preprocessing = replace(emb.preprocessing, resize=resize)
            emb.transform = eval_transform(emb.preprocessing)
        return emb

    @classmethod
    def _from_spec(cls, spec: str, flip: bool) -> "Embedder":
        if spec.startswith(PRETRAINED_PREFIX):
            arch = spec[len(PRETRAINED_PREFIX):]
            if arch == "smallcnn":
                raise ValueError("smallcnn has no pretrained weights to embed with")
            model = create_model(arch, 2, pretrained=True)
            return cls(model.backbone, default_preprocessing(arch), spec, model.num_features, flip=flip)
        from ..models.artifact import is_embedding, load_embedding, load_model, read_config

        spec = spec_key(spec)
        if is_embedding(read_config(spec)):
            net, config = load_embedding(spec)
            block = config["embedding"]
            return cls(net, Preprocessing.from_dict(config["preprocessing"]), spec, net.dim,
                       layer=block["layer"], pooling=block["pooling"], flip=flip, weights_sha256=net.weights_sha256)
        model, config = load_model(Path(spec))
        pooling = config["architecture"].get("pooling", "avg")
        texture = pooling != "avg"
        return cls(model.backbone, Preprocessing.from_dict(config["preprocessing"]), spec,
                   model.num_features, flip=flip, weights_sha256=model.weights_sha256,
                   layer=config["architecture"]["embedding"] if texture else None,
                   pooling={"texture": "second-order (texture)",
                            "texture+avg": "second-order (texture) and mean over spatial positions"}.get(pooling))

    def describe(self) -> dict:
        """What makes two vectors comparable: the network (a model folder's by its weights' SHA-256),
        the layer and pooling, mirror images or not, and how a photo becomes the input."""
        described = {
            "spec": self.spec,
            "dim": self.dim,
            "layer": self.layer,
            "pooling": self.pooling,
            "normalisation": "L2",
            "flip": self.flip,
            "preprocessing": self.preprocessing.to_dict(),
        }
        if self.weights_sha256 is not None:
            described["weights_sha256"] = self.weights_sha256
        return described

    @torch.inference_mode()
    def embed_tensor(self, x: torch.Tensor) -> np.ndarray:
        x = x.contiguous(memory_format=torch.channels_last)
        f = torch.nn.functional.normalize(self.backbone(x).float(), dim=1)
        if self.flip:
            f = f + torch.nn.functional.normalize(self.backbone(x.flip(-1)).float(), dim=1)
            f = torch.nn.functional.normalize(f, dim=1)
        return f.numpy()

    def embed_files(self, sources: Sequence[ImageSource], names: Sequence[str] | None = None,
                    progress: bool = False, with_quality: bool = False, tiles: int | None = None):
        """(vectors, errors): ``vectors[i]`` is NaN where ``errors[i]`` says why image i was unreadable.
        ``with_quality``: (vectors, errors, qualities), each readable photo's ``data.quality``
        measurements as a dict (None where unreadable). ``tiles`` (a grid size, ``lots``): each
        photo's vectors are those of the whole photo and of its tiles, ``vectors[i]`` (1 + tiles², dim)."""
        from dataclasses import replace

        sources = as_sources(sources)
        names = source_names(sources, names)
        transform, pre, crops = self.transform, self.preprocessing, ()
        if tiles:
            from ..lots import TILE_FRACTION, LotTransform

            transform, crops = LotTransform(self.transform, tiles), (1 + tiles * tiles,)
            # decoded large enough for the tiles to keep their detail
            pre = replace(pre, input_size=round(pre.input_size / TILE_FRACTION))
        out = np.full((len(sources), *crops, self.dim), np.nan, dtype=np.float32)
        errors: list[str | None] = [None] * len(sources)
        qualities: list[dict | None] = [None] * len(sources)
        # with tiles, a batch of photos is ten times the crops: as many crops per forward pass as without
        per_batch = max(1, self.batch_size // crops[0]) if tiles else self.batch_size
        for batch in iter_image_batches(sources, transform, pre, names=names,
                                        batch_size=per_batch, progress=progress, desc="embed",
                                        quality=with_quality):
            for idx, err in batch.errors:
                errors[idx] = err
            if len(batch.index):
                x = batch.x.flatten(0, 1) if tiles else batch.x
                out[batch.index] = self.embed_tensor(x).reshape(len(batch.index), *crops, self.dim)
            for idx, q in zip(batch.index, batch.quality or ()):
                qualities[idx] = q.to_dict()
        return (out, errors, qualities) if with_quality else (out, errors)
