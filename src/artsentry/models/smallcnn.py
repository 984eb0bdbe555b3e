"""The seed study's small CNN, kept as the comparison baseline.

Conv32-3, max-pool, Conv32-4, max-pool, Conv64-3, max-pool, Dense64 (ReLU,
dropout 0.5), output; 150x150 RGB input scaled to [0, 1], as in the published
Keras model (82.4% test accuracy on Met ivory vs ceramics).
"""

from __future__ import annotations

import torch
from torch import nn

INPUT_SIZE = 150
#: the smallest input its three convolution + pooling stages leave a feature map of (24 px: 1 x 1)
MIN_INPUT_SIZE = 24


class SmallCNN(nn.Module):
    def __init__(self, input_size: int = INPUT_SIZE):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 4), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Flatten(),
        )
        with torch.no_grad():
            flat = self.features(torch.zeros(1, 3, input_size, input_size)).shape[1]
        self.fc = nn.Sequential(nn.Linear(flat, 64), nn.ReLU(inplace=True))
        self.num_features = 64

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Image batch -> 64-d penultimate features."""
        return self.fc(self.features(x))
