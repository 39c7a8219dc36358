"""Keras constraint that keeps a variable inside the Poincaré ball.

The constraint doubles as the marker of a *manifold parameter* (geoopt's `ManifoldParameter`):
`hbnn_larq.optimizers.RiemannianOptimizer` recognises variables whose `constraint` is a
`PoincareBallConstraint` and gives them a Riemannian/Möbius update on `constraint.manifold`
instead of the wrapped optimizer's Euclidean one.
"""

import larq as lq
import tensorflow as tf

from hbnn_larq.geometry import PoincareBall


@lq.utils.register_keras_custom_object
class PoincareBallConstraint(tf.keras.constraints.Constraint):
    """Projects each point (slice along `axis`) strictly inside the ball of radius
    \\((1 - \\text{margin})/\\sqrt{r}\\).

    # Arguments
    r: curvature magnitude of the ball, float > 0.
    axis: axes that hold one point (`None`: the whole variable is one point).
    margin: relative distance kept from the boundary, in (0, 1). Default 1e-5.
    """

    def __init__(self, r: float = 0.05, axis=None, margin: float = 1e-5):
        if not 0.0 < float(margin) < 1.0:
            raise ValueError(f"`margin` must be in (0, 1), got {margin!r}.")
        self.manifold = PoincareBall(r, axis=axis)
        self.margin = float(margin)

    def __call__(self, w):
        return self.manifold.projx(w, self.margin)

    def get_config(self):
        return {**self.manifold.get_config(), "margin": self.margin}


def ball_constraint_of(variable):
    """The `PoincareBallConstraint` of a manifold parameter, or `None` for an ordinary variable."""
    constraint = getattr(variable, "constraint", None)
    return constraint if isinstance(constraint, PoincareBallConstraint) else None
