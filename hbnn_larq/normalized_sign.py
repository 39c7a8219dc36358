"""`NormalizedSign`: the sign of the layer's latent kernel normalised to unit length.

```python
import hbnn_larq, larq as lq
lq.layers.QuantConv2D(128, 3, padding="same", pad_values=1.0, use_bias=False,
                      input_quantizer="ste_sign", kernel_quantizer="normalized_sign")
```

The baseline that isolates what HBNN's boundary variant does besides hyperbolic geometry: with
its point at the origin, the ∂D map is \\(w = \\tilde w / (\\sqrt{r}\\,\\lVert\\tilde w\\rVert)\\), so its
binary kernel is \\(\\operatorname{sign}(\\tilde w)\\) and the latent kernel is scale-invariant. This
quantizer is that map (at \\(\\sqrt r = 1\\)) with no point to train: no `RiemannianOptimizer`,
no manifold. Whether HBNN beats it is measured in `docs/results.md`.
"""

from __future__ import annotations

import larq as lq
import tensorflow as tf

from hbnn_larq.precision import FullPrecisionQuantizer


@lq.utils.register_alias("normalized_sign")
@lq.utils.register_keras_custom_object
class NormalizedSign(FullPrecisionQuantizer):
    """Sign of the latent kernel normalised per layer, with the identity straight-through estimator.

    The whole kernel \\(\\tilde w\\) is one vector (as in HBNN):
    \\[
    q(\\tilde w) = \\operatorname{sign}(u), \\qquad u = \\frac{\\tilde w}{\\lVert \\tilde w\\rVert}, \\qquad
    \\frac{\\partial L}{\\partial \\tilde w} = \\frac{1}{\\lVert\\tilde w\\rVert}\\big(I - u u^\\top\\big)
        \\frac{\\partial L}{\\partial q},
    \\]
    with \\(\\operatorname{sign}(0) = +1\\). The forward pass equals `ste_sign`'s; the backward pass
    differs in three ways: no clip (every \\(|u_i| \\le 1\\)), the component of the gradient
    along \\(\\tilde w\\) is removed (the loss cannot change the kernel's length, so weight decay
    alone shrinks it), and the step on \\(u\\) grows as \\(\\lVert\\tilde w\\rVert\\) shrinks, so the
    latent learning rate and the weight decay together set an effective step (sweep the former;
    `benchmarks/accuracy.py`). Do not add a `weight_clip` constraint: a scale-invariant kernel
    needs none, and a clip would change its direction.

    The norm and the division are computed in float32 under mixed precision
    (`hbnn_larq.precision.FullPrecisionQuantizer`); the norm is floored at the smallest normal
    number, so an all-zero kernel binarizes to +1 without NaN.

    # Returns
    \\(\\pm 1\\), the shape of the kernel.

    # References
    - Chen et al., Hyperbolic Binary Neural Network, IEEE TNNLS 2024 (the ∂D map this
      quantizer is the point-free limit of): `docs/method.md`.
    """

    precision = 1
    # Scale-invariant: every |u_i| <= 1, so no weight leaves the STE's window (see above).
    # Silences larq's starved-weights warning.
    needs_kernel_constraint = False

    def quantize(self, inputs):
        tiny = tf.constant(tf.experimental.numpy.finfo(inputs.dtype.as_numpy_dtype).tiny, inputs.dtype)
        unit = inputs / tf.sqrt(tf.maximum(tf.reduce_sum(tf.square(inputs)), tiny))
        return unit + tf.stop_gradient(lq.math.sign(unit) - unit)
