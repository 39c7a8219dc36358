"""Where do an HBNN layer's binary weights come from? Per-layer geometry of trained runs.

For every `HyperbolicSign` layer of a trained run (its `model.keras`), in float64 NumPy,
independently of the library's TensorFlow code:

- `n`: weights in the layer (one point of the ball per layer with the default grouping);
- `rms w~`: root-mean-square latent weight, \\(\\|\\tilde w\\|/\\sqrt n\\);
- `tanh arg`: \\(a = \\sqrt r\\,\\lambda_p\\|\\tilde w\\|/2\\); the radial derivative of the map
  is \\(\\operatorname{sech}^2 a\\), so \\(a \\gtrsim 2\\) means the map is saturated;
- `|p|/R`, `|w|/R`: the point's and the mapped weight's distance from the origin as a fraction
  of the radius \\(R = 1/\\sqrt r\\);
- `1/std(w_o)`: mean over output filters of 1 / the std of the mapped filter: the factor by which
  per-filter standardisation (IR-Net, ReCU) scales the gradient reaching w (and the point);
- `=sign(w~)`: fraction of binary weights (after the base binarizer, for IR-Net/ReCU + HBNN) equal to \\(\\operatorname{sign}(\\tilde w)\\) (what a plain
  STE BNN with the same latent weights would use); `=sign(p)`: fraction equal to the sign of the
  point. Together they say whether the point or the latent weight decides the binary kernel.

```bash
python benchmarks/geometry_stats.py benchmarks/runs/quick/hbnn-m100-s0 benchmarks/runs/quick/hbnn-m1-s0
python benchmarks/geometry_stats.py --init vggsmall 0.25 --init vggsmall 1.0   # at initialisation
python benchmarks/geometry_stats.py --summary ball-r0.01-wlr10-s0 ball-r5.0-wlr10-s0  # ranges over layers
```

Writes `benchmarks/results/geometry-<run>.json` per run (or `geometry-init-<model>-w<width>.json`)
and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
from bench_common import RESULTS, ROOT, binary_sign


def exp_map(v: np.ndarray, p: np.ndarray, r: float, boundary: bool) -> tuple[np.ndarray, float]:
    """\\(\\exp_p(v)\\) (or its boundary variant) of flat vectors, computed by the library's
    `PoincareBall` in float64, and its tanh argument \\(a = \\sqrt r\\,\\lambda_p\\|v\\|/2\\)."""
    from hbnn_larq.geometry import PoincareBall

    ball = PoincareBall(r)
    v, p = np.asarray(v, np.float64), np.asarray(p, np.float64)
    arg = np.sqrt(r) * (2.0 / (1.0 - r * np.dot(p, p))) * np.linalg.norm(v) / 2.0
    mapped = ball.boundary_map(p, v) if boundary else ball.expmap(p, v)
    return np.asarray(mapped), float(arg)


def layer_stats(v: np.ndarray, p: np.ndarray, w: np.ndarray, arg: float, r: float, filters: int,
                binary: np.ndarray) -> dict:
    """Statistics of one layer: flat latent `v`, point `p`, mapped weight `w` with tanh argument
    `arg`, `filters` output channels, and `binary`, the kernel as the network uses it."""
    sqrt_r = np.sqrt(r)
    binary = binary_sign(binary.ravel())
    moved = p != 0
    return {
        "n": int(v.size),
        "rms_latent": float(np.linalg.norm(v) / np.sqrt(v.size)),
        "tanh_arg": arg,
        "point_radius_fraction": float(sqrt_r * np.linalg.norm(p)),
        "weight_radius_fraction": float(sqrt_r * np.linalg.norm(w)),
        # What standardising each output filter (IR-Net, ReCU) multiplies the gradient by.
        "standardisation_gain": float(np.mean(1.0 / w.reshape(-1, filters).std(axis=0, ddof=1))),
        "agree_latent_sign": float(np.mean(binary == binary_sign(v))),
        "agree_point_sign": float(np.mean(binary[moved] == np.sign(p[moved]))) if moved.any() else None,
    }


def run_model(run_dir: Path):
    import hbnn_larq  # noqa: F401  (legacy Keras and the custom objects, before loading)
    import tensorflow as tf

    return tf.keras.models.load_model(run_dir / "model.keras")


def initial_model(model_name: str, width: float):
    """A freshly initialised zoo model (HBNN defaults), its quantizers built by one call."""
    from hbnn_larq import zoo

    model = zoo.get_model(model_name, width=width, input_shape=(32, 32, 3))
    model(np.zeros((1, 32, 32, 3), np.float32), training=False)
    return model


def model_stats(model, source: str) -> list[dict]:
    import hbnn_larq

    rows = []
    for kernel in hbnn_larq.quantizers.hyperbolic_kernels(model):  # kernel, depthwise and pointwise alike
        quantizer, latent, name = kernel.quantizer, kernel.variable, kernel.name
        if quantizer.grouping != "layer":
            raise SystemExit(f"{source}: layer {name} uses grouping={quantizer.grouping!r}; "
                             "this script analyses the default layer-flat grouping only.")
        v = latent.numpy().astype(np.float64).ravel()
        p = quantizer.active_point.numpy().astype(np.float64).ravel()
        w, arg = exp_map(v, p, quantizer.r, quantizer.boundary)
        # The float64 map must reproduce the signs of the library's float32 mapped weight (up to
        # coordinates within rounding of 0), or the table would describe some other kernel.
        library = quantizer.project(latent, quantizer.active_point).numpy().ravel() >= 0
        mismatch = float(np.mean((w >= 0) != library))
        if mismatch > 1e-4:
            raise SystemExit(f"{source}: layer {name}: float64 reference and library disagree on the "
                             f"sign of {100 * mismatch:.3f} % of the mapped weights")
        # What the network uses: sign(w), or the base binarizer's output (IR-Net, ReCU) of w.
        binary = quantizer(latent).numpy()
        stats = layer_stats(v, p, w, arg, quantizer.r, latent.shape[-1], binary)
        rows.append({"layer": name, **stats,
                     "base": None if quantizer.base is None else type(quantizer.base).__name__,
                     "reference_mismatch": mismatch})
    return rows


def print_table(run: str, rows: list[dict]) -> None:
    print(f"\n{run}")
    width = max(8, *(len(row["layer"]) for row in rows))
    header = (f"{'layer':{width}s} {'n':>8s} {'rms w~':>8s} {'tanh arg':>8s} {'|p|/R':>7s} {'|w|/R':>7s} "
              f"{'1/std(w_o)':>10s} {'=sign(w~)':>9s} {'=sign(p)':>9s}")
    print(header)
    print("-" * len(header))
    for row in rows:
        point = "-" if row["agree_point_sign"] is None else f"{100 * row['agree_point_sign']:8.1f}%"
        print(f"{row['layer']:{width}s} {row['n']:8d} {row['rms_latent']:8.4f} {row['tanh_arg']:8.2f} "
              f"{row['point_radius_fraction']:7.3f} {row['weight_radius_fraction']:7.3f} "
              f"{row['standardisation_gain']:10.1f} "
              f"{100 * row['agree_latent_sign']:8.1f}% {point:>9s}")


def report(name: str, source: str, rows: list[dict]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"geometry-{name}.json"
    out.write_text(json.dumps({"source": source, "layers": rows}, indent=1) + "\n")
    print_table(name, rows)


SUMMARY_COLUMNS = {"|p|/R": "point_radius_fraction", "tanh arg": "tanh_arg",
                   "=sign(w~)": "agree_latent_sign", "=sign(p)": "agree_point_sign"}


def layer_range(rows: list[dict], key: str) -> str:
    """`lo-hi` of one statistic over a run's layers (fractions in %), e.g. `66-73`."""
    values = [row[key] for row in rows if row[key] is not None]
    if not values:
        return "-"
    if key == "tanh_arg":
        return f"{min(values):.2f}-{max(values):.2f}"
    return f"{round(100 * min(values))}-{round(100 * max(values))}"


