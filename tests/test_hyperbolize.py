"""`hbnn_larq.hyperbolize`: any larq BNN (larq-zoo's included) becomes an HBNN with the same
architecture, weights and, at the origin, predictions; it trains, saves and deploys."""

import larq as lq
import larq_zoo
import numpy as np
import pytest
import tensorflow as tf

import hbnn_larq
from hbnn_larq import HyperbolicSign, hyperbolize
from hbnn_larq.manifold_parameters import manifold_constraint
from hbnn_larq.precision import policy_scope
from hbnn_larq.recu import ReCUSign
from hbnn_larq.export import bake_quantized_kernels
from hbnn_larq.quantizers import hyperbolic_kernels
from hbnn_larq.utils import QUANTIZED_KERNELS, binarized_layers, layers, own_weights, quantized_kernel
from tests.helpers import SEPARABLE_TOY_KERNELS, assert_lce_matches, separable_toy_model


# -- models and helpers --------------------------------------------------------------------------
def nested_toy_model():
    """A Sequential block (binary conv + BN) inside a functional model with a binary depthwise
    conv, a full-precision QuantConv2D, a 1-bit {0, 1} kernel, and a binary dense: every binary
    kernel is a plain sign, so predictions are exactly equal at the origin."""
    block = tf.keras.Sequential([
        tf.keras.Input((8, 8, 16)),
        lq.layers.QuantConv2D(16, 3, padding="same", pad_values=1.0, use_bias=False, input_quantizer="ste_sign",
                              kernel_quantizer="ste_sign", kernel_constraint="weight_clip", name="block_conv"),
        tf.keras.layers.BatchNormalization(name="block_bn"),
    ], name="block")
    inputs = tf.keras.Input((8, 8, 16))
    x = block(inputs)
    x = lq.layers.QuantDepthwiseConv2D(3, padding="same", use_bias=False, input_quantizer="ste_sign",
                                       depthwise_quantizer=lq.quantizers.SteSign(clip_value=1.25),
                                       depthwise_constraint=lq.constraints.WeightClip(1.25),
                                       name="depthwise")(x)
    x = lq.layers.QuantConv2D(8, 1, name="fp_conv")(x)  # no quantizer: full precision
    x = lq.layers.QuantConv2D(8, 1, kernel_quantizer="ste_heaviside", name="heaviside_conv")(x)  # {0, 1}: not a sign
    x = tf.keras.layers.BatchNormalization(name="bn")(x)
    x = tf.keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = lq.layers.QuantDense(4, input_quantizer="ste_sign", kernel_quantizer=lq.quantizers.ste_sign,
                             kernel_constraint="weight_clip", name="dense")(x)
    return tf.keras.Model(inputs, x, name="toy")


BINARY_TOY_LAYERS = {"block_conv": "kernel_quantizer", "depthwise": "depthwise_quantizer", "dense": "kernel_quantizer"}


def randomize(model, seed=0):
    """Random BN statistics and affine parameters and latent kernels of both signs (nested too)."""
    rng = np.random.default_rng(seed)
    for layer in layers(model):
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            for v in layer.weights:
                kind = v.name.split("/")[-1].split(":")[0]
                low_high = (0.5, 2.0) if kind in ("gamma", "moving_variance") else None
                value = rng.uniform(*low_high, v.shape) if low_high else rng.normal(0, 0.5, v.shape)
                v.assign(value.astype("float32"))
    return model


def logits(model):
    """`model` without its final softmax (exact comparisons on saturated probabilities hide nothing)."""
    return tf.keras.Model(model.inputs, model.layers[-1].input)


def images(side, n=2, seed=1):
    return np.random.default_rng(seed).normal(size=(n, side, side, 3)).astype("float32")


def point_values(model):
    """Every Poincaré-ball point of `model` (of kernel and depthwise quantizers alike)."""
    return [v.numpy().copy() for v in model.variables if manifold_constraint(v) is not None]


