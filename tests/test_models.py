import errno
import json
import re
import os
import stat
import subprocess
import sys
import time
from collections import OrderedDict

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from artsentry.data.transforms import eval_transform
from artsentry.models import create_model, default_preprocessing
from artsentry.models.artifact import ArtifactError, ModelNotFound, load_model, save_model
from artsentry.models.efficientnet_lite import create_efficientnet_lite, map_state_dict, weights_path


@pytest.mark.parametrize("variant", ["lite0", "lite1", "lite2"])
def test_pretrained_backbone_recognises_the_cat(variant):
    skimage_data = pytest.importorskip("skimage.data", reason="scikit-image is a dev dependency")
    net = create_efficientnet_lite(variant, pretrained=True).eval()
    pre = default_preprocessing(f"efficientnet_{variant}")
    assert pre.mean == (0.5, 0.5, 0.5) and pre.std == (0.5, 0.5, 0.5)
    x = eval_transform(pre)(Image.fromarray(skimage_data.chelsea()))[None]
    assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0
    with torch.no_grad():
        probs = net(x).softmax(1)[0]
    top5 = probs.topk(5).indices.tolist()
    assert top5[0] in (281, 282, 285), top5  # tabby / tiger cat / Egyptian cat
    assert probs[281:286].sum() > 0.8  # nearly all mass on domestic cats


def test_weights_file_has_296_tensors_mapped_in_order():
    source = torch.load(weights_path("lite0"), map_location="cpu", weights_only=True)
    assert len(source) == 296
    net = create_efficientnet_lite("lite0", pretrained=False)
    mapped = map_state_dict(source, net)
    assert list(mapped) == list(net.state_dict())
    assert torch.equal(mapped["conv_stem.weight"], source["_conv_stem.weight"])


def test_mapping_refuses_mismatched_weights():
    net = create_efficientnet_lite("lite0", pretrained=False)
    sd = OrderedDict(net.state_dict())
    first = next(iter(sd))
    sd[first] = torch.zeros(1)
    with pytest.raises(ValueError, match="shape mismatch"):
        map_state_dict(sd, net)
    sd.popitem()
    with pytest.raises(ValueError, match="295 tensors"):
        map_state_dict(sd, net)


def test_transfer_head_is_bn_linear_relu_dropout_linear():
    model = create_model("efficientnet_lite0", 3, pretrained=False)
    kinds = [type(m) for m in model.head]
    assert kinds == [nn.BatchNorm1d, nn.Linear, nn.ReLU, nn.Dropout, nn.Linear]
    assert model.head[3].p == 0.5
    model.eval()
    x = torch.randn(2, 3, 224, 224)
    assert model(x).shape == (2, 3)
    assert model.embed(x).shape == (2, 1280)


def test_drop_path_acts_in_training_only():
    torch.manual_seed(0)
    dropping = create_model("efficientnet_lite0", 2, pretrained=False, drop_path_rate=0.2)
    plain = create_model("efficientnet_lite0", 2, pretrained=False)
    plain.load_state_dict(dropping.state_dict())  # same tensors: stochastic depth has no weights
    rates = [m.drop_prob for m in dropping.modules() if type(m).__name__ == "DropPath"]
    assert len(rates) == 15 and rates == sorted(rates) and rates[-1] == pytest.approx(0.2 * 15 / 16)
    assert not any(type(m).__name__ == "DropPath" for m in plain.modules())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(dropping.eval()(x), plain.eval()(x))
        torch.manual_seed(1)
        dropped = dropping.train()(x)
        torch.manual_seed(1)
        assert not torch.allclose(dropped, plain.train()(x))
    with pytest.raises(ValueError, match="residual"):
        create_model("smallcnn", 2, drop_path_rate=0.1)


