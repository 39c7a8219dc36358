"""Batch-norm thresholds of binary activations, centred between attainable sums before export.

Between two binary convolutions a batch norm only decides a sign: its output \\(y = \\gamma(x -
\\mu)/\\sigma + \\beta\\) is binarized by the next layer, so all that matters is on which side of
its zero crossing \\(x^* = \\mu - \\beta\\sigma/\\gamma\\) each conv output \\(x\\) falls. Those outputs
are not arbitrary: a binary conv with \\(\\pm 1\\) inputs, a \\(\\pm\\alpha_o\\) kernel and fan-in
\\(K\\) produces \\(x \\in \\alpha_o\\{-K, -K+2, \\dots, K\\}\\) (ones-padding; with zero-padding, any
integer multiple of \\(\\alpha_o\\) at the borders), and max-pooling keeps that set.

When \\(x^*\\) lies within float32 rounding of such a value, Keras and LCE (which folds the batch
norm into a threshold on the integer sums) can decide that value differently, and then a whole
channel flips wherever the sum takes it: measured on the demo's VGG-Small, a crossing at
22.0000017 flipped one channel of `conv1_bn` and cost 4.5 % top-1 agreement
(`docs/deployment.md`). `center_binary_thresholds` moves every such crossing to the midpoint of
the two attainable values around it (by changing \\(\\beta\\)): exact arithmetic gives every
attainable input the same sign as before, and no rounding can change it any more. It is applied
to the float32 copy `hbnn_larq.convert_keras_model` converts, never to the trained model.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

import larq as lq

# Layers between a binary conv and its batch norm, and between the batch norm and the next binary
# conv, that keep the decision: max-pooling keeps the set of attainable sums; Hardtanh keeps signs.
_POOLS = (tf.keras.layers.MaxPooling2D,)


def _binarizes_input(layer) -> bool:
    """A larq conv whose input is binarized (its kernel may be baked: no kernel quantizer left)."""
    return isinstance(layer, lq.layers.QuantConv2D) and getattr(layer, "input_quantizer", None) is not None


def _binary_kernel(conv) -> bool:
    """Whether `conv`'s kernel is ±alpha per output channel (a baked or a sign-quantized one)."""
    kernel = conv.kernel.numpy().reshape(-1, conv.kernel.shape[-1])
    return bool(np.all(np.abs(kernel) == np.abs(kernel).max(0)))


def _single(nodes):
    return nodes[0] if len(nodes) == 1 else None


def _producer(layer):
    """The binarized conv feeding `layer` directly or through max-pooling, else None."""
    node = _single(layer.inbound_nodes)
    source = node.inbound_layers if node is not None else None
    if isinstance(source, _POOLS):
        node = _single(source.inbound_nodes)
        source = node.inbound_layers if node is not None else None
    return source if _binarizes_input(source) and _binary_kernel(source) else None


def _feeds_only_signs(layer) -> bool:
    """Whether every consumer of `layer`'s output binarizes it (binary convs, through Hardtanh)."""
    consumers = [node.outbound_layer for node in layer.outbound_nodes]
    if not consumers:
        return False
    return all(_binarizes_input(c) or (type(c).__name__ == "HardTanh" and _feeds_only_signs(c)) for c in consumers)


def _lattice(conv) -> tuple[np.ndarray, float, float]:
    """`(alpha per channel, step, offset)`: the conv's outputs are alpha * (offset + step * integers)."""
    kernel = conv.kernel.numpy()
    alpha = np.abs(kernel).reshape(-1, kernel.shape[-1]).max(0).astype(np.float64)
    fan_in = int(np.prod(kernel.shape[:-1]))
    if conv.padding == "same" and getattr(conv, "pad_values", 0.0) == 0.0 and max(conv.kernel_size) > 1:
        return alpha, 1.0, 0.0  # zeros at the borders: fewer terms, either parity
    return alpha, 2.0, float(fan_in % 2)


def center_binary_thresholds(model: tf.keras.Model) -> list[str]:
    """Centre the zero crossing of every batch norm that sits between a binary conv whose kernel
    is baked to ±alpha (`hbnn_larq.bake_quantized_kernels`; possibly through max-pooling) and
    only binarizing consumers, in place (see the module docstring).

    # Returns
    The names of the batch norms changed.
    """
    changed = []
    for layer in model.layers:
        if not isinstance(layer, tf.keras.layers.BatchNormalization) or not layer.center:
            continue
        conv = _producer(layer)
        if conv is None or not _feeds_only_signs(layer) or not layer.scale:
            continue
        gamma, beta, mean, variance = (w.numpy().astype(np.float64) for w in
                                       (layer.gamma, layer.beta, layer.moving_mean, layer.moving_variance))
        sigma = np.sqrt(variance + layer.epsilon)
        alpha, step, offset = _lattice(conv)
        usable = (gamma != 0) & (alpha > 0)
        crossing = np.where(usable, mean - beta * sigma / np.where(gamma == 0, 1, gamma), 0.0)
        position = (crossing / np.where(alpha > 0, alpha, 1) - offset) / step  # in lattice steps
        below = np.floor(position)
        on_point = position == below  # exactly on an attainable value: ambiguous, leave it
        centred = alpha * (offset + step * (below + 0.5))
        new_beta = np.where(usable & ~on_point, -gamma * (centred - mean) / sigma, beta)
        layer.beta.assign(new_beta.astype(layer.beta.dtype.as_numpy_dtype))
        changed.append(layer.name)
    return changed
