"""Deployment: 1-bit LCE flatbuffers vs float TFLite — size, x86 latency, prediction agreement.

For every zoo model (HBNN defaults): bytes of the float `.tflite` (same architecture, no
quantizers) vs the 1-bit LCE `.tflite`; single-thread latency, batch 1, of the LCE interpreter
(default kernels and `use_indirect_bgemm=True`) vs float TFLite (XNNPACK), as ratios. Caveat:
LCE's optimized kernels are aarch64 assembly; on x86 it runs portable C++ paths, so these
latencies say nothing about ARM devices (see larq-notes §9). With `--run-dir` (a `train.py`
run directory holding `model.keras`), also the top-1 agreement of LCE vs Keras predictions on
the test set; with `--shipped MODEL`, the same for the zoo model loaded with its shipped
`weights="cifar10"`. With `--sign-flips MODEL`, where LCE and Keras part: each binarized
layer's binary input activations from LCE and from Keras float32, compared with a float64 Keras
reference (rounding-level flips near 0 that later binary layers amplify, or a conversion bug).

```bash
python benchmarks/deploy.py
python benchmarks/deploy.py --models vggsmall --run-dir benchmarks/runs/quick/hbnn-m100-s0 --examples 1000
python benchmarks/deploy.py --models --shipped vggsmall --examples 0   # shipped weights, whole test set
python benchmarks/deploy.py --models --sign-flips vggsmall resnet18    # per layer, 50 test images
```
Writes `benchmarks/results/deploy.json`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import zoo_weights
from bench_common import RESULTS, ROOT
from bench_common import binary_sign as sign  # larq's sign(0) = +1


def latency_ms(interpreter_predict, x, repeats: int) -> float:
    interpreter_predict(x)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        interpreter_predict(x)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def tflite_predict(flatbuffer: bytes):
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(model_content=flatbuffer, num_threads=1)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0]["index"], interpreter.get_output_details()[0]["index"]

    def predict(x):
        interpreter.set_tensor(inp, x)
        interpreter.invoke()
        return interpreter.get_tensor(out)

    return predict


def measure_model(label: str, name: str, kwargs: dict, repeats: int) -> dict:
    import larq_compute_engine as lce
    import numpy as np
    from larq_compute_engine import testing as lce_testing  # LCE's public test interpreter
    Interpreter = lce_testing.Interpreter

    import hbnn_larq
    from hbnn_larq.zoo import get_model
    from hbnn_larq.zoo.sizes import float_twin

    model = get_model(name, **kwargs)
    binary = hbnn_larq.convert_keras_model(model)
    floating = lce.convert_keras_model(float_twin(model))
    x = np.random.default_rng(0).normal(size=(1, *model.input_shape[1:])).astype("float32")
    lce_default = Interpreter(binary, num_threads=1)
    lce_indirect = Interpreter(binary, num_threads=1, use_indirect_bgemm=True)
    ms = {
        "float_tflite_xnnpack": latency_ms(tflite_predict(floating), x, repeats),
        "lce_default": latency_ms(lce_default.predict, x, repeats),
        "lce_indirect_bgemm": latency_ms(lce_indirect.predict, x, repeats),
    }
    return {
        "label": label, "model": name, "lce_bytes": len(binary), "float_bytes": len(floating),
        "size_ratio": len(floating) / len(binary), "lce_bconv_ops": hbnn_larq.op_names(binary).count("LceBconv2d"),
        "latency_ms": ms,
        "latency_ratio_vs_float": {k: v / ms["float_tflite_xnnpack"] for k, v in ms.items()},
    }


def agreement(model, dataset, source: str) -> dict:
    """Top-1 agreement of `model`'s 1-bit LCE flatbuffer with the Keras model on `dataset.test`,
    and whether the images they disagree on are near-ties: the largest gap between Keras' top two
    probabilities among them (a large gap would point at a conversion bug, not float rounding)."""
    import numpy as np
    from larq_compute_engine import testing as lce_testing  # LCE's public test interpreter
    Interpreter = lce_testing.Interpreter

    import hbnn_larq

    interpreter = Interpreter(hbnn_larq.convert_keras_model(model), num_threads=2)
    agree = correct_keras = correct_lce = total = 0
    max_difference, disagreement_gaps = 0.0, []
    for x, y in dataset.test:
        keras_probs = model(x, training=False).numpy()
        lce_probs = np.concatenate([interpreter.predict(x[i : i + 1].numpy()) for i in range(len(x))])
        keras_top1, lce_top1 = np.argmax(keras_probs, -1), np.argmax(lce_probs, -1)
        y = np.asarray(y).reshape(-1)
        agree += int(np.sum(keras_top1 == lce_top1))
        correct_keras += int(np.sum(keras_top1 == y))
        correct_lce += int(np.sum(lce_top1 == y))
        total += len(y)
        max_difference = max(max_difference, float(np.max(np.abs(keras_probs - lce_probs))))
        top_two = np.sort(keras_probs, -1)[:, -2:]
        disagreement_gaps += (top_two[:, 1] - top_two[:, 0])[keras_top1 != lce_top1].tolist()
    return {"source": source, "examples": total, "top1_agreement": agree / total,
            "keras_accuracy": correct_keras / total, "lce_accuracy": correct_lce / total,
            "max_probability_difference": max_difference,
            "disagreement_max_keras_top2_gap": max(disagreement_gaps, default=None)}


def run_agreement(run_dir: Path, examples: int) -> dict:
    """`agreement` for the `model.keras` of a `train.py` run, on its own dataset's test split."""
    import tensorflow as tf

    from hbnn_larq.training import data as data_lib

    config = json.loads((run_dir / "config.json").read_text())["config"]
    dataset = data_lib.load_dataset(config["dataset"], data_dir=config.get("data_dir"), batch_size=100,
                                    image_size=config.get("image_size"), max_test_examples=examples, seed=0)
    source = str(run_dir.relative_to(ROOT) if run_dir.is_relative_to(ROOT) else run_dir)
    return agreement(tf.keras.models.load_model(run_dir / "model.keras"), dataset, source)


