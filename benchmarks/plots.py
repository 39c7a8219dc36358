"""Plots of the accuracy benchmark: test accuracy per epoch (paper Fig. 4) and per-layer flip
rates since initialisation, HBNN vs the STE baseline (paper Fig. 3).

```bash
pip install -e ".[plot]"
python benchmarks/plots.py --protocol quick
```
Reads `benchmarks/results/accuracy-<protocol>.json`, writes PNGs next to it.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from accuracy import baseline_row, mean_accuracy, runs_by_row  # noqa: E402
from bench_common import RESULTS  # noqa: E402


# Panels of the accuracy plot, so that each compares a handful of curves; the tuned baseline
# (`accuracy.baseline_row`) appears in each as the reference. Rows that fit no panel (e.g. the
# radius protocol) share one.
PANELS = (
    ("step sizes: latent LR (STE) and points' multiplier (HBNN)",
     lambda row: re.fullmatch(r"ste(-wlr\d+)?|hbnn-m\d+(-wlr\d+)?", row) is not None),
    ("HBNN variants (tuned steps)", lambda row: row == "hbnn-m100-wlr10" or row.startswith(("hbnn-boundary", "hbnn-channel", "epc"))),
    ("plug-ins", lambda row: row.startswith(("ir_net", "recu"))),
    ("weight decay off (-wd0) vs on", lambda row: row.endswith("-wd0") or row == "hbnn-m100-wlr10"),
)


def panels(names, baseline: str) -> list[tuple[str, list[str]]]:
    grouped = [(title, [n for n in names if keep(n)]) for title, keep in PANELS]
    grouped = [(title, sorted(set(chosen) | ({baseline} & set(names)))) for title, chosen in grouped if chosen]
    # A panel holding only rows an earlier panel shows (e.g. the reference HBNN row, before its
    # variants are run) would repeat that panel.
    grouped = [(title, chosen) for i, (title, chosen) in enumerate(grouped)
               if not any(set(chosen) <= set(earlier) for _, earlier in grouped[:i])]
    placed = {n for _, chosen in grouped for n in chosen}
    leftover = [n for n in names if n not in placed]
    return grouped + ([("other rows", leftover)] if leftover else [])


def plot_accuracy(rows: dict, path: Path, title: str, baseline: str) -> None:
    names = sorted(rows)
    colours = dict(zip(names, plt.cm.tab20(np.linspace(0, 1, max(len(names), 2)))))
    groups = panels(names, baseline)
    fig, axes = plt.subplots(1, len(groups), figsize=(6 * len(groups), 4.5), squeeze=False, sharey=True)
    for ax, (panel, chosen) in zip(axes[0], groups):
        for row in chosen:
            entries = rows[row]
            curves = np.array([e["test_accuracy_per_epoch"] for e in entries]) * 100
            epochs = np.arange(1, curves.shape[1] + 1)
            # The tuned baseline is the reference of every panel: black and thicker, whatever its colour slot.
            style = dict(color="black", lw=2.5) if row == baseline else dict(color=colours[row])
            label = f"{row} (n={len(entries)}){', tuned baseline' if row == baseline else ''}"
            ax.plot(epochs, curves.mean(0), marker="o", ms=3, label=label, **style)
            if len(entries) > 1:
                ax.fill_between(epochs, curves.min(0), curves.max(0), color=style["color"], alpha=0.15)
        ax.set(xlabel="epoch", title=panel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("test accuracy (%), mean; band: min-max over seeds")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


FLIP_ROWS = ["ste", "ste-wlr3", "ste-wlr10", "hbnn-m100", "hbnn-m100-wlr10"]


def flip_rows(rows: dict, baseline: str) -> list[str]:
    """The rows of the flip-rate figure: the measured `FLIP_ROWS`, the tuned baseline and the
    most accurate HBNN row (which differ per protocol: Imagenette's baseline is not quick's)."""
    hbnn = [r for r in rows if r.startswith("hbnn")]
    extra = [baseline] + ([max(hbnn, key=lambda r: mean_accuracy(rows[r]))] if hbnn else [])
    return list(dict.fromkeys(r for r in FLIP_ROWS + extra if r in rows))


def plot_flips(rows: dict, path: Path, names: list[str]) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    chosen = [n for n in names if n in rows]
    width = 0.8 / max(len(chosen), 1)
    for i, row in enumerate(chosen):
        flips = rows[row][0]["flips"]
        layers = sorted(k for k in flips if k.startswith("flips_total/") and not k.endswith("/mean"))
        values = [100 * flips[k][-1] for k in layers]
        ax.bar(np.arange(len(layers)) + i * width, values, width, label=row)
        # ResNet-18's 16 layer names only fit side by side when turned.
        crowded = dict(rotation=60, ha="right", fontsize=7) if len(layers) > 6 else {}
        ax.set_xticks(np.arange(len(layers)) + 0.4 - width / 2, [k.split("/", 1)[1] for k in layers], **crowded)
    ax.set(ylabel="binary weights flipped since init (%)", title="Per-layer flip rate at the end of training")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def radius_of(row: str) -> tuple[str, float] | None:
    """`("ball", 0.05)` for the radius protocol's row `ball-r0.05-wlr10`, `("ball, points x10", 5.0)`
    for a row that sets its own points' step (`ball-r5.0-m10-wlr10`), else None."""
    match = re.fullmatch(r"(ball|boundary)-r([0-9.]+)(?:-m([0-9.]+))?-wlr[0-9]+", row)
    if not match:
        return None
    return (match[1] + (f", points x{match[3]}" if match[3] else ""), float(match[2]))


