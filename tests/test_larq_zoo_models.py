"""larq-zoo's models as zoo entries (`hbnn_larq.zoo.larq_zoo_models`): any kernel quantizer,
registry and `train.py` wiring, stable layer names, weights, saving without larq-zoo."""

import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import larq as lq
import numpy as np
import pytest
import tensorflow as tf

import hbnn_larq
from hbnn_larq import HyperbolicSign, zoo
from hbnn_larq.training import TrainConfig
from hbnn_larq.training.config import ConfigError
from hbnn_larq.training.run import build_model
from hbnn_larq.utils import binarized_layers
from hbnn_larq.zoo.larq_zoo_models import BlurPoolInitializer

LARQ_ZOO_NAMES = {"quicknet_small", "quicknet", "quicknet_large", "birealnet", "binary_resnet_e18"}
SMALL = {"input_shape": (32, 32, 3), "num_classes": 10}


def images(side, n=2, seed=1):
    return np.random.default_rng(seed).normal(size=(n, side, side, 3)).astype("float32")


def test_registered_and_import_stays_lazy():
    assert LARQ_ZOO_NAMES <= set(zoo.model_names())
    assert zoo.FIXED_WIDTH_MODELS == LARQ_ZOO_NAMES
    assert zoo.MODELS["quicknet_small"] is zoo.QuickNetSmall
    code = "import sys, hbnn_larq; print('larq_zoo' in sys.modules, 'zookeeper' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.split() == ["False", "False"]


def test_default_is_hbnn_in_every_binary_conv_and_keeps_the_rest():
    model = zoo.get_model("QuickNet_Small", **SMALL)
    assert model.name == "quicknet_small" and model.output_shape == (None, 10)
    binary = binarized_layers(model)
    assert len(binary) == 16
    quantizers = [layer.kernel_quantizer for layer in binary]
    assert all(isinstance(q, HyperbolicSign) for q in quantizers) and len({id(q) for q in quantizers}) == 16
    assert all(layer.kernel_constraint is None for layer in binary)
    assert all(isinstance(layer.input_quantizer, lq.quantizers.SteSign) for layer in binary)  # larq-zoo's
    assert model.layers[1].kernel_quantizer is None  # the full-precision stem
    blur = [layer for layer in model.layers
            if isinstance(getattr(layer, "depthwise_initializer", None), BlurPoolInitializer)]
    assert len(blur) == 3 and all(not layer.trainable for layer in blur)
    kernel = blur[0].depthwise_kernel.numpy()
    np.testing.assert_allclose(kernel[:, :, 0, 0], np.outer([1, 2, 1], [1, 2, 1]) / 16.0)
    assert zoo.original_recipe("quicknet_small") == "ste_sign" and zoo.original_recipe("birealnet") is None


def test_original_keeps_larq_zoo_quantizers_and_other_quantizers_replace_them():
    original = zoo.BinaryResNetE18(kernel_quantizer="original", **SMALL)
    layer = binarized_layers(original)[0]
    assert isinstance(layer.kernel_quantizer, lq.quantizers.SteSign) and layer.kernel_quantizer.clip_value == 1.25
    assert isinstance(layer.kernel_constraint, lq.constraints.WeightClip) and layer.kernel_constraint.clip_value == 1.25
    ste = zoo.BinaryResNetE18(kernel_quantizer="ste_sign", kernel_constraint="weight_clip", **SMALL)
    layers = binarized_layers(ste)
    assert len(layers) == 16
    assert all(l.kernel_quantizer.clip_value == 1.0 and l.kernel_constraint.clip_value == 1.0 for l in layers)
    bireal = binarized_layers(zoo.BiRealNet(kernel_quantizer="original", **SMALL))
    assert isinstance(bireal[0].kernel_quantizer, lq.quantizers.MagnitudeAwareSign)
    recipe = binarized_layers(zoo.BiRealNet(kernel_quantizer=lambda: HyperbolicSign(r=0.2), **SMALL))
    assert {l.kernel_quantizer.r for l in recipe} == {0.2}


