"""Training cost of HBNN vs the sign/STE baseline: time per step (ratio) and peak memory.

Time: every variant of a model, under every precision policy asked for (and with XLA if asked),
is built and compiled in ONE process; after warm-up, timed rounds of training steps on a fixed
batch are interleaved (A B C A B C ...), so that drift of the machine's speed hits all variants
alike; the reported figure is the median time per step, its ratio to the sign/STE baseline of
the same precision and mode, and its speed-up over the same variant in float32 graph mode.
Memory: each variant trains a few steps in its own subprocess, which reports its peak resident
set size; the ratio to the baseline's is reported.

```bash
python benchmarks/overhead.py                       # full-width VGGSmall and ResNet18, batch 128
python benchmarks/overhead.py --models vggsmall --batch-size 64 --precision float32 mixed_bfloat16
python benchmarks/overhead.py --models vggsmall --modes graph xla --no-memory   # XLA's cost
```
Writes `benchmarks/results/overhead.json` (or `--out`). `mixed_bfloat16` pays on CPUs with
AMX or avx512_bf16 (the report records the CPU and its flags); elsewhere it is slower than float32.
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
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
MODES = ("graph", "xla")


def build(model_name: str, variant: str, batch_size: int, precision: str = "float32", mode: str = "graph"):
    import hbnn_larq  # first: sets up legacy Keras before TensorFlow loads
    import numpy as np
    import tensorflow as tf
    from hbnn_larq import zoo
    from hbnn_larq.training import recipes

    recipe = "ste_sign" if variant == "ste_sign" else "hbnn"
    options = VARIANTS[variant]
    with hbnn_larq.precision.policy_scope(precision):
        model = zoo.get_model(
            model_name, input_shape=(32, 32, 3), num_classes=10,
            kernel_quantizer=lambda: recipes.kernel_quantizer(recipe, **options),
            kernel_constraint=recipes.kernel_constraint(recipe),
        )
    sgd = tf.keras.optimizers.SGD(0.1, momentum=0.9)
    optimizer = hbnn_larq.RiemannianOptimizer(sgd) if recipes.is_hyperbolic(recipe) else sgd
    model.compile(optimizer, loss="sparse_categorical_crossentropy", jit_compile=mode == "xla")
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(batch_size, 32, 32, 3)).astype("float32"))
    y = tf.constant(rng.integers(0, 10, batch_size))
    return model, x, y


def stepper(model, x, y):
    """`run(steps)`: seconds per training step, calling the model's traced train function (what
    `fit` calls once per batch) on the fixed batch. Timing `fit` or `train_on_batch` calls of a
    few steps instead measures their per-call overhead, which on this stack comes in quanta of
    0.1-2.5 s per call and swamped the step time."""
    import tensorflow as tf

    data = iter(tf.data.Dataset.from_tensors((x, y)).repeat())
    function = model.make_train_function()

    def run(steps: int) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            logs = function(data)
        float(logs["loss"])  # wait for the last step
        return (time.perf_counter() - start) / steps

    return run


def setting(precision: str, mode: str) -> str:
    return precision if mode == "graph" else f"{precision}+xla"


def measure_time(model_name: str, batch_size: int, rounds: int, steps: int, precisions, modes, variants) -> dict:
    """Median seconds per step of every (precision, mode, variant), timed interleaved in one process."""
    keys = [(p, m, v) for p in precisions for m in modes for v in variants]
    runs = {k: stepper(*build(model_name, k[2], batch_size, k[0], k[1])) for k in keys}
    for run in runs.values():  # warm-up: tracing and first-touch allocations
        run(2)
    samples = {k: [] for k in keys}
    for _ in range(rounds):
        for k, run in runs.items():
            samples[k].append(run(steps))
    median = {k: statistics.median(s) for k, s in samples.items()}
    fastest = {k: min(s) for k, s in samples.items()}
    report = {}
    for (p, m, v) in keys:
        entry = {"seconds_per_step": median[(p, m, v)], "min_seconds_per_step": fastest[(p, m, v)],
                 "samples": samples[(p, m, v)],
                 "ratio_to_ste": median[(p, m, v)] / median[(p, m, "ste_sign")] if "ste_sign" in variants else None,
                 "min_ratio_to_ste": fastest[(p, m, v)] / fastest[(p, m, "ste_sign")] if "ste_sign" in variants else None}
        if ("float32", "graph", v) in median:
            entry["speedup_over_float32"] = median[("float32", "graph", v)] / median[(p, m, v)]
        report.setdefault(setting(p, m), {})[v] = entry
    return report


def peak_rss_mb() -> float:
    """This process's peak resident set size (VmHWM), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_memory_child(model_name: str, variant: str, batch_size: int, precision: str) -> None:
    model, x, y = build(model_name, variant, batch_size, precision)
    stepper(model, x, y)(3)
    print(json.dumps({"peak_rss_mb": peak_rss_mb(), "variables_mb": sum(v.numpy().nbytes for v in model.weights) / 2**20}))


