"""`HyperbolicSign`: the HBNN weight binarizer as a larq kernel quantizer.

```python
import hbnn_larq, larq as lq
lq.layers.QuantConv2D(256, 3, padding="same", pad_values=1.0, use_bias=False,
                      input_quantizer="approx_sign", kernel_quantizer=hbnn_larq.HyperbolicSign())
```
"""

from __future__ import annotations

import larq as lq
import numpy as np
import tensorflow as tf

from hbnn_larq.geometry import PoincareBall
from hbnn_larq.manifold_parameters import PoincareBallConstraint, checked_point_lr_multiplier, default_point_lr_multiplier
from hbnn_larq.precision import FullPrecisionQuantizer
from hbnn_larq.utils import QuantizedKernel, check_choice, quantized_kernels

GROUPINGS = ("layer", "channel")
SELECTIONS = ("loss", "geometric", "nearest", "flips", "random", "never")
CLUSTER_INITS = ("origin+random", "random")
ON_SWITCH = ("keep", "reexpress")


class _PointInitializer:
    """Isotropic random points of norm `cluster_radius / sqrt(r)` per group (0 for `origin`)."""

    def __init__(self, manifold: PoincareBall, relative_norm: float, seed: int | None):
        self.manifold, self.relative_norm, self.seed = manifold, relative_norm, seed

    def __call__(self, shape, dtype=None):
        if self.relative_norm == 0.0:
            return tf.zeros(shape, dtype or tf.float32)
        direction = tf.random.stateless_normal(shape, seed=[self.seed or 0, 7], dtype=dtype or tf.float32)
        return direction * (self.relative_norm * self.manifold.radius / self.manifold.norm(direction))