def plot_radius(rows: dict, path: Path, reference: tuple[str, list] | None) -> None:
    """Final test accuracy against the curvature r (ball radius 1/sqrt(r)), ball vs boundary: the
    paper's Table 1 as a figure. `reference` is a (name, runs) row drawn as a horizontal line: the
    tuned sign/STE baseline of the quick protocol, which the radius protocol's runs share."""
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    parsed = {row: radius_of(row) for row in rows if radius_of(row)}
    for kind, marker in zip(sorted({kind for kind, _ in parsed.values()}), "os^vD<>"):
        points = sorted((r, [100 * e["final_test_accuracy"] for e in rows[row]])
                        for row, (row_kind, r) in parsed.items() if row_kind == kind)
        r = np.array([p[0] for p in points])
        acc = [np.array(p[1]) for p in points]
        mean = np.array([a.mean() for a in acc])
        spread = np.array([[m - a.min(), a.max() - m] for m, a in zip(mean, acc)]).T
        ax.errorbar(r, mean, yerr=spread, marker=marker, capsize=3, label=f"{kind} (n per r: {', '.join(str(len(a)) for a in acc)})")
    if reference:
        name, entries = reference
        ax.axhline(100 * mean_accuracy(entries), color="black", ls="--", lw=1.5,
                   label=f"quick/{name} (n={len(entries)}), tuned sign/STE")
    ax.set(xscale="log", xlabel="r (ball radius 1/sqrt(r))", ylabel="final test accuracy (%)",
           title="Radius ablation (quick protocol, one seed unless stated)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def quick_reference() -> tuple[str, list] | None:
    path = RESULTS / "accuracy-quick.json"
    if not path.exists():
        return None
    rows = runs_by_row(json.loads(path.read_text()))
    name = baseline_row("quick", rows)
    return (name, rows[name]) if name in rows else None


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--protocol", default="quick")
    parser.add_argument("--flip-rows", nargs="*", default=None,
                        help="rows of the flip-rate figure (default: see `flip_rows`)")
    args = parser.parse_args(argv)
    store = json.loads((RESULTS / f"accuracy-{args.protocol}.json").read_text())
    rows = runs_by_row(store)
    baseline = baseline_row(args.protocol, rows)
    plot_accuracy(rows, RESULTS / f"accuracy-{args.protocol}.png", f"Test accuracy per epoch ({args.protocol} protocol)",
                  baseline)
    if args.protocol == "radius":
        # Every radius row is an HBNN variant: the figure that matters is accuracy against r.
        second = RESULTS / "radius.png"
        plot_radius(rows, second, quick_reference())
    else:
        second = RESULTS / f"flips-{args.protocol}.png"
        plot_flips(rows, second, args.flip_rows or flip_rows(rows, baseline))
    print(f"wrote {RESULTS / f'accuracy-{args.protocol}.png'} and {second}")


if __name__ == "__main__":
    main()
