"""ONNX export of a model artifact, and running it with ONNX Runtime.

``export_onnx(folder)`` writes ``model.onnx`` beside ``model.safetensors`` and
records in ``config.json`` what a caller outside Python needs (input and output
names, layout, preprocessing stays in its own block) plus the parity measured at
export: the largest difference of any class probability between PyTorch and
ONNX Runtime on the same inputs. An export that misses ``max_prob_diff`` is
refused. The ONNX file is tied to the weights it came from by their SHA-256, so
a retrained folder never runs a stale graph.

``OnnxClassifier`` is a drop-in for the network's forward pass: float32
``(n, 3, S, S)`` in, logits out.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from ..files import file_sha256
from ..files import atomic_path, write_text_atomic
from .artifact import CONFIG_NAME, WEIGHTS_NAME, ArtifactError, load_model, read_config, update_config

ONNX_NAME = "model.onnx"
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
OPSET = 17
#: largest |p_torch - p_onnx| an export may show on any class probability
MAX_PROB_DIFF = 1e-3


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def export_onnx(folder: str | Path, out: str | Path | None = None, *, parity_inputs: np.ndarray | None = None,
                max_prob_diff: float = MAX_PROB_DIFF, seed: int = 0) -> dict:
    """Export the model in ``folder`` to ONNX (into ``out``, default ``folder``).

    Parity is checked on ``parity_inputs`` (preprocessed images) when given,
    else on seeded random inputs in the model's input range. Returns the
    ``onnx`` block written into ``config.json``.
    """
    folder = Path(folder)
    out = Path(out) if out is not None else folder
    if out.resolve() == folder.resolve():  # the same folder however it is written: the export goes into its config
        out = folder
    else:
        _check_standalone_out(out)
    out.mkdir(parents=True, exist_ok=True)
    model, config = load_model(folder)
    size = int(config["preprocessing"]["input_size"])
    example = torch.zeros(2, 3, size, size)
    with atomic_path(out / ONNX_NAME) as tmp:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter announces its own deprecation
            torch.onnx.export(
                model, (example,), str(tmp), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}, opset_version=OPSET, dynamo=False,
            )
        if parity_inputs is None:
            g = np.random.default_rng(seed)
            parity_inputs = g.uniform(-1.0, 1.0, size=(8, 3, size, size)).astype(np.float32)
        with torch.inference_mode():
            expected = torch.softmax(model(torch.from_numpy(parity_inputs)), 1).numpy()
        got = torch.softmax(torch.from_numpy(OnnxClassifier(tmp).logits(parity_inputs)), 1).numpy()
        diff = float(np.abs(expected - got).max())
        if not diff <= max_prob_diff:
            raise ArtifactError(f"ONNX export of {folder} differs from PyTorch by {diff:.2e} in probability "
                                f"(limit {max_prob_diff:.0e}); not written")
    block = {
        "file": ONNX_NAME,
        "sha256": file_sha256(out / ONNX_NAME),
        "weights_sha256": file_sha256(folder / WEIGHTS_NAME),
        "opset": OPSET,
        "input": {"name": INPUT_NAME, "shape": ["batch", 3, size, size], "dtype": "float32",
                  "layout": "NCHW, RGB, preprocessed as in 'preprocessing'"},
        "output": {"name": OUTPUT_NAME, "shape": ["batch", len(config["labels"])], "dtype": "float32",
                   "meaning": "logits in 'labels' order; softmax(logits / calibration.temperature, 1 when there "
                              "is no 'calibration') gives the probabilities 'threshold' applies to"},
        "parity": {"max_prob_diff": diff, "inputs": int(len(parity_inputs)), "limit": max_prob_diff},
    }
    if out == folder:
        update_config(folder, onnx=block, runtime="onnxruntime")
    else:  # a standalone copy for edge use: the graph plus everything needed to feed it
        import json

        keep = ("labels", "positive_label", "threshold", "calibration", "preprocessing", "architecture",
                "artsentry_version")
        from ..data.transforms import RESIZE_STEPS

        pre = config.get("preprocessing") or {}
        steps = (f"RGB; {RESIZE_STEPS[pre.get('resize', 'squash')]} ({pre.get('interpolation', 'bicubic')}, "
                 "antialiased); pixel values / 255, then (value - mean) / std per channel")
        side = {k: config.get(k) for k in keep} | {"preprocessing_steps": steps, "onnx": block,
                                                   "source_model": str(folder.resolve())}
        write_text_atomic(out / CONFIG_NAME, json.dumps(side, indent=2) + "\n")
    return block


def _check_standalone_out(out: Path) -> None:
    """A standalone copy writes model.onnx and config.json into ``out``: refused over another model
    (its weights would be read with this config, and its config lost) or over a config.json no export
    wrote; an earlier standalone copy is replaced."""
    if (out / WEIGHTS_NAME).exists():
        raise ArtifactError(f"{out} holds a model ({WEIGHTS_NAME}), whose config.json a standalone copy would "
                            "replace; choose a new or empty --out (without --out the export goes into the model's "
                            "own folder)")
    config = out / CONFIG_NAME
    if config.is_file():
        import json

        try:
            earlier = json.loads(config.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            earlier = None
        if not (isinstance(earlier, dict) and "source_model" in earlier):
            raise ArtifactError(f"{out} holds a config.json that no standalone export wrote; choose a new or empty "
                                "--out")


def onnx_ready(folder: str | Path, config: dict | None = None) -> bool:
    """True when ``folder`` holds an ONNX export of its current weights."""
    folder = Path(folder)
    config = config if config is not None else read_config(folder)
    block = config.get("onnx")
    if not block or not (folder / block.get("file", ONNX_NAME)).is_file():
        return False
    return block.get("weights_sha256") == file_sha256(folder / WEIGHTS_NAME)


def onnx_damaged(folder: str | Path, config: dict) -> str | None:
    """Why the ONNX file of an export of ``folder``'s weights (``onnx_ready``) cannot be used, or None: its
    bytes are not those the export recorded (cut short, overwritten; exports before the record: not checked)."""
    block = config.get("onnx") or {}
    path = Path(folder) / block.get("file", ONNX_NAME)
    if block.get("sha256") and file_sha256(path) != block["sha256"]:
        return f"{path} is not the file 'artsentry export' wrote (damaged or replaced since)"
    return None


class OnnxClassifier:
    """An ONNX graph on ONNX Runtime's CPU provider: ``logits(x)`` for float32 NCHW ``x``. A file ONNX Runtime
    cannot load is an ``ArtifactError`` naming it."""

    def __init__(self, path: str | Path, threads: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover - onnxruntime is a dependency
            raise RuntimeError("the ONNX runtime needs the onnxruntime package: pip install onnxruntime") from exc
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime's own error classes (InvalidProtobuf, Fail...): a traceback before
            said = " ".join(str(exc).split())[:300]
            raise ArtifactError(f"{path}: ONNX Runtime cannot load it ({said})") from None
        self.input_name = self.session.get_inputs()[0].name

    def logits(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(x, dtype=np.float32)})[0]


QUANT_MODES = ("dynamic", "static")


def quantize_onnx(source: str | Path, dest: str | Path, mode: str = "static",
                  calibration: np.ndarray | None = None) -> Path:
    """Write an int8 copy of an exported graph. ``dynamic`` quantises weights only
    (activations at run time); ``static`` also fixes activation ranges from
    ``calibration`` (preprocessed images, e.g. a few hundred training photos),
    per-channel weights, QDQ format. Whether it is worth it is measured, not assumed:
    see ``benchmarks/screen.py``."""
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if mode not in QUANT_MODES:
        raise ValueError(f"mode must be one of {QUANT_MODES}, not {mode!r}")
    source, dest = Path(source), Path(dest)
    prepared = dest.with_name(dest.stem + ".prep.onnx")
    quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
    try:
        if mode == "dynamic":
            quantize_dynamic(str(prepared), str(dest), weight_type=QuantType.QInt8)
        else:
            if calibration is None or not len(calibration):
                raise ValueError("static quantisation needs calibration images")

            class Reader(CalibrationDataReader):
                def __init__(self):
                    self.batches = iter([{INPUT_NAME: calibration[i:i + 16]} for i in range(0, len(calibration), 16)])

                def get_next(self):
                    return next(self.batches, None)

            quantize_static(str(prepared), str(dest), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    finally:
        prepared.unlink(missing_ok=True)
    return dest
