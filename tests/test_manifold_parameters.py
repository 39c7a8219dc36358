"""Tests for `hbnn_larq.manifold_parameters`: the ball constraint as a manifold tag, and the points' step policy."""

import math

import hbnn_larq  # (must come first: sets TF_USE_LEGACY_KERAS=1)
import numpy as np
import pytest
import tensorflow as tf

from hbnn_larq.geometry import PoincareBall
from hbnn_larq.manifold_parameters import (POINT_LR_MULTIPLIER, STANDARDIZED_BASE_POINT_LR_MULTIPLIER,
                                         PoincareBallConstraint, default_point_lr_multiplier, manifold_constraint)
from tests.helpers import random_data, tiny_model


@pytest.mark.parametrize("margin", [0, 0.0, 1, 1.0, -0.1, 1.5, float("nan")])
def test_bad_margin_raises(margin):
    with pytest.raises(ValueError, match="margin"):
        PoincareBallConstraint(margin=margin)


@pytest.mark.parametrize("r", [0, -1, float("nan"), float("inf"), "a", None])
def test_bad_radius_raises(r):
    with pytest.raises(ValueError, match="`r`"):
        PoincareBallConstraint(r=r)


@pytest.mark.parametrize("multiplier", [0, -1.0, float("nan"), float("inf"), "fast"])
def test_bad_point_lr_multiplier_raises(multiplier):
    with pytest.raises(ValueError, match="`point_lr_multiplier`"):
        PoincareBallConstraint(point_lr_multiplier=multiplier)


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
def test_projects_each_output_channel(dtype):
    r, margin = 0.5, 1e-3
    constraint = PoincareBallConstraint(r=r, axis=(0, 1, 2), margin=margin)
    rng = np.random.default_rng(0)
    w = rng.normal(size=(3, 3, 4, 6))
    w[..., :3] *= 0.01  # inside: ‖w_k‖ ≈ 0.06 < 1/√r ≈ 1.41
    w[..., 3:] *= 10.0  # outside
    w[0, 0, 0, 5] = np.nan  # a diverged entry is reset to 0 before projecting
    w = w.astype(dtype.as_numpy_dtype)
    out = constraint.project(tf.constant(w)).numpy()
    assert out.dtype == w.dtype and np.all(np.isfinite(out))
    np.testing.assert_array_equal(out[..., :3], w[..., :3])  # unchanged, bitwise
    sq = r * np.sum(out.astype(np.float64) ** 2, axis=(0, 1, 2))
    assert np.all(sq < 1.0)
    np.testing.assert_allclose(np.sqrt(sq[3:]), 1.0 - margin, rtol=1e-6)
    for k in (3, 4):  # direction kept
        cos = np.dot(out[..., k].ravel(), w[..., k].ravel()) / (
            np.linalg.norm(out[..., k]) * np.linalg.norm(w[..., k])
        )
        assert cos > 1 - 1e-6
    np.testing.assert_array_equal(out, PoincareBall(r, axis=(0, 1, 2)).projx(tf.constant(w), margin).numpy())


def test_axis_none_projects_the_whole_tensor():
    r = 0.05
    constraint = PoincareBallConstraint(r=r)
    w = np.full((3, 3, 8, 8), 1.0, np.float32)  # ‖w‖ = 24 > 1/√r ≈ 4.47
    out = constraint.project(tf.constant(w)).numpy()
    np.testing.assert_allclose(math.sqrt(r) * np.linalg.norm(out.astype(np.float64)), 1.0 - 1e-5, rtol=1e-6)
    np.testing.assert_allclose(out, np.full_like(w, out.flat[0]))  # uniform scaling


@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan, 1e30, 3e38])
def test_non_finite_and_huge_values_end_strictly_inside(value):
    r = 0.05
    constraint = PoincareBallConstraint(r=r)
    w = np.ones(100, np.float32)
    w[::7] = value
    out = constraint.project(tf.constant(w)).numpy()
    assert np.all(np.isfinite(out))
    assert r * np.sum(out.astype(np.float64) ** 2) < 1.0


def test_config_roundtrip_and_keras_serialization():
    constraint = PoincareBallConstraint(r=0.25, axis=[0, 1, 2], margin=1e-4, point_lr_multiplier=3)
    config = constraint.get_config()
    assert config == {"r": 0.25, "axis": (0, 1, 2), "margin": 1e-4, "point_lr_multiplier": 3.0}
    clone = PoincareBallConstraint.from_config(config)
    assert clone.manifold.r == 0.25 and clone.manifold.axis == (0, 1, 2) and clone.margin == 1e-4
    assert clone.point_lr_multiplier == 3.0
    restored = tf.keras.constraints.deserialize(tf.keras.constraints.serialize(constraint))
    assert isinstance(restored, PoincareBallConstraint)
    assert restored.get_config() == config


def test_manifold_constraint_and_keras_variable():
    constraint = PoincareBallConstraint(r=1.0)
    layer = tf.keras.layers.Layer()
    point = layer.add_weight(name="p", shape=(4,), initializer="zeros", constraint=constraint)
    plain = layer.add_weight(name="w", shape=(4,), initializer="zeros")
    assert manifold_constraint(point) is constraint
    assert manifold_constraint(plain) is None
    assert manifold_constraint(tf.Variable([1.0])) is None
    assert manifold_constraint(object()) is None
    point.assign([3.0, 0.0, 0.0, 4.0])
    point.assign(point.constraint.project(point))
    np.testing.assert_allclose(point.numpy(), np.array([0.6, 0.0, 0.0, 0.8]) * (1 - 1e-5), rtol=1e-6)


def test_a_plain_keras_optimizer_is_refused_with_the_fix():
    """A plain optimizer would give the points a Euclidean step with momentum and weight decay,
    then apply their constraint: the constraint refuses and names RiemannianOptimizer."""
    model = tiny_model(lambda: hbnn_larq.HyperbolicSign())
    model.compile(tf.keras.optimizers.SGD(0.1, momentum=0.9),
                  loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = random_data(16)
    with pytest.raises(ValueError, match="point_0.*RiemannianOptimizer"):
        model.fit(x, y, epochs=1, verbose=0)


@pytest.mark.parametrize("base, expected", [(None, POINT_LR_MULTIPLIER), ("ste_sign", POINT_LR_MULTIPLIER),
                                            ("ir_net", STANDARDIZED_BASE_POINT_LR_MULTIPLIER),
                                            ("recu", STANDARDIZED_BASE_POINT_LR_MULTIPLIER)])
def test_the_points_step_policy_lives_here_and_reaches_every_point(base, expected):
    q = hbnn_larq.HyperbolicSign(base=base)
    q.build((3, 3, 4, 8))
    assert default_point_lr_multiplier(q.base) == expected == manifold_constraint(q.points[0]).lr_multiplier
    assert hbnn_larq.RiemannianOptimizer(tf.keras.optimizers.SGD(0.1)).multiplier_of(q.points[0]) == expected
