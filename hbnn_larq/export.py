"""Export to the Larq Compute Engine: every binarized convolution becomes an `LceBconv2d`.

At inference an HBNN is an ordinary BNN: only \\(\\operatorname{sign}(\\exp_{F_i}(\\tilde w))\\)
survives. `bake_quantized_kernels` copies the model with every weight-quantized kernel (kernel,
depthwise or pointwise: `hbnn_larq.utils.quantized_kernels`) replaced by its quantized value and
its quantizer replaced by the identity, so the converter sees a constant binary filter (it
checks filters for \\(\\pm\\alpha_o\\) values, it does not pattern-match the quantizer). This
avoids the silent float fallback of TensorFlow's constant folding for kernels above 1 MiB
(TensorFlow's MLIR constant folding skips results over 1 MiB that are much larger than their
operands, and LCE then sees a non-constant filter), and drops the training-only points.

The copy is always float32: a model built or trained under a mixed precision policy
(`mixed_bfloat16`, `mixed_float16`) is rebuilt with every layer's dtype policy set to float32
and its (float32) weights copied, since LCE converts float32 models only. The flatbuffer is the
same 1-bit model either way.
"""

from __future__ import annotations

import tensorflow as tf

from hbnn_larq.precision import policy_scope
from hbnn_larq.thresholds import center_binary_thresholds
from hbnn_larq.utils import QUANTIZED_KERNELS, binarized_layers, layers, own_weights, quantized_kernels

BINARY_CONV_OP = "LceBconv2d"


def bake_quantized_kernels(model: tf.keras.Model) -> tf.keras.Model:
    """A copy of `model` whose weight-quantized layers hold their quantized kernels as constants.

    Every quantized kernel (`kernel`, `depthwise_kernel`, `pointwise_kernel`; nested models
    included) holds its quantized value (\\(\\pm 1\\) or \\(\\pm\\alpha\\)) and has no quantizer and no
    constraint; input quantizers are kept. The copy computes the same function at inference, has
    no kernel quantizer state (points, active index), is float32 whatever policy `model` was built
    under, and converts to a model whose binarized convs are all `LceBconv2d`. LCE 0.16 has no
    binary depthwise op: a baked `QuantDepthwiseConv2D` or `QuantSeparableConv2D` converts to a
    float conv with \\(\\pm 1\\) weights.

    # Arguments
    model: a Functional or Sequential `tf.keras.Model`.

    # Returns
    A new `tf.keras.Model`.
    """

    def clone_layer(layer):
        if isinstance(layer, tf.keras.Model):
            return tf.keras.models.clone_model(layer, clone_function=clone_layer)
        config = float32_config(layer.get_config())
        for slot in QUANTIZED_KERNELS:
            if config.get(slot.quantizer) is not None:
                config.update({slot.quantizer: None, slot.constraint: None})
        return layer.__class__.from_config(config)

    with policy_scope("float32"):
        clone = tf.keras.models.clone_model(model, clone_function=clone_layer)
    for source, target in zip(layers(model), layers(clone)):
        _copy_weights(source, target)
    return clone


_REDUCED_PRECISION = ("mixed_bfloat16", "mixed_float16", "bfloat16", "float16")


def float32_config(config):
    """A layer (or nested model) config with every reduced-precision dtype policy set to float32."""
    if isinstance(config, list):
        return [float32_config(item) for item in config]
    if not isinstance(config, dict):
        return config
    result = {}
    for key, value in config.items():
        if key == "dtype" and _policy_name(value) in _REDUCED_PRECISION:
            result[key] = "float32"
        else:
            result[key] = float32_config(value)
    return result


def _policy_name(dtype):
    if isinstance(dtype, dict) and dtype.get("class_name") in ("Policy", "DTypePolicy"):
        return dtype.get("config", {}).get("name")
    return dtype if isinstance(dtype, str) else None


