import larq as lq
import numpy as np
import pytest
import tensorflow as tf
from larq_compute_engine import testing as lce_testing  # LCE's public test interpreter

import hbnn_larq
from hbnn_larq import HyperbolicSign
from hbnn_larq.export import BINARY_CONV_OP, bake_quantized_kernels
from hbnn_larq.manifold_parameters import manifold_constraint
from hbnn_larq.quantizers import hyperbolic_kernels
from hbnn_larq.utils import QUANTIZED_KERNELS, binarized_layers, layers
from tests.helpers import assert_lce_matches, binary_conv, move_points, separable_toy_model


def randomize_batchnorm(model, seed=0):
    """Non-trivial BN statistics, so that output equality tests the folded post-multiplier."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([
                rng.uniform(0.5, 1.5, gamma.shape), rng.normal(0, 0.5, beta.shape),
                rng.normal(0, 3.0, mean.shape), rng.uniform(5, 20, var.shape),
            ])


def conv_stack(c_in, c_out, quantizer_factory, side=6):
    inputs = tf.keras.Input((side, side, c_in))
    x = binary_conv(c_out, quantizer_factory())(inputs)
    x = tf.keras.layers.BatchNormalization()(x)
    x = binary_conv(c_out, quantizer_factory())(x)
    x = tf.keras.layers.BatchNormalization()(x)
    return tf.keras.Model(inputs, x)


@pytest.mark.parametrize("c_in, c_out", [(64, 64), (128, 256), (512, 512)])
def test_every_binarized_conv_becomes_lce_bconv2d(c_in, c_out):
    """128->256 and above cross TensorFlow's 1 MiB constant-folding limit (see `hbnn_larq.export`)."""
    model = conv_stack(c_in, c_out, HyperbolicSign)
    move_points(model)
    randomize_batchnorm(model)
    fb = hbnn_larq.convert_keras_model(model)
    ops = hbnn_larq.op_names(fb)
    assert ops.count(BINARY_CONV_OP) == 2, ops
    assert "CONV_2D" not in ops
    x = np.random.default_rng(1).normal(size=(2, 6, 6, c_in)).astype("float32")
    expected = model(x, training=False).numpy()
    got = lce_testing.Interpreter(fb, num_threads=1).predict(x[:2], verbose=0)
    # LCE's own tolerance: its accumulation order differs from TensorFlow's float conv.
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3)


def test_epc_model_exports_the_active_chart():
    model = conv_stack(32, 32, lambda: HyperbolicSign(cluster_size=3, cluster_radius=0.5, seed=2))
    for _, q in hbnn_larq.hyperbolic_quantizers(model):
        q.active_index.assign(2)
    randomize_batchnorm(model)
    fb = hbnn_larq.convert_keras_model(model)
    assert hbnn_larq.op_names(fb).count(BINARY_CONV_OP) == 2
    x = np.random.default_rng(1).normal(size=(1, 6, 6, 32)).astype("float32")
    np.testing.assert_allclose(lce_testing.Interpreter(fb).predict(x), model(x, training=False).numpy(), rtol=1e-3, atol=1e-3)


def test_baked_model_has_no_points_and_the_same_function():
    model = conv_stack(16, 16, HyperbolicSign)
    move_points(model)
    baked = bake_quantized_kernels(model)
    assert not any("point" in v.name for v in baked.weights)
    x = np.random.default_rng(0).normal(size=(3, 6, 6, 16)).astype("float32")
    np.testing.assert_array_equal(baked(x, training=False).numpy(), model(x, training=False).numpy())
    for layer in binarized_layers(baked):
        assert set(np.unique(layer.kernel.numpy())) <= {-1.0, 1.0}


