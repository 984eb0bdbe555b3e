"""Retrieval embedding network: an EfficientNet-Lite backbone's last feature map, pooled by a
learned attention over positions (plus generalised-mean pooling), projected to ``dim``
numbers and L2-normalised.

Pooled ImageNet features average the whole frame, so an object photographed on a cluttered
table is described partly by the table. The attention weights let a network trained for
retrieval (``artsentry.index.metric``) pool mostly over the object.
"""

from __future__ import annotations

import torch
from torch import nn

from .efficientnet_lite import create_efficientnet_lite

POOLINGS = ("attention+gem", "attention", "gem", "mean")


class RetrievalHead(nn.Module):
    """Feature map (B, C, H, W) -> embedding (B, dim), not yet normalised."""

    def __init__(self, channels: int, dim: int = 256, pooling: str = "attention+gem", hidden: int = 256,
                 gem_p: float = 3.0):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, not {pooling!r}")
        self.pooling = pooling
        self.gem_p = gem_p
        self.attention = (nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, 1, 1))
                          if "attention" in pooling else None)
        width = channels * (2 if pooling == "attention+gem" else 1)
        self.norm = nn.LayerNorm(width)
        self.project = nn.Linear(width, dim)

    def attention_map(self, fmap: torch.Tensor) -> torch.Tensor:
        """Weights over positions (B, H, W), summing to 1 per image."""
        b, _, h, w = fmap.shape
        return torch.softmax(self.attention(fmap).flatten(1), dim=1).view(b, h, w)

    def pool(self, fmap: torch.Tensor) -> torch.Tensor:
        flat = fmap.flatten(2)  # (B, C, HW)
        parts = []
        if self.attention is not None:
            a = self.attention_map(fmap).flatten(1)
            parts.append(torch.bmm(flat, a.unsqueeze(2)).squeeze(2))
        if "gem" in self.pooling:
            parts.append(flat.clamp(min=1e-6).pow(self.gem_p).mean(2).pow(1.0 / self.gem_p))
        if self.pooling == "mean":
            parts.append(flat.mean(2))
        return torch.cat(parts, dim=1)

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        return self.project(self.norm(self.pool(fmap.float())))


class EmbeddingNet(nn.Module):
    """Backbone feature map -> ``RetrievalHead`` -> L2-normalised embedding."""

    def __init__(self, backbone: str = "efficientnet_lite0", dim: int = 256, pooling: str = "attention+gem",
                 pretrained: bool = True):
        super().__init__()
        if not backbone.startswith("efficientnet_"):
            raise ValueError(f"embedding backbones are EfficientNet-Lite networks, not {backbone!r}")
        net = create_efficientnet_lite(backbone.split("_", 1)[1], pretrained=pretrained)
        net.reset_classifier(0, "")  # no pooling: forward_features gives the map
        self.backbone = net
        self.num_features = net.num_features
        self.head = RetrievalHead(net.num_features, dim, pooling)
        self.dim = dim
        self.arch_config = {"task": "embedding", "name": backbone, "dim": dim, "pooling": pooling}

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.head(self.feature_map(x)), dim=1)


def embedding_from_config(arch: dict) -> EmbeddingNet:
    return EmbeddingNet(arch["name"], int(arch["dim"]), arch["pooling"], pretrained=False)
