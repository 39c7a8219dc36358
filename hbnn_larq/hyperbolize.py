"""`hyperbolize`: turn any larq BNN into an HBNN, keeping its architecture and weights.

```python
import hbnn_larq, larq_zoo
bnn = larq_zoo.sota.QuickNetSmall(weights="imagenet")
hbnn = hbnn_larq.hyperbolize(bnn, r=0.05)       # same predictions, now with trainable points
hbnn.compile(hbnn_larq.RiemannianOptimizer(tf.keras.optimizers.SGD(0.01, momentum=0.9)), ...)
```

The copy differs from the original in one respect: every *binary weight quantizer* (see
`is_binary_quantizer`) becomes a fresh `HyperbolicSign`, and the latent-kernel constraint of
that weight (larq's `WeightClip`) is dropped. Everything else is cloned through the layers'
configs, with the weights copied layer by layer: input quantizers, full-precision layers,
BatchNorm statistics, dtype policies, layer names, nested models.

**Exactness at the origin.** A new `HyperbolicSign` starts on its chart 0, which the default
`cluster_init="origin+random"` puts at the origin (also with `cluster_size > 1`: only the active
chart is used). There
\\[
\\exp_0(\\tilde w) = \\tanh\\big(\\sqrt r\\,\\|\\tilde w\\|\\big)\\,\\frac{\\tilde w}{\\sqrt r\\,\\|\\tilde w\\|},
\\]
a positive multiple of \\(\\tilde w\\), so \\(\\operatorname{sign}(\\exp_0(\\tilde w)) =
\\operatorname{sign}(\\tilde w)\\) (with sign(0) = +1 on both sides): a model binarized by a
plain sign (`ste_sign`/`SteSign` with any clip value, `approx_sign`, `swish_sign`,
`NormalizedSign`) predicts exactly as before, bit for bit, whatever `r`, `grouping` and
`boundary` (the boundary map at the origin, \\(\\tilde w/(\\sqrt r\\|\\tilde w\\|)\\), is a positive
multiple too). With `cluster_init="random"` chart 0 is a random point and the binary kernels
differ from the start.

**Scaled binarizers** (`magnitude_aware_sign` of Bi-Real Net, XNOR-style \\(\\alpha_o\\,
\\operatorname{sign}\\), IR-Net's power-of-two scale, ReCU's learned \\(\\alpha\\)) output
\\(\\pm\\alpha_o\\) per output channel. By default the scale is dropped (the new kernel is
\\(\\pm 1\\): the function changes unless a BatchNorm in training mode follows). With
`keep_scale=True` a copy of the original binarizer (its state included) becomes the
`base` of the `HyperbolicSign`, \\(q(\\tilde w) = \\text{base}(\\exp_{F_i}(\\tilde w))\\): the
signs are kept exactly at the origin and the scale is the base's scale *of the constrained
weight* \\(c\\,\\tilde w\\), \\(c = \\tanh(\\sqrt r\\|\\tilde w\\|)/(\\sqrt r\\|\\tilde w\\|) \\le 1\\). For
bases that standardise each filter (IR-Net, ReCU) that is the original kernel up to their variance
\\(\\epsilon\\), which weighs \\(1/c^2\\) more on \\(c\\,\\tilde w\\); for
`magnitude_aware_sign` every output channel's \\(\\alpha_o\\) is multiplied by the same per-layer
factor \\(c\\), so outputs are equal up to that factor (after a BatchNorm in training mode up to
its \\(\\epsilon\\); not after one that uses its moving statistics).

**Deployment.** `hbnn_larq.convert_keras_model` bakes every binary kernel, depthwise and pointwise
ones included, to its \\(\\pm 1\\) (\\(\\pm\\alpha\\)) values (`bake_quantized_kernels`).
Only a `QuantConv2D` with a binary kernel and input becomes an `LceBconv2d`: LCE 0.16 has no
binary depthwise or dense op, so a `QuantDepthwiseConv2D`, a `QuantSeparableConv2D` and a
`QuantDense` run as float ops on their \\(\\pm 1\\) weights, as in the original BNN.
"""

from __future__ import annotations

import copy
import inspect

import larq as lq
import tensorflow as tf

from hbnn_larq.precision import global_policy
from hbnn_larq.quantizers import HyperbolicSign
from hbnn_larq.utils import QUANTIZED_KERNELS, KernelSlot, layers, own_weights
# larq's stateless sign functions, which carry no `precision` tag.
SIGN_FUNCTIONS = (lq.quantizers.ste_sign, lq.quantizers.approx_sign, lq.quantizers.swish_sign)