# -- the nested toy model --------------------------------------------------------------------------
def test_toy_model_same_architecture_weights_and_predictions():
    model = randomize(nested_toy_model())
    hbnn = hyperbolize(model, r=0.05)
    assert [(type(a).__name__, a.name) for a in layers(model)] == [(type(b).__name__, b.name) for b in layers(hbnn)]
    assert isinstance(hbnn.get_layer("block"), tf.keras.Sequential)
    for source, target in zip(layers(model), layers(hbnn)):
        attribute = BINARY_TOY_LAYERS.get(target.name)
        if attribute:
            assert isinstance(getattr(target, attribute), HyperbolicSign)
            assert getattr(target, attribute.replace("quantizer", "constraint")) is None
            assert not isinstance(getattr(source, attribute), HyperbolicSign)  # the original is untouched
        for name in ("kernel_quantizer", "input_quantizer"):
            if not (attribute == name):
                assert type(getattr(source, name, None)) is type(getattr(target, name, None)), (target.name, name)
        weights = [w for w in target.weights if "point" not in w.name and "active_index" not in w.name]
        assert len(weights) == len(source.weights)
        for a, b in zip(source.weights, weights):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert len(hbnn_larq.hyperbolic_quantizers(hbnn)) == 3  # block_conv, dense and the depthwise one
    assert not any(isinstance(getattr(layer, "kernel_quantizer", None), HyperbolicSign) for layer in layers(model))
    x = np.random.default_rng(0).normal(size=(8, 8, 8, 16)).astype("float32")
    np.testing.assert_array_equal(hbnn(x, training=False).numpy(), model(x, training=False).numpy())
    # The binary kernels themselves are equal: sign(exp_0(w~)) = sign(w~).
    np.testing.assert_array_equal(quantized_kernel(hbnn.get_layer("block").get_layer("block_conv")),
                                  quantized_kernel(model.get_layer("block").get_layer("block_conv")))


def test_nested_toy_model_deploys():
    """The nested binary conv becomes an `LceBconv2d`; LCE's outputs are Keras' (depthwise and
    dense have no binary LCE kernel and run as float ops on the ±1 weights)."""
    hbnn = hyperbolize(randomize(nested_toy_model()))
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 16)).astype("float32")
    assert_lce_matches(hbnn, x, binary_convs=1)


def test_sequential_model_stays_sequential_and_predicts_the_same():
    model = tf.keras.Sequential([
        tf.keras.Input((6, 6, 8)),
        lq.layers.QuantConv2D(8, 3, padding="same", pad_values=1.0, use_bias=False, input_quantizer="approx_sign",
                              kernel_quantizer=lq.quantizers.SteSign(clip_value=1.25),
                              kernel_constraint=lq.constraints.WeightClip(1.25)),
        tf.keras.layers.BatchNormalization(),
    ])
    randomize(model)
    hbnn = hyperbolize(model)
    assert isinstance(hbnn, tf.keras.Sequential)
    x = np.random.default_rng(0).normal(size=(4, 6, 6, 8)).astype("float32")
    np.testing.assert_array_equal(hbnn(x, training=False).numpy(), model(x, training=False).numpy())


def test_one_training_step_with_riemannian_optimizer_moves_the_points():
    hbnn = hyperbolize(randomize(nested_toy_model()))
    assert all(np.all(p == 0) for p in point_values(hbnn))  # chart 0 starts at the origin
    hbnn.compile(hbnn_larq.RiemannianOptimizer(tf.keras.optimizers.SGD(0.1)),
                 loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True), run_eagerly=True)
    latent = hbnn.get_layer("dense").kernel.numpy().copy()
    x = np.random.default_rng(0).normal(size=(16, 8, 8, 16)).astype("float32")
    y = np.arange(16) % 4
    hbnn.train_on_batch(x, y)
    moved = [np.linalg.norm(p) for p in point_values(hbnn)]
    assert len(moved) == 3 and all(norm > 0 for norm in moved), moved
    assert not np.array_equal(hbnn.get_layer("dense").kernel.numpy(), latent)


def test_nested_toy_model_bakes_every_binary_kernel_nested_ones_included():
    hbnn = hyperbolize(randomize(nested_toy_model()))
    baked = bake_quantized_kernels(hbnn)
    for layer in layers(baked):
        assert all(getattr(layer, slot.quantizer, None) is None for slot in QUANTIZED_KERNELS), layer.name
    assert not any(manifold_constraint(v) is not None for v in baked.variables)  # no point left
    block_conv = baked.get_layer("block").get_layer("block_conv")
    np.testing.assert_array_equal(block_conv.kernel.numpy(),
                                  quantized_kernel(hbnn.get_layer("block").get_layer("block_conv")))
    x = np.random.default_rng(0).normal(size=(4, 8, 8, 16)).astype("float32")
    np.testing.assert_array_equal(baked(x, training=False).numpy(), hbnn(x, training=False).numpy())


