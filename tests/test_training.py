"""Training: balanced batches, augmentation on training batches only, learning, determinism,
resuming, and the ``models`` stage's prediction files."""

import json

import keras
import numpy as np
import pandas as pd
import pytest

from sapsam_utils.core import files
from sapsam_utils.stages import workdir as wd
from sapsam_utils.learning import training
from sapsam_utils.stages import models as model_stage
from sapsam_utils.learning.splits import SPLITS
from sapsam_utils.stages.datasets import load_split
from sapsam_utils.learning.training import ImageBatches, TrainParams, epoch_rows, fit, predict_probabilities


def toy_images(n=64, seed=0, size=12):
    """Class 1 has a bright square in the top-left corner; both classes have noise."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % 4 == 0).astype(int)  # 1 in 4 positive: training must balance
    images = rng.integers(0, 100, (n, size, size)).astype(np.uint8)
    images[labels == 1, 1:5, 1:5] = 250
    return images, labels


def tiny_model(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((12, 12, 3)),
        keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
        keras.layers.Flatten(),
        keras.layers.Dropout(0.3, seed=seed),
        keras.layers.Dense(2, activation="softmax"),
    ])


PARAMS = TrainParams(learning_rate=0.05, batch_size=8, epochs=4, steps_per_epoch=4, seed=1)


def test_epoch_rows_are_balanced_and_seeded():
    labels = np.array([0] * 90 + [1] * 10)
    rows = epoch_rows(labels, epoch=0, seed=0)
    assert np.bincount(labels[rows]).tolist() == [90, 90]
    assert set(rows[labels[rows] == 0]) == set(range(90))  # every majority row once
    np.testing.assert_array_equal(rows, epoch_rows(labels, epoch=0, seed=0))
    assert not np.array_equal(rows, epoch_rows(labels, epoch=1, seed=0))
    assert len(epoch_rows(labels, 0, 0, n_rows=64)) == 64
    # censored (NaN) rows never enter a batch
    with_nan = np.r_[labels.astype(float), [np.nan] * 5]
    assert not np.isin(epoch_rows(with_nan, 0, 0), np.arange(100, 105)).any()


def test_batches_grey_to_rgb_and_unaugmented_when_not_training():
    images, labels = toy_images(10)
    x, y = ImageBatches(images, labels, np.arange(10), batch_size=4)[0]
    assert x.shape == (4, 12, 12, 3) and x.dtype == np.float32
    np.testing.assert_array_equal(x[..., 1], images[:4] / np.float32(255))
    np.testing.assert_array_equal(y, labels[:4])
    rows = np.array([7, 2, 9])
    x, y = ImageBatches(images, labels, rows, batch_size=3)[0]  # batch order kept, file order read
    np.testing.assert_array_equal(x[..., 0], images[rows] / np.float32(255))


def test_augmentation_reaches_training_batches_only(tmp_path, monkeypatch):
    images, labels = toy_images()
    calls = []
    real = training.augment_batch

    def spy(batch, **kwargs):
        calls.append(batch.max())
        return real(batch, **kwargs)

    monkeypatch.setattr(training, "augment_batch", spy)
    params = TrainParams(learning_rate=0.05, batch_size=8, epochs=2, steps_per_epoch=3, seed=1)
    val_images = np.zeros((16, 12, 12), dtype=np.uint8)  # validation batches are all zero, training ones never
    model = fit(tmp_path / "m", tiny_model, images, labels, val_images, labels[:16], params, log=None)
    assert len(calls) >= 2 * 3 and min(calls) > 0  # every training batch, and only training batches
    n = len(calls)
    predict_probabilities(model, images)
    assert len(calls) == n


def test_training_lowers_the_loss(tmp_path):
    images, labels = toy_images()
    params = TrainParams(learning_rate=0.05, batch_size=8, epochs=6, steps_per_epoch=4, seed=0,
                         max_rotation_deg=0.0, zoom_range=(1.0, 1.0))
    fit(tmp_path / "m", tiny_model, images, labels, images, labels, params, log=None)
    history = pd.read_csv(tmp_path / "m" / "history.csv")
    assert len(history) == 6 and list(history["epoch"]) == [1, 2, 3, 4, 5, 6]
    assert history["loss"].iloc[-1] < 0.5 * history["loss"].iloc[0]
    assert history["val_loss"].min() < 0.3


def test_deterministic_and_resumes_where_it_stopped(tmp_path):
    images, labels = toy_images()
    val_images, val_labels = toy_images(16, seed=1)
    full = fit(tmp_path / "a", tiny_model, images, labels, val_images, val_labels, PARAMS, log=None)
    again = fit(tmp_path / "b", tiny_model, images, labels, val_images, val_labels, PARAMS, log=None)
    # an interrupted run: 2 epochs, then the same command with all 4 resumes after epoch 2
    short = TrainParams(**{**PARAMS.as_dict(), "epochs": 2, "zoom_range": PARAMS.zoom_range})
    fit(tmp_path / "c", tiny_model, images, labels, val_images, val_labels, short, log=None)
    lines = []
    resumed = fit(tmp_path / "c", tiny_model, images, labels, val_images, val_labels, PARAMS, log=lines.append)
    assert lines[0].endswith("resuming after epoch 2") and len(lines) == 3
    expected = predict_probabilities(full, val_images)
    np.testing.assert_array_equal(predict_probabilities(again, val_images), expected)
    np.testing.assert_allclose(predict_probabilities(resumed, val_images), expected, rtol=0, atol=1e-6)
    h_full, h_resumed = (pd.read_csv(tmp_path / d / "history.csv") for d in ("a", "c"))
    np.testing.assert_allclose(h_full["val_loss"], h_resumed["val_loss"], atol=1e-6)


def fake_datasets_stage(workdir, n_patients=(6, 2, 2), size=(16, 16), rotations=2):
    """A hand-made ``datasets`` stage of whole-scan images: 2 scans per patient, alternating groups."""
    stage = wd.stage_dir(workdir, "datasets", {"fake": 1}, upstream="x")
    rng = np.random.default_rng(0)
    for split, n in zip(SPLITS, n_patients):
        rows = []
        for p in range(n):
            for s in range(2):
                for r in range(rotations):
                    rows.append({"scan_id": f"{split}{p}s{s}", "patient_id": f"{split}P{p}", "disease": p % 2,
                                 "rotation": r, "group": "cpa" if p % 2 else "control"})
        records = pd.DataFrame(rows)
        (stage / split).mkdir()
        records.to_csv(stage / split / "whole.csv", index=False)
        images = rng.integers(0, 80, (len(records), *size)).astype(np.uint8)
        images[records["disease"].to_numpy() == 1, 2:8, 2:8] = 240
        np.save(stage / split / "whole_axial.npy", images)
    files.write_json(stage / "datasets.json", {"fake": True})
    return stage


def test_models_stage_writes_predictions_for_every_split(tmp_path):
    fake_datasets_stage(tmp_path)
    params = TrainParams(architecture="vgg19", input_size=32, epochs=1, steps_per_epoch=1, batch_size=8)
    folder = model_stage.train_model(tmp_path, params, log=None)
    assert folder.parent.parent.name == "models" and folder.name == "disease-vgg19-axial"
    assert {p.name for p in folder.iterdir()} >= {"model.keras", "last.keras", "history.csv", "done.json",
                                                 "predictions_train.csv", "predictions_val.csv", "predictions_test.csv"}
    seen = {}
    for split, n in zip(SPLITS, (6, 2, 2)):
        table = model_stage.read_predictions(folder, split)
        assert list(table.columns) == training.PREDICTION_COLUMNS and len(table) == n * 2 * 2
        assert table["probability"].between(0, 1).all()
        assert (table["label"] == table["patient_id"].str[-1].astype(int) % 2).all()
        seen[split] = set(table["patient_id"])
    assert not (seen["train"] & seen["val"] or seen["train"] & seen["test"] or seen["val"] & seen["test"])
    # the stage's readers: the history, the record, the kept model (it predicts what the table holds)
    history = model_stage.read_history(folder)
    assert history["epoch"].tolist() == [1] and set(history) >= {"loss", "val_loss", "val_accuracy", "seconds"}
    record = wd.model_record(folder)
    assert (record["task"], record["axis"], record["kind"], record["label"]) == ("disease", "axial", "whole", "disease")
    assert record["params"] == params.as_dict() and record["seconds_train"] == pytest.approx(history["seconds"].sum())
    test = model_stage.read_predictions(folder, "test")
    np.testing.assert_allclose(predict_probabilities(model_stage.load_model(folder), load_split(tmp_path, "whole", "test",
                                                                                                axes=["axial"]).images["axial"]),
                               test["probability"], rtol=1e-5, atol=1e-6)
    # the same parameters find the finished model; other parameters get another folder
    lines = []
    assert model_stage.train_model(tmp_path, params, log=lines.append) == folder and "reused" in lines[0]
    assert model_stage.retrain_on_axis(tmp_path, folder, "axial", log=None) == folder  # its own axis: itself
    other = TrainParams(**{**params.as_dict(), "learning_rate": 1e-3, "zoom_range": params.zoom_range})
    assert model_stage.models_stage(tmp_path, other) != folder.parent


def test_unknown_optimizer_is_refused():
    with pytest.raises(ValueError, match="optimizer"):
        training.make_optimizer(TrainParams(optimizer="rmsprop"))


def test_without_validation_rows_the_last_epoch_is_kept(tmp_path):
    images, labels = toy_images()
    lines = []
    model = fit(tmp_path / "m", tiny_model, images, labels, images[:0], labels[:0], PARAMS, log=lines.append)
    assert "no validation rows" in lines[0] and len(lines) == 1 + PARAMS.epochs
    history = pd.read_csv(tmp_path / "m" / "history.csv")
    assert history["val_loss"].isna().all() and len(history) == PARAMS.epochs
    last = keras.models.load_model(tmp_path / "m" / "last.keras")
    np.testing.assert_array_equal(predict_probabilities(model, images), predict_probabilities(last, images))


def test_fine_tuning_a_base_model_with_scan_labels(tmp_path):
    """The survival set-up: a trained model's head reset and retrained on labels given per scan,
    the rest frozen; the base's folder and the reset settings are part of the key."""
    from sapsam_utils.learning.survival import reset_head

    fake_datasets_stage(tmp_path)
    params = TrainParams(architecture="vgg19_bn", input_size=32, frozen_blocks=0, epochs=1, steps_per_epoch=2,
                         batch_size=8, optimizer="adam", learning_rate=1e-3)
    base_folder = model_stage.train_model(tmp_path, params, log=None)
    scans = pd.concat(model_stage.read_predictions(base_folder, s) for s in SPLITS)["scan_id"].unique()
    # a label per scan: the second scan of each patient, and the first of patient 1, are left out
    labels = pd.Series({s: (np.nan if s.endswith("s1") else float(s[-3] == "0")) for s in scans}, name="outcome")
    settings = {"layers": ["fc2", "logits"], "seed": 5}
    base = (base_folder, lambda m: reset_head(m, settings["layers"], seed=settings["seed"]), settings)
    folder = model_stage.train_model(tmp_path, params, task="survival", label=labels, base=base, log=None)
    assert folder.parent != base_folder.parent
    done = json.loads((folder / "done.json").read_text())
    assert done["label"] == "outcome" and done["base"]["settings"] == settings
    for split in SPLITS:
        table = model_stage.read_predictions(folder, split)
        assert not table["scan_id"].str.endswith("s1").any()
        assert (table["label"] == table["scan_id"].map(labels)).all()
    tuned, original = keras.models.load_model(folder / "model.keras"), keras.models.load_model(base_folder / "model.keras")
    for layer in original.layers:
        same = all(np.array_equal(a, b) for a, b in zip(layer.get_weights(), tuned.get_layer(layer.name).get_weights()))
        if layer.name in settings["layers"]:
            assert not same, f"{layer.name} was not re-initialised and trained"
        elif layer.get_weights():
            assert same, f"{layer.name} changed although frozen"
    # other reset settings: another folder
    other = (base_folder, base[1], {**settings, "seed": 6})
    assert model_stage.models_stage(tmp_path, params, {"base": {"folder": "x", "settings": other[2]}}) != folder.parent
    # the test scans without a label (group "cpa", i.e. odd patients): predicted on request
    scored, added = model_stage.score_unlabelled(tmp_path, folder, "test", group="cpa")
    unlabelled = scored[scored["label"].isna()]
    assert added == 1 and set(unlabelled["scan_id"]) == {"test1s1"} and len(unlabelled) == 2  # two rotations
    test = load_split(tmp_path, "whole", "test", axes=["axial"])
    rows = np.flatnonzero(test.records["scan_id"] == "test1s1")
    np.testing.assert_allclose(unlabelled["probability"], predict_probabilities(model_stage.load_model(folder),
                                                                                test.images["axial"][rows]), rtol=1e-5)
    assert len(scored) - len(unlabelled) == len(model_stage.read_predictions(folder, "test"))
    # other labels: another folder
    relabelled = model_stage.train_model(tmp_path, params, task="survival",
                                      label=labels.fillna(1.0), base=base, log=None)
    assert relabelled.parent != folder.parent



def test_sign_model_folders_and_map_path(tmp_path):
    wd.write_results(tmp_path, "05_sign_labelling", {"model_folder_cavity-axial": "models/k/cavity-vgg19-axial",
                                                     "model_folder_cavity-coronal": "models/k/cavity-vgg19-coronal",
                                                     "cavity_axial_image_recall": 0.5})
    folders = model_stage.sign_model_folders(tmp_path, ["cavity"], "axial")
    assert folders == {"cavity-axial": tmp_path / "models/k/cavity-vgg19-axial",
                       "cavity-coronal": tmp_path / "models/k/cavity-vgg19-coronal"}
    with pytest.raises(ValueError, match="trained only"):
        model_stage.sign_model_folders(tmp_path, ["cavity", "fungus_ball"], "axial")
    path = model_stage.map_path(tmp_path, "s1_RU_cavity_psam")
    assert path == tmp_path / "gradcam" / "s1_RU_cavity_psam.nii.gz" and path.parent.is_dir()
