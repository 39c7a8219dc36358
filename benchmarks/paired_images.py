"""Paired, per test image: how sure is a confirmation-table difference? (issue #27)

The confirmation table (`benchmarks/selection.py`) pairs each contender with the reference
baseline by seed: mean ± std of three differences. That spread is the seeds' alone; every seed is
tested on the same 10,000 images, whose sampling is a second source of noise. The bits of which
test images each confirmation run gets right are stored in `benchmarks/results/paired-<protocol>.json`
(`image_bits.py`: the confirm stage records them after each run; without `--table` this script
records those of surviving run directories), so the analysis needs no run directory. Per contender against the reference it prints:

- the mean paired difference, which must equal the confirmation table's (a check that the reloaded
  models are the runs the table reports);
- a 95 % bootstrap interval resampling test images (the same images for both models and every
  seed), and one resampling seeds and images together;
- McNemar's test on the discordant images pooled over seeds (b: the contender right and the
  reference wrong; c: the opposite), as a two-sided normal approximation.

```bash
python benchmarks/paired_images.py --protocol quick-val                    # reads benchmarks/runs/quick-val/
python benchmarks/paired_images.py --protocol quick-val --runs /path/to/runs/quick-val
python benchmarks/paired_images.py --protocol quick-val --table            # from the stored bits only
```
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

import accuracy
import image_bits
import selection
from bench_common import RUNS

BOOTSTRAP_SAMPLES = 2000


def compare(contender: np.ndarray, reference: np.ndarray, rng: np.random.Generator) -> dict:
    """`contender`, `reference`: (seeds, images) booleans, paired by seed and image."""
    diff = contender.astype(float) - reference.astype(float)  # -1, 0, +1 per seed and image
    seeds, images = diff.shape
    by_image = np.empty(BOOTSTRAP_SAMPLES)
    by_both = np.empty(BOOTSTRAP_SAMPLES)
    for i in range(BOOTSTRAP_SAMPLES):
        pick = rng.integers(0, images, images)
        by_image[i] = diff[:, pick].mean()
        by_both[i] = diff[rng.integers(0, seeds, seeds)][:, pick].mean()
    b = int(np.sum(contender & ~reference))
    c = int(np.sum(~contender & reference))
    z = (b - c) / math.sqrt(b + c) if b + c else 0.0
    return {"mean": 100 * diff.mean(), "per_seed": list(100 * diff.mean(axis=1)),
            "ci_images": list(100 * np.percentile(by_image, [2.5, 97.5])),
            "ci_seeds_and_images": list(100 * np.percentile(by_both, [2.5, 97.5])),
            "discordant": [b, c], "mcnemar_p": math.erfc(abs(z) / math.sqrt(2))}


def analyse(protocol: str, paired: dict) -> list[dict]:
    store = accuracy.load(protocol)
    seeds = selection.confirm_seeds(protocol)
    lines = selection.confirmation_table(store)
    reference = next((line["reference"] for line in lines if line["reference"]), None)

    def bits(row):
        keys = [accuracy.run_id(row, seed) for seed in seeds]
        if not all(key in paired["runs"] for key in keys):
            return None
        return np.stack([image_bits.unpack(paired["runs"][key]["correct"], paired["runs"][key]["count"]) for key in keys])

    base = bits(reference) if reference else None
    results = []
    for line in lines:
        mine = bits(line["row"])
        if line["row"] == reference or mine is None or base is None:
            continue
        result = compare(mine, base, np.random.default_rng(0))
        result.update(row=line["row"], reference=reference, table=line["vs_reference"][0])
        results.append(result)
    return results


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--protocol", choices=[p for p in accuracy.PROTOCOLS if p.endswith("-val")], default="quick-val")
    parser.add_argument("--runs", type=Path, default=None, help="folder of the protocol's run directories "
                        "(default: benchmarks/runs/<protocol>)")
    parser.add_argument("--table", action="store_true", help="only analyse the stored bits")
    args = parser.parse_args(argv)
    path = image_bits.path(args.protocol)
    if args.table:
        if not path.exists():
            parser.error(f"no stored bits for {args.protocol} yet ({path}): run without --table first")
        paired = image_bits.load(args.protocol)
    else:
        store = accuracy.load(args.protocol)
        paired = image_bits.record(args.protocol, selection.confirmation_runs(store), args.runs or RUNS / args.protocol)
    results = analyse(args.protocol, paired)
    print(f"\n{args.protocol}: paired per test image, confirmation seeds {selection.confirm_seeds(args.protocol)}, "
          f"{BOOTSTRAP_SAMPLES} bootstrap samples")
    print(f"{'row':18s} {'vs':12s} {'mean':>6s} {'table':>6s} {'95% CI, images':>17s} {'95% CI, seeds+images':>21s} "
          f"{'b / c':>11s} {'McNemar p':>9s}")
    for r in results:
        print(f"{r['row']:18s} {r['reference']:12s} {r['mean']:+6.2f} {r['table']:+6.2f} "
              f"{r['ci_images'][0]:+7.2f} .. {r['ci_images'][1]:+5.2f} {r['ci_seeds_and_images'][0]:+10.2f} .. "
              f"{r['ci_seeds_and_images'][1]:+5.2f} {r['discordant'][0]:5d}/{r['discordant'][1]:<5d} {r['mcnemar_p']:9.4f}")
    if results:
        paired["analysis"] = results
        image_bits.save(args.protocol, paired)


if __name__ == "__main__":
    main()
