"""Model soups: one classifier from the weighted mean of several fine-tunes' weights."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from artsentry.cli import main
from artsentry.data.transforms import Preprocessing
from artsentry.models import create_model
from artsentry.models.artifact import CONFIG_NAME, WEIGHTS_NAME, ArtifactError, load_model, save_model, save_tensors_atomic
from artsentry.models.onnx import onnx_ready
from artsentry.models.soup import make_soup


def _sibling(model_dir, tmp_path, name="b", seed=1, **config_changes):
    """A copy of ``model_dir`` whose floating-point weights moved, as a second fine-tune's would."""
    out = tmp_path / name
    shutil.copytree(model_dir, out, ignore=shutil.ignore_patterns("*.onnx"))
    g = torch.Generator().manual_seed(seed)
    state = load_file(str(out / WEIGHTS_NAME))
    def move(name, v):
        if not v.is_floating_point():
            return v
        if name.endswith("running_var"):  # a variance stays positive
            return v * (1 + 0.2 * torch.rand(v.shape, generator=g))
        return v + 0.05 * torch.randn(v.shape, generator=g)

    moved = {k: move(k, v) for k, v in state.items()}
    save_tensors_atomic(out / WEIGHTS_NAME, moved)
    config = json.loads((out / CONFIG_NAME).read_text())
    config.pop("onnx", None)
    config.pop("runtime", None)
    for key, value in config_changes.items():
        config[key] = value
    (out / CONFIG_NAME).write_text(json.dumps(config))
    return out


def test_the_soup_is_the_weighted_mean_of_the_weights(model_dir, tmp_path):
    b = _sibling(model_dir, tmp_path)
    folder, notes = make_soup([model_dir, b], tmp_path / "soup", weights=[1, 3])
    assert notes == []
    sa, sb, soup = (load_file(str(f / WEIGHTS_NAME)) for f in (model_dir, b, folder))
    assert list(soup) == list(sa)
    for k, v in soup.items():
        if v.is_floating_point():
            torch.testing.assert_close(v, 0.25 * sa[k] + 0.75 * sb[k])
        else:  # BatchNorm step counters: the first model's
            assert torch.equal(v, sa[k])
    config = json.loads((folder / CONFIG_NAME).read_text())
    first = json.loads((model_dir / CONFIG_NAME).read_text())
    assert config["labels"] == first["labels"] and config["preprocessing"] == first["preprocessing"]
    assert config["threshold"] == 0.5 and "calibration" not in config  # the first model's do not hold for it
    assert not {"metrics", "lots", "onnx", "runtime"} & set(config)
    assert [m["weight"] for m in config["soup"]["models"]] == [0.25, 0.75]
    assert config["soup"]["models"][0]["folder"] == str(model_dir)
    test = first["metrics"]["test"]  # each model's test figures are kept beside its weight, the rest of them not
    assert config["soup"]["models"][0]["test"] == {k: test[k] for k in ("n", "accuracy", "roc_auc")}


def test_a_soup_of_one_model_with_itself_computes_what_the_model_does(model_dir, tmp_path):
    folder, notes = make_soup([model_dir, model_dir], tmp_path / "soup")
    # most often a slip: said, and still made (the soup of a model with itself is that model)
    assert notes == [f"{model_dir} holds the same weights as {model_dir}: they count twice in the soup "
                     "(--weights sets each model's share)"]
    (net, _), (soup, _) = load_model(model_dir), load_model(folder)
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(soup(x), net(x))


