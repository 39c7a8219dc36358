"""Tests for `hbnn_larq.geometry`: the Poincaré ball D_r^n = {x : r‖x‖² < 1}.

Oracles
- an independent float64 NumPy reference (`tests/reference.py`) written from the formulas of
  the paper, Eq. 7-17 (conformal factor, Möbius addition / scalar multiplication, exp map,
  log map with the corrected prefactor 2/(√r·λ_p), distance, Riemannian gradient g/λ²);
- tensorflow-riemopt's `Poincare(k)` manifold (test-only). Its `k` is our `r` (its ball is
  k‖x‖² < 1), its points live on the last axis, and its exp/log maps are NaN at a zero
  tangent vector / at q = p, so those cases are skipped for it only.

Error units: points are compared in units of the ball radius 1/√r (i.e. √r·|Δx|), tangent
vectors relative to their norm, so one tolerance serves every r.
"""

import math

import hbnn_larq  # noqa: F401  (must come first: sets TF_USE_LEGACY_KERAS=1)
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hbnn_larq import geometry
from hbnn_larq.geometry import PoincareBall
from tests.reference import (ref_dist, ref_expmap, ref_expmap0, ref_lambda, ref_logmap, ref_mobius_add,  # noqa: F401
                             ref_rgrad, ref_scalar_mul)

# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------

RS = [1e-3, 0.05, 1.0, 10.0]
SIZES = [1, 3, 64, 1000]


def unit(rng, n):
    d = rng.normal(size=n)
    return d / np.linalg.norm(d)


def rand_point(rng, n, r, max_rel=0.99, rel=None):
    """A point with ‖p‖ = rel/√r, rel uniform in [0, max_rel] unless given."""
    rel = rng.uniform(0.0, max_rel) if rel is None else rel
    return unit(rng, n) * rel / math.sqrt(r)


def rand_tangent(rng, n, r, p, max_arg=5.0, arg=None):
    """A tangent vector whose tanh argument √r·λ_p·‖v‖/2 is `arg` (uniform in [0, max_arg])."""
    arg = rng.uniform(0.0, max_arg) if arg is None else arg
    return unit(rng, n) * 2.0 * arg / (math.sqrt(r) * ref_lambda(p, r))


def t(x, dtype):
    return tf.constant(np.asarray(x), dtype=dtype)


def call(ball, method, *args, dtype=tf.float64):
    """Run a PoincareBall method on NumPy inputs (floats are passed through) -> float64 NumPy."""
    targs = [t(a, dtype) if isinstance(a, np.ndarray) else a for a in args]
    return np.asarray(getattr(ball, method)(*targs).numpy(), dtype=np.float64)


def rounded(x, dtype):
    """The input exactly as the library sees it in `dtype`, back in float64 for the reference."""
    return np.asarray(x).astype(dtype.as_numpy_dtype).astype(np.float64)


def pt_err(a, b, r):
    """Point error in units of the ball radius."""
    return math.sqrt(r) * np.max(np.abs(np.asarray(a) - np.asarray(b)))


def vec_err(a, b, floor=1e-6):
    """Tangent-vector error relative to the reference norm (relative to `floor` below it)."""
    return np.max(np.abs(np.asarray(a) - np.asarray(b))) / max(np.linalg.norm(b), floor)


def sq_rnorm(x, r):
    x = np.asarray(x, dtype=np.float64)
    return r * np.sum(x * x)


HYP = settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# ---------------------------------------------------------------------------------------------
# 1. Library vs the float64 NumPy reference
# ---------------------------------------------------------------------------------------------

