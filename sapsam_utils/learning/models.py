"""The CNN classifiers of the paper (§2.4), as one flat Keras 3 functional graph.

A classifier takes projection images as they are stored (``(H, W, 3)``, values in [0, 1]) and
returns class probabilities. Its layers, in order:

1. ``resize`` to the network's input size (bilinear) and ``preprocess``, the backbone's own input
   preprocessing (``keras.applications.<backbone>.preprocess_input`` on values scaled to 0-255);
2. the convolutional backbone **without its top**, its layers part of the same graph (not nested as
   one layer), so Grad-CAM can read the last convolutional layer by name on every backend
   (:data:`LAST_CONV_LAYER`);
3. the paper's head: ``flatten``, two fully connected layers of 1,024 units with ReLU, weights
   drawn from a Gaussian (standard deviation :data:`HEAD_STDDEV`) and biases 0, dropout 0.5 between
   them, then ``logits`` (2 units, linear: the class scores before the softmax, which Grad-CAM
   differentiates) and ``probabilities`` (softmax).

Architectures (:data:`ARCHITECTURES`):

``vgg19``
    ``keras.applications.VGG19``, the paper's best model. Frozen: ``block1`` and ``block2``.
``inception_v3``
    ``keras.applications.InceptionV3``. The equivalent of VGG19's first two blocks is the stem
    below the first Inception module ``mixed0``: five convolutions (each with its batch
    normalisation) and two max-poolings, the layers that see the two finest resolutions. Frozen:
    every layer up to the stem's second max-pooling. Needs inputs of at least 75 x 75.
``vgg19_bn``
    The VGG19 topology (same layer names, same convolution shapes) with batch normalisation after
    each convolution and He-normal initialisation. Not in the paper: it is the study's recipe for
    learning **without** ImageNet weights (see the disease chapter). Its convolutions load the
    ImageNet VGG19 kernels when ImageNet weights are asked for. Nothing frozen by default, since
    random features are not worth keeping fixed.

Weights: ``"imagenet"`` (Keras' own download and cache, ``~/.keras/models/``), the path of a local
weights file of the backbone without top (the same file Keras would download), or ``None``
(random initialisation). A failed ImageNet download raises :class:`MissingWeightsError`, naming
the file and the folder to put it in; nothing falls back silently to random weights.
"""

from __future__ import annotations

import os
from pathlib import Path

import keras
from keras import layers

ARCHITECTURES = ("vgg19", "inception_v3", "vgg19_bn")
#: The layer whose maps Grad-CAM weighs (after its ReLU).
LAST_CONV_LAYER = {"vgg19": "block5_conv4", "inception_v3": "mixed10", "vgg19_bn": "block5_relu4"}
#: Smallest input side the backbone accepts (five poolings for VGG19; InceptionV3's stem).
MIN_INPUT = {"vgg19": 32, "inception_v3": 75, "vgg19_bn": 32}
#: The ImageNet weight files (no top) that Keras downloads into ``<keras home>/models/``.
IMAGENET_FILES = {
    "vgg19": "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "inception_v3": "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
}
IMAGENET_FILES["vgg19_bn"] = IMAGENET_FILES["vgg19"]
HEAD_UNITS = 1024
HEAD_DROPOUT = 0.5
#: Standard deviation of the head's Gaussian initial weights in the paper's recipe (the paper
#: gives none; 0.01 is the classic choice for fully connected layers on ImageNet features).
HEAD_STDDEV = 0.01
#: ``head_init`` choices: "paper" (Gaussian, :data:`HEAD_STDDEV`) or "he" (Gaussian with standard
#: deviation sqrt(2 / fan_in), which keeps the signal's scale through the ReLU layers).
HEAD_INITS = ("paper", "he")
VGG19_BLOCKS = ((64, 2), (128, 2), (256, 4), (512, 4), (512, 4))
#: Momentum of the batch-normalisation statistics used at inference. Keras' default, 0.99, needs
#: several hundred steps before the running statistics match the training batches; runs of a
#: few hundred steps on a CPU then predict one constant class. 0.9 settles in tens of steps.
BN_MOMENTUM = 0.9