def measure_memory(model_name: str, batch_size: int, precision: str, variants) -> dict:
    peaks = {}
    for v in variants:
        out = subprocess.run(
            [sys.executable, __file__, "--memory-child", model_name, v, "--batch-size", str(batch_size),
             "--precision", precision],
            capture_output=True, text=True, check=True, cwd=ROOT,
        ).stdout.strip().splitlines()[-1]
        peaks[v] = json.loads(out)
    base = peaks.get("ste_sign")
    return {v: {**peaks[v], "ratio_to_ste": peaks[v]["peak_rss_mb"] / base["peak_rss_mb"] if base else None}
            for v in variants}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=["vggsmall", "resnet18"], choices=["vggsmall", "resnet18", "resnet34"])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--precision", nargs="+", choices=PRECISIONS, default=["float32", "mixed_bfloat16"],
                        help="Keras mixed-precision policies to compare (side by side, one process)")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=["graph"],
                        help="graph: tf.function; xla: model.compile(jit_compile=True)")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--no-memory", dest="memory", action="store_false", help="skip the peak-memory subprocesses")
    parser.add_argument("--out", type=Path, default=RESULTS / "overhead.json")
    parser.add_argument("--memory-child", nargs=2, metavar=("MODEL", "VARIANT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        peak_memory_child(*args.memory_child, args.batch_size, args.precision[0])
        return

    import hbnn_larq  # noqa: F401  (legacy Keras set-up before TensorFlow loads)
    from hbnn_larq.training.provenance import machine

    report = {"batch_size": args.batch_size, "rounds": args.rounds, "steps_per_round": args.steps,
              "machine": machine(), "models": {}}
    for name in args.models:
        report["models"][name] = {
            "time": measure_time(name, args.batch_size, args.rounds, args.steps, args.precision, args.modes,
                                 args.variants),
            "memory": {p: measure_memory(name, args.batch_size, p, args.variants) for p in args.precision}
            if args.memory else {}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"machine: {report['machine']['cpu_model']}, {report['machine']['cores']} cores "
          f"(bf16 CPU flags: {' '.join(report['machine']['bf16_cpu_flags']) or 'none'}); batch {args.batch_size}")
    print("s/step and x STE: median of the rounds; min x STE: ratio of the fastest rounds; vs fp32: the same "
          "variant's median speed-up over float32 graph mode")
    print(f"{'model':10s} {'precision':20s} {'variant':10s} {'s/step':>8s} {'img/s':>7s} {'x STE':>6s} "
          f"{'min x STE':>9s} {'vs fp32':>7s} {'peak MB':>8s}")
    for name, parts in report["models"].items():
        for precision, by_variant in parts["time"].items():
            for v, t in by_variant.items():
                m = parts["memory"].get(precision, {}).get(v, {})
                ratio = f"{t['ratio_to_ste']:6.2f}" if t["ratio_to_ste"] is not None else f"{'-':>6s}"
                ratio += f" {t['min_ratio_to_ste']:9.2f}" if t["min_ratio_to_ste"] is not None else f" {'-':>9s}"
                speedup = f"{t['speedup_over_float32']:6.2f}x" if "speedup_over_float32" in t else f"{'-':>7s}"
                peak = f"{m['peak_rss_mb']:8.0f}" if m else f"{'-':>8s}"
                print(f"{name:10s} {precision:20s} {v:10s} {t['seconds_per_step']:8.3f} "
                      f"{args.batch_size / t['seconds_per_step']:7.1f} {ratio} {speedup} {peak}")


if __name__ == "__main__":
    main()