def test_smallcnn_is_the_seed_architecture():
    model = create_model("smallcnn", 2).eval()
    convs = [m for m in model.backbone.features if isinstance(m, nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size[0]) for c in convs] == [(32, 3), (32, 4), (64, 3)]
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.backbone.features) == 3
    assert model.backbone.fc[0].out_features == 64
    assert model(torch.rand(2, 3, 150, 150)).shape == (2, 2)
    assert default_preprocessing("smallcnn").input_size == 150


def test_artifact_round_trip(tmp_path):
    torch.manual_seed(0)
    model = create_model("efficientnet_lite0", 2, pretrained=False).eval()
    pre = default_preprocessing("efficientnet_lite0")
    save_model(model, tmp_path / "m", labels=["ivory", "non_ivory"], preprocessing=pre, threshold=0.3,
               positive_label="ivory", metrics={"val": {"accuracy": 1.0}})
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]
    loaded, config = load_model(tmp_path / "m")
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(model(x), loaded(x), atol=1e-6)
    assert config["threshold"] == 0.3 and config["labels"] == ["ivory", "non_ivory"]
    assert config["preprocessing"]["mean"] == [0.5, 0.5, 0.5]
    assert config["metrics"]["val"]["accuracy"] == 1.0
    # the library versions that made it travel with it (run-to-run comparisons need them)
    import timm
    assert config["environment"]["torch"] == torch.__version__.split("+")[0]
    assert config["environment"]["timm"] == timm.__version__
    assert config["environment"]["python"].count(".") == 2


def test_broken_artifacts_give_clear_errors(tmp_path):
    model = create_model("smallcnn", 2)
    pre = default_preprocessing("smallcnn")
    folder = save_model(model, tmp_path / "m", labels=["a", "b"], preprocessing=pre)
    with pytest.raises(ArtifactError, match="no such model folder") as missing:
        load_model(tmp_path / "nothing")
    assert isinstance(missing.value, ModelNotFound) and missing.value.folder == tmp_path / "nothing"
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArtifactError, match="not a model folder") as empty:
        load_model(tmp_path / "empty")
    assert not isinstance(empty.value, ModelNotFound)  # there is a folder, just not a model in it
    weights = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    with pytest.raises(ArtifactError, match="unreadable weights"):
        load_model(folder)
    save_model(model, folder, labels=["a", "b"], preprocessing=pre)
    config = json.loads((folder / "config.json").read_text())
    config["architecture"]["num_classes"] = 3
    config["labels"] = ["a", "b", "c"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match="do not match"):
        load_model(folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="unreadable config"):
        load_model(folder)
    save_model(model, folder, labels=["a", "b"], preprocessing=pre)
    from safetensors.torch import load_file, save_file

    state = load_file(folder / "model.safetensors")
    save_file({k: v for k, v in state.items() if not k.endswith("bias")}, folder / "model.safetensors")
    with pytest.raises(ArtifactError, match="do not match"):  # tensors missing, none of the wrong shape
        load_model(folder)
    (folder / "config.json").write_text(json.dumps({**config, "format_version": 99}))
    with pytest.raises(ArtifactError, match=r"made by a newer artsentry \(format 99\); upgrade"):
        load_model(folder)
    (folder / "config.json").write_text(json.dumps({**config, "format": "keras"}))
    with pytest.raises(ArtifactError, match="not an artsentry model config"):
        load_model(folder)


