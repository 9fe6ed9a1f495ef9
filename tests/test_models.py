"""The classifiers: one flat graph, the paper's head, frozen blocks, and where the weights come from."""

import keras
import numpy as np
import pytest

from sapsam_utils.learning import models
from sapsam_utils.learning.models import LAST_CONV_LAYER, MissingWeightsError, build_classifier


@pytest.fixture(scope="module")
def vgg():
    return build_classifier("vgg19", (40, 48, 3), 32, weights=None)


def test_vgg19_shapes_head_and_flat_graph(vgg):
    x = np.random.default_rng(0).random((3, 40, 48, 3), dtype=np.float32)
    prob = np.asarray(vgg.predict(x, verbose=0))
    assert prob.shape == (3, 2)
    np.testing.assert_allclose(prob.sum(axis=1), 1.0, rtol=1e-5)
    # one flat graph: no layer is itself a model, and Grad-CAM finds the last convolution by name
    assert not any(isinstance(layer, keras.Model) for layer in vgg.layers)
    assert vgg.get_layer(LAST_CONV_LAYER["vgg19"]).output.shape[1:] == (2, 2, 512)
    assert vgg.get_layer("resize").output.shape[1:] == (32, 32, 3)
    # the paper's head: 1024 ReLU, dropout 0.5, 1024 ReLU, 2 linear scores, softmax
    fc1, fc2, logits = (vgg.get_layer(n) for n in ("fc1", "fc2", "logits"))
    assert fc1.units == fc2.units == 1024 and logits.units == 2
    assert fc1.activation.__name__ == fc2.activation.__name__ == "relu" and logits.activation.__name__ == "linear"
    assert vgg.get_layer("dropout").rate == 0.5
    for layer in (fc1, fc2):
        kernel, bias = layer.get_weights()
        assert not bias.any() and abs(kernel.std() - models.HEAD_STDDEV) < 0.001 and abs(kernel.mean()) < 0.001
    assert vgg.get_layer("probabilities").activation.__name__ == "softmax"


def test_vgg19_first_two_blocks_frozen(vgg):
    frozen = {layer.name for layer in vgg.layers if not layer.trainable}
    assert frozen == {n for n in (layer.name for layer in vgg.layers) if n.startswith(("block1_", "block2_"))}
    assert {"block1_conv1", "block2_conv2", "block2_pool"} <= frozen
    assert vgg.get_layer("block3_conv1").trainable and vgg.get_layer("fc1").trainable
    n_frozen = sum(np.prod(w.shape) for w in vgg.non_trainable_weights)
    assert n_frozen == (3 * 9 * 64 + 64) + (64 * 9 * 64 + 64) + (64 * 9 * 128 + 128) + (128 * 9 * 128 + 128)


def test_inception_v3_stem_frozen_and_mixed10():
    model = build_classifier("inception_v3", (75, 75, 3), 75, weights=None)
    frozen = [layer for layer in model.layers if not layer.trainable]
    assert sum(isinstance(layer, keras.layers.Conv2D) for layer in frozen) == 5
    assert sum(isinstance(layer, keras.layers.MaxPooling2D) for layer in frozen) == 2
    assert model.get_layer("mixed0").trainable and model.get_layer(LAST_CONV_LAYER["inception_v3"])
    with pytest.raises(ValueError, match="at least 75"):
        build_classifier("inception_v3", (64, 64, 3), 64)


def test_vgg19_bn_has_the_vgg19_topology_with_batch_norm():
    model = build_classifier("vgg19_bn", (32, 32, 3), 32, weights=None, frozen_blocks=0)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [c.name for c in convs][:3] == ["block1_conv1", "block1_conv2", "block2_conv1"] and len(convs) == 16
    assert sum(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers) == 16
    assert all(layer.trainable for layer in model.layers)


def test_weights_from_a_local_file(tmp_path):
    backbone = keras.applications.VGG19(include_top=False, weights=None, input_shape=(32, 32, 3))
    path = tmp_path / "vgg19_notop.weights.h5"
    backbone.save_weights(path)
    expected = backbone.get_layer("block3_conv2").get_weights()[0]
    model = build_classifier("vgg19", (32, 32, 3), 32, weights=path, seed=5)
    np.testing.assert_array_equal(model.get_layer("block3_conv2").get_weights()[0], expected)
    # the batch-normalised variant takes the same kernels, the bias goes to the normalisation's offset
    bn = build_classifier("vgg19_bn", (32, 32, 3), 32, weights=path, frozen_blocks=0)
    np.testing.assert_array_equal(bn.get_layer("block3_conv2").get_weights()[0], expected)
    np.testing.assert_array_equal(bn.get_layer("block3_bn2").get_weights()[1],
                                  backbone.get_layer("block3_conv2").get_weights()[1])
    with pytest.raises(FileNotFoundError, match="no_such.h5"):
        build_classifier("vgg19", (32, 32, 3), 32, weights=tmp_path / "no_such.h5")


def test_missing_imagenet_weights_name_the_file_and_folder(monkeypatch, tmp_path):
    from keras.src.utils import file_utils

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(file_utils, "urlretrieve", offline)
    monkeypatch.setattr(file_utils.config, "keras_home", lambda: str(tmp_path))
    monkeypatch.setattr(keras.config, "keras_home", lambda: str(tmp_path), raising=False)
    with pytest.raises(MissingWeightsError) as err:
        build_classifier("vgg19", (32, 32, 3), 32, weights="imagenet")
    message = str(err.value)
    assert "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5" in message and str(tmp_path / "models") in message


def test_same_seed_same_initial_weights():
    a = build_classifier("vgg19", (32, 32, 3), 32, weights=None, seed=2)
    b = build_classifier("vgg19", (32, 32, 3), 32, weights=None, seed=2)
    c = build_classifier("vgg19", (32, 32, 3), 32, weights=None, seed=3)
    for name in ("block3_conv1", "fc1", "logits"):
        np.testing.assert_array_equal(a.get_layer(name).get_weights()[0], b.get_layer(name).get_weights()[0])
    assert not np.array_equal(a.get_layer("fc1").get_weights()[0], c.get_layer("fc1").get_weights()[0])
