"""Binarized ResNet-18/34 in the CIFAR and the ImageNet (Bi-Real) layouts (the paper's backbones).

Both layouts keep the stem convolution, the downsample shortcuts and the classifier in full
precision; every 3×3 convolution inside the residual stages is binarized.

**CIFAR** (IR-Net/RBNN/ReCU `resnet2.py`): stem 3×3 conv 3→64 + BN, He basic blocks with one
shortcut per two binary convs, `h = BN1(BinConv(x))`, `out = Hardtanh(BN2(BinConv(h)) + s(x))`,
head average pool → BN → Dense. (The reference's Hardtanh on `h` is exactly redundant: `h` is
only read by the next binary conv, whose `approx_sign` gives the same value and gradient.)

**ImageNet** (Bi-Real style): stem 7×7/2 conv + BN + Hardtanh + 3×3/2 max-pool; every binary conv
has its own real-valued shortcut, `h = Hardtanh(BN1(BinConv(x)) + s(x))`,
`out = Hardtanh(BN2(BinConv(h)) + h)`; head average pool → BN → Dense. As in the reference code,
the 2D BNs start with γ = 1e-8 (the head BN with γ = 1).

**Downsample shortcut** `s(x)` (where stride or width change): full-precision 1×1 conv + BN, in
both layouts (IR-Net's CIFAR choice; RBNN/OvSW use a *binary* 1×1 conv, ReCU avg-pool + zero
padding). It carries real-valued information across the stage boundary, which binary shortcuts
destroy, and on LCE it is cheap: three 1×1 convs are a small share of ResNet-18's
multiply-accumulates (`python -m hbnn_larq.zoo.sizes` counts them). The parameter-free alternative
would zero half of the channels of every stage's first residual sum.
"""

from __future__ import annotations

import tensorflow as tf

from hbnn_larq.utils import check_choice
from hbnn_larq.zoo import common, pretrained

VARIANTS = ("cifar", "imagenet")
STAGE_FILTERS = (64, 128, 256, 512)
STEM_FILTERS = 64
DEFAULT_INPUT_SHAPES = {"cifar": (32, 32, 3), "imagenet": (224, 224, 3)}
BLOCKS = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}

IMAGENET_BN_GAMMA = 1e-8


def conv_init():
    """Kaiming-normal (fan-in), a fresh instance per layer (an unseeded Keras initializer
    instance returns the same values on every call)."""
    return tf.keras.initializers.VarianceScaling(2.0, mode="fan_in", distribution="untruncated_normal")


def ResNet18(**kwargs) -> tf.keras.Model:
    """Binarized ResNet-18; see `binary_resnet` for the arguments (11.2 M weights, CIFAR)."""
    return binary_resnet("resnet18", **kwargs)


def ResNet34(**kwargs) -> tf.keras.Model:
    """Binarized ResNet-34; see `binary_resnet` for the arguments (21.3 M weights, CIFAR)."""
    return binary_resnet("resnet34", **kwargs)


def infer_variant(input_shape, input_tensor) -> str:
    """`"cifar"` if the input's smaller side is at most 64 px (or unknown), else `"imagenet"`."""
    shape = tuple(input_tensor.shape[1:]) if input_tensor is not None else input_shape
    if shape is None:
        return "cifar"
    sides = [side for side in tuple(shape)[:2] if side is not None]
    return "imagenet" if sides and min(sides) > common.MAX_CIFAR_SIDE else "cifar"


