"""Keras constraint that keeps a variable inside the Poincaré ball.

The constraint doubles as the marker of a *manifold parameter* (geoopt's `ManifoldParameter`):
`hbnn_larq.optimizers.RiemannianOptimizer` recognises variables whose `constraint` is a
`PoincareBallConstraint` and gives them a Riemannian/Möbius update on `constraint.manifold`
instead of the wrapped optimizer's Euclidean one. It also carries the parameter's own step size
(`point_lr_multiplier`), as a PyTorch parameter group would, so that one optimizer can train points
that need different steps (`HyperbolicSign` picks it from its base binarizer).
"""

from __future__ import annotations

import larq as lq
import tensorflow as tf

from hbnn_larq.geometry import PoincareBall


def checked_point_lr_multiplier(value, name: str = "point_lr_multiplier") -> float | None:
    """`value` as a float if it is a valid points' step multiplier (finite, > 0), None for None
    ("not set": every caller has a default), else a ValueError naming `name`."""
    if value is None:
        return None
    try:
        multiplier = float(value)
    except (TypeError, ValueError):
        multiplier = float("nan")
    if not multiplier > 0 or multiplier == float("inf"):
        raise ValueError(f"`{name}` must be a finite float > 0, got {value!r}.")
    return multiplier


@lq.utils.register_keras_custom_object
class PoincareBallConstraint(tf.keras.constraints.Constraint):
    """Projects each point (slice along `axis`) strictly inside the ball of radius
    \\((1 - \\text{margin})/\\sqrt{r}\\).

    # Arguments
    r: curvature magnitude of the ball, float > 0.
    axis: axes that hold one point (`None`: the whole variable is one point).
    margin: relative distance kept from the boundary, in (0, 1). Default 1e-5.
    point_lr_multiplier: this parameter's step as a multiple of the optimizer's learning rate,
        used by `RiemannianOptimizer` unless it was given one multiplier for every point; float
        > 0, or None (the optimizer's fallback, `optimizers.POINT_LR_MULTIPLIER`).
    """

    def __init__(self, r: float = 0.05, axis=None, margin: float = 1e-5, point_lr_multiplier: float | None = None):
        if not 0.0 < float(margin) < 1.0:
            raise ValueError(f"`margin` must be in (0, 1), got {margin!r}.")
        self.manifold = PoincareBall(r, axis=axis)
        self.margin = float(margin)
        self.point_lr_multiplier = checked_point_lr_multiplier(point_lr_multiplier)

    def __call__(self, w):
        return self.manifold.projx(w, self.margin)

    def get_config(self):
        return {**self.manifold.get_config(), "margin": self.margin, "point_lr_multiplier": self.point_lr_multiplier}


def ball_constraint_of(variable):
    """The `PoincareBallConstraint` of a manifold parameter, or `None` for an ordinary variable."""
    constraint = getattr(variable, "constraint", None)
    return constraint if isinstance(constraint, PoincareBallConstraint) else None