# Tolerances. float64: the library evaluates the same closed forms as the reference in a
# different order, so the differences are rounding (~1e-16) amplified by the conditioning:
# λ_p ≤ 2/(1 - 0.99²) ≈ 100, artanh'(x) = 1/(1 - x²) ≲ 1e4 for the arguments used here, and the
# cancellation in ⊕ when exp_p(v) crosses the ball antiparallel to p (numerator and denominator
# ~(1 - √r‖p‖)²). Measured maxima over 4x4x60 draws: points 6e-12 radii (an n = 1 antiparallel
# saturated case; 3e-14 otherwise), log map / dist 1e-15 relative: tolerance 1e-9.
# float32 (eps 6e-8), inputs pre-rounded to float32 so only the library's arithmetic is
# measured: 1 - r‖p‖² ≥ 0.02 carries a relative error ≲ 3e-6 into λ_p; the antiparallel
# crossing amplifies eps by 1/(1 - √r‖p‖)² (≈ 1.5e3 at 0.974): measured 1e-7 radii for ⊕ of
# two points, 2e-4 radii for expmap in the worst (n = 1, antiparallel) draw, 2e-6 relative for
# log map / dist. Tolerances: points 1e-3 radii, vectors and scalars 3e-3 relative.
TOL = {
    tf.float64: dict(point=1e-9, vec=1e-9, scalar=1e-9),
    tf.float32: dict(point=1e-3, vec=3e-3, scalar=3e-3),
}
DTYPES = [tf.float64, tf.float32]


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("r", RS)
def test_matches_numpy_reference(r, n, dtype):
    rng = np.random.default_rng(1000 * n + int(r * 1000))
    ball = PoincareBall(r)
    tol = TOL[dtype]
    for _ in range(4):
        p = rounded(rand_point(rng, n, r), dtype)
        q = rounded(rand_point(rng, n, r), dtype)
        v = rounded(rand_tangent(rng, n, r, p), dtype)
        g = rounded(rng.normal(size=n), dtype)
        big_v = rounded(unit(rng, n) * rng.uniform(0, 100) / math.sqrt(r), dtype)
        c = float(rng.uniform(-3, 3))

        assert abs(call(ball, "lambda_x", p, dtype=dtype).item() - ref_lambda(p, r)) <= tol[
            "scalar"
        ] * ref_lambda(p, r)
        assert pt_err(call(ball, "mobius_add", p, q, dtype=dtype), ref_mobius_add(p, q, r), r) < tol["point"]
        assert pt_err(call(ball, "mobius_scalar_mul", c, p, dtype=dtype), ref_scalar_mul(c, p, r), r) < tol["point"]
        assert pt_err(call(ball, "expmap", p, v, dtype=dtype), ref_expmap(p, v, r), r) < tol["point"]
        assert pt_err(call(ball, "expmap", p, big_v, dtype=dtype), ref_expmap(p, big_v, r), r) < tol["point"]
        assert pt_err(call(ball, "expmap0", v, dtype=dtype), ref_expmap0(v, r), r) < tol["point"]
        assert pt_err(call(ball, "expmap0", big_v, dtype=dtype), ref_expmap0(big_v, r), r) < tol["point"]
        assert vec_err(call(ball, "logmap", p, q, dtype=dtype), ref_logmap(p, q, r)) < tol["vec"]
        assert vec_err(call(ball, "logmap0", q, dtype=dtype), ref_logmap(np.zeros(n), q, r)) < tol["vec"]
        d_ref = ref_dist(p, q, r)
        assert abs(call(ball, "dist", p, q, dtype=dtype).item() - d_ref) <= tol["scalar"] * max(d_ref, 1.0 / math.sqrt(r))
        assert vec_err(call(ball, "egrad2rgrad", p, g, dtype=dtype), ref_rgrad(p, g, r)) < tol["vec"]


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("r", RS)
def test_reference_special_points(r, dtype):
    """v = 0 (exp_p(0) = p exactly up to rounding), p = 0, q = p (log = 0), c ⊗ 0 = 0."""
    rng = np.random.default_rng(7)
    ball = PoincareBall(r)
    tol = TOL[dtype]
    n = 16
    zero = np.zeros(n)
    p = rounded(rand_point(rng, n, r), dtype)
    v = rounded(rand_tangent(rng, n, r, zero), dtype)
    assert pt_err(call(ball, "expmap", p, zero, dtype=dtype), p, r) < tol["point"]
    assert pt_err(call(ball, "expmap", zero, v, dtype=dtype), ref_expmap0(v, r), r) < tol["point"]
    np.testing.assert_array_equal(call(ball, "expmap", zero, zero, dtype=dtype), zero)
    np.testing.assert_array_equal(call(ball, "expmap0", zero, dtype=dtype), zero)
    np.testing.assert_array_equal(call(ball, "logmap0", zero, dtype=dtype), zero)
    np.testing.assert_array_equal(call(ball, "mobius_scalar_mul", 2.0, zero, dtype=dtype), zero)
    assert np.max(np.abs(call(ball, "logmap", p, p, dtype=dtype))) <= 1e-6 / math.sqrt(r)
    # The arsinh form of d(p, p) has ‖p - p‖ = 0 exactly (the Möbius form left ~1e-3 radii in float32)
    assert call(ball, "dist", p, p, dtype=dtype).item() <= 1e-12
    assert call(ball, "lambda_x", zero, dtype=dtype).item() == 2.0
    # p = 0: the Riemannian gradient is g / 4.
    g = rng.normal(size=n)
    np.testing.assert_allclose(call(ball, "egrad2rgrad", zero, g, dtype=dtype), g / 4.0, rtol=1e-6)


@pytest.mark.parametrize("r", RS)
def test_reference_near_boundary_float64(r):
    """Points with r‖p‖² = (1 - 1e-6)²: λ_p ≈ 1e6. In float64, 1 - r‖p‖² ≈ 2e-6 carries a relative
    error ≲ 1e-16/2e-6 = 5e-11, amplified by at most ~100 in the operations below: rtol 1e-7."""
    rng = np.random.default_rng(3)
    ball = PoincareBall(r)
    for n in (2, 64):
        p = rand_point(rng, n, r, rel=1.0 - 1e-6)
        q = rand_point(rng, n, r, max_rel=0.9)
        v = rand_tangent(rng, n, r, p, max_arg=3.0)
        lam = ref_lambda(p, r)
        assert lam > 4e5
        assert abs(call(ball, "lambda_x", p).item() / lam - 1.0) < 1e-7
        assert pt_err(call(ball, "mobius_add", p, q), ref_mobius_add(p, q, r), r) < 1e-7
        assert pt_err(call(ball, "mobius_add", q, p), ref_mobius_add(q, p, r), r) < 1e-7
        assert pt_err(call(ball, "expmap", p, v), ref_expmap(p, v, r), r) < 1e-7
        assert abs(call(ball, "dist", p, q).item() / ref_dist(p, q, r) - 1.0) < 1e-7
        # log_p near the boundary is intrinsically ill-conditioned: q = exp_p(v) is stored with
        # absolute rounding ~1e-16 radii while ‖q - p‖ ~ 1e-6 radii, and (-p) ⊕ q then scales that
        # difference by λ_p/2 ~ 5e5; measured 7e-5 relative, hence 1e-3.
        assert vec_err(call(ball, "logmap", p, ref_expmap(p, v, r)), v) < 1e-3
        assert vec_err(call(ball, "egrad2rgrad", p, q), ref_rgrad(p, q, r)) < 1e-7


