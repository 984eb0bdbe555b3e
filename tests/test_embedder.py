"""The retrieval embedding: training on re-shot views, its artifact, and its use in a register."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from artsentry.cli import main
from artsentry.index import Register
from artsentry.index.embedder import Embedder
from artsentry.index.metric import EmbedderSettings, supcon_loss, train_embedder
from artsentry.inference import Predictor
from artsentry.models.artifact import ArtifactError, load_model, read_config


def _object(i: int) -> Image.Image:
    """A studio-like photo of object i: a coloured shape with a mark, on a light backdrop."""
    rng = np.random.default_rng(i)
    img = Image.new("RGB", (200, 160), (238, 236, 232))
    d = ImageDraw.Draw(img)
    colour = tuple(int(c) for c in rng.integers(0, 200, 3))
    box = [40 + int(rng.integers(0, 20)), 30, 150 + int(rng.integers(0, 30)), 130]
    (d.ellipse if i % 2 else d.rectangle)(box, fill=colour)
    d.rectangle([70, 60, 90 + int(rng.integers(0, 50)), 80 + int(rng.integers(0, 30))],
                fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
    return img


@pytest.fixture(scope="module")
def objects_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("objects") / "data"
    (root / "thing").mkdir(parents=True)
    for i in range(16):
        _object(i).save(root / "thing" / f"obj{i:02d}.jpg")
    return root


SMALL = EmbedderSettings(image_size=64, views=2, epochs=4, holdout=0.25, val_fraction=0.25, workers=0,
                         batch_objects=8, dim=32)


@pytest.fixture(scope="module")
def embedder_dir(objects_dir, tmp_path_factory) -> Path:
    return train_embedder(objects_dir, tmp_path_factory.mktemp("emb") / "run", SMALL, progress=False)


def test_supcon_loss_prefers_grouped_embeddings():
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    grouped = torch.nn.functional.normalize(torch.eye(3).repeat_interleave(2, 0) + 0.01 * torch.randn(6, 3), dim=1)
    mixed = torch.nn.functional.normalize(torch.eye(3).repeat(2, 1), dim=1)  # each view beside another object's
    assert supcon_loss(grouped, labels, 0.1) < 0.1 < supcon_loss(mixed, labels, 0.1)


def test_supcon_loss_matches_its_definition_written_out():
    """Khosla et al. 2020, eq. 2: for each anchor, minus the mean over its positives of the log-softmax of
    its similarities to every other view. An anchor without positives (not met in training, where each
    object has three views) counts as 0 in the mean."""
    g = torch.Generator().manual_seed(0)
    z = torch.nn.functional.normalize(torch.randn(7, 5, generator=g, dtype=torch.float64), dim=1)
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 3])  # three, two, and two anchors alone
    t = 0.3
    sim = (z @ z.T / t).numpy()
    expected = []
    for i in range(len(z)):
        others = [a for a in range(len(z)) if a != i]
        log_denominator = np.log(np.exp(sim[i, others]).sum())
        positives = [p for p in others if labels[p] == labels[i]]
        expected.append(-np.mean([sim[i, p] - log_denominator for p in positives]) if positives else 0.0)
    assert supcon_loss(z, labels, t).item() == pytest.approx(np.mean(expected), rel=1e-12)


def test_trained_embedding_artifact(embedder_dir, objects_dir):
    config = read_config(embedder_dir)
    assert config["architecture"]["task"] == "embedding" and config["architecture"]["dim"] == 32
    assert config["embedding"]["normalisation"] == "L2" and "attention" in config["embedding"]["pooling"]
    assert config["preprocessing"]["input_size"] == 64
    # read as the classifiers read photos; a register built on it reads them so (its config says)
    assert config["preprocessing"]["resize"] == "fit" and config["training"]["resize"] == "fit"
    assert Embedder.from_spec(str(embedder_dir)).preprocessing.resize == "fit"
    assert 1 <= config["metrics"]["best_epoch"] <= 4 and 0 <= config["metrics"]["val_reshot_top1"] <= 1
    assert len(config["history"]) == 4 and config["history"][-1]["loss"] < config["history"][0]["loss"]
    # the object lists partition the data: nothing held out was trained on
    lists = {n: set((embedder_dir / f"{n}_objects.txt").read_text().split()) for n in ("trained", "validation",
                                                                                     "holdout")}
    assert not (lists["trained"] & lists["holdout"]) and not (lists["trained"] & lists["validation"])
    assert len(set().union(*lists.values())) == 16 and len(lists["holdout"]) == 4
    # an embedding folder is not a classifier: a clear error, not a crash
    with pytest.raises(ArtifactError, match="embedding model"):
        load_model(embedder_dir)
    with pytest.raises(ArtifactError, match="embedding model"):
        Predictor.load(embedder_dir)

    e = Embedder.from_spec(str(embedder_dir))
    photos = sorted(str(p) for p in objects_dir.rglob("*.jpg"))[:4]
    vectors, errors = e.embed_files(photos + [b"not an image"])
    assert errors[:4] == [None] * 4 and errors[4]
    assert vectors.shape == (5, 32) and np.allclose(np.linalg.norm(vectors[:4], axis=1), 1, atol=1e-5)
    assert e.describe()["dim"] == 32 and "forward_features" in e.describe()["layer"]
    # a register keeps the weights its vectors came from, to refuse them once the folder holds others
    digest = hashlib.sha256((embedder_dir / "model.safetensors").read_bytes()).hexdigest()
    assert e.describe()["weights_sha256"] == digest


def test_training_reuses_its_view_cache(objects_dir, embedder_dir, tmp_path):
    run = embedder_dir.parent
    caches = list((run / "cache").glob("*.safetensors"))
    assert len(caches) == 1
    stamp = caches[0].stat().st_mtime_ns
    again = train_embedder(objects_dir, run, SMALL, progress=False)
    assert caches[0].stat().st_mtime_ns == stamp  # the views were not made again
    assert read_config(again)["history"] == read_config(embedder_dir)["history"]  # same seed, same training


def test_a_damaged_view_cache_is_made_again(objects_dir, embedder_dir, tmp_path, caplog):
    """A view cache cut short (a copy stopped half-way) ended train-embedder in safetensors' traceback."""

    from safetensors.torch import load_file

    run = tmp_path / "run"
    shutil.copytree(embedder_dir.parent, run)  # the shared fixture stays as it is
    [cache] = list((run / "cache").glob("*.safetensors"))
    before = load_file(str(cache))["maps"].clone()  # the file is mapped: copied before it is cut
    cache.write_bytes(cache.read_bytes()[:200])
    caplog.clear()
    train_embedder(objects_dir, run, SMALL, progress=False)
    assert f"{cache} is damaged (Error while deserializing header" in caplog.text
    torch.testing.assert_close(load_file(str(cache))["maps"], before, atol=1e-2, rtol=1e-2)  # the same views