# -- every kernel slot: conv, depthwise conv, separable conv ---------------------------------------
def test_every_kernel_slot_becomes_a_hyperbolic_sign_and_keeps_its_own_weights():
    model = separable_toy_model()
    hbnn = hyperbolize(model, seed=1)
    assert [k.name for k in hyperbolic_kernels(hbnn)] == SEPARABLE_TOY_KERNELS
    assert [(layer.name, type(q)) for layer, q in hbnn_larq.hyperbolic_quantizers(hbnn)] == [
        ("conv", HyperbolicSign), ("depthwise", HyperbolicSign), ("separable", HyperbolicSign),
        ("separable", HyperbolicSign)]
    for name in ("depthwise", "separable"):
        source, target = model.get_layer(name), hbnn.get_layer(name)
        assert len(target.weights) > len(own_weights(target))  # the points are the layer's weights ...
        assert [v.name for v in own_weights(target)] == [v.name for v in own_weights(source)]  # ... not its own
        for a, b in zip(own_weights(source), own_weights(target)):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    x = images(16, n=4)
    np.testing.assert_array_equal(hbnn(x, training=False).numpy(), model(x, training=False).numpy())


def test_depthwise_and_pointwise_points_get_a_riemannian_step_and_stay_in_the_ball():
    hbnn = hyperbolize(separable_toy_model(), r=1.0)
    optimizer = hbnn_larq.RiemannianOptimizer(tf.keras.optimizers.SGD(10.0), point_lr_multiplier=1e4)
    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with tf.GradientTape() as tape:
        loss = loss_fn(np.arange(8) % 10, hbnn(images(16, n=8), training=True))
    optimizer.apply_gradients(zip(tape.gradient(loss, hbnn.trainable_weights), hbnn.trainable_weights))
    kernels = hyperbolic_kernels(hbnn)
    assert len(kernels) == 4
    for kernel in kernels:
        point = kernel.quantizer.points[0].numpy()
        assert np.linalg.norm(point) > 0.5, kernel.name  # a large step: it reached the edge of the ball ...
        assert np.linalg.norm(point) < 1.0, kernel.name  # ... and was kept inside (radius 1 / sqrt(r) = 1)


def test_serialization_round_trip(tmp_path):
    hbnn = hyperbolize(randomize(nested_toy_model()), r=0.1, cluster_size=2, seed=3)
    for _, quantizer in hbnn_larq.hyperbolic_quantizers(hbnn):
        quantizer.points[0].assign(quantizer.manifold.projx(tf.random.normal(quantizer.points[0].shape) * 0.3))
    x = np.random.default_rng(0).normal(size=(4, 8, 8, 16)).astype("float32")
    expected = hbnn(x, training=False).numpy()
    hbnn.save(tmp_path / "model.keras")
    loaded = tf.keras.models.load_model(tmp_path / "model.keras")
    np.testing.assert_array_equal(loaded(x, training=False).numpy(), expected)
    quantizer = loaded.get_layer("dense").kernel_quantizer
    assert isinstance(quantizer, HyperbolicSign) and (quantizer.r, quantizer.cluster_size) == (0.1, 2)
    for a, b in zip(point_values(hbnn), point_values(loaded)):
        np.testing.assert_array_equal(a, b)


def test_seed_is_offset_per_layer_and_kwargs_reach_every_quantizer():
    hbnn = hyperbolize(nested_toy_model(), cluster_size=3, cluster_init="random", cluster_radius=0.5, seed=7,
                       grouping="channel")
    quantizers = [getattr(layer, attribute) for layer in layers(hbnn)
                  for attribute in ("kernel_quantizer", "depthwise_quantizer")
                  if isinstance(getattr(layer, attribute, None), HyperbolicSign)]
    assert [q.seed for q in quantizers] == [7, 8, 9]
    assert all(q.cluster_size == 3 and q.grouping == "channel" for q in quantizers)
    first = [p.numpy() for p in quantizers[0].points]
    assert not np.allclose(first[1], first[2])


