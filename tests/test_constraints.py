"""Tests for `hbnn_larq.constraints.PoincareBallConstraint` and `ball_constraint_of`."""

import math

import hbnn_larq  # noqa: F401  (must come first: sets TF_USE_LEGACY_KERAS=1)
import numpy as np
import pytest
import tensorflow as tf

from hbnn_larq.constraints import PoincareBallConstraint, ball_constraint_of
from hbnn_larq.geometry import PoincareBall


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
    out = constraint(tf.constant(w)).numpy()
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
    out = constraint(tf.constant(w)).numpy()
    np.testing.assert_allclose(math.sqrt(r) * np.linalg.norm(out.astype(np.float64)), 1.0 - 1e-5, rtol=1e-6)
    np.testing.assert_allclose(out, np.full_like(w, out.flat[0]))  # uniform scaling


@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan, 1e30, 3e38])
def test_non_finite_and_huge_values_end_strictly_inside(value):
    r = 0.05
    constraint = PoincareBallConstraint(r=r)
    w = np.ones(100, np.float32)
    w[::7] = value
    out = constraint(tf.constant(w)).numpy()
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


def test_ball_constraint_of_and_keras_variable():
    constraint = PoincareBallConstraint(r=1.0)
    layer = tf.keras.layers.Layer()
    point = layer.add_weight(name="p", shape=(4,), initializer="zeros", constraint=constraint)
    plain = layer.add_weight(name="w", shape=(4,), initializer="zeros")
    assert ball_constraint_of(point) is constraint
    assert ball_constraint_of(plain) is None
    assert ball_constraint_of(tf.Variable([1.0])) is None
    assert ball_constraint_of(object()) is None
    point.assign([3.0, 0.0, 0.0, 4.0])
    point.assign(point.constraint(point))
    np.testing.assert_allclose(point.numpy(), np.array([0.6, 0.0, 0.0, 0.8]) * (1 - 1e-5), rtol=1e-6)