def test_models_that_are_not_one_network_with_one_set_of_classes_make_no_soup(model_dir, culture_model_dir, tmp_path):
    with pytest.raises(ArtifactError, match="labels"):
        make_soup([model_dir, culture_model_dir], tmp_path / "x")
    with pytest.raises(ArtifactError, match="at least two"):
        make_soup([model_dir], tmp_path / "x")
    with pytest.raises(ArtifactError, match="positive"):
        make_soup([model_dir, model_dir], tmp_path / "x", weights=[1, 0])
    with pytest.raises(ArtifactError, match="positive"):
        make_soup([model_dir, model_dir], tmp_path / "x", weights=[1, float("inf")])
    first = json.loads((model_dir / CONFIG_NAME).read_text())["preprocessing"]
    imagenet = _sibling(model_dir, tmp_path, "imagenet", preprocessing={**first, "mean": [0.485, 0.456, 0.406]})
    with pytest.raises(ArtifactError, match="scales its inputs otherwise"):
        make_soup([model_dir, imagenet], tmp_path / "x")
    with pytest.raises(ArtifactError, match="one per model"):
        make_soup([model_dir, model_dir], tmp_path / "x", weights=[1])
    small = []
    for i in range(2):
        torch.manual_seed(i)
        net = create_model("smallcnn", 2, pretrained=False)
        small.append(save_model(net, tmp_path / f"small{i}", labels=["a", "b"], preprocessing=Preprocessing(150)))
    with pytest.raises(ArtifactError, match="from scratch"):
        make_soup(small, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_a_model_that_reads_photos_otherwise_is_named(model_dir, tmp_path):
    first = json.loads((model_dir / CONFIG_NAME).read_text())["preprocessing"]
    other = "pad" if first["resize"] != "pad" else "squash"
    b = _sibling(model_dir, tmp_path, preprocessing={**first, "resize": other})
    _, notes = make_soup([model_dir, b], tmp_path / "soup")
    assert len(notes) == 1 and f"resize {other}" in notes[0] and str(model_dir) in notes[0]


def test_a_model_trained_on_other_data_is_named(model_dir, tmp_path):
    data = json.loads((model_dir / CONFIG_NAME).read_text())["data"]
    b = _sibling(model_dir, tmp_path, data={**data, "splits": {"train": 1, "val": 1, "test": 1}})
    _, notes = make_soup([model_dir, b], tmp_path / "soup")
    assert len(notes) == 1 and notes[0].startswith(f"{b} was trained on other data or another split than {model_dir}")


def test_cli_soup_writes_an_exported_model_and_keeps_its_models_safe(model_dir, tmp_path, capsys):
    b = _sibling(model_dir, tmp_path)
    out = tmp_path / "soup"
    assert main(["soup", str(model_dir.parent), str(b), "--out", str(out)]) == 0  # a run folder is read as its model
    assert onnx_ready(out) and f"soup of 2 models to {out}" in capsys.readouterr().out
    assert main(["soup", str(model_dir), str(b), "--out", str(out)]) == 1  # no silent replacement
    assert "--overwrite" in capsys.readouterr().err
    assert main(["soup", str(model_dir), str(b), "--out", str(out), "--overwrite", "--weights", "3", "1"]) == 0
    assert json.loads((out / CONFIG_NAME).read_text())["soup"]["models"][0]["weight"] == 0.75
    before = (b / WEIGHTS_NAME).read_bytes()
    assert main(["soup", str(model_dir), str(b), "--out", str(b), "--overwrite"]) == 1  # never over a model of the soup
    assert "one of the models" in capsys.readouterr().err and (b / WEIGHTS_NAME).read_bytes() == before
    stray = tmp_path / "notes"
    stray.mkdir()
    (stray / "keep.txt").write_text("mine")
    assert main(["soup", str(model_dir), str(b), "--out", str(stray), "--overwrite"]) == 1
    assert "not a model folder" in capsys.readouterr().err and (stray / "keep.txt").read_text() == "mine"


def test_a_soup_of_several_class_models_has_no_threshold_and_classifies(culture_model_dir, culture_dataset, tmp_path):
    from artsentry.inference import Predictor

    b = _sibling(culture_model_dir, tmp_path)
    folder, _ = make_soup([culture_model_dir, b], tmp_path / "soup")
    config = json.loads((folder / CONFIG_NAME).read_text())
    assert config["threshold"] is None and config["labels"] == ["blue", "green", "red"]
    photo = sorted((culture_dataset / "red").glob("*.jpg"))[0]
    (p,) = Predictor.load(folder).predict_files([photo])
    assert p.ok and abs(sum(p.probabilities.values()) - 1) < 1e-5 and p.flagged is None
    assert p.label == max(p.probabilities, key=p.probabilities.get)  # the top class: no threshold to apply
