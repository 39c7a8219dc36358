"""`IRNetSign`: IR-Net's weight binarizer (balanced weights, power-of-two scale, EDE gradient).

```python
import hbnn_larq, larq as lq
lq.layers.QuantConv2D(128, 3, padding="same", pad_values=1.0, use_bias=False,
                      input_quantizer="approx_sign", kernel_quantizer="ir_net")
# as an HBNN plug-in ("IR-Net + HBNN"): binarize exp_{F_i}(w~) with IR-Net
hbnn_larq.HyperbolicSign(base="ir_net")
```

Train with `hbnn_larq.QuantizerSchedule(epochs)` so that the EDE parameter follows the
reference schedule.
"""

from __future__ import annotations

import math

import larq as lq
import tensorflow as tf

from hbnn_larq.bases import ScheduledQuantizer, check_fraction, check_kernel_shape, standardize


def ede_sign(x: tf.Tensor, t: tf.Tensor) -> tf.Tensor:
    """\\(\\operatorname{sign}(x)\\) (0 maps to +1) with IR-Net's Error Decay Estimator gradient
    \\[ \\frac{\\partial\\, q}{\\partial x} = k\\, t\\, \\big(1 - \\tanh^2(t x)\\big), \\qquad
        k = \\max(1/t, 1). \\]

    # Arguments
    x: input tensor.
    t: the EDE parameter (scalar tensor, > 0).

    # Returns
    \\(\\pm 1\\), same shape and dtype as `x`.
    """
    t = tf.cast(tf.convert_to_tensor(t), x.dtype)

    @tf.custom_gradient
    def _call(x):
        def grad(dy):
            k = tf.maximum(1.0 / t, tf.ones_like(t))
            return dy * k * t * (1.0 - tf.square(tf.tanh(t * x)))

        return lq.math.sign(x), grad

    return _call(x)


@lq.utils.register_alias("ir_net")
@lq.utils.register_keras_custom_object
class IRNetSign(ScheduledQuantizer):
    """IR-Net's weight binarizer with the Error Decay Estimator (EDE).

    For a kernel whose last axis holds the \\(C_{out}\\) output channels (e.g. a conv kernel
    \\((k_h, k_w, C_{in}, C_{out})\\)), each filter is balanced (zero mean, unit std), binarized
    and scaled by a per-filter power of two computed without gradient:

    \\[
    \\hat w = \\frac{w - \\mu_o}{\\sigma_o}, \\qquad
    s_o = 2^{\\operatorname{round}(\\log_2 \\operatorname{mean}|\\hat w_o|)}, \\qquad
    q(w) = s_o \\operatorname{sign}(\\hat w),
    \\]

    with \\(\\operatorname{sign}(0) = +1\\) and \\(\\sigma_o\\) the unbiased std. Backward, the
    sign is replaced by the EDE \\(\\partial q/\\partial\\hat w = s_o\\, k t (1 - \\tanh^2(t \\hat w))\\),
    \\(k = \\max(1/t, 1)\\), and the gradient flows through \\(\\mu_o, \\sigma_o\\) by autodiff.
    \\(t\\) grows log-linearly from `t_min` to `t_max` over training, following the reference
    `Log_UP` schedule with progress \\(f = e/E\\) (epoch \\(e\\) of \\(E\\)):

    \\[ t(f) = 10^{\\log_{10} t_{min} + f (\\log_{10} t_{max} - \\log_{10} t_{min})}. \\]

    \\(t\\) is a non-trainable variable (saved with the model, read by the traced graph); set it
    with `set_progress(f)`, usually through the `hbnn_larq.QuantizerSchedule` callback. It starts
    at `t_min` (the reference initializes `k = 10, t = 0.1`).

    Every value of the output is \\(\\pm s_o\\) per output channel, which the Larq Compute Engine
    converts to a binary convolution (the scale goes into the post-multiplier).

    # Arguments
    t_min: initial EDE parameter, float > 0. Default 0.1 (reference VGG-Small; its ResNet-20
        script uses 1e-3).
    t_max: final EDE parameter, float >= t_min. Default 10.
    epsilon: added to the variance, float >= 0. Default 1e-12 (the reference adds none; this
        only avoids NaN for a constant filter).

    # Returns
    The binary kernel \\(\\pm s_o\\).

    # References
    - Qin et al., Forward and Backward Information Retention for Accurate Binary Neural
      Networks, CVPR 2020 (https://github.com/htqin/IR-Net).
    """

    precision = 1
    # The EDE gradient is nonzero everywhere and the kernel is re-standardized per filter, so no
    # latent weight can starve and a clip would only distort the filter (the reference clips
    # none). Silences larq's starved-weights warning.
    needs_kernel_constraint = False
    # Every filter is re-standardised in the forward pass: `HyperbolicSign(base=...)` reads this
    # to give its points the paper's step instead of sign-HBNN's larger one.
    standardizes_weights = True
    schedule_attribute = "t"

    def __init__(self, t_min: float = 0.1, t_max: float = 10.0, epsilon: float = 1e-12, **kwargs):
        for name, value in (("t_min", t_min), ("t_max", t_max)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0 or math.isinf(value):
                raise ValueError(f"`{name}` must be a finite float > 0, got {value!r}.")
        if not t_max >= t_min:
            raise ValueError(f"`t_max` must be >= `t_min` ({t_min!r}), got {t_max!r}.")
        if not isinstance(epsilon, (int, float)) or not epsilon >= 0:
            raise ValueError(f"`epsilon` must be a float >= 0, got {epsilon!r}.")
        self.t_min, self.t_max, self.epsilon = float(t_min), float(t_max), float(epsilon)
        super().__init__(**kwargs)

    def build(self, input_shape):
        check_kernel_shape("IRNetSign", input_shape)
        self.add_schedule_weight("ede_t", self.t_min)
        super().build(input_shape)

    def schedule_value(self, fraction) -> float:
        """The EDE parameter \\(t\\) at training progress `fraction` in [0, 1]."""
        fraction = check_fraction(fraction)
        lo, hi = math.log10(self.t_min), math.log10(self.t_max)
        return 10.0 ** (lo + fraction * (hi - lo))

    def quantize(self, inputs):
        balanced = standardize(inputs, self.epsilon)
        axes = list(range(inputs.shape.rank - 1))
        mean_abs = tf.reduce_mean(tf.abs(balanced), axis=axes, keepdims=True)
        scale = tf.stop_gradient(tf.pow(tf.constant(2.0, inputs.dtype), tf.round(tf.math.log(mean_abs) / math.log(2.0))))
        return ede_sign(balanced, tf.convert_to_tensor(self.t)) * scale

    def get_config(self):
        return {**super().get_config(), "t_min": self.t_min, "t_max": self.t_max, "epsilon": self.epsilon}
