import larq as lq
import numpy as np
import pytest
import tensorflow as tf

import hbnn_larq
from hbnn_larq import HyperbolicSign, PoincareBall
from tests.helpers import binary_conv, tiny_model
from tests.reference import ref_expmap


def built(q, shape=(3, 3, 4, 8)):
    q.build(shape)
    return q


def np_expmap64(p, v, r):
    """The float64 reference exp map (`tests/reference.py`) of one kernel-shaped vector, flattened."""
    return ref_expmap(p.ravel().astype(np.float64), v.ravel().astype(np.float64), r)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"boundary": True, "r": 1.0},
        {"grouping": "channel"},
        {"cluster_size": 4},
        {"cluster_size": 3, "cluster_init": "random", "cluster_radius": 0.5},
        {"r": 5.0},
    ],
)
def test_forward_is_exactly_plus_minus_one(kwargs):
    q = built(HyperbolicSign(seed=1, **kwargs))
    for p in q.points:
        p.assign(q.manifold.projx(tf.random.normal(p.shape) * 0.3))
    w = tf.random.normal((3, 3, 4, 8))
    out = q(w).numpy()
    assert set(np.unique(out)) <= {-1.0, 1.0}


def test_origin_reproduces_plain_sign_exactly():
    q = built(HyperbolicSign(), (3, 3, 64, 64))
    w = tf.random.normal((3, 3, 64, 64)) * 0.05
    w = tf.tensor_scatter_nd_update(w, [[0, 0, 0, 0]], [0.0])  # sign(0) = +1 convention
    np.testing.assert_array_equal(q(w).numpy(), lq.math.sign(w).numpy())
    assert q(w).numpy()[0, 0, 0, 0] == 1.0


@pytest.mark.parametrize("boundary", [False, True])
def test_forward_matches_float64_reference(boundary):
    r = 1.0 if boundary else 0.05
    q = built(HyperbolicSign(r=r, boundary=boundary), (3, 3, 4, 8))
    rng = np.random.default_rng(0)
    p = rng.normal(size=(3, 3, 4, 8)) * 0.2
    w = rng.normal(size=(3, 3, 4, 8)) * 0.1
    q.points[0].assign(p.astype("float32"))
    if boundary:
        v = w.ravel() / (np.sqrt(r) * np.linalg.norm(w))
        pp = p.ravel()
        num = (1 + 2 * r * pp @ v + r * v @ v) * pp + (1 - r * pp @ pp) * v
        expected = num / (1 + 2 * r * pp @ v + r**2 * (pp @ pp) * (v @ v))
    else:
        expected = np_expmap64(p, w, r)
    mapped = q.project(tf.constant(w, tf.float32), q.points[0]).numpy().ravel()
    np.testing.assert_allclose(mapped, expected, rtol=1e-4, atol=1e-5)
    confident = np.abs(expected) > 1e-4  # float32 may disagree on signs of values ~1e-7
    np.testing.assert_array_equal(q(tf.constant(w, tf.float32)).numpy().ravel()[confident], np.sign(expected)[confident])


def test_gradients_are_identity_ste_through_the_exponential_map():
    """d/dw <c, q(w)> must equal d/dw <c, exp_p(w)>: checked against float64 finite differences."""
    r = 0.05
    q = built(HyperbolicSign(r=r), (2, 2, 2, 3))
    rng = np.random.default_rng(3)
    p = (rng.normal(size=(2, 2, 2, 3)) * 0.5).astype("float32")
    w = (rng.normal(size=(2, 2, 2, 3)) * 0.3).astype("float32")
    c = rng.normal(size=(2, 2, 2, 3))
    q.points[0].assign(p)
    w_t = tf.Variable(w)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.constant(c, tf.float32) * q(w_t))
    grad_w, grad_p = tape.gradient(loss, [w_t, q.points[0]])

    def f(pv, wv):
        return float(c.ravel() @ np_expmap64(pv, wv, r))

    eps = 1e-6
    fd_w = np.zeros(w.size)
    fd_p = np.zeros(p.size)
    for i in range(w.size):
        e = np.zeros(w.size)
        e[i] = eps
        fd_w[i] = (f(p, w.ravel() + e) - f(p, w.ravel() - e)) / (2 * eps)
        fd_p[i] = (f(p.ravel() + e, w) - f(p.ravel() - e, w)) / (2 * eps)
    np.testing.assert_allclose(grad_w.numpy().ravel(), fd_w, rtol=2e-3, atol=2e-4)
    np.testing.assert_allclose(grad_p.numpy().ravel(), fd_p, rtol=2e-3, atol=2e-4)


def test_active_index_selects_the_chart_and_only_it_gets_gradient():
    q = built(HyperbolicSign(cluster_size=3, cluster_init="random", cluster_radius=0.5, seed=0))
    w = tf.Variable(tf.random.normal((3, 3, 4, 8)) * 0.1)
    for j in range(3):
        q.active_index.assign(j)
        expected = lq.math.sign(q.project(w, q.points[j]))
        np.testing.assert_array_equal(q(w).numpy(), expected.numpy())
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(q(w) * tf.random.normal(w.shape))
        grads = tape.gradient(loss, q.points)
        for k, g in enumerate(grads):
            norm = 0.0 if g is None else float(tf.norm(g))
            assert (norm > 0) == (k == j)