@lq.utils.register_alias("hyperbolic_sign")
@lq.utils.register_keras_custom_object
class HyperbolicSign(FullPrecisionQuantizer):
    """Binarize a latent kernel through the exponential map of the Poincaré ball (HBNN).

    The latent kernel \\(\\tilde w\\) (each group of weights, by default the whole layer, is
    one vector) is mapped into the ball \\(\\mathbb{D}_r^n\\) by the exponential map at the
    active point \\(F_i\\) of a trainable cluster \\(F = \\{F_1, \\dots, F_t\\}\\), then binarized:

    \\[
    q(\\tilde w) = \\operatorname{sign}\\big(\\exp_{F_i}(\\tilde w)\\big), \\qquad
    \\exp_p(v) = p \\oplus \\tanh\\Big(\\frac{\\sqrt{r}\\,\\lambda_p\\|v\\|}{2}\\Big)
                 \\frac{v}{\\sqrt{r}\\|v\\|},
    \\]

    with \\(\\operatorname{sign}(0) = +1\\). Every coordinate of a point in the ball is below
    \\(1/\\sqrt{r}\\), so the straight-through estimator with that bound is the identity:
    gradients reach \\(\\tilde w\\) and \\(F_i\\) through the exponential map by autodiff.
    With `boundary=True` the `tanh` factor is replaced by 1 and the mapped weight lies on the
    sphere \\(\\partial\\mathbb{D}_r^n\\) (the paper's HBNN(∂D), used with `r=1`).

    `cluster_size=1` is the paper's "dynamic exponential map" (one point per layer, starting at
    the origin, where HBNN equals a plain sign/STE BNN). `cluster_size > 1` is the Exponential
    Parametrization Cluster (EPC) of the final paper; which chart is active is decided by
    `hbnn_larq.ChartSelection` (a callback) according to `selection`. The points are
    *manifold parameters*: train with `hbnn_larq.optimizers.RiemannianOptimizer`, which gives
    them a Riemannian step and keeps them strictly inside the ball.

    # Arguments
    r: curvature magnitude ("radius" in the paper), float > 0; the ball has Euclidean radius
        \\(1/\\sqrt{r}\\). Default 0.05 (the paper's HBNN(D_0.05)).
    boundary: map onto the boundary sphere instead of into the ball. Default False.
    cluster_size: number of points \\(t\\) per layer, int >= 1. Default 1.
    selection: EPC criterion that picks the active chart: `"geometric"` (default; smallest
        \\(\\|\\exp_{F_j}(\\tilde w)\\|\\), farthest from the boundary), `"loss"` (lowest loss on a
        probe batch; t forward passes per layer and round), `"nearest"` (smallest
        \\(d_r(F_j, w)\\) to the current weight), `"flips"` (most signs changed), `"random"` (a control: a random chart every round) or `"never"`
        (keep chart 0). Ignored when `cluster_size=1`.
    grouping: `"layer"` (the paper: the whole kernel is one vector) or `"channel"` (one vector,
        and one ball, per output channel).
    cluster_init: `"origin+random"` (point 0 at the origin, the others random) or `"random"`.
    cluster_radius: norm of the random initial points as a fraction of the ball radius, in
        [0, 1). Default 0.1.
    on_switch: what happens to \\(\\tilde w\\) when the active chart changes: `"reexpress"`
        (default; \\(\\tilde w \\leftarrow \\log_{F_{new}}(\\exp_{F_{old}}(\\tilde w))\\) in float64, so the
        constrained weight is continuous) or `"keep"` (the literal reading of the paper's Fig. 2:
        the binary weights jump at a switch; how much is measured by `benchmarks/epc_stats.py`).
    margin: points are kept within \\((1-\\text{margin})/\\sqrt{r}\\) of the origin.
    seed: seed of the random initial points.
    base: optional weight binarizer applied to the constrained weight instead of the plain
        identity-STE sign (a larq kernel quantizer, its alias or config), which makes HBNN a
        plug-in for methods such as IR-Net or ReCU: \\(q(\\tilde w) = \\text{base}(\\exp_{F_i}(\\tilde w))\\).
    point_lr_multiplier: the points' step as a multiple of the learning rate, which
        `RiemannianOptimizer` uses unless it is given one for every point; float > 0, or None
        (default): the default for `base`, decided in one place,
        `hbnn_larq.manifold_parameters.default_point_lr_multiplier`.

    # Returns
    The binary kernel, exactly \\(\\pm 1\\), in the dtype of the kernel it is given. Under a mixed
    precision policy the map is computed in float32 and the points are float32 variables
    (`hbnn_larq.precision.FullPrecisionQuantizer`).

    # References
    - Chen et al., Hyperbolic Binary Neural Network, IEEE TNNLS 2024, arXiv 2501.03471.
    """

    precision = 1
    # The latent kernel is mapped into the ball (or onto its sphere) and has no range to leave: a
    # clip would only change the mapped direction. Silences larq's starved-weights warning.
    needs_kernel_constraint = False

    def __init__(
        self,
        r: float = 0.05,
        boundary: bool = False,
        cluster_size: int = 1,
        selection: str = "geometric",
        grouping: str = "layer",
        cluster_init: str = "origin+random",
        cluster_radius: float = 0.1,
        on_switch: str = "reexpress",
        margin: float = 1e-5,
        seed: int | None = None,
        base=None,
        point_lr_multiplier: float | None = None,
        **kwargs,
    ):
        PoincareBall(r)  # validates r
        if isinstance(cluster_size, bool) or not isinstance(cluster_size, (int, np.integer)) or cluster_size < 1:
            raise ValueError(f"`cluster_size` must be an int >= 1, got {cluster_size!r}.")
        check_choice("selection", selection, SELECTIONS)
        check_choice("grouping", grouping, GROUPINGS)
        check_choice("cluster_init", cluster_init, CLUSTER_INITS)
        check_choice("on_switch", on_switch, ON_SWITCH)
        if not 0.0 <= float(cluster_radius) < 1.0:
            raise ValueError(f"`cluster_radius` must be in [0, 1) (fraction of the ball radius), got {cluster_radius!r}.")
        self.r = float(r)
        self.boundary = bool(boundary)
        self.cluster_size = int(cluster_size)
        self.selection = selection
        self.grouping = grouping
        self.cluster_init = cluster_init
        self.cluster_radius = float(cluster_radius)
        self.on_switch = on_switch
        self.margin = float(margin)
        self.seed = seed
        self.point_lr_multiplier = checked_point_lr_multiplier(point_lr_multiplier)
        super().__init__(**kwargs)
        try:
            self.base = lq.quantizers.get_kernel_quantizer(base) if base is not None else None
        except (ValueError, TypeError) as error:
            raise ValueError(
                "`base` must be None, a larq kernel quantizer instance, a registered quantizer alias "
                f"(e.g. 'ste_sign', 'ir_net', 'recu') or its config; got {base!r} ({error})."
            ) from None

    @property
    def resolved_point_lr_multiplier(self) -> float:
        """The points' step multiplier in effect: `point_lr_multiplier`, or the default for the
        base (`hbnn_larq.manifold_parameters.default_point_lr_multiplier`)."""
        if self.point_lr_multiplier is not None:
            return self.point_lr_multiplier
        return default_point_lr_multiplier(self.base)

    # -- state -----------------------------------------------------------------------------
    def build(self, input_shape):
        shape = tf.TensorShape(input_shape)
        if not shape.is_fully_defined() or shape.rank < 1:
            raise ValueError(f"HyperbolicSign needs a fully defined kernel shape, got {shape}.")
        if not tf.as_dtype(self.dtype).is_floating:
            raise ValueError(f"HyperbolicSign needs a floating-point kernel, got dtype {self.dtype}.")
        axis = None if self.grouping == "layer" or shape.rank == 1 else tuple(range(shape.rank - 1))
        self.manifold = PoincareBall(self.r, axis=axis)
        constraint = PoincareBallConstraint(
            self.r, axis=axis, margin=self.margin, point_lr_multiplier=self.resolved_point_lr_multiplier
        )
        self.points = [
            self.add_weight(
                name=f"point_{j}",
                shape=shape,
                initializer=_PointInitializer(self.manifold, self._initial_norm(j), self._point_seed(j)),
                constraint=constraint,
                trainable=True,
            )
            for j in range(self.cluster_size)
        ]
        self.active_index = self.add_weight(
            name="active_index",
            shape=(),
            dtype=tf.int32,
            initializer="zeros",
            trainable=False,
            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
        )
        if isinstance(self.base, tf.keras.layers.Layer) and not self.base.built:
            self.base.build(shape)
        super().build(input_shape)

    def _initial_norm(self, j: int) -> float:
        return 0.0 if j == 0 and self.cluster_init == "origin+random" else self.cluster_radius

    def _point_seed(self, j: int) -> int:
        base = self.seed if self.seed is not None else np.random.randint(2**30)
        return int(base) * 131 + j

    @property
    def active_point(self) -> tf.Tensor:
        """The point \\(F_i\\) of the active chart (gradients reach only this one)."""
        if self.cluster_size == 1:
            return self.points[0]
        return tf.switch_case(tf.convert_to_tensor(self.active_index), [lambda p=p: tf.identity(p) for p in self.points])

    # -- forward -----------------------------------------------------------------------------
    def project(self, latent: tf.Tensor, point: tf.Tensor) -> tf.Tensor:
        """The constrained weight \\(w = \\exp_p(\\tilde w)\\) (or its boundary variant)."""
        if self.boundary:
            return self.manifold.boundary_map(point, latent)
        return self.manifold.expmap(point, latent)

    def quantize(self, inputs):
        constrained = self.project(inputs, tf.cast(self.active_point, inputs.dtype))
        if self.base is not None:
            return self.base(constrained)
        return lq.quantizers.ste_sign(constrained, clip_value=None)

    # -- EPC support (used by hbnn_larq.ChartSelection) --------------------------------------
    def chart_scores(self, latent) -> np.ndarray:
        """Score of every chart for the geometric criteria (lower is better).

        # Arguments
        latent: the latent kernel \\(\\tilde w\\).

        # Returns
        A NumPy array of `cluster_size` scores.
        """
        latent = tf.convert_to_tensor(latent)
        mapped = [self.project(latent, p) for p in self.points]
        if self.selection == "geometric":
            scores = [tf.reduce_mean(self.manifold.sqnorm(m)) for m in mapped]
        elif self.selection == "nearest":
            current = mapped[int(self.active_index.numpy())]
            scores = [tf.reduce_mean(self.manifold.dist(p, current)) for p in self.points]
        elif self.selection == "flips":
            current = tf.sign(mapped[int(self.active_index.numpy())])
            scores = [-tf.reduce_mean(tf.cast(tf.sign(m) != current, tf.float32)) for m in mapped]
        else:
            raise ValueError(f"selection={self.selection!r} has no geometric score (use ChartSelection).")
        return np.array([float(s) for s in scores])

    def set_active(self, index: int, latent_variable: tf.Variable | None = None) -> None:
        """Activate chart `index`; with `on_switch="reexpress"` also rewrite the latent kernel so
        that \\(\\exp_{F_{new}}(\\tilde w_{new}) = \\exp_{F_{old}}(\\tilde w_{old})\\) (in float64)."""
        index = int(index)
        if not 0 <= index < self.cluster_size:
            raise ValueError(f"`index` must be in [0, {self.cluster_size}), got {index}.")
        old = int(self.active_index.numpy())
        if index != old and self.on_switch == "reexpress" and latent_variable is not None:
            latent_variable.assign(tf.cast(self._reexpress(latent_variable, old, index), latent_variable.dtype))
        self.active_index.assign(index)

    def _reexpress(self, latent, old: int, new: int) -> tf.Tensor:
        ball = PoincareBall(self.r, axis=self.manifold.axis)
        as64 = lambda x: tf.cast(tf.convert_to_tensor(x), tf.float64)  # noqa: E731
        latent64, p_old, p_new = as64(latent), as64(self.points[old]), as64(self.points[new])
        if self.boundary:
            # On the sphere only the direction of the tangent vector matters: keep its norm.
            direction = ball.mobius_add(-p_new, ball.boundary_map(p_old, latent64))
            return direction / ball.norm(direction) * ball.norm(latent64)
        return ball.logmap(p_new, ball.expmap(p_old, latent64))

    def get_config(self):
        return {
            **super().get_config(),
            "r": self.r,
            "boundary": self.boundary,
            "cluster_size": self.cluster_size,
            "selection": self.selection,
            "grouping": self.grouping,
            "cluster_init": self.cluster_init,
            "cluster_radius": self.cluster_radius,
            "on_switch": self.on_switch,
            "margin": self.margin,
            "seed": self.seed,
            "base": lq.quantizers.serialize(self.base) if self.base is not None else None,
            "point_lr_multiplier": self.point_lr_multiplier,
        }


def hyperbolic_kernels(model: tf.keras.Model) -> list[QuantizedKernel]:
    """Every weight-quantized kernel of `model` (nested models included) whose quantizer is a
    `HyperbolicSign`, in any slot: kernel, depthwise or pointwise (`hbnn_larq.utils.quantized_kernels`).

    # Returns
    A list of `hbnn_larq.utils.QuantizedKernel`, in layer order.
    """
    return [kernel for kernel in quantized_kernels(model) if isinstance(kernel.quantizer, HyperbolicSign)]


def hyperbolic_quantizers(model: tf.keras.Model) -> list:
    """`(layer, quantizer)` for every `HyperbolicSign` of `model` (`hyperbolic_kernels`): a
    `QuantSeparableConv2D` with two of them appears twice."""
    return [(kernel.layer, kernel.quantizer) for kernel in hyperbolic_kernels(model)]
