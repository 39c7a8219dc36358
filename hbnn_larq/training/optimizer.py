"""The optimizer and learning-rate schedule of the training recipe (the paper's defaults, HBNN v1 §6).

SGD with momentum 0.9, learning rate 0.1 with cosine decay to 0 over the run, 600 epochs for
32-px data and 250 for ImageNet-like data, weight decay 5e-4 (32 px) or 1e-4 (ImageNet-like).

- *Warm-up*: a linear warm-up from 0 to `lr` over `warmup_epochs`, then the cosine decay over the
  remaining steps. By default it is scaled to the run length: `min(5, epochs // 20)` epochs,
  i.e. the usual 5 epochs for runs of 100 epochs or more and none for runs shorter than 20.
- *Segments*: a run that trains epochs K+1..L of an `epochs`-epoch run (`first_epoch=K`,
  `stop_epoch=L`) follows that run's schedule: the optimizer's step 0 takes the learning rate of
  its global step K * steps_per_epoch (`learning_rate_schedule(..., step_offset=...)`).
- *Weight decay* is a coupled L2 term, PyTorch's `SGD(weight_decay=...)` that the paper and the
  baselines use: `wd * w` is added to the gradient before momentum. It applies to kernels only
  (binary latent kernels and the full-precision first conv / classifier): never to the HBNN
  points (decay would pull them to the origin, i.e. to a plain BNN), BatchNorm or biases.
  Keras' own `weight_decay` is decoupled and, with momentum 0.9, about 10x weaker, hence
  `KernelSGD`.
- *Latent LR multiplier*: the gradients (weight decay included) of latent binary kernels are
  scaled by `latent_lr_multiplier`; with SGD (momentum is linear in the gradient) that is exactly
  a learning-rate multiplier for those variables. Default: the recipe's
  (`hbnn_larq.training.recipes.latent_lr_multiplier(name)`).
- The points of `HyperbolicSign` recipes get `RiemannianOptimizer`'s Riemannian step with
  `point_lr_multiplier` times the scheduled learning rate (default: the recipe's,
  `hbnn_larq.training.recipes.point_lr_multiplier(name)`).
"""

from __future__ import annotations

import re

import larq as lq
import tensorflow as tf

from hbnn_larq.manifold_parameters import manifold_constraint
from hbnn_larq.optimizers import RiemannianOptimizer
from hbnn_larq.training import recipes
from hbnn_larq.utils import quantized_kernels


def default_epochs(style: str) -> int:
    """600 epochs for 32-px data, 250 for ImageNet-like data (the paper)."""
    return 600 if style == "cifar" else 250


def default_weight_decay(style: str) -> float:
    """5e-4 for 32-px data, 1e-4 for ImageNet-like data (the paper)."""
    return 5e-4 if style == "cifar" else 1e-4


