"""larq-zoo's BNNs as zoo models with any kernel quantizer: QuickNet (Small, Large), Bi-Real Net,
Binary ResNet-E18.

```python
from hbnn_larq import zoo
model = zoo.QuickNetSmall(input_shape=(64, 64, 3), num_classes=10)       # HBNN binary kernels
model = zoo.QuickNetSmall(kernel_quantizer="original")                   # larq-zoo's own recipe
model = zoo.get_model("birealnet", kernel_quantizer="ste_sign", kernel_constraint="weight_clip")
```

Each function builds the larq-zoo model (`larq_zoo.sota.QuickNetSmall(weights=None, ...)`; larq-zoo
is imported on first use, so `import hbnn_larq` does not pay for it) and swaps the quantizer and
constraint of its binary kernels with `hbnn_larq.hyperbolize.replace_kernel_quantizers`, the
machinery of `hbnn_larq.hyperbolize`. Full-precision layers (QuickNet's stem and transition
convs, the classifiers) and the activation quantizers stay larq-zoo's.

| name | larq-zoo function | binary convs | larq-zoo's kernel binarizer (`"original"`) |
|---|---|---|---|
| `quicknet_small` | `sota.QuickNetSmall` | 16 | `SteSign(1.25)` + `WeightClip(1.25)` |
| `quicknet` | `sota.QuickNet` | 16 | `SteSign(1.25)` + `WeightClip(1.25)` |
| `quicknet_large` | `sota.QuickNetLarge` | 32 | `SteSign(1.25)` + `WeightClip(1.25)` |
| `birealnet` | `literature.BiRealNet` | 16 | `magnitude_aware_sign` + `weight_clip` (scaled) |
| `binary_resnet_e18` | `literature.BinaryResNetE18` | 16 | `SteSign(1.25)` + `WeightClip(1.25)` |

**Input.** As every zoo model, `input_normalization=(mean, std)` or a dataset name adds a float32
"input_normalization" layer, and the model takes RGB pixel values in [0, 255] (`train.py` builds
them so). Without it (`None`, or `"auto"` when no weights file records one) there is no rescaling: like
larq-zoo's pretrained models it expects RGB images standardised with the ImageNet statistics,
\\((x - 255\\mu)/(255\\sigma)\\) per channel with \\(\\mu = (0.485, 0.456, 0.406)\\),
\\(\\sigma = (0.229, 0.224, 0.225)\\) (`larq_zoo.preprocess_input`, which also center-crops to 224 px).
Any input size works (QuickNet and Bi-Real Net reduce it 32-fold; from 32 px on); the width is
larq-zoo's and fixed.

**Layer names** are renumbered in graph order as a fresh Keras session would name them
(`quant_conv2d`, `quant_conv2d_1`, ...), whatever was built before, so that weights files
written by `save_pretrained` load by name. larq-zoo's `blurpool_initializer` (QuickNet's
anti-aliasing filters) is replaced by the equivalent `BlurPoolInitializer`, so a saved model
loads after `import hbnn_larq` without larq-zoo.
"""

from __future__ import annotations

import inspect
import os
import re
import warnings
from typing import NamedTuple

import larq as lq
import numpy as np
import tensorflow as tf

from hbnn_larq.hyperbolize import replace_kernel_quantizers
from hbnn_larq.zoo import common, pretrained

ORIGINAL = "original"
IMAGENET = "imagenet"


class LarqZooEntry(NamedTuple):
    module: str  # larq_zoo.<module>
    function: str  # larq_zoo.<module>.<function>
    original_recipe: str | None  # the hbnn_larq.training recipe that larq-zoo's own binarizer is


ENTRIES = {
    "quicknet_small": LarqZooEntry("sota", "QuickNetSmall", "ste_sign"),
    "quicknet": LarqZooEntry("sota", "QuickNet", "ste_sign"),
    "quicknet_large": LarqZooEntry("sota", "QuickNetLarge", "ste_sign"),
    "birealnet": LarqZooEntry("literature", "BiRealNet", None),
    "binary_resnet_e18": LarqZooEntry("literature", "BinaryResNetE18", "ste_sign"),
}


def original_recipe(name: str) -> str | None:
    """The training recipe (`train.py --quantizer`) that is larq-zoo model `name`'s own binarizer,
    or None: `"ste_sign"` for QuickNet and ResNet-E (larq-zoo's `SteSign(1.25)` with
    `WeightClip(1.25)`, the clipped sign/STE recipe), None for Bi-Real Net (a scaled sign)."""
    entry = ENTRIES.get(name)
    return entry.original_recipe if entry is not None else None


