"""Small models shared by the core tests."""

from types import SimpleNamespace

import larq as lq
import numpy as np
import tensorflow as tf

import hbnn_larq


def binary_conv(filters, quantizer, **kwargs):
    options = {"padding": "same", "pad_values": 1.0, "use_bias": False, "input_quantizer": "approx_sign", **kwargs}
    return lq.layers.QuantConv2D(filters, 3, kernel_quantizer=quantizer, **options)


def tiny_model(quantizer="hyperbolic_sign", channels=(32, 32), input_shape=(8, 8, 16), classes=4, bn_momentum=0.9):
    """FP head-less stack of binarized convs + BN, a pooled FP classifier (logits).

    `quantizer`: an alias or instance shared by the convs, or a factory called per conv.
    `classes=None`: no classifier, the model returns the pooled features."""
    inputs = tf.keras.Input(input_shape)
    x = inputs
    for c in channels:
        factory = callable(quantizer) and not isinstance(quantizer, (str, tf.keras.layers.Layer))
        x = binary_conv(c, quantizer() if factory else quantizer)(x)
        x = tf.keras.layers.BatchNormalization(momentum=bn_momentum)(x)
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    outputs = x if classes is None else tf.keras.layers.Dense(classes)(x)
    return tf.keras.Model(inputs, outputs)


def one_conv_model(kernel_quantizer, channels=8):
    """One binarized conv (6×6×channels → channels) + BN (Keras' default momentum), pooled."""
    return tiny_model(kernel_quantizer, channels=(channels,), input_shape=(6, 6, channels), classes=None,
                      bn_momentum=0.99)


def separable_toy_model():
    """Every larq kernel slot, binarized by `ste_sign` (+ `weight_clip`): a conv (`kernel`), a
    depthwise conv (`depthwise_kernel`) and a separable conv (`depthwise_kernel` and
    `pointwise_kernel`), on 16×16×3 inputs, then a pooled float classifier (10 logits)."""
    def binary(*slots):
        options = {"input_quantizer": "ste_sign"}
        for slot in slots:
            options.update({f"{slot}_quantizer": "ste_sign", f"{slot}_constraint": "weight_clip"})
        return options

    inputs = tf.keras.Input((16, 16, 3))
    x = lq.layers.QuantConv2D(8, 3, name="conv", **binary("kernel"))(inputs)
    x = lq.layers.QuantDepthwiseConv2D(3, name="depthwise", **binary("depthwise"))(x)
    x = lq.layers.QuantSeparableConv2D(8, 3, name="separable", **binary("depthwise", "pointwise"))(x)
    x = tf.keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return tf.keras.Model(inputs, tf.keras.layers.Dense(10, name="dense")(x), name="separable_toy")


SEPARABLE_TOY_KERNELS = ["conv", "depthwise/depthwise_kernel", "separable/depthwise_kernel", "separable/pointwise_kernel"]


def move_points(model, seed=0, scale=0.05):
    """Every `HyperbolicSign` point of `model` (any kernel slot) to a random point of the ball."""
    rng = np.random.default_rng(seed)
    for _, q in hbnn_larq.hyperbolic_quantizers(model):
        for p in q.points:
            p.assign(q.manifold.projx(tf.constant(rng.normal(size=p.shape) * scale, tf.float32)))


def randomize_batch_norm(model, rng):
    """Random γ, β, moving mean and variance for every BN of `model` (`rng`: a seed or Generator)."""
    rng = np.random.default_rng(rng)
    for layer in model.layers:
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 2, gamma.shape), rng.normal(size=beta.shape),
                               rng.normal(size=mean.shape), rng.uniform(0.5, 2, var.shape)])


def random_data(n=64, input_shape=(8, 8, 16), classes=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, *input_shape)).astype("float32")
    y = rng.integers(0, classes, size=n)
    return x, y


def save_and_reload(model, directory, fmt, x):
    """Save `model` under `directory` as `fmt` ("h5", "keras" or "tf" SavedModel), load it back,
    check that it predicts `x` exactly as before and return the loaded model."""
    expected = model.predict(x, verbose=0)
    path = str(directory / ("model" if fmt == "tf" else f"model.{fmt}"))
    model.save(path, save_format=fmt)
    loaded = tf.keras.models.load_model(path)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), expected)
    return loaded


def assert_lce_matches(model, x, binary_convs=1):
    """Convert `model` with LCE, check its number of `LceBconv2d` ops and that the LCE interpreter
    gives the Keras outputs on `x` (one sample at a time)."""
    from larq_compute_engine import testing as lce_testing  # LCE's public test interpreter
    Interpreter = lce_testing.Interpreter

    fb = hbnn_larq.convert_keras_model(model)
    assert hbnn_larq.op_names(fb).count("LceBconv2d") == binary_convs
    interpreter = Interpreter(fb, num_threads=1)
    lce = interpreter.predict(x, verbose=0)  # one sample at a time
    np.testing.assert_allclose(lce, model.predict(x, verbose=0), rtol=1e-3, atol=1e-3)


def hbnn_composition(base, kernel, fraction, extra_variables=()):
    """`HyperbolicSign(base=base)` built for `kernel`'s shape, with random points (seed 5) and its
    base at progress `fraction`, applied to the latent weights `kernel` against a random upstream
    gradient. Returns `hq`, `latent`, `upstream`, `out`, `mapped` (the constrained weight) and
    `gradients` of `sum(upstream * out)` w.r.t. latent, point and the base's `extra_variables`."""
    hq = hbnn_larq.HyperbolicSign(base=base)
    hq.build(kernel.shape)
    rng = np.random.default_rng(5)
    hq.points[0].assign(rng.normal(0, 0.15, kernel.shape).astype(np.float32))
    hq.base.set_progress(fraction)
    latent = tf.Variable(kernel)
    upstream = rng.normal(size=kernel.shape).astype(np.float32)
    with tf.GradientTape() as tape:
        out = hq(latent)
        loss = tf.reduce_sum(out * upstream)
    gradients = tape.gradient(loss, [latent, hq.points[0], *(getattr(hq.base, name) for name in extra_variables)])
    mapped = hq.project(latent, hq.points[0]).numpy()
    return SimpleNamespace(hq=hq, latent=latent, upstream=upstream, out=out, mapped=mapped, gradients=gradients)


def assert_chain_rule(composition, base_gradient):
    """Chain rule: d/dw~ = J_exp^T (`base_gradient`, the base quantizer's gradient at the mapped weight)."""
    hq, latent = composition.hq, composition.latent
    with tf.GradientTape() as tape:
        m = hq.project(latent, hq.points[0])
    chained = tape.gradient(m, latent, output_gradients=tf.constant(base_gradient, tf.float32))
    np.testing.assert_allclose(composition.gradients[0].numpy(), chained.numpy(), rtol=5e-3,
                               atol=1e-4 * np.abs(chained).max())


def compile_hbnn(model, lr=0.1, multiplier=100.0, **kwargs):
    model.compile(
        hbnn_larq.RiemannianOptimizer(tf.keras.optimizers.SGD(lr, momentum=0.9), point_lr_multiplier=multiplier, **kwargs),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model
