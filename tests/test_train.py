import json
import math
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from artsentry.cli import _settings_from_args, build_parser, main
from artsentry.inference import Predictor
from artsentry.train import (Trainer, TrainingError, TrainSettings, WeightAverage, choose_positive_label,
                             class_weights, data_changed_since, train, train_soup)

FAST = dict(image_size=64, batch_size=8, val_fraction=0.25, test_fraction=0.25)


@pytest.fixture
def train_only(monkeypatch):
    """Training as for a split without test photos (``test_fraction`` 0): no evaluation, report or gallery after it,
    ~4 s a run here. For the tests of how a model is trained; the evaluation has its own (test_evaluate.py)."""
    import artsentry.train as train_module

    monkeypatch.setattr(train_module, "_has_test", lambda run_dir: False)


def cli_train_settings(*extra: str) -> TrainSettings:
    """The settings ``artsentry train DATA --out RUN *extra`` runs with."""
    return _settings_from_args(build_parser().parse_args(["train", "DATA", "--out", "RUN", *extra]))


def test_class_weights_are_inverse_frequency():
    w = class_weights(np.array([0, 0, 0, 1]), 2)
    assert w.tolist() == pytest.approx([4 / 6, 2.0])
    with pytest.raises(TrainingError, match=r"class indices \[1\] have no training images"):
        class_weights(np.array([0, 0]), 2)
    with pytest.raises(TrainingError, match=r"class indices \[0, 2\] have"):  # each class missing, by index
        class_weights(np.array([1, 3, 3]), 4)


def test_the_learning_rate_warms_up_linearly_then_follows_half_a_cosine_to_zero():
    from artsentry.train import _lr_factor, _set_lr

    # 100 steps, 10 of warm-up: 0.1, 0.2 ... 1.0 over steps 0-9, then cos from 1 at step 10 to 0 at step 100
    assert [_lr_factor(s, 100, 10) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert _lr_factor(10, 100, 10) == pytest.approx(1.0)
    assert _lr_factor(55, 100, 10) == pytest.approx(0.5)  # half-way through the decay
    assert _lr_factor(40, 100, 10) == pytest.approx(0.5 * (1 + np.cos(np.pi / 3)))
    assert _lr_factor(100, 100, 10) == pytest.approx(0.0, abs=1e-12)
    assert _lr_factor(130, 100, 10) == pytest.approx(0.0, abs=1e-12)  # a resumed run past its schedule
    assert _lr_factor(0, 1, 1) == 1.0 and _lr_factor(5, 0, 1) == 1.0  # one step; no schedule at all
    factors = [_lr_factor(s, 100, 10) for s in range(101)]
    assert max(factors) == pytest.approx(1.0) and all(0 <= f <= 1 + 1e-12 for f in factors)
    # each parameter group steps at its own base rate times the schedule's factor
    groups = [{"params": [torch.nn.Parameter(torch.zeros(1))], "base_lr": b, "lr": b} for b in (1e-3, 4e-5)]
    optimizer = torch.optim.AdamW(groups)
    _set_lr(optimizer, 0.25)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([2.5e-4, 1e-5])
    _set_lr(optimizer, 0.0)
    assert [g["lr"] for g in optimizer.param_groups] == [0.0, 0.0]


def test_positive_label_choice():
    assert choose_positive_label(["ivory", "non_ivory"], None) == "ivory"
    assert choose_positive_label(["horn", "not_horn"], None) == "horn"
    assert choose_positive_label(["a", "b"], "b") == "b"
    assert choose_positive_label(["a", "b", "c"], None) is None
    with pytest.raises(ValueError, match="positive-label"):
        choose_positive_label(["cat", "dog"], None)


def test_inference_size_settings():
    # chosen after training: a checkpoint resumes whatever inference size is asked
    assert TrainSettings(inference_size=352).fingerprint() == TrainSettings().fingerprint()
    with pytest.raises(ValueError, match="training size only"):
        TrainSettings(architecture="smallcnn", inference_size=192).validate()
    # one size rule for training and inference sizes: the preprocessing's 16 to 4096 px, and 24 px for the
    # small CNN's three pooling stages (20 px was taken, then failed in torch; 16 to 31 px were refused at
    # inference with "at least 32 px" while a model could be trained at them)
    TrainSettings(inference_size=16).validate()
    TrainSettings(image_size=16).validate()
    TrainSettings(architecture="smallcnn", image_size=24).validate()
    for settings, said in ((dict(inference_size=15), "from 16 to 4096, not 15"),
                           (dict(image_size=5000), "from 16 to 4096, not 5000"),
                           (dict(architecture="smallcnn", image_size=20), "smallcnn takes inputs of at least 24 px")):
        with pytest.raises(ValueError, match=said):
            TrainSettings(**settings).validate()


def test_fine_tuning_that_would_not_fit_in_memory_is_refused_naming_a_batch_that_would(tmp_path, synthetic_dataset,
                                                                                      capsys):
    """A fine-tuning step keeps ~1,600 MiB of activations per photo-megapixel (lite0; BENCHMARKS.md): at 768 px
    and 32 photos, ~30 GiB. Nothing stopped such a run until the kernel killed it at its first step, after the
    head stage, saying nothing. It is refused before anything is read or written, with the batch that fits."""
    from dataclasses import replace as replace_settings

    from artsentry.choices import ARCHITECTURES
    from artsentry.models.factory import TRAIN_MIB_PER_MEGAPIXEL
    from artsentry.train import TRAIN_RESERVE_MIB, _check_memory

    assert set(TRAIN_MIB_PER_MEGAPIXEL) == set(ARCHITECTURES)  # a new network needs its figure measured

    big = TrainSettings(image_size=768)
    with pytest.raises(TrainingError) as refused:
        _check_memory(big, available=16 * 1024)
    assert str(refused.value) == ("fine-tuning efficientnet_lite0 at 768 px, 32 photo(s) a step, takes about 29.5 GiB; "
                                  "this machine has 16.0 GiB free: --batch-size 15 would fit (or free memory)")
    step = 1600 * 768 * 768 / 1e6  # one photo's MiB
    assert int((16 * 1024 - TRAIN_RESERVE_MIB) // step) == 15
    _check_memory(replace_settings(big, batch_size=15), available=16 * 1024)  # what it said fits does
    _check_memory(replace_settings(big, mode="frozen"), available=16 * 1024)  # features come in bounded batches
    _check_memory(replace_settings(big, epochs=0), available=16 * 1024)  # the head alone
    with pytest.raises(TrainingError, match=r"320 px, 32 photo\(s\) a step \(two views each\), takes about 10.2 GiB"):
        _check_memory(TrainSettings(image_size=320, augment="listing", consistency=3), available=8 * 1024)
    with pytest.raises(TrainingError, match="not one photo a step fits: a smaller --image-size"):
        _check_memory(TrainSettings(image_size=4096, batch_size=1), available=16 * 1024)
    with pytest.raises(TrainingError, match="smallcnn at 1024 px"):  # trained from scratch: always fine-tuned
        _check_memory(TrainSettings(architecture="smallcnn", image_size=1024), available=4 * 1024)
    # the command: refused before the run folder is made (4,096 px x 32 photos: ~840 GiB, on any machine)
    assert main(["train", str(synthetic_dataset), "--out", str(tmp_path / "run"), "--image-size", "4096"]) == 1
    assert "takes about 838.9 GiB" in capsys.readouterr().err and not (tmp_path / "run").exists()
    # a size past the preprocessing's end is that rule's refusal, not a memory estimate at 5,000 px
    assert main(["train", str(synthetic_dataset), "--out", str(tmp_path / "run"), "--image-size", "5000"]) == 1
    assert "pixels from 16 to 4096, not 5000" in capsys.readouterr().err


def test_resize_settings_and_the_fit_crop():
    from PIL import Image

    from artsentry.data.transforms import CropToAspect, Preprocessing, eval_transform

    # the EfficientNets fit, the small CNN squashes as the published study; runs from before the
    # setting (squash) resume as they were
    assert TrainSettings().fit_mode == "fit" and TrainSettings(architecture="smallcnn").fit_mode == "squash"
    assert cli_train_settings().fit_mode == "fit" and cli_train_settings("--resize", "squash").resize == "squash"
    assert TrainSettings(architecture="smallcnn").fingerprint() == \
        TrainSettings(architecture="smallcnn", resize="squash").fingerprint()
    assert TrainSettings(resize="squash").fingerprint() != TrainSettings().fingerprint()
    with pytest.raises(ValueError, match="resize must be one of"):
        TrainSettings(resize="stretch").validate()
    crop = CropToAspect((3 / 4, 4 / 3))
    assert crop.box(1600, 900) == (200, 0, 1400, 900) and crop.box(900, 1600) == (0, 200, 900, 1400)
    assert crop.box(1000, 800) == (0, 0, 1000, 800) and crop.box(750, 1000) == (0, 0, 750, 1000)
    # a 2:1 photo, red on its outer quarters: fit reads the 4:3 centre (no red), squash all of it
    arr = np.zeros((100, 200, 3), np.uint8)
    arr[:, :40, 0] = arr[:, 160:, 0] = 255
    photo = Image.fromarray(arr)
    fit = eval_transform(Preprocessing(input_size=32, resize="fit", mean=(0, 0, 0), std=(1, 1, 1)))(photo)
    squash = eval_transform(Preprocessing(input_size=32, resize="squash", mean=(0, 0, 0), std=(1, 1, 1)))(photo)
    assert fit[0, :, 2:-2].max() < 0.05 and fit[0, :, :2].max() > 0.3  # the red's inner edge at the sides
    assert squash[0, :, :5].min() > 0.9


def test_pad_and_center_crop_and_the_checks_on_preprocessing_settings():
    from PIL import Image

    from artsentry.data.transforms import Preprocessing, eval_transform

    plain = {"mean": (0, 0, 0), "std": (1, 1, 1)}
    dark = Image.new("RGB", (200, 100), (0, 0, 0))  # a 2:1 photo
    dark.paste((255, 0, 0), (0, 0, 20, 100))  # red on its left tenth
    pad = eval_transform(Preprocessing(input_size=32, resize="pad", **plain))(dark)
    # centred on a white square: white above and below (8 rows each at 32 px), the photo between
    assert pad.shape == (3, 32, 32) and pad[:, :7].min() > 0.95 and pad[:, -7:].min() > 0.95
    assert pad[1:, 9:23].max() < 0.05 and pad[0, 9:23, :2].min() > 0.9  # the red kept at the left edge
    tall = eval_transform(Preprocessing(input_size=32, resize="pad", **plain))(dark.transpose(Image.TRANSPOSE))
    assert tall[:, :, :7].min() > 0.95 and tall[:, :, -7:].min() > 0.95 and tall[1:, :, 9:23].max() < 0.05
    crop = eval_transform(Preprocessing(input_size=32, resize="center_crop", **plain))(dark)
    assert crop.shape == (3, 32, 32) and crop.max() < 0.05  # the centre square: no red, no white
    squash = eval_transform(Preprocessing(input_size=32, interpolation="nearest"))(dark)
    assert squash.min() == -1 and squash[0, :, :3].min() == 1  # mean = std = 0.5: [0, 1] -> [-1, 1]
    pre = Preprocessing(input_size=48, resize="pad", interpolation="bilinear")
    assert Preprocessing.from_dict(pre.to_dict()) == pre
    # JPEGs are decoded at no less than the photo-quality scale, measured or not, and at no less than the input
    assert pre.draft_size == (320, 320) and Preprocessing(input_size=384).draft_size == (384, 384)
    assert pre.to_dict()["mean"] == [0.5, 0.5, 0.5]
    for bad, message in [({"input_size": True}, "whole number"), ({"input_size": 15}, "from 16 to 4096"),
                         ({"input_size": 4097}, "from 16 to 4096"), ({"input_size": 224.0}, "whole number"),
                         ({"std": (0.5, 0.0, 0.5)}, "std above 0"), ({"mean": (0.5, 0.5)}, "three values"),
                         ({"resize": "stretch"}, "resize must be"), ({"interpolation": "lanczos"}, "interpolation")]:
        with pytest.raises(ValueError, match=message):
            Preprocessing(**bad)
    assert Preprocessing(input_size=16).input_size == 16 and Preprocessing(input_size=4096).input_size == 4096
    with pytest.raises(ValueError, match=r"unknown preprocessing keys: \['crop'\]"):
        Preprocessing.from_dict({"input_size": 64, "crop": 0.9})
    with pytest.raises(ValueError, match="not a mapping"):
        Preprocessing.from_dict(None)


def test_trained_model_records_how_it_fits_a_photo(model_dir):
    import json

    assert json.loads((model_dir / "config.json").read_text())["preprocessing"]["resize"] == "fit"


def test_weight_average_is_an_exponential_moving_average_of_weights_and_statistics():
    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    start = {k: v.clone() for k, v in net.state_dict().items()}
    average = WeightAverage(net, decay=0.75)
    with torch.no_grad():
        net[0].weight.add_(4.0)
    net.train()(torch.randn(8, 3))  # moves the BatchNorm statistics and its step count
    average.update(net)
    new = net.state_dict()
    for key, avg in average.model.state_dict().items():
        if avg.dtype.is_floating_point:
            torch.testing.assert_close(avg, 0.75 * start[key] + 0.25 * new[key])
        else:
            assert int(avg) == int(new[key]) == 1  # BatchNorm's step count is copied, not averaged
    assert not any(p.requires_grad for p in average.model.parameters())
    assert not torch.equal(average.model[0].weight, net[0].weight)


def test_ema_settings():
    assert TrainSettings(ema_decay=None).fingerprint() == TrainSettings().fingerprint()
    assert TrainSettings(ema_decay=0.995).fingerprint() != TrainSettings().fingerprint()
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="ema decay"):
            TrainSettings(ema_decay=bad).validate()
    with pytest.raises(ValueError, match="frozen"):
        TrainSettings(mode="frozen", ema_decay=0.99).validate()
    assert cli_train_settings("--ema-decay", "0.995").ema_decay == 0.995
    assert cli_train_settings().ema_decay is None


def test_default_patience_grows_with_the_schedule():
    """Validation loss rose for three epochs at the learning rate's peak of a 16-epoch run: a third of
    --epochs, never under 3, unless given; smallcnn keeps its 6."""
    def patience(*extra):
        return cli_train_settings(*extra).patience

    assert patience() == 4  # 8 epochs
    assert patience("--epochs", "10") == 5  # make ivory's recipe: its standard twin stopped after epoch 3 with 3
    assert patience("--epochs", "16") == 8
    assert patience("--epochs", "30") == 15
    assert patience("--epochs", "4") == 3
    assert patience("--epochs", "16", "--patience", "2") == 2
    assert patience("--arch", "smallcnn") == 6
    assert patience("--arch", "smallcnn", "--epochs", "60") == 6


def test_drop_path_settings():
    assert TrainSettings(drop_path=0.0).fingerprint() == TrainSettings().fingerprint()
    assert TrainSettings(drop_path=0.2).fingerprint() != TrainSettings().fingerprint()
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="drop path"):
            TrainSettings(drop_path=bad).validate()
    with pytest.raises(ValueError, match="frozen"):
        TrainSettings(mode="frozen", drop_path=0.2).validate()
    with pytest.raises(ValueError, match="smallcnn"):
        TrainSettings(architecture="smallcnn", drop_path=0.2).validate()
    assert cli_train_settings("--drop-path", "0.2").drop_path == 0.2
    assert cli_train_settings().drop_path == 0.0


