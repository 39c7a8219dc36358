"""What EPC's chart selection does during training: how often the active chart switches, and how
many binary weights a switch flips.

Reads the `history.csv` of finished or running EPC runs (`cluster_size > 1`): `chart/<layer>` is
the active chart after each epoch, `flips/<layer>` the fraction of the layer's binary weights that
changed sign during the epoch. Selection runs at the start of an epoch, after the flip monitor has
taken its snapshot, so the flips of a switch are counted in the epoch it starts. Per run:

- `switches`: fraction of (layer, epoch) pairs after the first epoch whose chart changed;
- `flips sw` / `flips stay`: mean per-epoch flip rate of the layer-epochs with / without a switch;
- `t=1 sw` / `t=1 stay`: the same layer-epochs of the one-point partner run (`hbnn-<rest>` for
  `epc4-<criterion>[-reexpress]-<rest>`, same seed and protocol), when it exists: what the layer
  would have flipped anyway;
- `at switch` (runs with a `charts.json`, written since 2026-11-24): the mean fraction of a
  layer's binary weights that the switches themselves flipped, as `ChartSelection` measured them;
- `keep` / `reexpress` (runs with a `model.keras`): in the trained model, the fraction of a layer's
  binary weights that a switch from the active chart to each other chart would flip with
  `on_switch="keep"` and with `"reexpress"` (mean over layers and target charts), through the
  library's own `HyperbolicSign.set_active`, the call `ChartSelection` makes.

```bash
python benchmarks/epc_stats.py benchmarks/runs/imagenette/epc4-loss-m100-wlr10-s0 benchmarks/runs/quick/epc4-*-s1
```

Adds one entry per run (keyed by its path) to `benchmarks/results/epc-switches.json` and prints a
table.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import statistics
import sys
from pathlib import Path

from bench_common import RESULTS, ROOT

OUT = RESULTS / "epc-switches.json"


def read_history(run_dir: Path) -> list[dict]:
    with open(run_dir / "history.csv", newline="") as f:
        return list(csv.DictReader(f))


def partner_dir(run_dir: Path) -> Path:
    """The one-point run at the same steps and seed: `epc4-loss-reexpress-m100-wlr10-s0` -> `hbnn-m100-wlr10-s0`."""
    return run_dir.with_name(re.sub(r"^epc\d+-[a-z]+(-reexpress)?-", "hbnn-", run_dir.name))


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None  # None, not NaN: the JSON stays standard


def switch_stats(history: list[dict], partner: list[dict] | None = None) -> dict:
    """Switch rate and flip rates of the layer-epochs with and without a chart switch."""
    layers = [column[len("chart/"):] for column in history[0] if column.startswith("chart/")]
    if not layers:
        raise ValueError("no chart/<layer> columns: not an EPC run (cluster_size > 1)")
    epochs = min(len(history), len(partner)) if partner else len(history)
    flips = {True: [], False: []}
    partner_flips = {True: [], False: []}
    for epoch in range(1, epochs):
        for layer in layers:
            switched = history[epoch][f"chart/{layer}"] != history[epoch - 1][f"chart/{layer}"]
            flips[switched].append(float(history[epoch][f"flips/{layer}"]))
            if partner:
                partner_flips[switched].append(float(partner[epoch][f"flips/{layer}"]))
    pairs = len(flips[True]) + len(flips[False])
    return {
        "layers": len(layers), "epochs": epochs,
        "switch_fraction": len(flips[True]) / pairs if pairs else None,
        "flips_switch": _mean(flips[True]), "flips_stay": _mean(flips[False]),
        "partner_flips_switch": _mean(partner_flips[True]) if partner else None,
        "partner_flips_stay": _mean(partner_flips[False]) if partner else None,
        "final_charts": [int(float(history[-1][f"chart/{layer}"])) for layer in layers],
    }


def switch_cost(model) -> dict:
    """Mean fraction of a layer's binary weights that switching away from its active chart flips,
    per `on_switch` mode; the model is left as it was."""
    from hbnn_larq.quantizers import ON_SWITCH, hyperbolic_kernels

    flips = {mode: [] for mode in ON_SWITCH}
    for kernel in hyperbolic_kernels(model):  # kernel, depthwise and pointwise alike
        quantizer = kernel.quantizer
        if quantizer.cluster_size < 2:
            continue
        active, latent, mode = int(quantizer.active_index.numpy()), kernel.variable.numpy(), quantizer.on_switch
        before = kernel.quantized() >= 0
        for target in set(range(quantizer.cluster_size)) - {active}:
            for switch_mode in ON_SWITCH:
                quantizer.on_switch = switch_mode
                quantizer.set_active(target, kernel.variable)
                flips[switch_mode].append(float(((kernel.quantized() >= 0) != before).mean()))
                kernel.variable.assign(latent)
                quantizer.active_index.assign(active)
        quantizer.on_switch = mode
    return {f"switch_flips_{mode}": _mean(values) for mode, values in flips.items()}


def measured_switch_flips(rounds: list[dict]) -> float:
    """Mean share of signs flipped by the switches recorded in a `charts.json`."""
    return _mean([info["flipped"] for record in rounds for info in record["layers"].values() if info["switched"]])


def run_stats(run_dir: Path) -> dict:
    partner = partner_dir(run_dir)
    has_partner = (partner / "history.csv").is_file()
    stats = switch_stats(read_history(run_dir), read_history(partner) if has_partner else None)
    stats["partner"] = os.path.relpath(partner.resolve(), ROOT) if has_partner else None
    if (run_dir / "charts.json").is_file():
        stats["flips_at_switch"] = measured_switch_flips(json.loads((run_dir / "charts.json").read_text()))
    if (run_dir / "model.keras").is_file():
        import hbnn_larq  # noqa: F401  (legacy Keras and the custom objects, before loading)
        import tensorflow as tf

        stats.update(switch_cost(tf.keras.models.load_model(run_dir / "model.keras")))
    return stats


def print_table(results: dict) -> None:
    name_width = max(12, *(len(name) for name in results))
    header = (f"{'run':{name_width}s} {'layers':>6s} {'epochs':>6s} {'switches':>8s} {'flips sw':>8s} "
              f"{'flips stay':>10s} {'t=1 sw':>7s} {'t=1 stay':>8s} {'at switch':>9s} {'keep':>6s} {'reexpress':>9s}")
    print(header)
    print("-" * len(header))
    percent = lambda x: "-" if x is None else f"{100 * x:.1f}%"  # noqa: E731
    for name, row in results.items():
        print(f"{name:{name_width}s} {row['layers']:6d} {row['epochs']:6d} {percent(row['switch_fraction']):>8s} "
              f"{percent(row['flips_switch']):>8s} {percent(row['flips_stay']):>10s} "
              f"{percent(row['partner_flips_switch']):>7s} {percent(row['partner_flips_stay']):>8s} {percent(row.get('flips_at_switch')):>9s} "
              f"{percent(row.get('switch_flips_keep')):>6s} {percent(row.get('switch_flips_reexpress')):>9s}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="EPC run directories written by train.py")
    args = parser.parse_args(argv)
    for run_dir in args.runs:
        if not (run_dir / "history.csv").is_file():
            parser.error(f"{run_dir} has no history.csv (is it a train.py run directory with at least one epoch?)")
    results = {}
    for run_dir in args.runs:
        try:
            results[os.path.relpath(run_dir.resolve(), ROOT)] = run_stats(run_dir)
        except ValueError as error:
            parser.error(f"{run_dir}: {error}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    kept = json.loads(OUT.read_text()) if OUT.is_file() else {}
    OUT.write_text(json.dumps({**kept, **results}, indent=1) + "\n")
    print_table(results)


if __name__ == "__main__":
    sys.exit(main())