def test_depthwise_and_pointwise_kernels_are_baked_too():
    """Every kernel slot is baked: no quantizer, no constraint, ±1 values. LCE has no binary
    depthwise op: the depthwise and separable convs convert to float convs on ±1 weights."""
    model = separable_toy_model()
    hbnn = hbnn_larq.hyperbolize(model)
    move_points(hbnn, scale=0.5)  # off the origin: the binary kernels are no longer sign(w~)
    x = np.random.default_rng(0).normal(size=(4, 16, 16, 3)).astype("float32")
    assert not np.array_equal(hbnn(x, training=False).numpy(), model(x, training=False).numpy())
    for source in (model, hbnn):
        baked = bake_quantized_kernels(source)
        for layer in layers(baked):
            for slot in QUANTIZED_KERNELS:
                assert getattr(layer, slot.quantizer, None) is None and getattr(layer, slot.constraint, None) is None
        assert not any(manifold_constraint(v) is not None for v in baked.weights)  # no HBNN point left
        np.testing.assert_array_equal(baked(x, training=False).numpy(), source(x, training=False).numpy())
    for kernel in hyperbolic_kernels(hbnn):
        value = getattr(baked.get_layer(kernel.layer.name), kernel.slot.kernel).numpy()
        assert set(np.unique(value)) == {-1.0, 1.0}, kernel.name
        np.testing.assert_array_equal(value, kernel.quantized())
    assert_lce_matches(hbnn, x, binary_convs=1)  # only the QuantConv2D is an LceBconv2d


def test_ste_baseline_converts_too():
    model = conv_stack(64, 64, lambda: "ste_sign")
    assert hbnn_larq.op_names(hbnn_larq.convert_keras_model(model)).count(BINARY_CONV_OP) == 2


@lq.utils.register_keras_custom_object
class PerInputChannelScale(lq.quantizers.Quantizer):
    """A kernel quantizer LCE cannot binarize: a scale per *input* channel."""

    precision = 1

    def call(self, w):
        return lq.quantizers.ste_sign(w) * tf.range(1.0, w.shape[2] + 1.0)[None, None, :, None]


def test_strict_conversion_refuses_a_silent_float_conv():
    model = conv_stack(32, 32, PerInputChannelScale)
    with pytest.raises(RuntimeError, match="LceBconv2d"):
        hbnn_larq.convert_keras_model(model)
    fb = hbnn_larq.convert_keras_model(model, strict=False)
    assert hbnn_larq.op_names(fb).count(BINARY_CONV_OP) == 0


def test_convert_rejects_non_models():
    with pytest.raises(ValueError, match="`model`"):
        hbnn_larq.convert_keras_model("model.h5")


@pytest.mark.parametrize("size", [1, 2])
def test_zero_padded_bconv_on_a_map_smaller_than_its_kernel_is_refused(size):
    """LCE 0.16 gets these wrong (the raw converter's output is compared to show it); ones-padding
    or a map as large as the kernel converts exactly."""
    import larq_compute_engine as lce
    from larq_compute_engine import testing as lce_testing

    def model(side, pad):
        inputs = tf.keras.Input((side, side, 64))
        conv = lq.layers.QuantConv2D(32, 3, padding="same", pad_values=pad, use_bias=False, input_quantizer="ste_sign",
                                     kernel_quantizer="ste_sign", name="small_map_conv")
        return tf.keras.Model(inputs, conv(inputs))

    bad = model(size, 0.0)
    x = np.random.default_rng(0).normal(size=(2, size, size, 64)).astype("float32")
    raw = lce_testing.Interpreter(lce.convert_keras_model(hbnn_larq.bake_quantized_kernels(bad))).predict(x)
    assert np.abs(raw - bad.predict(x, verbose=0)).max() > 1  # the bug the guard is for
    with pytest.raises(ValueError, match="small_map_conv.*pad_values=1.0"):
        hbnn_larq.convert_keras_model(bad)
    for fine in (model(size, 1.0), model(3, 0.0)):
        fb = hbnn_larq.convert_keras_model(fine)
        xs = np.random.default_rng(1).normal(size=(2, *fine.input_shape[1:])).astype("float32")
        np.testing.assert_allclose(lce_testing.Interpreter(fb).predict(xs), fine.predict(xs, verbose=0), atol=1e-4)