def is_binary_quantizer(quantizer) -> bool:
    """Whether `quantizer` binarizes to \\(\\pm\\alpha\\): larq's own test (`precision == 1`, not
    `NoOp`, which only tags a precision), or one of larq's sign functions. `SteHeaviside` is
    1-bit but outputs {0, 1}, not a sign, and is not one.
    """
    if quantizer is None or isinstance(quantizer, (lq.quantizers.NoOp, lq.quantizers.SteHeaviside)):
        return False
    if any(quantizer is function for function in SIGN_FUNCTIONS):
        return True
    return getattr(quantizer, "precision", None) == 1


def binary_kernels(layer) -> list[KernelSlot]:
    """The slots (`hbnn_larq.utils.QUANTIZED_KERNELS`) of `layer`'s binary kernels."""
    return [slot for slot in QUANTIZED_KERNELS if is_binary_quantizer(getattr(layer, slot.quantizer, None))]


def copy_quantizer(quantizer):
    """A fresh copy of `quantizer`: a layer is cloned through its config (without its state), a
    config dict deep-copied (deserializing may consume it); aliases and functions are returned."""
    if isinstance(quantizer, tf.keras.layers.Layer):
        return quantizer.__class__.from_config(quantizer.get_config())
    if isinstance(quantizer, dict):
        return copy.deepcopy(quantizer)
    return quantizer


def replace_kernel_quantizers(model: tf.keras.Model, make_quantizer, kernel_constraint=None, *,
                              edit_config=None) -> tf.keras.Model:
    """A copy of `model` (same weights) whose binary kernels get new quantizers and constraints.

    The one place that decides which kernels are binary (`is_binary_quantizer`), how a model is
    cloned (`tf.keras.models.clone_model`, nested Functional and Sequential models included) and
    how weights are carried over: every layer's weights are copied; a layer with replaced
    quantizers gets its own weights (kernel, bias) but not the old quantizers' state.

    # Arguments
    model: a Functional or Sequential `tf.keras.Model`.
    make_quantizer: `make_quantizer(original)` returns the new quantizer of a binary kernel
        whose quantizer was `original`, a new object per call (stateful quantizers must not be
        shared). It is called under the layer's dtype policy. `None`: keep every quantizer and
        constraint (only `edit_config` applies).
    kernel_constraint: the new latent-kernel constraint of the binary kernels (None: none).
    edit_config: optional `edit_config(layer, config) -> config` applied to every layer's config
        (after the quantizer replacement) before the copy is built, e.g. to rename layers.

    # Returns
    A new `tf.keras.Model`.

    # Raises
    ValueError: if `model` is not a Functional/Sequential model, or (with `make_quantizer`) has
        no binary kernel.
    """
    if not isinstance(model, tf.keras.Model):
        raise ValueError(f"`model` must be a tf.keras.Model, got {type(model).__name__}.")
    if make_quantizer is not None and not any(binary_kernels(layer) for layer in layers(model)):
        raise ValueError(
            f"`model` {model.name!r} has no binary kernel: no layer has a kernel (or depthwise/pointwise) "
            "quantizer of precision 1 such as 'ste_sign', SteSign or 'magnitude_aware_sign'."
        )
    replaced = {}

    def clone_layer(layer):
        if isinstance(layer, tf.keras.Model):
            return _clone(layer, clone_layer)
        config = layer.get_config()
        slots = binary_kernels(layer) if make_quantizer is not None else []
        for slot in slots:
            with global_policy(layer.dtype_policy):
                config[slot.quantizer] = make_quantizer(getattr(layer, slot.quantizer))
            config[slot.constraint] = kernel_constraint
        if edit_config is not None:
            config = edit_config(layer, config)
        clone = layer.__class__.from_config(config)
        if slots:
            replaced[id(clone)] = [slot.quantizer for slot in slots]
        return clone

    clone = _clone(model, clone_layer)
    for source, target in zip(layers(model), layers(clone)):
        if id(target) in replaced:
            _copy_own_weights(source, target, replaced[id(target)])
        else:
            target.set_weights(source.get_weights())
    return clone


