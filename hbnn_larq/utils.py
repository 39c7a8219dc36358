"""Small public helpers shared by the package: walking a model's layers, reading the kernels a
quantized layer really uses, and validating choices.

```python
for layer in hbnn_larq.utils.binarized_layers(model):
    print(layer.name, hbnn_larq.utils.quantized_kernel(layer).mean())
```
"""

from __future__ import annotations

import larq as lq
import numpy as np
import tensorflow as tf


def check_choice(name: str, value, choices, error: type[Exception] = ValueError) -> None:
    """Raise `error` naming the parameter `name` and the accepted `choices` unless `value` is one."""
    if value not in choices:
        raise error(f"`{name}` must be one of {', '.join(map(repr, choices))}; got {value!r}.")


def layers(model: tf.keras.Model):
    """The layers of `model` in order, nested models replaced by their own layers (recursively).

    Unlike `model.submodules` it keeps the layers' order (so that a model and its clone pair up
    layer by layer) and does not descend into a layer's own sublayers such as its quantizers.
    """
    for layer in model.layers:
        if isinstance(layer, tf.keras.Model):
            yield from layers(layer)
        else:
            yield layer


def quantized_kernel(layer) -> np.ndarray:
    """The kernel as `layer` uses it in the forward pass (e.g. exactly ±1), as NumPy. Outside the
    layer's call a larq layer's `kernel` is the latent (float) kernel."""
    # `.value()` hands the quantizer the latent kernel as a tensor (float32 outside the layer's
    # call, whatever the dtype policy): larq's own quantizers reject the variable itself when
    # the layer's policy is a mixed one (their custom gradient sees a variable).
    with lq.context.quantized_scope(True):
        return np.asarray(tf.cast(layer.kernel.value(), tf.float32))


def own_weights(layer) -> list:
    """The weights of `layer` without its quantizers' state (HBNN points, IR-Net's t, ...)."""
    quantizer_names = set()
    for attribute in ("kernel_quantizer", "input_quantizer"):
        quantizer = getattr(layer, attribute, None)
        if isinstance(quantizer, tf.keras.layers.Layer):
            quantizer_names.update(v.name for v in quantizer.weights)
    return [v for v in layer.weights if v.name not in quantizer_names]


def is_binarized(layer) -> bool:
    """A larq conv whose kernel *and* input are quantized: LCE turns exactly these into bconvs."""
    return (isinstance(layer, lq.layers.QuantConv2D) and getattr(layer, "kernel_quantizer", None) is not None
            and getattr(layer, "input_quantizer", None) is not None)


def binarized_layers(model: tf.keras.Model) -> list:
    """The `QuantConv2D` layers of `model` (nested models included) that LCE can binarize."""
    return [layer for layer in layers(model) if is_binarized(layer)]