def test_train_embedder_refuses_an_out_it_would_spoil(objects_dir, embedder_dir, model_dir, tmp_path, capsys,
                                                        monkeypatch):
    """`train-embedder DATA --out runs/ivory` wrote the embedder over the classifier's model/ (found
    2026-12-06); a run with other settings replaced an embedder registers were made with."""
    import shutil

    import artsentry.index.metric as metric
    from artsentry.cli import main

    def untouched(folder: Path) -> dict:
        return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}

    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("mine")
    crowded = tmp_path / "crowded"
    crowded.mkdir()
    for name in "edcba":
        (crowded / f"{name}.txt").write_text(name)
    classifier_run = tmp_path / "ivory"
    shutil.copytree(model_dir, classifier_run / "model")
    (classifier_run / "run.json").write_text("{}")
    for out, message in ((foreign, "holds precious.txt but no train-embedder run"),
                         (crowded, "holds a.txt, b.txt, c.txt and 2 more but no train-embedder run"),
                         (classifier_run, "holds a classifier, which train-embedder would replace"),
                         (classifier_run / "model", "is a model folder; train-embedder writes cache/ and model/")):
        before = untouched(out)
        with pytest.raises(ValueError, match=message):
            train_embedder(objects_dir, out, SMALL, progress=False, overwrite=True)
        assert untouched(out) == before and not (out / ".artsentry.lock").exists()
    # an embedder of other settings or data is replaced only when asked
    earlier = tmp_path / "earlier"
    shutil.copytree(embedder_dir, earlier / "model")
    before = untouched(earlier)
    with pytest.raises(ValueError, match="trained with other dim; registers made with it refuse it once replaced"):
        train_embedder(objects_dir, earlier, replace(SMALL, dim=16), progress=False)
    other_data = tmp_path / "other"
    shutil.copytree(objects_dir, other_data)
    with pytest.raises(ValueError, match="trained with other epochs, data; .*use --overwrite"):
        train_embedder(other_data, earlier, replace(SMALL, epochs=3, workers=1), progress=False)
    assert untouched(earlier) == before
    trained = []
    monkeypatch.setattr(metric, "_train_embedder", lambda data, out, settings, progress: trained.append(out) or
                        out / "model")
    train_embedder(objects_dir, earlier, replace(SMALL, workers=1), progress=False)  # the same training
    (tmp_path / "empty").mkdir()
    train_embedder(objects_dir, tmp_path / "empty", SMALL, progress=False)  # an empty folder is a new one
    assert main(["-q", "train-embedder", str(objects_dir), "--out", str(earlier), "--dim", "16"]) == 1
    assert "trained with other" in capsys.readouterr().err
    assert main(["-q", "train-embedder", str(objects_dir), "--out", str(earlier), "--dim", "16", "--overwrite"]) == 0
    assert trained == [earlier, tmp_path / "empty", earlier]


