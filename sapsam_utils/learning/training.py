"""Training the classifiers: seeded balanced batches and the paper's recipe, on arrays.

:func:`fit` trains one model on image arrays and keeps its checkpoints in the folder it is given
(the ``models`` stage, :mod:`sapsam_utils.stages.models`, names that folder and adds the
predictions)::

    <folder>/model.keras   the best epoch by validation loss (the paper's checkpoint)
    <folder>/last.keras    the last finished epoch, with optimiser state (resuming)
    <folder>/history.csv   one row per epoch: loss, accuracy, validation loss, learning rate, seconds

Batches (:class:`ImageBatches`) are drawn from the memory-mapped split arrays. Training batches are
class-balanced by oversampling the smaller class after the split (as the paper balances its
subsets), reshuffled every epoch, and get the 2-D augmentation (±20°, zoom 80–120 %); validation
and test batches get neither. Every draw comes from ``(seed, epoch, batch)``, and the model's own
random state (dropout) is set from ``(seed, epoch)`` at the start of each epoch (Keras does not
save it), so a run interrupted after an epoch and resumed from ``last.keras`` ends with the same
weights as one that was not. Code here is Keras 3 and backend-agnostic.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import keras
import numpy as np
import pandas as pd

from ..core import files
from ..imaging.augment import augment_batch
from ..imaging.projections import to_unit
from .splits import balanced_indices

PREDICTION_COLUMNS = ["scan_id", "patient_id", "rotation", "label", "probability"]
#: The files :func:`fit` writes into its folder.
BEST_MODEL, LAST_MODEL, HISTORY = "model.keras", "last.keras", "history.csv"


@dataclass(frozen=True)
class TrainParams:
    """Every parameter of one training; the paper's recipe is the default.

    Attributes
    ----------
    architecture : str
        ``vgg19``, ``inception_v3`` or ``vgg19_bn`` (:mod:`sapsam_utils.learning.models`).
    input_size : int
        Side of the square backbone input the images are resized to (paper: 224).
    weights : str or None
        ``"imagenet"``, a weights file, or None (random initialisation).
    frozen_blocks : int
        First blocks not trained (paper: 2).
    head_init : {"paper", "he"}
        Initial weights of the head (:func:`sapsam_utils.learning.models.build_classifier`).
    optimizer : {"sgd", "adam"}
    learning_rate, momentum : float
        Paper: SGD, 1e-4, momentum 0.9.
    warmup_epochs : int
        Epochs over which the learning rate rises linearly to ``learning_rate`` (paper: 0).
    batch_size : int
        Paper: 32.
    epochs : int
        Paper: 60 (disease), 240-300 (signs), 20 (survival).
    steps_per_epoch : int or None
        Batches per epoch; None = one pass over the balanced training rows.
    max_rotation_deg : float
    zoom_range : tuple of float
        Training-time 2-D augmentation (paper: ±20°, 80-120 %).
    validate_on : {"all", "unrotated"}
        The validation images scored after each epoch: every rotation (the paper), or rotation 0
        only (a 27th of the cost; sub-region validation splits hold tens of thousands of images).
    seed : int
    """

    architecture: str = "vgg19"
    input_size: int = 224
    weights: str | None = None
    frozen_blocks: int = 2
    head_init: str = "paper"
    optimizer: str = "sgd"
    learning_rate: float = 1e-4
    momentum: float = 0.9
    warmup_epochs: int = 0
    batch_size: int = 32
    epochs: int = 60
    steps_per_epoch: int | None = None
    max_rotation_deg: float = 20.0
    zoom_range: tuple[float, float] = (0.8, 1.2)
    validate_on: str = "all"
    seed: int = 0

    def as_dict(self) -> dict:
        return {**asdict(self), "zoom_range": list(self.zoom_range)}


def as_rgb(batch: np.ndarray) -> np.ndarray:
    """Grey ``(N, H, W)`` images -> ``(N, H, W, 3)``; ``(N, H, W, C)`` images are returned as they are."""
    return np.repeat(batch[..., None], 3, axis=-1) if batch.ndim == 3 else batch


def epoch_rows(labels: np.ndarray, epoch: int, seed: int, n_rows: int | None = None) -> np.ndarray:
    """The training rows of one epoch: classes balanced by oversampling, shuffled by ``(seed, epoch)``.

    ``n_rows`` cuts (or repeats) the balanced order to that many rows.
    """
    rows = balanced_indices(labels, seed=seed * 100_003 + epoch)
    if n_rows is not None:
        rows = np.resize(rows, n_rows)
    return rows


class ImageBatches(keras.utils.PyDataset):
    """Batches of one split's images as float32 ``(B, H, W, 3)`` in [0, 1], with labels.

    Parameters
    ----------
    images : numpy.ndarray
        ``(N, H, W)`` or ``(N, H, W, C)`` uint8 (a memory map is fine: only the batch is read).
    labels : numpy.ndarray
        One class per row.
    rows : numpy.ndarray
        The rows, in batch order (e.g. :func:`epoch_rows` for training, ``arange`` for testing).
    batch_size : int
    augment : dict or None
        ``{"max_rotation_deg": ..., "zoom_range": ...}`` for training batches; None for no augmentation.
    seed : int
        With the batch index, seeds each batch's augmentation.
    weights : numpy.ndarray, optional
        Per-row sample weights returned as the third element (e.g. class balance of a validation split).
    """

    def __init__(self, images, labels, rows, batch_size=32, augment=None, seed=0, weights=None):
        # One thread prepares the next batches while the model trains on this one. Batches are
        # deterministic by index (their augmentation is seeded by it), so the order is unaffected.
        super().__init__(workers=1 if augment is None else 2, use_multiprocessing=False)
        self.images, self.labels, self.rows = images, np.asarray(labels), np.asarray(rows)
        self.batch_size, self.augment, self.seed, self.weights = batch_size, augment, seed, weights

    def __len__(self):
        return int(np.ceil(len(self.rows) / self.batch_size))

    def __getitem__(self, i):
        rows = self.rows[i * self.batch_size : (i + 1) * self.batch_size]
        order = np.argsort(rows, kind="stable")  # read the memory map in file order
        x = np.empty((len(rows), *self.images.shape[1:]), dtype=np.float32)
        x[order] = to_unit(self.images[rows[order]])
        if self.augment is not None:
            x, _ = augment_batch(x, seed=np.random.default_rng([self.seed, i]), **self.augment)
        out = (as_rgb(x), self.labels[rows].astype(np.int32))
        return out if self.weights is None else (*out, self.weights[rows])


def class_balance_weights(labels: np.ndarray) -> np.ndarray:
    """Per-row weights that give each class the same total weight (mean weight 1)."""
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    per_class = dict(zip(classes, len(labels) / (len(classes) * counts)))
    return np.array([per_class[v] for v in labels], dtype=np.float32)


def make_optimizer(params: TrainParams) -> keras.optimizers.Optimizer:
    """The optimiser of the recipe (its learning rate is set per epoch by :func:`learning_rate_at`)."""
    if params.optimizer == "sgd":
        return keras.optimizers.SGD(params.learning_rate, momentum=params.momentum)
    if params.optimizer == "adam":
        return keras.optimizers.Adam(params.learning_rate)
    raise ValueError(f"optimizer must be 'sgd' or 'adam', got {params.optimizer!r}")


def learning_rate_at(params: TrainParams, epoch: int) -> float:
    """The learning rate of ``epoch`` (0-based): linear warm-up, then constant."""
    if params.warmup_epochs > 0 and epoch < params.warmup_epochs:
        return params.learning_rate * (epoch + 1) / (params.warmup_epochs + 1)
    return params.learning_rate


def compile_model(model: keras.Model, params: TrainParams) -> keras.Model:
    # Weighted, so that the validation accuracy, like its loss, weighs both classes equally
    # (training batches are balanced and carry no weights).
    model.compile(optimizer=make_optimizer(params), loss="sparse_categorical_crossentropy",
                  weighted_metrics=["sparse_categorical_accuracy"])
    return model


def reseed(model: keras.Model, seed: int, epoch: int) -> None:
    """Set every random state of ``model`` (dropout's seed generators) and Keras' global seed from
    ``(seed, epoch)``, so an epoch draws the same masks whether or not the run was resumed."""
    keras.utils.set_random_seed(seed * 100_003 + epoch)
    for k, variable in enumerate(v for v in model.variables if v.path.endswith("seed_generator_state")):
        variable.assign(np.array([seed * 1_000 + k, epoch * 1_000_003], dtype=variable.dtype))


def write_csv(table: pd.DataFrame, path: Path) -> None:
    """Write a table as CSV, atomically (a reader never sees half a file)."""
    with files.atomic_file(path) as tmp:
        table.to_csv(tmp, index=False)


def _save_model(model: keras.Model, path: Path) -> None:
    with files.atomic_file(path) as tmp:
        model.save(tmp)


def fit(
    model_dir: str | os.PathLike,
    build: Callable[[], keras.Model],
    train_images: np.ndarray,
    train_labels: np.ndarray,
    val_images: np.ndarray,
    val_labels: np.ndarray,
    params: TrainParams,
    log: Callable[[str], None] | None = print,
) -> keras.Model:
    """Train (or resume training) one model in ``model_dir``; return the best model by validation loss.

    Each finished epoch saves ``last.keras`` (weights, optimiser state, random state) and the
    history; the epoch with the lowest validation loss is also saved as ``model.keras``. When
    ``last.keras`` exists, training resumes after the epoch it holds. Without validation rows (a
    split with no patient, or the paper's survival set-up) the last epoch is the one kept. ``log`` gets one line per
    epoch.

    Parameters
    ----------
    model_dir : path-like
    build : callable
        Returns a new, uncompiled model (called only when there is nothing to resume).
    train_images, train_labels, val_images, val_labels : numpy.ndarray
        Images as stored (uint8) and labels 0 / 1; rows labelled NaN (unknown) are left out.
    params : TrainParams
    log : callable or None

    Returns
    -------
    keras.Model
        The model of the best epoch.
    """
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    last, best, history_path = model_dir / LAST_MODEL, model_dir / BEST_MODEL, model_dir / HISTORY
    if last.is_file() and history_path.is_file():
        model = keras.models.load_model(last)
        history = pd.read_csv(history_path).to_dict("records")
        if log:
            log(f"{model_dir.name}: resuming after epoch {len(history)}")
    else:
        model = compile_model(build(), params)
        history = []
    train_labels, val_labels = np.asarray(train_labels, dtype=float), np.asarray(val_labels, dtype=float)
    val_rows = np.flatnonzero(~np.isnan(val_labels))  # unknown labels (censored survival) take no part
    n_rows = None if params.steps_per_epoch is None else params.steps_per_epoch * params.batch_size
    augment = {"max_rotation_deg": params.max_rotation_deg, "zoom_range": tuple(params.zoom_range)}
    val_weights = np.zeros(len(val_labels), dtype=np.float32)
    val_weights[val_rows] = class_balance_weights(val_labels[val_rows])
    val = ImageBatches(val_images, np.nan_to_num(val_labels), val_rows, params.batch_size, weights=val_weights)
    best_loss = min((row["val_loss"] for row in history), default=np.inf)
    if not len(val_rows) and log:
        log(f"{model_dir.name}: no validation rows, so no checkpoint on validation: the last epoch is kept")
    for epoch in range(len(history), params.epochs):
        t0 = time.perf_counter()
        rate = learning_rate_at(params, epoch)
        reseed(model, params.seed, epoch)
        model.optimizer.learning_rate.assign(rate)
        rows = epoch_rows(train_labels, epoch, params.seed, n_rows)
        batches = ImageBatches(train_images, np.nan_to_num(train_labels), rows, params.batch_size, augment,
                               seed=params.seed * 100_003 + epoch)
        fitted = model.fit(batches, epochs=epoch + 1, initial_epoch=epoch, verbose=0)
        val_loss, val_acc = model.evaluate(val, verbose=0) if len(val_rows) else (np.nan, np.nan)
        row = {"epoch": epoch + 1, "loss": fitted.history["loss"][-1],
               "accuracy": fitted.history["sparse_categorical_accuracy"][-1], "val_loss": float(val_loss),
               "val_accuracy": float(val_acc), "learning_rate": rate, "seconds": time.perf_counter() - t0}
        history.append(row)
        if row["val_loss"] < best_loss or (np.isnan(row["val_loss"]) and epoch + 1 == params.epochs):
            best_loss = row["val_loss"]
            _save_model(model, best)
        _save_model(model, last)
        write_csv(pd.DataFrame(history), history_path)  # after last.keras: never ahead of it
        if log:
            log(f"{model_dir.name} epoch {epoch + 1}/{params.epochs}: loss {row['loss']:.3f}, "
                f"accuracy {row['accuracy']:.3f}, val loss {row['val_loss']:.3f}, "
                f"val accuracy {row['val_accuracy']:.3f}, {row['seconds']:.0f} s"
                + (" (best)" if best_loss == row["val_loss"] else ""))
    return keras.models.load_model(best)


def predict_probabilities(model: keras.Model, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Probability of class 1 for every image (no augmentation), in row order."""
    rows = np.arange(len(images))
    if not len(rows):
        return np.empty(0)
    batches = ImageBatches(images, np.zeros(len(images), dtype=int), rows, batch_size)
    return np.asarray(model.predict(batches, verbose=0))[:, 1].astype(np.float64)


def prediction_table(records: pd.DataFrame, labels: np.ndarray, probability: np.ndarray) -> pd.DataFrame:
    """One row per image: ``scan_id, patient_id, rotation, label, probability`` (and ``region`` for
    sub-region images)."""
    columns = PREDICTION_COLUMNS + (["region"] if "region" in records else [])
    return pd.DataFrame({"scan_id": records["scan_id"].to_numpy(), "patient_id": records["patient_id"].to_numpy(),
                         "rotation": records["rotation"].to_numpy(), "label": np.asarray(labels, dtype=int),
                         "probability": probability,
                         "region": records["region"].to_numpy() if "region" in records else None})[columns]
