"""Second-order ("bilinear") pooling of a mid-level feature map: a texture descriptor.

Ivory and glazed ceramics differ in surface texture (grain, cracks, glaze sheen) more
than in shape, and texture is what the channel *co-occurrences* of a mid-level feature
map describe (Lin et al., "Bilinear CNN models for fine-grained visual recognition",
2015; Cimpoi et al., "Deep filter banks for texture recognition", 2015). Global average
pooling of the last stage keeps only each channel's mean, which mostly encodes what the
object is.

``SecondOrderPool`` maps a feature map ``f`` (n, C, H, W) to the upper triangle of its
second-moment matrix ``G = mean over positions of f f^T`` (C (C + 1) / 2 numbers per
image), then takes the signed square root ``sign(g) sqrt(|g| + eps)`` and divides the vector
by its L2 norm (both as in the B-CNN paper: they damp the few large co-occurrences).

``TextureBackbone`` runs an EfficientNet-Lite up to the end of one stage (by default stage
4 of 0..6: 112 channels at 1/16 of the input size for Lite0; the later stages are not
run) and pools that map this way. Measured on met-ivory, frozen ImageNet features and a
logistic regression: 0.950 test accuracy on average over five splits against 0.910 for the
average-pooled last stage (BENCHMARKS.md, "Texture pooling").

With ``keep_average`` the network is not cut: the later stages run too, and the
descriptor is followed by the usual global average of the last stage (the ``avg``
pooling's 1,280 numbers for Lite0): the material cue of stage 4 beside the object-level
summary of the last stage, one vector for the head (``--pooling texture+avg``).
"""

from __future__ import annotations

import torch
from torch import nn

#: the stage (index into the network's ``blocks``) pooled by default
DEFAULT_STAGE = 4


class SecondOrderPool(nn.Module):
    """(n, C, H, W) -> (n, C (C + 1) / 2): upper triangle of the mean outer product of the
    channel vectors over positions, signed square root, L2-normalised."""

    def __init__(self, channels: int, eps: float = 1e-8):
        super().__init__()
        self.channels = int(channels)
        self.eps = float(eps)
        rows, cols = torch.triu_indices(self.channels, self.channels)
        # flat positions in the C x C matrix; a buffer so it follows .to(), not saved in weights
        self.register_buffer("index", rows * self.channels + cols, persistent=False)

    @property
    def out_features(self) -> int:
        return self.channels * (self.channels + 1) // 2

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        n, c, h, w = f.shape
        if c != self.channels:
            raise ValueError(f"expected {self.channels} channels, got {c}")
        x = f.float().reshape(n, c, h * w)
        gram = torch.bmm(x, x.transpose(1, 2)) / (h * w)
        v = gram.reshape(n, c * c).index_select(1, self.index)
        v = torch.sign(v) * torch.sqrt(v.abs() + self.eps)
        return nn.functional.normalize(v, dim=1)


class TextureBackbone(nn.Module):
    """A timm EfficientNet run up to the end of ``stage`` and second-order pooled; with
    ``keep_average``, run to the end as well and the global average of its last feature map
    appended (``texture_features`` numbers first, then ``average_features``).

    ``feature_map`` is an identity module whose output is the pooled map, and ``cam_layer``
    names it as the map Grad-CAM explains: every path to the head starts from it (without
    ``keep_average`` it is also the network's last spatial map)."""

    def __init__(self, net: nn.Module, stage: int = DEFAULT_STAGE, keep_average: bool = False):
        super().__init__()
        blocks = net.blocks
        if not 0 <= stage < len(blocks):
            raise ValueError(f"pool stage must be in 0..{len(blocks) - 1}, not {stage}")
        if keep_average and stage == len(blocks) - 1:
            raise ValueError(f"the last stage ({stage}) leaves nothing to run after the texture pooling")
        self.conv_stem = net.conv_stem
        self.bn1 = net.bn1
        self.blocks = nn.Sequential(*list(blocks)[: stage + 1])
        channels = [m for m in self.blocks[-1][-1].modules() if isinstance(m, nn.Conv2d)][-1].out_channels
        self.feature_map = nn.Identity()
        self.pool = SecondOrderPool(channels)
        self.channels = channels
        self.texture_features = self.pool.out_features
        self.average_features = 0
        if keep_average:  # timm's names, so the later stages' weights keep their keys
            self.later_blocks = nn.Sequential(*list(blocks)[stage + 1 :])
            self.conv_head, self.bn2, self.global_pool = net.conv_head, net.bn2, net.global_pool
            self.average_features = int(net.num_features)
        self.num_features = self.texture_features + self.average_features

    @property
    def cam_layer(self) -> nn.Module:
        return self.feature_map

    def forward_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature_map(self.blocks(self.bn1(self.conv_stem(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.forward_map(x)
        texture = self.pool(f)
        if not self.average_features:
            return texture
        top = self.global_pool(self.bn2(self.conv_head(self.later_blocks(f)))).flatten(1)
        return torch.cat([texture, top.float()], dim=1)