def test_rates_and_counts_that_cannot_train_are_refused():
    """`train --lr -1` trained, without a word, by climbing the loss (found 2026-12-05)."""
    for args, message in ((("--lr", "-1"), "--lr must be a positive number, not -1.0"),
                          (("--backbone-lr", "0"), "--backbone-lr must be a positive number"),
                          (("--lr", "nan"), "--lr must be a positive number, not nan"),
                          (("--patience", "0"), "--patience must be 1 or more, not 0"),
                          (("--checkpoint-every", "0"), "--checkpoint-every must be 1 or more, not 0")):
        with pytest.raises(ValueError, match=re.escape(message)):
            cli_train_settings(*args).validate()
    for kwargs in ({"head_lr": -1e-3}, {"weight_decay": -1.0}, {"label_smoothing": 1.0}, {"warmup_fraction": -0.1}):
        with pytest.raises(ValueError):
            TrainSettings(**kwargs).validate()
    cli_train_settings("--lr", "3e-4", "--backbone-lr", "1e-5").validate()


@pytest.mark.parametrize("kwargs, refused", [
    ({"epochs": 0, "head_epochs": 0, "batch_size": 1}, None),  # a head stage alone, no fine-tuning; batches of 1
    ({"epochs": -1}, "--epochs must be 0 or more, not -1"), ({"head_epochs": -1}, "--head-epochs must be 0 or more"),
    ({"batch_size": 0}, "--batch-size must be 1 or more, not 0"),
    ({"weight_decay": 0.0, "warmup_fraction": 0.0, "label_smoothing": 0.0}, None),
    ({"warmup_fraction": 0.99, "label_smoothing": 0.99}, None),
    ({"weight_decay": -1e-9}, "weight decay must be >= 0"),
    ({"warmup_fraction": 1.0}, "must be in [0, 1)"), ({"label_smoothing": 1.0}, "must be in [0, 1)"),
    ({"label_smoothing": -0.01}, "must be in [0, 1)"),
    ({"patience": 1, "head_patience": 1, "checkpoint_every": 1}, None),
    ({"head_patience": 0}, "the head stage's patience must be 1 or more, not 0"),
    ({"patience": 0}, "--patience must be 1"),
    ({"checkpoint_every": 0}, "--checkpoint-every must be 1 or more, not 0"),
    ({"augment": "listing", "listing_all": 1.0, "listing_p": 1.0, "detail_loss": 1.0}, None),
    ({"augment": "listing", "listing_p": 0.0}, None),
    ({"augment": "listing", "listing_all": 1.01}, "listing-all must be in [0, 1]"),
    ({"augment": "listing", "listing_all": -0.01}, "listing-all must be in [0, 1]"),
    ({"augment": "listing", "listing_p": 1.01}, "listing-p must be in [0, 1]"),
    ({"augment": "listing", "listing_p": -0.01}, "listing-p must be in [0, 1]"),
    ({"detail_loss": 1.01}, "detail-loss must be in [0, 1]"), ({"detail_loss": -0.01}, "detail-loss must be in [0, 1]"),
    ({"distill_weight": 1.0, "cutmix": 1.0, "sam": 1.0}, None), ({"distill_weight": 0.0}, None),
    ({"distill_weight": 1.01}, "distill weight must be in [0, 1]"), ({"cutmix": 1.01}, "cutmix must be a share"),
    ({"sam": 1.01}, "sam radius must be in [0, 1]"),
    ({"architecture": "smallcnn", "image_size": 64, "inference_size": 64}, None),  # its own size, not its default
    ({"architecture": "smallcnn", "image_size": 64, "inference_size": 96}, "runs at its training size only (64 px"),
    # the input size's own ends, refused before a run folder is made (it used to be after the data was split)
    ({"image_size": 16, "inference_size": 32}, None), ({"image_size": 4096}, None),
    ({"image_size": 15}, "input_size must be a whole number of pixels from 16 to 4096, not 15"),
    ({"image_size": 4097}, "input_size must be a whole number of pixels from 16 to 4096, not 4097"),
])
def test_each_settings_bound_is_where_its_message_says(kwargs, refused):
    """Each number a run takes is refused just past the end its message names and taken at that end (a
    mutation run of ``TrainSettings.validate`` left 28 changes unnoticed, 2026-12-06, most of them such ends)."""
    settings = TrainSettings(**kwargs)
    if refused is None:
        settings.validate()
    else:
        with pytest.raises(ValueError, match=re.escape(refused)):
            settings.validate()


def test_listing_all_settings_reach_the_training_transform():
    assert TrainSettings(listing_all=0.0).fingerprint() == TrainSettings().fingerprint()
    assert TrainSettings(augment="listing", listing_all=0.5).fingerprint() != TrainSettings(augment="listing").fingerprint()
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="listing-all"):
            TrainSettings(augment="listing", listing_all=bad).validate()
    with pytest.raises(ValueError, match="--augment listing"):
        TrainSettings(augment="standard", listing_all=0.5).validate()
    from artsentry.data.listing import RandomRephotograph
    from artsentry.data.transforms import Preprocessing, train_transform

    settings = cli_train_settings("--augment", "listing", "--listing-all", "0.5")
    assert settings.listing_all == 0.5
    assert cli_train_settings().listing_all == 0.0
    aug = train_transform(Preprocessing(input_size=64), settings.augment, settings.listing_all).transforms[0]
    assert isinstance(aug, RandomRephotograph) and aug.all_families == 0.5


def test_listing_p_settings_reach_the_training_transform():
    from artsentry.data.listing import RandomRephotograph
    from artsentry.data.transforms import LISTING_P, Preprocessing, train_transform

    # the default leaves the fingerprint of checkpoints written before the setting existed
    assert TrainSettings(augment="listing", listing_p=LISTING_P).fingerprint() == TrainSettings(augment="listing").fingerprint()
    assert TrainSettings(augment="listing", listing_p=0.9).fingerprint() != TrainSettings(augment="listing").fingerprint()
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="listing-p"):
            TrainSettings(augment="listing", listing_p=bad).validate()
    with pytest.raises(ValueError, match="--augment listing"):
        TrainSettings(augment="standard", listing_p=0.9).validate()
    with pytest.raises(ValueError, match="--listing-p does not apply"):
        TrainSettings(augment="listing", listing_p=0.9, consistency=1.0).validate()
    settings = cli_train_settings("--augment", "listing", "--listing-p", "0.9")
    assert settings.listing_p == 0.9
    assert cli_train_settings().listing_p == LISTING_P
    aug = train_transform(Preprocessing(input_size=64), settings.augment, listing_p=settings.listing_p).transforms[0]
    assert isinstance(aug, RandomRephotograph) and aug.p == 0.9


def _fine_detail(img) -> float:
    """Mean absolute difference between neighbouring pixels: what blur and shrinking remove."""
    a = np.asarray(img.convert("L"), dtype=np.float32)
    return float(np.abs(np.diff(a, axis=0)).mean() + np.abs(np.diff(a, axis=1)).mean())


def test_detail_loss_blurs_shrinks_or_noises_the_share_asked_reproducibly():
    from artsentry.data.transforms import RandomDetailLoss
    from .conftest import object_photo

    photo = object_photo((200, 180, 150), size=(300, 240), seed=0)
    base = _fine_detail(photo)
    assert RandomDetailLoss(0.0)(photo) is photo

    def draws(seed, n=300):
        torch.manual_seed(seed)
        aug = RandomDetailLoss(0.3)
        return [aug(photo) for _ in range(n)]

    first = draws(0)
    changed = [im for im in first if im is not photo]
    assert 0.22 < len(changed) / len(first) < 0.38
    assert all(im.size == photo.size and im.mode == "RGB" for im in changed)
    detail = np.array([_fine_detail(im) for im in changed])
    # blurred or shrunk photos lose fine detail, noised ones gain grain: all three kinds are drawn
    assert (detail < 0.8 * base).sum() >= 0.4 * len(changed)
    assert (detail > 1.2 * base).sum() >= 0.2 * len(changed)
    assert [im.tobytes() for im in first] == [im.tobytes() for im in draws(0)]
    assert [im.tobytes() for im in first] != [im.tobytes() for im in draws(1)]
    with pytest.raises(ValueError, match="p must be"):
        RandomDetailLoss(1.5)


def test_detail_loss_settings_reach_the_training_transform():
    from artsentry.data.listing import RandomRephotograph
    from artsentry.data.transforms import Preprocessing, RandomDetailLoss, train_transform

    assert TrainSettings(detail_loss=0.0).fingerprint() == TrainSettings().fingerprint()
    assert TrainSettings(detail_loss=0.3).fingerprint() != TrainSettings().fingerprint()
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="detail-loss"):
            TrainSettings(detail_loss=bad).validate()
    with pytest.raises(ValueError, match="--augment none"):
        TrainSettings(augment="none", detail_loss=0.3).validate()
    with pytest.raises(ValueError, match="--head-views"):  # a frozen head never sees augmented photos without views
        TrainSettings(mode="frozen", detail_loss=0.3).validate()
    TrainSettings(mode="frozen", detail_loss=0.3, head_views=2).validate()
    settings = cli_train_settings("--augment", "listing", "--detail-loss", "0.3")
    assert settings.detail_loss == 0.3
    assert cli_train_settings().detail_loss == 0.0
    # after the listing re-photographing (whose own blur is milder), first with standard augmentation
    listing = train_transform(Preprocessing(input_size=64), "listing", detail_loss=0.3).transforms
    assert isinstance(listing[0], RandomRephotograph) and isinstance(listing[1], RandomDetailLoss)
    assert listing[1].p == 0.3
    standard = train_transform(Preprocessing(input_size=64), "standard", detail_loss=0.3).transforms
    assert isinstance(standard[0], RandomDetailLoss)
    assert not any(isinstance(t, RandomDetailLoss) for t in train_transform(Preprocessing(input_size=64)).transforms)


def test_consistency_loss_is_the_jensen_shannon_divergence_of_the_two_views():
    from artsentry.train import consistency_loss

    a = torch.tensor([[2.0, -1.0], [0.3, 0.1], [-4.0, 4.0]])
    b = torch.tensor([[-1.0, 2.0], [0.3, 0.1], [4.0, -4.0]])
    assert float(consistency_loss(a, a)) == pytest.approx(0.0, abs=1e-6)
    pa, pb = a.softmax(1), b.softmax(1)
    m = (pa + pb) / 2
    js = ((pa * (pa / m).log()).sum(1) + (pb * (pb / m).log()).sum(1)) / 2
    assert float(consistency_loss(a, b)) == pytest.approx(float(js.mean()), rel=1e-5)
    assert float(consistency_loss(b, a)) == pytest.approx(float(consistency_loss(a, b)), rel=1e-6)
    assert 0.0 < float(consistency_loss(a, b)) < np.log(2)
    assert float(js[1]) == pytest.approx(0.0, abs=1e-6) and float(js[2]) > float(js[0]) > 0  # grows with disagreement


def test_paired_views_are_a_studio_view_and_an_always_rephotographed_one():
    from artsentry.data.listing import RandomRephotograph
    from artsentry.data.transforms import Preprocessing, paired_views

    from .conftest import object_photo

    views = paired_views(Preprocessing(input_size=64), listing_all=0.5)
    studio_view, listing_view = views.transforms
    assert not any(isinstance(t, RandomRephotograph) for t in studio_view.transforms)
    rephoto = listing_view.transforms[0]
    assert isinstance(rephoto, RandomRephotograph) and rephoto.p == 1.0 and rephoto.all_families == 0.5
    img = object_photo((235, 220, 190), size=(160, 120), seed=3)
    torch.manual_seed(0)
    x = torch.stack(views(img))
    assert x.shape == (2, 3, 64, 64)
    torch.manual_seed(0)
    torch.testing.assert_close(torch.stack(views(img)), x)  # seeded
    assert not torch.allclose(x[0], x[1], atol=0.05)


def test_consistency_settings():
    assert TrainSettings(consistency=0.0).fingerprint() == TrainSettings().fingerprint()
    assert TrainSettings(augment="listing", consistency=12).fingerprint() != TrainSettings(augment="listing").fingerprint()
    with pytest.raises(ValueError, match="--augment listing"):
        TrainSettings(consistency=12).validate()
    with pytest.raises(ValueError, match=">= 0"):
        TrainSettings(augment="listing", consistency=-1).validate()
    with pytest.raises(ValueError, match="--mode frozen"):
        TrainSettings(augment="listing", consistency=12, mode="frozen", head_views=1).validate()
    with pytest.raises(ValueError, match="--teacher"):
        TrainSettings(augment="listing", consistency=12, teacher=("t",)).validate()
    assert cli_train_settings("--augment", "listing", "--consistency", "12").consistency == 12.0
    assert cli_train_settings().consistency == 0.0


@pytest.mark.usefixtures("train_only")
def test_consistency_fine_tunes_on_a_studio_and_a_listing_view_of_every_photo(tmp_path, synthetic_dataset,
                                                                              monkeypatch):
    import artsentry.train as train_module

    seen = []
    real = train_module.consistency_loss

    def spy(studio, listing):
        seen.append((studio.detach().clone(), listing.detach().clone()))
        return real(studio, listing)

    monkeypatch.setattr(train_module, "consistency_loss", spy)
    settings = TrainSettings(augment="listing", consistency=12.0, **ONE_EPOCH)
    result = train(synthetic_dataset, tmp_path / "run", settings, progress=False)
    manifest = __import__("pandas").read_csv(tmp_path / "run" / "manifest.csv")
    n_train = int((manifest["split"] == "train").sum())
    # every fine-tuning step: as many studio views as listing-style ones, one of each per photo
    assert sum(len(s) for s, _ in seen) == n_train
    assert all(s.shape == li.shape and s.shape[1] == 2 for s, li in seen)
    assert any(not torch.allclose(s, li) for s, li in seen)  # two different pictures of each photo
    config = json.loads((result.model_dir / "config.json").read_text())
    assert config["training"]["settings"]["consistency"] == 12.0