@pytest.mark.parametrize("edit, message", [
    (lambda c: c.pop("labels"), "labels must be a list of two or more different names, not None"),
    (lambda c: c["labels"].append("c"), "3 labels for a network of 2 outputs"),
    (lambda c: c.update(labels=["a", "a"]), "two or more different names"),
    (lambda c: c.update(positive_label="bone"), "positive_label 'bone' is not one of the labels"),
    (lambda c: c.update(threshold="high"), "threshold must be a number from 0 to 1, not 'high'"),
    (lambda c: c.update(threshold=1.5), "threshold must be a number from 0 to 1"),
    (lambda c: c.update(lots={"threshold": None}) or c["lots"].update(threshold=-1), "lots.threshold"),
    (lambda c: c["preprocessing"].update(input_size="150"), "preprocessing: input_size must be a whole number"),
    (lambda c: c["preprocessing"].update(std=[0, 1, 1]), "preprocessing: mean and std need three values"),
    (lambda c: c.update(calibration={"temperature": "x"}), "calibration temperature must be a positive number"),
    (lambda c: c["architecture"].update(name="resnet9000"), "architecture: unknown architecture 'resnet9000'"),
    (lambda c: c.update(architecture=[]), "no architecture name"),
    (lambda c: c.update(format_version="2b"), "format_version must be a whole number, not '2b'"),
    (lambda c: c.update(labels=["a", ""]), "two or more different names"),
    (lambda c: c.update(labels=["a", 2]), "two or more different names"),
    (lambda c: c.update(calibration={"temperature": 0}), "calibration temperature must be a positive number, not 0"),
])
def test_an_edited_or_damaged_config_is_one_clear_error(tmp_path, edit, message):
    """Each was a KeyError or TypeError traceback, mid-run, or (more labels than outputs) labels
    printed against another class's probability."""
    folder = save_model(create_model("smallcnn", 2), tmp_path / "m", labels=["a", "b"],
                        preprocessing=default_preprocessing("smallcnn"), positive_label="a", threshold=0.5)
    config = json.loads((folder / "config.json").read_text())
    edit(config)
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match=re.escape(message)) as err:
        load_model(folder)
    assert str(err.value).startswith(str(folder / "config.json")) and "edited or is damaged" in str(err.value)


def test_thresholds_at_the_ends_of_the_scale_load(tmp_path):
    for value in (0, 1, 0.0, 1.0):
        folder = save_model(create_model("smallcnn", 2), tmp_path / f"m{value!r}", labels=["a", "b"],
                            preprocessing=default_preprocessing("smallcnn"), positive_label="a", threshold=value,
                            lots={"threshold": value, "grid": 3})
        _, config = load_model(folder)
        assert config["threshold"] == value and config["lots"]["threshold"] == value


def test_artifact_contains_no_pickle(tmp_path):
    model = create_model("smallcnn", 2)
    folder = save_model(model, tmp_path / "m", labels=["a", "b"], preprocessing=default_preprocessing("smallcnn"))
    head = (folder / "model.safetensors").read_bytes()[:16]
    assert not head.startswith(b"\x80")  # pickle protocol marker
    assert not (folder / "model.safetensors").read_bytes().startswith(b"PK")  # torch zip


def test_artifact_weights_are_as_readable_as_its_config(tmp_path):
    # safetensors' writer creates 0600 files whatever the umask: a service running as another
    # user could read config.json but not the weights
    old = os.umask(0o022)
    try:
        folder = save_model(create_model("smallcnn", 2), tmp_path / "m", labels=["a", "b"], preprocessing=default_preprocessing("smallcnn"))
    finally:
        os.umask(old)
    assert stat.S_IMODE((folder / "model.safetensors").stat().st_mode) == 0o644
    assert stat.S_IMODE((folder / "config.json").stat().st_mode) == 0o644


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_tensor_files_get_the_umask_permissions_and_never_a_leftover_mode(tmp_path, umask, mode):
    # checkpoints and feature caches go through the same writer as model weights
    import threading

    from safetensors.torch import load_file

    from artsentry.models.artifact import save_tensors_atomic

    target = tmp_path / "state.safetensors"
    # what a write killed half-way by this process and thread would have left (a reused pid)
    leftover = tmp_path / f".state.safetensors.{os.getpid()}.{threading.get_ident()}.tmp"
    leftover.write_bytes(b"half")
    leftover.chmod(0o600 if mode != 0o600 else 0o644)
    old = os.umask(umask)
    try:
        save_tensors_atomic(target, {"x": torch.arange(6.0).reshape(2, 3).t()})  # not contiguous
    finally:
        os.umask(old)
    assert stat.S_IMODE(target.stat().st_mode) == mode
    assert os.listdir(tmp_path) == ["state.safetensors"]  # no temporary file left
    torch.testing.assert_close(load_file(str(target))["x"], torch.arange(6.0).reshape(2, 3).t())


