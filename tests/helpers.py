"""Small models shared by the core tests."""

import larq as lq
import numpy as np
import tensorflow as tf

import hbnn_larq


def binary_conv(filters, quantizer, **kwargs):
    return lq.layers.QuantConv2D(
        filters, 3, padding="same", pad_values=1.0, use_bias=False,
        input_quantizer="approx_sign", kernel_quantizer=quantizer, **kwargs,
    )


def tiny_model(quantizer="hyperbolic_sign", channels=(32, 32), input_shape=(8, 8, 16), classes=4):
    """FP head-less stack of binarized convs + BN, a pooled FP classifier (logits)."""
    inputs = tf.keras.Input(input_shape)
    x = inputs
    for c in channels:
        q = quantizer() if callable(quantizer) and not isinstance(quantizer, str) else quantizer
        x = binary_conv(c, q)(x)
        x = tf.keras.layers.BatchNormalization(momentum=0.9)(x)
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    outputs = tf.keras.layers.Dense(classes)(x)
    return tf.keras.Model(inputs, outputs)


def random_data(n=64, input_shape=(8, 8, 16), classes=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, *input_shape)).astype("float32")
    y = rng.integers(0, classes, size=n)
    return x, y


def compile_hbnn(model, lr=0.1, multiplier=100.0, **kwargs):
    model.compile(
        hbnn_larq.RiemannianOptimizer(tf.keras.optimizers.SGD(lr, momentum=0.9), point_lr_multiplier=multiplier, **kwargs),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model
