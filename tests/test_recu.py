"""ReCUSign: forward/backward vs NumPy references of ReCU's formulas, schedule, saving, LCE."""

import math

import larq as lq
import numpy as np
import pytest
import tensorflow as tf

import hbnn_larq
from hbnn_larq.recu import ReCUSign
from hbnn_larq.training import recipes
from tests.helpers import (
    assert_chain_rule, assert_lce_matches, hbnn_composition, one_conv_model, randomize_batch_norm, save_and_reload,
)

KERNEL_SHAPE = (3, 3, 4, 6)


# -- NumPy references (z-hXu/ReCU: modules/binarized_modules.py, main.py cpt_tau) ------------------
def np_sign(x):
    return np.where(x >= 0, 1.0, -1.0)


def np_cpt_tau(fraction, tau_min=0.85, tau_max=0.99):
    a = np.e
    A = (tau_max - tau_min) / (a - 1)
    B = tau_min - A
    return A * a**fraction + B


def np_recu(w, tau, alpha=None, scale="learned", eps=1e-5):
    """Returns (q, w1, w2, sigma, Q) with everything flattened to (n, c_out)."""
    flat = w.reshape(-1, w.shape[-1]).astype(np.float64)
    w0 = flat - flat.mean(0)
    sigma = np.sqrt(w0.var(0, ddof=1) + eps)
    w1 = w0 / (sigma / 2 / np.sqrt(2))
    Q = -np.abs(w1).mean() * np.log(2 - 2 * tau)
    w2 = np.clip(w1, -Q, Q)
    q = np_sign(w2)
    if scale == "learned":
        q = q * alpha
    elif scale == "mean":
        q = q * np.abs(w2).mean(0)
    return q, w1, w2, sigma, Q


def np_recu_grads(w, upstream, tau, alpha):
    """dL/dw and dL/dalpha for L = sum(upstream * q(w)), identity STE, clamp gradient, autodiff
    through mean/std (Q_tau detached)."""
    q, w1, w2, sigma, Q = np_recu(w, tau, alpha)
    up = upstream.reshape(w1.shape)
    g1 = up * alpha * (np.abs(w1) <= Q)  # dL/dw1
    g = g1 * 2 * np.sqrt(2)  # w1 = 2*sqrt(2) * w_hat
    w_hat = w1 / (2 * np.sqrt(2))
    n = w1.shape[0]
    gw = (g - g.mean(0) - w_hat * (g * w_hat).sum(0) / (n - 1)) / sigma
    return gw.reshape(w.shape), (up * np_sign(w2)).sum(0)


def random_kernel(seed=0, shape=KERNEL_SHAPE):
    rng = np.random.default_rng(seed)
    return (rng.laplace(size=shape) * rng.uniform(0.5, 2.0, shape[-1]) + rng.normal(0, 0.5, shape[-1])).astype(
        np.float32
    )


# -- forward / backward -------------------------------------------------------------------------
@pytest.mark.parametrize("fraction", [0.0, 0.5, 1.0])
def test_forward_and_gradients_match_reference(fraction):
    w = random_kernel()
    upstream = np.random.default_rng(1).normal(size=KERNEL_SHAPE).astype(np.float32)
    q = ReCUSign()
    q.build(KERNEL_SHAPE)
    q.set_progress(fraction)
    tau = np_cpt_tau(fraction)
    assert q.tau.numpy() == pytest.approx(tau, rel=1e-6)
    alpha = q.alpha.numpy()
    assert np.all((alpha > 0) & (alpha < 1))
    wv = tf.Variable(w)
    with tf.GradientTape() as tape:
        out = q(wv)
        loss = tf.reduce_sum(out * upstream)
    g_w, g_alpha = tape.gradient(loss, [wv, q.alpha])
    expected, w1, _, _, Q = np_recu(w, tau, alpha)
    np.testing.assert_array_equal(out.numpy(), expected.reshape(w.shape).astype(np.float32))
    # exactly +-alpha_o per output channel
    for o in range(w.shape[-1]):
        assert set(np.unique(np.abs(out.numpy()[..., o]))) == {alpha[o]}
    ref_w, ref_alpha = np_recu_grads(w, upstream, tau, alpha)
    np.testing.assert_allclose(g_w.numpy(), ref_w, rtol=2e-3, atol=2e-4)
    np.testing.assert_allclose(g_alpha.numpy(), ref_alpha, rtol=1e-4, atol=1e-4)
    # some weights are clamped (zero gradient)
    clamped = np.mean(np.abs(w1) > Q)
    assert 0 < clamped < 0.5