class MissingWeightsError(RuntimeError):
    """ImageNet weights were asked for but could not be fetched."""


@keras.saving.register_keras_serializable(package="sapsam")
class BackbonePreprocess(layers.Layer):
    """The backbone's own ``preprocess_input`` applied to images in [0, 1] (scaled to 0-255)."""

    def __init__(self, architecture: str, **kwargs):
        super().__init__(**kwargs)
        self.architecture = architecture

    def call(self, inputs):
        module = keras.applications.inception_v3 if self.architecture == "inception_v3" else keras.applications.vgg19
        return module.preprocess_input(inputs * 255.0)

    def get_config(self):
        return {**super().get_config(), "architecture": self.architecture}


def keras_models_dir() -> Path:
    """The folder where Keras keeps downloaded weights (``$KERAS_HOME/models``, default ``~/.keras/models``)."""
    return Path(os.path.expanduser(keras.config.keras_home() if hasattr(keras.config, "keras_home")
                                   else os.environ.get("KERAS_HOME", "~/.keras"))) / "models"


def _keras_backbone(architecture: str, inputs, weights):
    """``keras.applications`` backbone on ``inputs`` (a symbolic tensor): a graph, not a layer."""
    build = keras.applications.VGG19 if architecture == "vgg19" else keras.applications.InceptionV3
    try:
        return build(include_top=False, weights=weights, input_tensor=inputs)
    except Exception as exc:  # the download failed: say which file, and where it belongs
        if weights != "imagenet":
            raise
        raise MissingWeightsError(
            f"ImageNet weights for {architecture} could not be fetched ({type(exc).__name__}: {exc}). "
            f"Put the file {IMAGENET_FILES[architecture]} into {keras_models_dir()} (Keras' cache), "
            f"or pass its path as weights=..., or weights=None to train from random initialisation."
        ) from exc


def _vgg19_bn_backbone(inputs):
    """VGG19's topology and layer names with batch normalisation after each convolution."""
    x = inputs
    for b, (filters, n_conv) in enumerate(VGG19_BLOCKS, start=1):
        for c in range(1, n_conv + 1):
            x = layers.Conv2D(filters, 3, padding="same", use_bias=False, kernel_initializer="he_normal",
                              name=f"block{b}_conv{c}")(x)
            x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"block{b}_bn{c}")(x)
            x = layers.Activation("relu", name=f"block{b}_relu{c}")(x)
        x = layers.MaxPooling2D(2, strides=2, name=f"block{b}_pool")(x)
    return x


def _load_vgg19_kernels(model: keras.Model, weights) -> None:
    """Copy the ImageNet (or file) VGG19 convolution kernels into the same-named layers of ``model``.

    The batch-normalised convolutions have no bias; VGG19's bias is folded into the following
    batch normalisation's offset (``beta``), which is where a bias acts after normalisation.
    """
    source = _keras_backbone("vgg19", keras.Input((MIN_INPUT["vgg19"],) * 2 + (3,)), weights)
    for layer in source.layers:
        if layer.name.startswith("block") and "_conv" in layer.name:
            kernel, bias = layer.get_weights()
            model.get_layer(layer.name).set_weights([kernel])
            bn = model.get_layer(layer.name.replace("_conv", "_bn"))
            gamma, beta, mean, var = bn.get_weights()
            bn.set_weights([gamma, bias, mean, var])


def _dense(units: int, activation, head_init: str, seed: int, name: str) -> layers.Dense:
    """A head layer: Gaussian weights (paper's standard deviation, or He's), zero biases."""
    init = (keras.initializers.RandomNormal(stddev=HEAD_STDDEV, seed=seed) if head_init == "paper"
            else keras.initializers.VarianceScaling(2.0, "fan_in", "untruncated_normal", seed=seed))
    return layers.Dense(units, activation=activation, kernel_initializer=init, bias_initializer="zeros", name=name)


