"""Paired, per test image: how sure is a confirmation-table difference? (issue #27)

The confirmation table (`benchmarks/selection.py`) pairs each contender with the reference
baseline by seed: mean ± std of three differences. That spread is the seeds' alone; every seed is
tested on the same 10,000 images, whose sampling is a second source of noise. This script reloads
each confirmation run's trained model (`model.keras` in its run directory), records which test
images it gets right, and stores those bits in `benchmarks/results/paired-<protocol>.json` so the
analysis can be redone without the run directories. Per contender against the reference it prints:

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
import base64
import json
import math
from pathlib import Path

import numpy as np

import accuracy
import selection
from bench_common import RESULTS, RUNS

BOOTSTRAP_SAMPLES = 2000
# A reloaded bfloat16 model flips a few test images against the run's own evaluation (other batch
# sizes, other rounding): 7 of 10,000 on quick-val. Beyond half a point it is not the same model or data.
REPRODUCED = 0.005


def pack(correct: np.ndarray) -> str:
    return base64.b64encode(np.packbits(correct.astype(bool)).tobytes()).decode()


def unpack(text: str, count: int) -> np.ndarray:
    return np.unpackbits(np.frombuffer(base64.b64decode(text), dtype=np.uint8))[:count].astype(bool)


def test_correctness(run_dir: Path, dataset) -> np.ndarray:
    """Which test images the trained model in `run_dir` classifies correctly, in the test split's order."""
    import hbnn_larq  # noqa: F401  (registers the custom objects before loading)
    import tensorflow as tf

    from hbnn_larq.zoo.common import normalize_inputs

    model = tf.keras.models.load_model(run_dir / "model.keras")
    if "input_normalization" not in {layer.name for layer in model.layers}:
        # a run from before the models normalised their own inputs (commit 2db2a0c): its pipeline did
        inputs = tf.keras.Input(model.input_shape[1:])
        model = tf.keras.Model(inputs, model(normalize_inputs(inputs, (dataset.mean, dataset.std))))
    hits = [np.argmax(model(images, training=False), axis=-1) == labels.numpy().reshape(-1)
            for images, labels in dataset.test]
    return np.concatenate(hits)


def record_runs(protocol: str, runs: Path) -> dict:
    """Measure every confirmation run of `protocol` found under `runs` that the stored bits lack."""
    from hbnn_larq.training.data import load_dataset

    store = accuracy.load(protocol)
    path = RESULTS / f"paired-{protocol}.json"
    paired = json.loads(path.read_text()) if path.exists() else {"protocol": protocol, "runs": {}}
    chosen = selection.chosen_rows(store)
    wanted = [accuracy.run_id(row, seed) for row in chosen.values() for seed in selection.confirm_seeds(protocol)]
    dataset = None
    for key in wanted:
        if key in paired["runs"] or not (runs / key / "model.keras").is_file():
            continue
        if dataset is None:  # the protocol's data, as its runs saw it (the test split is not shuffled)
            flags = accuracy.PROTOCOLS[protocol]
            size = accuracy.flag_value(flags, "--image-size")
            dataset = load_dataset(accuracy.flag_value(flags, "--dataset"), batch_size=256,
                                   image_size=int(size) if size else None,
                                   validation_split=float(accuracy.flag_value(flags, "--validation-split")))
        correct = test_correctness(runs / key, dataset)
        paired["runs"][key] = {"count": int(correct.size), "correct": pack(correct),
                               "accuracy": float(correct.mean()),
                               "stored_test_accuracy": store["runs"][key]["final_test_accuracy"]}
        stored = store["runs"][key]["final_test_accuracy"]
        if abs(correct.mean() - stored) > REPRODUCED:
            raise SystemExit(f"{key}: the reloaded model scores {100 * correct.mean():.2f} % on the test split, the run "
                             f"recorded {100 * stored:.2f} %: not the run the table reports (or not its data)")
        print(f"{key}: {100 * correct.mean():.2f} % (the run recorded {100 * stored:.2f} %)")
        path.write_text(json.dumps(paired, indent=1))
    return paired


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
        return np.stack([unpack(paired["runs"][key]["correct"], paired["runs"][key]["count"]) for key in keys])

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
    path = RESULTS / f"paired-{args.protocol}.json"
    if args.table:
        if not path.exists():
            parser.error(f"no stored bits for {args.protocol} yet ({path}): run without --table first")
        paired = json.loads(path.read_text())
    else:
        paired = record_runs(args.protocol, args.runs or RUNS / args.protocol)
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
        path.write_text(json.dumps(paired, indent=1))


if __name__ == "__main__":
    main()