def test_clamp_fraction_follows_tau():
    """Q_tau is the tau-quantile of a (signed) Laplace fit: on Laplace weights a fraction
    2 - 2 tau is clamped (30 % at tau = 0.85, 2 % at 0.99)."""
    rng = np.random.default_rng(2)
    w = rng.laplace(size=(3, 3, 256, 64)).astype(np.float32)
    for tau in (0.85, 0.99):
        _, w1, _, _, Q = np_recu(w, tau, np.ones(64))
        assert np.mean(np.abs(w1) > Q) == pytest.approx(2 - 2 * tau, abs=0.01)


@pytest.mark.parametrize("scale", ["mean", "none"])
def test_other_scales(scale):
    w = random_kernel(3)
    q = ReCUSign(scale=scale)
    out = q(tf.constant(w)).numpy()
    assert [v.name.split("/")[-1] for v in q.weights] == ["tau:0"]
    expected = np_recu(w, 0.85, scale=scale)[0].reshape(w.shape)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    if scale == "none":
        assert set(np.unique(out)) == {-1.0, 1.0}


def test_schedule_values():
    q = ReCUSign()
    assert q.schedule_value(0) == pytest.approx(0.85)
    assert q.schedule_value(1) == pytest.approx(0.99)
    for f in (0.1, 0.37, 0.9):
        assert q.schedule_value(f) == pytest.approx(np_cpt_tau(f))
    assert ReCUSign(tau_min=0.6, tau_max=0.7).schedule_value(0.5) == pytest.approx(np_cpt_tau(0.5, 0.6, 0.7))


def test_traced_graph_sees_schedule_updates():
    w = tf.constant(random_kernel(4))
    q = ReCUSign(scale="mean")
    q.build(KERNEL_SHAPE)
    f = tf.function(lambda: q(w))
    for fraction in (0.0, 1.0):
        q.set_progress(fraction)
        expected = np_recu(w.numpy(), np_cpt_tau(fraction), scale="mean")[0].reshape(KERNEL_SHAPE)
        np.testing.assert_allclose(f().numpy(), expected, rtol=1e-5, atol=1e-6)


# -- composition with HBNN ------------------------------------------------------------------------
def test_hbnn_composition_forward_and_gradients():
    c = hbnn_composition("recu", random_kernel(6), 0.5, extra_variables=("alpha",))
    assert isinstance(c.hq.base, ReCUSign)
    g_latent, g_point, g_alpha = c.gradients
    alpha, tau = c.hq.base.alpha.numpy(), np_cpt_tau(0.5)
    np.testing.assert_array_equal(c.out.numpy(), np_recu(c.mapped, tau, alpha)[0].reshape(KERNEL_SHAPE).astype(np.float32))
    assert np.linalg.norm(g_latent) > 0 and np.linalg.norm(g_point) > 0 and np.linalg.norm(g_alpha) > 0
    ref_mapped, _ = np_recu_grads(c.mapped, c.upstream, tau, alpha)
    assert_chain_rule(c, ref_mapped)


