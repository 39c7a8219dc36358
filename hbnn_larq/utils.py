"""Small public helpers shared by the package: walking a model's layers, naming and reading the
kernels a quantized layer really uses, and validating choices.

```python
for layer in hbnn_larq.utils.binarized_layers(model):
    print(layer.name, hbnn_larq.utils.quantized_kernel(layer).mean())
for kernel in hbnn_larq.utils.quantized_kernels(layer):   # kernel, depthwise and pointwise alike
    print(kernel.name, kernel.quantizer, kernel.quantized().shape)
```
"""

from __future__ import annotations

from typing import NamedTuple

import larq as lq
import numpy as np
import tensorflow as tf


class KernelSlot(NamedTuple):
    """The attribute names of one of larq's weight-quantized kernels: the kernel variable, its
    quantizer and its latent-kernel constraint."""

    kernel: str
    quantizer: str
    constraint: str


# The weight-quantized kernels of larq's layers: QuantConv*/QuantDense (`kernel`),
# QuantDepthwiseConv2D (`depthwise_kernel`), QuantSeparableConv* (`depthwise_kernel` and
# `pointwise_kernel`). The one list the package reads a layer's quantized kernels from.
QUANTIZED_KERNELS = (
    KernelSlot("kernel", "kernel_quantizer", "kernel_constraint"),
    KernelSlot("depthwise_kernel", "depthwise_quantizer", "depthwise_constraint"),
    KernelSlot("pointwise_kernel", "pointwise_quantizer", "pointwise_constraint"),
)
# Every quantizer attribute of larq's layers: the kernels' and the input's.
QUANTIZER_ATTRIBUTES = (*(slot.quantizer for slot in QUANTIZED_KERNELS), "input_quantizer")


class QuantizedKernel(NamedTuple):
    """One weight-quantized kernel of a built layer (`quantized_kernels`).

    # Attributes
    layer: the layer.
    variable: the latent kernel (larq's `QuantizedVariable`, e.g. `layer.depthwise_kernel`).
    quantizer: its quantizer (e.g. `layer.depthwise_quantizer`).
    slot: the `KernelSlot` (attribute names of the kernel, quantizer and constraint).
    """

    layer: tf.keras.layers.Layer
    variable: tf.Variable
    quantizer: object
    slot: KernelSlot

    @property
    def name(self) -> str:
        """`<layer>` for a `kernel`, `<layer>/depthwise_kernel` or `<layer>/pointwise_kernel`
        otherwise: the key of this kernel in logs and selection records."""
        return self.layer.name if self.slot.kernel == "kernel" else f"{self.layer.name}/{self.slot.kernel}"

    def quantized(self) -> np.ndarray:
        """The kernel as the layer uses it in the forward pass, as NumPy (`quantized_kernel`)."""
        return _quantized_value(self.variable)


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


def quantized_kernels(layer) -> list[QuantizedKernel]:
    """The weight-quantized kernels of the built `layer`: one `QuantizedKernel` per slot of
    `QUANTIZED_KERNELS` whose quantizer is set (two for a `QuantSeparableConv2D`), in that order.

    # Arguments
    layer: a built layer, or a model: then the kernels of all its `layers` (nested models
        included), in layer order.

    # Returns
    A list, empty for a layer without a kernel quantizer.
    """
    if isinstance(layer, tf.keras.Model):
        return [kernel for sublayer in layers(layer) for kernel in quantized_kernels(sublayer)]
    return [QuantizedKernel(layer, getattr(layer, slot.kernel), getattr(layer, slot.quantizer), slot)
            for slot in QUANTIZED_KERNELS if getattr(layer, slot.quantizer, None) is not None]


def quantized_kernel(layer, kernel: str = "kernel") -> np.ndarray:
    """The kernel as `layer` uses it in the forward pass (e.g. exactly ±1), as NumPy. Outside the
    layer's call a larq layer's `kernel` is the latent (float) kernel.

    # Arguments
    layer: a built layer.
    kernel: the kernel's attribute: `"kernel"` (default), `"depthwise_kernel"` or
        `"pointwise_kernel"`.
    """
    return _quantized_value(getattr(layer, kernel))


def _quantized_value(variable) -> np.ndarray:
    # `.value()` hands the quantizer the latent kernel as a tensor (float32 outside the layer's
    # call, whatever the dtype policy): larq's own quantizers reject the variable itself when
    # the layer's policy is a mixed one (their custom gradient sees a variable).
    with lq.context.quantized_scope(True):
        return np.asarray(tf.cast(variable.value(), tf.float32))


def own_weights(layer, quantizers=QUANTIZER_ATTRIBUTES) -> list:
    """The weights of `layer` without its quantizers' state (HBNN points, IR-Net's t, ...).

    # Arguments
    layer: a layer.
    quantizers: the attributes of the quantizers whose state is left out; default: all of them
        (`QUANTIZER_ATTRIBUTES`: kernel, depthwise, pointwise and input quantizers).
    """
    quantizer_names = set()
    for attribute in quantizers:
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