def hyperbolize(model: tf.keras.Model, *, keep_scale: bool = False, **hyperbolic_sign_kwargs) -> tf.keras.Model:
    """A copy of the larq BNN `model`, same architecture and weights, with HBNN weight binarizers.

    Every binary kernel (`is_binary_quantizer`: larq's `ste_sign`/`SteSign`,
    `magnitude_aware_sign`, `approx_sign`, ..., in `QuantConv*`, `QuantDense`,
    `QuantDepthwiseConv2D`, `QuantSeparableConv*`, nested models included) gets its own fresh
    `hbnn_larq.HyperbolicSign(**hyperbolic_sign_kwargs)` and no latent-kernel constraint (larq's
    `WeightClip` would cut the latent kernel HBNN maps). Input quantizers, full-precision layers,
    weights, layer names and dtype policies are unchanged. Train the result with
    `hbnn_larq.RiemannianOptimizer`.

    With the default `cluster_init` every new point starts at the origin, where a plain-sign
    model keeps its predictions exactly (module docstring); scaled binarizers: see `keep_scale`.

    # Arguments
    model: a Functional or Sequential `tf.keras.Model` with larq layers.
    keep_scale: use a copy of each layer's original binarizer (with its state) as the `base` of
        its `HyperbolicSign`, which keeps a scaled binarizer's per-channel scale
        (`magnitude_aware_sign`, IR-Net, ReCU). Default False: the plain sign, \\(\\pm 1\\).
    **hyperbolic_sign_kwargs: arguments of `HyperbolicSign` (`r`, `boundary`, `cluster_size`,
        `grouping`, `base`, ...). An integer `seed` is offset by the layer's index so that
        layers get different random points.

    # Returns
    A new `tf.keras.Model`; `model` is not modified.

    # Raises
    ValueError: if `model` has no binary kernel, already has `HyperbolicSign` kernels, is not a
        Functional/Sequential model, or `hyperbolic_sign_kwargs` are not valid `HyperbolicSign`
        arguments (also `base` together with `keep_scale=True`).
    """
    _check_hyperbolic_sign_kwargs(hyperbolic_sign_kwargs)
    if keep_scale and hyperbolic_sign_kwargs.get("base") is not None:
        raise ValueError("Pass either `keep_scale=True` (the base is each layer's own binarizer) or `base`, not both.")
    if isinstance(model, tf.keras.Model):
        hyperbolic = [layer.name for layer in layers(model) if any(
            isinstance(getattr(layer, slot.quantizer), HyperbolicSign) for slot in binary_kernels(layer))]
        if hyperbolic:
            raise ValueError(f"`model` is already hyperbolic: {', '.join(hyperbolic)} have HyperbolicSign kernels.")
    seed = hyperbolic_sign_kwargs.get("seed")
    count = [0]

    def make_quantizer(original):
        options = dict(hyperbolic_sign_kwargs)
        if seed is not None:
            options["seed"] = int(seed) + count[0]
        count[0] += 1
        # A base is stateful in general (ReCU's α): one copy per layer.
        options["base"] = copy_quantizer(original if keep_scale else options.get("base"))
        return HyperbolicSign(**options)

    clone = replace_kernel_quantizers(model, make_quantizer, None)
    if keep_scale:
        _copy_base_state(model, clone)
    return clone


# -- helpers -----------------------------------------------------------------------------------
def _check_hyperbolic_sign_kwargs(kwargs: dict) -> None:
    accepted = [name for name in inspect.signature(HyperbolicSign.__init__).parameters
                if name not in ("self", "kwargs")]
    unknown = sorted(set(kwargs) - set(accepted) - {"dtype", "name"})
    if unknown:
        raise ValueError(f"Unknown `HyperbolicSign` argument(s) {', '.join(map(repr, unknown))}; "
                         f"accepted: {', '.join(accepted)}.")
    seed = kwargs.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ValueError(f"`seed` must be an int or None, got {seed!r}.")
    HyperbolicSign(**kwargs)  # raises a ValueError naming the argument


def _clone(model, clone_layer):
    try:
        return tf.keras.models.clone_model(model, clone_function=clone_layer)
    except ValueError as error:
        if "only supported for Sequential" in str(error):
            raise ValueError(
                f"`model` {model.name!r} is a subclassed {type(model).__name__}; only Functional and Sequential "
                "models (nested ones included) can be rebuilt layer by layer."
            ) from None
        raise


def _copy_own_weights(source, target, quantizer_names) -> None:
    """Copy `source`'s own weights into `target` (whose quantizers of `quantizer_names` are new)."""
    sources, targets = own_weights(source, quantizer_names), own_weights(target, quantizer_names)
    if [tuple(w.shape) for w in sources] != [tuple(w.shape) for w in targets]:
        raise ValueError(f"Cannot copy the weights of layer {source.name!r}: its clone has other weights.")
    tf.keras.backend.batch_set_value(zip(targets, tf.keras.backend.batch_get_value(sources)))


def _copy_base_state(model, clone) -> None:
    """Copy each original binarizer's variables (e.g. ReCU's α) into its copy, the new base."""
    for source, target in zip(layers(model), layers(clone)):
        for slot in binary_kernels(source):
            original, new = getattr(source, slot.quantizer), getattr(target, slot.quantizer)
            base = getattr(new, "base", None)
            if isinstance(original, tf.keras.layers.Layer) and isinstance(base, tf.keras.layers.Layer):
                tf.keras.backend.batch_set_value(zip(base.weights, tf.keras.backend.batch_get_value(original.weights)))