@pytest.mark.parametrize("edit, message", [
    (lambda c: c.pop("preprocessing"), "preprocessing: missing, or not a mapping of settings"),
    (lambda c: c["preprocessing"].update(input_size=0), "preprocessing: input_size must be a whole number"),
    (lambda c: c["architecture"].update(dim="big"), "architecture: invalid literal for int()"),
    (lambda c: c["architecture"].update(pooling="nope"), "architecture: pooling must be one of"),
])
def test_an_edited_embedding_config_is_one_clear_error(embedder_dir, tmp_path, edit, message):
    """A missing preprocessing block was a KeyError traceback; the others did not name the file."""
    import shutil

    from artsentry.models.artifact import load_embedding

    folder = tmp_path / "model"
    shutil.copytree(embedder_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    edit(config)
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match=re.escape(message)) as err:
        load_embedding(folder)
    assert str(err.value).startswith(f"{folder / 'config.json'}: ") and "edited or is damaged" in str(err.value)


def test_embedder_settings_that_cannot_train_are_refused():
    """`train-embedder --backbone-lr -1` trained to the end, climbing the loss (found 2026-12-05)."""
    for kwargs, message in (({"backbone_lr": -1.0}, "backbone-lr must be a positive number, not -1.0"),
                            ({"lr": 0.0}, "lr must be a positive number"),
                            ({"views": 0}, "views must be at least 2"),
                            # a batch holds two distinct re-shots of each object: one view crashed
                            # with an IndexError after the whole view pass (found 2026-12-05)
                            ({"views": 1}, "views must be at least 2, not 1"),
                            ({"dim": 0}, "dim must be at least 1"),
                            ({"weight_decay": -1e-4}, "weight decay must be >= 0"),
                            ({"trained_stages": -1}, "trained-stages must be 0 or more, not -1"),
                            ({"workers": -1}, "workers must be 0 or more, not -1"),
                            # --holdout 1.5 was refused naming the split's 'val_fraction and test_fraction'
                            ({"holdout": 1.5}, r"holdout must be a share of the objects in \[0, 1\), not 1.5"),
                            ({"val_fraction": -0.1}, r"val-fraction must be a share of the objects in \[0, 1\)"),
                            ({"holdout": 0.6, "val_fraction": 0.4}, r"holdout \(0.6\) and val-fraction \(0.4\) "
                                                                    "leave no objects to train on")):
        with pytest.raises(ValueError, match=message):
            EmbedderSettings(**{**SMALL.__dict__, **kwargs}).validate()
    SMALL.validate()
    # the smallest settings that can train are accepted
    EmbedderSettings(**{**SMALL.__dict__, "dim": 1, "epochs": 1, "patience": 1, "batch_objects": 1, "max_side": 1,
                        "views": 2, "weight_decay": 0.0, "trained_stages": 0, "workers": 0, "holdout": 0.0,
                        "val_fraction": 0.99}).validate()


def test_view_cache_is_not_reused_across_generator_versions(monkeypatch):
    import artsentry.index.metric as metric

    key = SMALL.cache_key("data")
    assert SMALL.cache_key("data") == key
    monkeypatch.setattr(metric, "GENERATOR_VERSION", metric.GENERATOR_VERSION + 1)
    assert SMALL.cache_key("data") != key  # views the listing generator now makes differently are stale


def test_view_cache_key_follows_the_resize_mode():

    squash = replace(SMALL, resize="squash")
    assert squash.cache_key("data") != SMALL.cache_key("data")  # views read another way are other views
    with pytest.raises(ValueError, match="resize must be one of"):
        train_embedder(".", "/nonexistent-out", replace(SMALL, resize="stretch"), progress=False)


def test_register_with_trained_embedder_via_cli(embedder_dir, objects_dir, tmp_path, capsys):
    """Named by its run folder, as `--model` takes one everywhere (it was refused: "no config.json"), the
    embedder is recorded by its model folder."""
    reg = tmp_path / "reg"
    assert embedder_dir.name == "model"
    assert main(["-q", "register", "create", str(reg), "--embedder", str(embedder_dir.parent)]) == 0
    assert f"(embedder {embedder_dir.resolve()}, photos read with" in capsys.readouterr().out  # as recorded
    photos = sorted(objects_dir.rglob("*.jpg"))
    for p in photos[:6]:
        assert main(["-q", "register", "add", str(reg), p.stem, str(p)]) == 0
    r = Register.open(reg)
    assert r.embedder.dim == 32 and r.embedder.spec == str(embedder_dir.resolve())
    hits = r.search([str(p) for p in photos[:6]], k=1)
    assert [h.matches[0].object_id for h in hits] == [p.stem for p in photos[:6]]  # its own photo comes first
    r.close()


