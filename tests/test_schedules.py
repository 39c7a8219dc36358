"""QuantizerSchedule: progress fractions, discovery of scheduled quantizers, updates during fit."""

import math

import larq as lq
import numpy as np
import pytest
import tensorflow as tf

import hbnn_larq
from hbnn_larq.schedules import QuantizerSchedule, scheduled_quantizers
from hbnn_larq.training import recipes
from tests.helpers import separable_toy_model


def ir_net_t(f, t_min=0.1, t_max=10.0):  # IR-Net Log_UP
    return 10 ** (math.log10(t_min) + f * (math.log10(t_max) - math.log10(t_min)))


def recu_tau(f, tau_min=0.85, tau_max=0.99):  # ReCU cpt_tau
    A = (tau_max - tau_min) / (math.e - 1)
    return A * math.e**f + tau_min - A


def model_with(recipe_names, channels=8):
    inputs = tf.keras.Input((5, 5, channels))
    x = inputs
    for name in recipe_names:  # a recipe name or a quantizer instance
        x = lq.layers.QuantConv2D(
            channels, 3, padding="same", pad_values=1.0, use_bias=False, input_quantizer="approx_sign",
            kernel_quantizer=recipes.kernel_quantizer(name) if isinstance(name, str) else name,
            kernel_constraint=recipes.kernel_constraint(name) if isinstance(name, str) else None,
        )(x)
        x = tf.keras.layers.BatchNormalization()(x)
    outputs = tf.keras.layers.Dense(2)(tf.keras.layers.GlobalAveragePooling2D()(x))
    return tf.keras.Model(inputs, outputs)


def test_progress_fractions():
    assert [QuantizerSchedule(4).progress(e) for e in range(6)] == [0, 0.25, 0.5, 0.75, 1.0, 1.0]
    assert [QuantizerSchedule(5, endpoint=True).progress(e) for e in range(5)] == [0, 0.25, 0.5, 0.75, 1.0]
    assert QuantizerSchedule(1, endpoint=True).progress(0) == 0.0
    assert QuantizerSchedule(1).progress(0) == 0.0


@pytest.mark.parametrize("total", [0, -3, 2.5, "10", True])
def test_bad_total_epochs(total):
    with pytest.raises(ValueError, match="total_epochs"):
        QuantizerSchedule(total)


def test_bad_epoch():
    with pytest.raises(ValueError, match="epoch"):
        QuantizerSchedule(3).progress(-1)


def test_finds_kernel_quantizers_and_bases():
    model = model_with(["ir_net", "recu+hbnn", "ste_sign", "hbnn"])
    found = scheduled_quantizers(model)
    assert [type(q).__name__ for q in found] == ["IRNetSign", "ReCUSign"]
    assert found[1] is model.layers[3].kernel_quantizer.base
    assert scheduled_quantizers(model_with(["ste_sign", "hbnn"])) == []


class Recorder(tf.keras.callbacks.Callback):
    """Records the schedule variables as the training step sees them (after QuantizerSchedule)."""

    def __init__(self, quantizers):
        super().__init__()
        self.quantizers, self.values = quantizers, []

    def on_train_batch_begin(self, batch, logs=None):
        if batch == 0:
            self.values.append([float(getattr(q, "t", getattr(q, "tau", None)).numpy()) for q in self.quantizers])


def test_updates_variables_during_fit():
    model = model_with(["ir_net", "recu+hbnn"])
    quantizers = scheduled_quantizers(model)
    model.compile(hbnn_larq.RiemannianOptimizer(tf.keras.optimizers.SGD(0.01)), "mse")
    recorder = Recorder(quantizers)
    x = np.random.default_rng(0).normal(size=(8, 5, 5, 8)).astype(np.float32)
    y = np.zeros((8, 2), np.float32)
    schedule = QuantizerSchedule(4)
    model.fit(x, y, epochs=3, batch_size=8, verbose=0, callbacks=[schedule, recorder])
    expected = [[ir_net_t(e / 4), recu_tau(e / 4)] for e in range(3)]
    np.testing.assert_allclose(recorder.values, expected, rtol=1e-6)
    assert schedule.fraction == 0.5
    # resuming continues the schedule from the absolute epoch
    model.fit(x, y, epochs=4, initial_epoch=3, batch_size=8, verbose=0, callbacks=[schedule])
    assert float(quantizers[0].t.numpy()) == pytest.approx(ir_net_t(0.75), rel=1e-6)
    assert float(quantizers[1].tau.numpy()) == pytest.approx(recu_tau(0.75), rel=1e-6)


def test_graph_sees_updates_in_fit():
    """The compiled train step reads the variable: the loss changes when only tau changes
    (with `scale="mean"` the forward pass depends on tau through the clamped mean)."""
    model = model_with([hbnn_larq.ReCUSign(scale="mean")])
    model.compile(tf.keras.optimizers.SGD(0.0), "mse")  # lr 0: only the schedule changes
    x = np.random.default_rng(1).normal(size=(16, 5, 5, 8)).astype(np.float32)
    y = np.ones((16, 2), np.float32)
    losses = model.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[QuantizerSchedule(2, endpoint=True)])
    q = scheduled_quantizers(model)[0]
    assert float(q.tau.numpy()) == pytest.approx(0.99)
    first, second = losses.history["loss"]
    assert first != second


def test_harmless_without_scheduled_quantizers():
    model = model_with(["ste_sign", "hbnn"])
    model.compile(hbnn_larq.RiemannianOptimizer(tf.keras.optimizers.SGD(0.01)), "mse")
    x = np.random.default_rng(0).normal(size=(4, 5, 5, 8)).astype(np.float32)
    model.fit(x, np.zeros((4, 2), np.float32), epochs=2, verbose=0, callbacks=[hbnn_larq.QuantizerSchedule(2)])


def test_depthwise_and_pointwise_quantizers_are_scheduled_too():
    model = hbnn_larq.hyperbolize(separable_toy_model(), base="ir_net")
    assert [type(q).__name__ for q in scheduled_quantizers(model)] == ["IRNetSign"] * 4