def test_cluster_initialisation():
    q = built(HyperbolicSign(cluster_size=4, cluster_radius=0.3, seed=0))
    norms = [float(tf.norm(p)) for p in q.points]
    assert norms[0] == 0.0
    np.testing.assert_allclose(norms[1:], 0.3 / np.sqrt(0.05), rtol=1e-5)
    assert not np.allclose(q.points[1].numpy(), q.points[2].numpy())
    q = built(HyperbolicSign(cluster_size=2, cluster_init="random", cluster_radius=0.3, grouping="channel", seed=0))
    per_channel = np.linalg.norm(q.points[0].numpy().reshape(-1, 8), axis=0)
    np.testing.assert_allclose(per_channel, 0.3 / np.sqrt(0.05), rtol=1e-5)


def test_channel_grouping_keeps_each_channel_in_its_own_ball():
    q = built(HyperbolicSign(grouping="channel"))
    assert q.manifold.axis == (0, 1, 2)
    q.points[0].assign(tf.ones((3, 3, 4, 8)) * 100.0)
    q.points[0].assign(q.points[0].constraint.project(q.points[0]))
    norms = np.linalg.norm(q.points[0].numpy().reshape(-1, 8), axis=0)
    assert np.all(np.sqrt(0.05) * norms < 1.0)


def test_alias_gives_a_fresh_instance_per_layer():
    model = tiny_model("hyperbolic_sign", channels=(8, 8))
    quantizers = [q for _, q in hbnn_larq.hyperbolic_quantizers(model)]
    assert len(quantizers) == 2 and quantizers[0] is not quantizers[1]
    assert quantizers[0].precision == 1


def test_points_are_trainable_weights_of_the_layer():
    layer = binary_conv(8, HyperbolicSign(cluster_size=2))
    layer(tf.zeros((1, 4, 4, 4)))  # like every Keras sublayer, the quantizer builds on first call
    names = [v.name for v in layer.trainable_weights]
    assert any("point_0" in n for n in names) and any("point_1" in n for n in names)
    assert any("active_index" in v.name for v in layer.non_trainable_weights)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"r": 0.01, "boundary": True, "cluster_size": 4, "selection": "geometric", "grouping": "channel",
         "cluster_init": "random", "cluster_radius": 0.2, "on_switch": "reexpress", "margin": 1e-4, "seed": 3},
        {},
        {"base": "ste_sign"},
        {"base": "ir_net", "point_lr_multiplier": 10.0},
    ],
)
def test_config_round_trip(kwargs):
    q = HyperbolicSign(**kwargs)
    config = q.get_config()
    clone = HyperbolicSign.from_config(config)
    assert clone.get_config() == config
    assert tf.keras.utils.get_registered_object("HyperbolicSign") is not None
    via_keras = lq.quantizers.get({"class_name": "HyperbolicSign", "config": config})
    assert isinstance(via_keras, HyperbolicSign)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"r": 0}, "r"),
        ({"r": -1.0}, "r"),
        ({"r": float("nan")}, "r"),
        ({"cluster_size": 0}, "cluster_size"),
        ({"cluster_size": 2.5}, "cluster_size"),
        ({"selection": "best"}, "selection"),
        ({"grouping": "row"}, "grouping"),
        ({"cluster_init": "zeros"}, "cluster_init"),
        ({"on_switch": "drop"}, "on_switch"),
        ({"cluster_radius": 1.0}, "cluster_radius"),
        ({"point_lr_multiplier": 0}, "point_lr_multiplier"),
        ({"point_lr_multiplier": "fast"}, "point_lr_multiplier"),
    ],
)
def test_bad_arguments_name_the_parameter(kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        HyperbolicSign(**kwargs)


def test_integer_kernel_is_rejected():
    q = built(HyperbolicSign())
    with pytest.raises(ValueError, match="floating-point"):
        q(tf.ones((3, 3, 4, 8), tf.int32))


def test_reexpress_keeps_the_constrained_weight_and_keep_keeps_the_latent():
    for on_switch in ("reexpress", "keep"):
        q = built(HyperbolicSign(cluster_size=2, cluster_radius=0.5, on_switch=on_switch, seed=0), (3, 3, 8, 8))
        latent = tf.Variable(tf.random.normal((3, 3, 8, 8)) * 0.02)
        before_latent = latent.numpy().copy()
        before = q.project(latent, q.points[0]).numpy()
        q.set_active(1, latent)
        after = q.project(latent, q.points[1]).numpy()
        assert int(q.active_index.numpy()) == 1
        if on_switch == "reexpress":
            np.testing.assert_allclose(after, before, atol=1e-5)
        else:
            np.testing.assert_array_equal(latent.numpy(), before_latent)
            assert not np.allclose(after, before, atol=1e-3)


def test_set_active_rejects_out_of_range():
    q = built(HyperbolicSign(cluster_size=2))
    with pytest.raises(ValueError, match="index"):
        q.set_active(2)


def test_float32_mapping_of_large_flat_kernels_is_finite():
    """Layer-flat 512x512 kernels saturate tanh: values and gradients must stay finite."""
    q = built(HyperbolicSign(), (3, 3, 512, 512))
    q.points[0].assign(q.manifold.projx(tf.random.normal((3, 3, 512, 512)) * 10.0, 1e-6))
    w = tf.Variable(tf.random.normal((3, 3, 512, 512)) * np.sqrt(2 / (9 * 512)))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(q(w) * tf.random.normal(w.shape))
    grads = tape.gradient(loss, [w, q.points[0]])
    for g in grads:
        assert np.all(np.isfinite(g.numpy()))
    assert PoincareBall(0.05).contains(q.points[0]).numpy()