def test_train_embedder_cli(objects_dir, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["-q", "train-embedder", str(objects_dir), "--out", str(out), "--views", "2", "--dim", "16",
                 "--image-size", "64", "--epochs", "2", "--holdout", "0", "--val-fraction", "0.25",
                 "--workers", "0", "--resize", "squash"]) == 0
    printed = capsys.readouterr().out
    assert "validation re-shot top-1" in printed and f"--embedder {out / 'model'}" in printed
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["data"]["holdout_objects"] == 0 and config["training"]["backbone_frozen"] is True
    assert config["preprocessing"]["resize"] == "squash"
    # too little data: one clear line, exit 1
    tiny = tmp_path / "tiny" / "x"
    tiny.mkdir(parents=True)
    _object(0).save(tiny / "a.jpg")
    assert main(["-q", "train-embedder", str(tiny.parent), "--out", str(tmp_path / "t")]) == 1
    assert "too few objects" in capsys.readouterr().err


def test_an_embedding_needs_two_objects_to_validate_on_not_two_photos(objects_dir, tmp_path):
    """Validation searches each object's re-shots among the others: one object always finds itself.
    The check counted photos, so four photos of one validation object passed it (found 2026-12-05)."""
    photos = sorted(str(p) for p in (objects_dir / "thing").glob("*.jpg"))[:12]
    table = tmp_path / "three.csv"
    table.write_text("path,label,object_id\n" + "".join(f"{p},thing,o{i % 3}\n" for i, p in enumerate(photos)))
    settings = EmbedderSettings(**{**SMALL.__dict__, "holdout": 0.0, "val_fraction": 0.3})
    with pytest.raises(ValueError, match="too few objects to train an embedding: 2 for training and 1 for "
                                         "validation; need at least 2 of each"):
        train_embedder(table, tmp_path / "run", settings, progress=False)


def test_training_the_last_stage_changes_only_that_stage(objects_dir, tmp_path):
    from artsentry.models.artifact import load_embedding
    from artsentry.models.embedding import EmbeddingNet

    settings = EmbedderSettings(**{**SMALL.__dict__, "trained_stages": 1, "epochs": 2, "backbone_lr": 1e-2})
    folder = train_embedder(objects_dir, tmp_path / "ft", settings, progress=False)
    trained, config = load_embedding(folder)
    assert config["architecture"]["trained_stages"] == 1 and config["training"]["backbone_frozen"] is False
    pretrained = EmbeddingNet("efficientnet_lite0", 32, pretrained=True).backbone.state_dict()
    after = trained.backbone.state_dict()
    last = len(trained.backbone.blocks) - 1
    changed = {k for k in after if not torch.equal(after[k], pretrained[k])}
    assert changed and all(k.startswith((f"blocks.{last}.", "conv_head", "bn2")) for k in changed)
    # the cached trunk + trained tail is the same network as the whole one used at search time
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        whole = trained(x)
        split = torch.nn.functional.normalize(trained.head(trained.tail(trained.trunk(x))), dim=1)
    assert torch.allclose(whole, split, atol=1e-5)


def test_train_embedder_names_each_unreadable_photo_in_its_config_and_again_from_its_cache(objects_dir, tmp_path,
                                                                                          caplog):
    """An unreadable photo is skipped, named in the embedding's config.json (not only counted) and warned
    of, also when the views come from the run's cache instead of the photos."""
    data = tmp_path / "data"
    shutil.copytree(objects_dir, data)
    (data / "thing" / "obj99.jpg").write_bytes(b"not a photo\n")
    (data / "thing" / "obj98.jpg").write_bytes(b"")
    settings = replace(SMALL, holdout=0.0, val_fraction=0.3, epochs=1)
    for _ in range(2):  # made, then read from the cache
        caplog.clear()
        with caplog.at_level("WARNING"):
            folder = train_embedder(data, tmp_path / "run", settings, progress=False)
        skipped = read_config(folder)["data"]["skipped_unreadable"]
        assert sorted(skipped) == [str(data / "thing" / "obj98.jpg"), str(data / "thing" / "obj99.jpg")]
        assert read_config(folder)["data"]["unreadable"] == 2
        for reason in skipped.values():
            assert f"skipped: {reason}" in caplog.text
    assert len(list((tmp_path / "run" / "cache").glob("*.safetensors"))) == 1
