"""The network every artsentry image model is: ``backbone`` -> ``head``.

``backbone(x)`` gives one feature vector per image (the embedding used by the
register and the feature maps); ``head`` maps it to class logits. For transfer
learning the head is BatchNorm, Linear, ReLU, Dropout 0.5, Linear.
"""

from __future__ import annotations

import torch
from torch import nn


def transfer_head(in_features: int, num_classes: int, hidden: int = 256, dropout: float = 0.5) -> nn.Sequential:
    return nn.Sequential(
        nn.BatchNorm1d(in_features),
        nn.Linear(in_features, hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(hidden, num_classes),
    )


class ImageClassifier(nn.Module):
    def __init__(self, backbone: nn.Module, head: nn.Module, num_features: int):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (before the head), one row per image."""
        return self.backbone(x)

    def set_backbone_trainable(self, trainable: bool) -> None:
        for p in self.backbone.parameters():
            p.requires_grad_(trainable)