def shipped_agreement(model_name: str, weights: str, examples: int | None) -> dict:
    """`agreement` for a zoo model loaded with its shipped `weights`, on the CIFAR-10 test split."""
    from hbnn_larq import zoo

    path = zoo.registered_path(model_name, weights)
    model, dataset = zoo_weights.load_on_cifar10(model_name, path, batch_size=100, max_test_examples=examples, seed=0)
    return agreement(model, dataset, f'zoo.get_model("{model_name}", weights="{weights}")')


def float64_copy(model):
    """A copy of `model` (kernels baked) that computes in float64: the reference that tells whose
    rounding a sign difference is, LCE's or Keras' float32."""
    import tensorflow as tf

    import hbnn_larq

    baked = hbnn_larq.export.bake_quantized_kernels(model)

    def to_float64(config):  # nested configs too: a quantizer layer would cast back to its float32
        if isinstance(config, dict):
            return {k: "float64" if k == "dtype" else to_float64(v) for k, v in config.items()}
        return config

    def clone_layer(layer):
        return layer.__class__.from_config(to_float64(layer.get_config()))

    previous = tf.keras.backend.floatx()
    tf.keras.backend.set_floatx("float64")  # the layers' quantizers and initial weights follow floatx
    try:
        inputs = tf.keras.Input(model.input_shape[1:], dtype="float64")
        copy = tf.keras.models.clone_model(baked, input_tensors=inputs, clone_function=clone_layer)
    finally:
        tf.keras.backend.set_floatx(previous)
    copy.set_weights([w.astype("float64") for w in baked.get_weights()])
    return copy


# A binary activation whose float64 pre-activation is this close to 0 flipped by rounding alone;
# one further from 0 flipped because an earlier layer's flip changed its input (a cascade).
ROUNDING_ZONE = 1e-5


def classify_flips(lce_signs, pre64, image_flipped_before):
    """Count one layer's LCE sign flips (vs the float64 pre-activations `pre64`, batch first): all,
    those within `ROUNDING_ZONE` of 0, and the unexplained rest in images with no earlier flip.

    # Returns
    `(counts, image_flipped_before)` updated with this layer's flips, for the next layer.
    """
    import numpy as np

    n = len(pre64)
    flipped = (np.asarray(lce_signs) != sign(pre64)).reshape(n, -1)
    rounding = flipped & (np.abs(pre64) < ROUNDING_ZONE).reshape(n, -1)
    counts = {"lce_flips": int(flipped.sum()), "lce_flips_in_rounding_zone": int(rounding.sum()),
              "lce_flips_unexplained": int(np.sum((flipped & ~rounding)[~image_flipped_before]))}
    return counts, image_flipped_before | flipped.any(axis=1)


