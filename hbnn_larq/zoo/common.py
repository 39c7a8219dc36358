"""Building blocks shared by the zoo's architectures.

Every zoo model is a functional `tf.keras.Model` whose layers all carry explicit, stable names
(`conv0`, `stage2_block1_conv1`, ...), so that pretrained weights can be matched by layer name
(see `hbnn_larq.zoo.pretrained`) whatever else lives in the Keras session.
"""

from __future__ import annotations

import copy
import inspect
import numbers

import larq as lq
import tensorflow as tf

from hbnn_larq.quantizers import HyperbolicSign

# LCE fuses padding with ones into the binary convolution (LCE's model optimization guide); zeros are the
# reference code's choice and are accepted by LCE only for target="arm".
PAD_VALUES = (0.0, 1.0)
# Images whose smaller side is at most this many pixels are "32-px data": ResNet's CIFAR layout
# and the CIFAR training recipe (padded crops, 600 epochs) apply; ImageNet's above.
MAX_CIFAR_SIDE = 64
ACTIVATION_QUANTIZER = "approx_sign"
# Per-channel (mean, std) of RGB images scaled to [0, 1], by the dataset they were measured on.
INPUT_STATISTICS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
PIXEL_RANGE = 255.0


def check_input_normalization(value):
    """`value` as `None` or `((mean_r, mean_g, mean_b), (std_r, std_g, std_b))` of floats.

    # Arguments
    value: `None`, a name of `INPUT_STATISTICS` (`"cifar10"`, `"cifar100"`, `"imagenet"`), or a
        pair `(mean, std)` of three numbers each, std > 0, measured on images scaled to [0, 1].

    # Raises
    ValueError: for anything else.
    """
    if value is None:
        return None
    if isinstance(value, str):
        if value not in INPUT_STATISTICS:
            raise ValueError(f"`input_normalization` must be None, one of {', '.join(map(repr, INPUT_STATISTICS))} "
                             f"or a pair (mean, std) of 3 numbers each; got {value!r}.")
        value = INPUT_STATISTICS[value]
    try:
        mean, std = (tuple(float(v) for v in part) for part in value)
    except (TypeError, ValueError):
        mean = std = ()
    if len(mean) != 3 or len(std) != 3 or not all(s > 0 for s in std):
        raise ValueError(f"`input_normalization` must be None, one of {', '.join(map(repr, INPUT_STATISTICS))} "
                         f"or a pair (mean, std) of 3 numbers each (std > 0, of images scaled to [0, 1]); got {value!r}.")
    return mean, std


def normalize_inputs(x, normalization):
    r"""The model's first layer, "input_normalization": RGB pixel values in [0, 255] to
    \((x / 255 - \mu) / \sigma\) per channel, in float32 under every precision policy (a
    `tf.keras.layers.Normalization` with constant statistics: no weights; TFLite runs it as a
    subtraction and a multiplication). `normalization=None` returns `x` unchanged: the model
    then expects inputs normalised by the caller.
    """
    if normalization is None:
        return x
    mean, std = normalization
    return tf.keras.layers.Normalization(
        mean=[PIXEL_RANGE * m for m in mean], variance=[(PIXEL_RANGE * s) ** 2 for s in std], dtype="float32",
        name="input_normalization")(x)


@lq.utils.register_keras_custom_object
class HardTanh(tf.keras.layers.Layer):
    """Hardtanh, \\(\\min(\\max(x, -1), 1)\\): the nonlinearity of the reference BNNs.

    TFLite converts it to the single op `RELU_N1_TO_1`.
    """

    def call(self, inputs):
        return tf.minimum(tf.maximum(inputs, -1.0), 1.0)

    def compute_output_shape(self, input_shape):
        return input_shape


def kernel_quantizer_factory(kernel_quantizer):
    """A zero-argument callable returning a *fresh* kernel quantizer for every layer.

    Stateful quantizers (e.g. `HyperbolicSign`, which owns a point per layer) must never be
    shared between layers, so a quantizer instance is cloned through its config.

    # Arguments
    kernel_quantizer: `None` (a fresh `hbnn_larq.HyperbolicSign()`, the HBNN default), a
        larq alias string (`"ste_sign"`, `"hyperbolic_sign"`), a serialized config dict, a
        `larq.quantizers.Quantizer` instance (cloned per layer), a zero-argument factory
        (a callable or a quantizer class), or a stateless quantizer function of one argument.

    # Returns
    A callable `make()` giving the value to pass as `QuantConv2D(kernel_quantizer=make())`.

    # Raises
    ValueError: if `kernel_quantizer` is of none of these kinds or names no known quantizer.
    """
    if kernel_quantizer is None:
        return HyperbolicSign
    if isinstance(kernel_quantizer, (str, dict)):
        lq.quantizers.get_kernel_quantizer(copy.deepcopy(kernel_quantizer))  # fail early on a typo
        return lambda: copy.deepcopy(kernel_quantizer)
    if isinstance(kernel_quantizer, tf.keras.layers.Layer):
        config = kernel_quantizer.get_config()
        return lambda: kernel_quantizer.__class__.from_config(config)
    if callable(kernel_quantizer):
        if _takes_no_argument(kernel_quantizer):
            return kernel_quantizer
        return lambda: kernel_quantizer  # a stateless function such as lq.quantizers.ste_sign
    raise ValueError(
        "`kernel_quantizer` must be None, a larq quantizer alias, a config dict, a Quantizer "
        f"instance or a zero-argument factory; got {kernel_quantizer!r}."
    )


