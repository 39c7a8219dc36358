"""The zoo's weights file: a bit-packed, inference-only format (`save_pretrained`, `load_pretrained`).

A weights file is one uncompressed `.npz` archive:

| key | content |
|---|---|
| `__metadata__` | JSON: format name and version, model name, build arguments (`num_classes`, `include_top`, `width`, ...), and per binarized kernel its shape |
| `<layer>/kernel:bits` | the binarized kernel's signs, `np.packbits` of `kernel > 0` in C order: 1 bit per weight |
| `<layer>/kernel:scale` | float32 per-output-channel (last axis) magnitude \\(\\alpha_o\\) (all ones for plain sign quantizers) |
| `<layer>/depthwise_kernel:bits`, `:scale`, `<layer>/pointwise_kernel:bits`, `:scale` | the same for the binarized depthwise and pointwise kernels of `QuantDepthwiseConv2D` and `QuantSeparableConv*` |
| `<layer>/<weight>` | every other weight inference needs, float32 (FP convs, dense, BN γ/β/moving statistics) |

Every weight-quantized kernel (`hbnn_larq.utils.quantized_kernels`: kernel, depthwise or pointwise)
is stored as its binary value \\(\\operatorname{sign}(\\exp_{F_i}(\\tilde w))\\) only: the latent kernel
and the HBNN points are training-only state. `load_pretrained` therefore writes the stored ±α
kernel into the latent kernel and resets every `HyperbolicSign` to the origin chart (points 0,
active index 0), where \\(\\exp_0(v)\\) is a positive multiple of \\(v\\), so the quantizer
reproduces the stored kernel exactly; for any other quantizer the restored kernel is checked.

Which build arguments a file is tied to: `COMPATIBILITY_KEYS`; the shipped files and their
registry: `hbnn_larq.zoo.pretrained`.
"""

from __future__ import annotations

import json
import weakref
from pathlib import Path

import numpy as np
import tensorflow as tf

from hbnn_larq.quantizers import HyperbolicSign
from hbnn_larq.utils import layers, own_weights, quantized_kernels

FORMAT = "hbnn-larq-zoo-weights"
FORMAT_VERSION = 1
METADATA_KEY = "__metadata__"
BITS_SUFFIX, SCALE_SUFFIX = ":bits", ":scale"
# Build arguments that change the inference function or the weight shapes: a file saved with one
# value cannot be loaded into a model built with another.
COMPATIBILITY_KEYS = ("model", "num_classes", "include_top", "width", "variant", "pad_values", "input_quantizer",
                      "input_normalization")

_MODEL_METADATA: "weakref.WeakKeyDictionary[tf.keras.Model, dict]" = weakref.WeakKeyDictionary()


# -- which model a file serves ---
def record_metadata(model: tf.keras.Model, metadata: dict) -> None:
    """Remember the zoo `metadata` of `model` (read by `save_pretrained` and `zoo_metadata`)."""
    _MODEL_METADATA[model] = {**metadata, "input_shape": list(model.input_shape[1:])}


def zoo_metadata(model: tf.keras.Model) -> dict | None:
    """The metadata recorded when a zoo function built `model`, or None."""
    return _MODEL_METADATA.get(model)


def check_compatible(saved: dict, requested: dict, *, source: str) -> None:
    """Raise a ValueError if weights described by `saved` cannot serve a `requested` model."""
    for key in COMPATIBILITY_KEYS:
        if key in saved and key in requested and saved[key] != requested[key]:
            raise ValueError(
                f"Weights {source!r} were saved for {key}={saved[key]!r}, but the model is built with "
                f"{key}={requested[key]!r}. Build the model with the same {key}"
                + (" (or include_top=False to reuse the features)" if key == "num_classes" else "")
                + "."
            )


# -- saving and loading --------------------------------------------------------------------------
def save_pretrained(model: tf.keras.Model, path, *, metadata: dict | None = None) -> Path:
    """Write `model`'s inference weights to `path` (`.npz`), binarized kernels at 1 bit/weight.

    # Arguments
    model: a zoo model (its build arguments are recorded) or any larq model (then pass
        `metadata`).
    path: the file to write; `.npz` is appended by NumPy if missing.
    metadata: extra JSON-safe metadata, merged over the zoo metadata.

    # Returns
    The path written.

    # Raises
    ValueError: if a weight-quantized kernel is not of the form ±α (per output channel).
    """
    meta = {**(zoo_metadata(model) or {"model": model.name}), **(metadata or {})}
    meta.update(format=FORMAT, format_version=FORMAT_VERSION, binary_kernels={})
    arrays = {}
    for layer in layers(model):
        kernels = _quantized_kernels_by_name(layer)
        for variable in own_weights(layer):
            key = f"{layer.name}/{_short_name(variable)}"
            if variable.name in kernels:
                signs, scale = _signs_and_scale(kernels[variable.name].quantized(), key)
                arrays[key + BITS_SUFFIX] = np.packbits(signs.reshape(-1))
                arrays[key + SCALE_SUFFIX] = scale
                meta["binary_kernels"][key] = list(signs.shape)
            else:
                arrays[key] = variable.numpy().astype(np.float32)
    arrays[METADATA_KEY] = np.array(json.dumps(meta))
    path = str(path) if str(path).endswith(".npz") else f"{path}.npz"
    np.savez(path, **arrays)
    return Path(path)


