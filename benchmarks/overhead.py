"""Training cost of HBNN vs the sign/STE baseline: time per step (ratio) and peak memory.

Time: every variant of a model is built and compiled in ONE process; after warm-up, timed
rounds of training steps on a fixed batch are interleaved (A B C A B C ...), so that drift of
the machine's speed hits all variants alike; the reported figure is the median time per step and
its ratio to the baseline. Memory: each variant trains a few steps in its own subprocess, which
reports its peak resident set size (ru_maxrss); the ratio to the baseline's is reported.

```bash
python benchmarks/overhead.py                       # full-width VGGSmall and ResNet18, batch 128
python benchmarks/overhead.py --models vggsmall --batch-size 64 --rounds 5
```
Writes `benchmarks/results/overhead.json`.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench_common import RESULTS, ROOT
VARIANTS = {"ste_sign": {}, "hbnn t=1": {"cluster_size": 1}, "hbnn t=4": {"cluster_size": 4}}


def build(model_name: str, variant: str, batch_size: int):
    import hbnn_larq  # first: sets up legacy Keras before TensorFlow loads
    import numpy as np
    import tensorflow as tf
    from hbnn_larq import recipes, zoo

    recipe = "ste_sign" if variant == "ste_sign" else "hbnn"
    options = VARIANTS[variant]
    model = zoo.get_model(
        model_name, input_shape=(32, 32, 3), num_classes=10,
        kernel_quantizer=lambda: recipes.kernel_quantizer(recipe, **options),
        kernel_constraint=recipes.kernel_constraint(recipe),
    )
    sgd = tf.keras.optimizers.SGD(0.1, momentum=0.9)
    optimizer = hbnn_larq.RiemannianOptimizer(sgd) if recipes.is_hyperbolic(recipe) else sgd
    model.compile(optimizer, loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(batch_size, 32, 32, 3)).astype("float32"))
    y = tf.constant(rng.integers(0, 10, batch_size))
    return model, x, y


def time_steps(model, x, y, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        loss = model.train_on_batch(x, y)
    float(loss)  # wait for the last step
    return (time.perf_counter() - start) / steps


def measure_time(model_name: str, batch_size: int, rounds: int, steps: int) -> dict:
    built = {v: build(model_name, v, batch_size) for v in VARIANTS}
    for model, x, y in built.values():  # warm-up: tracing and first-touch allocations
        time_steps(model, x, y, 2)
    samples = {v: [] for v in VARIANTS}
    for _ in range(rounds):
        for v, (model, x, y) in built.items():
            samples[v].append(time_steps(model, x, y, steps))
    median = {v: statistics.median(s) for v, s in samples.items()}
    return {v: {"seconds_per_step": median[v], "samples": samples[v],
                "ratio_to_ste": median[v] / median["ste_sign"]} for v in VARIANTS}


def peak_rss_mb() -> float:
    """This process's peak resident set size (VmHWM), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_memory_child(model_name: str, variant: str, batch_size: int) -> None:
    model, x, y = build(model_name, variant, batch_size)
    time_steps(model, x, y, 3)
    print(json.dumps({"peak_rss_mb": peak_rss_mb(), "variables_mb": sum(v.numpy().nbytes for v in model.weights) / 2**20}))


def measure_memory(model_name: str, batch_size: int) -> dict:
    peaks = {}
    for v in VARIANTS:
        out = subprocess.run(
            [sys.executable, __file__, "--memory-child", model_name, v, "--batch-size", str(batch_size)],
            capture_output=True, text=True, check=True, cwd=ROOT,
        ).stdout.strip().splitlines()[-1]
        peaks[v] = json.loads(out)
    return {v: {**peaks[v], "ratio_to_ste": peaks[v]["peak_rss_mb"] / peaks["ste_sign"]["peak_rss_mb"]} for v in VARIANTS}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=["vggsmall", "resnet18"], choices=["vggsmall", "resnet18", "resnet34"])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--memory-child", nargs=2, metavar=("MODEL", "VARIANT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        peak_memory_child(*args.memory_child, args.batch_size)
        return

    import hbnn_larq  # noqa: F401  (legacy Keras set-up before TensorFlow loads)
    from hbnn_larq.training import machine

    report = {"batch_size": args.batch_size, "rounds": args.rounds, "steps_per_round": args.steps,
              "machine": machine(), "models": {}}
    for name in args.models:
        report["models"][name] = {"time": measure_time(name, args.batch_size, args.rounds, args.steps),
                                  "memory": measure_memory(name, args.batch_size)}
    out = RESULTS / "overhead.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(f"machine: {report['machine']}; batch {args.batch_size}")
    print(f"{'model':10s} {'variant':10s} {'s/step':>8s} {'x STE':>6s} {'peak MB':>8s} {'x STE':>6s}")
    for name, parts in report["models"].items():
        for v in VARIANTS:
            t, m = parts["time"][v], parts["memory"][v]
            print(f"{name:10s} {v:10s} {t['seconds_per_step']:8.3f} {t['ratio_to_ste']:6.2f} {m['peak_rss_mb']:8.0f} {m['ratio_to_ste']:6.2f}")


if __name__ == "__main__":
    main()
