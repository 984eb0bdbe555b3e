"""Are the explanations real? Two checks from the literature, as functions.

- ``square_dataset`` + ``mass_inside``: a synthetic task where a small coloured
  square decides the class (red: class 0, blue: class 1) on a busy background of
  grey blobs. A model that solved it can only have used the square, so a
  faithful heat map puts its mass there.
- ``randomisation_rank_correlation`` (Adebayo et al. 2018, "Sanity checks for
  saliency maps"): the maps of the trained network and of the same architecture
  with random weights must differ; a method whose maps survive randomisation is
  an edge detector, not an explanation.

``SquareNet`` is the small fully convolutional network the checks train (a
few seconds on a CPU): convolutions, then global max pooling, so its decision
can only come from where the evidence is.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..data.transforms import Preprocessing

#: inputs of the synthetic task are already in [0, 1]; identity normalisation
SQUARE_PREPROCESSING = Preprocessing(input_size=64, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


def square_dataset(n: int, seed: int, size: int = 64, square: int = 14, blobs: int = 3):
    """(x (n, 3, size, size) float in [0, 1], y (n,), masks (n, size, size) bool of the square)."""
    g = np.random.default_rng(seed)
    x = np.empty((n, size, size, 3), np.float32)
    y = np.arange(n) % 2
    masks = np.zeros((n, size, size), bool)
    for i in range(n):
        img = g.uniform(0.35, 0.65, 3)[None, None, :] + g.normal(0, 0.04, (size, size, 3))
        for _ in range(blobs):  # distractors: grey and pale blobs, same size as the square
            bx, by = g.integers(0, size - square, 2)
            img[by:by + square, bx:bx + square] = g.uniform(0.2, 0.8)
        sx, sy = g.integers(0, size - square, 2)
        img[sy:sy + square, sx:sx + square] = (0.85, 0.15, 0.15) if y[i] == 0 else (0.15, 0.15, 0.85)
        masks[i, sy:sy + square, sx:sx + square] = True
        x[i] = np.clip(img, 0, 1)
    return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(y), masks


class SquareNet(nn.Module):
    def __init__(self, classes: int = 2):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
        )
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.fc = nn.Linear(16, classes)

    def evidence(self, x):
        return self.pool(self.features(x)).flatten(1)

    def forward(self, x):
        return self.fc(self.evidence(x))


def train_square_net(x: torch.Tensor, y: torch.Tensor, epochs: int = 8, seed: int = 0,
                     weight_decay: float = 0.0, sparsity: float = 0.0) -> SquareNet:
    torch.manual_seed(seed)
    net = SquareNet()
    opt = torch.optim.AdamW(net.parameters(), 3e-3, weight_decay=weight_decay)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        net.train()
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(perm), 32):
            idx = perm[i:i + 32]
            ev = net.evidence(x[idx])
            loss = nn.functional.cross_entropy(net.fc(ev), y[idx]) + sparsity * ev.mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()


def mass_inside(heat: np.ndarray, mask: np.ndarray) -> float:
    """Share of a heat map's total mass that falls inside ``mask`` (same shape, bool)."""
    total = float(heat.sum())
    return float(heat[mask].sum()) / total if total > 0 else 0.0


def randomisation_rank_correlation(trained: np.ndarray, randomised: np.ndarray) -> float:
    """Mean Spearman rank correlation between paired maps (n, H, W); constant maps count as 0."""
    from scipy.stats import spearmanr

    out = []
    for a, b in zip(trained, randomised):
        r = spearmanr(a.ravel(), b.ravel())[0] if a.std() > 0 and b.std() > 0 else 0.0
        out.append(0.0 if np.isnan(r) else r)
    return float(np.mean(out))
