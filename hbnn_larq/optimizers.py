"""`RiemannianOptimizer`: a Keras optimizer wrapper that trains manifold parameters on the ball.

```python
opt = hbnn_larq.optimizers.RiemannianOptimizer(tf.keras.optimizers.SGD(0.1, momentum=0.9))
model.compile(opt, loss=...)
```

Variables whose `constraint` is a `PoincareBallConstraint` (the points of `HyperbolicSign`) get a
Riemannian step on their ball; every other variable is handed to the wrapped optimizer untouched
(its momentum, weight decay and learning-rate schedule apply as usual). Points get no
momentum and no weight decay (decay would pull them to the origin, i.e. back to a plain BNN).

Mixed precision: under `mixed_float16` Keras wraps the optimizer given to `compile` in a
`LossScaleOptimizer`, which unscales every gradient (the points' too) before it reaches this
wrapper and skips steps with non-finite gradients. The points are float32 variables under every
policy (`hbnn_larq.precision`).

The points' step is the wrapped optimizer's scheduled learning rate times a multiplier: by default
each point's own (`PoincareBallConstraint.point_lr_multiplier`, which `HyperbolicSign` sets from
its base binarizer), or one value for every point if the optimizer is given one.
"""

from __future__ import annotations

import larq as lq
import tensorflow as tf

from hbnn_larq.manifold_parameters import checked_point_lr_multiplier, manifold_constraint

POINT_UPDATES = ("rsgd", "mobius")
# Optimizer options that belong to the wrapped optimizer: the wrapper takes none of them itself.
_INNER_OPTIONS = ("clipnorm", "clipvalue", "global_clipnorm", "use_ema", "ema_momentum", "ema_overwrite_frequency",
                  "weight_decay")


