"""Model artifacts: a folder with ``model.safetensors`` and ``config.json``.

``config.json`` says everything needed to use the weights: architecture,
labels, preprocessing, decision threshold, and how the model was made (data,
training settings, validation and test metrics). Weights are safetensors:
loading never unpickles anything.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import stat
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from .. import __version__
from ..errors import ArtsentryError
from ..files import atomic_path, write_text_atomic

if TYPE_CHECKING:  # PyTorch is imported where weights are read or written: reading a config.json needs none
    from ..data.transforms import Preprocessing
    from .classifier import ImageClassifier

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT = "artsentry-model"
FORMAT_VERSION = 1


class ArtifactError(ArtsentryError, ValueError):
    """A model folder is missing, incomplete or inconsistent."""


class ModelNotFound(ArtifactError):
    """No folder at the model path (``folder``: the path asked for)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        super().__init__(f"{folder}: no such model folder")


def resolve_model_dir(path: str | Path) -> Path:
    """The model folder a user named: ``path`` itself, or ``path/model`` when ``path`` is a training
    run's folder (``train --out RUN`` writes the model to ``RUN/model``)."""
    path = Path(path)
    return path / "model" if (path / "model" / CONFIG_NAME).is_file() else path


def save_tensors_atomic(path: str | Path, tensors: dict, metadata: dict[str, str] | None = None) -> None:
    """Write ``tensors`` as a safetensors file at ``path`` through ``files.atomic_path``, with the
    permissions any other file this process creates gets. safetensors >= 0.8 writes through a temporary
    file created 0600 whatever the umask (safetensors/safetensors#782), which left weights, checkpoints
    and feature caches unreadable to a service or colleague that could read the JSON beside them."""
    with atomic_path(path) as tmp:
        tmp.unlink(missing_ok=True)  # a leftover of a killed write under this name keeps its old mode
        tmp.touch()  # created as open() creates files: 0666 less the umask
        mode = stat.S_IMODE(tmp.stat().st_mode)
        from safetensors import SafetensorError
        from safetensors.torch import save_file

        try:
            save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)
        except SafetensorError as exc:  # its I/O errors are no OSError: a full disk ended a training in a traceback
            code = re.search(r"os error (\d+)", str(exc))
            if code is None:
                raise
            raise OSError(int(code.group(1)), os.strerror(int(code.group(1))), str(path)) from None
        os.chmod(tmp, mode)


# The libraries whose versions can change what a training run computes (decode, resize,
# augmentation, arithmetic): two runs of one command are only comparable with these equal.
ENVIRONMENT_PACKAGES = ("torch", "torchvision", "timm", "numpy", "pillow", "scikit-learn", "safetensors")


def environment() -> dict:
    """Python, machine and the versions of ``ENVIRONMENT_PACKAGES`` (absent ones omitted)."""
    env = {"python": platform.python_version(), "machine": platform.machine()}
    for name in ENVIRONMENT_PACKAGES:
        try:
            env[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return env


def _write_artifact(module, folder: Path, config: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    save_tensors_atomic(folder / WEIGHTS_NAME, module.state_dict(), metadata={"format": FORMAT})
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "artsentry_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "environment": environment(),
        **config,
    }
    write_text_atomic(folder / CONFIG_NAME, json.dumps(config, indent=2, sort_keys=False) + "\n")
    return folder


def save_model(model: ImageClassifier, folder: str | Path, *, labels: list[str], preprocessing: Preprocessing,
               threshold: float | None = None, positive_label: str | None = None, **extra) -> Path:
    """Write ``model`` and its config into ``folder`` (created if needed)."""
    if len(labels) != model.arch_config["num_classes"]:
        raise ValueError(f"{len(labels)} labels for a {model.arch_config['num_classes']}-class model")
    return _write_artifact(model, Path(folder), {
        "architecture": model.arch_config,
        "labels": list(labels),
        "positive_label": positive_label,
        "threshold": threshold,
        "preprocessing": preprocessing.to_dict(),
        **extra,
    })


def save_embedding(net, folder: str | Path, *, preprocessing: Preprocessing, **extra) -> Path:
    """Write a retrieval ``EmbeddingNet`` and its config (``architecture.task == "embedding"``)."""
    return _write_artifact(net, Path(folder), {"architecture": net.arch_config,
                                                "preprocessing": preprocessing.to_dict(), **extra})


def is_embedding(config: dict) -> bool:
    arch = config.get("architecture")
    return isinstance(arch, dict) and arch.get("task") == "embedding"


def calibration_temperature(config: dict) -> float:
    """The temperature a model's logits are divided by before the softmax (``calibration`` in
    its config, fitted by ``evaluate.calibrate_predictor``); 1 for a model never calibrated."""
    t = (config.get("calibration") or {}).get("temperature", 1.0)
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not t > 0:
        raise ArtifactError(f"config.json: calibration temperature must be a positive number, not {t!r}")
    return float(t)


def read_config(folder: str | Path) -> dict:
    folder = Path(folder)
    path = folder / CONFIG_NAME
    if not folder.is_dir():
        raise ModelNotFound(folder)
    if not path.is_file():
        raise ArtifactError(f"{folder}: not a model folder (no {CONFIG_NAME})")
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path}: unreadable config ({exc})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ArtifactError(f"{path}: not an artsentry model config")
    version = config.get("format_version", 0)
    if isinstance(version, bool) or not isinstance(version, int):
        raise _damaged(path, f"format_version must be a whole number, not {version!r}")
    if version > FORMAT_VERSION:
        raise ArtifactError(f"{path}: made by a newer artsentry (format {version}); upgrade")
    return config