def test_recipes_create_fresh_instances():
    a, b = recipes.kernel_quantizer("recu"), recipes.kernel_quantizer("recu")
    assert isinstance(a, ReCUSign) and a is not b
    h1, h2 = recipes.kernel_quantizer("recu+hbnn"), recipes.kernel_quantizer("recu+hbnn")
    assert isinstance(h1.base, ReCUSign) and h1.r == 0.05 and h1.base is not h2.base
    assert recipes.is_hyperbolic("recu+hbnn") and not recipes.is_hyperbolic("recu")
    assert recipes.kernel_constraint("recu") is None and recipes.kernel_constraint("recu+hbnn") is None


# -- serialization --------------------------------------------------------------------------------
def test_config_round_trip():
    q = ReCUSign(tau_min=0.8, tau_max=0.95, scale="mean", epsilon=1e-8)
    clone = lq.quantizers.deserialize(lq.quantizers.serialize(q))
    assert (clone.tau_min, clone.tau_max, clone.scale, clone.epsilon) == (0.8, 0.95, "mean", 1e-8)
    assert isinstance(lq.quantizers.get_kernel_quantizer("recu"), ReCUSign)
    h = hbnn_larq.HyperbolicSign.from_config(hbnn_larq.HyperbolicSign(base=q).get_config())
    assert isinstance(h.base, ReCUSign) and h.base.scale == "mean"


def quantizer_state(model):
    return {v.name.split("/")[-1]: v.numpy() for v in model.weights if v.name.split("/")[-1] in ("tau:0", "alpha:0")}


@pytest.mark.parametrize("recipe", ["recu", "recu+hbnn"])
@pytest.mark.parametrize("fmt", ["h5", "keras", "tf"])
def test_save_and_reload(tmp_path, recipe, fmt):
    model = one_conv_model(recipes.kernel_quantizer(recipe))
    for q in hbnn_larq.scheduled_quantizers(model):
        q.set_progress(0.6)
    x = np.random.default_rng(0).normal(size=(4, 6, 6, 8)).astype(np.float32)
    loaded = save_and_reload(model, tmp_path, fmt, x)
    before, after = quantizer_state(model), quantizer_state(loaded)
    assert sorted(after) == ["alpha:0", "tau:0"]
    assert float(after["tau:0"]) == pytest.approx(np_cpt_tau(0.6), rel=1e-6)
    np.testing.assert_array_equal(after["alpha:0"], before["alpha:0"])


# -- LCE --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("recipe", ["recu", "recu+hbnn"])
def test_lce_conversion_and_outputs(recipe):
    model = one_conv_model(recipes.kernel_quantizer(recipe), channels=64)
    rng = np.random.default_rng(1)
    randomize_batch_norm(model, rng)
    x = rng.normal(size=(3, 6, 6, 64)).astype(np.float32)
    assert_lce_matches(model, x)


# -- errors -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, match",
    [({"tau_min": 0.5}, "tau_min"), ({"tau_max": 1.0}, "tau_max"), ({"tau_min": 0.95, "tau_max": 0.9}, "tau_max"),
     ({"scale": "alpha"}, "scale"), ({"epsilon": -1}, "epsilon"), ({"tau_min": None}, "tau_min")],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ReCUSign(**kwargs)


@pytest.mark.parametrize("fraction", [-1e-3, 1.01, float("inf"), "0.5x"])
def test_bad_progress(fraction):
    q = ReCUSign()
    q.build(KERNEL_SHAPE)
    with pytest.raises(ValueError, match="fraction"):
        q.set_progress(fraction)


def test_unbuilt_set_progress_and_bad_kernel():
    with pytest.raises(ValueError, match="built"):
        ReCUSign().set_progress(0.5)
    with pytest.raises(ValueError, match="kernel shape"):
        ReCUSign()(tf.zeros((1, 1, 1, 4)))  # one weight per output channel: no std


def test_tau_math_is_laplace_quantile():
    """-b ln(2 - 2 tau) is the tau-quantile of Laplace(0, b): P(X <= Q) = 1 - exp(-Q/b)/2."""
    b = 0.7
    for tau in (0.85, 0.99):
        Q = -b * math.log(2 - 2 * tau)
        assert 1 - math.exp(-Q / b) / 2 == pytest.approx(tau)
