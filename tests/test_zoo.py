"""Tests of the model zoo: architectures, quantizer handling, training, LCE deployment."""

import larq as lq
import numpy as np
import pytest
import tensorflow as tf

import hbnn_larq
from hbnn_larq import zoo
from hbnn_larq.export import op_names
from hbnn_larq.utils import binarized_layers
from hbnn_larq.zoo import common, resnet, sizes
from tests.helpers import assert_lce_matches, separable_toy_model

CIFAR = (32, 32, 3)
# Building a HyperbolicSign layer traces its exponential map (~0.5 s per layer on a loaded
# 2-core machine): tests about the architecture alone use the stateless sign quantizer.
FAST = {"kernel_quantizer": "ste_sign"}


# -- independent references --------------------------------------------------------------------
def vggsmall_reference_params(width=1.0, classes=10, side=32):
    """Weights of the reference VGG-small (IR-Net vgg.py), with BN moving statistics."""
    c = [max(1, round(f * width)) for f in (128, 128, 256, 256, 512, 512)]
    convs = 9 * 3 * c[0] + sum(9 * a * b for a, b in zip(c, c[1:]))
    return convs + 4 * sum(c) + c[-1] * (side // 8) ** 2 * classes + classes


def resnet_reference_params(blocks, classes=10, stem_kernel=3):
    """Weights of a ResNet with basic blocks, FP 1x1 downsample + BN, head BN + Linear."""
    total = stem_kernel**2 * 3 * 64 + 4 * 64
    c_in = 64
    for c, n in zip((64, 128, 256, 512), blocks):
        for b in range(n):
            total += 9 * c_in * c + 9 * c * c + 2 * 4 * c
            if c_in != c:
                total += c_in * c + 4 * c
            c_in = c
    return total + 4 * 512 + 512 * classes + classes


def randomize_inference_state(model, seed=0):
    """Non-trivial BN statistics (gamma > 0) and HBNN points away from the origin."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, n), rng.normal(0, 0.3, n), rng.normal(0, 0.5, n),
                               rng.uniform(0.5, 2.0, n)])
    for _, quantizer in hbnn_larq.hyperbolic_quantizers(model):
        for point in quantizer.points:
            direction = rng.normal(size=point.shape)
            point.assign(0.5 / np.sqrt(quantizer.r) * direction / np.linalg.norm(direction))


# -- parameter counts --------------------------------------------------------------------------
def test_vggsmall_parameter_count_matches_reference():
    model = zoo.VGGSmall()
    counts = sizes.count_parameters(model)
    assert counts["params"] == vggsmall_reference_params()
    assert round(counts["params"] / 1e6, 2) == 4.66  # the literature's number
    # HBNN points (one per binary kernel weight) + one active index per binary layer: not counted.
    n_binary = sum(int(np.prod(layer.kernel.shape)) for layer in binarized_layers(model))
    assert counts["quantizer_state"] == n_binary + len(binarized_layers(model))


@pytest.mark.parametrize(
    "name, kwargs, blocks, stem_kernel, millions",
    [
        ("resnet18", {"input_shape": CIFAR}, (2, 2, 2, 2), 3, 11.2),
        ("resnet34", {"input_shape": CIFAR}, (3, 4, 6, 3), 3, 21.3),
        ("resnet18", {"input_shape": (224, 224, 3), "num_classes": 1000}, (2, 2, 2, 2), 7, 11.7),
    ],
)
def test_resnet_parameter_counts_match_reference(name, kwargs, blocks, stem_kernel, millions):
    model = zoo.get_model(name, **FAST, **kwargs)
    expected = resnet_reference_params(blocks, kwargs.get("num_classes", 10), stem_kernel)
    assert sizes.count_parameters(model)["params"] == expected
    assert round(expected / 1e6, 1) == millions


# -- shapes, classes, variants -----------------------------------------------------------------
@pytest.mark.parametrize(
    "name, kwargs, shape",
    [
        ("vggsmall", {"input_shape": CIFAR}, (4, 4, 128)),
        ("resnet18", {"input_shape": CIFAR}, (4, 4, 128)),
        ("resnet34", {"input_shape": (64, 64, 3), "variant": "imagenet"}, (2, 2, 128)),
    ],
)
def test_include_top_false_returns_feature_map(name, kwargs, shape):
    model = zoo.get_model(name, include_top=False, width=0.25, **FAST, **kwargs)
    assert model.output_shape == (None, *shape)


@pytest.mark.parametrize("name", ["vggsmall", "resnet18"])
def test_arbitrary_num_classes(name):
    model = zoo.get_model(name, num_classes=7, width=0.125, **FAST)
    probabilities = model(np.random.default_rng(0).normal(size=(2, *CIFAR)).astype("float32"), training=False)
    assert probabilities.shape == (2, 7)
    np.testing.assert_allclose(np.sum(probabilities, axis=-1), 1.0, rtol=1e-5)
    logits = zoo.get_model(name, num_classes=7, width=0.125, classifier_activation=None, **FAST)
    assert logits.layers[-1].name == "logits"


@pytest.mark.parametrize(
    "input_shape, variant", [((32, 32, 3), "cifar"), ((64, 64, 3), "cifar"), ((65, 65, 3), "imagenet"),
                             ((224, 224, 3), "imagenet"), (None, "cifar")]
)
def test_variant_inferred_from_input_size(input_shape, variant):
    model = zoo.ResNet18(input_shape=input_shape, width=0.125, **FAST)
    assert model.get_layer("stem_conv").kernel_size == ((3, 3) if variant == "cifar" else (7, 7))
    assert resnet.infer_variant(input_shape, None) == variant


def test_binary_conv_counts_and_layer_settings():
    expected = {"vggsmall": 5, "resnet18": 16, "resnet34": 32}
    for name, count in expected.items():
        layers = binarized_layers(zoo.get_model(name, width=0.125, **FAST))
        assert len(layers) == count
        for layer in layers:
            assert layer.pad_values == 1.0 and not layer.use_bias
            assert lq.quantizers.serialize(layer.input_quantizer)["class_name"] == "ApproxSign"


def test_equally_shaped_layers_start_with_different_kernels():
    model = zoo.ResNet18(width=0.125, **FAST)
    first, second = (model.get_layer(f"stage1_block1_conv{i}").kernel.numpy() for i in (1, 2))
    assert first.shape == second.shape and not np.allclose(first, second)


# -- kernel quantizers -------------------------------------------------------------------------
def _kernel_quantizers(model):
    return [layer.kernel_quantizer for layer in binarized_layers(model)]


@pytest.mark.parametrize(
    "kernel_quantizer",
    [None, "hyperbolic_sign", hbnn_larq.HyperbolicSign(r=1.0, boundary=True), hbnn_larq.HyperbolicSign,
     {"class_name": "HyperbolicSign", "config": {"r": 0.1}}],
)
def test_stateful_quantizer_is_fresh_per_layer(kernel_quantizer):
    quantizers = _kernel_quantizers(zoo.VGGSmall(width=0.125, kernel_quantizer=kernel_quantizer))
    assert all(isinstance(q, hbnn_larq.HyperbolicSign) for q in quantizers)
    assert len({id(q) for q in quantizers}) == len(quantizers)
    assert len({id(q.points[0]) for q in quantizers}) == len(quantizers)
    if isinstance(kernel_quantizer, hbnn_larq.HyperbolicSign):
        assert all(q.r == 1.0 and q.boundary for q in quantizers)
        assert all(q is not kernel_quantizer for q in quantizers)


def test_ste_sign_baseline_with_weight_clip():
    model = zoo.ResNet18(width=0.125, kernel_quantizer="ste_sign", kernel_constraint="weight_clip")
    assert not hbnn_larq.hyperbolic_quantizers(model)
    for layer in binarized_layers(model):
        assert isinstance(layer.kernel_quantizer, lq.quantizers.SteSign)
        assert isinstance(layer.kernel_constraint, lq.constraints.WeightClip)


def test_stateless_quantizer_function_is_accepted():
    model = zoo.VGGSmall(width=0.125, kernel_quantizer=lq.quantizers.ste_sign)
    assert all(q is lq.quantizers.ste_sign for q in _kernel_quantizers(model))


# -- training ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("vggsmall", {"width": 0.25}),
        ("resnet18", {"width": 0.25}),
        ("resnet34", {"width": 0.125}),
        ("resnet18", {"width": 0.25, "input_shape": (64, 64, 3), "variant": "imagenet"}),
    ],
)
def test_one_training_step_moves_kernels_and_points(name, kwargs):
    # An eager step through the same optimizer `fit` uses: tracing `fit` costs minutes here.
    model = zoo.get_model(name, num_classes=5, classifier_activation=None, **kwargs)
    optimizer = hbnn_larq.RiemannianOptimizer(tf.keras.optimizers.SGD(0.1, momentum=0.9))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, *model.input_shape[1:])).astype("float32")
    y = rng.integers(0, 5, size=8)
    layer = binarized_layers(model)[-1]
    kernel_before = layer.kernel.numpy().copy()
    with tf.GradientTape() as tape:
        loss = tf.keras.losses.sparse_categorical_crossentropy(y, model(x, training=True), from_logits=True)
    optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_weights), model.trainable_weights))
    assert np.all(np.isfinite(loss))
    assert not np.array_equal(layer.kernel.numpy(), kernel_before)
    assert np.abs(layer.kernel_quantizer.points[0].numpy()).max() > 0


# -- function-preserving options ---------------------------------------------------------------
def test_hardtanh_before_binary_conv_is_redundant_with_approx_sign():
    x = tf.constant(np.linspace(-3, 3, 601, dtype="float32"))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        plain = lq.quantizers.approx_sign(x)
        clipped = lq.quantizers.approx_sign(common.HardTanh()(x))
    np.testing.assert_array_equal(plain, clipped)
    np.testing.assert_array_equal(tape.gradient(plain, x), tape.gradient(clipped, x))


def test_explicit_hardtanh_gives_same_outputs_and_gradients():
    models = [zoo.VGGSmall(width=0.125, explicit_hardtanh=flag, classifier_activation=None, **FAST)
              for flag in (False, True)]
    models[1].set_weights(models[0].get_weights())
    x = np.random.default_rng(1).normal(size=(4, *CIFAR)).astype("float32")
    results = []
    for model in models:
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model(x, training=True) ** 2)
        results.append((loss.numpy(), [g.numpy() for g in tape.gradient(loss, model.trainable_weights)]))
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-6)
    for a, b in zip(results[0][1], results[1][1]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("negative_gamma", [False, True])
def test_bn_before_pool_is_the_same_function_at_inference_iff_gamma_positive(negative_gamma):
    reference = zoo.VGGSmall(width=0.25, classifier_activation=None)
    fused = zoo.VGGSmall(width=0.25, classifier_activation=None, bn_before_pool=True)
    randomize_inference_state(reference)
    if negative_gamma:  # control: a decreasing BN does not commute with max-pooling
        bn = reference.get_layer("conv5_bn")
        bn.gamma.assign(-bn.gamma)
    fused.set_weights(reference.get_weights())
    x = np.random.default_rng(2).normal(size=(4, *CIFAR)).astype("float32")
    a, b = reference(x, training=False).numpy(), fused(x, training=False).numpy()
    if negative_gamma:
        assert np.abs(a - b).max() > 1e-2
    else:
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


# -- deployment --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, kwargs, float_convs",
    [
        ("vggsmall", {"width": 0.25}, 1),
        ("vggsmall", {"width": 0.25, "bn_before_pool": True}, 1),
        ("resnet18", {"width": 0.25}, 4),
        ("resnet18", {"width": 0.25, "input_shape": (64, 64, 3), "variant": "imagenet"}, 4),
        # the same blocks as resnet18's imagenet layout, twice as many: 40 s of the default suite
        pytest.param("resnet34", {"width": 0.25, "input_shape": (64, 64, 3), "variant": "imagenet"}, 4,
                     marks=pytest.mark.slow),
    ],
)
def test_lce_conversion_binarizes_every_conv_and_matches_keras(name, kwargs, float_convs):
    from larq_compute_engine import testing as lce_testing  # LCE's public test interpreter
    Interpreter = lce_testing.Interpreter

    model = zoo.get_model(name, classifier_activation=None, **kwargs)
    randomize_inference_state(model)
    flatbuffer = hbnn_larq.convert_keras_model(model)
    ops = op_names(flatbuffer)
    assert ops.count("LceBconv2d") == len(binarized_layers(model))
    assert ops.count("CONV_2D") == float_convs  # stem + downsample shortcuts only
    x = np.random.default_rng(3).normal(size=(3, *model.input_shape[1:])).astype("float32")
    expected = model(x, training=False).numpy()
    actual = Interpreter(flatbuffer, num_threads=1).predict(x)
    # LCE computes the binary dot products exactly but fuses BN into a float post-multiply and
    # bias (other rounding order): its own tests compare at 1e-3.
    np.testing.assert_allclose(actual, expected, rtol=1e-3, atol=1e-3)


# -- registry and bad input --------------------------------------------------------------------
def test_registry():
    assert set(zoo.MODELS) == {"vggsmall", "resnet18", "resnet34", "quicknet_small", "quicknet", "quicknet_large",
                               "birealnet", "binary_resnet_e18"}  # larq-zoo's: tests/test_larq_zoo_models.py
    assert zoo.get_model("ResNet18", width=0.125, **FAST).name == "resnet18"
    with pytest.raises(ValueError, match="'resnet18', 'resnet34', 'vggsmall'"):
        zoo.get_model("vgg16")


@pytest.mark.parametrize(
    "name, kwargs, match",
    [
        ("resnet18", {"variant": "mobile"}, "`variant` must be one of 'cifar', 'imagenet'"),
        ("vggsmall", {"width": 0}, "`width`"),
        ("vggsmall", {"width": -0.5}, "`width`"),
        ("resnet18", {"width": "half"}, "`width`"),
        ("resnet18", {"width": True}, "`width`"),
        ("vggsmall", {"num_classes": 0}, "`num_classes`"),
        ("vggsmall", {"pad_values": 0.5}, "`pad_values`"),
        ("vggsmall", {"weights": "imagenet"}, "`weights` must be None"),
        ("resnet34", {"weights": 3}, "`weights` must be None"),
        ("vggsmall", {"kernel_quantizer": "no_such_quantizer"}, "no_such_quantizer"),
        ("vggsmall", {"kernel_quantizer": 3}, "`kernel_quantizer`"),
        ("resnet18", {"classifier_activation": "relu"}, "`classifier_activation`"),
        ("vggsmall", {"input_shape": (32, 32)}, "`input_shape`"),
    ],
)
def test_bad_arguments_raise_value_error(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        zoo.get_model(name, **kwargs)


# -- the input convention ------------------------------------------------------------------------
@pytest.mark.parametrize("name, kwargs", [("vggsmall", {}), ("resnet18", {"input_shape": (64, 64, 3), "variant": "imagenet"})])
@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_in_model_normalization_on_raw_pixels_equals_the_normalised_pipeline(name, kwargs, policy):
    """A model with `input_normalization` fed raw [0, 255] pixels computes what the same weights
    compute without it on images normalised outside (the pipeline before the normalisation moved
    into the model), in float32 under every policy."""
    mean, std = common.INPUT_STATISTICS["cifar10"]
    with hbnn_larq.precision.policy_scope(policy):
        inside = zoo.get_model(name, width=0.25, input_normalization="cifar10", **kwargs)
        outside = zoo.get_model(name, width=0.25, input_normalization=None, **kwargs)
    assert inside.layers[1].name == "input_normalization" and inside.layers[1].compute_dtype == "float32"
    randomize_inference_state(inside)
    outside.set_weights(inside.get_weights())
    raw = np.random.default_rng(0).integers(0, 256, (4, *inside.input_shape[1:])).astype("float32")
    normalised = (raw / 255.0 - np.array(mean, "float32")) / np.array(std, "float32")
    np.testing.assert_allclose(inside(raw, training=False).numpy(), outside(normalised, training=False).numpy(),
                               rtol=1e-4, atol=1e-5)


def test_converted_model_takes_raw_pixels():
    model = zoo.VGGSmall(width=0.25, input_normalization="cifar10", classifier_activation=None)
    randomize_inference_state(model)
    raw = np.random.default_rng(1).integers(0, 256, (3, 32, 32, 3)).astype("float32")
    assert_lce_matches(model, raw, binary_convs=len(binarized_layers(model)))


@pytest.mark.parametrize("value", ["mnist", (1, 2), ((0.5, 0.5), (0.2, 0.2, 0.2)), ((0, 0, 0), (1, 0, 1)), 3])
def test_bad_input_normalization_names_the_parameter(value):
    with pytest.raises(ValueError, match="`input_normalization`"):
        zoo.VGGSmall(width=0.25, input_normalization=value)


def test_mac_counts_count_depthwise_and_separable_convs_in_full_precision():
    # conv 3x3x3x8 at 14x14 (LCE binarizes it); depthwise 3x3x8 at 12x12; separable 3x3x8 + 1x1x8x8
    # at 10x10 and the dense 8x10: LCE has no binary depthwise convolution.
    assert sizes.mac_counts(separable_toy_model()) == {"binary_macs": 27 * 8 * 14 * 14,
                                                 "float_macs": 72 * 12 * 12 + (72 + 64) * 10 * 10 + 80}