def load_model(folder: str | Path) -> tuple[ImageClassifier, dict]:
    """Load a classifier's artifact folder. Returns the network (in eval mode) and its config."""
    folder = Path(folder)
    config = read_config(folder)
    if is_embedding(config):
        raise ArtifactError(f"{folder} is a retrieval embedding model, not a classifier: use it for a register "
                            f"(artsentry register create REG --embedder {folder})")
    check_classifier_config(config, folder / CONFIG_NAME)
    from .factory import model_from_config

    return _load_weights(folder, _network(config, folder / CONFIG_NAME, model_from_config)), config


def _damaged(path: Path, what: str) -> ArtifactError:
    return ArtifactError(f"{path}: {what} (the file was edited or is damaged)")


def _network(config: dict, path: Path, build):
    """The untrained network ``build`` makes from the config's architecture block, once its
    preprocessing block is known to be usable: either one damaged is one error naming the file."""
    from ..data.transforms import Preprocessing

    try:
        Preprocessing.from_dict(config.get("preprocessing"))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise _damaged(path, f"preprocessing: {exc}") from None
    try:
        return build(config["architecture"])
    except (KeyError, TypeError, ValueError) as exc:
        raise _damaged(path, f"architecture: {exc}") from None


def check_classifier_config(config: dict, path: Path) -> None:
    """What every use of a classifier reads from its config.json beside its network (``_network``
    checks the preprocessing and architecture blocks), checked once at load: a wrong type or a label
    list out of step with the weights is one clear error, not a TypeError in the middle of a run or a
    label printed against another class's probability."""
    def bad(what: str):
        raise _damaged(path, what)

    def number(value) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    arch = config.get("architecture")
    if not isinstance(arch, dict) or not isinstance(arch.get("name"), str):
        bad("no architecture name")
    labels = config.get("labels")
    if (not isinstance(labels, list) or len(labels) < 2 or not all(isinstance(x, str) and x for x in labels)
            or len(set(labels)) != len(labels)):
        bad(f"labels must be a list of two or more different names, not {labels!r}")
    if arch.get("num_classes") != len(labels):
        bad(f"{len(labels)} labels for a network of {arch.get('num_classes')!r} outputs")
    if config.get("positive_label") is not None and config["positive_label"] not in labels:
        bad(f"positive_label {config['positive_label']!r} is not one of the labels {labels}")
    for key, block in (("threshold", config), ("lots.threshold", config.get("lots") or {})):
        value = block.get("threshold")
        if value is not None and not (number(value) and 0 <= value <= 1):
            bad(f"{key} must be a number from 0 to 1, not {value!r}")
    try:
        calibration_temperature(config)
    except ArtifactError as exc:
        bad(str(exc).removeprefix("config.json: "))


def load_embedding(folder: str | Path):
    """Load a retrieval embedding artifact: (EmbeddingNet in eval mode, config)."""
    from .embedding import embedding_from_config

    folder = Path(folder)
    config = read_config(folder)
    if not is_embedding(config):
        raise ArtifactError(f"{folder} is a classifier, not an embedding model")
    return _load_weights(folder, _network(config, folder / CONFIG_NAME, embedding_from_config)), config


def _load_weights(folder: Path, model):
    from safetensors import SafetensorError
    from safetensors.torch import load as load_bytes

    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise ArtifactError(f"{folder}: no {WEIGHTS_NAME}")
    try:
        data = weights.read_bytes()  # read once: the bytes loaded are the bytes hashed
        state = load_bytes(data)
    except (SafetensorError, OSError, ValueError) as exc:
        raise ArtifactError(f"{weights}: unreadable weights ({exc})") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ArtifactError(f"{weights}: weights do not match the architecture in config.json ({exc})") from None
    # the version decisions are traced to (Predictor.info): of these weights, whatever the file holds later
    model.weights_sha256 = hashlib.sha256(data).hexdigest()
    return model.eval()


def update_config(folder: str | Path, **changes) -> dict:
    """Change top-level config entries (e.g. threshold, metrics) in place."""
    folder = Path(folder)
    config = read_config(folder)
    config.update(changes)
    write_text_atomic(folder / CONFIG_NAME, json.dumps(config, indent=2) + "\n")
    return config