@lq.utils.register_keras_custom_object
class RiemannianOptimizer(tf.keras.optimizers.Optimizer):
    """Wraps a Keras optimizer; gives Poincaré-ball parameters a Riemannian/Möbius update.

    With \\(\\eta\\) the wrapped optimizer's current learning rate times the point's multiplier
    (see `point_lr_multiplier`) and \\(g\\) the Euclidean gradient of a point \\(p\\):

    - `"rsgd"` (default), Riemannian SGD as in geoopt:
      \\(p \\leftarrow \\exp_p(-\\eta\\, g / \\lambda_p^2)\\);
    - `"mobius"`, the paper's Eq. 16: \\(p \\leftarrow p \\oplus ((-\\eta) \\otimes \\hat g)\\),
      with \\(\\hat g\\) = \\(g\\) clipped to norm \\(0.9/\\sqrt{r}\\) (the Möbius scalar
      multiplication is only defined inside the ball). To first order it is \\(2\\lambda_p\\)
      (>= 4) times longer than the RSGD step for small gradients.

    Either way the result is projected strictly inside the ball. The RSGD step is the default
    because it is the exact Riemannian gradient step, is defined for every gradient, and its
    scale is set by one knob, the point's multiplier.

    Gradient clipping set on the wrapped optimizer (`clipnorm`, `clipvalue`, `global_clipnorm`)
    applies to the points' Euclidean gradients too, as it would to any variable: `clipnorm` per
    point, `global_clipnorm` over all gradients, points included. The wrapped optimizer's
    exponential moving average (`use_ema=True`) is rejected: it would average the latent
    kernels but never the points, and swap in averaged kernels that belong to other points.

    # Arguments
    optimizer: the wrapped `tf.keras.optimizers.Optimizer` (e.g. SGD with momentum, Adam).
    point_lr_multiplier: the points' step size as a multiple of the wrapped optimizer's
        learning rate (schedules included). `None` (default): each point's own multiplier, which
        its `HyperbolicSign` sets (the policy is `hbnn_larq.manifold_parameters`). A float > 0:
        that multiplier for every point (1 is the paper's).
    point_update: `"rsgd"` or `"mobius"`.
    name: name of the optimizer.

    # Raises
    ValueError: for an `optimizer` that is not a Keras optimizer or uses `use_ema=True`, and for
        clipping, weight decay or EMA options given to the wrapper instead of the wrapped optimizer.

    # References
    - Bécigneul, Ganea, Riemannian Adaptive Optimization Methods, ICLR 2019.
    - Chen et al., Hyperbolic Binary Neural Network, TNNLS 2024, Eq. 14-16.
    """

    def __init__(
        self,
        optimizer,
        point_lr_multiplier: float | None = None,
        point_update: str = "rsgd",
        name: str = "RiemannianOptimizer",
        **kwargs,
    ):
        if isinstance(optimizer, dict):
            optimizer = tf.keras.optimizers.deserialize(optimizer)
        if not isinstance(optimizer, tf.keras.optimizers.Optimizer) or isinstance(optimizer, RiemannianOptimizer):
            raise ValueError(
                "`optimizer` must be a tf.keras.optimizers.Optimizer (e.g. SGD or Adam; not a legacy "
                f"optimizer and not another RiemannianOptimizer), got {optimizer!r}."
            )
        if point_update not in POINT_UPDATES:
            raise ValueError(f"`point_update` must be one of {POINT_UPDATES}, got {point_update!r}.")
        if optimizer.use_ema:
            raise ValueError(
                "RiemannianOptimizer does not support `use_ema=True` on the wrapped optimizer: the moving "
                "average would cover the latent kernels but not the points. Use use_ema=False.")
        kwargs.pop("is_legacy_optimizer", None)  # added by tf.keras.optimizers.serialize
        misplaced = sorted(k for k in kwargs if k in _INNER_OPTIONS)
        unknown = sorted(k for k in kwargs if k not in _INNER_OPTIONS + ("jit_compile",))
        if misplaced or unknown:
            raise ValueError(
                f"RiemannianOptimizer got option(s) {', '.join(misplaced + unknown)}; it takes `optimizer`, "
                "`point_lr_multiplier`, `point_update` and `name`. Set clipping, weight decay and EMA on the "
                "wrapped optimizer (clipping then applies to the points too).")
        self._optimizer = optimizer
        self.point_lr_multiplier = checked_point_lr_multiplier(point_lr_multiplier)
        self.point_update = point_update
        super().__init__(name=name, **kwargs)

    @property
    def inner_optimizer(self):
        return self._optimizer

    # The wrapped optimizer owns the step counter and the learning rate.
    @property
    def iterations(self):
        return self._optimizer.iterations

    @iterations.setter
    def iterations(self, variable):
        self._optimizer.iterations = variable

    @property
    def learning_rate(self):
        return self._optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, value):
        self._optimizer.learning_rate = value

    @property
    def variables(self):
        return self._optimizer.variables

    def _trackable_children(self, save_type="checkpoint", **kwargs):
        # Checkpoint the wrapped optimizer's state as if it were this object's own: checkpoints
        # stay interchangeable with the inner optimizer's, and nothing of the wrapper is unbound.
        return self._optimizer._trackable_children(save_type, **kwargs)

    def build(self, var_list):
        self._optimizer.build([v for v in var_list if manifold_constraint(v) is None])
        self._built = True

    def set_weights(self, weights):
        self._optimizer.set_weights(weights)

    def save_own_variables(self, store):
        self._optimizer.save_own_variables(store)

    def load_own_variables(self, store):
        self._optimizer.load_own_variables(store)

    def multiplier_of(self, point) -> float:
        """The step multiplier `point` (a manifold parameter) gets: the optimizer's if it was
        given one, else the point's own (`hbnn_larq.manifold_parameters`)."""
        constraint = manifold_constraint(point)
        if constraint is None:
            raise ValueError(f"{point.name!r} is not a manifold parameter (its constraint is not a PoincareBallConstraint).")
        return self.point_lr_multiplier if self.point_lr_multiplier is not None else constraint.lr_multiplier

    def point_learning_rate(self, point) -> tf.Tensor:
        """The current step size of `point`: the scheduled learning rate times `multiplier_of(point)`."""
        return self.current_learning_rate() * self.multiplier_of(point)

    def current_learning_rate(self) -> tf.Tensor:
        """The wrapped optimizer's learning rate of its latest step (schedules evaluated), float32.

        Keras evaluates a schedule at the start of every `apply_gradients`; `apply_gradients`
        below runs the wrapped optimizer first, so that the points' step reads this step's value.
        """
        return tf.cast(self._optimizer.learning_rate, tf.float32)

    def clip_gradients(self, grads: list) -> list:
        """`grads` clipped as the wrapped optimizer clips its own (`clipnorm` per tensor,
        `global_clipnorm` over the list, `clipvalue` elementwise), None entries kept."""
        inner = self._optimizer
        present = [g for g in grads if g is not None]
        if inner.clipnorm:
            present = [tf.clip_by_norm(g, inner.clipnorm) for g in present]
        if inner.global_clipnorm:
            present, _ = tf.clip_by_global_norm(present, inner.global_clipnorm)
        if inner.clipvalue:
            present = [tf.clip_by_value(g, -inner.clipvalue, inner.clipvalue) for g in present]
        clipped = iter(present)
        return [None if g is None else next(clipped) for g in grads]

    def apply_gradients(self, grads_and_vars, name=None, skip_gradients_aggregation=False, **kwargs):
        grads_and_vars = [(g, v) for g, v in grads_and_vars]
        if not skip_gradients_aggregation and kwargs.pop("experimental_aggregate_gradients", True):
            grads_and_vars = self._optimizer.aggregate_gradients(grads_and_vars)
        # Clip everything together (the global norm covers the points); the wrapped optimizer's
        # own clipping of the rest is then a no-op (clipping is idempotent).
        grads = self.clip_gradients([g for g, _ in grads_and_vars])
        grads_and_vars = list(zip(grads, [v for _, v in grads_and_vars]))
        points = [(g, v) for g, v in grads_and_vars if g is not None and manifold_constraint(v) is not None]
        others = [(g, v) for g, v in grads_and_vars if manifold_constraint(v) is None]
        # First the wrapped optimizer (with no variables it only evaluates its schedule): its
        # learning rate is then this step's, and its step counter advances once.
        self._optimizer.apply_gradients(others, name=name, skip_gradients_aggregation=True, **kwargs)
        if points:
            tf.__internal__.distribute.interim.maybe_merge_call(
                self._distributed_point_update,
                self._optimizer._distribution_strategy,
                points,
                self.current_learning_rate(),
            )
        if not others:
            self._optimizer.iterations.assign_add(1)
        return self._optimizer.iterations

    def _distributed_point_update(self, distribution, points, lr):
        for grad, var in points:
            distribution.extended.update(var, self._point_step, args=(grad, lr), group=False)

    def _point_step(self, var, grad, lr):
        constraint = manifold_constraint(var)
        ball = constraint.manifold
        lr = tf.cast(lr * self.multiplier_of(var), var.dtype)
        # A non-finite gradient would poison the point forever: skip such a step instead.
        grad = tf.where(tf.math.is_finite(grad), grad, tf.zeros_like(grad))
        if self.point_update == "rsgd":
            new = ball.expmap(var, -lr * ball.egrad2rgrad(var, grad))
        else:
            grad = tf.clip_by_norm(grad, 0.9 * ball.radius, axes=ball.axis)
            new = ball.mobius_add(var, ball.mobius_scalar_mul(-lr, grad))
        return var.assign(constraint.project(new))

    def get_config(self):
        return {
            "name": self.name,
            "optimizer": tf.keras.optimizers.serialize(self._optimizer),
            "point_lr_multiplier": self.point_lr_multiplier,
            "point_update": self.point_update,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config["optimizer"] = tf.keras.optimizers.deserialize(config["optimizer"], custom_objects=custom_objects)
        return cls(**config)


def _innermost(optimizer):
    """The optimizer that owns the slots: `optimizer` unwrapped from every `inner_optimizer`
    (`LossScaleOptimizer`, `RiemannianOptimizer`)."""
    while getattr(optimizer, "inner_optimizer", None) is not None:
        optimizer = optimizer.inner_optimizer
    return optimizer


def slot_variables(optimizer, variable) -> list:
    """The optimizer's state for `variable`: momentum (SGD), first and second moments (Adam) ...

    `optimizer` may be wrapped (`LossScaleOptimizer`, `RiemannianOptimizer`); `variable` is one
    the optimizer was built with (e.g. a larq `QuantizedVariable`, `layer.kernel`). Keras 2
    optimizers keep every kind of slot in a list ordered like the variables they were built
    with, and slot *names* are not unique (two layers' kernels may both give `m/kernel`), so the
    slots are found by position: element `i` of every such list, `i` the variable's position.
    An optimizer that was not built yet, or does not know `variable`, has no slots for it.
    """
    inner = _innermost(optimizer)
    index = getattr(inner, "_index_dict", {}).get(inner._var_key(variable))
    if index is None:
        return []
    count = len(inner._index_dict)

    def is_slot_list(value) -> bool:  # slots are non-trainable; the model's variables are not slots
        return (isinstance(value, (list, tuple)) and len(value) == count
                and all(isinstance(v, tf.Variable) and not v.trainable and v is not inner.iterations for v in value))

    return [value[index] for value in vars(inner).values() if is_slot_list(value)]


def reset_slots(optimizer, variable) -> int:
    """Zero the optimizer's slot variables of `variable`; returns how many were reset.

    `hbnn_larq.ChartSelection` calls it when an EPC layer switches chart with
    `on_switch="reexpress"`: the latent kernel is rewritten in the new chart's coordinates, and
    a momentum (or an Adam moment) accumulated in the old chart's coordinates would push it in a
    direction that no longer means what it meant. Transporting it exactly would need the chart
    change's Jacobian for SGD and has no exact form for Adam's second moment; a momentum of 0.9
    forgets in about ten steps anyway, so the slots start afresh.
    """
    slots = slot_variables(optimizer, variable)
    for slot in slots:
        slot.assign(tf.zeros_like(slot))
    return len(slots)