# ---------------------------------------------------------------------------------------------
# 2. Second oracle: tensorflow-riemopt (batched points on the last axis, float64)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("r", RS)
def test_matches_riemopt(r):
    riemopt = pytest.importorskip("tensorflow_riemopt")
    # Same convention: ball k‖x‖² < 1, k = our r. k is passed as a float64 tensor because
    # riemopt does tf.cast(self.k, x.dtype), which rounds a Python float through float32 first
    # (k = 0.001 becomes 0.0010000000475; λ at 1e-6 from the boundary is then off by 2.4%).
    oracle = riemopt.manifolds.Poincare(k=tf.constant(r, tf.float64))
    ball = PoincareBall(r, axis=-1)
    rng = np.random.default_rng(11)
    B, n = 32, 10
    P = np.stack([rand_point(rng, n, r) for _ in range(B)])
    P[0] = rand_point(rng, n, r, rel=1.0 - 1e-6)  # one point near the boundary
    Q = np.stack([rand_point(rng, n, r) for _ in range(B)])
    V = np.stack([rand_tangent(rng, n, r, p) for p in P])  # nonzero: riemopt is NaN at v = 0
    G = rng.normal(size=(B, n))
    P_, Q_, V_, G_ = (tf.constant(a, tf.float64) for a in (P, Q, V, G))
    c = 0.7

    def close(ours, theirs, rtol=1e-9, atol=1e-12):
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=rtol, atol=atol / math.sqrt(r))

    close(ball.lambda_x(P_), oracle._lambda(P_, keepdims=True), rtol=1e-8)
    close(ball.mobius_add(P_, Q_), oracle._mobius_add(P_, Q_))
    close(ball.mobius_scalar_mul(c, Q_), oracle._mobius_scal_mul(Q_, c))
    close(ball.expmap(P_, V_), oracle.exp(P_, V_), rtol=1e-8)
    close(ball.expmap0(V_), oracle.exp0(V_))
    close(ball.logmap(P_, Q_), oracle.log(P_, Q_), rtol=1e-8)
    close(ball.logmap0(Q_), oracle.log0(Q_), rtol=1e-8)
    close(ball.dist(P_, Q_)[..., 0], oracle.dist(P_, Q_), rtol=1e-8)
    close(ball.egrad2rgrad(P_, G_), oracle.egrad2rgrad(P_, G_), rtol=1e-8, atol=0.0)
    # Both agree on which points are inside.
    assert bool(ball.contains(Q_)) and bool(oracle.check_point_on_manifold(Q_))


# ---------------------------------------------------------------------------------------------
# 3. Identities (deterministic, float64 and float32)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("r", RS)
def test_identities_float64(r):
    rng = np.random.default_rng(5)
    ball = PoincareBall(r)
    for n in (1, 3, 64, 1000):
        zero = np.zeros(n)
        for _ in range(3):
            p = rand_point(rng, n, r)
            v = rand_tangent(rng, n, r, p)
            y = call(ball, "expmap", p, v)
            assert vec_err(call(ball, "logmap", p, y), v) < 1e-8
            assert abs(call(ball, "dist", p, y).item() - ref_lambda(p, r) * np.linalg.norm(v)) < 1e-8 * max(
                1.0, ref_lambda(p, r) * np.linalg.norm(v)
            )
            assert pt_err(call(ball, "mobius_add", p, zero), p, r) < 1e-15
            assert pt_err(call(ball, "mobius_add", zero, p), p, r) < 1e-15
            assert pt_err(call(ball, "mobius_add", -p, p), zero, r) < 1e-12
            assert pt_err(call(ball, "mobius_scalar_mul", 1.0, p), p, r) < 1e-12
            assert pt_err(call(ball, "expmap", zero, v), call(ball, "expmap0", v), r) < 1e-15
            assert vec_err(call(ball, "logmap", zero, p), call(ball, "logmap0", p)) < 1e-12
            # boundary map lands on the sphere and Möbius translation keeps it there
            b = call(ball, "boundary_map", p, v)
            assert abs(math.sqrt(sq_rnorm(b, r)) - 1.0) < 1e-12
            s = unit(rng, n) / math.sqrt(r)
            assert abs(math.sqrt(sq_rnorm(call(ball, "mobius_add", p, s), r)) - 1.0) < 1e-10
            # the Riemannian gradient represents the differential: λ² <rgrad, w> = <g, w>
            g, w = rng.normal(size=n), rng.normal(size=n)
            rg = call(ball, "egrad2rgrad", p, g)
            assert abs(ref_lambda(p, r) ** 2 * np.dot(rg, w) - np.dot(g, w)) < 1e-9 * np.linalg.norm(g) * np.linalg.norm(w)


