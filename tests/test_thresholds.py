"""`hbnn_larq.thresholds`: batch-norm zero crossings between binary convs are centred between
attainable sums, so that Keras and LCE cannot decide them differently by rounding."""

import larq as lq
import numpy as np
import pytest
import tensorflow as tf

import hbnn_larq
from hbnn_larq.thresholds import center_binary_thresholds
from tests.helpers import assert_lce_matches


def conv(filters, pad_values=1.0, name=None):
    return lq.layers.QuantConv2D(filters, 3, padding="same", pad_values=pad_values, use_bias=False,
                                 input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                                 kernel_constraint="weight_clip", name=name)


# Channel 1 of `conv1_bn` in the demo's trained VGG-Small (docs/deployment.md): its zero crossing
# is at the binary-conv sum 22.0000017; the sums are even integers.
DEMO_TIE = {"gamma": 0.9752202, "beta": -0.08098998, "moving_mean": 18.962967, "moving_variance": 1337.3416}


def tied_model(pad_values=1.0):
    """conv(16 -> 4) -> max-pool -> BN -> conv -> BN -> dense, with BN "bn1"'s channel 0 set to the
    demo's tie (fan-in 3*3*16 = 144: even sums, like the demo's 3*3*32)."""
    inputs = tf.keras.Input((8, 8, 16))
    x = conv(4, pad_values, "conv1")(inputs)
    x = tf.keras.layers.MaxPooling2D(name="pool1")(x)
    x = tf.keras.layers.BatchNormalization(epsilon=1e-5, name="bn1")(x)  # the zoo's epsilon
    x = conv(4, pad_values, "conv2")(x)
    x = tf.keras.layers.BatchNormalization(name="bn2")(x)  # feeds a float layer: never changed
    model = tf.keras.Model(inputs, tf.keras.layers.Dense(3)(tf.keras.layers.Flatten()(x)))
    rng = np.random.default_rng(0)
    for layer in model.layers:
        for w in layer.weights:
            w.assign(rng.normal(0, 1, w.shape).astype("float32") ** (2 if "variance" in w.name else 1))
    bn = model.get_layer("bn1")
    for name, value in DEMO_TIE.items():
        values = getattr(bn, name).numpy()
        values[0] = value
        getattr(bn, name).assign(values)
    return model


def bn_signs(bn, x):
    g, b, m, v = (w.numpy().astype(np.float64) for w in (bn.gamma, bn.beta, bn.moving_mean, bn.moving_variance))
    return np.sign(g * (x[:, None] - m) / np.sqrt(v + bn.epsilon) + b)


@pytest.mark.parametrize("pad_values, step", [(1.0, 2), (0.0, 1)])
def test_every_attainable_sum_keeps_its_sign_and_crossings_sit_midway(pad_values, step):
    model = hbnn_larq.bake_quantized_kernels(tied_model(pad_values))
    bn = model.get_layer("bn1")
    attainable = np.arange(-144, 145, step, dtype=np.float64)
    before = bn_signs(bn, attainable)
    bn2_beta = model.get_layer("bn2").beta.numpy().copy()
    assert center_binary_thresholds(model) == ["bn1"]
    np.testing.assert_array_equal(bn_signs(bn, attainable), before)
    np.testing.assert_array_equal(model.get_layer("bn2").beta.numpy(), bn2_beta)
    g, b, m, v = (w.numpy().astype(np.float64) for w in (bn.gamma, bn.beta, bn.moving_mean, bn.moving_variance))
    crossing = m - b * np.sqrt(v + bn.epsilon) / g
    lattice = step * np.round(crossing / step) if step == 2 else np.round(crossing)  # even sums, or all integers
    np.testing.assert_allclose(np.abs(crossing - lattice), step / 2, atol=1e-4)  # midway between attainable sums
    assert bn_signs(bn, np.array([22.0]))[0, 0] == -1  # the tie went the way exact arithmetic says


def test_the_tied_model_converts_to_lce_that_agrees_with_keras():
    import larq_compute_engine as lce
    from larq_compute_engine import testing as lce_testing

    model = tied_model()
    x = np.random.default_rng(1).normal(size=(64, 8, 8, 16)).astype("float32")
    # Without centring, LCE decides the tie the other way: whole channels flip.
    raw = lce_testing.Interpreter(lce.convert_keras_model(hbnn_larq.bake_quantized_kernels(model))).predict(x)
    assert np.abs(raw - model.predict(x, verbose=0)).max() > 1
    assert_lce_matches(model, x, binary_convs=2)


def test_batch_norms_after_float_layers_or_before_float_layers_are_left_alone():
    inputs = tf.keras.Input((8, 8, 3))
    x = tf.keras.layers.BatchNormalization(name="bn0")(tf.keras.layers.Conv2D(4, 3, padding="same")(inputs))
    x = tf.keras.layers.BatchNormalization(name="bn1")(conv(4)(x))
    model = tf.keras.Model(inputs, tf.keras.layers.Dense(2)(tf.keras.layers.Flatten()(x)))
    assert center_binary_thresholds(hbnn_larq.bake_quantized_kernels(model)) == []
