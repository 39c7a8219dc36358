"""IRNetSign: forward/backward vs NumPy references of IR-Net's formulas, schedule, saving, LCE."""

import math

import larq as lq
import numpy as np
import pytest
import tensorflow as tf

import hbnn_larq
from hbnn_larq.ir_net import IRNetSign, ede_sign
from hbnn_larq.training import recipes
from tests.helpers import (
    assert_chain_rule, assert_lce_matches, hbnn_composition, one_conv_model, randomize_batch_norm, save_and_reload,
)

KERNEL_SHAPE = (3, 3, 4, 6)


# -- NumPy references (htqin/IR-Net: modules/ir_1w1a.py, binaryfunction.py, main.py Log_UP) -----
def np_sign(x):
    return np.where(x >= 0, 1.0, -1.0)


def np_standardize(w, eps=1e-12):
    flat = w.reshape(-1, w.shape[-1]).astype(np.float64)
    c = flat - flat.mean(0)
    sigma = np.sqrt(c.var(0, ddof=1) + eps)
    return c / sigma, sigma


def np_irnet_forward(w):
    bw, _ = np_standardize(w)
    scale = 2.0 ** np.round(np.log(np.abs(bw).mean(0)) / math.log(2))
    return (np_sign(bw) * scale).reshape(w.shape), scale


def np_log_up(fraction, t_min=0.1, t_max=10.0):
    lo, hi = math.log(t_min) / math.log(10), math.log(t_max) / math.log(10)
    return math.pow(10, lo + (hi - lo) * fraction)


def np_irnet_grad(w, upstream, t):
    """dL/dw for L = sum(upstream * q(w)): EDE through the sign, autodiff through mean/std."""
    bw, sigma = np_standardize(w)
    _, scale = np_irnet_forward(w)
    k = max(1.0 / t, 1.0)
    g = upstream.reshape(bw.shape) * scale * k * t * (1 - np.tanh(t * bw) ** 2)  # dL/d(bw)
    n = bw.shape[0]
    gw = (g - g.mean(0) - bw * (g * bw).sum(0) / (n - 1)) / sigma
    return gw.reshape(w.shape)


def quantize_with_grad(quantizer, w, upstream):
    w = tf.Variable(w)
    with tf.GradientTape() as tape:
        q = quantizer(w)
        loss = tf.reduce_sum(q * upstream)
    return q.numpy(), tape.gradient(loss, w).numpy()


def random_kernel(seed=0, shape=KERNEL_SHAPE):
    rng = np.random.default_rng(seed)
    # non-zero per-filter means and different stds, so that standardization matters
    return (rng.normal(size=shape) * rng.uniform(0.01, 0.1, shape[-1]) + rng.normal(0, 0.05, shape[-1])).astype(
        np.float32
    )


# -- forward / backward -------------------------------------------------------------------------
def test_forward_is_scaled_sign_of_balanced_weights():
    w = random_kernel()
    q = IRNetSign()
    out = q(tf.constant(w)).numpy()
    expected, scale = np_irnet_forward(w)
    np.testing.assert_array_equal(out, expected.astype(np.float32))
    # exactly +-scale_o per output channel, and the scale is a power of two
    for o in range(w.shape[-1]):
        assert set(np.unique(np.abs(out[..., o]))) == {np.float32(scale[o])}
        assert float(np.log2(scale[o])).is_integer()


def test_power_of_two_scale_differs_from_one_when_filters_are_skewed():
    w = np.zeros(KERNEL_SHAPE, np.float32)
    w[0, 0, 0, :] = 1.0  # one outlier per filter: mean|w_hat| = 2*sqrt(n-1)/n ~ 0.33 -> 2^-2
    out = IRNetSign()(tf.constant(w)).numpy()
    expected, scale = np_irnet_forward(w)
    np.testing.assert_array_equal(out, expected.astype(np.float32))
    assert np.allclose(scale, 0.25)