def test_a_full_disk_while_writing_tensors_is_an_os_error_naming_the_file(tmp_path, monkeypatch):
    """safetensors' I/O errors are no OSError: a full disk ended a training in its traceback. An OSError with
    the errno and the file now, and the file before the write is left as it was."""
    import safetensors.torch
    from safetensors import SafetensorError

    from artsentry.models.artifact import save_tensors_atomic

    target = tmp_path / "model.safetensors"
    target.write_bytes(b"the weights before")

    def full(*args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    with pytest.raises(OSError) as raised:
        save_tensors_atomic(target, {"x": torch.zeros(2)})
    assert (raised.value.errno, raised.value.filename) == (28, str(target))
    assert target.read_bytes() == b"the weights before" and os.listdir(tmp_path) == ["model.safetensors"]

    def other(*args, **kwargs):
        raise SafetensorError("Error while serializing: something else")

    monkeypatch.setattr(safetensors.torch, "save_file", other)
    with pytest.raises(SafetensorError, match="something else"):  # not an I/O error: as it was
        save_tensors_atomic(target, {"x": torch.zeros(2)})


def test_atomic_path_puts_a_whole_file_in_place_or_leaves_the_old_one(tmp_path):
    import pandas as pd

    from artsentry.data.manifest import write_manifest
    from artsentry.files import atomic_path, write_text_atomic

    target = tmp_path / "sub" / "folder" / "manifest.csv"  # folders made as needed
    write_text_atomic(target, "old\n")
    with pytest.raises(RuntimeError, match="writer died"):
        with atomic_path(target) as tmp:
            tmp.write_text("half of the new")
            raise RuntimeError("writer died")
    assert target.read_text() == "old\n" and os.listdir(target.parent) == ["manifest.csv"]
    with pytest.raises(FileNotFoundError, match="left no file"):
        with atomic_path(target):
            pass  # a writer that wrote nothing must not replace the file with nothing
    assert target.read_text() == "old\n"
    write_manifest(pd.DataFrame({"path": ["a.jpg"], "label": ["x"]}), target)
    assert target.read_text().splitlines() == ["path,label", "a.jpg,x"]
    assert os.listdir(target.parent) == ["manifest.csv"]
    # a write the system refuses (a read-only share) names the file asked for, not its hidden temporary one
    with pytest.raises(OSError) as refused:
        with atomic_path(target) as tmp:
            raise OSError(errno.EROFS, "Read-only file system", str(tmp))
    assert (refused.value.errno, refused.value.filename) == (errno.EROFS, str(target))
    assert isinstance(refused.value, OSError) and target.read_text().splitlines() == ["path,label", "a.jpg,x"]
    with pytest.raises(PermissionError) as refused:  # the kind of error kept
        with atomic_path(target) as tmp:
            raise PermissionError(errno.EACCES, "Permission denied", str(tmp))
    assert refused.value.filename == str(target)
    with pytest.raises(OSError) as refused:  # a writer through an open file (PIL): a full disk names no file
        with atomic_path(target):
            raise OSError(errno.ENOSPC, "No space left on device")
    assert (refused.value.errno, refused.value.filename) == (errno.ENOSPC, str(target))
    with pytest.raises(OSError) as refused:  # other errors without a name are left as they are
        with atomic_path(target):
            raise OSError(errno.EINVAL, "Invalid argument")
    assert refused.value.filename is None



def test_a_write_refused_by_a_read_only_folder_is_said_as_the_writes_error(tmp_path, monkeypatch):
    """On a read-only mount even the clean-up of the temporary file fails (EROFS, not 'no such file'): that
    error, naming the hidden temporary file, hid the write's own (`export` of a model on a read-only share)."""
    from pathlib import Path

    from artsentry.files import atomic_path

    def refuse(self, missing_ok=False):
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "unlink", refuse)
    target = tmp_path / "model.onnx"
    with pytest.raises(OSError) as refused:
        with atomic_path(target) as tmp:
            raise OSError(errno.EROFS, "Read-only file system", str(tmp))
    assert refused.value.filename == str(target)
    with pytest.raises(RuntimeError, match="exporter failed"):  # any error of the writer's
        with atomic_path(target):
            raise RuntimeError("exporter failed")