def frozen_layer_names(model: keras.Model, architecture: str, frozen_blocks: int = 2) -> list[str]:
    """Names of the backbone layers that the paper's "first two blocks frozen" freezes.

    VGG19 (both variants): the layers of ``block1`` ... ``block<frozen_blocks>``. InceptionV3:
    the stem up to its ``frozen_blocks``-th max-pooling (the stem has two); 0 freezes nothing.
    """
    if frozen_blocks <= 0:
        return []
    if architecture.startswith("vgg19"):
        prefixes = tuple(f"block{b}_" for b in range(1, frozen_blocks + 1))
        return [layer.name for layer in model.layers if layer.name.startswith(prefixes)]
    names, pools, started = [], 0, False
    for layer in model.layers:
        started = started or isinstance(layer, layers.Conv2D)
        if not started:
            continue  # input, resize, preprocess
        names.append(layer.name)
        if isinstance(layer, layers.MaxPooling2D):
            pools += 1
            if pools == min(frozen_blocks, 2):
                return names
    raise ValueError(f"{architecture}: found only {pools} stem max-poolings")


def build_classifier(
    architecture: str = "vgg19",
    image_shape: tuple[int, int, int] = (224, 224, 3),
    input_size: int | tuple[int, int] = 224,
    weights: str | os.PathLike | None = None,
    frozen_blocks: int = 2,
    n_classes: int = 2,
    head_init: str = "paper",
    seed: int = 0,
) -> keras.Model:
    """Build a classifier: resize + preprocessing, backbone without top, the paper's head.

    Parameters
    ----------
    architecture : {"vgg19", "inception_v3", "vgg19_bn"}
    image_shape : tuple of int
        ``(H, W, 3)`` of the stored images the model takes (values in [0, 1]).
    input_size : int or (int, int)
        The backbone's input size the images are resized to (paper: 224).
    weights : "imagenet", path or None
        ImageNet weights, a local weights file of the backbone (no top), or random initialisation.
    frozen_blocks : int
        How many of the first blocks are not trained (paper: 2; see :func:`frozen_layer_names`).
    n_classes : int
    head_init : {"paper", "he"}
        The head's Gaussian initial weights: standard deviation :data:`HEAD_STDDEV` (paper), or
        sqrt(2 / fan_in) (He). With a random backbone, the paper's small weights shrink the
        gradient reaching the backbone by about three orders of magnitude (see the disease chapter).
    seed : int
        Seeds the random initial weights (head, and backbone when not loaded).

    Returns
    -------
    keras.Model
        Outputs class probabilities ``(N, n_classes)``; ``model.get_layer("logits")`` gives the
        scores before the softmax, ``model.get_layer(LAST_CONV_LAYER[architecture])`` the last
        convolutional maps.
    """
    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {architecture!r}")
    size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    if min(size) < MIN_INPUT[architecture]:
        raise ValueError(f"{architecture} needs inputs of at least {MIN_INPUT[architecture]} pixels, got {size}")
    if weights not in (None, "imagenet") and not Path(weights).is_file():
        raise FileNotFoundError(f"weights file {weights} does not exist")
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(tuple(image_shape), name="image")
    x = layers.Resizing(*size, interpolation="bilinear", name="resize")(inputs)
    x = BackbonePreprocess(architecture, name="preprocess")(x)
    if architecture == "vgg19_bn":
        features = _vgg19_bn_backbone(x)
    else:
        weight_arg = weights if weights in (None, "imagenet") else str(weights)
        features = _keras_backbone(architecture, x, weight_arg).output
    if head_init not in HEAD_INITS:
        raise ValueError(f"head_init must be one of {HEAD_INITS}, got {head_init!r}")
    x = layers.Flatten(name="flatten")(features)
    x = _dense(HEAD_UNITS, "relu", head_init, seed, "fc1")(x)
    x = layers.Dropout(HEAD_DROPOUT, seed=seed, name="dropout")(x)
    x = _dense(HEAD_UNITS, "relu", head_init, seed + 1, "fc2")(x)
    x = _dense(n_classes, None, head_init, seed + 2, "logits")(x)
    outputs = layers.Activation("softmax", name="probabilities")(x)
    model = keras.Model(inputs, outputs, name=f"sapsam_{architecture}")
    if architecture == "vgg19_bn" and weights is not None:
        _load_vgg19_kernels(model, weights if weights == "imagenet" else str(weights))
    for name in frozen_layer_names(model, architecture, frozen_blocks):
        model.get_layer(name).trainable = False
    return model