def default_warmup_epochs(epochs: int) -> int:
    """`min(5, epochs // 20)`: 5 epochs on long runs, none on runs shorter than 20 epochs."""
    return min(5, epochs // 20)


def learning_rate_schedule(lr: float, epochs: int, steps_per_epoch: int, warmup_epochs: float, step_offset: int = 0):
    """Linear warm-up from 0 to `lr` over `warmup_epochs`, then cosine decay to 0 (per step).

    `step_offset`: the schedule's step that the optimizer's step 0 takes, i.e. the schedule is
    `schedule(step + step_offset)`. A run that continues a longer one from its epoch K
    (`TrainConfig.first_epoch`) passes `K * steps_per_epoch` and follows the same curve.
    """
    total = max(1, epochs * steps_per_epoch)
    warmup = min(total - 1, int(round(warmup_epochs * steps_per_epoch)))
    if warmup == 0:
        schedule = tf.keras.optimizers.schedules.CosineDecay(lr, decay_steps=total)
    else:
        schedule = tf.keras.optimizers.schedules.CosineDecay(0.0, decay_steps=total - warmup, warmup_target=lr,
                                                             warmup_steps=warmup)
    return OffsetSchedule(schedule, step_offset) if step_offset else schedule


@lq.utils.register_keras_custom_object
class OffsetSchedule(tf.keras.optimizers.schedules.LearningRateSchedule):
    """`schedule` shifted by `step_offset` steps: `OffsetSchedule(s, k)(step) == s(step + k)`."""

    def __init__(self, schedule, step_offset: int):
        super().__init__()
        if isinstance(schedule, dict):
            schedule = tf.keras.optimizers.schedules.deserialize(schedule)
        self.schedule, self.step_offset = schedule, int(step_offset)

    def __call__(self, step):
        return self.schedule(tf.cast(step, tf.int64) + self.step_offset)

    def get_config(self):
        return {"schedule": tf.keras.optimizers.schedules.serialize(self.schedule), "step_offset": self.step_offset}


def _base_name(name: str) -> str:
    return name.split(":")[0]


@lq.utils.register_keras_custom_object
class KernelSGD(tf.keras.optimizers.SGD):
    """SGD with coupled L2 weight decay on selected variables and a learning-rate multiplier for
    others (by gradient scaling, exact for SGD with momentum).

    # Arguments
    l2: weight-decay coefficient: `l2 * w` is added to the gradient of the `decayed` variables.
    decayed: names of the variables that get weight decay.
    scaled: names of the variables whose gradient (decay included) is multiplied by `multiplier`.
    multiplier: learning-rate multiplier of the `scaled` variables, float > 0.
    **kwargs: passed to `tf.keras.optimizers.SGD` (`learning_rate`, `momentum`, ...).
    """

    def __init__(self, l2: float = 0.0, decayed=(), scaled=(), multiplier: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.l2, self.multiplier = float(l2), float(multiplier)
        self.decayed, self.scaled = [_base_name(n) for n in decayed], [_base_name(n) for n in scaled]
        self._decayed_keys, self._scaled_keys = set(), set()

    def build(self, var_list):
        super().build(var_list)
        # Keys, not names: inside a distributed update each replica's copy has its own name.
        decayed, scaled = set(self.decayed), set(self.scaled)
        self._decayed_keys = {self._var_key(v) for v in var_list if _base_name(v.name) in decayed}
        self._scaled_keys = {self._var_key(v) for v in var_list if _base_name(v.name) in scaled}

    def update_step(self, gradient, variable):
        key = self._var_key(variable)
        gradient = tf.convert_to_tensor(gradient)
        if self.l2 and key in self._decayed_keys:
            gradient = gradient + tf.cast(self.l2, variable.dtype) * variable
        if self.multiplier != 1.0 and key in self._scaled_keys:
            gradient = gradient * tf.cast(self.multiplier, variable.dtype)
        return super().update_step(gradient, variable)

    def get_config(self):
        return {**super().get_config(), "l2": self.l2, "decayed": self.decayed, "scaled": self.scaled,
                "multiplier": self.multiplier}


def latent_kernel_names(model: tf.keras.Model) -> list[str]:
    """Names of the latent weight-quantized (binary) kernels of `model`: kernel, depthwise and
    pointwise ones (`hbnn_larq.utils.quantized_kernels`), the variables `KernelSGD` scales."""
    return [kernel.variable.name for kernel in quantized_kernels(model)]


def decayed_variable_names(model: tf.keras.Model) -> list[str]:
    """Names of the trainable kernels of `model`: not points, not BatchNorm, not biases."""
    return [
        v.name for v in model.trainable_variables
        if manifold_constraint(v) is None and re.search(r"kernel$", _base_name(v.name).split("/")[-1])
    ]


def make_optimizer(config, model: tf.keras.Model, schedule, weight_decay: float):
    """`KernelSGD` for the `TrainConfig` `config`, wrapped in `RiemannianOptimizer` for HBNN recipes."""
    inner = KernelSGD(
        l2=weight_decay, decayed=decayed_variable_names(model), scaled=latent_kernel_names(model),
        multiplier=config.resolved_latent_lr_multiplier(), learning_rate=schedule, momentum=config.momentum)
    if not recipes.is_hyperbolic(config.quantizer):
        return inner
    return RiemannianOptimizer(inner, point_lr_multiplier=config.resolved_point_lr_multiplier(),
                               point_update=config.point_update)