def test_layer_names_do_not_depend_on_the_session():
    first = zoo.QuickNetSmall(kernel_quantizer="ste_sign", **SMALL)
    second = zoo.QuickNetSmall(kernel_quantizer="ste_sign", **SMALL)  # the Keras session has counted on
    names = [layer.name for layer in first.layers[1:]]
    assert names == [layer.name for layer in second.layers[1:]]
    assert names[:4] == ["quant_conv2d", "batch_normalization", "activation", "quant_depthwise_conv2d"]


def test_include_top_false_and_input_sizes():
    features = zoo.QuickNetSmall(input_shape=(64, 64, 3), include_top=False, kernel_quantizer="ste_sign")
    assert features.output_shape == (None, 2, 2, 512)
    bireal = zoo.BiRealNet(input_shape=(48, 48, 3), num_classes=3, kernel_quantizer="ste_sign")
    probabilities = bireal(images(48), training=False).numpy()
    assert probabilities.shape == (2, 3)
    np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, rtol=1e-5)


def test_save_pretrained_weights_load_by_name(tmp_path):
    model = zoo.QuickNetSmall(**SMALL)
    for _, quantizer in hbnn_larq.hyperbolic_quantizers(model):
        quantizer.points[0].assign(quantizer.manifold.projx(tf.random.normal(quantizer.points[0].shape) * 0.5))
    path = zoo.save_pretrained(model, tmp_path / "quicknet_small.npz")
    restored = zoo.get_model("quicknet_small", weights=str(path), **SMALL)
    x = images(32)
    np.testing.assert_array_equal(restored(x, training=False).numpy(), model(x, training=False).numpy())
    with pytest.raises(ValueError, match="num_classes"):
        zoo.QuickNetSmall(weights=str(path), input_shape=(32, 32, 3), num_classes=5)


def test_larq_zoo_keras_weights_give_an_hbnn_that_predicts_exactly_the_same(tmp_path):
    """`weights=` a larq-zoo `.h5` file (as `"imagenet"` downloads): the latent kernels are kept and
    the points start at the origin, so the HBNN predicts exactly what larq-zoo's model does."""
    import larq_zoo

    source = larq_zoo.sota.QuickNetSmall(weights=None, **SMALL)
    rng = np.random.default_rng(0)
    for layer in source.layers:
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            layer.set_weights([rng.uniform(0.5, 2.0, w.shape) if "variance" in w.name or "gamma" in w.name
                               else rng.normal(0, 0.5, w.shape) for w in layer.weights])
    source.save_weights(tmp_path / "quicknet_small.h5")
    model = zoo.QuickNetSmall(weights=str(tmp_path / "quicknet_small.h5"), **SMALL)
    assert all(isinstance(layer.kernel_quantizer, HyperbolicSign) for layer in binarized_layers(model))
    x = images(32)
    logits = [tf.keras.Model(m.inputs, m.layers[-1].input)(x, training=False).numpy() for m in (model, source)]
    np.testing.assert_array_equal(*logits)


