"""Which test images a confirmation run gets right: recorded once, stored for good (issue #27).

A run directory (`model.keras`) does not outlive its machine; the bits of which test images each
confirmation run classifies correctly do, in `benchmarks/results/paired-<protocol>.json`. The
confirm stage of `selection.py` records them right after each run; `paired_images.py` analyses
them (and can record them itself from surviving run directories).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np

import accuracy
from bench_common import RESULTS

# A reloaded bfloat16 model flips a few test images against the run's own evaluation (other batch
# sizes, other rounding): 7 of 10,000 on quick-val. Beyond half a point it is not the same model or data.
REPRODUCED = 0.005


def path(protocol: str) -> Path:
    return RESULTS / f"paired-{protocol}.json"


def load(protocol: str) -> dict:
    """The stored bits of `protocol` (`{"protocol", "runs": {run id: ...}}`; empty when none are)."""
    file = path(protocol)
    return json.loads(file.read_text()) if file.exists() else {"protocol": protocol, "runs": {}}


def save(protocol: str, paired: dict) -> None:
    path(protocol).write_text(json.dumps(paired, indent=1))


def pack(correct: np.ndarray) -> str:
    return base64.b64encode(np.packbits(correct.astype(bool)).tobytes()).decode()


def unpack(text: str, count: int) -> np.ndarray:
    return np.unpackbits(np.frombuffer(base64.b64decode(text), dtype=np.uint8))[:count].astype(bool)


def correct_images(run_dir: Path, dataset) -> np.ndarray:
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


def record(protocol: str, wanted: list[str], runs: Path) -> dict:
    """Measure each run of `wanted` (run ids of `protocol`) whose directory under `runs` still holds
    its model and whose bits are not stored yet; store them as they come.

    # Raises
    SystemExit: a reloaded model whose accuracy is not the one its run recorded (stored: nothing of it).
    """
    from hbnn_larq.training.data import load_dataset

    store = accuracy.load(protocol)
    paired = load(protocol)
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
        correct = correct_images(runs / key, dataset)
        stored = store["runs"][key]["final_test_accuracy"]
        if abs(correct.mean() - stored) > REPRODUCED:
            raise SystemExit(f"{key}: the reloaded model scores {100 * correct.mean():.2f} % on the test split, the run "
                             f"recorded {100 * stored:.2f} %: not the run the table reports (or not its data)")
        paired["runs"][key] = {"count": int(correct.size), "correct": pack(correct),
                               "accuracy": float(correct.mean()), "stored_test_accuracy": stored}
        print(f"{key}: {100 * correct.mean():.2f} % (the run recorded {100 * stored:.2f} %)")
        save(protocol, paired)
    return paired