def test_dtype_policy_is_preserved():
    with policy_scope("mixed_bfloat16"):
        model = randomize(nested_toy_model())
    hbnn = hyperbolize(model)  # outside the scope: the global policy is float32 again
    for source, target in zip(layers(model), layers(hbnn)):
        assert target.dtype_policy.name == source.dtype_policy.name, target.name
    conv = hbnn.get_layer("block").get_layer("block_conv")
    assert conv.dtype_policy.name == "mixed_bfloat16"
    assert conv.kernel_quantizer.points[0].dtype == tf.float32  # quantizer state stays float32
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 16)).astype("float32")
    np.testing.assert_array_equal(hbnn(x, training=False).numpy(), model(x, training=False).numpy())


def test_keep_scale_uses_a_copy_of_the_original_binarizer_and_its_state():
    inputs = tf.keras.Input((6, 6, 8))
    x = lq.layers.QuantConv2D(8, 3, padding="same", pad_values=1.0, use_bias=False, input_quantizer="ste_sign",
                              kernel_quantizer=ReCUSign(), name="conv")(inputs)
    model = tf.keras.Model(inputs, x)
    original = model.get_layer("conv").kernel_quantizer
    original.alpha.assign(tf.fill(original.alpha.shape, 0.37))  # a learned scale and a schedule: state
    original.tau.assign(0.9)
    hbnn = hyperbolize(model, keep_scale=True)
    base = hbnn.get_layer("conv").kernel_quantizer.base
    assert isinstance(base, ReCUSign) and base is not original
    assert len(base.weights) == len(original.weights) == 2
    for a, b in zip(original.weights, base.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert hyperbolize(model).get_layer("conv").kernel_quantizer.base is None  # default: the plain sign


def exp0_factor(latent, r):
    """\\(c = \\tanh(\\sqrt r\\|\\tilde w\\|)/(\\sqrt r\\|\\tilde w\\|)\\): \\(\\exp_0(\\tilde w) = c\\,\\tilde w\\)."""
    norm = np.sqrt(r) * np.linalg.norm(latent.astype(np.float64))
    return np.tanh(norm) / norm


def test_scaled_sign_drops_its_scale_unless_keep_scale():
    """`magnitude_aware_sign` is α_o·sign(w~): by default the kernel becomes sign(w~) (±1), with
    `keep_scale` it is α_o(c·w~)·sign(w~) = c·α_o·sign(w~), c the per-layer factor of exp_0."""
    inputs = tf.keras.Input((6, 6, 8))
    x = lq.layers.QuantConv2D(16, 3, padding="same", pad_values=1.0, use_bias=False, input_quantizer="approx_sign",
                              kernel_quantizer="magnitude_aware_sign", kernel_constraint="weight_clip",
                              name="conv")(inputs)
    model = tf.keras.Model(inputs, x)
    source = model.get_layer("conv")
    original = quantized_kernel(source)
    assert len(np.unique(np.abs(original))) > 1  # really scaled
    plain = hyperbolize(model).get_layer("conv")
    np.testing.assert_array_equal(quantized_kernel(plain), np.sign(original))
    scaled = hyperbolize(model, keep_scale=True, r=0.05).get_layer("conv")
    assert isinstance(scaled.kernel_quantizer.base, lq.quantizers.MagnitudeAwareSign)
    c = exp0_factor(source.kernel.numpy(), 0.05)
    assert c < 0.99
    np.testing.assert_allclose(quantized_kernel(scaled), c * original, rtol=1e-5)


# -- larq-zoo models ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_quicknet_small_identical_at_the_origin_and_deploys():
    model = randomize(larq_zoo.sota.QuickNetSmall(input_shape=(64, 64, 3), num_classes=10, weights=None))
    hbnn = hyperbolize(model)
    assert [type(layer) for layer in model.layers] == [type(layer) for layer in hbnn.layers]
    # The new parameters are the points (one per binary weight) and the 16 active-chart indices.
    assert hbnn.count_params() == model.count_params() + sum(p.size for p in point_values(hbnn)) + 16
    binary = binarized_layers(hbnn)
    assert len(binary) == 16 and all(isinstance(layer.kernel_quantizer, HyperbolicSign) for layer in binary)
    assert all(layer.kernel_constraint is None for layer in binary)
    assert all(isinstance(layer.input_quantizer, lq.quantizers.SteSign) for layer in binary)
    assert hbnn.layers[1].kernel_quantizer is None  # QuickNet's full-precision stem conv
    x = images(64)
    np.testing.assert_array_equal(logits(hbnn)(x, training=False).numpy(), logits(model)(x, training=False).numpy())
    assert_lce_matches(hbnn, x, binary_convs=16)


@pytest.mark.slow
def test_quicknet_small_trains_one_step():
    hbnn = hyperbolize(larq_zoo.sota.QuickNetSmall(input_shape=(32, 32, 3), num_classes=4, weights=None))
    hbnn.compile(hbnn_larq.RiemannianOptimizer(tf.keras.optimizers.SGD(0.1)), loss="sparse_categorical_crossentropy",
                 run_eagerly=True)
    hbnn.train_on_batch(images(32, n=4), np.arange(4))
    norms = [np.linalg.norm(p) for p in point_values(hbnn)]
    assert len(norms) == 16 and all(norm > 0 for norm in norms)


@pytest.mark.slow
def test_birealnet_scaled_sign_with_and_without_keep_scale():
    """Bi-Real Net's `magnitude_aware_sign` is α_o·sign(w~): the default drops α_o (±1 kernels with
    the same signs); `keep_scale` keeps it, times the per-layer factor c of exp_0. 96 px: LCE
    computes zero-padded binary convs wrongly on inputs smaller than the kernel (2×2 at 64 px)."""
    model = randomize(larq_zoo.literature.BiRealNet(input_shape=(96, 96, 3), num_classes=10, weights=None))
    plain, scaled = hyperbolize(model), hyperbolize(model, keep_scale=True, r=0.05)
    for source, p, s in zip(binarized_layers(model), binarized_layers(plain), binarized_layers(scaled)):
        original = quantized_kernel(source)
        assert isinstance(source.kernel_quantizer, lq.quantizers.MagnitudeAwareSign)
        assert isinstance(s.kernel_quantizer.base, lq.quantizers.MagnitudeAwareSign)
        np.testing.assert_array_equal(quantized_kernel(p), np.sign(original))
        c = exp0_factor(source.kernel.numpy(), 0.05)
        assert c < 1
        np.testing.assert_allclose(quantized_kernel(s), c * original, rtol=1e-5)
    assert len(binarized_layers(plain)) == 16
    assert_lce_matches(plain, images(96), binary_convs=16)


# -- bad input -----------------------------------------------------------------------------------
def full_precision_model():
    inputs = tf.keras.Input((4, 4, 3))
    x = lq.layers.QuantConv2D(4, 3, input_quantizer="ste_sign")(inputs)  # binary activations, FP kernel
    x = lq.layers.QuantConv2D(4, 1, kernel_quantizer=lq.quantizers.NoOp(precision=1))(x)  # a tag, not a sign
    x = lq.layers.QuantConv2D(4, 1, kernel_quantizer="ste_heaviside")(x)
    return tf.keras.Model(inputs, tf.keras.layers.Dense(2)(x))


class Subclassed(tf.keras.Model):
    def __init__(self):
        super().__init__()
        self.conv = lq.layers.QuantConv2D(4, 3, kernel_quantizer="ste_sign", kernel_constraint="weight_clip")

    def call(self, inputs):
        return self.conv(inputs)


@pytest.mark.parametrize(
    "make_model, kwargs, match",
    [
        (full_precision_model, {}, "no binary kernel"),
        (nested_toy_model, {"radius": 0.05}, "Unknown `HyperbolicSign` argument.*'radius'.*accepted: r, boundary"),
        (nested_toy_model, {"r": -1.0}, "`r` must be a finite float > 0"),
        (nested_toy_model, {"cluster_size": 0}, "`cluster_size`"),
        (nested_toy_model, {"grouping": "filter"}, "`grouping` must be one of 'layer', 'channel'"),
        (nested_toy_model, {"seed": 1.5}, "`seed`"),
        (nested_toy_model, {"keep_scale": True, "base": "ste_sign"}, "either `keep_scale=True`"),
        (lambda: hyperbolize(nested_toy_model()), {}, "already hyperbolic: block_conv, depthwise, dense"),
        (lambda: np.zeros(3), {}, "`model` must be a tf.keras.Model"),
    ],
)
def test_bad_input_raises_a_clear_value_error(make_model, kwargs, match):
    with pytest.raises(ValueError, match=match):
        hyperbolize(make_model(), **kwargs)


def test_subclassed_model_is_refused_clearly():
    model = Subclassed()
    model(tf.zeros((1, 6, 6, 3)))
    with pytest.raises(ValueError, match="subclassed Subclassed; only Functional and Sequential"):
        hyperbolize(model)
