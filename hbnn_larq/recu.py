"""`ReCUSign`: ReCU's weight binarizer (standardize, rectified clamp at the Laplace τ-quantile).

```python
import hbnn_larq, larq as lq
lq.layers.QuantConv2D(128, 3, padding="same", pad_values=1.0, use_bias=False,
                      input_quantizer="approx_sign", kernel_quantizer="recu")
# as an HBNN plug-in ("ReCU + HBNN"): binarize exp_{F_i}(w~) with ReCU
hbnn_larq.HyperbolicSign(base="recu")
```

Train with `hbnn_larq.QuantizerSchedule(epochs)` so that τ follows the reference schedule.
"""

from __future__ import annotations

import math

import larq as lq
import tensorflow as tf

from hbnn_larq.bases import ScheduledQuantizer, check_fraction, check_kernel_shape, standardize

SCALES = ("learned", "mean", "none")


@lq.utils.register_alias("recu")
@lq.utils.register_keras_custom_object
class ReCUSign(ScheduledQuantizer):
    """ReCU's weight binarizer: rectified clamp unit with an identity straight-through estimator.

    For a kernel whose last axis holds the \\(C_{out}\\) output channels, as in the reference
    `BinarizeConv2d`:

    \\[
    w_1 = \\frac{w - \\mu_o}{\\sqrt{\\sigma_o^2 + \\epsilon} / (2\\sqrt 2)}, \\qquad
    Q_\\tau = -\\operatorname{mean}(|w_1|)\\, \\ln(2 - 2\\tau), \\qquad
    q(w) = \\alpha_o \\operatorname{sign}\\big(\\operatorname{clip}(w_1, -Q_\\tau, Q_\\tau)\\big),
    \\]

    with \\(\\sigma_o^2\\) the unbiased per-filter variance and \\(\\operatorname{sign}(0) = +1\\).
    \\(Q_\\tau\\) is the \\(\\tau\\)-quantile of a Laplace distribution whose scale
    \\(b = \\operatorname{mean}|w_1|\\) is estimated over the **whole kernel** (a scalar per layer)
    and carries no gradient; on Laplace-distributed weights a fraction \\(2 - 2\\tau\\) of them is
    clamped (30 % at \\(\\tau = 0.85\\), 2 % at 0.99). Backward: identity through the sign, the clamp's own gradient (1
    inside \\([-Q_\\tau, Q_\\tau]\\), 0 outside), and autodiff through the standardization.

    \\(\\tau\\) rises from `tau_min` to `tau_max` following the reference `cpt_tau`, with
    progress \\(f = e/E\\) (epoch \\(e\\) of \\(E\\)):

    \\[ \\tau(f) = \\tau_{min} + (\\tau_{max} - \\tau_{min}) \\frac{e^{f} - 1}{e - 1}. \\]

    \\(\\tau\\) is a non-trainable variable (saved with the model, read by the traced graph); set
    it with `set_progress(f)`, usually through `hbnn_larq.QuantizerSchedule`. It starts at
    `tau_min`.

    Scale \\(\\alpha_o\\) (`scale`): `"learned"` (reference) is a trainable per-output-channel
    factor initialized \\(\\mathcal U(0, 1)\\); the reference multiplies the conv *output* by it,
    which equals scaling the binary filter. `"mean"` is the per-filter
    \\(\\operatorname{mean}|\\operatorname{clip}(w_1)|\\) without gradient; `"none"` gives \\(\\pm 1\\).
    Every value is \\(\\pm\\alpha_o\\) per output channel, which LCE converts to a binary conv.

    # Arguments
    tau_min: initial \\(\\tau\\), in (0.5, 1). Default 0.85.
    tau_max: final \\(\\tau\\), in [tau_min, 1). Default 0.99.
    scale: `"learned"`, `"mean"` or `"none"`. Default `"learned"`.
    epsilon: added to the variance, float >= 0. Default 1e-5 (reference). Note that with
        `HyperbolicSign(base="recu")` the mapped weights \\(\\exp_{F_i}(\\tilde w)\\) of a wide
        layer-flat kernel are small (variance ~1e-5 at 512 channels), so the reference epsilon
        then damps the per-filter normalization; pass a smaller one if that matters.

    # Returns
    The binary kernel \\(\\pm\\alpha_o\\).

    # References
    - Xu et al., ReCU: Reviving the Dead Weights in Binary Neural Networks, ICCV 2021
      (https://github.com/z-hXu/ReCU).
    """

    precision = 1
    # The clamp acts on the per-filter standardized kernel, so its window follows the latent
    # kernel's scale: a latent clip would not change which weights it holds, only distort the
    # filter (the reference clips none). Silences larq's starved-weights warning.
    needs_kernel_constraint = False
    # Every filter is re-standardised in the forward pass: `HyperbolicSign(base=...)` reads this
    # to give its points the paper's step instead of sign-HBNN's larger one.
    standardizes_weights = True
    schedule_attribute = "tau"

    def __init__(self, tau_min: float = 0.85, tau_max: float = 0.99, scale: str = "learned", epsilon: float = 1e-5, **kwargs):
        for name, value in (("tau_min", tau_min), ("tau_max", tau_max)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.5 < value < 1.0:
                raise ValueError(f"`{name}` must be a float in (0.5, 1), got {value!r}.")
        if not tau_max >= tau_min:
            raise ValueError(f"`tau_max` must be >= `tau_min` ({tau_min!r}), got {tau_max!r}.")
        if scale not in SCALES:
            raise ValueError(f"`scale` must be one of {', '.join(map(repr, SCALES))}; got {scale!r}.")
        if not isinstance(epsilon, (int, float)) or isinstance(epsilon, bool) or not epsilon >= 0:
            raise ValueError(f"`epsilon` must be a float >= 0, got {epsilon!r}.")
        self.tau_min, self.tau_max, self.scale = float(tau_min), float(tau_max), scale
        self.epsilon = float(epsilon)
        super().__init__(**kwargs)

    def build(self, input_shape):
        shape = check_kernel_shape("ReCUSign", input_shape)
        self.add_schedule_weight("tau", self.tau_min)
        if self.scale == "learned":
            self.alpha = self.add_weight(
                name="alpha",
                shape=(shape[-1],),
                initializer=tf.keras.initializers.RandomUniform(0.0, 1.0),
                trainable=True,
            )
        super().build(input_shape)

    def schedule_value(self, fraction) -> float:
        """\\(\\tau\\) at training progress `fraction` in [0, 1]."""
        fraction = check_fraction(fraction)
        return self.tau_min + (self.tau_max - self.tau_min) * (math.exp(fraction) - 1.0) / (math.e - 1.0)

    def quantize(self, inputs):
        w1 = standardize(inputs, self.epsilon) * (2.0 * math.sqrt(2.0))
        tau = tf.cast(tf.convert_to_tensor(self.tau), inputs.dtype)
        q_tau = tf.stop_gradient(-tf.reduce_mean(tf.abs(w1)) * tf.math.log(2.0 - 2.0 * tau))
        w2 = tf.clip_by_value(w1, -q_tau, q_tau)
        binary = lq.quantizers.ste_sign(w2, clip_value=None)
        if self.scale == "learned":
            return binary * tf.cast(self.alpha, inputs.dtype)
        if self.scale == "mean":
            axes = list(range(inputs.shape.rank - 1))
            return binary * tf.stop_gradient(tf.reduce_mean(tf.abs(w2), axis=axes, keepdims=True))
        return binary

    def get_config(self):
        return {
            **super().get_config(),
            "tau_min": self.tau_min,
            "tau_max": self.tau_max,
            "scale": self.scale,
            "epsilon": self.epsilon,
        }
