"""VGG-Small for CIFAR (the BNN literature's VGG-small, the paper's CIFAR backbone).

| layer | op (3×3, pad 1, no bias) | precision | output (width 1) |
|---|---|---|---|
| conv0 | Conv 3→128 → BN → Hardtanh | FP | 32×32×128 |
| conv1 | BinConv 128→128 → MaxPool 2 → BN | 1/1 | 16×16×128 |
| conv2 | BinConv 128→256 → BN | 1/1 | 16×16×256 |
| conv3 | BinConv 256→256 → MaxPool 2 → BN | 1/1 | 8×8×256 |
| conv4 | BinConv 256→512 → BN | 1/1 | 8×8×512 |
| conv5 | BinConv 512→512 → MaxPool 2 → BN → Hardtanh | 1/1 | 4×4×512 |
| logits | Flatten → Dense(classes) (+ softmax) | FP | classes |
"""

from __future__ import annotations

import tensorflow as tf

from hbnn_larq.zoo import common, pretrained

MODEL_NAME = "vggsmall"
BINARY_FILTERS = (128, 256, 256, 512, 512)
POOL_AFTER = (1, 3, 5)  # 1-based indices of the binary convs followed by a 2×2 max-pool
STEM_FILTERS = 128
DEFAULT_INPUT_SHAPE = (32, 32, 3)


# Reference init (IR-Net/RBNN/ReCU vgg.py): convs N(0, 2/(9·C_out)), Linear N(0, 0.01²). A fresh
# initializer per layer: an unseeded Keras initializer instance returns the same values on every
# call, which would start equally shaped layers with identical kernels.
def conv_init():
    return tf.keras.initializers.VarianceScaling(2.0, mode="fan_out", distribution="untruncated_normal")


def dense_init():
    return tf.keras.initializers.RandomNormal(stddev=0.01)