@pytest.mark.slow
def test_saved_model_loads_with_hbnn_larq_alone(tmp_path):
    """A saved QuickNet needs no larq-zoo to load (its blur-pool initializer is hbnn_larq's)."""
    model = zoo.QuickNetSmall(**SMALL)
    x = images(32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", model(x, training=False).numpy())
    model.save(tmp_path / "model.keras")
    code = textwrap.dedent(f"""
        import sys
        import numpy as np
        import hbnn_larq, tensorflow as tf
        model = tf.keras.models.load_model({str(tmp_path / "model.keras")!r})
        assert "larq_zoo" not in sys.modules
        x, y = np.load({str(tmp_path / "x.npy")!r}), np.load({str(tmp_path / "y.npy")!r})
        np.testing.assert_array_equal(model(x, training=False).numpy(), y)
        print("ok", type(hbnn_larq.utils.binarized_layers(model)[0].kernel_quantizer).__name__)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split()[-1] == "HyperbolicSign"


def test_imagenet_weights_offline_give_a_clear_error(monkeypatch):
    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://github.com/larq/zoo/releases/download/...: None -- "
                        "[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(tf.keras.utils, "get_file", offline)
    with pytest.raises(OSError, match="could not download the ImageNet weights of BiRealNet.*weights=None"):
        zoo.BiRealNet(weights="imagenet", kernel_quantizer="ste_sign")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"width": 0.5}, "`width` must be 1 for 'quicknet_small'"),
        ({"width": 0}, "`width`"),
        ({"num_classes": 0}, "`num_classes`"),
        ({"kernel_quantizer": "original", "kernel_constraint": "weight_clip"}, "`kernel_constraint` must be None"),
        ({"kernel_quantizer": "no_such_quantizer"}, "no_such_quantizer"),
        ({"weights": "cifar10"}, "`weights` must be None, 'imagenet', the path of a Keras .h5"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        zoo.QuickNetSmall(**{"input_shape": (32, 32, 3), **kwargs})


# -- train.py ------------------------------------------------------------------------------------
def test_train_config_and_build_model():
    with pytest.raises(ConfigError, match="`width` must be 1 for `model` 'quicknet_small'"):
        TrainConfig(model="quicknet_small", width=0.5).validate()
    TrainConfig(model="birealnet", quantizer="ste_sign").validate()
    dataset = SimpleNamespace(input_shape=(32, 32, 3), num_classes=10, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    # `ste_sign` is QuickNet's own recipe: larq-zoo's SteSign(1.25) + WeightClip(1.25) stay.
    own = binarized_layers(build_model(TrainConfig(model="quicknet_small", quantizer="ste_sign"), dataset))[0]
    assert own.kernel_quantizer.clip_value == 1.25 and own.kernel_constraint.clip_value == 1.25
    # Bi-Real Net's own is a scaled sign: `ste_sign` is the recipe's SteSign(1) + WeightClip(1).
    bireal = binarized_layers(build_model(TrainConfig(model="birealnet", quantizer="ste_sign"), dataset))[0]
    assert type(bireal.kernel_quantizer) is lq.quantizers.SteSign and bireal.kernel_quantizer.clip_value == 1.0
    assert bireal.kernel_constraint.clip_value == 1.0
    hbnn = binarized_layers(build_model(TrainConfig(model="quicknet_small", quantizer="hbnn", radius=0.1), dataset))
    assert all(isinstance(l.kernel_quantizer, HyperbolicSign) and l.kernel_quantizer.r == 0.1 for l in hbnn)
    # train.py's models take raw pixels: the dataset's normalisation is their first layer.
    model = build_model(TrainConfig(model="quicknet_small"), dataset)
    assert model.layers[1].name == "input_normalization" and model.layers[1].get_config()["mean"] == [127.5] * 3


def test_input_normalization_is_spliced_in_front_and_changes_nothing_else():
    from hbnn_larq.zoo import common

    inside = zoo.get_model("quicknet_small", input_shape=(32, 32, 3), num_classes=10, input_normalization="cifar10")
    outside = zoo.get_model("quicknet_small", input_shape=(32, 32, 3), num_classes=10)
    assert [l.name for l in inside.layers[:2]][1] == "input_normalization" and len(inside.layers) == len(outside.layers) + 1
    outside.set_weights(inside.get_weights())
    raw = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3)).astype("float32")
    mean, std = (np.array(v, "float32") for v in common.INPUT_STATISTICS["cifar10"])
    np.testing.assert_allclose(inside(raw).numpy(), outside((raw / 255 - mean) / std).numpy(), rtol=1e-5, atol=1e-6)