def print_summary(names: list[str]) -> None:
    """One line per already-measured run (`geometry-<name>.json`): each statistic's range over layers."""
    width = max(4, *(len(name) for name in names))
    header = f"{'run':{width}s} " + " ".join(f"{column:>11s}" for column in SUMMARY_COLUMNS)
    print(header)
    print("-" * len(header))
    for name in names:
        path = RESULTS / f"geometry-{name}.json"
        if not path.is_file():
            raise SystemExit(f"--summary: {path} does not exist; run geometry_stats.py on the run directory first")
        rows = json.loads(path.read_text())["layers"]
        print(f"{name:{width}s} " + " ".join(f"{layer_range(rows, key):>11s}" for key in SUMMARY_COLUMNS.values()))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*", type=Path, help="run directories written by train.py (with model.keras)")
    parser.add_argument("--init", nargs=2, action="append", default=[], metavar=("MODEL", "WIDTH"),
                        help="also report a freshly initialised zoo model, e.g. --init vggsmall 1.0")
    parser.add_argument("--summary", nargs="+", default=[], metavar="NAME",
                        help="print, for runs already measured (geometry-NAME.json), each statistic's range "
                             "over layers, one line per run")
    args = parser.parse_args(argv)
    if args.summary:
        return print_summary(args.summary)
    for run_dir in args.runs:
        if not (run_dir / "model.keras").is_file():
            parser.error(f"{run_dir} has no model.keras (is it a finished train.py run directory?)")
    for model_name, width in args.init:
        source = f"init {model_name} width {float(width)}"
        report(f"init-{model_name}-w{float(width)}", source, model_stats(initial_model(model_name, float(width)), source))
    for run_dir in args.runs:
        source = os.path.relpath(run_dir.resolve(), ROOT)
        report(run_dir.name, source, model_stats(run_model(run_dir), source))


if __name__ == "__main__":
    sys.exit(main())