@pytest.mark.parametrize("r", [0.05, 1.0])
def test_roundtrip_float32_moderate_norms(r):
    """float32 log∘exp for ‖p‖ ≤ 0.5/√r and tanh argument ≤ 2: λ_p ≤ 2.7 and the artanh argument
    ≤ tanh(2) = 0.964 (amplification 1/(1 - 0.93) ≈ 14); measured relative error ≲ 1e-5."""
    rng = np.random.default_rng(9)
    ball = PoincareBall(r)
    for n in (3, 64, 1000):
        for _ in range(4):
            p = rounded(rand_point(rng, n, r, max_rel=0.5), tf.float32)
            v = rounded(rand_tangent(rng, n, r, p, max_arg=2.0), tf.float32)
            y = call(ball, "expmap", p, v, dtype=tf.float32)
            assert vec_err(call(ball, "logmap", p, y, dtype=tf.float32), v) < 1e-4
            d = call(ball, "dist", p, y, dtype=tf.float32).item()
            assert abs(d - ref_lambda(p, r) * np.linalg.norm(v)) < 1e-4 * max(1.0, d)


def kaiming_kernel(rng, shape, zero_fraction=0.01):
    std = math.sqrt(2.0 / (shape[0] * shape[1] * shape[2]))
    w = (rng.normal(size=shape) * std).astype(np.float32)
    w[rng.random(size=shape) < zero_fraction] = 0.0
    return w