def test_sweep_removes_only_old_temporary_files_of_writers_that_are_gone(tmp_path):
    from artsentry.files import STALE_SECONDS, sweep_stale, write_text_atomic

    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    gone = int(done.stdout)  # a process that has ended
    # one still running (any signal but the probe ends it: a hang-up too, even under nohup)
    writer = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGHUP, "
                               "signal.SIG_DFL); time.sleep(120)"])
    old = time.time() - STALE_SECONDS - 30
    files = {
        "killed": f".photo.jpg.{gone}.140.tmp",  # old, its writer gone: the one to remove
        "young": f".manifest.csv.{gone}.140.tmp",  # its writer gone, but written under a minute ago
        "alive": f".photo.jpg.{writer.pid}.140.tmp",  # old, its writer still running
        "mine": f".photo.jpg.{os.getpid()}.140.tmp",  # this process's own
        "not ours": ".photo.jpg.x.140.tmp",  # not a name atomic_path makes
        "plain": "photo.jpg",
    }
    for key, name in files.items():
        (tmp_path / name).write_bytes(b"half")
        if key != "young":
            os.utime(tmp_path / name, (old, old))
    try:
        assert sweep_stale(tmp_path) == [tmp_path / files["killed"]]
        with pytest.raises(subprocess.TimeoutExpired):
            writer.wait(timeout=1)  # probed, not signalled
    finally:
        writer.kill()
        writer.wait()
    assert sorted(os.listdir(tmp_path)) == sorted(n for k, n in files.items() if k != "killed")
    # the first write into a folder sweeps it
    folder = tmp_path / "fresh"
    folder.mkdir()
    (folder / files["killed"]).write_bytes(b"half")
    os.utime(folder / files["killed"], (old, old))
    write_text_atomic(folder / "photo.jpg", "whole")
    assert os.listdir(folder) == ["photo.jpg"]


