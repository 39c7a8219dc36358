"""An independent float64 NumPy reference of the Poincaré ball, written from the formulas of the
paper (Eq. 7-17) and not from the library: the oracle of the geometry, quantizer, optimizer and
precision tests. Every function takes 1-D float64 vectors (flatten a kernel first)."""

import math

import numpy as np


def ref_lambda(x, r):
    return 2.0 / (1.0 - r * np.dot(x, x))


def ref_mobius_add(x, y, r):
    xy, x2, y2 = np.dot(x, y), np.dot(x, x), np.dot(y, y)
    num = (1.0 + 2.0 * r * xy + r * y2) * x + (1.0 - r * x2) * y
    return num / (1.0 + 2.0 * r * xy + r * r * x2 * y2)


def ref_scalar_mul(c, x, r):
    n = np.linalg.norm(x)
    if n == 0.0:
        return np.zeros_like(x)
    return np.tanh(c * np.arctanh(math.sqrt(r) * n)) * x / (math.sqrt(r) * n)


def ref_expmap(p, v, r):
    n = np.linalg.norm(v)
    if n == 0.0:
        return p.copy()
    sr = math.sqrt(r)
    return ref_mobius_add(p, np.tanh(sr * ref_lambda(p, r) * n / 2.0) * v / (sr * n), r)


def ref_expmap0(v, r):
    return ref_expmap(np.zeros_like(v), v, r)


def ref_logmap(p, q, r):
    u = ref_mobius_add(-p, q, r)
    n = np.linalg.norm(u)
    if n == 0.0:
        return np.zeros_like(u)
    sr = math.sqrt(r)
    return 2.0 / (sr * ref_lambda(p, r)) * np.arctanh(sr * n) * u / n


def ref_dist(x, y, r):
    return 2.0 / math.sqrt(r) * np.arctanh(math.sqrt(r) * np.linalg.norm(ref_mobius_add(-x, y, r)))


def ref_rgrad(x, g, r):
    return g / ref_lambda(x, r) ** 2


def ref_boundary_map(p, v, r):
    """HBNN(∂D): \\(p \\oplus v/(\\sqrt{r}\\|v\\|)\\), a point on the sphere."""
    return ref_mobius_add(p, v / (math.sqrt(r) * np.linalg.norm(v)), r)


def ref_sign(x):
    """±1 with larq's convention sign(0) = +1."""
    return np.where(np.asarray(x) >= 0, 1.0, -1.0)
