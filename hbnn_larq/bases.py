"""What the weight binarizers of IR-Net and ReCU share: a per-epoch schedule variable, filter
standardization and the checks of their arguments.

`ScheduledQuantizer` is the base of the quantizers whose behaviour follows training progress
(IR-Net's EDE parameter \\(t\\), ReCU's \\(\\tau\\)); `hbnn_larq.QuantizerSchedule` is the callback
that drives it.
"""

from __future__ import annotations

import tensorflow as tf

from hbnn_larq.precision import FullPrecisionQuantizer


def check_fraction(fraction) -> float:
    try:
        value = float(fraction)
    except (TypeError, ValueError):
        raise ValueError(f"`fraction` must be a float in [0, 1], got {fraction!r}.") from None
    if not 0.0 <= value <= 1.0:  # also rejects NaN
        raise ValueError(f"`fraction` must be a float in [0, 1], got {fraction!r}.")
    return value


def check_kernel_shape(name: str, shape) -> tf.TensorShape:
    shape = tf.TensorShape(shape)
    if not shape.is_fully_defined() or shape.rank < 2:
        raise ValueError(
            f"{name} needs a fully defined kernel shape of rank >= 2 whose last axis is the output "
            f"channels (e.g. (kh, kw, c_in, c_out)), got {shape}."
        )
    if shape.num_elements() // shape[-1] < 2:
        raise ValueError(f"{name} needs at least 2 weights per output channel, got kernel shape {shape}.")
    return shape


def standardize(w: tf.Tensor, epsilon: float = 0.0) -> tf.Tensor:
    """Per-output-channel (last axis) standardization with the *unbiased* variance (PyTorch's
    default `std`/`var`, which both reference implementations use):
    \\[ \\hat w = \\frac{w - \\mu_o}{\\sqrt{\\sigma_o^2 + \\epsilon}}, \\quad
        \\sigma_o^2 = \\frac{1}{n-1}\\sum (w - \\mu_o)^2. \\]
    Gradients flow through \\(\\mu_o\\) and \\(\\sigma_o\\) (as with PyTorch autograd)."""
    axes = list(range(w.shape.rank - 1))
    n = tf.cast(tf.reduce_prod(tf.shape(w)[:-1]), w.dtype)
    centered = w - tf.reduce_mean(w, axis=axes, keepdims=True)
    variance = tf.reduce_sum(tf.square(centered), axis=axes, keepdims=True) / (n - 1.0)
    return centered / tf.sqrt(variance + epsilon)


class ScheduledQuantizer(FullPrecisionQuantizer):
    """Base of the quantizers with a per-epoch schedule (`IRNetSign`'s \\(t\\), `ReCUSign`'s
    \\(\\tau\\)): one scalar, non-trainable variable, saved with the model and read by the traced
    graph, that `set_progress(f)` sets to `schedule_value(f)`. Like every quantizer of this
    package it computes in float32 under mixed precision (`quantize`, see `FullPrecisionQuantizer`).

    Subclasses define `schedule_value(fraction)` (which checks `fraction`), name the attribute
    holding the variable in `schedule_attribute`, and create it in `build` with
    `add_schedule_weight`.
    """

    schedule_attribute: str

    def add_schedule_weight(self, name: str, initial_value: float) -> tf.Variable:
        """Create the schedule variable `name`, starting at `initial_value`, as `schedule_attribute`."""
        variable = self.add_weight(
            name=name,
            shape=(),
            initializer=tf.keras.initializers.Constant(initial_value),
            trainable=False,
            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
        )
        setattr(self, self.schedule_attribute, variable)
        return variable

    def schedule_value(self, fraction) -> float:
        raise NotImplementedError

    def set_progress(self, fraction) -> None:
        """Set the schedule variable for training progress `fraction` (epoch / total epochs), in [0, 1]."""
        value = self.schedule_value(fraction)
        if not self.built:
            raise ValueError(f"{type(self).__name__}.set_progress needs a built quantizer (call the layer first).")
        getattr(self, self.schedule_attribute).assign(value)