@lq.utils.register_keras_custom_object
class BlurPoolInitializer(tf.keras.initializers.Initializer):
    """The binomial anti-aliasing filter of QuickNet's transition blocks (larq-zoo's
    `blurpool_initializer`): the outer product of `[1, 1]`, `[1, 2, 1]` or `[1, 4, 6, 4, 1]`
    with itself, normalised to sum 1, for every channel of a depthwise kernel
    `(k, k, channels, 1)`.

    # References
    - Zhang, Making Convolutional Networks Shift-Invariant Again, ICML 2019.
    """

    TAPS = {2: (1, 1), 3: (1, 2, 1), 5: (1, 4, 6, 4, 1)}

    def __call__(self, shape, dtype=None, **kwargs):
        size = shape[0]
        if size not in self.TAPS or shape[1] != size:
            raise ValueError(f"BlurPoolInitializer needs a (k, k, channels, 1) kernel with k in {sorted(self.TAPS)}, "
                             f"got shape {tuple(shape)}.")
        kernel = np.outer(self.TAPS[size], self.TAPS[size]).astype(np.float64)
        kernel /= kernel.sum()
        return tf.constant(np.broadcast_to(kernel[:, :, None, None], tuple(shape)), dtype=dtype or tf.float32)

    def get_config(self):
        return {}


def larq_zoo_model(
    name: str,
    *,
    input_shape=None,
    input_tensor=None,
    num_classes: int = 1000,
    include_top: bool = True,
    weights=None,
    input_normalization="auto",
    kernel_quantizer=None,
    kernel_constraint=None,
    width: float = 1.0,
) -> tf.keras.Model:
    """Build larq-zoo model `name` (a key of `ENTRIES`) with the given binary-kernel quantizer.

    # Arguments
    name: `"quicknet_small"`, `"quicknet"`, `"quicknet_large"`, `"birealnet"` or
        `"binary_resnet_e18"`.
    input_shape: `(height, width, 3)`; default `(224, 224, 3)`.
    input_tensor: optional Keras tensor to use as the model input.
    num_classes: number of classes, int >= 1. Default 1000.
    include_top: whether to include the classifier (global pool, dense, softmax).
    weights: `None` (random initialization), `"imagenet"` (larq-zoo's pretrained weights,
        downloaded by larq-zoo; needs `num_classes=1000` with the top), the path of a Keras
        `.h5` weights file of the larq-zoo model, or a file written by
        `hbnn_larq.zoo.save_pretrained` from this zoo model. Keras weights are loaded into the
        larq-zoo model before its quantizers are swapped (the latent kernels are kept).
    input_normalization: as in every zoo model (`hbnn_larq.zoo.VGGSmall`): `(mean, std)` or a
        dataset name adds the float32 "input_normalization" layer, and the model takes RGB pixel
        values in [0, 255] (`train.py` builds them so); `None`: larq-zoo's convention, inputs
        standardised by the caller (`larq_zoo.preprocess_input`); `"auto"` (default): what the
        loaded `save_pretrained` file records, else None (also for `weights="imagenet"`).
    kernel_quantizer: the binary kernels' quantizer: `None` (a fresh `hbnn_larq.HyperbolicSign()`
        per layer, like every zoo model), `"original"` (keep larq-zoo's quantizers *and*
        constraints), or an alias, config dict, Quantizer instance (cloned per layer) or
        zero-argument factory.
    kernel_constraint: the binary kernels' latent-kernel constraint (e.g. `"weight_clip"`);
        must be None with `"original"`.
    width: must be 1: larq-zoo's channel counts are fixed.

    # Returns
    A `tf.keras.Model` named `name`, ending in a float32 softmax (with the top).

    # Raises
    ValueError: for an invalid argument (naming it). ImportError: if larq-zoo is not installed.
    OSError: if `weights="imagenet"` cannot be downloaded (e.g. offline).
    """
    if name not in ENTRIES:
        raise ValueError(f"`name` must be one of {', '.join(map(repr, sorted(ENTRIES)))}; got {name!r}.")
    if common.check_width(width) != 1.0:
        raise ValueError(f"`width` must be 1 for {name!r}: larq-zoo models have fixed channel counts; got {width!r}.")
    num_classes = common.check_num_classes(num_classes)
    if isinstance(kernel_quantizer, str) and kernel_quantizer == ORIGINAL:
        if kernel_constraint is not None:
            raise ValueError("`kernel_constraint` must be None with kernel_quantizer='original', which keeps "
                             f"larq-zoo's constraints; got {kernel_constraint!r}.")
        make_quantizer = None
    else:
        make = common.kernel_quantizer_factory(kernel_quantizer)
        make_quantizer = lambda original: make()  # noqa: E731
    metadata = pretrained.model_metadata(name, num_classes=num_classes, include_top=bool(include_top), width=1.0,
                                         kernel_quantizer=kernel_quantizer, kernel_constraint=kernel_constraint)
    keras_weights = _is_keras_weights(name, weights)
    weights_path = None if weights is None or keras_weights else pretrained.resolve_weights(weights, metadata)
    normalization = pretrained.resolve_input_normalization(input_normalization, weights_path, metadata)

    source = _build_larq_zoo(name, input_shape=input_shape, input_tensor=input_tensor, num_classes=num_classes,
                             include_top=bool(include_top), weights=weights if keras_weights else None)
    names = _fresh_session_names(source)

    def edit_config(layer, config):
        config["name"] = names.get(layer.name, config["name"])
        if getattr(getattr(layer, "depthwise_initializer", None), "__name__", None) == "blurpool_initializer":
            config["depthwise_initializer"] = BlurPoolInitializer()
        return config

    with warnings.catch_warnings():  # reading the config of a layer initialised by a function (blur pool)
        warnings.filterwarnings("ignore", message=r"The `keras.initializers.serialize\(\)` API")
        clone = replace_kernel_quantizers(source, make_quantizer, kernel_constraint, edit_config=edit_config)
    model = tf.keras.Model(clone.inputs, clone.outputs, name=name)
    if normalization is not None:
        model = _with_input_normalization(model, normalization)
    return pretrained.finish(model, metadata, weights_path)


