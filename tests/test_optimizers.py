import numpy as np
import pytest
import tensorflow as tf

import hbnn_larq
from hbnn_larq import HyperbolicSign, PoincareBall, RiemannianOptimizer
from tests.helpers import compile_hbnn, random_data, tiny_model
from tests.reference import ref_expmap as np_expmap
from tests.reference import ref_lambda as np_lambda
from tests.reference import ref_mobius_add as np_mobius_add


def point_variables(model):
    return [p for _, q in hbnn_larq.hyperbolic_quantizers(model) for p in q.points]


def point_and_gradient(quantizer, seed):
    """A conv-kernel point of `quantizer` set to a random position inside the ball, its value
    and a random gradient (float32 NumPy)."""
    quantizer.build((3, 3, 2, 4))
    point = quantizer.points[0]
    rng = np.random.default_rng(seed)
    p0 = (rng.normal(size=point.shape) * 0.3).astype("float32")
    g = (rng.normal(size=point.shape) * 0.5).astype("float32")
    point.assign(p0)
    return point, p0, g


def test_fit_lowers_the_loss_and_moves_the_points():
    x, y = random_data(128)
    model = compile_hbnn(tiny_model(), lr=0.05, multiplier=100.0)
    before = [p.numpy().copy() for p in point_variables(model)]
    history = model.fit(x, y, epochs=8, batch_size=32, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    for p, b in zip(point_variables(model), before):
        assert np.linalg.norm(p.numpy() - b) > 1e-3


@pytest.mark.parametrize("point_update", ["rsgd", "mobius"])
def test_one_step_matches_the_formula(point_update):
    r, lr, m = 0.05, 0.1, 10.0
    point, p0, g = point_and_gradient(HyperbolicSign(r=r), seed=0)
    opt = RiemannianOptimizer(tf.keras.optimizers.SGD(lr), point_lr_multiplier=m, point_update=point_update)
    opt.apply_gradients([(tf.constant(g), point)])
    p64, g64, eta = p0.astype(np.float64).ravel(), g.astype(np.float64).ravel(), lr * m
    if point_update == "rsgd":
        expected = np_expmap(p64, -eta * g64 / np_lambda(p64, r) ** 2, r)
    else:
        max_norm = 0.9 / np.sqrt(r)  # the Möbius product needs sqrt(r)||g|| < 1: g is clipped
        g64 = g64 * min(1.0, max_norm / np.linalg.norm(g64))
        gn = np.linalg.norm(g64)
        scaled = np.tanh(-eta * np.arctanh(np.sqrt(r) * gn)) * g64 / (np.sqrt(r) * gn)
        expected = np_mobius_add(p64, scaled, r)
    np.testing.assert_allclose(point.numpy().ravel(), expected, rtol=1e-4, atol=1e-6)
    assert int(opt.iterations.numpy()) == 1


@pytest.mark.parametrize("point_update", ["rsgd", "mobius"])
@pytest.mark.parametrize("grouping", ["layer", "channel"])
def test_points_never_leave_the_ball_whatever_the_learning_rate(point_update, grouping):
    x, y = random_data(32)
    model = tiny_model(lambda: HyperbolicSign(grouping=grouping), channels=(8,))
    model.compile(
        RiemannianOptimizer(tf.keras.optimizers.SGD(1e3), point_lr_multiplier=1e3, point_update=point_update),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    for p in point_variables(model):
        ball = PoincareBall(0.05, axis=p.constraint.manifold.axis)
        assert np.all(np.isfinite(p.numpy()))
        assert ball.contains(p).numpy()


def test_non_finite_gradient_does_not_poison_a_point():
    q = HyperbolicSign()
    q.build((2, 2))
    opt = RiemannianOptimizer(tf.keras.optimizers.SGD(0.1))
    opt.apply_gradients([(tf.constant([[np.nan, 1.0], [np.inf, 0.0]], tf.float32), q.points[0])])
    assert np.all(np.isfinite(q.points[0].numpy()))


def test_other_variables_get_the_wrapped_optimizers_update_and_points_no_weight_decay():
    """Weights: exactly what SGD(momentum, weight decay) alone does; points: RSGD, no decay."""
    x, y = random_data(32)
    model = tiny_model(channels=(8,))
    inner = tf.keras.optimizers.SGD(0.1, momentum=0.9, weight_decay=0.5)
    reference = tf.keras.optimizers.SGD(0.1, momentum=0.9, weight_decay=0.5)
    opt = RiemannianOptimizer(inner, point_lr_multiplier=3.0)
    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    points = point_variables(model)
    others = [v for v in model.trainable_variables if all(v is not p for p in points)]
    shadow = [tf.Variable(v) for v in others]
    for _ in range(2):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        by_var = {id(v): g for g, v in zip(grads, model.trainable_variables)}
        point_before = points[0].numpy().copy()
        reference.apply_gradients([(by_var[id(v)], s) for v, s in zip(others, shadow)])
        opt.apply_gradients(zip(grads, model.trainable_variables))
        for v, s in zip(others, shadow):
            np.testing.assert_allclose(v.numpy(), s.numpy(), rtol=1e-6, atol=1e-7)
        g = by_var[id(points[0])].numpy().astype(np.float64).ravel()
        p = point_before.astype(np.float64).ravel()
        expected = np_expmap(p, -0.3 * g / np_lambda(p, 0.05) ** 2, 0.05) if np.any(g) else p
        np.testing.assert_allclose(points[0].numpy().ravel(), expected, rtol=1e-4, atol=1e-7)
    assert int(opt.iterations.numpy()) == 2


def test_point_learning_rate_follows_the_schedule():
    schedule = tf.keras.optimizers.schedules.CosineDecay(1.0, decay_steps=10)
    opt = RiemannianOptimizer(tf.keras.optimizers.SGD(schedule), point_lr_multiplier=2.0)
    q = HyperbolicSign()
    q.build((4,))
    for step in range(3):
        before = q.points[0].numpy().astype(np.float64)
        grad = np.full(4, 1e-3)
        opt.apply_gradients([(tf.constant(grad, tf.float32), q.points[0])])
        # The step just applied used the schedule's value at that step, times the multiplier.
        lr = 2.0 * float(schedule(step))
        assert float(opt.point_learning_rate(q.points[0])) == pytest.approx(lr, rel=1e-6)
        expected = np_expmap(before, -lr * grad / np_lambda(before, 0.05) ** 2, 0.05)
        np.testing.assert_allclose(q.points[0].numpy(), expected, rtol=1e-5, atol=1e-9)
    assert int(opt.iterations.numpy()) == 3


@pytest.mark.parametrize(
    "quantizer_kwargs, optimizer_multiplier, expected",
    [
        ({}, None, hbnn_larq.manifold_parameters.POINT_LR_MULTIPLIER),
        ({"base": "ste_sign"}, None, hbnn_larq.manifold_parameters.POINT_LR_MULTIPLIER),
        ({"base": "ir_net"}, None, hbnn_larq.manifold_parameters.STANDARDIZED_BASE_POINT_LR_MULTIPLIER),
        ({"base": "recu"}, None, hbnn_larq.manifold_parameters.STANDARDIZED_BASE_POINT_LR_MULTIPLIER),
        ({"base": "ir_net", "point_lr_multiplier": 30.0}, None, 30.0),
        ({"base": "ir_net"}, 7.0, 7.0),  # the optimizer's value applies to every point
        ({"point_lr_multiplier": 30.0}, 7.0, 7.0),
    ],
)
def test_each_point_steps_with_its_quantizers_multiplier_unless_the_optimizer_sets_one(
    quantizer_kwargs, optimizer_multiplier, expected
):
    """A bare optimizer must give plug-in points (IR-Net/ReCU bases) the paper's step, not x100:
    checked on the step actually taken, against the float64 RSGD formula."""
    r, lr = 0.05, 0.01
    point, p0, g = point_and_gradient(HyperbolicSign(r=r, **quantizer_kwargs), seed=1)
    opt = RiemannianOptimizer(tf.keras.optimizers.SGD(lr), point_lr_multiplier=optimizer_multiplier)
    assert opt.multiplier_of(point) == expected
    opt.apply_gradients([(tf.constant(g), point)])
    p64, g64 = p0.astype(np.float64).ravel(), g.astype(np.float64).ravel()
    expected_point = np_expmap(p64, -lr * expected * g64 / np_lambda(p64, r) ** 2, r)
    np.testing.assert_allclose(point.numpy().ravel(), expected_point, rtol=1e-4, atol=1e-6)


def test_multiplier_of_an_ordinary_variable_is_an_error():
    opt = RiemannianOptimizer(tf.keras.optimizers.SGD(0.1))
    with pytest.raises(ValueError, match="not a manifold parameter"):
        opt.multiplier_of(tf.Variable([1.0], name="kernel"))


def test_works_with_adam_in_fit():
    x, y = random_data(64)
    model = tiny_model(channels=(8,))
    model.compile(RiemannianOptimizer(tf.keras.optimizers.Adam(1e-2)),
                  loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(x, y, epochs=4, batch_size=16, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert history.history["loss"][-1] < history.history["loss"][0]


def test_learning_rate_is_delegated():
    inner = tf.keras.optimizers.SGD(0.1)
    opt = RiemannianOptimizer(inner)
    opt.learning_rate = 0.01
    assert float(inner.learning_rate.numpy()) == pytest.approx(0.01)
    assert opt.iterations is inner.iterations


def test_config_round_trip():
    opt = RiemannianOptimizer(tf.keras.optimizers.SGD(0.3, momentum=0.8), point_lr_multiplier=7.0, point_update="mobius")
    clone = RiemannianOptimizer.from_config(opt.get_config())
    assert clone.point_lr_multiplier == 7.0 and clone.point_update == "mobius"
    assert clone.inner_optimizer.get_config()["momentum"] == pytest.approx(0.8)
    assert isinstance(tf.keras.optimizers.deserialize(tf.keras.optimizers.serialize(opt)), RiemannianOptimizer)
    per_point = RiemannianOptimizer.from_config(RiemannianOptimizer(tf.keras.optimizers.SGD(0.1)).get_config())
    assert per_point.point_lr_multiplier is None  # stays "each point's own", not frozen to a number


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"point_update": "adam"}, "point_update"),
        ({"point_lr_multiplier": 0}, "point_lr_multiplier"),
        ({"point_lr_multiplier": float("inf")}, "point_lr_multiplier"),
        ({"point_lr_multiplier": "x"}, "point_lr_multiplier"),
    ],
)
def test_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        RiemannianOptimizer(tf.keras.optimizers.SGD(0.1), **kwargs)


def test_rejects_a_non_optimizer():
    with pytest.raises(ValueError, match="`optimizer`"):
        RiemannianOptimizer("sgd")