def VGGSmall(
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
    bn_before_pool: bool = False,
    explicit_hardtanh: bool = False,
    classifier_activation: str | None = "softmax",
) -> tf.keras.Model:
    """Instantiate the binarized VGG-Small of the BNN literature (4.66 M weights at width 1).

    The first convolution and the classifier are full precision; the five 3×3 convolutions in
    between are binarized (`approx_sign` activations, binary kernels, no bias).

    **Hardtanh.** The reference code applies Hardtanh after every BN. Before a binary conv it is
    exactly redundant with `approx_sign` (\\(\\operatorname{sign}(\\operatorname{clip}(x)) =
    \\operatorname{sign}(x)\\) and both gradients vanish for \\(|x| > 1\\)), so by default it is
    only applied where a full-precision layer reads the activations (before the classifier);
    `explicit_hardtanh=True` restores every one of them (same outputs and gradients).

    **Pool/BN order.** The reference applies max-pool before BN (`bn_before_pool=False`). With
    \\(\\gamma > 0\\) an inference-mode BN is an increasing per-channel affine map and commutes
    with max-pooling, so `bn_before_pool=True` has the same function class and, for equal
    weights, the same inference outputs; LCE then fuses BN into the binary conv and max-pools
    bit-packed data (`LceBMaxPool2d`), leaving no float ops between binary layers. Training
    differs (batch statistics are taken before vs after pooling).

    # Arguments
    input_shape: `(height, width, channels)`, default `(32, 32, 3)`.
    input_tensor: optional Keras tensor to use as the model input.
    num_classes: number of classes, int >= 1. Default 10.
    include_top: whether to include the classifier; without it the model returns the
        `(h/8, w/8, 512·width)` feature map after the last Hardtanh.
    weights: `None`, the name of shipped weights (`hbnn_larq.zoo.pretrained.available_weights("vggsmall")`)
        or the path of a file written by `hbnn_larq.zoo.save_pretrained`.
    input_normalization: the model's input convention. A pair `(mean, std)` of per-channel
        statistics of [0, 1]-scaled images, or a dataset name (`"cifar10"`, `"cifar100"`,
        `"imagenet"`): the model takes RGB pixel values in [0, 255] (uint8 images cast to
        float32) and normalises them itself, in float32 (its first layer,
        "input_normalization"). `None`: the model takes inputs normalised by the caller.
        `"auto"` (default): the normalisation the loaded `weights` were trained with (every
        shipped file: raw [0, 255] pixels in), or None without weights.
    kernel_quantizer: the binary convs' kernel quantizer; `None` is a fresh
        `hbnn_larq.HyperbolicSign()` per layer. Also accepts an alias (`"ste_sign"`), a config
        dict, a zero-argument factory or a Quantizer instance (cloned per layer).
    kernel_constraint: the binary convs' latent-kernel constraint (e.g. `"weight_clip"` for the
        sign/STE baseline; HBNN uses none).
    input_quantizer: the binary convs' activation quantizer, default `"approx_sign"` (`None`
        gives the paper's W1/A32 setting).
    width: channel multiplier, float > 0 (tests and fast runs use 0.25–0.5).
    pad_values: value of the binary convs' "same" padding, 1.0 (LCE's fast path) or 0.0 (the
        reference code's zero padding).
    bn_before_pool: use QuantConv2D → BN → MaxPool instead of the reference's
        QuantConv2D → MaxPool → BN (see above).
    explicit_hardtanh: also apply the redundant Hardtanh before every binary conv.
    classifier_activation: `"softmax"` (default) or `None` (logits).

    # Returns
    A `tf.keras.Model` named "vggsmall".

    # Raises
    ValueError: for an invalid argument, unknown weights, or weights made for another
        `num_classes`/`include_top`/architecture.
    """
    width, num_classes, pad_values, make_quantizer, metadata, weights_path, normalization = pretrained.prepare_build(
        MODEL_NAME, weights=weights, num_classes=num_classes, include_top=include_top,
        input_normalization=input_normalization, width=width,
        pad_values=pad_values, bn_before_pool=bool(bn_before_pool), explicit_hardtanh=bool(explicit_hardtanh),
        classifier_activation=classifier_activation, input_quantizer=input_quantizer,
        kernel_quantizer=kernel_quantizer,
    )

    x, inputs = common.model_inputs(input_shape, input_tensor, DEFAULT_INPUT_SHAPE)
    x = common.normalize_inputs(x, normalization)
    x = tf.keras.layers.Conv2D(common.scaled(STEM_FILTERS, width), 3, padding="same", use_bias=False,
                               kernel_initializer=conv_init(), name="conv0")(x)
    x = common.batch_norm("conv0_bn")(x)
    x = common.HardTanh(name="conv0_hardtanh")(x)
    for index, filters in enumerate(BINARY_FILTERS, start=1):
        x = _binary_block(
            x,
            index,
            filters=common.scaled(filters, width),
            pool=index in POOL_AFTER,
            last=index == len(BINARY_FILTERS),
            make_quantizer=make_quantizer,
            kernel_constraint=kernel_constraint,
            input_quantizer=input_quantizer,
            pad_values=pad_values,
            bn_before_pool=bn_before_pool,
            explicit_hardtanh=explicit_hardtanh,
        )
    if include_top:
        x = tf.keras.layers.Flatten(name="flatten")(x)
        x = common.classifier(x, num_classes, classifier_activation=classifier_activation,
                              kernel_initializer=dense_init())
    model = tf.keras.Model(inputs, x, name=MODEL_NAME)
    return pretrained.finish(model, metadata, weights_path)


def _binary_block(x, index, *, filters, pool, last, make_quantizer, kernel_constraint, input_quantizer,
                  pad_values, bn_before_pool, explicit_hardtanh):
    """BinConv (→ MaxPool) → BN, or BinConv → BN (→ MaxPool); Hardtanh where it matters."""
    name = f"conv{index}"
    x = common.binary_conv(filters, 3, make_quantizer=make_quantizer, kernel_constraint=kernel_constraint,
                           input_quantizer=input_quantizer, pad_values=pad_values,
                           kernel_initializer=conv_init(), name=name)(x)
    pool_layer = tf.keras.layers.MaxPooling2D(2, name=f"{name}_pool") if pool else None
    if pool_layer is not None and not bn_before_pool:
        x = pool_layer(x)
    x = common.batch_norm(f"{name}_bn")(x)
    if pool_layer is not None and bn_before_pool:
        x = pool_layer(x)
    if last or explicit_hardtanh:
        x = common.HardTanh(name=f"{name}_hardtanh")(x)
    return x