@pytest.mark.parametrize("r", [0.05, 1.0])
@pytest.mark.parametrize("axis", [None, (0, 1, 2)], ids=["flat", "per_channel"])
def test_expmap0_preserves_signs_float32(r, axis):
    """exp_0(w) is a positive multiple of w: identical signs (zeros stay 0), in float32, for a
    Kaiming 3x3x128x256 kernel; r = 1 with the flat kernel saturates tanh (argument ≈ 21)."""
    rng = np.random.default_rng(2)
    w = kaiming_kernel(rng, (3, 3, 128, 256))
    ball = PoincareBall(r, axis=axis)
    for out in (ball.expmap0(tf.constant(w)), ball.expmap(tf.zeros_like(w), tf.constant(w))):
        out = out.numpy()
        assert out.dtype == np.float32 and np.all(np.isfinite(out))
        np.testing.assert_array_equal(np.sign(out), np.sign(w))
        # and the multiple is one positive constant per point
        nz = w != 0
        ratio = out[nz].astype(np.float64) / w[nz]
        assert ratio.min() > 0
        if axis is None:
            assert ratio.max() / ratio.min() - 1.0 < 1e-6
        assert sq_rnorm(out if axis is None else out[..., 0], r) <= 1.0 + 1e-6


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("r", [1e-3, 0.05, 1.0, 10.0])
def test_tiny_vectors_keep_their_signs(r, dtype):
    """Tiny (normal-range) tangent vectors: below the norm clamp, exp_0(v) = v·tanh(√r·1e-15)/
    (√r·1e-15) = v. Computing tanh(·)·v first underflows (float32: 2e-16·1e-30 < 1e-38, flushed
    to 0), which turned exp_0(v) into 0 and lost the signs; regression test."""
    tiny = 1e-30 if dtype == tf.float32 else 1e-300
    v = np.array([tiny, -tiny, 0.0, 3 * tiny])
    ball = PoincareBall(r)
    zero = np.zeros_like(v)
    for out in (
        call(ball, "expmap0", v, dtype=dtype),
        call(ball, "expmap", zero, v, dtype=dtype),
        call(ball, "logmap0", v, dtype=dtype),
        call(ball, "logmap", zero, v, dtype=dtype),
        call(ball, "mobius_scalar_mul", 0.5, v, dtype=dtype),
    ):
        np.testing.assert_array_equal(np.sign(out), np.sign(v))
    np.testing.assert_allclose(call(ball, "expmap0", v, dtype=dtype), v, rtol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("r", [1e-3, 0.05, 10.0])
def test_projx(r, dtype):
    ball = PoincareBall(r)
    np_dtype = dtype.as_numpy_dtype
    big = np.finfo(np_dtype).max
    margin = 1e-5
    inputs = [
        np.full(1000, 1e19, np_dtype),  # float32: the sum of squares overflows
        np.full(8, big / 2, np_dtype),
        np.array([big, -big, 1.0], np_dtype),
        np.array([3.0, -2.0, 1e30], np_dtype),
        np.array([np.inf, 1.0, -2.0], np_dtype),
        np.array([np.nan, 5.0, -np.inf], np_dtype),
        np.array([np.nan, np.nan], np_dtype),
        np.zeros(5, np_dtype),
        (unit(np.random.default_rng(0), 50) * 3.0 / math.sqrt(r)).astype(np_dtype),
    ]
    for x in inputs:
        y = ball.projx(tf.constant(x), margin).numpy()
        assert y.dtype == np_dtype and np.all(np.isfinite(y)), x
        assert sq_rnorm(y, r) < 1.0, x  # strictly inside
        finite_x = np.where(np.isfinite(x), x, 0).astype(np.float64)
        if np.any(finite_x != 0):
            # a projection keeps the direction of (the finite part of) x ...
            fx = finite_x / np.abs(finite_x).max()  # rescaled: float64 overflows too
            cos = np.dot(y, fx) / (np.linalg.norm(y) * np.linalg.norm(fx))
            assert cos > 1 - 1e-6, x
            # ... and lands at (1 - margin)/√r when x was outside
            with np.errstate(over="ignore"):  # |x|^2 = inf for the huge inputs: outside, rightly
                outside = sq_rnorm(finite_x, r) >= 1.0
            if outside:
                assert abs(math.sqrt(sq_rnorm(y, r)) - (1 - margin)) < 1e-6, x
    # points already inside are returned unchanged (bitwise)
    x = (unit(np.random.default_rng(1), 50) * 0.9 / math.sqrt(r)).astype(np_dtype)
    np.testing.assert_array_equal(ball.projx(tf.constant(x), margin).numpy(), x)


def test_contains():
    ball = PoincareBall(4.0)  # radius 0.5
    assert bool(ball.contains(tf.constant([0.3, 0.3])))
    assert not bool(ball.contains(tf.constant([0.5, 0.0])))
    assert bool(ball.contains(tf.constant([0.5, 0.0]), atol=1e-6))
    per_row = PoincareBall(4.0, axis=-1)
    assert not bool(per_row.contains(tf.constant([[0.1, 0.0], [0.6, 0.0]])))


# ---------------------------------------------------------------------------------------------
# 4. Property tests (hypothesis, float64), r log-uniform in [1e-3, 10]
# ---------------------------------------------------------------------------------------------

radii = st.floats(-3.0, 1.0).map(lambda e: 10.0**e)
seeds = st.integers(0, 2**32 - 1)
dims = st.integers(1, 40)
rels = st.floats(0.0, 0.99)


@HYP
@given(r=radii, n=dims, seed=seeds, rel=rels, arg=st.floats(0.0, 5.0))
# Found by CI with the Möbius-form distance (dist(y, p) vs dist(p, y), dist vs λ_p‖v‖ and the
# round trip all off by 1-2e-9 relative): p at 98.4-98.8 % of the radius, y at 99.99995 %.
@example(r=4.552009135705047, n=1, seed=1, rel=0.98828125, arg=5.0)
@example(r=1.0, n=3, seed=0, rel=0.984375, arg=5.0)
@example(r=1.0, n=1, seed=1, rel=0.98828125, arg=5.0)
def test_prop_log_exp_inverse_and_distance(r, n, seed, rel, arg):
    rng = np.random.default_rng(seed)
    ball = PoincareBall(r)
    p = rand_point(rng, n, r, rel=rel)
    v = rand_tangent(rng, n, r, p, arg=arg)
    y = call(ball, "expmap", p, v)
    assert sq_rnorm(y, r) < 1.0
    # tanh argument ≤ 5: artanh amplifies the final rounding by ≤ 1/(1 - tanh(5)²) ≈ 5.5e3.
    # For ‖v‖ → 0 the error is absolute: the cancellation in (-p) ⊕ y, ~eps·‖p‖, is scaled by the
    # Möbius sum's 1/(1 - r‖p‖²) = λ_p/2 (≈ 16 at 97 % of the radius): measured against 1e-6·λ_p/2 radii.
    floor = 1e-6 * ref_lambda(p, r) / 2 / math.sqrt(r)
    assert vec_err(call(ball, "logmap", p, y), v, floor=floor) < 1e-9
    dist = call(ball, "dist", p, y).item()
    expected = ref_lambda(p, r) * np.linalg.norm(v)
    assert abs(dist - expected) <= 1e-9 * max(1.0, expected)
    assert abs(call(ball, "dist", y, p).item() - dist) <= 1e-9 * max(1.0, dist)


@HYP
@given(r=radii, n=dims, seed=seeds, rel=rels)
def test_prop_mobius_identities(r, n, seed, rel):
    rng = np.random.default_rng(seed)
    ball = PoincareBall(r)
    zero = np.zeros(n)
    p = rand_point(rng, n, r, rel=rel)
    q = rand_point(rng, n, r)
    assert pt_err(call(ball, "mobius_add", p, zero), p, r) < 1e-14
    assert pt_err(call(ball, "mobius_add", zero, p), p, r) < 1e-14
    assert pt_err(call(ball, "mobius_add", -p, p), zero, r) < 1e-12
    # left cancellation: (-p) ⊕ (p ⊕ q) = q
    assert pt_err(call(ball, "mobius_add", -p, call(ball, "mobius_add", p, q)), q, r) < 1e-9
    assert sq_rnorm(call(ball, "mobius_add", p, q), r) < 1.0
    # Möbius translation keeps the sphere; boundary_map lands on it
    s = unit(rng, n) / math.sqrt(r)
    assert abs(math.sqrt(sq_rnorm(call(ball, "mobius_add", p, s), r)) - 1.0) < 1e-9
    assert abs(math.sqrt(sq_rnorm(call(ball, "boundary_map", p, q - p if np.any(q != p) else s), r)) - 1.0) < 1e-9


@HYP
@given(r=radii, n=dims, seed=seeds, rel=rels, c1=st.floats(-3, 3), c2=st.floats(-3, 3))
def test_prop_scalar_mul(r, n, seed, rel, c1, c2):
    rng = np.random.default_rng(seed)
    ball = PoincareBall(r)
    p = rand_point(rng, n, r, rel=min(rel, 0.95))
    assert pt_err(call(ball, "mobius_scalar_mul", 1.0, p), p, r) < 1e-12
    # (c1 c2) ⊗ p = c1 ⊗ (c2 ⊗ p), skipped where the result saturates to the boundary
    if abs(c1 * c2 * np.arctanh(math.sqrt(r) * np.linalg.norm(p))) < 5.0:
        lhs = call(ball, "mobius_scalar_mul", c1 * c2, p)
        rhs = call(ball, "mobius_scalar_mul", c1, call(ball, "mobius_scalar_mul", c2, p))
        assert pt_err(lhs, rhs, r) < 1e-9
    assert pt_err(call(ball, "mobius_scalar_mul", c1, p), ref_scalar_mul(c1, p, r), r) < 1e-12


@HYP
# TensorFlow's CPU kernels flush subnormals to zero, so tiny arguments start at 1e-12 (entries
# stay normal floats); 0 is drawn explicitly.
@given(r=radii, n=dims, seed=seeds, arg=st.one_of(st.just(0.0), st.floats(1e-12, 30.0)))
def test_prop_expmap0_positive_multiple(r, n, seed, arg):
    rng = np.random.default_rng(seed)
    ball = PoincareBall(r)
    v = rand_tangent(rng, n, r, np.zeros(n), arg=arg)
    v[rng.random(n) < 0.2] = 0.0
    y = call(ball, "expmap0", v)
    np.testing.assert_array_equal(np.sign(y), np.sign(v))
    assert sq_rnorm(y, r) <= 1.0
    if arg < 5.0:
        assert vec_err(call(ball, "logmap0", y), v) < 1e-9


@HYP
@given(r=radii, n=dims, seed=seeds, rel=rels)
def test_prop_egrad2rgrad(r, n, seed, rel):
    rng = np.random.default_rng(seed)
    ball = PoincareBall(r)
    p = rand_point(rng, n, r, rel=rel)
    g = rng.normal(size=n)
    rg = call(ball, "egrad2rgrad", p, g)
    np.testing.assert_allclose(rg, g * (1.0 - r * p @ p) ** 2 / 4.0, rtol=1e-12, atol=0)


# ---------------------------------------------------------------------------------------------
# 5. Finiteness of values and gradients (float32), Jacobians at v = 0
# ---------------------------------------------------------------------------------------------


def _values_and_grads(fn, *inputs):
    inputs = [tf.constant(x) for x in inputs]
    with tf.GradientTape() as tape:
        for x in inputs:
            tape.watch(x)
        out = fn(*inputs)
        weights = tf.constant(np.random.default_rng(0).normal(size=out.shape), out.dtype)
        loss = tf.reduce_sum(out * weights)
    grads = tape.gradient(loss, inputs)
    return out.numpy(), [None if g is None else g.numpy() for g in grads]


def _finite_cases(r, n=64):
    rng = np.random.default_rng(4)
    f32 = np.float32
    zero = np.zeros(n, f32)
    d = unit(rng, n)
    p_in = rand_point(rng, n, r, rel=0.5).astype(f32)
    p_edge = (d * (1.0 - 1e-6) / math.sqrt(r)).astype(f32)
    v = rand_tangent(rng, n, r, np.zeros(n)).astype(f32)
    return {
        "p=0,v=0": (zero, zero),
        "p=0,v": (zero, v),
        "p,v=0": (p_in, zero),
        "p,v": (p_in, v),
        "edge,v=0": (p_edge, zero),
        "edge,v": (p_edge, v),
        "edge,-p": (p_edge, -p_edge),  # exp map crosses the ball: cancellation in ⊕
        "edge,+p": (p_edge, p_edge),
        "edge,edge'": (p_edge, (-d * (1.0 - 1e-6) / math.sqrt(r)).astype(f32)),
    }


@pytest.mark.parametrize("r", [1e-3, 0.05, 1.0, 10.0])
def test_finite_values_and_gradients_float32(r):
    ball = PoincareBall(r)
    ops = {
        "expmap": ball.expmap,
        "boundary_map": ball.boundary_map,
        "logmap": ball.logmap,
        "dist": ball.dist,
        "mobius_add": ball.mobius_add,
        "egrad2rgrad": ball.egrad2rgrad,
        "expmap0": lambda a, b: ball.expmap0(b),
        "logmap0": lambda a, b: ball.logmap0(a),
        "scalar_mul": lambda a, b: ball.mobius_scalar_mul(-0.3, a),
        "lambda_x": lambda a, b: ball.lambda_x(a),
        "projx": lambda a, b: ball.projx(a + b),
    }
    for case, (a, b) in _finite_cases(r).items():
        for name, op in ops.items():
            out, grads = _values_and_grads(op, a, b)
            assert np.all(np.isfinite(out)), (case, name)
            for g in grads:
                assert g is None or np.all(np.isfinite(g)), (case, name)
            # Containment is not checked for the antipodal edge cases: there exp_p(v) / p ⊕ q
            # crosses the whole ball and ⊕ cancels catastrophically (numerator and denominator
            # ~1e-12 in exact arithmetic); float32 then lands off the ball (r‖y‖² up to ~5),
            # even float64 gives r‖y‖² = 1.0003. Only finiteness is promised there.
            antipodal = case in ("edge,-p", "edge,edge'")
            if not antipodal and (name in ("expmap", "boundary_map") or (name == "mobius_add" and sq_rnorm(b, r) < 1)):
                # the result is a point: never (noticeably) outside the ball
                assert sq_rnorm(out, r) < 1.0 + 1e-5, (case, name)


@pytest.mark.parametrize("r", [0.05, 1.0])
def test_finite_layer_flat_kernel_float32(r):
    """A layer-flat 3x3x512x512 Kaiming kernel: √r‖w‖ ≈ 7 (r = 0.05) or 32 (r = 1), i.e. tanh at
    or beyond float32 saturation; values and gradients w.r.t. p and w stay finite."""
    rng = np.random.default_rng(6)
    w = kaiming_kernel(rng, (3, 3, 512, 512), zero_fraction=0.0)
    ball = PoincareBall(r)
    for p in (np.zeros_like(w), (unit(rng, w.size).reshape(w.shape) * 0.5 / math.sqrt(r)).astype(np.float32)):
        out, (gp, gw) = _values_and_grads(ball.expmap, p, w)
        assert np.all(np.isfinite(out)) and np.all(np.isfinite(gp)) and np.all(np.isfinite(gw))
        assert sq_rnorm(out, r) < 1.0 + 1e-5
        if not p.any():
            np.testing.assert_array_equal(np.sign(out), np.sign(w))


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("r", [1e-3, 0.05, 1.0, 10.0])
def test_jacobians_at_zero_tangent(r, dtype):
    """d exp_p(v)/dv at v = 0 is the identity for every p (exp_p(tv) = p + tv + O(t²); at
    p = 0, exp_0(v) = v + O(‖v‖³)); d exp_p(0)/dp = I since exp_p(0) = p. By the inverse
    function theorem d log_p(q)/dq = I and d log_p(q)/dp = -I at q = p. These exercise the
    zero-norm guard, whose gradient must be the limit, not 0 or NaN."""
    rng = np.random.default_rng(8)
    n = 5
    eye = np.eye(n)
    atol = 1e-9 if dtype == tf.float64 else 1e-5

    batched = PoincareBall(r, axis=-1)

    def jac(method, wrt, *args):
        """Jacobian of ball.method(*args) w.r.t. args[wrt] with one gradient call: n copies of the
        inputs as a batch of points (axis=-1); row i of the batch yields row i of the Jacobian."""
        fn = method if callable(method) else getattr(batched, method)
        args = [tf.constant(np.tile(a, (n, 1)), dtype) for a in args]
        with tf.GradientTape() as tape:
            tape.watch(args[wrt])
            loss = tf.reduce_sum(fn(*args) * tf.eye(n, dtype=dtype))
        return tape.gradient(loss, args[wrt]).numpy()

    zero = np.zeros(n)
    for p in (zero, rand_point(rng, n, r, rel=0.6)):
        np.testing.assert_allclose(jac("expmap", 1, p, zero), eye, atol=atol)
        np.testing.assert_allclose(jac("expmap", 0, p, zero), eye, atol=atol)
        np.testing.assert_allclose(jac("expmap0", 0, zero), eye, atol=atol)
        np.testing.assert_allclose(jac("logmap", 1, p, p), eye, atol=atol)
        np.testing.assert_allclose(jac("logmap", 0, p, p), -eye, atol=atol)
        np.testing.assert_allclose(jac("logmap0", 0, zero), eye, atol=atol)
        # log_p(p) = 0 for every p: total derivative I - I = 0
        np.testing.assert_allclose(jac(lambda x: batched.logmap(x, x), 0, p), 0 * eye, atol=atol)


@pytest.mark.parametrize("r", [0.05, 2.0])
def test_gradients_match_finite_differences(r):
    """Autodiff vs central finite differences (float64) at generic interior points."""
    rng = np.random.default_rng(10)
    ball = PoincareBall(r)
    n = 4
    p = tf.constant(rand_point(rng, n, r, rel=0.7))
    q = tf.constant(rand_point(rng, n, r, rel=0.4))
    v = tf.constant(rand_tangent(rng, n, r, p.numpy(), arg=1.0))
    for fn, args in [
        (ball.expmap, [p, v]),
        (ball.logmap, [p, q]),
        (ball.mobius_add, [p, q]),
        (ball.dist, [p, q]),
        (ball.boundary_map, [p, v]),
        (lambda x: ball.mobius_scalar_mul(0.6, x), [q]),
    ]:
        theoretical, numerical = tf.test.compute_gradient(fn, args, delta=1e-6 / math.sqrt(r))
        for th, nu in zip(theoretical, numerical):
            np.testing.assert_allclose(th, nu, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# 6. The `axis` argument
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("axis", [(0, 1, 2), [0, 1, 2], (-4, -3, -2)])
def test_axis_per_output_channel(axis):
    r = 0.5
    rng = np.random.default_rng(12)
    shape = (3, 3, 4, 5)
    n = 36
    ball = PoincareBall(r, axis=axis)
    P = np.stack([rand_point(rng, n, r) for _ in range(5)], axis=-1).reshape(shape)
    Q = np.stack([rand_point(rng, n, r) for _ in range(5)], axis=-1).reshape(shape)
    V = np.stack([rand_tangent(rng, n, r, P.reshape(n, 5)[:, k]) for k in range(5)], axis=-1).reshape(shape)
    V[..., 2] = 0.0  # one channel with a zero tangent vector
    Big = Q * 30.0  # mostly outside
    col = lambda X, k: X.reshape(n, 5)[:, k]  # noqa: E731
    out = {
        "expmap": call(ball, "expmap", P, V),
        "logmap": call(ball, "logmap", P, Q),
        "mobius_add": call(ball, "mobius_add", P, Q),
        "expmap0": call(ball, "expmap0", V),
        "boundary_map": call(ball, "boundary_map", P, Q),
        "scalar_mul": call(ball, "mobius_scalar_mul", 0.4, Q),
        "rgrad": call(ball, "egrad2rgrad", P, Q),
        "projx": call(ball, "projx", Big),
    }
    dist = call(ball, "dist", P, Q)
    lam = call(ball, "lambda_x", P)
    assert dist.shape == lam.shape == (1, 1, 1, 5)
    for k in range(5):
        p, q, v = col(P, k), col(Q, k), col(V, k)
        big = col(Big, k)
        proj = big * min(1.0, (1 - 1e-5) / (math.sqrt(r) * np.linalg.norm(big)))
        expected = {
            "expmap": ref_expmap(p, v, r),
            "logmap": ref_logmap(p, q, r),
            "mobius_add": ref_mobius_add(p, q, r),
            "expmap0": ref_expmap0(v, r),
            "boundary_map": ref_mobius_add(p, q / (math.sqrt(r) * np.linalg.norm(q)), r),
            "scalar_mul": ref_scalar_mul(0.4, q, r),
            "rgrad": ref_rgrad(p, q, r),
            "projx": proj,
        }
        for name, value in expected.items():
            np.testing.assert_allclose(col(out[name], k), value, rtol=1e-9, atol=1e-12, err_msg=name)
        np.testing.assert_allclose(dist[0, 0, 0, k], ref_dist(p, q, r), rtol=1e-9)
        np.testing.assert_allclose(lam[0, 0, 0, k], ref_lambda(p, r), rtol=1e-12)


def test_axis_none_is_one_flat_vector():
    r = 0.05
    rng = np.random.default_rng(13)
    shape = (3, 3, 4, 5)
    n = int(np.prod(shape))
    ball = PoincareBall(r)
    p = rand_point(rng, n, r)
    q = rand_point(rng, n, r)
    v = rand_tangent(rng, n, r, p)
    P, Q, V = (x.reshape(shape) for x in (p, q, v))
    np.testing.assert_allclose(call(ball, "expmap", P, V).ravel(), ref_expmap(p, v, r), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(call(ball, "logmap", P, Q).ravel(), ref_logmap(p, q, r), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(call(ball, "mobius_add", P, Q).ravel(), ref_mobius_add(p, q, r), rtol=1e-9, atol=1e-12)
    d = call(ball, "dist", P, Q)
    assert d.shape == (1, 1, 1, 1)
    np.testing.assert_allclose(d.item(), ref_dist(p, q, r), rtol=1e-9)
    # the flat reading differs from the per-channel one
    per_channel = PoincareBall(r, axis=(0, 1, 2))
    assert not np.allclose(call(per_channel, "expmap", P, V), call(ball, "expmap", P, V))


# ---------------------------------------------------------------------------------------------
# 7. Bad input, config, module functions
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [0, 0.0, -1, float("nan"), float("inf"), -float("inf"), "a", None, [1.0]])
def test_bad_radius_raises(bad):
    with pytest.raises(ValueError, match="`r`"):
        PoincareBall(bad)


def test_config_and_radius():
    ball = PoincareBall("0.25", axis=[0, 1, 2])  # numeric strings are accepted as floats
    assert ball.r == 0.25 and ball.radius == 2.0 and ball.axis == (0, 1, 2)
    assert ball.get_config() == {"r": 0.25, "axis": (0, 1, 2)}
    clone = PoincareBall(**ball.get_config())
    assert clone.r == ball.r and clone.axis == ball.axis
    assert "0.25" in repr(ball)
    assert PoincareBall().r == 0.05


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_module_artanh_tanh(dtype):
    x = tf.constant([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0], dtype)
    a = geometry.artanh(x).numpy()
    assert np.all(np.isfinite(a)) and np.all(np.diff(a) >= 0)
    np.testing.assert_allclose(a[2:5], np.arctanh([-0.5, 0.0, 0.5]), rtol=1e-6)
    # clamped below 1 and still large: float32 artanh(1 - 6e-8) ≈ 8.3, float64 ≈ 17.6
    assert a[-1] > (8.0 if dtype == tf.float32 else 17.0)
    y = tf.constant([-1e30, -20.0, -1.0, 0.0, 1.0, 20.0, 1e30], dtype)
    th = geometry.tanh(y).numpy()
    np.testing.assert_allclose(th, np.tanh(np.clip(y.numpy().astype(np.float64), -15, 15)), rtol=1e-6)
    assert np.all(np.abs(th) <= 1.0)
    with tf.GradientTape() as tape:
        tape.watch(x)
        s = tf.reduce_sum(geometry.artanh(x))
    assert np.all(np.isfinite(tape.gradient(s, x).numpy()))
