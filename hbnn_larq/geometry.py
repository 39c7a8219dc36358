"""The Poincaré ball: the hyperbolic space in which HBNN constrains binarized weights.

The ball of "radius" parameter `r > 0` (the paper's name; it is the curvature magnitude) is

\\[
\\mathbb{D}_r^n = \\{x \\in \\mathbb{R}^n : r\\|x\\|^2 < 1\\},
\\]

a ball of Euclidean radius \\(1/\\sqrt{r}\\) and curvature \\(-r\\); \\(r \\to 0\\) recovers
\\(\\mathbb{R}^n\\). `PoincareBall` is the manifold object (in the style of geoopt): it knows the
gyrovector operations and maps, and is kept apart from the optimizer that uses it
(`hbnn_larq.optimizers`). Every method works on tensors whose slices along `axis` are the points
(`axis=None`: the whole tensor is one vector, the paper's layer-flat reading).

Numerics: every guard comes from the dtype being computed in (`ml_dtypes.finfo`): squared norms
are floored at the smallest normal number, so that values *and* gradients are finite at `v = 0`;
`artanh` arguments are clamped to \\(1 - \\epsilon\\) and the conformal denominators
\\(1 - r\\|x\\|^2\\) floored at \\(\\epsilon\\), so nothing produces NaN or inf, also within 1e-6 of
the boundary. 16-bit floats (float16, bfloat16) are computed in float32 and the results cast
back: a layer-sized norm or inner product in 8-11 significant bits is not geometry.

# References
- Chen et al., Hyperbolic Binary Neural Network, IEEE TNNLS 2024 (arXiv 2501.03471), Eq. 7-17.
- Ganea, Bécigneul, Hofmann, Hyperbolic Neural Networks, NeurIPS 2018.
- Kochurov, Karimov, Kozlukov, geoopt: Riemannian Optimization in PyTorch, 2020.
"""

from __future__ import annotations

import functools
import math

import ml_dtypes
import tensorflow as tf

_HALF = (tf.float16, tf.bfloat16)


def eps(dtype) -> float:
    """Machine epsilon of `dtype` (float32: 1.19e-7, float64: 2.2e-16)."""
    return float(ml_dtypes.finfo(tf.as_dtype(dtype).as_numpy_dtype).eps)


def tiny(dtype) -> float:
    """Smallest positive normal number of `dtype` (float32: 1.2e-38)."""
    return float(ml_dtypes.finfo(tf.as_dtype(dtype).as_numpy_dtype).tiny)


def artanh(x: tf.Tensor) -> tf.Tensor:
    """`atanh` with its argument clamped into \\([-1 + \\epsilon, 1 - \\epsilon]\\) of its dtype."""
    bound = 1.0 - eps(x.dtype)
    return tf.atanh(tf.clip_by_value(x, -bound, bound))


def _is_half(value) -> bool:
    return hasattr(value, "dtype") and tf.as_dtype(value.dtype) in _HALF