def sign_flips(model, x, source: str) -> dict:
    """Per binarized layer, the fraction of its binary input activations on which LCE and Keras
    float32 each differ from a float64 Keras reference, on the images `x`; how many of LCE's flips
    sit within `ROUNDING_ZONE` of 0 (rounding); and how many neither do nor follow an LCE flip at an
    earlier binarized layer of the same image ("unexplained": those would be a conversion bug).

    Each layer's check converts the model truncated at that layer's input quantizer, so LCE fuses
    the previous layers exactly as in the full model (a bconv writing bitpacked output included).
    """
    import numpy as np
    import tensorflow as tf
    from larq_compute_engine import testing as lce_testing  # LCE's public test interpreter
    Interpreter = lce_testing.Interpreter

    import hbnn_larq

    reference = float64_copy(model)
    x64 = x.astype("float64")

    def lce(sub, images):
        interpreter = Interpreter(hbnn_larq.convert_keras_model(sub), num_threads=2)
        return np.concatenate([interpreter.predict(images[i : i + 1]) for i in range(len(images))])

    twins = {layer.name: layer for layer in hbnn_larq.utils.layers(reference)}  # baked: no longer "binarized"
    layers, image_flipped_before = [], np.zeros(len(x), bool)
    for layer in hbnn_larq.utils.binarized_layers(model):
        twin = twins[layer.name]
        pre32 = tf.keras.Model(model.input, layer.input)(x, training=False).numpy()
        pre64 = tf.keras.Model(reference.input, twin.input)(x64, training=False).numpy()
        lce_signs = sign(lce(tf.keras.Model(model.input, layer.input_quantizer(layer.input)), x))
        counts, image_flipped_before = classify_flips(lce_signs, pre64, image_flipped_before)
        layers.append({"layer": layer.name, "activations": int(pre64.size),
                       "lce_vs_float64": counts["lce_flips"] / pre64.size,
                       "keras_float32_vs_float64": float(np.mean(sign(pre32) != sign(pre64))), **counts})
    probs = {"lce": lce(model, x), "keras_float32": model(x, training=False).numpy(),
             "keras_float64": reference(x64, training=False).numpy()}
    outputs = {f"{a}_vs_keras_float64": {
        "top1_differences": int(np.sum(probs[a].argmax(-1) != probs["keras_float64"].argmax(-1))),
        "max_probability_difference": float(np.max(np.abs(probs[a] - probs["keras_float64"])))}
        for a in ("lce", "keras_float32")}
    return {"source": source, "examples": len(x), "rounding_zone": ROUNDING_ZONE, "layers": layers, "outputs": outputs}


def shipped_sign_flips(model_name: str, weights: str, examples: int) -> dict:
    """`sign_flips` for a zoo model with its shipped `weights`, on the first CIFAR-10 test images."""
    from hbnn_larq import zoo

    path = zoo.registered_path(model_name, weights)
    model, dataset = zoo_weights.load_on_cifar10(model_name, path, batch_size=examples,
                                                 max_test_examples=examples, seed=0)
    x, _ = next(iter(dataset.test))
    return sign_flips(model, x.numpy(), f'zoo.get_model("{model_name}", weights="{weights}")')


def print_sign_flips(entry: dict) -> None:
    print(f"binary activations, {entry['source']}, {entry['examples']} test images: "
          "fraction differing from Keras float64")
    print(f"  {'layer':24s} {'LCE':>8s} {'Keras f32':>9s}  LCE flips: all / within {entry['rounding_zone']:.0e} of 0 "
          "/ unexplained (neither that nor after an earlier flip in the image)")
    for row in entry["layers"]:
        print(f"  {row['layer']:24s} {row['lce_vs_float64']:8.1e} {row['keras_float32_vs_float64']:9.1e}  "
              f"{row['lce_flips']} / {row['lce_flips_in_rounding_zone']} / {row['lce_flips_unexplained']}")
    for name, out in entry["outputs"].items():
        print(f"  {name}: {out['top1_differences']} top-1 differences, "
              f"max |dp| {out['max_probability_difference']:.1e}")