def _copy_weights(source, target) -> None:
    """Copy `source`'s weights into its baked copy `target`, each quantized kernel replaced by its
    quantized value (and without the kernel quantizers' state)."""
    kernels = quantized_kernels(source)
    if not kernels:
        target.set_weights(source.get_weights())
        return
    baked = {kernel.variable.name: kernel.quantized() for kernel in kernels}
    weights = own_weights(source, [kernel.slot.quantizer for kernel in kernels])  # input quantizers stay
    target.set_weights([baked.get(v.name, v.numpy()) for v in weights])


def op_names(flatbuffer: bytes) -> list[str]:
    """The names of the ops in a TFLite flatbuffer (LCE custom ops by their custom name)."""
    details = tf.lite.Interpreter(model_content=flatbuffer)._get_ops_details()
    return [d["op_name"] for d in details]


def check_zero_padding(model: tf.keras.Model) -> None:
    """Raise a ValueError for a binarized conv LCE 0.16 computes wrongly: "same" padding with
    zeros (`pad_values=0`) on a feature map smaller than the kernel (e.g. a 3×3 conv on 2×2 or
    1×1 inputs; measured: outputs off by up to 58 for 64 input channels; ones-padding and
    larger maps are exact). Tested in `tests/test_export.py`.

    # Raises
    ValueError: naming the layer, its input size and the fixes.
    """
    for layer in binarized_layers(model):
        if getattr(layer, "pad_values", 0.0) != 0.0 or layer.padding != "same":
            continue
        sides = tuple(layer.input_shape[1:3])
        if any(side is not None and side < k and k > 1 for side, k in zip(sides, layer.kernel_size)):
            raise ValueError(
                f"Layer {layer.name!r} is a zero-padded ('same', pad_values=0) binary convolution with a "
                f"{layer.kernel_size[0]}x{layer.kernel_size[1]} kernel on a {sides[0]}x{sides[1]} input: LCE 0.16 "
                "computes it wrongly. Use a larger input size (every binary conv's input at least as large as its "
                "kernel) or pad_values=1.0 (LCE's fast path).")


def convert_keras_model(model: tf.keras.Model, *, strict: bool = True, **lce_kwargs) -> bytes:
    """Convert a (HBNN or any larq) Keras model to a 1-bit TFLite flatbuffer with LCE.

    # Arguments
    model: a `tf.keras.Model` with larq layers.
    strict: raise if the flatbuffer has fewer `LceBconv2d` ops than the model has binarized
        convolutions (a silent float conv is a bug, not a fallback). Default True.
    **lce_kwargs: passed to `larq_compute_engine.convert_keras_model` (e.g.
        `inference_input_type`, `target`).

    # Returns
    The flatbuffer as `bytes`.

    # Raises
    RuntimeError: with `strict=True`, if a binarized convolution was converted to a float one.
    ValueError: for a binarized convolution LCE would compute wrongly (`check_zero_padding`).
    """
    import larq_compute_engine as lce

    if not isinstance(model, tf.keras.Model):
        raise ValueError(f"`model` must be a tf.keras.Model, got {type(model).__name__}.")
    check_zero_padding(model)
    baked = bake_quantized_kernels(model)
    center_binary_thresholds(baked)  # so that no batch-norm threshold is decided by rounding
    # LCE saves the model as a SavedModel first, and Keras warns ("Compiled the loaded model, but
    # the compiled metrics have yet to be built") when it saves a model that was never compiled.
    # Compiling the copy (no loss, no metrics) leaves the flatbuffer unchanged.
    baked.compile()
    flatbuffer = lce.convert_keras_model(baked, **lce_kwargs)
    expected = len(binarized_layers(model))
    found = op_names(flatbuffer).count(BINARY_CONV_OP)
    if strict and found < expected:
        raise RuntimeError(
            f"Only {found} of {expected} binarized convolutions became {BINARY_CONV_OP}; the others "
            "were converted to float convolutions. Check that their kernel quantizer yields "
            "±(per-output-channel scale) values and that the input quantizer is a larq sign."
        )
    return flatbuffer