@pytest.mark.parametrize("t", [0.1, 0.5, 1.0, 3.0, 10.0])
def test_ede_gradient(t):
    x = tf.constant(np.linspace(-3, 3, 61, dtype=np.float32))
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = ede_sign(x, tf.constant(t))
    grad = tape.gradient(y, x).numpy()
    k = max(1 / t, 1)
    np.testing.assert_allclose(grad, k * t * (1 - np.tanh(t * x.numpy()) ** 2), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(y.numpy(), np_sign(x.numpy()))


@pytest.mark.parametrize("fraction", [0.0, 0.25, 0.5, 1.0])
def test_kernel_gradient_matches_reference_at_schedule_values(fraction):
    w = random_kernel(1)
    upstream = np.random.default_rng(2).normal(size=KERNEL_SHAPE).astype(np.float32)
    q = IRNetSign()
    q.build(KERNEL_SHAPE)
    q.set_progress(fraction)
    t = np_log_up(fraction)
    assert q.t.numpy() == pytest.approx(t, rel=1e-6)
    out, grad = quantize_with_grad(q, w, upstream)
    np.testing.assert_array_equal(out, np_irnet_forward(w)[0].astype(np.float32))
    np.testing.assert_allclose(grad, np_irnet_grad(w, upstream, t), rtol=2e-3, atol=2e-4)


def test_schedule_reaches_reference_values():
    q = IRNetSign()
    assert q.schedule_value(0) == pytest.approx(0.1)
    assert q.schedule_value(0.5) == pytest.approx(1.0)
    assert q.schedule_value(1) == pytest.approx(10.0)
    resnet20 = IRNetSign(t_min=1e-3, t_max=10.0)
    assert resnet20.schedule_value(0.25) == pytest.approx(np_log_up(0.25, 1e-3, 10.0))


def test_traced_graph_sees_schedule_updates():
    w = tf.Variable(random_kernel(3))
    upstream = tf.constant(np.random.default_rng(4).normal(size=KERNEL_SHAPE).astype(np.float32))
    q = IRNetSign()
    q.build(KERNEL_SHAPE)

    @tf.function
    def grad():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(q(w) * upstream)
        return tape.gradient(loss, w)

    for fraction in (0.0, 0.8):
        q.set_progress(fraction)
        np.testing.assert_allclose(
            grad().numpy(), np_irnet_grad(w.numpy(), upstream.numpy(), np_log_up(fraction)), rtol=2e-3, atol=2e-4
        )


# -- composition with HBNN ------------------------------------------------------------------------
def test_hbnn_composition_forward_and_gradients():
    c = hbnn_composition("ir_net", random_kernel(6), 0.3)
    assert isinstance(c.hq.base, IRNetSign)
    g_latent, g_point = c.gradients
    np.testing.assert_array_equal(c.out.numpy(), np_irnet_forward(c.mapped)[0].astype(np.float32))
    # the constrained weight differs from the latent one, so the composition is not a no-op
    assert not np.array_equal(np.sign(c.mapped), np.sign(c.latent.numpy()))
    assert np.linalg.norm(g_latent) > 0 and np.linalg.norm(g_point) > 0
    # chain rule: d/dw~ = J_exp^T (IR-Net gradient at the mapped weight)
    assert_chain_rule(c, np_irnet_grad(c.mapped, c.upstream, np_log_up(0.3)))


def test_recipes_create_fresh_instances():
    a, b = recipes.kernel_quantizer("ir_net"), recipes.kernel_quantizer("ir_net")
    assert isinstance(a, IRNetSign) and a is not b
    h1, h2 = recipes.kernel_quantizer("ir_net+hbnn"), recipes.kernel_quantizer("ir_net+hbnn")
    assert isinstance(h1, hbnn_larq.HyperbolicSign) and h1.r == 0.05 and isinstance(h1.base, IRNetSign)
    assert h1.base is not h2.base
    assert recipes.is_hyperbolic("ir_net+hbnn") and not recipes.is_hyperbolic("ir_net")
    assert recipes.kernel_constraint("ir_net") is None and recipes.kernel_constraint("ir_net+hbnn") is None
    assert recipes.kernel_quantizer("ir_net+hbnn", r=0.1).r == 0.1
    with pytest.raises(ValueError, match="base"):
        recipes.kernel_quantizer("ir_net+hbnn", base="recu")


# -- serialization --------------------------------------------------------------------------------
def test_config_round_trip():
    q = IRNetSign(t_min=1e-3, t_max=5.0)
    config = lq.quantizers.serialize(q)
    assert config["class_name"] == "IRNetSign"
    clone = lq.quantizers.deserialize(config)
    assert (clone.t_min, clone.t_max, clone.epsilon) == (1e-3, 5.0, 1e-12)
    assert isinstance(lq.quantizers.get_kernel_quantizer("ir_net"), IRNetSign)
    h = hbnn_larq.HyperbolicSign(base=IRNetSign(t_min=0.01))
    h_clone = hbnn_larq.HyperbolicSign.from_config(h.get_config())
    assert isinstance(h_clone.base, IRNetSign) and h_clone.base.t_min == 0.01


def schedule_variables(model):
    return sorted((v.name.split("/")[-1], float(v.numpy())) for v in model.weights if "ede_t" in v.name)


@pytest.mark.parametrize("recipe", ["ir_net", "ir_net+hbnn"])
@pytest.mark.parametrize("fmt", ["h5", "keras", "tf"])
def test_save_and_reload(tmp_path, recipe, fmt):
    model = one_conv_model(recipes.kernel_quantizer(recipe))
    for q in hbnn_larq.scheduled_quantizers(model):
        q.set_progress(0.7)
    x = np.random.default_rng(0).normal(size=(4, 6, 6, 8)).astype(np.float32)
    loaded = save_and_reload(model, tmp_path, fmt, x)
    if fmt != "tf":  # SavedModel revives stand-in layers; their variables are checked below
        assert schedule_variables(loaded) == schedule_variables(model)
        assert schedule_variables(model)[0][1] == pytest.approx(np_log_up(0.7), rel=1e-6)
    else:
        values = [float(v.numpy()) for v in loaded.weights if "ede_t" in v.name]
        assert values == pytest.approx([np_log_up(0.7)], rel=1e-6)


# -- LCE --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("recipe", ["ir_net", "ir_net+hbnn"])
def test_lce_conversion_and_outputs(recipe):
    model = one_conv_model(recipes.kernel_quantizer(recipe), channels=64)
    x = np.random.default_rng(1).normal(size=(3, 6, 6, 64)).astype(np.float32)
    randomize_batch_norm(model, 0)
    assert_lce_matches(model, x)


# -- errors -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, match",
    [({"t_min": 0.0}, "t_min"), ({"t_max": -1.0}, "t_max"), ({"t_min": 2.0, "t_max": 1.0}, "t_max"),
     ({"t_min": "a"}, "t_min"), ({"epsilon": -1.0}, "epsilon")],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        IRNetSign(**kwargs)


@pytest.mark.parametrize("fraction", [-0.1, 1.5, float("nan"), "x", None])
def test_bad_progress(fraction):
    q = IRNetSign()
    q.build(KERNEL_SHAPE)
    with pytest.raises(ValueError, match="fraction"):
        q.set_progress(fraction)


def test_bad_kernel_shape():
    with pytest.raises(ValueError, match="kernel shape"):
        IRNetSign()(tf.zeros((5,)))


@pytest.mark.parametrize("base", ["no_such_quantizer", 3])
def test_unknown_base_is_a_clear_error(base):
    with pytest.raises(ValueError, match="`base` must be"):
        hbnn_larq.HyperbolicSign(base=base)
