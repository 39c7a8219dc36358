"""Manifold parameters: variables that live on the Poincaré ball, and the step they train with.

A *manifold parameter* (geoopt's `ManifoldParameter`, tensorflow-riemopt's
`assign_to_manifold`) is an ordinary Keras variable tagged with its manifold. Here the tag is
its Keras constraint, a `PoincareBallConstraint`, because a constraint is what Keras already
attaches to a variable, clones with a layer and rebuilds on load. `hbnn_larq.RiemannianOptimizer`
asks `manifold_constraint(variable)`: tagged variables get a Riemannian step on
`constraint.manifold`, followed by `constraint.project`; every other variable goes to the
wrapped Euclidean optimizer.

This module is also the one place that decides how long the points' steps are:

- `default_point_lr_multiplier(base)`: the multiple of the learning rate a point of
  `HyperbolicSign(base=base)` steps with unless told otherwise, `POINT_LR_MULTIPLIER` for the
  plain sign and `STANDARDIZED_BASE_POINT_LR_MULTIPLIER` for a base that re-standardises every
  filter (declares `standardizes_weights = True`, as IR-Net and ReCU do): standardisation
  multiplies the gradient reaching the point by about 1/std of the filter, so the step the plain
  sign needs drives such points to the boundary. How the values were chosen: `docs/results.md`.
- the constraint carries each point's multiplier (as a PyTorch parameter group would), so one
  optimizer trains points of different quantizers; `RiemannianOptimizer(point_lr_multiplier=x)`
  overrides it for every point.

A plain Keras optimizer would give the points a Euclidean step (with momentum and weight decay)
and then apply their constraint: the constraint refuses, with a message that names the fix.
"""

from __future__ import annotations

import larq as lq
import tensorflow as tf

from hbnn_larq.geometry import PoincareBall

# The points' step of sign-based HBNN, as a multiple of the learning rate.
POINT_LR_MULTIPLIER = 100.0
# The points' step when the base binarizer re-standardises every filter (the paper's step).
STANDARDIZED_BASE_POINT_LR_MULTIPLIER = 1.0


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


def default_point_lr_multiplier(base=None) -> float:
    """The points' step multiplier of `HyperbolicSign(base=base)` (see the module docstring)."""
    if getattr(base, "standardizes_weights", False):
        return STANDARDIZED_BASE_POINT_LR_MULTIPLIER
    return POINT_LR_MULTIPLIER


@lq.utils.register_keras_custom_object
class PoincareBallConstraint(tf.keras.constraints.Constraint):
    """Marks a variable as a point of the ball \\(\\mathbb{D}_r^n\\) and keeps each point (slice
    along `axis`) strictly inside the ball of radius \\((1 - \\text{margin})/\\sqrt{r}\\).

    # Arguments
    r: curvature magnitude of the ball, float > 0.
    axis: axes that hold one point (`None`: the whole variable is one point).
    margin: relative distance kept from the boundary, in (0, 1). Default 1e-5.
    point_lr_multiplier: this parameter's step as a multiple of the optimizer's learning rate,
        float > 0, or None (`POINT_LR_MULTIPLIER`).

    # Raises
    ValueError: when a Keras optimizer applies it after a Euclidean step, i.e. the model was
        compiled without `hbnn_larq.RiemannianOptimizer`.
    """

    def __init__(self, r: float = 0.05, axis=None, margin: float = 1e-5, point_lr_multiplier: float | None = None):
        if not 0.0 < float(margin) < 1.0:
            raise ValueError(f"`margin` must be in (0, 1), got {margin!r}.")
        self.manifold = PoincareBall(r, axis=axis)
        self.margin = float(margin)
        self.point_lr_multiplier = checked_point_lr_multiplier(point_lr_multiplier)

    @property
    def lr_multiplier(self) -> float:
        """This point's step multiplier: its own, else `POINT_LR_MULTIPLIER`."""
        return POINT_LR_MULTIPLIER if self.point_lr_multiplier is None else self.point_lr_multiplier

    def project(self, w):
        """`w` projected strictly inside the ball (`PoincareBall.projx` with this margin)."""
        return self.manifold.projx(w, self.margin)

    def __call__(self, w):
        # Keras optimizers call a variable's constraint after their own (Euclidean) update;
        # RiemannianOptimizer calls `project` instead.
        name = getattr(w, "name", "a Poincaré-ball point")
        raise ValueError(
            f"{name} is a Poincaré-ball point (a manifold parameter of HyperbolicSign) and was given a "
            "Euclidean update by a plain Keras optimizer. Compile the model with "
            "hbnn_larq.RiemannianOptimizer(<your optimizer>), which gives the points a Riemannian step "
            "and passes every other variable to <your optimizer>.")

    def get_config(self):
        return {**self.manifold.get_config(), "margin": self.margin, "point_lr_multiplier": self.point_lr_multiplier}


def manifold_constraint(variable) -> PoincareBallConstraint | None:
    """The `PoincareBallConstraint` that tags `variable` as a manifold parameter, or None."""
    constraint = getattr(variable, "constraint", None)
    return constraint if isinstance(constraint, PoincareBallConstraint) else None