def _takes_no_argument(function) -> bool:
    try:
        inspect.signature(function).bind()
    except TypeError:
        return False
    except ValueError:  # builtins without a signature
        return False
    return True


def check_width(width) -> float:
    """`width` as a float > 0 (the channel multiplier), else a ValueError."""
    if isinstance(width, bool) or not isinstance(width, numbers.Real) or not 0 < float(width) < float("inf"):
        raise ValueError(f"`width` must be a finite number > 0 (channel multiplier), got {width!r}.")
    return float(width)


def scaled(channels: int, width: float) -> int:
    """`channels * width`, rounded, at least 1."""
    return max(1, int(round(channels * width)))


def check_num_classes(num_classes) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 1:
        raise ValueError(f"`num_classes` must be an int >= 1, got {num_classes!r}.")
    return int(num_classes)


def check_pad_values(pad_values) -> float:
    if pad_values not in PAD_VALUES:
        raise ValueError(f"`pad_values` must be one of {PAD_VALUES} (LCE supports no other), got {pad_values!r}.")
    return float(pad_values)


def model_inputs(input_shape, input_tensor, default_shape):
    """`(input tensor used by the layers, model inputs)`, as in `keras.applications`.

    # Raises
    ValueError: if `input_shape` is not `(height, width, channels)`.
    """
    if input_tensor is not None:
        if not tf.keras.backend.is_keras_tensor(input_tensor):
            input_tensor = tf.keras.Input(tensor=input_tensor, shape=input_shape)
        return input_tensor, tf.keras.utils.get_source_inputs(input_tensor)
    shape = default_shape if input_shape is None else tuple(input_shape)
    if len(shape) != 3:
        raise ValueError(f"`input_shape` must be (height, width, channels), got {input_shape!r}.")
    inputs = tf.keras.Input(shape=shape, name="input")
    return inputs, inputs


def spatial_size(tensor) -> tuple:
    """The static `(height, width)` of an NHWC tensor (entries may be None)."""
    return tuple(tensor.shape[1:3])


def binary_conv(filters, kernel_size, *, make_quantizer, kernel_constraint, input_quantizer, pad_values, name,
                strides=1, kernel_initializer="glorot_uniform"):
    """A binarized `QuantConv2D` (sign activations, binary kernel, no bias), as LCE expects it."""
    return lq.layers.QuantConv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        pad_values=pad_values,
        use_bias=False,
        input_quantizer=input_quantizer,
        kernel_quantizer=make_quantizer(),
        kernel_constraint=kernel_constraint,
        kernel_initializer=kernel_initializer,
        name=name,
    )


def batch_norm(name, gamma_initializer="ones"):
    return tf.keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, gamma_initializer=gamma_initializer,
                                              name=name)


CLASSIFIER_ACTIVATIONS = ("softmax", None)


def classifier(x, num_classes, *, classifier_activation, kernel_initializer="glorot_uniform"):
    """The full-precision classifier `Dense(num_classes)` ("logits"), then `classifier_activation`.

    The softmax is a separate layer ("predictions"), as in larq-zoo, so `classifier_activation=None`
    gives logits (train with `from_logits=True`). Under a mixed precision policy the outputs are
    float32 (Keras' guidance: a 16-bit softmax or loss loses precision): the "predictions" layer
    is float32, and with `classifier_activation=None` a float32 identity layer of that name is added.
    """
    x = tf.keras.layers.Dense(num_classes, kernel_initializer=kernel_initializer, name="logits")(x)
    if classifier_activation is not None:
        x = tf.keras.layers.Activation(classifier_activation, dtype="float32", name="predictions")(x)
    elif tf.keras.mixed_precision.global_policy().compute_dtype != "float32":
        x = tf.keras.layers.Activation("linear", dtype="float32", name="predictions")(x)
    return x
