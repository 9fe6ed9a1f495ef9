"""The ``models`` stage: trained classifiers and their predictions, in the workdir.

Layout (see :mod:`sapsam_utils.stages.workdir`)::

    models/<key>/stage.json                 training parameters and the datasets key
    models/<key>/<model name>/model.keras   the best epoch by validation loss (the paper's checkpoint)
    models/<key>/<model name>/last.keras    the last finished epoch, with optimiser state (resuming)
    models/<key>/<model name>/history.csv   one row per epoch: loss, accuracy, validation loss, seconds
    models/<key>/<model name>/predictions_<split>.csv
                                            one row per image: scan_id, patient_id, rotation, the
                                            label and the predicted probability of class 1
    models/<key>/<model name>/done.json     written last: the model is finished (:data:`MODEL_DONE`)

``<key>`` hashes the datasets key and every training parameter
(:class:`sapsam_utils.learning.training.TrainParams`), so other parameters give other folders.
``<model name>`` is ``<task>-<architecture>-<axis>`` (with the sub-region sign in ``task`` for sign
models), e.g. ``disease-vgg19-axial``. The first three files are those that
:func:`sapsam_utils.learning.training.fit` writes into the model's folder; this module names the
folder, adds the predictions and the record, and reads all of them back for the chapters.

Chapter 6 also writes its 3-D maps into the workdir, ``gradcam/<name>.nii.gz`` (:func:`map_path`).
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Callable

import keras
import numpy as np
import pandas as pd

from ..core import files
from ..learning.models import build_classifier
from ..learning.training import (BEST_MODEL, HISTORY, TrainParams, fit, predict_probabilities, prediction_table,
                                 write_csv)
from ..learning.splits import SPLITS, check_patient_splits
from .datasets import load_split
from .workdir import MODEL_DONE, current_stage, model_done, model_record, read_results, stage_dir

#: The folder of chapter 6's 3-D maps in the workdir.
MAPS_DIR = "gradcam"


def models_stage(workdir: str | os.PathLike, params: TrainParams, extra: dict | None = None) -> Path:
    """The ``models/<key>`` folder of these training parameters on the last ``datasets`` run, and
    of ``extra`` when given (a fine-tuned model's base and its changes, labels given per scan)."""
    datasets_key, _ = current_stage(workdir, "datasets")
    key_params = params.as_dict() if not extra else {**params.as_dict(), **extra}
    return stage_dir(workdir, "models", key_params, upstream=datasets_key)


def model_name(task: str, architecture: str, axis: str) -> str:
    """``<task>-<architecture>-<axis>``, the model's folder in its stage."""
    return f"{task}-{architecture}-{axis}"


def prediction_path(model_dir: str | os.PathLike, split: str) -> Path:
    """Where a model keeps its prediction table of one split."""
    return Path(model_dir) / f"predictions_{split}.csv"


def read_predictions(model_dir: str | os.PathLike, split: str) -> pd.DataFrame:
    """A finished model's prediction table of one split."""
    return pd.read_csv(prediction_path(model_dir, split), dtype={"scan_id": str, "patient_id": str})


def read_history(model_dir: str | os.PathLike) -> pd.DataFrame:
    """A model's training history: one row per finished epoch (``epoch``, ``loss``, ``accuracy``,
    ``val_loss``, ``val_accuracy``, ``learning_rate``, ``seconds``)."""
    return pd.read_csv(Path(model_dir) / HISTORY)


def load_model(model_dir: str | os.PathLike) -> keras.Model:
    """A model folder's kept model (the best epoch by validation loss)."""
    return keras.models.load_model(Path(model_dir) / BEST_MODEL)


def map_path(workdir: str | os.PathLike, name: str) -> Path:
    """Where chapter 6 writes the 3-D map ``name`` (a NIfTI file), its folder created."""
    folder = Path(workdir) / MAPS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{name}.nii.gz"


def train_model(
    workdir: str | os.PathLike,
    params: TrainParams,
    task: str = "disease",
    axis: str = "axial",
    kind: str = "whole",
    label: str | pd.Series = "disease",
    log: Callable[[str], None] | None = print,
    predict: dict[str, str] | None = None,
    base: tuple[str | os.PathLike, Callable[[keras.Model], keras.Model], dict] | None = None,
) -> Path:
    """Train one classifier of the ``models`` stage and write its predictions on every split.

    Reads the split arrays of the last ``datasets`` run (:func:`sapsam_utils.stages.datasets.load_split`),
    trains with :func:`sapsam_utils.learning.training.fit` (resuming an interrupted run), then
    predicts every image of the train, validation and test splits, checks that no patient is in
    two splits, and writes ``done.json`` last. A finished model is reused as it is.

    Parameters
    ----------
    workdir : path-like
    params : TrainParams
    task : str
        Names the model (``disease``, ``survival``, a sign ...).
    axis : {"axial", "coronal", "sagittal"}
    kind : {"whole", "regions"}
        Whole-scan (grey) or sub-region (3 HU windows) images.
    label : str or pandas.Series
        The records' column holding the 0 / 1 label, or a series of labels indexed by
        ``scan_id`` (a label of the scan, e.g. the paper's survival labels); NaN rows (and scans
        the series lacks) are left out.
    log : callable or None
    predict : dict, optional
        Which images of each split get a prediction: ``"all"`` (every rotation; the default for
        every split) or ``"unrotated"`` (rotation 0 only, a 27th of the cost). Sub-region data
        sets are six times larger than whole-scan ones, so their training split is predicted
        unrotated on a CPU budget.
    base : (path, callable, dict), optional
        Fine-tune a trained model instead of building one: the base model's folder, a function
        that turns the loaded base into the model to train (e.g. re-initialise and unfreeze its
        head, :func:`sapsam_utils.learning.survival.reset_head`), and that function's settings. The folder
        and the settings are part of the key.

    Returns
    -------
    pathlib.Path
        The model's folder.
    """
    extra = {}
    if base is not None:
        extra["base"] = {"folder": str(Path(base[0]).resolve().relative_to(Path(workdir).resolve())),
                         "settings": base[2]}
    if not isinstance(label, str):  # labels given per scan: their values are part of the key
        labels_text = label.sort_index().to_csv(header=False)
        extra["labels_sha256"] = hashlib.sha256(labels_text.encode()).hexdigest()
    folder = models_stage(workdir, params, extra) / model_name(task, params.architecture, axis)
    if model_done(folder):
        if log:
            log(f"{folder.name}: finished earlier, reused ({folder})")
        return folder
    data = {split: load_split(workdir, kind, split, axes=[axis]) for split in SPLITS}
    if isinstance(label, str):
        labels = {split: d.records[label].to_numpy(dtype=float) for split, d in data.items()}
    else:
        labels = {split: d.records["scan_id"].map(label).to_numpy(dtype=float) for split, d in data.items()}
        label = label.name or "label"
    image_shape = (*data["train"].images[axis].shape[1:3], 3)

    def build():
        if base is not None:
            return base[1](load_model(base[0]))
        return build_classifier(params.architecture, image_shape, params.input_size, params.weights,
                                params.frozen_blocks, head_init=params.head_init, seed=params.seed)

    val_images, val_labels = data["val"].images[axis], labels["val"]
    if params.validate_on == "unrotated":
        rows = np.flatnonzero(data["val"].records["rotation"].to_numpy() == 0)
        val_images, val_labels = val_images[rows], val_labels[rows]
    elif params.validate_on != "all":
        raise ValueError(f"validate_on must be 'all' or 'unrotated', got {params.validate_on!r}")
    model = fit(folder, build, data["train"].images[axis], labels["train"], val_images, val_labels, params, log)
    seconds_train = float(read_history(folder)["seconds"].sum())  # resumed epochs too
    t0 = time.perf_counter()
    predict = {split: "all" for split in SPLITS} | (predict or {})
    if set(predict.values()) - {"all", "unrotated"}:
        raise ValueError(f"predict: each split takes 'all' or 'unrotated', got {predict}")
    tables = []
    for split, d in data.items():
        known = ~np.isnan(labels[split])
        if predict[split] == "unrotated":
            known &= d.records["rotation"].to_numpy() == 0
        keep = np.flatnonzero(known)
        probability = predict_probabilities(model, d.images[axis][keep] if len(keep) < len(labels[split])
                                            else d.images[axis], params.batch_size)
        table = prediction_table(d.records.iloc[keep], labels[split][keep], probability)
        write_csv(table, prediction_path(folder, split))
        tables.append(table.assign(split=split))
    check_patient_splits(pd.concat(tables))
    files.write_json(folder / MODEL_DONE, {"task": task, "axis": axis, "kind": kind, "label": label, "predict": predict,
                                           "base": extra.get("base"),
                                           "params": params.as_dict(), "seconds_train": seconds_train,
                                           "seconds_predict": time.perf_counter() - t0})
    return folder


def retrain_on_axis(workdir: str | os.PathLike, model_dir: str | os.PathLike, axis: str,
                    log: Callable[[str], None] | None = print) -> Path:
    """The model of a finished one's task, recipe, images and predicted splits on another ``axis``
    (trained when missing; the same call for the model's own axis finds the model itself)."""
    done = model_record(model_dir)
    return train_model(workdir, TrainParams(**done["params"]), task=done["task"], axis=axis, kind=done["kind"],
                       label=done["label"], predict=done["predict"], log=log)


def score_unlabelled(workdir: str | os.PathLike, model_dir: str | os.PathLike, split: str = "test",
                                group: str = "cpa") -> tuple[pd.DataFrame, int]:
    """A finished model's prediction table of ``split``, with the split's images of ``group``
    that it lacks (scans without a label, e.g. a survival outcome left out) predicted now.

    Returns
    -------
    (pandas.DataFrame, int)
        The prediction rows, then the added images (their records and ``probability``; no label);
        and how many scans were added.
    """
    done = model_record(model_dir)
    axis = done["axis"]
    predictions = read_predictions(model_dir, split)
    images = load_split(workdir, done["kind"], split, axes=[axis])
    extra = np.flatnonzero(images.records["group"].eq(group) & ~images.records["scan_id"].isin(predictions["scan_id"]))
    probability = (predict_probabilities(load_model(model_dir), images.images[axis][extra], done["params"]["batch_size"])
                   if len(extra) else np.empty(0))
    added = images.records.iloc[extra].assign(probability=probability)
    return pd.concat([predictions, added]), int(added["scan_id"].nunique())


def sign_model_folders(workdir: str | os.PathLike, signs, axis: str) -> dict[str, Path]:
    """The sign models that chapter 5 trained (its results ``model_folder_<sign>-<axis>``), by
    ``<sign>-<axis>``.

    Raises
    ------
    ValueError
        One of ``signs`` has no model on ``axis``, naming those there are.
    """
    folders = {k.removeprefix("model_folder_"): Path(workdir) / v
               for k, v in read_results(workdir, "05_sign_labelling").items() if k.startswith("model_folder_")}
    if any(f"{s}-{axis}" not in folders for s in signs):
        raise ValueError(f"signs {list(signs)}: chapter 5 trained only {sorted(folders)}; change signs or axis")
    return folders