def near_ties(entry: dict) -> str:
    """How far LCE's output probabilities stray from Keras' and how close the disagreements were."""
    if "max_probability_difference" not in entry:  # measured before these fields existed
        return ""
    gap = entry["disagreement_max_keras_top2_gap"]
    return (f"; max |p_LCE - p_Keras| {entry['max_probability_difference']:.1e}"
            + (f", Keras top-2 gap of the disagreements <= {gap:.1e}" if gap is not None else ""))


# The field that identifies an entry of each section of `deploy.json`.
ENTRY_KEYS = {"models": "label", "agreement": "source", "sign_flips": "source"}


def merge(report: dict, measured: dict) -> dict:
    """`report` with `measured`'s entries added, replacing those with the same `ENTRY_KEYS` field, so
    that measuring one model or one agreement check keeps what earlier invocations measured."""
    merged = {}
    for section, entries in measured.items():
        key = ENTRY_KEYS[section]
        new = {e[key] for e in entries}
        merged[section] = [e for e in report.get(section, []) if e[key] not in new] + entries
    return {**report, **merged}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=None, help="zoo model names (default: every row of the table in docs/results.md, 'Deployment')")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--run-dir", type=Path, action="append", default=[], help="trained run(s) for the agreement check")
    parser.add_argument("--shipped", nargs="*", default=[], metavar="MODEL",
                        help='zoo models whose shipped weights="cifar10" to check for agreement')
    parser.add_argument("--examples", type=int, default=1000, help="test images per agreement check (0: all)")
    parser.add_argument("--sign-flips", nargs="*", default=[], metavar="MODEL",
                        help="zoo models (shipped weights) whose binary activations to compare layer by layer "
                             "between LCE, Keras float32 and a Keras float64 reference")
    parser.add_argument("--flip-examples", type=int, default=50, help="test images for --sign-flips")
    args = parser.parse_args(argv)

    import hbnn_larq  # noqa: F401
    from hbnn_larq.zoo.sizes import DEFAULT_ROWS

    from hbnn_larq.training.provenance import machine

    sys_info = machine()
    rows = [r for r in DEFAULT_ROWS if args.models is None or r[1] in args.models]
    measured = {"models": [measure_model(*row, args.repeats) for row in rows],
                "agreement": [run_agreement(run_dir, args.examples or None) for run_dir in args.run_dir]
                + [shipped_agreement(name, "cifar10", args.examples or None) for name in args.shipped],
                "sign_flips": [shipped_sign_flips(name, "cifar10", args.flip_examples) for name in args.sign_flips]}
    out = RESULTS / "deploy.json"
    report = merge(json.loads(out.read_text()) if out.is_file() else {}, measured)
    report.update(machine=sys_info, threads=1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(f"machine: {sys_info} (x86: LCE runs portable kernels; latency claims need ARM)")
    print(f"{'model':28s} {'float MB':>8s} {'1-bit MB':>8s} {'size x':>6s} {'float ms':>8s} {'LCE ms (x)':>14s} {'LCE indirect ms (x)':>20s}")
    for m in report["models"]:
        ms, ratio = m["latency_ms"], m["latency_ratio_vs_float"]
        print(f"{m['label']:28s} {m['float_bytes'] / 1e6:8.2f} {m['lce_bytes'] / 1e6:8.2f} {m['size_ratio']:6.1f} "
              f"{ms['float_tflite_xnnpack']:8.1f} {ms['lce_default']:7.1f} ({ratio['lce_default']:4.2f}) "
              f"{ms['lce_indirect_bgemm']:12.1f} ({ratio['lce_indirect_bgemm']:4.2f})")
    for a in report["agreement"]:
        print(f"agreement {a['source']}: {100 * a['top1_agreement']:.2f} % of {a['examples']} test images "
              f"(Keras acc {100 * a['keras_accuracy']:.2f} %, LCE acc {100 * a['lce_accuracy']:.2f} %)"
              + near_ties(a))
    for entry in report.get("sign_flips", []):
        print_sign_flips(entry)


if __name__ == "__main__":
    main()