def _with_input_normalization(model: tf.keras.Model, normalization) -> tf.keras.Model:
    """`model` (functional, one input) with `common.normalize_inputs` between its input and the
    layers that read it, and the same weights. larq-zoo's factories accept no Keras tensor as
    input (zookeeper type-checks it), so the layer is spliced into the model's config."""
    config = model.get_config()
    (input_name, _, _), = config["input_layers"]
    probe = common.normalize_inputs(tf.keras.Input(model.input_shape[1:]), normalization)._keras_history.layer

    def rewire(node):
        if isinstance(node, list) and len(node) == 4 and node[0] == input_name and isinstance(node[3], dict):
            return ["input_normalization", *node[1:]]
        return [rewire(n) for n in node] if isinstance(node, list) else node

    for layer in config["layers"]:
        layer["inbound_nodes"] = rewire(layer["inbound_nodes"])
    position = next(i for i, layer in enumerate(config["layers"]) if layer["name"] == input_name) + 1
    config["layers"].insert(position, {
        "class_name": "Normalization", "name": "input_normalization", "config": probe.get_config(),
        "inbound_nodes": [[[input_name, 0, 0, {}]]]})
    rebuilt = tf.keras.Model.from_config(config)  # larq's and this package's classes are registered
    rebuilt.set_weights(model.get_weights())
    return rebuilt


def _is_keras_weights(name: str, weights) -> bool:
    """Whether `weights` are for larq-zoo to load (`"imagenet"`, a `.h5` file), not
    `save_pretrained`'s (a registered name or a file); a ValueError if they are neither."""
    path_like = isinstance(weights, (str, os.PathLike))
    if weights == IMAGENET or (path_like and str(weights).endswith(".h5")):
        return True
    if weights is None or (path_like and (os.path.isfile(weights) or weights in pretrained.available_weights(name))):
        return False
    raise ValueError(
        f"`weights` must be None, 'imagenet', the path of a Keras .h5 weights file of larq-zoo's "
        f"{ENTRIES[name].function} or the path of a file written by hbnn_larq.zoo.save_pretrained; got {weights!r}.")


def _build_larq_zoo(name, *, weights, **kwargs) -> tf.keras.Model:
    try:
        import larq_zoo
    except ImportError as error:
        raise ImportError(
            f"The zoo model {name!r} is built by larq-zoo: `pip install larq-zoo==2.4.0` ({error}).") from None
    entry = ENTRIES[name]
    function = getattr(getattr(larq_zoo, entry.module), entry.function)
    try:
        return function(weights=weights, **kwargs)
    except (ValueError, TypeError):
        raise
    except Exception as error:  # noqa: BLE001 - tf.keras.utils.get_file raises a bare Exception
        if weights != IMAGENET:
            raise
        raise OSError(
            f"larq-zoo could not download the ImageNet weights of {entry.function} ({error}). Without internet "
            f"access: build larq_zoo.{entry.module}.{entry.function}(weights='imagenet') once on a machine with "
            "access and copy its cache (~/.keras/larq/models/) here, pass the path of the downloaded .h5 file "
            "as `weights`, or use weights=None."
        ) from error


def _fresh_session_names(model: tf.keras.Model) -> dict:
    """`{layer name: the name a fresh Keras session gives it}`: its auto-numbering suffix
    replaced by its rank among the layers of the same base name (none for the first)."""
    counts, names = {}, {}
    for layer in model.layers:
        base = re.sub(r"_\d+$", "", layer.name)
        index = counts.get(base, 0)
        counts[base] = index + 1
        names[layer.name] = base if index == 0 else f"{base}_{index}"
    return names


def _entry_function(name: str, function_name: str):
    def build(**kwargs) -> tf.keras.Model:
        return larq_zoo_model(name, **kwargs)

    build.__name__ = build.__qualname__ = function_name
    signature = inspect.signature(larq_zoo_model)
    build.__signature__ = signature.replace(parameters=list(signature.parameters.values())[1:])
    build.__doc__ = (f"larq-zoo's `{ENTRIES[name].module}.{ENTRIES[name].function}` with any binary-kernel "
                     f"quantizer (default HyperbolicSign); see `larq_zoo_model` for the arguments.")
    return build


QuickNetSmall = _entry_function("quicknet_small", "QuickNetSmall")
QuickNet = _entry_function("quicknet", "QuickNet")
QuickNetLarge = _entry_function("quicknet_large", "QuickNetLarge")
BiRealNet = _entry_function("birealnet", "BiRealNet")
BinaryResNetE18 = _entry_function("binary_resnet_e18", "BinaryResNetE18")