def full_precision(method):
    """Run `method` in float32 when any of its tensor arguments is float16 or bfloat16, and cast
    its result back to that dtype (float32 and float64 arguments are left alone)."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        half = next((tf.as_dtype(a.dtype) for a in args if _is_half(a)), None)
        if half is None:
            return method(self, *args, **kwargs)
        args = [tf.cast(a, tf.float32) if _is_half(a) else a for a in args]
        return tf.nest.map_structure(lambda t: tf.cast(t, half), method(self, *args, **kwargs))

    return wrapper


def tanh(x: tf.Tensor) -> tf.Tensor:
    """`tanh` with its argument clamped to [-15, 15] as in geoopt (1 - tanh(15) = 2e-13)."""
    return tf.tanh(tf.clip_by_value(x, -15.0, 15.0))


class PoincareBall:
    """The Poincaré ball \\(\\mathbb{D}_r^n\\) of curvature \\(-r\\).

    # Arguments
    r: curvature magnitude (the paper's "radius"), a float > 0; the ball has Euclidean radius
        \\(1/\\sqrt{r}\\). Default 0.05 as in the paper.
    axis: the axes that hold one point. `None` (default): the whole tensor is one vector.
        An int or a tuple of ints: each slice along these axes is a point (e.g. `(0, 1, 2)` for
        one point per output channel of a `(kh, kw, c_in, c_out)` kernel).

    # Raises
    ValueError: if `r` is not a finite number > 0.
    """

    def __init__(self, r: float = 0.05, axis=None):
        try:
            r_value = float(r)
        except (TypeError, ValueError):
            raise ValueError(f"`r` must be a float > 0, got {r!r}.") from None
        if not (r_value > 0 and math.isfinite(r_value)):
            raise ValueError(f"`r` must be a finite float > 0 (ball radius 1/sqrt(r)), got {r!r}.")
        self.r = r_value
        self.sqrt_r = math.sqrt(r_value)
        self.axis = tuple(axis) if isinstance(axis, (list, tuple)) else axis

    @property
    def radius(self) -> float:
        """Euclidean radius \\(1/\\sqrt{r}\\) of the ball."""
        return 1.0 / self.sqrt_r

    def __repr__(self):
        return f"PoincareBall(r={self.r}, axis={self.axis})"

    def get_config(self) -> dict:
        return {"r": self.r, "axis": self.axis}

    # -- reductions over one point ------------------------------------------------------------
    def sqnorm(self, x: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(tf.square(x), axis=self.axis, keepdims=True)

    def norm(self, x: tf.Tensor) -> tf.Tensor:
        """Euclidean norm per point, its square floored at the dtype's smallest normal number
        (finite value and gradient at 0). In the dtype of `x`: pass float32 for 16-bit data."""
        return self._floored_norm(self.sqnorm(x))

    @staticmethod
    def _floored_norm(sqnorm: tf.Tensor) -> tf.Tensor:
        return tf.sqrt(tf.maximum(sqnorm, tiny(sqnorm.dtype)))

    def inner(self, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(x * y, axis=self.axis, keepdims=True)

    # -- geometry ------------------------------------------------------------------------------
    @full_precision
    def lambda_x(self, x: tf.Tensor) -> tf.Tensor:
        """Conformal factor \\(\\lambda_x = 2 / (1 - r\\|x\\|^2)\\) (paper Eq. 7)."""
        return 2.0 / self._clamp_positive(1.0 - self.r * self.sqnorm(x))

    @full_precision
    def mobius_add(self, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        """Möbius addition (paper Eq. 10):

        \\[
        x \\oplus y = \\frac{(1 + 2r\\langle x,y\\rangle + r\\|y\\|^2)\\,x + (1 - r\\|x\\|^2)\\,y}
                           {1 + 2r\\langle x,y\\rangle + r^2\\|x\\|^2\\|y\\|^2}
        \\]
        """
        r = self.r
        xy = self.inner(x, y)
        x2 = self.sqnorm(x)
        y2 = self.sqnorm(y)
        numerator = (1.0 + 2.0 * r * xy + r * y2) * x + (1.0 - r * x2) * y
        denominator = 1.0 + 2.0 * r * xy + r * r * x2 * y2
        return numerator / self._clamp_positive(denominator)

    @full_precision
    def mobius_scalar_mul(self, c, x: tf.Tensor) -> tf.Tensor:
        """Möbius scalar multiplication (paper Eq. 17):
        \\(c \\otimes x = \\tanh(c\\,\\mathrm{artanh}(\\sqrt{r}\\|x\\|))\\,x/(\\sqrt{r}\\|x\\|)\\).
        """
        xnorm = self.norm(x)
        scaled = tanh(c * artanh(self.sqrt_r * xnorm))
        return x * (scaled / (self.sqrt_r * xnorm))

    @full_precision
    def expmap(self, p: tf.Tensor, v: tf.Tensor) -> tf.Tensor:
        """Exponential map at `p` (paper Eq. 9), with \\(\\exp_p(0) = p\\):

        \\[
        \\exp_p(v) = p \\oplus \\tanh\\Big(\\frac{\\sqrt{r}\\,\\lambda_p\\|v\\|}{2}\\Big)
                     \\frac{v}{\\sqrt{r}\\|v\\|}
        \\]
        """
        p2, v2 = self.sqnorm(p), self.sqnorm(v)
        vnorm = self._floored_norm(v2)
        lambda_p = 2.0 / self._clamp_positive(1.0 - self.r * p2)
        unorm = tanh(self.sqrt_r * lambda_p * vnorm / 2.0) / self.sqrt_r
        return self._add_scaled(p, p2, v, v2, vnorm, unorm)

    @full_precision
    def expmap0(self, v: tf.Tensor) -> tf.Tensor:
        """Exponential map at the origin, \\(\\tanh(\\sqrt{r}\\|v\\|)\\,v/(\\sqrt{r}\\|v\\|)\\)."""
        vnorm = self.norm(v)
        return v * (tanh(self.sqrt_r * vnorm) / (self.sqrt_r * vnorm))

    @full_precision
    def boundary_map(self, p: tf.Tensor, v: tf.Tensor) -> tf.Tensor:
        """The boundary (∂D) variant: \\(p \\oplus v/(\\sqrt{r}\\|v\\|)\\), a point on the sphere
        \\(r\\|x\\|^2 = 1\\) (`tanh` of `expmap` replaced by 1; Möbius translation keeps the sphere).
        """
        v2 = self.sqnorm(v)
        return self._add_scaled(p, self.sqnorm(p), v, v2, self._floored_norm(v2), tf.ones_like(v2) / self.sqrt_r)

    def _add_scaled(self, p, p2, v, v2, vnorm, unorm):
        """\\(p \\oplus u\\) with \\(u = \\|u\\|\\, v/\\|v\\|\\), from \\(\\|p\\|^2\\) (`p2`), \\(\\|v\\|^2\\)
        (`v2`, and its floored root `vnorm`), the wanted norm `unorm` and \\(\\langle p, v\\rangle\\):
        three reductions and one weighted sum of `p` and `v`, instead of materialising \\(u\\) and
        reducing it again (the kernel-sized passes are what a training step pays for)."""
        r = self.r
        # v * (|u| / |v|), not (|u| * v) / |v|: the latter underflows to 0 (sign lost) for tiny v.
        scale = unorm / vnorm
        pu = scale * self.inner(p, v)
        u2 = tf.where(v2 > 0, tf.square(unorm), tf.zeros_like(unorm))  # |u|^2: u = 0 at v = 0
        denominator = self._clamp_positive(1.0 + 2.0 * r * pu + r * r * p2 * u2)
        return p * ((1.0 + 2.0 * r * pu + r * u2) / denominator) + v * ((1.0 - r * p2) * scale / denominator)

    @full_precision
    def logmap(self, p: tf.Tensor, q: tf.Tensor) -> tf.Tensor:
        """Logarithmic map at `p`, the inverse of `expmap` (the paper's Eq. 12 prefactor
        \\(2/\\sqrt{r\\lambda_p}\\) is a typo for \\(2/(\\sqrt{r}\\lambda_p)\\)):

        \\[
        \\log_p(q) = \\frac{2}{\\sqrt{r}\\,\\lambda_p}\\,\\mathrm{artanh}(\\sqrt{r}\\|u\\|)
                     \\frac{u}{\\|u\\|},\\quad u = (-p) \\oplus q
        \\]

        In float32 the round trip loses precision for points near the boundary: cast to
        float64 first where it matters (see `HyperbolicSign` with `on_switch="reexpress"`).
        """
        u = self.mobius_add(-p, q)
        unorm = self.norm(u)
        z = self.sqrt_r * unorm
        # artanh(z) = √r d_r(p, q) / 2. Near z = 1 artanh amplifies the cancellation error in u (p
        # and q close together near the boundary) by 1/(1 - z²), so there it is read off `dist`;
        # small z keeps artanh, whose ratio to ||u|| has the right limit at u = 0 (d log/dq = I).
        half_dist = tf.where(z < 0.5, artanh(z), self.sqrt_r / 2.0 * self.dist(p, q))
        return u * (2.0 / (self.sqrt_r * self.lambda_x(p)) * half_dist / unorm)

    @full_precision
    def logmap0(self, q: tf.Tensor) -> tf.Tensor:
        qnorm = self.norm(q)
        return q * (artanh(self.sqrt_r * qnorm) / (self.sqrt_r * qnorm))

    @full_precision
    def dist(self, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        """Geodesic distance \\(d_r(x,y) = (2/\\sqrt{r})\\,\\mathrm{artanh}(\\sqrt{r}\\|(-x)\\oplus y\\|)\\),
        evaluated in the equivalent form

        \\[
        d_r(x,y) = \\frac{2}{\\sqrt{r}}\\,\\mathrm{arsinh}\\frac{\\sqrt{r}\\,\\|x-y\\|}
                   {\\sqrt{(1-r\\|x\\|^2)(1-r\\|y\\|^2)}}
        \\]

        which is symmetric by construction and accurate to a few ulps given x and y. The Möbius
        form subtracts nearly equal terms when x and y are close together near the boundary,
        and artanh then amplifies that error by \\(1/(1 - r\\|(-x)\\oplus y\\|^2)\\): in float64,
        d(x, y) and d(y, x) differed by 1e-9 relative at 99.99995 % of the radius.
        """
        scale = tf.sqrt(self._clamp_positive(1.0 - self.r * self.sqnorm(x))
                        * self._clamp_positive(1.0 - self.r * self.sqnorm(y)))
        return 2.0 / self.sqrt_r * tf.asinh(self.sqrt_r * self.norm(x - y) / scale)

    @full_precision
    def projx(self, x: tf.Tensor, margin: float = 1e-5) -> tf.Tensor:
        """Project onto the closed ball of radius \\((1 - \\text{margin})/\\sqrt{r}\\), strictly inside.

        Non-finite entries (which only a diverged optimizer can produce) are mapped to 0 first,
        so the result is always a valid point.
        """
        x = tf.where(tf.math.is_finite(x), x, tf.zeros_like(x))
        max_norm = (1.0 - margin) / self.sqrt_r
        # Divide by the largest entry before the norm: for huge finite x the sum of squares
        # overflows (float32 entries ~1e19) and x * (max_norm / inf) would collapse x to 0.
        scale = tf.reduce_max(tf.abs(x), axis=self.axis, keepdims=True)
        scale = tf.where(scale > 0, scale, tf.ones_like(scale))
        unit = x / scale
        unit_norm = self.norm(unit)  # = ||x|| / scale, in [1, sqrt(n)] (or 0)
        return tf.where(unit_norm * scale <= max_norm, x, unit * (max_norm / unit_norm))

    @full_precision
    def egrad2rgrad(self, x: tf.Tensor, grad: tf.Tensor) -> tf.Tensor:
        """Riemannian gradient from the Euclidean one, \\(\\nabla f / \\lambda_x^2\\)."""
        return grad / tf.square(self.lambda_x(x))

    @full_precision
    def contains(self, x: tf.Tensor, atol: float = 0.0) -> tf.Tensor:
        """Whether every point lies strictly inside the ball (up to `atol` in \\(r\\|x\\|^2\\))."""
        return tf.reduce_all(self.r * self.sqnorm(x) < 1.0 + atol)

    @staticmethod
    def _clamp_positive(x: tf.Tensor) -> tf.Tensor:
        """`x` floored at the machine epsilon of its dtype (denominators such as \\(1 - r\\|x\\|^2\\))."""
        return tf.maximum(x, eps(x.dtype))