def read_metadata(path) -> dict:
    """The metadata of a weights file.

    # Raises
    ValueError: if `path` is not a weights file of a supported format version.
    """
    try:
        with np.load(path, allow_pickle=False) as archive:
            meta = json.loads(str(archive[METADATA_KEY]))
    except (OSError, KeyError, ValueError) as error:
        raise ValueError(f"{str(path)!r} is not a {FORMAT} file: {error}") from error
    if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{str(path)!r} has format {meta.get('format')!r} version {meta.get('format_version')!r}; "
            f"expected {FORMAT!r} version {FORMAT_VERSION}."
        )
    return meta


def load_pretrained(model: tf.keras.Model, path) -> tf.keras.Model:
    """Restore weights written by `save_pretrained` into a model built with the same arguments.

    Binarized kernels (kernel, depthwise and pointwise) get the stored ±α kernel as latent kernel;
    their `HyperbolicSign` quantizers are reset to the origin chart so that the forward pass
    reproduces it exactly.

    # Returns
    `model`.

    # Raises
    ValueError: if the file does not match the model (missing, unexpected or mis-shaped
        weights, other build arguments), or a layer's kernel quantizer cannot reproduce the
        stored binary kernel.
    """
    meta = read_metadata(path)
    if zoo_metadata(model) is not None:
        check_compatible(meta, zoo_metadata(model), source=str(path))
    with np.load(path, allow_pickle=False) as archive:
        stored = {key: archive[key] for key in archive.files if key != METADATA_KEY}
    binary_shapes = meta["binary_kernels"]
    expected_keys = set()
    for layer in layers(model):
        kernels = _quantized_kernels_by_name(layer)
        for variable in own_weights(layer):
            key = f"{layer.name}/{_short_name(variable)}"
            expected_keys.add(key)
            if key in binary_shapes:
                _restore_binary_kernel(kernels.get(variable.name), stored, key, binary_shapes[key], path)
            elif key in stored:
                _assign(variable, stored[key], key, path)
            else:
                raise ValueError(f"{str(path)!r} has no weight {key!r} for this model.")
    unexpected = {k.split(":")[0] for k in stored} - expected_keys
    if unexpected:
        raise ValueError(f"{str(path)!r} has weights this model does not: {sorted(unexpected)}.")
    return model


def _quantized_kernels_by_name(layer) -> dict:
    """`{latent kernel's variable name: QuantizedKernel}` of `layer`'s weight-quantized kernels."""
    return {kernel.variable.name: kernel for kernel in quantized_kernels(layer)}


def _restore_binary_kernel(quantized, stored, key, shape, path) -> None:
    """Write the stored binary kernel `key` into the `QuantizedKernel` `quantized` (None: the
    model's weight is not quantized) and check that its quantizer reproduces it."""
    if quantized is None:
        raise ValueError(f"{str(path)!r} stores a binary kernel {key!r}, which is not weight-quantized in this "
                         "model.")
    size = int(np.prod(shape))
    signs = np.unpackbits(stored[key + BITS_SUFFIX], count=size).reshape(shape)
    scale = stored[key + SCALE_SUFFIX]
    kernel = np.where(signs.astype(bool), 1.0, -1.0).astype(np.float32) * scale
    _assign(quantized.variable, kernel, key, path)
    _reset_quantizer_state(quantized.quantizer)
    restored = quantized.quantized()
    # Exact for sign quantizers; a recomputed per-channel mean (magnitude_aware_sign) may differ
    # from the stored scale by float32 summation rounding.
    if not np.allclose(restored, kernel, rtol=1e-5, atol=0.0):
        raise ValueError(
            f"The {quantized.slot.quantizer} of {quantized.layer.name!r} ({type(quantized.quantizer).__name__}) "
            "does not reproduce the stored binary kernel from it; build the model with a sign-type quantizer "
            "(e.g. the default HyperbolicSign or 'ste_sign')."
        )


def _reset_quantizer_state(quantizer) -> None:
    """Put a `HyperbolicSign` on its origin chart: \\(\\exp_0(v)\\) is a positive multiple of v."""
    if isinstance(quantizer, HyperbolicSign):
        for point in quantizer.points:
            point.assign(tf.zeros_like(point))
        quantizer.active_index.assign(0)


def _assign(variable, value, key, path) -> None:
    if tuple(variable.shape) != tuple(value.shape):
        raise ValueError(
            f"Weight {key!r} of {str(path)!r} has shape {tuple(value.shape)}, the model expects "
            f"{tuple(variable.shape)}: the model was built with other arguments (width, classes, input size)."
        )
    variable.assign(value.astype(variable.dtype.as_numpy_dtype))


def _short_name(variable) -> str:
    return variable.name.split("/")[-1].split(":")[0]


def _signs_and_scale(kernel: np.ndarray, key: str):
    """`(kernel > 0, α)` with `kernel == ±α[o]`; raise if the kernel is not of that form."""
    scale = np.abs(kernel).reshape(-1, kernel.shape[-1]).max(axis=0).astype(np.float32)
    if not (np.all(scale > 0) and np.array_equal(np.abs(kernel), np.broadcast_to(scale, kernel.shape))):
        raise ValueError(
            f"The quantized kernel {key!r} is not ±(per-output-channel scale); only "
            "binarized kernels can be stored bit-packed."
        )
    return kernel > 0, scale