def binary_resnet(
    depth_name: str,
    *,
    input_shape=None,
    input_tensor=None,
    num_classes: int = 10,
    include_top: bool = True,
    weights=None,
    input_normalization="auto",
    kernel_quantizer=None,
    kernel_constraint=None,
    input_quantizer: str | None = common.ACTIVATION_QUANTIZER,
    width: float = 1.0,
    pad_values: float = 1.0,
    variant: str | None = None,
    classifier_activation: str | None = "softmax",
) -> tf.keras.Model:
    """Instantiate a binarized ResNet (`depth_name` "resnet18" or "resnet34").

    # Arguments
    input_shape: `(height, width, channels)`; default `(32, 32, 3)` for CIFAR and
        `(224, 224, 3)` for ImageNet.
    input_tensor: optional Keras tensor to use as the model input.
    num_classes: number of classes, int >= 1. Default 10.
    include_top: whether to include the head; without it the model returns the last stage's
        feature map (`512·width` channels).
    weights: `None`, the name of shipped weights or the path of a `save_pretrained` file.
    input_normalization: the model's input convention, as in `hbnn_larq.zoo.VGGSmall`: with
        `(mean, std)` or a dataset name it takes RGB pixel values in [0, 255]; `"auto"`
        (default) follows the loaded weights.
    kernel_quantizer: the binary convs' kernel quantizer; `None` is a fresh
        `hbnn_larq.HyperbolicSign()` per layer. Also an alias, a config dict, a zero-argument
        factory or a Quantizer instance (cloned per layer).
    kernel_constraint: the binary convs' latent-kernel constraint (e.g. `"weight_clip"`).
    input_quantizer: the binary convs' activation quantizer, default `"approx_sign"`.
    width: channel multiplier, float > 0.
    pad_values: padding value of the binary convs, 1.0 (LCE's fast path) or 0.0 (reference).
    variant: `"cifar"`, `"imagenet"` or `None`: inferred from the input size, CIFAR for inputs
        whose smaller side is at most 64 px (or unknown), ImageNet above.
    classifier_activation: `"softmax"` (default) or `None` (logits).

    # Returns
    A `tf.keras.Model` named `depth_name`.

    # Raises
    ValueError: for an invalid argument, unknown weights, or weights made for another
        `num_classes`/`include_top`/architecture.
    """
    check_choice("depth_name", depth_name, tuple(BLOCKS))
    if variant is None:
        variant = infer_variant(input_shape, input_tensor)
    check_choice("variant", variant, VARIANTS)
    width, num_classes, pad_values, make_quantizer, metadata, weights_path, normalization = pretrained.prepare_build(
        depth_name, weights=weights, num_classes=num_classes, include_top=include_top,
        input_normalization=input_normalization, width=width,
        pad_values=pad_values, variant=variant, classifier_activation=classifier_activation,
        input_quantizer=input_quantizer, kernel_quantizer=kernel_quantizer,
    )

    def binary_conv(filters, strides, name):
        return common.binary_conv(filters, 3, strides=strides, make_quantizer=make_quantizer,
                                  kernel_constraint=kernel_constraint, input_quantizer=input_quantizer,
                                  pad_values=pad_values, kernel_initializer=conv_init(), name=name)

    imagenet = variant == "imagenet"
    gamma = tf.keras.initializers.Constant(IMAGENET_BN_GAMMA) if imagenet else "ones"
    x, inputs = common.model_inputs(input_shape, input_tensor, DEFAULT_INPUT_SHAPES[variant])
    x = common.normalize_inputs(x, normalization)
    x = (_imagenet_stem if imagenet else _cifar_stem)(x, common.scaled(STEM_FILTERS, width), gamma)
    block = _bireal_block if imagenet else _basic_block
    for stage, (filters, blocks) in enumerate(zip(STAGE_FILTERS, BLOCKS[depth_name]), start=1):
        for index in range(1, blocks + 1):
            strides = 2 if stage > 1 and index == 1 else 1
            x = block(x, common.scaled(filters, width), strides, f"stage{stage}_block{index}", binary_conv, gamma)
    if include_top:
        x = _head(x, num_classes, classifier_activation)
    model = tf.keras.Model(inputs, x, name=depth_name)
    return pretrained.finish(model, metadata, weights_path)


def _full_precision_conv(filters, kernel_size, strides, name):
    return tf.keras.layers.Conv2D(filters, kernel_size, strides=strides, padding="same", use_bias=False,
                                  kernel_initializer=conv_init(), name=name)


def _cifar_stem(x, filters, gamma):
    x = _full_precision_conv(filters, 3, 1, "stem_conv")(x)
    return common.batch_norm("stem_bn", gamma)(x)


def _imagenet_stem(x, filters, gamma):
    x = _full_precision_conv(filters, 7, 2, "stem_conv")(x)
    x = common.batch_norm("stem_bn", gamma)(x)
    x = common.HardTanh(name="stem_hardtanh")(x)
    return tf.keras.layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)


def _shortcut(x, filters, strides, name, gamma):
    """Identity, or the full-precision 1×1 conv + BN where the shape changes."""
    if strides == 1 and x.shape[-1] == filters:
        return x
    x = _full_precision_conv(filters, 1, strides, f"{name}_down_conv")(x)
    return common.batch_norm(f"{name}_down_bn", gamma)(x)


def _basic_block(x, filters, strides, name, binary_conv, gamma):
    """He basic block, one shortcut per two binary convs (CIFAR reference)."""
    shortcut = _shortcut(x, filters, strides, name, gamma)
    h = binary_conv(filters, strides, f"{name}_conv1")(x)
    h = common.batch_norm(f"{name}_bn1", gamma)(h)
    h = binary_conv(filters, 1, f"{name}_conv2")(h)
    h = common.batch_norm(f"{name}_bn2", gamma)(h)
    h = tf.keras.layers.Add(name=f"{name}_add")([h, shortcut])
    return common.HardTanh(name=f"{name}_hardtanh")(h)


def _bireal_block(x, filters, strides, name, binary_conv, gamma):
    """Bi-Real block: a real-valued shortcut around each binary conv (ImageNet reference)."""
    shortcut = _shortcut(x, filters, strides, name, gamma)
    for index, conv_strides in ((1, strides), (2, 1)):
        h = binary_conv(filters, conv_strides, f"{name}_conv{index}")(x)
        h = common.batch_norm(f"{name}_bn{index}", gamma)(h)
        h = tf.keras.layers.Add(name=f"{name}_add{index}")([h, shortcut])
        x = shortcut = common.HardTanh(name=f"{name}_hardtanh{index}")(h)
    return x


def _head(x, num_classes, classifier_activation):
    """Average pool (over the whole map; `AveragePooling2D + Flatten` is faster than a global
    pool on LCE) → BN → full-precision classifier."""
    height, width = common.spatial_size(x)
    if height is None or width is None:
        x = tf.keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    else:
        x = tf.keras.layers.AveragePooling2D((height, width), name="avg_pool")(x)
        x = tf.keras.layers.Flatten(name="flatten")(x)
    x = common.batch_norm("head_bn")(x)
    return common.classifier(x, num_classes, classifier_activation=classifier_activation)
