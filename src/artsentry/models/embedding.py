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

    def describe(self) -> str:
        """The pooling, in words (for config.json)."""
        parts = {"attention+gem": "softmax attention over positions and generalised mean (p={p}), concatenated",
                 "attention": "softmax attention over positions", "gem": "generalised mean (p={p}) over positions",
                 "mean": "mean over positions"}[self.pooling].format(p=self.gem_p)
        return f"{self.pooling}: {parts}, LayerNorm, linear projection"

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
                 pretrained: bool = True, trained_stages: int = 0):
        super().__init__()
        if not backbone.startswith("efficientnet_"):
            raise ValueError(f"embedding backbones are EfficientNet-Lite networks, not {backbone!r}")
        net = create_efficientnet_lite(backbone.split("_", 1)[1], pretrained=pretrained)
        net.reset_classifier(0, "")  # no pooling: forward_features gives the map
        self.backbone = net
        self.num_features = net.num_features
        self.head = RetrievalHead(net.num_features, dim, pooling)
        self.dim = dim
        n_stages = len(net.blocks)
        if not 0 <= trained_stages <= n_stages:
            raise ValueError(f"trained_stages must be in [0, {n_stages}]")
        #: the last ``trained_stages`` stages (and the final 1x1 conv) learn for retrieval; the
        #: rest stays as pretrained
        self.trained_stages = trained_stages
        self.arch_config = {"task": "embedding", "name": backbone, "dim": dim, "pooling": pooling,
                            "trained_stages": trained_stages}

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """The frozen part: stem and the first stages (the input of ``tail``)."""
        b = self.backbone
        x = b.bn1(b.conv_stem(x))
        for stage in b.blocks[: len(b.blocks) - self.trained_stages]:
            x = stage(x)
        return x

    def tail(self, z: torch.Tensor) -> torch.Tensor:
        """The trained stages and the final 1x1 conv: trunk output -> feature map. With no
        trained stages, the feature map itself is the trunk's output (tail = identity)."""
        if self.trained_stages == 0:
            return z
        b = self.backbone
        for stage in b.blocks[len(b.blocks) - self.trained_stages:]:
            z = stage(z)
        return b.bn2(b.conv_head(z))

    def trunk_output(self, x: torch.Tensor) -> torch.Tensor:
        """What training caches per view: the trunk's output, or the whole feature map when
        only the head learns."""
        return self.trunk(x) if self.trained_stages else self.backbone.forward_features(x)

    def tail_parameters(self):
        if self.trained_stages == 0:
            return []
        b = self.backbone
        return [p for m in [*b.blocks[len(b.blocks) - self.trained_stages:], b.conv_head, b.bn2]
                for p in m.parameters()]

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.head(self.feature_map(x)), dim=1)


def embedding_from_config(arch: dict) -> EmbeddingNet:
    return EmbeddingNet(arch["name"], int(arch["dim"]), arch["pooling"], pretrained=False,
                        trained_stages=int(arch.get("trained_stages", 0)))
