"""Train, measure and publish the zoo's shipped CIFAR-10 weights (`weights="cifar10"`).

For each model the script runs one plain `python train.py ...` command (full width, HBNN
defaults: `--quantizer hbnn`, points' step x100, latent-weight LR x10 (the best-measured HBNN
setting of the quick protocol), SGD 0.9, lr 0.1 cosine, batch 256, wd 5e-4),
which resumes from its last completed epoch when it is run again on the same machine (checkpoints live in
`benchmarks/runs/`, which a fresh checkout does not have). Once the run is complete the script reloads the bit-packed `weights.npz` into a
fresh zoo model, measures its test accuracy on the whole CIFAR-10 test set and on a fixed seeded
slice of 1000 test images (what `tests/test_zoo_pretrained.py` re-checks), registers the file
as `weights="cifar10"` with that provenance, and writes `benchmarks/results/zoo-weights.json`.

```bash
python benchmarks/zoo_weights.py --models vggsmall resnet18      # train (or resume), then publish
python benchmarks/zoo_weights.py --table                         # print what is published
```

The number of epochs is fixed per model (the cosine schedule needs it up front): change
`EPOCHS` only together with a fresh run directory.
"""

from __future__ import annotations

import argparse
import json
import sys

import bench_common
from bench_common import ROOT, printable_command, run_train

RESULTS = bench_common.RESULTS / "zoo-weights.json"
RUNS = bench_common.RUNS / "zoo"
NAME = "cifar10"
# Checkpoints do not outlive a sitting's machine, so a run must finish within one sitting (< 3 h).
# A full-width ResNet-18 CIFAR-10 epoch took 46 min of training (evaluation not timed) on
# the 2 cores (2026-11-23), so 3 epochs (~2.3 h of training) is what fits.
EPOCHS = {"vggsmall": 10, "resnet18": 3}
# The test-set slice the shipped entry records and the test suite re-measures.
SLICE = {"dataset": "cifar10", "max_test_examples": 1000, "seed": 0}


def command(model: str) -> list[str]:
    return [sys.executable, str(ROOT / "train.py"), "--model", model, "--dataset", "cifar10",
            "--epochs", str(EPOCHS[model]), "--warmup-epochs", "1", "--quantizer", "hbnn",
            "--latent-lr-multiplier", "10", "--seed", "0",
            "--run-dir", str(RUNS / f"{model}-{NAME}"), "--verbose", "2"]


def train(model: str) -> dict | None:
    cmd = command(model)
    print("run:", printable_command(cmd), flush=True)
    code, results = run_train(cmd, RUNS / f"{model}-{NAME}", RUNS / f"{model}-{NAME}.log")
    if results is None:
        print(f"{model}: training not finished (exit {code}); run the script again to resume")
    return results


def load_on_cifar10(model_name: str, weights, *, batch_size: int = 250, **dataset_kwargs):
    """The zoo model loaded from the weights file `weights` (at the width it was saved with) and the
    CIFAR-10 dataset it is measured on (`dataset_kwargs` select the test examples).

    # Returns
    `(model, dataset)`.
    """
    from hbnn_larq import zoo
    from hbnn_larq.training import data

    dataset = data.load_dataset("cifar10", batch_size=batch_size, max_train_examples=batch_size, download=False,
                                **dataset_kwargs)
    model = zoo.get_model(model_name, weights=weights, input_shape=dataset.input_shape,
                          num_classes=dataset.num_classes, width=zoo.pretrained.read_metadata(weights)["width"])
    return model, dataset


def accuracy(model_name: str, weights, **dataset_kwargs) -> float:
    """Top-1 accuracy of the zoo model loaded from the weights file `weights` on the CIFAR-10 test split."""
    model, dataset = load_on_cifar10(model_name, weights, **dataset_kwargs)
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return float(model.evaluate(dataset.test, verbose=0)[1])


def publish(model: str, results: dict) -> dict:
    from hbnn_larq import zoo

    weights = RUNS / f"{model}-{NAME}" / "weights.npz"
    slice_args = {k: v for k, v in SLICE.items() if k != "dataset"}
    provenance = {
        "command": printable_command(command(model)),
        "epochs": len(results["epochs"]),
        "train_time_h": round(results["train_time_s"] / 3600, 2),
        "test_accuracy_at_end_of_training": results["final"]["test_accuracy"],
        "test_accuracy_per_epoch": [e["test_accuracy"] for e in results["epochs"]],
        "test_accuracy": accuracy(model, weights),
        "slice": {**SLICE, "accuracy": accuracy(model, weights, **slice_args)},
        "machine": results.get("machine"),
        "versions": results.get("versions"),
    }
    description = (f"CIFAR-10, HBNN defaults, {provenance['epochs']} epochs on 2 CPU cores, "
                   f"top-1 {100 * provenance['test_accuracy']:.2f} %")
    entry = zoo.register_weights(NAME, weights, description=description, provenance=provenance)
    return {"model": model, "name": NAME, **entry}


def load_store() -> dict:
    return json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}


def print_table(store: dict) -> None:
    from hbnn_larq import zoo

    header = f"{'model':10s} {'weights':8s} {'epochs':>6s} {'train h':>7s} {'test top-1 %':>12s} {'slice %':>8s} {'MB':>6s}"
    print(header)
    print("-" * len(header))
    for model, entry in sorted(store.items()):
        p = entry["provenance"]
        size = zoo.registered_path(model, entry["name"]).stat().st_size / 1e6
        print(f"{model:10s} {entry['name']:8s} {p['epochs']:6d} {p['train_time_h']:7.2f} "
              f"{100 * p['test_accuracy']:12.2f} {100 * p['slice']['accuracy']:8.2f} {size:6.2f}")
    for model, entry in sorted(store.items()):
        curve = entry["provenance"].get("test_accuracy_per_epoch")
        if curve:
            print(f"{model}: test top-1 % after each epoch: " + " ".join(f"{100 * a:.1f}" for a in curve))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", choices=sorted(EPOCHS), default=sorted(EPOCHS))
    parser.add_argument("--table", action="store_true", help="only print what is published")
    args = parser.parse_args(argv)
    store = load_store()
    if not args.table:
        for model in args.models:
            results = train(model)
            if results is not None:
                store[model] = publish(model, results)
                RESULTS.parent.mkdir(parents=True, exist_ok=True)
                RESULTS.write_text(json.dumps(store, indent=1) + "\n")
    print_table(store)


if __name__ == "__main__":
    main()