def test_every_file_the_package_writes_goes_through_atomic_path():
    """files.py promises that no reader, and no run killed mid-write, meets half a file: a model's
    ONNX config.json, evaluate's metrics.json and screen's results.csv were written in place until
    2026-12-05. Every write call in the package must write to atomic_path's ``tmp`` (or a memory
    ``buf``); the evidence and audit logs alone append, and mend a torn last line themselves."""
    import ast
    from pathlib import Path

    import artsentry

    writes = {"write_text", "write_bytes", "to_csv", "to_parquet", "to_json", "to_excel", "save", "savefig"}
    # VectorIndex.save writes through atomic_path itself; the evidence log's torn last line is cut in place
    known = {"register.py: self.index.save(path)", "screen.py: open(path, 'r+b')"}
    direct = []
    for path in sorted(Path(artsentry.__file__).parent.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr in writes:
                if func.attr in ("write_text", "write_bytes"):
                    target = func.value
                else:
                    target = node.args[0] if node.args else None
                if not (isinstance(target, ast.Name) and target.id in ("tmp", "buf")):
                    direct.append(f"{path.name}:{node.lineno}: {ast.unparse(node)[:70]}")
            elif isinstance(func, ast.Name) and func.id == "open":
                mode = node.args[1] if len(node.args) > 1 else next((k.value for k in node.keywords if k.arg == "mode"),
                                                                    None)
                into_tmp = bool(node.args) and isinstance(node.args[0], ast.Name) and node.args[0].id == "tmp"
                if isinstance(mode, ast.Constant) and set(mode.value) & set("wx+") and not into_tmp:
                    direct.append(f"{path.name}:{node.lineno}: {ast.unparse(node)[:70]}")
    assert [d for d in direct if d.split(":")[0] + ": " + d.split(": ", 1)[1] not in known] == []
    assert len(direct) == len(known)  # each exemption still names a call that exists


def test_a_killed_writers_temporary_files_are_swept_by_the_next_write_into_the_folder(tmp_path):
    import subprocess
    import sys

    from artsentry.files import write_text_atomic

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a process that has ended: its pid is free
    old = time.time() - 600
    stale = tmp_path / f".report.html.{gone.pid}.140213.tmp"  # SIGKILLed half-way ten minutes ago
    fresh = tmp_path / f".index.faiss.{gone.pid}.140213.tmp"  # written a moment ago: maybe another machine's
    live = tmp_path / f".manifest.csv.{os.getppid()}.140213.tmp"  # its writer still runs
    other = tmp_path / ".keep.tmp"  # not one of ours
    for f in (stale, fresh, live, other):
        f.write_text("half")
    for f in (stale, live, other):
        os.utime(f, (old, old))
    write_text_atomic(tmp_path / "metrics.json", "{}")
    assert sorted(os.listdir(tmp_path)) == sorted([fresh.name, live.name, other.name, "metrics.json"])


def test_second_order_pool_is_the_signed_root_of_the_mean_outer_product():
    from artsentry.models.pooling import SecondOrderPool

    g = torch.Generator().manual_seed(0)
    f = torch.randn(3, 5, 4, 6, generator=g)
    pool = SecondOrderPool(5, eps=0.0)
    out = pool(f)
    assert out.shape == (3, 15) and pool.out_features == 15
    for n in range(3):
        x = f[n].reshape(5, -1).double().numpy()
        gram = x @ x.T / x.shape[1]
        upper = gram[np.triu_indices(5)]  # row by row, as the pool orders them
        v = np.sign(upper) * np.sqrt(np.abs(upper))
        np.testing.assert_allclose(out[n].numpy(), v / np.linalg.norm(v), rtol=1e-5, atol=1e-6)
    # a channel's scale and the map's size change nothing but what they should
    assert torch.allclose(pool(f * 7.0), out, atol=1e-6)
    with pytest.raises(ValueError, match="channels"):
        pool(torch.randn(1, 4, 2, 2))
    # gradients stay finite where a co-occurrence is exactly zero (the eps of the default pool)
    z = torch.zeros(1, 5, 2, 2)
    z[0, 0] = 1.0
    z.requires_grad_(True)
    SecondOrderPool(5)(z).sum().backward()
    assert torch.isfinite(z.grad).all()


def test_texture_pooling_cuts_lite0_after_stage_4_and_round_trips(tmp_path):
    from artsentry.explain import gradcam_layer

    torch.manual_seed(0)
    model = create_model("efficientnet_lite0", 2, pretrained=True, pooling="texture").eval()
    assert model.num_features == 112 * 113 // 2
    assert model.arch_config["pooling"] == "texture" and model.arch_config["pool_stage"] == 4
    # the pooled map is the full network's stage-4 output, and nothing after it is kept
    full = create_efficientnet_lite("lite0").eval()
    seen = {}
    full.blocks[4].register_forward_hook(lambda m, i, o: seen.setdefault("map", o))
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        full(x)
        assert torch.allclose(model.backbone.forward_map(x), seen["map"], atol=1e-5)
    names = {k.split(".")[0] for k in model.state_dict()}
    assert names == {"backbone", "head"}
    assert not any(k.startswith(("backbone.conv_head", "backbone.blocks.5", "backbone.blocks.6"))
                   for k in model.state_dict())
    assert not any(k.endswith(".index") for k in model.state_dict())  # the pool's positions are not weights
    from artsentry.models.pooling import TextureBackbone

    for stage in (-1, 7):
        with pytest.raises(ValueError, match=rf"pool stage must be in 0\.\.6, not {stage}"):
            TextureBackbone(full, stage)
    assert [TextureBackbone(full, stage).channels for stage in (0, 6)] == [16, 320]  # Lite0's first and last stage
    # Grad-CAM explains the map that is pooled
    assert gradcam_layer(model, 96) is model.backbone.feature_map
    save_model(model, tmp_path / "m", labels=["ivory", "non_ivory"], preprocessing=default_preprocessing(
        "efficientnet_lite0"))
    loaded, config = load_model(tmp_path / "m")
    assert config["architecture"]["pooling"] == "texture"
    with torch.no_grad():
        assert torch.allclose(model(x), loaded(x), atol=1e-6)
    with pytest.raises(ValueError, match="pooling"):
        create_model("efficientnet_lite0", 2, pretrained=False, pooling="max")
    with pytest.raises(ValueError, match="smallcnn"):
        create_model("smallcnn", 2, pooling="texture")


def test_texture_plus_average_pooling_is_both_descriptors_of_one_network(tmp_path):
    from artsentry.explain import gradcam_layer

    model = create_model("efficientnet_lite0", 2, pretrained=True, pooling="texture+avg").eval()
    texture = create_model("efficientnet_lite0", 2, pretrained=True, pooling="texture").eval()
    average = create_model("efficientnet_lite0", 2, pretrained=True).eval()
    assert model.num_features == 112 * 113 // 2 + 1280
    assert model.arch_config["pooling"] == "texture+avg" and "global average" in model.arch_config["embedding"]
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        f = model.backbone(x)
        assert torch.allclose(f[:, : 112 * 113 // 2], texture.backbone(x), atol=1e-5)
        assert torch.allclose(f[:, 112 * 113 // 2 :], average.backbone(x), atol=1e-5)
    # Grad-CAM explains stage 4, where both descriptors start, not the last stage
    assert gradcam_layer(model, 96) is model.backbone.feature_map
    folder = save_model(model, tmp_path / "m", labels=["ivory", "non_ivory"],
                        preprocessing=default_preprocessing("efficientnet_lite0"))
    loaded, config = load_model(folder)
    assert config["architecture"]["pooling"] == "texture+avg"
    with torch.no_grad():
        assert torch.allclose(model(x), loaded(x), atol=1e-6)
    with pytest.raises(ValueError, match="last stage"):
        create_model("efficientnet_lite0", 2, pretrained=False, pooling="texture+avg", pool_stage=6)


def test_artifacts_without_a_pooling_entry_load_as_average_pooling(tmp_path):
    model = create_model("efficientnet_lite0", 2, pretrained=False).eval()
    assert "pooling" not in model.arch_config  # so configs written before texture pooling are unchanged
    folder = save_model(model, tmp_path / "m", labels=["a", "b"],
                        preprocessing=default_preprocessing("efficientnet_lite0"))
    loaded, _ = load_model(folder)
    assert loaded.num_features == 1280 and hasattr(loaded.backbone, "conv_head")


def test_a_predictor_reports_the_weights_it_loaded_not_the_file_that_replaced_them(tmp_path):
    """The version every decision is traced to (web answers, audit log) was hashed from the weights
    file at each request: once a new training replaced the file under a running server, its answers
    named weights it was not using (and each request hashed the whole file again)."""
    import hashlib

    from artsentry.inference import Predictor

    pre = default_preprocessing("smallcnn")
    folder = save_model(create_model("smallcnn", 2), tmp_path / "m", labels=["a", "b"], preprocessing=pre)
    loaded = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    predictor = Predictor.load(folder)
    assert predictor.info()["version"] == loaded[:16]
    torch.manual_seed(1)
    save_model(create_model("smallcnn", 2), folder, labels=["a", "b"], preprocessing=pre)  # retrained in place
    assert hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest() != loaded
    assert predictor.info()["version"] == loaded[:16]
    assert Predictor.load(folder).info()["version"] != loaded[:16]
