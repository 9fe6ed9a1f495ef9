"""Baselines beside every CNN: what a simple model gets from the same images and labels.

:func:`pixel_features` shrinks each image by block averaging and flattens it;
:func:`fit_pixel_logistic` fits an L2-regularised logistic regression on those features (seeded,
standardised), class-balanced like the CNNs' training batches. The CNN's margin over it is what
the deep model adds to a linear reading of the same pixels.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ..imaging.projections import to_unit


def pixel_features(images: np.ndarray, block: int = 4, batch: int = 2048) -> np.ndarray:
    """``(N, H, W[, C])`` images -> ``(N, H//block * W//block * C)`` block means in [0, 1].

    Reads the (memory-mapped) images in batches, so a large split never sits in memory as floats.
    """
    n, h, w = images.shape[:3]
    hb, wb = h // block, w // block
    out = []
    for start in range(0, n, batch):
        x = to_unit(images[start:start + batch])[:, : hb * block, : wb * block]
        x = x.reshape(len(x), hb, block, wb, block, -1).mean(axis=(2, 4))
        out.append(x.reshape(len(x), -1))
    return np.concatenate(out) if out else np.empty((0, hb * wb))


def fit_pixel_logistic(features: np.ndarray, labels: np.ndarray, c: float = 0.01, seed: int = 0):
    """A standardised, class-balanced L2 logistic regression; ``predict_proba(x)[:, 1]`` scores class 1.

    Parameters
    ----------
    features : numpy.ndarray
        :func:`pixel_features` of the training images.
    labels : numpy.ndarray
    c : float
        Inverse regularisation strength (small: strong shrinkage, as suits thousands of
        correlated pixels and few patients).
    seed : int
    """
    model = make_pipeline(StandardScaler(), LogisticRegression(C=c, class_weight="balanced", max_iter=2000,
                                                                random_state=seed))
    return model.fit(features, np.asarray(labels))
