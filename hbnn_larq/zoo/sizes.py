"""Size report of the zoo: parameters, binarized MAC share, float vs 1-bit TFLite size.

```bash
python -m hbnn_larq.zoo.sizes                       # every model, full width, markdown table
python -m hbnn_larq.zoo.sizes --models vggsmall --width 0.5 --json
```

Parameters are the model's own weights (kernels, biases, BN γ/β and moving statistics), as the
reference code counts them; the HBNN points (one kernel-sized point per binary layer and chart)
are training-only state, excluded from the count but reported separately. The 1-bit size is
the LCE flatbuffer of `hbnn_larq.convert_keras_model`; the float size is the same architecture
without quantizers, converted by the same converter.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import tensorflow as tf

from hbnn_larq.export import convert_keras_model, op_names
from hbnn_larq.utils import QUANTIZED_KERNELS, QUANTIZER_ATTRIBUTES, binarized_layers, layers, own_weights
from hbnn_larq.zoo.registry import get_model

# (row label, model name, build kwargs): the table in docs/deployment.md ("Zoo models and their sizes").
DEFAULT_ROWS = (
    ("VGG-Small, CIFAR 32 px", "vggsmall", {"input_shape": (32, 32, 3)}),
    ("ResNet-18, CIFAR 32 px", "resnet18", {"input_shape": (32, 32, 3)}),
    ("ResNet-34, CIFAR 32 px", "resnet34", {"input_shape": (32, 32, 3)}),
    ("ResNet-18, ImageNet 224 px", "resnet18", {"input_shape": (224, 224, 3), "num_classes": 1000}),
    ("ResNet-34, ImageNet 224 px", "resnet34", {"input_shape": (224, 224, 3), "num_classes": 1000}),
)


def count_parameters(model: tf.keras.Model) -> dict:
    """`{"params": own weights, "quantizer_state": HBNN points and other quantizer variables}`."""
    own = sum(int(np.prod(v.shape)) for layer in layers(model) for v in own_weights(layer))
    total = sum(int(np.prod(v.shape)) for v in model.weights)
    return {"params": own, "quantizer_state": total - own}


def mac_counts(model: tf.keras.Model) -> dict:
    """Multiply-accumulates of one forward pass, split into binarized and full-precision ones.

    Convolutions count `kh·kw·C_in·C_out·H_out·W_out`, depthwise ones `kh·kw·C_in·M·H_out·W_out`
    (a separable conv: its depthwise and its pointwise part), dense layers `in·out`; BN, pooling and
    additions are not counted (larq's `summary` convention, without its quantizer overcount).
    Binary MACs are those of the convolutions LCE binarizes (`binarized_layers`): LCE has no binary
    depthwise convolution, so depthwise and separable convs count as full precision.
    """
    binary = {id(layer) for layer in binarized_layers(model)}
    counts = {"binary_macs": 0, "float_macs": 0}
    convolutions = (tf.keras.layers.Conv2D, tf.keras.layers.DepthwiseConv2D, tf.keras.layers.SeparableConv2D)
    for layer in layers(model):
        if isinstance(layer, convolutions):
            out_h, out_w = layer.output_shape[1:3]
            kernels = [getattr(layer, slot.kernel) for slot in QUANTIZED_KERNELS if hasattr(layer, slot.kernel)]
            macs = sum(int(np.prod(kernel.shape)) for kernel in kernels) * out_h * out_w
        elif isinstance(layer, tf.keras.layers.Dense):
            macs = int(np.prod(layer.kernel.shape))
        else:
            continue
        counts["binary_macs" if id(layer) in binary else "float_macs"] += macs
    return counts


def float_twin(model: tf.keras.Model) -> tf.keras.Model:
    """The same architecture with every quantizer removed (weights not copied: sizes only)."""

    def without_quantizers(layer):
        config = layer.get_config()
        for key in (*QUANTIZER_ATTRIBUTES, *(slot.constraint for slot in QUANTIZED_KERNELS)):
            if key in config:
                config[key] = None
        return layer.__class__.from_config(config)

    return tf.keras.models.clone_model(model, clone_function=without_quantizers)


def size_report(name: str, **kwargs) -> dict:
    """Build zoo model `name` with `kwargs` and measure it.

    # Returns
    A dict: `params`, `quantizer_state`, `binary_macs`, `float_macs`, `binarized_mac_share`,
    `binary_convs`, `lce_bconv_ops`, `lce_bytes` (1-bit flatbuffer) and `float_bytes`.
    """
    import larq_compute_engine as lce

    model = get_model(name, **kwargs)
    report = {"model": name, **count_parameters(model), **mac_counts(model)}
    report["binarized_mac_share"] = report["binary_macs"] / (report["binary_macs"] + report["float_macs"])
    flatbuffer = convert_keras_model(model)
    report.update(
        binary_convs=len(binarized_layers(model)),
        lce_bconv_ops=op_names(flatbuffer).count("LceBconv2d"),
        lce_bytes=len(flatbuffer),
        float_bytes=len(lce.convert_keras_model(float_twin(model))),
    )
    return report


def markdown_table(rows) -> str:
    """A markdown table of `(label, report)` rows."""
    lines = [
        "| model | params (M) | HBNN points (M, training only) | binarized MACs | 1-bit .tflite (MB) | float .tflite (MB) | ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, r in rows:
        lines.append(
            f"| {label} | {r['params'] / 1e6:.2f} | {r['quantizer_state'] / 1e6:.2f} | "
            f"{100 * r['binarized_mac_share']:.1f} % ({r['binary_macs'] / 1e6:.0f} M of "
            f"{(r['binary_macs'] + r['float_macs']) / 1e6:.0f} M) | {r['lce_bytes'] / 1e6:.2f} | "
            f"{r['float_bytes'] / 1e6:.2f} | {r['float_bytes'] / r['lce_bytes']:.1f}× |"
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="*", default=None, help="model names (default: the rows of the table in docs/deployment.md)")
    parser.add_argument("--width", type=float, default=1.0, help="channel multiplier")
    parser.add_argument("--json", action="store_true", help="print JSON instead of markdown")
    args = parser.parse_args(argv)
    rows = [row for row in DEFAULT_ROWS if args.models is None or row[1] in args.models]
    reports = [(label, size_report(name, width=args.width, **kwargs)) for label, name, kwargs in rows]
    if args.json:
        print(json.dumps([{"label": label, **r} for label, r in reports], indent=2))
    else:
        print(markdown_table(reports))


if __name__ == "__main__":
    main()