def test_cutmix_replaces_one_box_of_each_photo_and_returns_the_share_kept():
    from artsentry.train import _step_generator, cutmix

    x = torch.arange(6, dtype=torch.float32).view(6, 1, 1, 1).expand(6, 3, 40, 50).clone()
    for step in range(20):
        mixed, perm, lam = cutmix(x, _step_generator(0, step))
        assert sorted(perm.tolist()) == list(range(6))
        for i in range(6):
            own = (mixed[i] == x[i]).all(dim=0)  # pixels the photo kept
            other = (mixed[i] == x[perm[i]]).all(dim=0)
            assert bool((own | other).all())  # every pixel is one of the two photos', never a blend
            if perm[i] != i:
                assert float(own.float().mean()) == pytest.approx(lam)
                ys, xs = torch.nonzero(~own, as_tuple=True)
                if len(ys):  # the replaced pixels form one box
                    box = (int(ys.max() - ys.min() + 1)) * (int(xs.max() - xs.min() + 1))
                    assert box == len(ys)
        assert 0.0 <= lam <= 1.0
    # fixed by seed and step: a resumed run mixes as the uninterrupted one did
    a, b = cutmix(x, _step_generator(3, 7)), cutmix(x, _step_generator(3, 7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[2] == b[2]
    lams = [cutmix(x, _step_generator(0, step))[2] for step in range(200)]
    # lam ~ Beta(1, 1) before the box is clipped at the borders, which leaves the photo more of itself
    assert 0.5 < float(np.mean(lams)) < 0.8 and min(lams) < 0.2 and max(lams) > 0.95


def test_cutmix_settings():
    assert TrainSettings(cutmix=0.0).fingerprint() == TrainSettings().fingerprint()
    assert TrainSettings(cutmix=0.5).fingerprint() != TrainSettings().fingerprint()
    for bad in (dict(cutmix=1.5), dict(cutmix=-0.1), dict(cutmix=0.5, mode="frozen"),
                dict(cutmix=0.5, augment="listing", consistency=12), dict(cutmix=0.5, teacher=("t",))):
        with pytest.raises(ValueError):
            TrainSettings(**bad).validate()
    assert cli_train_settings("--cutmix", "0.5").cutmix == 0.5


def _steps_of_one_epoch(run: Path) -> int:
    """The fine-tuning steps of one ``ONE_EPOCH`` epoch of ``run``: a last batch of one photo is not trained on."""
    n, size = int((pd.read_csv(run / "manifest.csv")["split"] == "train").sum()), ONE_EPOCH["batch_size"]
    return n // size + (n % size >= 2)


@pytest.mark.usefixtures("train_only")
def test_cutmix_1_mixes_every_fine_tuning_batch(tmp_path, synthetic_dataset, monkeypatch):
    import artsentry.train as train_module

    calls = []
    real = train_module.cutmix

    def spy(x, generator):
        mixed, perm, lam = real(x, generator)
        calls.append((x.shape, lam))
        return mixed, perm, lam

    monkeypatch.setattr(train_module, "cutmix", spy)
    result = train(synthetic_dataset, tmp_path / "run", TrainSettings(cutmix=1.0, **ONE_EPOCH), progress=False)
    assert len(calls) == _steps_of_one_epoch(tmp_path / "run")  # every batch mixed at --cutmix 1
    assert all(shape[0] >= 2 for shape, _ in calls)
    config = json.loads((result.model_dir / "config.json").read_text())
    assert config["training"]["settings"]["cutmix"] == 1.0


def test_sam_settings():
    assert TrainSettings(sam=0.0).fingerprint() == TrainSettings().fingerprint()
    assert TrainSettings(sam=0.05).fingerprint() != TrainSettings().fingerprint()
    for bad in (dict(sam=-0.01), dict(sam=2.0), dict(sam=0.05, mode="frozen")):
        with pytest.raises(ValueError):
            TrainSettings(**bad).validate()
    assert cli_train_settings("--sam", "0.05").sam == 0.05
    assert cli_train_settings().sam == 0.0


def test_sharpness_aware_gradients_are_those_at_the_steepest_nearby_point():
    from artsentry.train import sharpness_aware_gradients

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.BatchNorm1d(4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    frozen = model[0].bias
    frozen.requires_grad_(False)  # a parameter without a gradient is neither moved nor stepped
    x, y = torch.randn(16, 5), torch.randint(0, 2, (16,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    def loss_of(m):
        return torch.nn.functional.cross_entropy(m(x), y)

    model.train()
    loss_of(model).backward()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    first = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    norm = torch.linalg.vector_norm(torch.stack([g.norm() for g in first.values()]))
    rho = 0.5

    sharpness_aware_gradients(model, optimizer, loss_of, rho)

    after = model.state_dict()
    for k in before:  # weights back where they were; running statistics as the first pass left them
        assert torch.equal(after[k], before[k]), k
    # the gradient at w + rho * g / ||g||, computed here by hand
    moved = __import__("copy").deepcopy(model)
    with torch.no_grad():
        for n, p in moved.named_parameters():
            if n in first:
                p.add_(first[n] * rho / norm)
    for m in moved.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.momentum = 0.0
    moved.zero_grad()
    loss_of(moved).backward()
    for n, p in model.named_parameters():
        if n in first:
            torch.testing.assert_close(p.grad, dict(moved.named_parameters())[n].grad)
            assert not torch.allclose(p.grad, first[n])  # not the plain gradient
    assert frozen.grad is None


@pytest.mark.usefixtures("train_only")
def test_sam_fine_tuning_steps_with_the_second_gradient(tmp_path, synthetic_dataset, monkeypatch):
    import artsentry.train as train_module

    calls = _recorded_calls(monkeypatch, train_module, "sharpness_aware_gradients")  # (model, optimizer, loss_of, rho)
    result = train(synthetic_dataset, tmp_path / "run", TrainSettings(sam=0.05, **ONE_EPOCH), progress=False)
    assert [rho for *_, rho in calls] == [0.05] * _steps_of_one_epoch(tmp_path / "run")  # every fine-tuning step
    config = json.loads((result.model_dir / "config.json").read_text())
    assert config["training"]["settings"]["sam"] == 0.05


def test_layer_decay_settings():
    assert TrainSettings(layer_decay=1.0).fingerprint() == TrainSettings().fingerprint()
    assert TrainSettings(layer_decay=0.75).fingerprint() != TrainSettings().fingerprint()
    for bad, message in ((dict(layer_decay=0.0), "layer decay must be in"), (dict(layer_decay=1.5), "layer decay"),
                         (dict(layer_decay=float("nan")), "layer decay"),
                         (dict(layer_decay=0.75, mode="frozen"), "--mode frozen"),
                         (dict(layer_decay=0.75, architecture="smallcnn"), "smallcnn")):
        with pytest.raises(ValueError, match=message):
            TrainSettings(**bad).validate()
    TrainSettings(layer_decay=0.01).validate()
    assert cli_train_settings("--layer-decay", "0.75").layer_decay == 0.75
    assert cli_train_settings().layer_decay == 1.0


def test_layer_depths_number_the_stages_from_the_stem():
    from artsentry.models import create_model
    from artsentry.train import layer_depths

    avg = layer_depths(create_model("efficientnet_lite0", 2, pretrained=False).backbone)
    assert avg["conv_stem.weight"] == avg["bn1.weight"] == avg["bn1.bias"] == 0
    assert {name.split(".")[1]: d for name, d in avg.items() if name.startswith("blocks.")} == \
        {str(i): i + 1 for i in range(7)}
    assert avg["conv_head.weight"] == avg["bn2.bias"] == 8
    texture = layer_depths(create_model("efficientnet_lite0", 2, pretrained=False, pooling="texture").backbone)
    assert set(texture) < set(avg) and max(texture.values()) == 5  # cut after stage 4
    assert all(texture[name] == avg[name] for name in texture)
    both = layer_depths(create_model("efficientnet_lite0", 2, pretrained=False, pooling="texture+avg").backbone)

    def timm_name(name):  # the later stages under the names they have in the uncut network
        if not name.startswith("later_blocks."):
            return name
        _, stage, rest = name.split(".", 2)
        return f"blocks.{5 + int(stage)}.{rest}"

    assert {timm_name(name): d for name, d in both.items()} == avg
    with pytest.raises(ValueError, match="EfficientNet backbone"):
        layer_depths(create_model("smallcnn", 2, pretrained=False).backbone)


def test_layer_decay_gives_each_stage_its_rate(tmp_path):
    from artsentry.models import create_model

    model = create_model("efficientnet_lite0", 2, pretrained=False)
    trainer = Trainer(tmp_path / "run", TrainSettings(lr=1e-3, backbone_lr=4e-4, layer_decay=0.5), progress=False)
    trainer.model = model
    groups = trainer._param_groups()
    assert groups[0]["lr"] == groups[0]["base_lr"] == 1e-3
    assert [p for p in groups[0]["params"]] == list(model.head.parameters())
    rates = [g["base_lr"] for g in groups[1:]]
    assert rates == pytest.approx([4e-4 * 0.5 ** (8 - depth) for depth in range(9)])  # the stem lowest
    assert [g["lr"] for g in groups[1:]] == rates
    assert groups[1]["params"][0] is model.backbone.conv_stem.weight
    assert groups[-1]["params"][0] is model.backbone.conv_head.weight
    seen = [id(p) for g in groups[1:] for p in g["params"]]
    assert sorted(seen) == sorted(id(p) for p in model.backbone.parameters())  # each once
    # off: one group for the whole backbone, as before the setting existed
    trainer.settings = TrainSettings(lr=1e-3, backbone_lr=4e-4)
    plain = trainer._param_groups()
    assert [g["lr"] for g in plain] == [1e-3, 4e-4] and len(plain[1]["params"]) == len(seen)


@pytest.mark.usefixtures("train_only")
def test_fine_tuning_with_layer_decay_steps_every_stage_at_its_rate(tmp_path, synthetic_dataset, monkeypatch):
    seen = []
    real = torch.optim.AdamW.step

    def spy(optimizer, *args, **kwargs):
        if len(optimizer.param_groups) > 1 and not seen:  # fine-tuning's first step (the head stage has one group)
            seen.append([(g["lr"], g["base_lr"]) for g in optimizer.param_groups])
        return real(optimizer, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", spy)
    result = train(synthetic_dataset, tmp_path / "run", TrainSettings(layer_decay=0.5, **ONE_EPOCH), progress=False)
    (first,) = seen
    assert len(first) == 1 + 9  # the head, then the stem, seven stages and the last convolution
    base = [b for _, b in first]
    assert base[1:] == pytest.approx([1e-3 * 0.5 ** (8 - d) for d in range(9)])
    factor = first[0][0] / first[0][1]  # the warm-up's factor at this step, the same for every group
    assert 0 < factor <= 1 and all(lr == pytest.approx(b * factor) for lr, b in first)
    config = json.loads((result.model_dir / "config.json").read_text())
    assert config["training"]["settings"]["layer_decay"] == 0.5


def test_crop_scale_settings_reach_the_training_transform():
    from torchvision.transforms import v2 as T

    from artsentry.data.transforms import Preprocessing, train_transform

    # the default spelled out keeps the fingerprint of runs made before the setting existed
    assert TrainSettings(crop_scale=(0.5, 1.0)).fingerprint() == TrainSettings().fingerprint()
    assert TrainSettings(crop_scale=(0.25, 1.0)).fingerprint() != TrainSettings().fingerprint()
    for bad in ((0.0, 1.0), (0.6, 0.5), (0.5, 1.2)):
        with pytest.raises(ValueError, match="crop scale"):
            TrainSettings(crop_scale=bad).validate()
    settings = cli_train_settings("--crop-scale", "0.25", "1")
    assert settings.crop_scale == (0.25, 1.0)
    assert cli_train_settings().crop_scale == (0.5, 1.0)
    for augment in ("standard", "listing"):
        crops = [t for t in train_transform(Preprocessing(input_size=64), augment, crop_scale=settings.crop_scale).transforms
                 if isinstance(t, T.RandomResizedCrop)]
        assert [c.scale for c in crops] == [(0.25, 1.0)]
    # the model runs where its crops showed objects: matched to small crops unless told otherwise
    assert TrainSettings().run_size(320) == 320
    assert TrainSettings(crop_scale=(0.2, 0.6)).run_size(320) == 512
    assert TrainSettings(crop_scale=(0.2, 0.6), inference_size=352).run_size(320) == 352
    assert TrainSettings(architecture="smallcnn", crop_scale=(0.2, 0.6)).run_size(150) == 150


def test_fixres_size_matches_the_magnification_of_the_random_crops():
    from artsentry.data.transforms import fixres_size

    # crops up to 60% of the area always fit a square photo, so E[1/sqrt(s)] for s uniform in
    # [lo, hi] is exact: 2 (sqrt(hi) - sqrt(lo)) / (hi - lo); 320 px x 1.637 = 524 -> 512
    lo, hi = 0.2, 0.6
    assert fixres_size(320, (lo, hi)) == 32 * round(320 * 2 * (hi ** 0.5 - lo ** 0.5) / (hi - lo) / 32) == 512
    assert fixres_size(320) == 384  # the default crops: FixRes's ~1.2x
    assert fixres_size(320, (0.5, 0.5)) == 32 * round(320 * 2 ** 0.5 / 32)  # one scale: 1/sqrt(s)
    sizes = [fixres_size(320, (lo, 1.0)) for lo in (0.8, 0.5, 0.25, 0.1)]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]  # smaller crops, larger matched input
    state = torch.get_rng_state()
    fixres_size(320, (0.25, 1.0))
    assert torch.equal(state, torch.get_rng_state())  # leaves the training's random stream alone


def _tensors(model_dir):
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


ONE_EPOCH = dict(epochs=1, head_epochs=2, num_workers=0, **FAST)


@pytest.fixture(scope="module")
def one_epoch_weights(tmp_path_factory, synthetic_dataset):
    """Weights of a 1-epoch fine-tune and of a frozen run with the same settings (the pretrained
    backbone), shared by the tests that compare a fine-tuning option against both."""
    root = tmp_path_factory.mktemp("one-epoch")
    plain = _tensors(train(synthetic_dataset, root / "plain", TrainSettings(**ONE_EPOCH), progress=False).model_dir)
    frozen = _tensors(train(synthetic_dataset, root / "frozen", TrainSettings(**{**ONE_EPOCH, "mode": "frozen"}),
                            progress=False).model_dir)
    return plain, frozen


@pytest.mark.usefixtures("train_only")
def test_finetuning_with_ema_saves_the_average(tmp_path, synthetic_dataset, one_epoch_weights):
    # A decay this close to 1 keeps the average at the starting weights: the pretrained backbone
    # (the head stage trains only the head). Without the average, fine-tuning moves it.
    plain, frozen = one_epoch_weights
    still = _tensors(train(synthetic_dataset, tmp_path / "ema", TrainSettings(ema_decay=1 - 1e-9, **ONE_EPOCH),
                           progress=False).model_dir)
    key = next(k for k in frozen if k.startswith("backbone.") and k.endswith("conv_stem.weight"))
    assert not torch.allclose(plain[key], frozen[key], atol=1e-6)
    torch.testing.assert_close(still[key], frozen[key], atol=1e-6, rtol=0)
    # without validation photos no epoch is judged best: the last epoch's average is kept, not the raw weights
    unjudged = TrainSettings(ema_decay=1 - 1e-9, **{**ONE_EPOCH, "val_fraction": 0.0})
    kept = _tensors(train(synthetic_dataset, tmp_path / "ema-noval", unjudged, progress=False).model_dir)
    torch.testing.assert_close(kept[key], frozen[key], atol=1e-6, rtol=0)


@pytest.mark.usefixtures("train_only")
def test_freeze_bn_fine_tunes_the_weights_but_keeps_the_pretrained_statistics(tmp_path, synthetic_dataset,
                                                                             one_epoch_weights):
    plain, frozen = one_epoch_weights
    # no validation photos: the fine-tuned epoch is kept, whatever its validation loss against the head stage's
    # (with one thread it validated worse, the head stage was kept and the weights were the pretrained ones)
    fixed = _tensors(train(synthetic_dataset, tmp_path / "fixed",
                           TrainSettings(freeze_bn=True, **{**ONE_EPOCH, "val_fraction": 0.0}),
                           progress=False).model_dir)
    stats = [k for k in frozen if k.startswith("backbone.") and k.endswith(("running_mean", "running_var"))]
    assert len(stats) > 40  # every BatchNorm layer of the backbone
    for k in stats:
        torch.testing.assert_close(fixed[k], frozen[k], atol=0, rtol=0)
    assert any(not torch.allclose(plain[k], frozen[k]) for k in stats)  # without it they follow the batches
    conv = next(k for k in frozen if k.startswith("backbone.") and k.endswith("conv_stem.weight"))
    bn_scale = next(k for k in frozen if k.startswith("backbone.") and k.endswith("bn1.weight"))
    for k in (conv, bn_scale):  # the weights, BatchNorm's scale included, still train
        assert not torch.allclose(fixed[k], frozen[k], atol=1e-7)


@pytest.mark.usefixtures("train_only")
def test_a_fine_tune_that_never_validates_better_than_its_head_stage_keeps_the_head_stage(
        tmp_path, synthetic_dataset, one_epoch_weights, monkeypatch):
    from artsentry.train import Trainer

    plain, frozen = one_epoch_weights
    calls = []
    real = Trainer._validate

    def worse_after_the_start(self, loss_fn, model, masks=None):
        loss, acc = real(self, loss_fn, model, masks)
        calls.append(loss)
        return (loss, acc) if len(calls) == 1 else (loss + 10.0, acc)  # every fine-tuning epoch looks worse

    monkeypatch.setattr(Trainer, "_validate", worse_after_the_start)
    result = train(synthetic_dataset, tmp_path / "run", TrainSettings(**{**ONE_EPOCH, "epochs": 2}), progress=False)
    kept = _tensors(result.model_dir)
    assert len(calls) == 3  # the start, then two epochs
    for k in frozen:  # the head stage's weights, which the frozen run with the same settings ends with
        torch.testing.assert_close(kept[k], frozen[k], atol=0, rtol=0)
    assert any(not torch.allclose(plain[k], frozen[k]) for k in frozen)  # fine-tuning had moved them
    summary = json.loads((result.model_dir / "config.json").read_text())["training"]["summary"]["finetune"]
    assert summary["best_epoch"] == -1 and summary["epochs_run"] == 2
    assert summary["start"]["val_loss"] == pytest.approx(calls[0]) == pytest.approx(summary["best_val_loss"])


@pytest.mark.usefixtures("train_only")
def test_early_stopping_counts_epochs_not_better_by_1e_4_and_stops_at_the_patience(tmp_path, synthetic_dataset,
                                                                                    monkeypatch):
    """Early stopping, pinned (a mutation run of ``finetune``, session 22, changed its counting unnoticed):
    an epoch counts as better only by more than 1e-4 of validation loss, a better epoch resets the count,
    training stops when ``patience`` epochs in a row were not better, and every epoch runs all its batches."""
    from artsentry.train import Trainer

    # the head stage, then the epochs: better; worse; better by 5e-5 only (not better: the second in a row)
    script = iter([1.0, 0.9, 0.95, 0.89995, 0.85, 0.95, 0.96])
    monkeypatch.setattr(Trainer, "_validate", lambda self, loss_fn, model, masks=None: (next(script), 0.5))
    calls = _recorded_calls(monkeypatch, Trainer, "_batch_loss")  # (self, batch, loss_fn, step)
    result = train(synthetic_dataset, tmp_path / "run", TrainSettings(**{**ONE_EPOCH, "epochs": 6, "patience": 2}),
                   progress=False)
    summary = json.loads((result.model_dir / "config.json").read_text())["training"]["summary"]["finetune"]
    assert (summary["best_epoch"], summary["epochs_run"], summary["stopped_early"]) == (0, 3, True)
    assert summary["best_val_loss"] == 0.9
    n = int((pd.read_csv(result.run_dir / "manifest.csv")["split"] == "train").sum())
    per_epoch = math.ceil(n / FAST["batch_size"])
    sizes = [min(FAST["batch_size"], n - b * FAST["batch_size"]) for b in range(per_epoch)]
    assert [step for *_, step in calls] == [e * per_epoch + b for e in range(3) for b in range(per_epoch)
                                            if sizes[b] >= 2]
    # a better epoch resets the count: better, worse, better, worse, worse stops after five epochs
    script = iter([1.0, 0.9, 0.95, 0.8, 0.85, 0.95, 0.7])
    result = train(synthetic_dataset, tmp_path / "again", TrainSettings(**{**ONE_EPOCH, "epochs": 6, "patience": 2}),
                   progress=False)
    summary = json.loads((result.model_dir / "config.json").read_text())["training"]["summary"]["finetune"]
    assert (summary["best_epoch"], summary["epochs_run"], summary["stopped_early"]) == (2, 5, True)
    # the count starts at 0: two epochs worse than the head stage stop after two, keeping the head stage
    script = iter([1.0, 1.1, 1.2, 0.5])
    result = train(synthetic_dataset, tmp_path / "worse", TrainSettings(**{**ONE_EPOCH, "epochs": 6, "patience": 2}),
                   progress=False)
    summary = json.loads((result.model_dir / "config.json").read_text())["training"]["summary"]["finetune"]
    assert (summary["best_epoch"], summary["epochs_run"], summary["stopped_early"]) == (-1, 2, True)


def test_head_stage_early_stopping_keeps_the_best_epoch_and_stops_at_the_patience(tmp_path, synthetic_dataset,
                                                                                    monkeypatch):
    """The head stage's early stopping, pinned as fine-tuning's is (a mutation run of ``train_head``, session 23,
    changed its counting unnoticed): better only by more than 1e-4, a better epoch resets the count, the head
    stage stops after ``head_patience`` epochs in a row not better, and keeps the best epoch's weights."""
    from artsentry.train import Trainer

    settings = TrainSettings(mode="frozen", head_epochs=8, head_patience=2, num_workers=0, **FAST)

    def head_stage(folder, losses):
        """The head stage with these validation losses, one per epoch: (trainer, its summary, the head of each)."""
        script, heads = iter(losses), []

        def validate(self, loss_fn, features, targets):
            heads.append({k: v.clone() for k, v in self.model.head.state_dict().items()})
            return next(script), 0.5

        monkeypatch.setattr(Trainer, "_validate_head", validate)
        trainer = Trainer(tmp_path / folder, settings, progress=False)
        trainer.prepare_data(synthetic_dataset)
        trainer.build_model()
        trainer.model.set_backbone_trainable(False)
        return trainer, trainer.train_head(), heads

    # better; better; better by 5e-5 only (not better); worse (the second in a row): stops after 4 epochs
    trainer, summary, heads = head_stage("run", [1.0, 0.9, 0.89995, 0.95, 0.5])
    assert summary == {"best_val_loss": 0.9, "best_epoch": 1}
    assert [h["val_loss"] for h in trainer.history] == [1.0, 0.9, 0.89995, 0.95]
    kept = trainer.model.head.state_dict()
    assert all(torch.equal(kept[k], heads[1][k]) for k in kept)
    assert not all(torch.equal(kept[k], heads[3][k]) for k in kept)
    # a better epoch resets the count, and 1.5e-4 is better: better, worse, better, better by 1.5e-4, worse, worse
    # stops after six epochs
    again, summary, _ = head_stage("again", [1.0, 1.1, 0.8, 0.79985, 0.85, 0.9, 0.1])
    assert summary == {"best_val_loss": 0.79985, "best_epoch": 3}
    assert len(again.history) == 6
    # what it scripted away: the loss and the share of photos whose largest logit is their label's
    monkeypatch.undo()
    features = torch.randn(10, again.model.head[0].num_features)
    with torch.no_grad():
        logits = again.model.head.eval()(features)
    guessed = logits.argmax(1)
    loss, accuracy = again._validate_head(torch.nn.CrossEntropyLoss(), features, guessed)
    assert accuracy == 1.0 and loss == pytest.approx(float(torch.nn.CrossEntropyLoss()(logits, guessed)))
    assert again._validate_head(torch.nn.CrossEntropyLoss(), features, 1 - guessed)[1] == 0.0


@pytest.mark.usefixtures("train_only")
def test_fine_tuning_warms_up_over_its_share_of_all_steps(tmp_path, synthetic_dataset, monkeypatch):
    import artsentry.train as train_module

    calls = _recorded_calls(monkeypatch, train_module, "_set_lr")  # (optimizer, factor)
    settings = TrainSettings(**{**ONE_EPOCH, "epochs": 4, "warmup_fraction": 0.1, "patience": 4})
    assert train(synthetic_dataset, tmp_path / "run", settings, progress=False).resumed_from_step == 0  # a fresh run
    # 24 training photos in batches of 8: 3 steps an epoch, 12 in all; a tenth of them is 1.2: one step of
    # warm-up (at least one), then half a cosine over the other 11
    factors = [factor for _, factor in calls]
    assert len(factors) == 12
    assert factors == pytest.approx([1.0] + [0.5 * (1 + math.cos(math.pi * (s - 1) / 11)) for s in range(1, 12)])


def test_freeze_bn_settings():
    assert TrainSettings(freeze_bn=False).fingerprint() == TrainSettings().fingerprint()
    assert TrainSettings(freeze_bn=True).fingerprint() != TrainSettings().fingerprint()
    with pytest.raises(ValueError, match="--mode frozen"):
        TrainSettings(mode="frozen", freeze_bn=True).validate()
    with pytest.raises(ValueError, match="smallcnn"):
        TrainSettings(architecture="smallcnn", freeze_bn=True).validate()
    assert cli_train_settings("--freeze-bn").freeze_bn is True
    assert cli_train_settings().freeze_bn is False


@pytest.mark.usefixtures("train_only")
def test_select_on_studio_and_listing_keeps_the_epoch_of_lowest_mean_loss(tmp_path, synthetic_dataset):
    from artsentry.data.listing import shift_variants
    from artsentry.data.manifest import read_manifest
    from artsentry.evaluate import variant_probabilities

    settings = TrainSettings(epochs=2, head_epochs=2, patience=5, num_workers=0, select_on="studio+listing",
                             lr=3e-3, **FAST)
    result = train(synthetic_dataset, tmp_path / "run", settings, progress=False)
    training = json.loads((result.model_dir / "config.json").read_text())["training"]
    epochs = [h for h in training["history"] if h["stage"] == "finetune"]
    assert len(epochs) == 2
    for h in epochs:
        assert h["selection_loss"] == pytest.approx((h["val_loss"] + h["val_listing_loss"]) / 2)
        assert h["val_listing_loss"] != pytest.approx(h["val_loss"])  # scored on other pictures
    kept = min(range(2), key=lambda i: epochs[i]["selection_loss"])
    summary = training["summary"]["finetune"]
    assert summary["selected_on"] == "studio+listing"
    assert summary["best_epoch"] == kept
    assert summary["best_val_loss"] == pytest.approx(epochs[kept]["selection_loss"])

    # the listing-style validation photos are evaluate --shift's, drawn with the run's seed
    df, _ = read_manifest(result.run_dir / "manifest.csv")
    val = df[df["split"] == "val"]
    pred = Predictor.load(result.model_dir, runtime="torch")
    probs = variant_probabilities(pred, val["path"].tolist(), shift_variants()["listing"], seed=settings.seed)
    right = probs.argmax(1) == np.array([pred.labels.index(l) for l in val["label"]])
    assert right.mean() == pytest.approx(epochs[kept]["val_listing_accuracy"])


def test_select_on_settings():
    assert TrainSettings(select_on="studio").fingerprint() == TrainSettings().fingerprint()
    assert TrainSettings(select_on="studio+listing").fingerprint() != TrainSettings().fingerprint()
    with pytest.raises(ValueError, match="select-on must be one of"):
        TrainSettings(select_on="listing").validate()
    with pytest.raises(ValueError, match="--mode frozen"):
        TrainSettings(mode="frozen", select_on="studio+listing").validate()
    assert cli_train_settings("--select-on", "studio+listing").select_on == "studio+listing"
    assert cli_train_settings().select_on == "studio"


def test_keep_epochs_saves_each_epoch_as_a_model_that_evaluate_reads(tmp_path, synthetic_dataset):
    from artsentry.evaluate import run_evaluation

    settings = TrainSettings(epochs=2, head_epochs=2, patience=5, num_workers=0, keep_epochs=True, lr=3e-3, **FAST)
    result = train(synthetic_dataset, tmp_path / "run", settings, progress=False)
    training = json.loads((result.model_dir / "config.json").read_text())["training"]
    epochs = [h for h in training["history"] if h["stage"] == "finetune"]
    folders = sorted(p.name for p in (result.run_dir / "epochs").iterdir())
    assert folders == ["01", "02"]
    assert not (result.run_dir / "checkpoint").exists()  # the epochs outlive the checkpoint
    for name, record in zip(folders, epochs):
        folder = result.run_dir / "epochs" / name
        assert json.loads((folder / "config.json").read_text())["training"]["epoch"] == record
        # the weights validation judged: evaluate on the run's val photos gives the recorded accuracy
        metrics = run_evaluation(folder, result.run_dir / "manifest.csv", split="val", out_dir=tmp_path / name,
                                 progress=False, explain=False)
        assert metrics["metrics"]["val"]["accuracy"] == pytest.approx(record["val_accuracy"])
    kept = training["summary"]["finetune"]["best_epoch"]
    final, kept_epoch = _tensors(result.model_dir), _tensors(result.run_dir / "epochs" / folders[kept])
    assert final.keys() == kept_epoch.keys()
    assert all(torch.equal(final[k], kept_epoch[k]) for k in final)
    other = _tensors(result.run_dir / "epochs" / folders[1 - kept])
    assert not all(torch.equal(final[k], other[k]) for k in final)


def test_training_without_validation_runs_every_epoch_and_keeps_the_last(tmp_path, synthetic_dataset, capsys):
    fixed = {**FAST, "val_fraction": 0.0}
    settings = TrainSettings(epochs=2, head_epochs=3, patience=1, num_workers=0, keep_epochs=True, lr=3e-3, **fixed)
    t0 = time.time()
    result = train(synthetic_dataset, tmp_path / "run", settings, progress=False)
    took = time.time() - t0
    said = [line for line in capsys.readouterr().err.splitlines() if line.startswith("epoch ")]
    assert [line.split(":", 1)[0] for line in said] == ["epoch 1/2", "epoch 2/2"]
    assert all(line.split(": ", 1)[1].startswith("training loss ") and
               line.endswith(" (no validation split: the last epoch is kept)") for line in said), said
    split = pd.read_csv(result.run_dir / "manifest.csv")
    validated = pd.read_csv(train(synthetic_dataset, tmp_path / "v", TrainSettings(mode="frozen", head_epochs=1, **FAST),
                                  progress=False).run_dir / "manifest.csv")
    # the same test photos as the validated split of that seed; its val photos are trained on
    assert set(split.loc[split["split"] == "test", "path"]) == set(validated.loc[validated["split"] == "test", "path"])
    assert "val" not in set(split["split"])
    assert (split["split"] == "train").sum() == (validated["split"] != "test").sum()
    config = json.loads((result.model_dir / "config.json").read_text())
    history = config["training"]["history"]
    head = [h for h in history if h["stage"] == "head"]
    tuned = [h for h in history if h["stage"] == "finetune"]
    assert [h["epoch"] for h in head] == [0, 1, 2] and [h["epoch"] for h in tuned] == [0, 1]  # no early stop
    assert all(set(h) == {"stage", "epoch", "train_loss"} for h in head)
    assert all("val_loss" not in h and h["train_loss"] > 0 and 0 <= h["seconds"] <= took for h in tuned)
    summary = config["training"]["summary"]
    assert summary["head"]["best_epoch"] == 2 and summary["finetune"]["best_epoch"] == 1
    assert summary["finetune"]["best_val_loss"] is None and "start" not in summary["finetune"]
    assert config["data"]["splits"]["val"] == {}
    final, last = _tensors(result.model_dir), _tensors(result.run_dir / "epochs" / "02")
    assert all(torch.equal(final[k], last[k]) for k in final)
    assert result.evaluation["metrics"]["test"]["n"] == 12 and "val" not in result.evaluation["metrics"]


def test_val_fraction_0_trains_on_the_val_rows_of_a_manifest(tmp_path, synthetic_dataset):
    manifest = tmp_path / "m.csv"
    rows = [(str(p), p.parent.name) for p in sorted(synthetic_dataset.rglob("*.jpg"))]
    pd.DataFrame({"path": [r[0] for r in rows], "label": [r[1] for r in rows],
                  "split": ["val" if i % 4 == 1 else "test" if i % 4 == 2 else "train" for i in range(len(rows))]}
                 ).to_csv(manifest, index=False)
    settings = TrainSettings(mode="frozen", head_epochs=2, num_workers=0, **{**FAST, "val_fraction": 0.0})
    result = train(manifest, tmp_path / "run", settings, progress=False)
    split = pd.read_csv(result.run_dir / "manifest.csv")
    assert split["split"].value_counts().to_dict() == {"train": 36, "test": 12}
    notes = json.loads((result.run_dir / "run.json").read_text())["notes"]
    assert any("12 image(s) the manifest puts in the val split are trained on" in n for n in notes)


def test_training_without_validation_or_test_settings(tmp_path, synthetic_dataset, capsys):
    with pytest.raises(ValueError, match="--val-fraction 0"):
        TrainSettings(val_fraction=0.0, target_recall=0.9).validate()
    with pytest.raises(ValueError, match="--val-fraction 0"):
        TrainSettings(val_fraction=0.0, select_on="studio+listing").validate()
    with pytest.raises(ValueError, match="--test-fraction 0"):
        TrainSettings(test_fraction=0.0, target_precision=0.9).validate()
    with pytest.raises(TrainingError, match="val split is empty.*--val-fraction 0"):
        train(synthetic_dataset, tmp_path / "tiny", TrainSettings(mode="frozen", val_fraction=0.001, **{
            k: v for k, v in FAST.items() if k != "val_fraction"}), progress=False)
    # every photo trained on: nothing to evaluate, said so, and the finished run is not retrained
    args = ["-q", "train", str(synthetic_dataset), "--out", str(tmp_path / "all"), "--mode", "frozen",
            "--image-size", "64", "--head-epochs", "2", "--val-fraction", "0", "--test-fraction", "0", "--no-export"]
    assert main(args) == 0
    assert "no test split (--test-fraction 0): not evaluated" in capsys.readouterr().out
    assert set(pd.read_csv(tmp_path / "all" / "manifest.csv")["split"]) == {"train"}
    # the data had no split column: no note of val rows trained on
    assert not any("val split" in note for note in json.loads((tmp_path / "all" / "run.json").read_text())["notes"])
    assert (tmp_path / "all" / "model" / "model.safetensors").is_file()
    assert not (tmp_path / "all" / "metrics.json").exists()
    with pytest.raises(TrainingError, match="already holds a trained model"):
        train(synthetic_dataset, tmp_path / "all", TrainSettings(), progress=False)


def test_data_too_small_to_train_leaves_no_run_to_resume(tmp_path, synthetic_dataset):
    """A failed start saves no split: once photos are added, the same command trains on them."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(synthetic_dataset / "ivory", data / "ivory")
    run = tmp_path / "run"
    settings = TrainSettings(mode="frozen", **FAST)
    with pytest.raises(TrainingError, match=r"at least two labels; found only \['ivory'\] \(24 image"):
        Trainer(run, settings, progress=False).prepare_data(data)
    assert not run.exists()
    shutil.copytree(synthetic_dataset / "non_ivory", data / "non_ivory")
    tiny_val = TrainSettings(mode="frozen", **{**FAST, "val_fraction": 0.01})
    with pytest.raises(TrainingError, match=r"val split is empty \(36 train, 0 val, 12 test of 48 images\)"):
        Trainer(run, tiny_val, progress=False).prepare_data(data)
    assert not run.exists()
    df = Trainer(run, settings, progress=False).prepare_data(data)
    assert len(df) == 48 and set(df["split"]) == {"train", "val", "test"} and (run / "manifest.csv").is_file()
    # a manifest's own split column with no training rows
    no_train = tmp_path / "no_train.csv"
    df.assign(split=["val" if i % 2 else "test" for i in range(len(df))]).to_csv(no_train, index=False)
    with pytest.raises(TrainingError, match=r"the train split is empty \(0 train, 24 val, 24 test of 48 images\)"):
        Trainer(tmp_path / "run2", settings, progress=False).prepare_data(no_train)
    assert not (tmp_path / "run2").exists()


def test_resuming_says_when_the_data_changed_since_the_run_started(tmp_path, synthetic_dataset, caplog):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(synthetic_dataset, data)
    run = tmp_path / "run"
    settings = TrainSettings(mode="frozen", **FAST)
    first = Trainer(run, settings, progress=False).prepare_data(data)
    assert data_changed_since(data, first) is None
    (data / "ivory" / "ivory_000.jpg").unlink()
    shutil.move(data / "ivory" / "ivory_001.jpg", data / "non_ivory" / "ivory_001.jpg")
    shutil.copy(data / "ivory" / "ivory_002.jpg", data / "ivory" / "extra_a.jpg")
    shutil.copy(data / "ivory" / "ivory_003.jpg", data / "ivory" / "extra_b.jpg")
    # a moved file is a new path: it counts as added and gone; relabelling needs a manifest
    assert data_changed_since(data, first) == "3 image(s) added, 2 image(s) gone"
    relabelled = first.assign(label=first["label"].where(first.index != 5, "other"))
    assert "1 relabelled" in data_changed_since(data, relabelled)
    with caplog.at_level("WARNING"):
        again = Trainer(run, settings, progress=False).prepare_data(data)
    assert again.equals(first)  # the saved split, row for row
    assert [r.getMessage() for r in caplog.records if "has changed since" in r.getMessage()] == [
        f"{data} has changed since {run} was started (3 image(s) added, 2 image(s) gone): resuming with the saved "
        "split; --overwrite trains on the data as it is now"]


def test_keep_epochs_settings():
    assert TrainSettings(keep_epochs=True).fingerprint() == TrainSettings().fingerprint()  # changes no training
    with pytest.raises(ValueError, match="--mode frozen"):
        TrainSettings(mode="frozen", keep_epochs=True).validate()
    assert cli_train_settings("--keep-epochs").keep_epochs
    assert not cli_train_settings().keep_epochs


def _recorded_calls(monkeypatch, owner, name: str) -> list[tuple]:
    """A list that fills with the arguments of every call of ``owner.name``, which still runs."""
    real, calls = getattr(owner, name), []

    def spy(*args):
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(owner, name, spy)
    return calls


def _stopped_at_call(monkeypatch, owner, name: str, stop_at_call: int, data, run, settings) -> None:
    """Train until the ``stop_at_call``-th call of ``owner.name`` raises KeyboardInterrupt (Ctrl-C there);
    ``owner.name`` is itself again afterwards."""
    real, calls = getattr(owner, name), []

    def stopping(*args):
        calls.append(args)
        if len(calls) == stop_at_call:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(owner, name, stopping)
    with pytest.raises(KeyboardInterrupt):
        train(data, run, settings, progress=False)
    monkeypatch.setattr(owner, name, real)


def _stopped_and_resumed(monkeypatch, owner, name: str, stop_at_call: int, data, run, settings, whole: dict):
    """Train until the ``stop_at_call``-th call of ``owner.name`` stops it (``_stopped_at_call``), train again
    with ``settings``, and check the run ends with the weights ``whole``; the resumed run."""
    _stopped_at_call(monkeypatch, owner, name, stop_at_call, data, run, settings)
    resumed = train(data, run, settings, progress=False)
    cut = _tensors(resumed.model_dir)
    assert cut.keys() == whole.keys()
    for key in whole:
        torch.testing.assert_close(cut[key], whole[key], atol=1e-5, rtol=1e-4, msg=key)
    return resumed


@pytest.mark.usefixtures("train_only")
def test_finetune_stopped_mid_epoch_resumes_as_if_never_stopped(tmp_path, synthetic_dataset, monkeypatch):
    """Augmentation draws follow (seed, epoch, photo) and loaders take nothing from the run's random
    state: a run stopped in the middle of an epoch and resumed with other workers ends with the weights
    of the uninterrupted run (the draws used to restart with the workers, so they differed)."""
    import artsentry.train as train_module

    settings = TrainSettings(epochs=2, head_epochs=1, checkpoint_every=1, num_workers=2, **FAST)
    whole = _tensors(train(synthetic_dataset, tmp_path / "whole", settings, progress=False).model_dir)
    # 3 steps an epoch: the fifth learning-rate setting is step 4's, the second of epoch 2, after step 3's checkpoint
    cut_settings = TrainSettings(epochs=2, head_epochs=1, checkpoint_every=1, num_workers=0, **FAST)
    resumed = _stopped_and_resumed(monkeypatch, train_module, "_set_lr", 5, synthetic_dataset, tmp_path / "cut",
                                   cut_settings, whole)
    assert resumed.resumed_from_step == 4


@pytest.mark.usefixtures("train_only")
def test_a_checkpoint_cut_between_its_files_resumes_as_if_never_stopped(tmp_path, synthetic_dataset, monkeypatch):
    """Ctrl-C after a checkpoint's tensors are written and before its record (state.json): the resumed run
    starts from the last whole checkpoint and ends with the uninterrupted run's weights. (It used to resume
    the newer weights at the older record's step, and so ran step 2 twice.)"""
    import artsentry.train as train_module

    settings = TrainSettings(epochs=2, head_epochs=1, checkpoint_every=1, num_workers=0, **FAST)
    whole = _tensors(train(synthetic_dataset, tmp_path / "whole", settings, progress=False).model_dir)
    real, records = train_module.write_text_atomic, []

    def cut_at_step_2(path, text):
        if Path(path).name == "state.json":
            records.append(json.loads(text)["global_step"])
            if records[-1] == 2:
                raise KeyboardInterrupt
        return real(path, text)

    run = tmp_path / "cut"
    monkeypatch.setattr(train_module, "write_text_atomic", cut_at_step_2)
    with pytest.raises(KeyboardInterrupt):
        train(synthetic_dataset, run, settings, progress=False)
    assert records == [0, 1, 2]  # the head stage's checkpoint, step 1's, and step 2's record never written
    monkeypatch.setattr(train_module, "write_text_atomic", real)
    left = json.loads((run / "checkpoint" / "state.json").read_text())
    assert left["global_step"] == 1
    resumed = train(synthetic_dataset, run, settings, progress=False)
    assert resumed.resumed_from_step == 1
    cut = _tensors(resumed.model_dir)
    for key in whole:
        torch.testing.assert_close(cut[key], whole[key], atol=1e-5, rtol=1e-4, msg=key)


@pytest.mark.usefixtures("train_only")
def test_a_checkpoint_missing_a_file_is_refused_and_one_of_the_older_naming_resumes(tmp_path, synthetic_dataset,
                                                                                     monkeypatch):
    import artsentry.train as train_module

    settings = TrainSettings(epochs=1, head_epochs=1, checkpoint_every=1, num_workers=0, **FAST)
    whole = _tensors(train(synthetic_dataset, tmp_path / "whole", settings, progress=False).model_dir)
    run = tmp_path / "cut"
    _stopped_at_call(monkeypatch, train_module, "_set_lr", 2, synthetic_dataset, run, settings)  # at step 2
    ckpt = run / "checkpoint"
    record = json.loads((ckpt / "state.json").read_text())
    assert record["global_step"] == 1
    # the head stage's checkpoint named best-1 (the start is the model to beat) and step 1's kept it
    assert record["files"] == {"state": "state-2.safetensors", "best": "best-1.safetensors"}
    assert sorted(p.name for p in ckpt.glob("*.safetensors")) == ["best-1.safetensors", "state-2.safetensors"]

    (ckpt / "best-1.safetensors").rename(tmp_path / "aside")
    with pytest.raises(TrainingError, match=r"checkpoint is incomplete \(best-1.safetensors missing\); "
                                            "use --overwrite"):
        train(synthetic_dataset, run, settings, progress=False)
    # a checkpoint file cut short (a disk error, a copy stopped half-way): named, not safetensors' traceback
    state = (ckpt / "state-2.safetensors").read_bytes()
    (ckpt / "state-2.safetensors").write_bytes(state[: len(state) // 2])
    (tmp_path / "aside").rename(ckpt / "best-1.safetensors")
    with pytest.raises(TrainingError, match=r"checkpoint is damaged \(Error while deserializing header.*\); use "
                                            "--overwrite to train again from the start"):
        train(synthetic_dataset, run, settings, progress=False)
    (ckpt / "state-2.safetensors").write_bytes(state)
    (ckpt / "best-1.safetensors").rename(tmp_path / "aside")

    # as a run started before checkpoints named their files left it
    (tmp_path / "aside").rename(ckpt / "best.safetensors")
    (ckpt / "state-2.safetensors").rename(ckpt / "state.safetensors")
    del record["files"], record["serial"]
    (ckpt / "state.json").write_text(json.dumps(record))
    resumed = train(synthetic_dataset, run, settings, progress=False)
    assert resumed.resumed_from_step == 1
    cut = _tensors(resumed.model_dir)
    for key in whole:
        torch.testing.assert_close(cut[key], whole[key], atol=1e-5, rtol=1e-4, msg=key)


def test_augmentation_draws_follow_the_photo_not_the_worker(synthetic_dataset):
    from artsentry.data.dataset import ImageDataset, make_loader
    from artsentry.data.transforms import Preprocessing, train_transform

    photos = sorted(str(p) for p in synthetic_dataset.rglob("*.jpg"))[:8]
    augment = train_transform(Preprocessing(input_size=32), "listing")  # crops, flips, colour, listing-style

    def draws(workers, seed, order=None):
        ds = ImageDataset(photos, augment, draw_seed=seed)
        loader = make_loader(ds, batch_size=3, num_workers=workers, sampler=order or list(range(len(photos))),
                             generator=torch.Generator().manual_seed(workers))  # (else it seeds workers from ours)
        return {i: x for batch in loader for i, x in zip(batch.index, batch.x)}

    torch.manual_seed(1)
    before = torch.get_rng_state()
    alone = draws(0, seed=7)
    assert torch.equal(torch.get_rng_state(), before)  # the caller's random state is left as it was
    with_workers, later_half = draws(2, seed=7), draws(2, seed=7, order=[5, 6, 7, 4])
    for i in range(8):
        assert torch.equal(alone[i], with_workers[i])
    for i in (4, 5, 6, 7):
        assert torch.equal(alone[i], later_half[i])
    other = draws(0, seed=8)
    assert not any(torch.equal(alone[i], other[i]) for i in range(8))


def test_interrupted_ema_finetune_resumes_its_average(tmp_path, synthetic_dataset, monkeypatch):
    settings = TrainSettings(epochs=2, head_epochs=2, ema_decay=0.8, checkpoint_every=1, num_workers=0, **FAST)
    whole_dir = train(synthetic_dataset, tmp_path / "whole", settings, progress=False).model_dir
    # the fourth update of the average comes after the checkpoint of step 3
    resumed = _stopped_and_resumed(monkeypatch, WeightAverage, "update", 4, synthetic_dataset, tmp_path / "cut",
                                   settings, _tensors(whole_dir))
    assert resumed.resumed_from_step == 3
    # the resumed run skipped the head stage; its config.json still reports it, from the checkpoint
    whole_training, cut_training = (json.loads((d / "config.json").read_text())["training"]
                                    for d in (whole_dir, resumed.model_dir))
    assert cut_training["summary"]["head"] == whole_training["summary"]["head"]
    assert cut_training["summary"]["head"]["best_epoch"] in (0, 1)
    heads = [[h for h in t["history"] if h["stage"] == "head"] for t in (whole_training, cut_training)]
    assert len(heads[0]) == 2 and heads[1] == heads[0]
    assert [h["stage"] for h in cut_training["history"]] == ["head", "head", "finetune", "finetune"]


@pytest.mark.usefixtures("train_only")
def test_listing_finetune_estimates_each_photos_foreground_once_and_cleans_up(tmp_path, synthetic_dataset, monkeypatch):
    masked, drawn = _record_foreground_estimates(monkeypatch)
    settings = TrainSettings(epochs=3, head_epochs=1, augment="listing", num_workers=0, **FAST)
    train(synthetic_dataset, tmp_path / "run", settings, progress=False)
    # three epochs of 24 training photos, ~48% of draws with the background family: photos
    # drawn with it more than once, each estimated once
    assert len(set(drawn)) < len(drawn)
    assert sorted(masked) == sorted(set(drawn))
    assert not (tmp_path / "run" / "checkpoint").exists()  # the masks go with the checkpoint


def _record_foreground_estimates(monkeypatch) -> tuple[list, list]:
    """Lists that fill with the photo of every foreground estimate the listing generator makes,
    and of every re-photographing with the background family (which needs one)."""
    import artsentry.data.listing as listing

    real_mask, masked = listing.foreground_mask, []
    real_shot, drawn = listing.rephotograph, []
    monkeypatch.setattr(listing, "foreground_mask",
                        lambda img, *a, **k: masked.append(listing.MaskCache.key(img)) or real_mask(img, *a, **k))
    monkeypatch.setattr(listing, "rephotograph", lambda img, seed, families, mask=None: (
        drawn.append(listing.MaskCache.key(img)) if "background" in families else None) or real_shot(img, seed, families, mask))
    return masked, drawn


def test_distillation_loss_mixes_the_labels_and_the_teacher():
    from artsentry.train import distillation_loss

    torch.manual_seed(0)
    logits = torch.randn(6, 2, requires_grad=True)
    y = torch.tensor([0, 1, 0, 1, 1, 0])
    teacher = torch.tensor([[0.9, 0.1]] * 6)
    hard = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    torch.testing.assert_close(distillation_loss(logits, y, teacher, 0.0, hard), hard(logits, y))
    soft = distillation_loss(logits, y, teacher, 1.0, hard)
    torch.testing.assert_close(soft, -(teacher * logits.log_softmax(1)).sum(1).mean())
    half = distillation_loss(logits, y, teacher, 0.5, hard)
    torch.testing.assert_close(half, 0.5 * hard(logits, y) + 0.5 * soft)
    soft.backward()  # the gradient of a soft cross-entropy: (student - teacher) / n
    torch.testing.assert_close(logits.grad, (logits.softmax(1) - teacher).detach() / 6)


def _constant_teacher(trained_model_dir, folder, favourite: int):
    """A copy of a trained classifier that gives class ``favourite`` 0.9999 to every photo."""
    import shutil

    from safetensors.torch import save_file

    shutil.copytree(trained_model_dir, folder)
    w = _tensors(folder)
    last = max((k for k in w if k.startswith("head.") and k.endswith(".weight")), key=lambda k: int(k.split(".")[1]))
    w[last] = torch.zeros_like(w[last])
    bias = torch.full_like(w[last.replace("weight", "bias")], -4.6)
    bias[favourite] = 4.6
    w[last.replace("weight", "bias")] = bias
    save_file(w, str(folder / "model.safetensors"))
    return folder


@pytest.mark.usefixtures("train_only")
def test_fine_tuning_follows_the_teachers_probabilities_of_each_batch(tmp_path, synthetic_dataset, model_dir,
                                                                     monkeypatch):
    # every fine-tuning step takes its loss against the teacher's probabilities for the very
    # batch the student sees (distillation_loss itself: the test above); the model records
    # which teacher weights taught it
    import hashlib

    import artsentry.train as training

    teacher = _constant_teacher(model_dir, tmp_path / "teacher", favourite=1)
    seen, loss, forward = [], training.distillation_loss, training.Teachers.forward
    inputs = []
    monkeypatch.setattr(training.Teachers, "forward", lambda self, x: inputs.append(x.clone()) or forward(self, x))
    monkeypatch.setattr(training, "distillation_loss",
                        lambda logits, y, probs, w, hard: seen.append((logits.shape, probs.clone(), w)) or
                        loss(logits, y, probs, w, hard))
    taught = train(synthetic_dataset, tmp_path / "taught", TrainSettings(
        teacher=(str(tmp_path / "teacher"),), distill_weight=0.7, epochs=2, head_epochs=2, num_workers=0, **FAST),
        progress=False)
    assert [(tuple(shape), w) for shape, _, w in seen] == [((8, 2), 0.7)] * 6  # 24 training photos, batches of 8
    assert all(torch.allclose(p, torch.tensor([1e-4, 1 - 1e-4]).expand_as(p), atol=2e-5) for _, p, _ in seen)
    assert len(inputs) == 6 and len({float(x.sum()) for x in inputs}) == 6  # augmented batches, each its own
    summary = json.loads((taught.model_dir / "config.json").read_text())["training"]["summary"]["finetune"]
    assert summary["teachers"] == {str(teacher): hashlib.sha256((teacher / "model.safetensors").read_bytes()).hexdigest()}


def test_a_calibrated_teacher_teaches_the_probabilities_its_predictor_gives(tmp_path, model_dir):
    from artsentry.inference import Predictor
    from artsentry.models.artifact import update_config
    from artsentry.train import Teachers

    teacher = _constant_teacher(model_dir, tmp_path / "teacher", favourite=1)
    update_config(teacher, calibration={"temperature": 2.0})  # logits +-4.6 -> +-2.3: 0.99 instead of 0.9999
    predictor = Predictor.load(teacher, runtime="torch")
    x = torch.randn(3, 3, 64, 64)
    taught = Teachers([str(teacher)], predictor.labels, predictor.preprocessing)(x)
    assert taught.shape == (3, 2) and np.allclose(taught.numpy(), predictor.proba_tensor(x), atol=1e-5)
    assert float(taught[0, 1]) == pytest.approx(1 / (1 + np.exp(-4.6)), abs=1e-4)
    # two teachers: the mean of their probabilities, photo by photo (a trained model's differ between photos)
    pair = Teachers([str(model_dir), str(teacher)], predictor.labels, predictor.preprocessing)(x)
    expected = (Predictor.load(model_dir, runtime="torch").proba_tensor(x) + predictor.proba_tensor(x)) / 2
    assert pair.shape == (3, 2) and np.allclose(pair.numpy(), expected, atol=1e-5)
    assert not np.allclose(expected[0], expected[1:], atol=1e-3)


@pytest.mark.usefixtures("train_only")
def test_teacher_settings_are_checked_before_training(tmp_path, synthetic_dataset, model_dir):
    import shutil

    assert TrainSettings(distill_weight=0.9).fingerprint() == TrainSettings().fingerprint()  # no teacher: unused
    assert TrainSettings(teacher=("a",)).fingerprint() != TrainSettings().fingerprint()
    assert TrainSettings(teacher=("a",)).fingerprint() != TrainSettings(teacher=("a",), distill_weight=0.9).fingerprint()
    with pytest.raises(ValueError, match="distill weight"):
        TrainSettings(teacher=("a",), distill_weight=1.5).validate()
    with pytest.raises(ValueError, match="--mode frozen"):
        TrainSettings(teacher=("a",), mode="frozen").validate()
    settings = cli_train_settings("--teacher", "t1", "runs/t2")
    assert settings.teacher == ("t1", "runs/t2") and settings.distill_weight == 0.5
    with pytest.raises(ValueError, match="give --teacher"):
        cli_train_settings("--distill-weight", "0.3")
    assert TrainSettings.from_dict(json.loads(json.dumps(
        {"teacher": ["t1"], "distill_weight": 0.3}))) == TrainSettings(teacher=("t1",), distill_weight=0.3)
    # a teacher for other labels, or no model at all, stops the run before the head stage
    cats = shutil.copytree(model_dir, tmp_path / "cats")
    config = json.loads((cats / "config.json").read_text())
    (cats / "config.json").write_text(json.dumps({**config, "labels": ["cat", "dog"], "positive_label": "cat"}))
    base = dict(epochs=1, head_epochs=1, num_workers=0, **FAST)
    with pytest.raises(TrainingError, match="labels"):
        train(synthetic_dataset, tmp_path / "s1", TrainSettings(teacher=(str(cats),), **base), progress=False)
    with pytest.raises(TrainingError, match="teacher .*no such model folder"):
        train(synthetic_dataset, tmp_path / "s2", TrainSettings(teacher=(str(tmp_path / "nothing"),), **base),
              progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(TrainingError, match="teacher .*not a model folder"):
        train(synthetic_dataset, tmp_path / "s3", TrainSettings(teacher=(str(tmp_path / "empty"),), **base),
              progress=False)
    # refused before the run folder is made: it used to hold the split and a run.json naming the wrong teacher,
    # and the command with the right one was refused as 'a run with other settings'
    assert not (tmp_path / "s1").exists() and not (tmp_path / "s2").exists() and not (tmp_path / "s3").exists()


def test_finetuned_model_runs_larger_than_it_trained(tmp_path, synthetic_dataset):
    settings = TrainSettings(epochs=1, head_epochs=2, inference_size=96, **{**FAST, "image_size": 80})
    result = train(synthetic_dataset, tmp_path / "run", settings, progress=False)
    config = json.loads((result.model_dir / "config.json").read_text())
    assert config["architecture"]["input_size"] == 80 and config["preprocessing"]["input_size"] == 96
    assert config["training"]["settings"]["image_size"] == 80
    assert result.evaluation["input_size"] == 96  # the test figures are measured as the model will run
    assert Predictor.load(result.model_dir).predict_proba([Image.new("RGB", (50, 40), "white")]).shape == (1, 2)


def test_model_trained_on_small_crops_runs_and_validates_at_the_matched_size(tmp_path, synthetic_dataset, monkeypatch):
    import artsentry.train as training

    sizes = []

    def spy(pre):
        sizes.append(pre.input_size)
        return eval_transform(pre)

    eval_transform = training.eval_transform
    monkeypatch.setattr(training, "eval_transform", spy)
    settings = TrainSettings(epochs=1, head_epochs=1, crop_scale=(0.2, 0.6), num_workers=0, **FAST)
    result = train(synthetic_dataset, tmp_path / "run", settings, progress=False)
    config = json.loads((result.model_dir / "config.json").read_text())
    # 64 px crops of 20-60% of the photo show it 1.64x larger: the whole photo runs at 96 px
    assert config["architecture"]["input_size"] == 64 and config["preprocessing"]["input_size"] == 96
    assert config["training"]["settings"]["crop_scale"] == [0.2, 0.6]
    # head-stage features (train, val) at 64; fine-tuning judged at 96, its start (the head stage) and its epoch
    assert sizes == [64, 64, 96, 96]
    assert result.evaluation["input_size"] == 96


@pytest.mark.usefixtures("train_only")
def test_finetune_with_drop_path_writes_a_plain_artifact(tmp_path, synthetic_dataset):
    settings = TrainSettings(epochs=1, head_epochs=1, drop_path=0.3, num_workers=0, **FAST)
    result = train(synthetic_dataset, tmp_path / "run", settings, progress=False)
    config = json.loads((result.model_dir / "config.json").read_text())
    assert config["training"]["settings"]["drop_path"] == 0.3
    predictor = Predictor.load(result.model_dir)  # rebuilt without stochastic depth; loads strictly
    photo = Image.new("RGB", (50, 40), "white")
    np.testing.assert_array_equal(predictor.predict_proba([photo]), predictor.predict_proba([photo]))


@pytest.mark.usefixtures("train_only")
def test_frozen_lite0_learns_and_writes_a_complete_artifact(tmp_path, synthetic_dataset):
    run = tmp_path / "run"
    result = train(synthetic_dataset, run, TrainSettings(mode="frozen", **FAST), progress=False)
    config = json.loads((result.model_dir / "config.json").read_text())
    assert config["architecture"]["name"] == "efficientnet_lite0"
    assert config["labels"] == ["ivory", "non_ivory"] and config["positive_label"] == "ivory"
    assert config["preprocessing"]["input_size"] == 64
    assert config["training"]["settings"]["mode"] == "frozen"
    splits = config["data"]["splits"]
    assert sum(sum(v.values()) for v in splits.values()) == 48
    assert not (run / "checkpoint").exists()
    predictor = Predictor.load(result.model_dir)
    test = [str(p) for p in sorted(synthetic_dataset.glob("*/*.jpg"))]
    preds = predictor.predict_files(test)
    acc = np.mean([p.label == Path(p.source).parent.name for p in preds])
    assert acc >= 0.9


def test_a_damaged_feature_cache_is_extracted_again_and_a_damaged_run_record_named(tmp_path, synthetic_dataset, caplog):
    """The frozen backbone's features are cached in the run's features/; a cache file cut short (a run
    stopped while a copy of the folder was made, a disk error) ended the resumed run in safetensors' traceback.
    It is derived data: said, and made again."""
    import shutil

    from safetensors.torch import load_file

    run = tmp_path / "run"
    settings = TrainSettings(mode="frozen", **FAST)
    train(synthetic_dataset, run, settings, progress=False)
    cache = run / "features" / "train.safetensors"
    whole = {k: v.clone() for k, v in load_file(str(cache)).items()}  # the file is mapped: copied before it is cut
    cache.write_bytes(cache.read_bytes()[:300])
    shutil.rmtree(run / "model")  # the run stopped before its model was saved
    (run / "report.html").unlink()
    caplog.clear()
    train(synthetic_dataset, run, settings, progress=False)
    assert f"{cache} is damaged (Error while deserializing header" in caplog.text
    assert "extracting its features again" in caplog.text
    again = load_file(str(cache))
    torch.testing.assert_close(again["features"], whole["features"])
    assert torch.equal(again["targets"], whole["targets"])
    # the run's record cut short: named (JSON's bare 'Expecting value' named no file), not made up
    shutil.rmtree(run / "model")
    (run / "run.json").write_text('{"fingerprint": ')
    with pytest.raises(TrainingError) as refused:
        train(synthetic_dataset, run, settings, progress=False)
    assert str(refused.value) == (f"{run / 'run.json'}: the run's record is damaged (Expecting value: line 1 column "
                                  "17 (char 16)); use --overwrite to train again from the start, or another --out")


def test_train_seed_settings():
    assert cli_train_settings().train_seed is None and cli_train_settings("--train-seed", "3").train_seed == 3
    assert TrainSettings(seed=2).run_seed == 2 and TrainSettings(seed=2, train_seed=5).run_seed == 5
    # runs trained before the setting existed stay resumable; another training seed is another run
    assert TrainSettings(train_seed=None).fingerprint() == TrainSettings().fingerprint()
    assert TrainSettings(train_seed=1).fingerprint() != TrainSettings().fingerprint()


def test_runs_that_differ_in_training_seed_start_from_one_head(tmp_path, synthetic_dataset):
    """A soup averages weights from one start: the training seed must not draw another initial head."""
    def initial_head(name, **kw):  # no head epochs: the saved head is the one training started from
        result = train(synthetic_dataset, tmp_path / name, TrainSettings(mode="frozen", head_epochs=0, num_workers=0,
                                                                          **{**FAST, "test_fraction": 0.0, **kw}),
                       progress=False)
        return Predictor.load(result.model_dir).model.head.state_dict()

    head = initial_head("seed0")
    same = initial_head("train-seed-1", train_seed=1)
    other = initial_head("seed-1", seed=1)
    assert all(torch.equal(head[k], same[k]) for k in head)
    assert not all(torch.equal(head[k], other[k]) for k in head)


def test_train_soup_souping_runs_that_differ_only_in_their_training_seed(tmp_path, synthetic_dataset, capsys):
    from dataclasses import replace

    from safetensors.torch import load_file

    run = tmp_path / "run"
    recipe = ["--mode", "frozen", "--image-size", "64", "--val-fraction", "0.25", "--test-fraction", "0.25",
              "--head-epochs", "3"]
    code = main(["-q", "train", str(synthetic_dataset), "--out", str(run), "--soup", "2", *recipe, "--no-export"])
    assert code == 0
    out = capsys.readouterr().out
    assert out.count("soup ingredient") == 2 and "test: n 12" in out
    parts = [run / "ingredients" / k for k in ("0", "1")]
    seeds = [json.loads((p / "model" / "config.json").read_text())["training"]["settings"]["train_seed"] for p in parts]
    assert seeds == [None, 1]  # the first is the plain run of the recipe
    split = pd.read_csv(run / "manifest.csv")[["path", "split"]]
    for p in parts:  # the split follows --seed alone
        pd.testing.assert_frame_equal(pd.read_csv(p / "manifest.csv")[["path", "split"]], split)
    a, b, soup = (load_file(d / "model.safetensors") for d in (parts[0] / "model", parts[1] / "model", run / "model"))
    heads = [k for k in a if k.startswith("head.") and a[k].is_floating_point()]
    assert heads and not all(torch.equal(a[k], b[k]) for k in heads)  # another training seed, another head
    for k in heads:
        torch.testing.assert_close(soup[k], (a[k] + b[k]) / 2)
    config = json.loads((run / "model" / "config.json").read_text())
    assert [m["folder"] for m in config["soup"]["models"]] == [str(p / "model") for p in parts]
    assert config["metrics"]["test"]["n"] == 12 and "calibration" in config
    assert config["threshold_rule"]["rule"] != "default of a soup"  # chosen on the validation photos
    assert config["training"]["soup_train_seeds"] == [0, 1] and config["training"]["settings"]["mode"] == "frozen"
    assert json.loads((run / "metrics.json").read_text())["metrics"]["test"]["n"] == 12

    settings = cli_train_settings(*recipe)
    with pytest.raises(TrainingError, match="already holds a trained model"):
        train_soup(synthetic_dataset, run, settings, 2, progress=False)
    # stopped after its runs: only the soup is made again, the finished runs are not retrained
    shutil.rmtree(run / "model")
    before = [(p / "model" / "model.safetensors").stat().st_mtime_ns for p in parts]
    result = train_soup(synthetic_dataset, run, settings, 2, progress=False)
    assert [(p / "model" / "model.safetensors").stat().st_mtime_ns for p in parts] == before
    assert result.evaluation["metrics"]["test"]["n"] == 12
    torch.testing.assert_close(load_file(run / "model" / "model.safetensors")[heads[0]], soup[heads[0]])
    # finished runs of another recipe are not souped with this one
    shutil.rmtree(run / "model")
    with pytest.raises(TrainingError, match="trained with other settings"):
        train_soup(synthetic_dataset, run, replace(settings, head_epochs=4), 2, progress=False)
    with pytest.raises(TrainingError, match="at least 2 runs"):
        train_soup(synthetic_dataset, tmp_path / "one", settings, 1, progress=False)
    with pytest.raises(TrainingError, match="smallcnn"):
        train_soup(synthetic_dataset, tmp_path / "cnn", TrainSettings(architecture="smallcnn"), 2, progress=False)


@pytest.mark.usefixtures("train_only")
def test_smallcnn_trains_from_scratch(tmp_path, synthetic_dataset):
    result = train(synthetic_dataset, tmp_path / "run",
                   TrainSettings(architecture="smallcnn", epochs=2, lr=3e-3, **{**FAST, "image_size": None}),
                   progress=False)
    config = json.loads((result.model_dir / "config.json").read_text())
    assert config["preprocessing"]["input_size"] == 150
    assert [h["stage"] for h in config["training"]["history"]] == ["finetune", "finetune"]


@pytest.mark.usefixtures("train_only")
def test_finished_run_is_not_silently_retrained(tmp_path, synthetic_dataset):
    settings = TrainSettings(mode="frozen", head_epochs=2, **FAST)
    train(synthetic_dataset, tmp_path / "run", settings, progress=False)
    with pytest.raises(TrainingError, match="already holds a trained model"):
        train(synthetic_dataset, tmp_path / "run", settings, progress=False)
    train(synthetic_dataset, tmp_path / "run", settings, progress=False, overwrite=True)


@pytest.mark.usefixtures("train_only")
def test_train_refuses_an_out_folder_that_holds_no_run_and_touches_nothing(tmp_path, synthetic_dataset):
    """`--out` mistyped as the data's folder, a home folder or a folder of runs: refused, with or without
    --overwrite (which used to empty it: `train /missing --out ~ --overwrite` deleted everything there)."""
    folder = tmp_path / "mine"
    (folder / "sub").mkdir(parents=True)
    (folder / "precious.txt").write_text("kept")
    (folder / "sub" / "notes.md").write_text("kept too")
    settings = TrainSettings(mode="frozen", head_epochs=1, **FAST)
    for overwrite in (False, True):
        with pytest.raises(TrainingError, match=rf"^{folder} holds precious.txt, sub but no artsentry run: .*"
                                                "choose a new or empty --out$"):
            train(synthetic_dataset, folder, settings, progress=False, overwrite=overwrite)
        assert sorted(p.name for p in folder.iterdir()) == ["precious.txt", "sub"]  # not even a lock file
        assert (folder / "sub" / "notes.md").read_text() == "kept too"
    with pytest.raises(TrainingError, match=r"holds ivory, non_ivory but no artsentry run"):
        train_soup(synthetic_dataset, synthetic_dataset, settings, overwrite=True, progress=False)
    assert sorted(p.name for p in synthetic_dataset.iterdir()) == ["ivory", "non_ivory"]
    many = tmp_path / "many"
    for name in "abcde":
        (many / name).mkdir(parents=True)
    with pytest.raises(TrainingError, match=r"holds a, b, c and 2 more but no artsentry run"):
        train(synthetic_dataset, many, settings, progress=False)
    (many / "e").rmdir()
    (many / "d").rmdir()
    with pytest.raises(TrainingError, match=r"holds a, b, c but no artsentry run"):  # three: no "and 0 more"
        train(synthetic_dataset, many, settings, progress=False)


@pytest.mark.usefixtures("train_only")
def test_overwrite_deletes_a_run_only_once_the_data_to_train_again_is_there(tmp_path, synthetic_dataset):
    settings = TrainSettings(mode="frozen", head_epochs=1, **FAST)
    run = tmp_path / "run"
    train(synthetic_dataset, run, settings, progress=False)
    before = sorted(p.name for p in run.iterdir())
    assert "model" in before and "manifest.csv" in before
    with pytest.raises(TrainingError, match=rf"^{tmp_path / 'typo'}: no such file or folder; nothing was deleted$"):
        train(tmp_path / "typo", run, settings, progress=False, overwrite=True)
    with pytest.raises(TrainingError, match=r"^--overwrite trains again from the start: give the data to train on; "
                                            "nothing was deleted$"):
        train(None, run, settings, progress=False, overwrite=True)
    assert sorted(p.name for p in run.iterdir()) == before
    (run / "stray.txt").write_text("a file of the user's in a run folder goes with the run")
    train(synthetic_dataset, run, settings, progress=False, overwrite=True)
    assert not (run / "stray.txt").exists() and (run / "model" / "config.json").is_file()


@pytest.mark.usefixtures("train_only")
def test_a_run_stopped_before_its_split_was_saved_starts_again(tmp_path, synthetic_dataset, monkeypatch):
    """run.json is the first file a run writes, so a run stopped at any point of its start is a run's folder
    (with manifest.csv first, a stop between the two left a folder the next attempt refused as not a run)."""
    import artsentry.train as train_module

    run = tmp_path / "run"
    settings = TrainSettings(mode="frozen", head_epochs=1, **FAST)
    _stopped_at_call(monkeypatch, train_module, "write_manifest", 1, synthetic_dataset, run, settings)
    assert sorted(p.name for p in run.iterdir()) == [".artsentry.lock", "run.json"]
    train(synthetic_dataset, run, settings, progress=False)
    assert (run / "manifest.csv").is_file() and (run / "model" / "config.json").is_file()


def test_cli_train_reports_and_evaluates(tmp_path, synthetic_dataset, capsys):
    run = tmp_path / "run"
    code = main(["-q", "train", str(synthetic_dataset), "--out", str(run), "--mode", "frozen", "--image-size", "64",
                 "--val-fraction", "0.25", "--test-fraction", "0.25", "--target-recall", "1.0",
                 "--inference-size", "96"])
    assert code == 0
    out = capsys.readouterr().out
    assert "test: n 12" in out and "target_recall" in out
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["threshold"]["rule"] == "target_recall"
    assert metrics["metrics"]["val"]["recall"] == 1.0
    config = json.loads((run / "model" / "config.json").read_text())
    assert config["threshold"] == metrics["threshold"]["threshold"]
    assert config["metrics"]["test"]["n"] == 12
    assert config["runtime"] == "onnxruntime" and (run / "model" / "model.onnx").is_file()  # exported by default
    assert config["preprocessing"]["input_size"] == 96 and config["architecture"]["input_size"] == 64
    assert config["onnx"]["input"]["shape"] == ["batch", 3, 96, 96]  # the graph is exported at the size the model runs at
    assert "exported model.onnx" in out
    html = (run / "report.html").read_text()
    assert "Confusion matrix" in html or "confusion plot" in html
    assert "http://" not in html and "https://" not in html  # self-contained


def _train_cmd(data, run):
    return [sys.executable, "-m", "artsentry", "-q", "train", str(data), "--out", str(run), "--image-size", "64",
            "--batch-size", "8", "--epochs", "3", "--checkpoint-every", "1", "--val-fraction", "0.25",
            "--test-fraction", "0.25", "--head-epochs", "3"]


def test_killed_finetune_resumes_from_its_checkpoint(tmp_path, synthetic_dataset):
    run = tmp_path / "run"
    state = run / "checkpoint" / "state.json"
    proc = subprocess.Popen(_train_cmd(synthetic_dataset, run), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    step = 0
    while time.time() < deadline and proc.poll() is None:
        if state.is_file():
            try:
                step = json.loads(state.read_text())["global_step"]
            except (json.JSONDecodeError, KeyError):
                step = 0
            if step >= 4:  # mid-training: 3 epochs of 3 steps
                break
        time.sleep(0.05)
    assert proc.poll() is None, f"training ended before it could be killed: {proc.communicate()[1][-2000:]}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run / "model").exists()
    left = json.loads(state.read_text())  # where the next run must pick up
    # the weights of a checkpoint are as readable as its JSON (safetensors writes 0600 temporaries)
    for tensors in (left["files"]["state"], "../features/train.safetensors"):
        assert stat.S_IMODE((state.parent / tensors).stat().st_mode) == stat.S_IMODE(state.stat().st_mode)

    done = subprocess.run(_train_cmd(synthetic_dataset, run), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resumed from step" in done.stdout
    resumed = int(done.stdout.split("resumed from step")[1].split()[0])
    assert resumed >= 4
    # and said so on stderr when it resumed, before the steps it had left
    said = done.stderr.split("resuming fine-tuning from its checkpoint: ")[1].splitlines()[0]
    assert resumed == left["global_step"]
    assert said == f"epoch {left['epoch'] + 1}/3, step {resumed} of 9"
    config = json.loads((run / "model" / "config.json").read_text())
    kept = config["training"]["summary"]["finetune"]["best_epoch"]  # what the closing line must say
    outcome = next(line for line in done.stdout.splitlines() if line.startswith("fine-tuning:"))
    assert outcome.startswith("fine-tuning: ran 3 epoch(s);")
    assert (f"kept epoch {kept + 1} (validation loss" in outcome if kept >= 0
            else "kept the head stage it started from" in outcome)
    epochs = [h["epoch"] for h in config["training"]["history"] if h["stage"] == "finetune"]
    assert epochs == [0, 1, 2]
    assert not (run / "checkpoint").exists()


def _session_processes(sid: int) -> list[str]:
    """The command lines of the processes still alive in session ``sid`` (Linux /proc)."""
    alive = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat_file.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":  # (fields from the state on: state, ppid, pgrp, session)
            alive.append(cmdline[:120])
    return alive


def _left_in_session(sid: int, seconds: float = 30) -> list[str]:
    """The processes of session ``sid`` still alive once they all ended or ``seconds`` passed."""
    deadline = time.time() + seconds
    while _session_processes(sid) and time.time() < deadline:
        time.sleep(0.2)
    return _session_processes(sid)


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads processes from Linux's /proc")
def test_sigterm_stops_training_with_its_decoding_workers(tmp_path, synthetic_dataset):
    """kill / timeout / a service manager send SIGTERM: the run stops as after Ctrl-C, with its checkpoint,
    and no decoding worker or the process that forked them is left behind holding memory."""
    run = tmp_path / "run"
    state = run / "checkpoint" / "state.json"
    # 12 steps an epoch (24 training photos, batches of 2): step 4 is mid-epoch, long after the loader started
    # its workers, so this is the orderly shut-down (a SIGTERM in the instant a loader starts them is the
    # case of test_decoding_workers_end_when_their_caller_is_killed_outright)
    proc = subprocess.Popen(_train_cmd(synthetic_dataset, run) + ["--workers", "2", "--epochs", "30", "--batch-size", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 240
    step = 0
    while time.time() < deadline and proc.poll() is None and step < 4:
        try:
            step = json.loads(state.read_text())["global_step"]
        except (OSError, json.JSONDecodeError, KeyError):
            pass
        time.sleep(0.05)
    assert proc.poll() is None, f"training ended before it could be stopped: {proc.communicate()[1][-2000:]}"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    assert "artsentry train: terminated; the same command resumes the run from its last checkpoint" in err
    assert _left_in_session(proc.pid) == []
    assert state.is_file()  # the next run resumes from it


_KILLED_MID_LOADING = """
import os, signal, sys
from pathlib import Path

from artsentry.memory import keep_freed_memory

assert keep_freed_memory()  # as the artsentry command does: workers come from a forkserver
from artsentry.data.dataset import ImageDataset, make_loader
from artsentry.data.transforms import Preprocessing, eval_transform

photos = sorted(str(p) for p in Path(sys.argv[1]).rglob("*.jpg")) * 20
loader = make_loader(ImageDataset(photos, eval_transform(Preprocessing(input_size=64))), batch_size=2, num_workers=2)
batches = iter(loader)
next(batches)
print("loading", flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # no unwinding, no clean-up: as the out-of-memory killer ends a trainer
"""


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads processes from Linux's /proc")
def test_decoding_workers_end_when_their_caller_is_killed_outright(synthetic_dataset):
    """A trainer killed with no chance to shut its loader down (SIGKILL, the out-of-memory killer, a
    SIGTERM as a loader starts its workers) leaves no decoding worker, or the forkserver they came from,
    behind: they used to wait on each other for ever."""
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_MID_LOADING, str(synthetic_dataset)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == -signal.SIGKILL and out == "loading\n", err[-2000:]
        assert _left_in_session(proc.pid) == []
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever was left, so a failure leaves nothing running
        except ProcessLookupError:
            pass


@pytest.mark.usefixtures("train_only")
def test_resume_with_other_settings_is_refused(tmp_path, synthetic_dataset):
    run = tmp_path / "run"
    (run / "checkpoint").mkdir(parents=True)
    train_settings = TrainSettings(mode="frozen", head_epochs=1, **FAST)
    from artsentry.train import Trainer

    Trainer(run, train_settings, progress=False).prepare_data(synthetic_dataset)
    other = TrainSettings(mode="frozen", head_epochs=1, seed=5, **FAST)
    with pytest.raises(TrainingError, match="other settings"):
        train(synthetic_dataset, run, other, progress=False)
    # the same settings on other data (a copy elsewhere is other data: the run names its source by path)
    import re
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(synthetic_dataset, copy)
    with pytest.raises(TrainingError, match=rf"^{re.escape(str(run))} holds a run on other data "
                                            rf"\({re.escape(str(synthetic_dataset.resolve()))}\); use --overwrite or "
                                            "another --out$"):
        Trainer(run, train_settings, progress=False).prepare_data(copy)
    with pytest.raises(TrainingError, match="^no data given and no run to resume$"):
        Trainer(tmp_path / "empty", train_settings, progress=False).prepare_data(None)


def test_rerun_after_a_stop_between_training_and_evaluation_only_evaluates(tmp_path, synthetic_dataset):
    from artsentry.models.artifact import read_config

    settings = TrainSettings(mode="frozen", head_epochs=2, **FAST)
    first = train(synthetic_dataset, tmp_path / "run", settings, progress=False)
    config = read_config(first.model_dir)
    weights = (first.model_dir / "model.safetensors").read_bytes()
    del config["metrics"]
    (first.model_dir / "config.json").write_text(json.dumps(config))
    (tmp_path / "run" / "metrics.json").unlink()
    again = train(synthetic_dataset, tmp_path / "run", settings, progress=False)
    assert (first.model_dir / "model.safetensors").read_bytes() == weights  # not retrained
    assert "metrics" in read_config(first.model_dir) and (tmp_path / "run" / "metrics.json").is_file()
    assert again.evaluation["metrics"]["test"]["n"] == 12


def test_pooling_settings():
    # average pooling spelled out keeps the fingerprint of runs made before the setting existed
    assert TrainSettings(pooling="avg").fingerprint() == TrainSettings().fingerprint()
    prints = {TrainSettings(pooling=p).fingerprint() for p in ("avg", "texture", "texture+avg")}
    assert len(prints) == 3
    with pytest.raises(ValueError, match="pooling"):
        TrainSettings(pooling="max").validate()
    for pooling in ("texture", "texture+avg"):
        with pytest.raises(ValueError, match="smallcnn"):
            TrainSettings(architecture="smallcnn", pooling=pooling).validate()
    for pooling in ("texture", "texture+avg"):
        assert cli_train_settings("--pooling", pooling).pooling == pooling
    assert cli_train_settings().pooling == "avg"


@pytest.mark.parametrize("pooling, dim", [("texture", 112 * 113 // 2), ("texture+avg", 112 * 113 // 2 + 1280)])
@pytest.mark.usefixtures("train_only")
def test_texture_pooled_lite0_fine_tunes_exports_and_predicts(tmp_path, synthetic_dataset, pooling, dim):
    from artsentry.models.onnx import export_onnx

    # enough head epochs that the head stage, which the fine-tune must beat to be kept, reads the blobs too
    settings = TrainSettings(pooling=pooling, epochs=1, head_epochs=20, num_workers=0, **FAST)
    result = train(synthetic_dataset, tmp_path / "run", settings, progress=False)
    config = json.loads((result.model_dir / "config.json").read_text())
    assert config["architecture"]["pooling"] == pooling
    assert config["training"]["settings"]["pooling"] == pooling
    features = (tmp_path / "run" / "features" / "train.safetensors")
    from safetensors.torch import load_file
    assert load_file(str(features))["features"].shape[1] == dim
    assert all(np.isfinite(h["val_loss"]) for h in result.history)
    block = export_onnx(result.model_dir)
    assert block["parity"]["max_prob_diff"] <= 1e-3  # the graph computes what PyTorch does
    test = [str(p) for p in sorted(synthetic_dataset.glob("*/*.jpg"))]
    preds = Predictor.load(result.model_dir).predict_files(test)
    acc = np.mean([p.label == Path(p.source).parent.name for p in preds])
    assert acc >= 0.9
    # a register can embed with it: the model's descriptor (6,328 numbers, or 7,608 with the average), described as
    # what it is
    from artsentry.index import Register

    reg = Register.create(tmp_path / "reg", embedder=str(result.model_dir))
    ivory, other = sorted((synthetic_dataset / "ivory").glob("*.jpg")), sorted((synthetic_dataset / "non_ivory").glob("*.jpg"))
    reg.add("cream", [str(ivory[0])])
    reg.add("blue", [str(other[0])])
    assert reg.dim == dim
    assert "second-order" in reg.embedder.describe()["layer"]
    assert ("average" in reg.embedder.describe()["layer"]) == (pooling == "texture+avg")
    assert reg.search([str(other[1])], k=2)[0].matches[0].object_id == "blue"
    reg.close()


def test_head_views_settings():
    assert TrainSettings(head_views=0).fingerprint() == TrainSettings().fingerprint()
    assert TrainSettings(head_views=2).fingerprint() != TrainSettings().fingerprint()
    with pytest.raises(ValueError, match="head views"):
        TrainSettings(head_views=-1).validate()
    with pytest.raises(ValueError, match="--augment none"):
        TrainSettings(head_views=2, augment="none").validate()
    with pytest.raises(ValueError, match="smallcnn"):
        TrainSettings(architecture="smallcnn", head_views=2).validate()
    # a frozen model only ever sees listing-style photos through the views
    with pytest.raises(ValueError, match="--head-views"):
        TrainSettings(mode="frozen", augment="listing").validate()
    TrainSettings(mode="frozen", augment="listing", head_views=1).validate()
    assert cli_train_settings("--head-views", "3").head_views == 3
    assert cli_train_settings().head_views == 0


@pytest.mark.usefixtures("train_only")
def test_frozen_head_learns_from_cached_augmented_views(tmp_path, synthetic_dataset, monkeypatch):
    from safetensors.torch import load_file

    settings = TrainSettings(mode="frozen", head_epochs=3, augment="listing", listing_all=1.0, head_views=2,
                             num_workers=0, **FAST)
    run = tmp_path / "run"
    masked, drawn = _record_foreground_estimates(monkeypatch)
    result = train(synthetic_dataset, run, settings, progress=False)
    plain = load_file(str(run / "features" / "train.safetensors"))
    views = [load_file(str(run / "features" / f"train_view{k}.safetensors")) for k in range(2)]
    for v in views:  # one row per training photo, in the same order, and different features
        torch.testing.assert_close(v["targets"], plain["targets"])
        assert not torch.allclose(v["features"], plain["features"], atol=1e-3)
    assert not torch.allclose(views[0]["features"], views[1]["features"], atol=1e-3)
    # two views of 24 training photos, 60% re-photographed with every family: photos drawn in both
    # views, and each photo's foreground estimated once for the two
    assert len(set(drawn)) < len(drawn)
    assert sorted(masked) == sorted(set(drawn))
    assert not any(p.name.startswith("tmp") for p in (run / "features").iterdir())  # masks cleaned up
    assert json.loads((result.model_dir / "config.json").read_text())["training"]["settings"]["head_views"] == 2
    # the views are a function of the seed: a second run caches the same features
    again = train(synthetic_dataset, tmp_path / "again", settings, progress=False)
    torch.testing.assert_close(load_file(str(again.run_dir / "features" / "train_view1.safetensors"))["features"],
                               views[1]["features"])
    preds = Predictor.load(result.model_dir).predict_files([str(p) for p in sorted(synthetic_dataset.glob("*/*.jpg"))])
    assert np.mean([p.label == Path(p.source).parent.name for p in preds]) >= 0.9


def test_a_run_refused_for_its_positive_label_leaves_nothing_that_refuses_the_corrected_command(
        tmp_path, synthetic_dataset, train_only, capsys):
    """Labels the model cannot tell the positive of ('cat', 'dog') were refused after run.json and the split were
    written, so the same command with --positive-label met "holds a run with other settings" and needed
    --overwrite. The label is chosen before anything is written now."""
    import shutil

    for theirs, ours in (("ivory", "cat"), ("non_ivory", "dog")):
        shutil.copytree(synthetic_dataset / theirs, tmp_path / "data" / ours)
    command = ["-q", "train", str(tmp_path / "data"), "--out", str(tmp_path / "run"), "--mode", "frozen",
               "--image-size", "64", "--batch-size", "8", "--val-fraction", "0.25", "--test-fraction", "0.25"]
    assert main(command) == 1
    assert "cannot tell which of ['cat', 'dog'] is the positive class; pass --positive-label" in capsys.readouterr().err
    assert not (tmp_path / "run" / "run.json").exists() and not (tmp_path / "run" / "manifest.csv").exists()
    assert main(command + ["--positive-label", "cat"]) == 0
    assert json.loads((tmp_path / "run" / "model" / "config.json").read_text())["positive_label"] == "cat"


@pytest.mark.usefixtures("train_only")
def test_a_second_run_into_a_busy_run_folder_is_refused(tmp_path, synthetic_dataset):
    """`make ivory` started twice (two terminals): both wrote checkpoints into one run folder. The
    second now stops at once, naming the first; once the first ends, the folder is free."""
    import subprocess

    from artsentry.files import FolderBusy, exclusive
    from artsentry.train import train_soup

    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom artsentry.files import exclusive\n"
                               f"with exclusive({str(run)!r}, 'train'):\n    print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(FolderBusy, match=rf"{run}: another artsentry train is writing here \(pid {holder.pid}, "):
            train(synthetic_dataset, run, TrainSettings(mode="frozen", **FAST), progress=False)
        with pytest.raises(FolderBusy, match="another artsentry train is writing here"):  # `train --soup 2` too
            train_soup(synthetic_dataset, run, TrainSettings(mode="frozen", **FAST), n=2, progress=False)
        assert sorted(p.name for p in run.iterdir()) == [".artsentry.lock"]  # nothing written beside it
    finally:
        holder.kill()
        holder.wait()
    assert train(synthetic_dataset, run, TrainSettings(mode="frozen", **FAST), progress=False).model_dir.is_dir()
    with exclusive(tmp_path / "never", "train"):
        pass
    assert not (tmp_path / "never").exists()  # a run that wrote nothing leaves no folder behind
    (tmp_path / "a-file").write_text("x")  # --out naming a file: one line, not a FileExistsError traceback
    from artsentry.files import FolderError

    with pytest.raises(FolderError, match="a-file: a file is there, not a folder to write the run into"):
        train(synthetic_dataset, tmp_path / "a-file", TrainSettings(mode="frozen", **FAST), progress=False)
    with pytest.raises(FolderError, match=r"a-file/run: cannot write the run here \(Not a directory\)"):
        train(synthetic_dataset, tmp_path / "a-file" / "run", TrainSettings(mode="frozen", **FAST), progress=False)


def _data_with_unreadable_photos(tmp_path: Path, synthetic_dataset: Path) -> tuple[Path, list[str]]:
    """A copy of the synthetic folder with text saved as .jpg, a truncated JPEG and an empty file in each class."""
    data = tmp_path / "data"
    shutil.copytree(synthetic_dataset, data)
    bad = []
    for label in ("ivory", "non_ivory"):
        whole = (data / label / f"{label}_000.jpg").read_bytes()
        for name, content in (("text.jpg", f"not a photo of {label}\n".encode()), ("cut.jpg", whole[: len(whole) // 3]),
                              ("empty.jpg", b"")):
            (data / label / name).write_bytes(content)
            bad.append(str(data / label / name))
    return data, bad


def test_unreadable_photos_in_the_data_are_skipped_by_name_and_the_run_finishes(tmp_path, synthetic_dataset, capsys,
                                                                                 caplog):
    """A long run is never lost to a bad file: text saved as .jpg, a truncated JPEG and an empty
    file in each class are each skipped with a warning that names it, the run trains (head stage and
    fine-tuning), evaluates and saves, every one of them is accounted for, in the model's config (train
    and val photos) or as an error row of predictions.csv (test photos), and the command's last lines
    count both."""
    data, bad = _data_with_unreadable_photos(tmp_path, synthetic_dataset)
    run = tmp_path / "run"
    with caplog.at_level("WARNING"):
        assert main(["-q", "train", str(data), "--out", str(run), "--image-size", "64", "--batch-size", "8",
                     "--val-fraction", "0.25", "--test-fraction", "0.25", "--epochs", "1", "--head-epochs", "2",
                     "--workers", "0", "--no-export"]) == 0
    out = capsys.readouterr().out
    skipped = json.loads((run / "model" / "config.json").read_text())["data"]["skipped_unreadable"]
    predictions = pd.read_csv(run / "predictions.csv")
    failed = predictions.loc[predictions["error"].notna(), "path"].tolist()
    split = pd.read_csv(run / "manifest.csv").set_index("path")["split"]
    assert sorted(skipped) == sorted(p for p in bad if split.get(p) in ("train", "val"))
    assert sorted(failed) == sorted(p for p in bad if split.get(p) == "test")
    # the two empty files have the same content: one object in one split, both still there and accounted for
    assert set(split.index) >= set(bad) and sorted([*skipped, *failed]) == sorted(bad) and skipped and failed
    for path, reason in skipped.items():
        assert reason.startswith(path + ": ") and f"skipped {reason}" in caplog.text
    tested = json.loads((run / "metrics.json").read_text())["metrics"]["test"]["n"]
    assert tested == (split == "test").sum() - len(failed)
    assert (f"{len(skipped)} training or validation image(s) could not be read and were left out: listed in "
            f"{run / 'model' / 'config.json'} (data.skipped_unreadable)") in out
    assert f"{len(failed)} unreadable image(s) skipped; see predictions.csv" in out


def test_a_run_resumed_from_its_cached_features_still_names_the_photos_it_skipped(tmp_path, synthetic_dataset,
                                                                                    monkeypatch, caplog):
    """Stopped in the head stage and resumed, a run reads its photos' features from features/ instead of
    the photos: the unreadable ones it skipped while making them are still warned of and recorded in
    config.json (they were dropped from the record without a word)."""
    data, bad = _data_with_unreadable_photos(tmp_path, synthetic_dataset)
    settings = TrainSettings(mode="frozen", head_epochs=2, num_workers=0, **FAST)
    _stopped_at_call(monkeypatch, Trainer, "_validate_head", 1, data, tmp_path / "cut", settings)
    made = {f.name: f.stat().st_mtime_ns for f in (tmp_path / "cut" / "features").glob("*.safetensors")}
    assert set(made) == {"train.safetensors", "val.safetensors"}
    caplog.clear()
    with caplog.at_level("WARNING"):
        resumed = train(data, tmp_path / "cut", settings, progress=False)
    assert {f.name: f.stat().st_mtime_ns for f in (tmp_path / "cut" / "features").glob("*.safetensors")} == made
    split = pd.read_csv(resumed.run_dir / "manifest.csv").set_index("path")["split"]
    skipped = json.loads((resumed.model_dir / "config.json").read_text())["data"]["skipped_unreadable"]
    assert skipped and sorted(skipped) == sorted(p for p in bad if split.get(p) in ("train", "val"))
    for path, reason in skipped.items():
        assert reason.startswith(path + ": ") and f"skipped {reason}" in caplog.text


@pytest.mark.usefixtures("train_only")
def test_a_fine_tune_resumed_part_way_through_its_last_epoch_still_names_the_photos_it_skipped(
        tmp_path, synthetic_dataset, monkeypatch):
    """The photos a fine-tune skipped before it was stopped are kept in its checkpoint: resumed in the middle
    of its last epoch, it does not read the earlier batches again, and its record still names them."""
    import artsentry.train as train_module

    data, _ = _data_with_unreadable_photos(tmp_path, synthetic_dataset)
    settings = TrainSettings(epochs=1, head_epochs=1, checkpoint_every=1, num_workers=0, **FAST)
    whole = train(data, tmp_path / "whole", settings, progress=False)
    expected = json.loads((whole.model_dir / "config.json").read_text())["data"]["skipped_unreadable"]
    train_photos = set(pd.read_csv(whole.run_dir / "manifest.csv").query("split == 'train'")["path"])
    assert set(expected) & train_photos  # a bad photo is trained on: the case this is about
    # stopped at the last step's learning rate, after the checkpoint of every step before it
    steps = _steps_of_one_epoch(whole.run_dir)
    _stopped_at_call(monkeypatch, train_module, "_set_lr", steps, data, tmp_path / "cut", settings)
    resumed = train(data, tmp_path / "cut", settings, progress=False)
    assert resumed.resumed_from_step == steps - 1
    assert json.loads((resumed.model_dir / "config.json").read_text())["data"]["skipped_unreadable"] == expected
