"""Pretrained weights: building a zoo model with `weights=`, and the registry of shipped weights.

A zoo function's `weights` is `None`, a name registered for that model, or the path of a file
written by `save_pretrained` (the format: `hbnn_larq.zoo.weights_file`). Shipped weights live
in `hbnn_larq/zoo/weights/` and are listed in `weights/registry.json`, per model and name
(`{"vggsmall": {"cifar10": {...}}}`, so `VGGSmall(weights="cifar10")` and
`ResNet18(weights="cifar10")` find different files), with their sha256 and provenance;
`register_weights` adds one.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Callable, NamedTuple

import larq as lq
import tensorflow as tf

from hbnn_larq.utils import check_choice
from hbnn_larq.zoo import common
from hbnn_larq.zoo.weights_file import (check_compatible, load_pretrained, read_metadata, record_metadata,  # noqa: F401
                                        save_pretrained, zoo_metadata)

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
REGISTRY_FILENAME = "registry.json"


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
    input_normalization: tuple | None  # (mean, std) of the "input_normalization" layer, or None


# `input_normalization`'s default: the statistics the loaded weights were trained with (recorded
# in the weights file), else none.
FROM_WEIGHTS = "auto"


def prepare_build(model_name: str, *, weights, num_classes, include_top, width, pad_values, classifier_activation,
                  input_quantizer, kernel_quantizer, input_normalization=FROM_WEIGHTS, **architecture) -> BuildPlan:
    """Check the build arguments every zoo model shares, describe the model (`model_metadata`,
    with the model's own `architecture` arguments after `pad_values`) and resolve `weights`.

    `input_normalization="auto"` resolves to the normalisation recorded in the weights file
    (shipped weights take RGB pixel values in [0, 255]), or to None without weights.

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
    path = resolve_weights(weights, metadata)
    normalization = resolve_input_normalization(input_normalization, path, metadata)
    return BuildPlan(width, num_classes, pad_values, make_quantizer, metadata, path, normalization)


def resolve_input_normalization(input_normalization, weights_path, metadata: dict):
    """The checked `(mean, std)` or None a zoo model normalises its inputs with, recorded in
    `metadata`: `"auto"` (`FROM_WEIGHTS`) is what the weights file `weights_path` records (None
    without weights). A file whose normalisation differs from an explicit one is refused.

    # Raises
    ValueError: invalid `input_normalization`, or weights trained with another one.
    """
    if isinstance(input_normalization, str) and input_normalization == FROM_WEIGHTS:
        input_normalization = read_metadata(weights_path).get("input_normalization") if weights_path else None
    normalization = common.check_input_normalization(input_normalization)
    metadata["input_normalization"] = None if normalization is None else [list(v) for v in normalization]
    if weights_path is not None:
        check_compatible(read_metadata(weights_path), metadata, source=str(weights_path))
    return normalization


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
    record_metadata(model, metadata)
    if weights_path is not None:
        load_pretrained(model, weights_path)
    return model


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
