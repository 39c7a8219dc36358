"""Pretrained weights: a bit-packed, inference-only file format and the shipped-weights registry.

A weights file is one uncompressed `.npz` archive:

| key | content |
|---|---|
| `__metadata__` | JSON: format name and version, model name, build arguments (`num_classes`, `include_top`, `width`, ...), and per binarized layer its kernel shape |
| `<layer>/kernel:bits` | the binarized kernel's signs, `np.packbits` of `kernel > 0` in C order: 1 bit per weight |
| `<layer>/kernel:scale` | float32 per-output-channel magnitude \\(\\alpha_o\\) (all ones for plain sign quantizers) |
| `<layer>/<weight>` | every other weight inference needs, float32 (FP convs, dense, BN γ/β/moving statistics) |

Only the binary kernel \\(\\operatorname{sign}(\\exp_{F_i}(\\tilde w))\\) is stored: the latent kernel
and the HBNN points are training-only state. `load_pretrained` therefore writes the stored ±α
kernel into the latent kernel and resets every `HyperbolicSign` to the origin chart (points 0,
active index 0), where \\(\\exp_0(v)\\) is a positive multiple of \\(v\\), so the quantizer
reproduces the stored kernel exactly; for any other quantizer the restored kernel is checked.

Shipped weights live in `hbnn_larq/zoo/weights/` and are listed in `weights/registry.json`, per
model and name (`{"vggsmall": {"cifar10": {...}}}`, so `VGGSmall(weights="cifar10")` and
`ResNet18(weights="cifar10")` find different files), with their sha256 and provenance;
`register_weights` adds one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import weakref
from pathlib import Path
from typing import Callable, NamedTuple

import larq as lq
import numpy as np
import tensorflow as tf

from hbnn_larq.quantizers import HyperbolicSign
from hbnn_larq.utils import check_choice, layers, own_weights, quantized_kernel
from hbnn_larq.zoo import common

FORMAT = "hbnn-larq-zoo-weights"
FORMAT_VERSION = 1
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
REGISTRY_FILENAME = "registry.json"
METADATA_KEY = "__metadata__"
BITS_SUFFIX, SCALE_SUFFIX = ":bits", ":scale"
# Build arguments that change the inference function or the weight shapes: a file saved with one
# value cannot be loaded into a model built with another.
COMPATIBILITY_KEYS = ("model", "num_classes", "include_top", "width", "variant", "pad_values", "input_quantizer")

_MODEL_METADATA: "weakref.WeakKeyDictionary[tf.keras.Model, dict]" = weakref.WeakKeyDictionary()


# -- metadata ------------------------------------------------------------------------------------
def model_metadata(model_name: str, **build_kwargs) -> dict:
    """The JSON-safe description of a zoo model: its name and build arguments."""
    kwargs = {key: _describe(value) for key, value in build_kwargs.items()}
    return {"model": model_name, **kwargs}


class BuildPlan(NamedTuple):
    """The checked shared build arguments of a zoo model, its metadata and the weights to load."""

    width: float
    num_classes: int
    pad_values: float
    make_quantizer: Callable
    metadata: dict
    weights_path: Path | None


def prepare_build(model_name: str, *, weights, num_classes, include_top, width, pad_values, classifier_activation,
                  input_quantizer, kernel_quantizer, **architecture) -> BuildPlan:
    """Check the build arguments every zoo model shares, describe the model (`model_metadata`,
    with the model's own `architecture` arguments after `pad_values`) and resolve `weights`.

    # Raises
    ValueError: for an invalid argument, unknown weights, or weights made for another model.
    """
    width = common.check_width(width)
    num_classes = common.check_num_classes(num_classes)
    pad_values = common.check_pad_values(pad_values)
    check_choice("classifier_activation", classifier_activation, common.CLASSIFIER_ACTIVATIONS)
    make_quantizer = common.kernel_quantizer_factory(kernel_quantizer)
    metadata = model_metadata(
        model_name,
        num_classes=num_classes,
        include_top=include_top,
        width=width,
        pad_values=pad_values,
        **architecture,
        classifier_activation=classifier_activation,
        input_quantizer=input_quantizer,
        kernel_quantizer=kernel_quantizer,
    )
    return BuildPlan(width, num_classes, pad_values, make_quantizer, metadata, resolve_weights(weights, metadata))


def _describe(value):
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        return json.loads(json.dumps(value, default=repr))
    if isinstance(value, tf.keras.layers.Layer):
        return json.loads(json.dumps(lq.quantizers.serialize(value), default=repr))
    return getattr(value, "__name__", repr(value))


def finish(model: tf.keras.Model, metadata: dict, weights_path) -> tf.keras.Model:
    """Record `metadata` for `model` (read by `save_pretrained`) and load `weights_path` if any."""
    _MODEL_METADATA[model] = {**metadata, "input_shape": list(model.input_shape[1:])}
    if weights_path is not None:
        load_pretrained(model, weights_path)
    return model


def zoo_metadata(model: tf.keras.Model) -> dict | None:
    """The metadata recorded when a zoo function built `model`, or None."""
    return _MODEL_METADATA.get(model)


# -- registry ------------------------------------------------------------------------------------
def _registry(weights_dir: Path) -> dict:
    """`{model name: {weights name: entry}}` from the folder's registry file."""
    path = Path(weights_dir) / REGISTRY_FILENAME
    if not path.is_file():
        return {}
    with open(path) as f:
        return json.load(f)


def available_weights(model_name: str | None = None) -> list[str]:
    """The names of the weights shipped in `hbnn_larq/zoo/weights/` for `model_name` (what its
    `weights=` accepts), or every name of every model."""
    registry = _registry(WEIGHTS_DIR)
    models = [model_name] if model_name is not None else list(registry)
    return sorted({name for model in models for name in registry.get(model, {})})


def _shipped(model_name: str) -> dict:
    """`{weights name: entry}` of the weights shipped for `model_name`."""
    return _registry(WEIGHTS_DIR).get(model_name, {})


def _listing(entries: dict) -> str:
    return ", ".join(map(repr, sorted(entries))) or "none shipped"


def registered_weights(model_name: str, name: str) -> dict:
    """The registry entry of the shipped weights `name` of `model_name` (file, sha256, provenance).

    # Raises
    ValueError: if there is no such entry (the message lists the names there are).
    """
    entries = _shipped(model_name)
    if name not in entries:
        raise ValueError(f"No shipped weights {name!r} for {model_name!r}; registered names: {_listing(entries)}.")
    return entries[name]


def registered_path(model_name: str, name: str) -> Path:
    """The file of the shipped weights `name` of `model_name` (raises like `registered_weights`)."""
    return _entry_path(registered_weights(model_name, name))


def _entry_path(entry: dict) -> Path:
    return WEIGHTS_DIR / entry["file"]


def sha256(path) -> str:
    """The hex sha256 digest of the file at `path`."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def register_weights(name: str, path, *, description: str = "", provenance: dict | None = None,
                     weights_dir=None) -> dict:
    """Publish a weights file: copy it into the weights folder and record its sha256.

    The entry is filed under the model the file was saved from, so one name (e.g. the dataset,
    `"cifar10"`) can serve several models.

    # Arguments
    name: the registry name (what users pass as `weights=`), e.g. `"cifar10"`.
    path: a file written by `save_pretrained`.
    description: free text (dataset, recipe, accuracy).
    provenance: JSON-safe facts stored with the entry, e.g. the training command, the number of
        epochs and the measured test accuracy (`test_accuracy`, and `slice` for the test that
        checks them).
    weights_dir: the folder holding `registry.json`; default the package's `weights/`.

    # Returns
    The registry entry.

    # Raises
    ValueError: if `name` is not a plain identifier or `path` is not a weights file.
    """
    if not name or not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"`name` must be made of letters, digits, '_' and '-', got {name!r}.")
    weights_dir = Path(weights_dir or WEIGHTS_DIR)
    metadata = read_metadata(path)
    model_name = metadata["model"]
    filename = f"{model_name}_{name}.npz"
    weights_dir.mkdir(parents=True, exist_ok=True)
    if Path(path).resolve() != (weights_dir / filename).resolve():
        shutil.copyfile(path, weights_dir / filename)
    entry = {
        "file": filename,
        "sha256": sha256(weights_dir / filename),
        "num_classes": metadata["num_classes"],
        "include_top": metadata["include_top"],
        "description": description,
        **({"provenance": json.loads(json.dumps(provenance))} if provenance else {}),
    }
    registry = _registry(weights_dir)
    registry.setdefault(model_name, {})[name] = entry
    with open(weights_dir / REGISTRY_FILENAME, "w") as f:
        json.dump(registry, f, indent=2, sort_keys=True)
        f.write("\n")
    return entry


def resolve_weights(weights, metadata: dict):
    """The file to load for `weights` into a model described by `metadata`, or None.

    # Arguments
    weights: `None`, a registered name, or the path of a weights file.
    metadata: `model_metadata(...)` of the model about to be built.

    # Returns
    A path, or None for `weights=None`.

    # Raises
    ValueError: unknown name, sha256 mismatch, or weights saved for another model, number of
        classes, `include_top` or width.
    """
    if weights is None:
        return None
    if not isinstance(weights, (str, os.PathLike)):
        raise ValueError(f"`weights` must be None, a registered name or a file path, got {weights!r}.")
    registry = _shipped(metadata["model"])
    if isinstance(weights, str) and weights in registry:
        entry = registry[weights]
        path = _entry_path(entry)
        if not path.is_file():
            raise ValueError(f"Registered weights {weights!r} are missing their file {path}.")
        if sha256(path) != entry["sha256"]:
            raise ValueError(
                f"sha256 mismatch for weights {weights!r} ({path}): expected {entry['sha256']}, "
                f"got {sha256(path)}. The file is corrupt or was replaced; re-publish it with register_weights."
            )
    elif os.path.isfile(weights):
        path = Path(weights)
    else:
        raise ValueError(
            f"`weights` must be None, the path of an existing weights file, or one of the names "
            f"registered for {metadata['model']!r} ({_listing(registry)}); got {weights!r}."
        )
    check_compatible(read_metadata(path), metadata, source=str(weights))
    return path


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
        for variable in own_weights(layer):
            key = f"{layer.name}/{_short_name(variable)}"
            if _is_kernel_quantized(layer) and variable.name == layer.kernel.name:
                signs, scale = _signs_and_scale(quantized_kernel(layer), layer.name)
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

    Binarized layers get the stored ±α kernel as latent kernel; their `HyperbolicSign`
    quantizers are reset to the origin chart so that the forward pass reproduces it exactly.

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
        for variable in own_weights(layer):
            key = f"{layer.name}/{_short_name(variable)}"
            expected_keys.add(key)
            if key in binary_shapes:
                _restore_binary_kernel(layer, stored, key, binary_shapes[key], path)
            elif key in stored:
                _assign(variable, stored[key], key, path)
            else:
                raise ValueError(f"{str(path)!r} has no weight {key!r} for this model.")
    unexpected = {k.split(":")[0] for k in stored} - expected_keys
    if unexpected:
        raise ValueError(f"{str(path)!r} has weights this model does not: {sorted(unexpected)}.")
    return model


def _restore_binary_kernel(layer, stored, key, shape, path) -> None:
    if not _is_kernel_quantized(layer):
        raise ValueError(f"{str(path)!r} stores a binary kernel for {layer.name!r}, which is not weight-quantized.")
    size = int(np.prod(shape))
    signs = np.unpackbits(stored[key + BITS_SUFFIX], count=size).reshape(shape)
    scale = stored[key + SCALE_SUFFIX]
    kernel = np.where(signs.astype(bool), 1.0, -1.0).astype(np.float32) * scale
    _assign(layer.kernel, kernel, key, path)
    _reset_quantizer_state(layer.kernel_quantizer)
    restored = quantized_kernel(layer)
    # Exact for sign quantizers; a recomputed per-channel mean (magnitude_aware_sign) may differ
    # from the stored scale by float32 summation rounding.
    if not np.allclose(restored, kernel, rtol=1e-5, atol=0.0):
        raise ValueError(
            f"The kernel quantizer of {layer.name!r} ({type(layer.kernel_quantizer).__name__}) does not "
            "reproduce the stored binary kernel from it; build the model with a sign-type quantizer "
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


def _is_kernel_quantized(layer) -> bool:
    return getattr(layer, "kernel_quantizer", None) is not None


def _short_name(variable) -> str:
    return variable.name.split("/")[-1].split(":")[0]


def _signs_and_scale(kernel: np.ndarray, layer_name: str):
    """`(kernel > 0, α)` with `kernel == ±α[o]`; raise if the kernel is not of that form."""
    scale = np.abs(kernel).reshape(-1, kernel.shape[-1]).max(axis=0).astype(np.float32)
    if not (np.all(scale > 0) and np.array_equal(np.abs(kernel), np.broadcast_to(scale, kernel.shape))):
        raise ValueError(
            f"The quantized kernel of {layer_name!r} is not ±(per-output-channel scale); only "
            "binarized kernels can be stored bit-packed."
        )
    return kernel > 0, scale
