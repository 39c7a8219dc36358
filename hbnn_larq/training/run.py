"""`train()`: one training run of `train.py`, importable so that benchmarks can run it in-process.

```python
from hbnn_larq.training import TrainConfig, train
results = train(TrainConfig(model="vggsmall", dataset="cifar10", width=0.25, epochs=1))
```

**Run directory** (`config.run_dir`, default `hbnn_larq.training.config.default_run_dir`, so that
re-running the same command finds and resumes the same run): `config.json`, `backup/` (the
per-epoch checkpoint: model, optimizer, epoch; removed when training completes), `history.csv`,
`epochs.json`, `logs/` (TensorBoard), `charts.json` (EPC: every chart-selection round, its
scores and the signs each switch flipped), then `model.keras` (reload after `import hbnn_larq`),
`model.tflite` (LCE; checked in the LCE interpreter on test images, see
`hbnn_larq.training.lce_check`), `weights.npz` (`hbnn_larq.zoo.save_pretrained`, 1 bit per
binary weight) and `results.json`. `model.keras` and `model.tflite` take RGB pixel values in
[0, 255] (they normalise their inputs themselves).

**Segments.** With `first_epoch=K` (and `stop_epoch=L`) the run trains epochs K+1..L of the
schedule of `epochs` epochs: the learning rate is offset by K epochs' steps, `fit(initial_epoch=K)`
numbers the epochs (in `epochs.json`, `history.csv`, the logs) from K+1, and the per-epoch
quantizer schedules see the same epoch indices. Momentum starts at zero; the weights are fresh
unless `init_weights` gives the previous segment's `weights.npz` (`warm_start`). Resuming an
interrupted segment in its run directory restores its checkpoint as for any run.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import tensorflow as tf

from hbnn_larq._atomic import write_json
from hbnn_larq.export import convert_keras_model
from hbnn_larq.precision import policy_scope
from hbnn_larq.training import recipes
from hbnn_larq.training.callbacks import run_callbacks
from hbnn_larq.training.config import ConfigError, TrainConfig, changed_settings, default_run_dir
from hbnn_larq.training.data import ImageDataset, load_dataset
from hbnn_larq.training.lce_check import check_converted
from hbnn_larq.training.optimizer import (default_epochs, default_warmup_epochs, default_weight_decay,
                                          learning_rate_schedule, make_optimizer)
from hbnn_larq.training.provenance import machine, versions
from hbnn_larq.training.warm_start import warm_start, weights_path
from hbnn_larq.zoo import get_model, original_recipe, save_pretrained
from hbnn_larq.zoo.weights_file import zoo_metadata


def build_model(config: TrainConfig, dataset: ImageDataset) -> tf.keras.Model:
    """The zoo model of `config` with the kernel quantizer of its recipe (a larq-zoo model whose
    own binarizer is the recipe keeps it: `hbnn_larq.zoo.original_recipe`), taking RGB pixel
    values in [0, 255] (it normalises them with the dataset's statistics)."""
    options = {"cluster_size": config.cluster_size, "selection": config.selection, "on_switch": config.on_switch,
               "grouping": config.grouping}
    if config.radius is not None:
        options["r"] = config.radius
    layout = {} if config.variant is None else {"variant": config.variant}
    kernel_quantizer = lambda: recipes.kernel_quantizer(config.quantizer, **options)  # noqa: E731
    kernel_constraint = recipes.kernel_constraint(config.quantizer)
    if original_recipe(config.model) == config.quantizer:
        # A larq-zoo model trained with its own recipe keeps larq-zoo's binarizer (QuickNet's
        # SteSign(1.25) + WeightClip(1.25) for `ste_sign`).
        kernel_quantizer, kernel_constraint = "original", None
    return get_model(
        config.model, input_shape=dataset.input_shape, num_classes=dataset.num_classes,
        input_normalization=(dataset.mean, dataset.std),
        kernel_quantizer=kernel_quantizer, kernel_constraint=kernel_constraint, width=config.width, **layout)


def make_strategy(name: str) -> tf.distribute.Strategy:
    """`default`: the current strategy; `mirrored`: all GPUs, else all logical CPUs;
    `multiworker`: `MultiWorkerMirroredStrategy` configured by the `TF_CONFIG` environment variable."""
    if name == "mirrored":
        devices = None
        if not tf.config.list_logical_devices("GPU"):
            devices = [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices=devices)
    if name == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise ConfigError("`strategy=multiworker` needs the TF_CONFIG environment variable (cluster and task).")
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run's outputs (always, unless it is a non-chief worker)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    return resolver is None or resolver.task_id in (None, 0) or not resolver.task_type


def standalone_copy(model: tf.keras.Model, weights) -> tf.keras.Model:
    """A copy of `model` outside any distribution strategy holding `weights`, so that saving and
    converting it needs no collective op (non-chief workers may have exited by then)."""
    copy = tf.keras.models.clone_model(model)
    copy.set_weights(weights)
    return copy


def export_artifacts(model: tf.keras.Model, metadata: dict, run_dir: Path, tflite: bool = True) -> dict:
    """Write `model.keras` (no optimizer state: `import hbnn_larq` is all a reader needs),
    `weights.npz` (bit-packed) and, if `tflite`, `model.tflite`; return their paths."""
    model.save(str(run_dir / "model.keras"))
    artifacts = {"model": str(run_dir / "model.keras")}
    artifacts["weights"] = str(save_pretrained(model, run_dir / "weights.npz", metadata=metadata))
    if tflite:
        flatbuffer = convert_keras_model(model)
        (run_dir / "model.tflite").write_bytes(flatbuffer)
        artifacts["tflite"] = str(run_dir / "model.tflite")
        artifacts["tflite_bytes"] = len(flatbuffer)
    return artifacts


def train(config: TrainConfig, *, model_fn=None) -> dict:
    """Train, evaluate and export one run; resume it if its run directory holds a checkpoint.

    # Arguments
    config: a `TrainConfig`.
    model_fn: optional `model_fn(config, dataset) -> tf.keras.Model` replacing the zoo model.

    # Returns
    The contents of `results.json`.

    # Raises
    ConfigError: invalid configuration. `hbnn_larq.training.data.DataError`: dataset problems.
    """
    config.validate()
    start = time.time()
    run_dir = Path(config.run_dir) if config.run_dir else default_run_dir(config)
    results_path = run_dir / "results.json"
    previous = run_dir / "config.json"
    changed = changed_settings(config, json.loads(previous.read_text())["config"]) if previous.is_file() else []
    if changed and not config.overwrite:
        raise ConfigError(f"`run_dir` {run_dir} holds a run with other settings ({'; '.join(changed)}); "
                          "pass another --run-dir, or --overwrite to train this one there from scratch.")
    complete = results_path.is_file() and json.loads(results_path.read_text()).get("status") == "complete"
    if complete and not config.overwrite:
        _say(config, f"Run {run_dir} is already complete (pass --overwrite to train again).")
        return json.loads(results_path.read_text())
    if config.overwrite and (complete or changed):  # from scratch: no resumed checkpoint, no stale curve
        for stale in ("results.json", "epochs.json", "history.csv", "flips_initial.npz"):
            (run_dir / stale).unlink(missing_ok=True)
        shutil.rmtree(run_dir / "backup", ignore_errors=True)
    strategy = make_strategy(config.strategy)
    chief = is_chief(strategy)
    tf.keras.utils.set_random_seed(config.seed)
    dataset = load_dataset(
        config.dataset, data_dir=config.data_dir, batch_size=config.batch_size, image_size=config.image_size,
        max_train_examples=config.max_train_examples, max_test_examples=config.max_test_examples,
        seed=config.seed, download=config.download, validation_split=config.validation_split,
        first_epoch=config.first_epoch)
    epochs = config.epochs or default_epochs(dataset.style)
    weight_decay = config.weight_decay if config.weight_decay is not None else default_weight_decay(dataset.style)
    warmup = config.warmup_epochs if config.warmup_epochs is not None else default_warmup_epochs(epochs)
    first_epoch, stop_epoch = config.epoch_range(epochs)
    recipe = {"epochs": epochs, "weight_decay": weight_decay, "warmup_epochs": warmup,
              "latent_lr_multiplier": config.resolved_latent_lr_multiplier(),
              "point_lr_multiplier": config.resolved_point_lr_multiplier(),
              "steps_per_epoch": dataset.steps_per_epoch}
    run_dir.mkdir(parents=True, exist_ok=True)
    if chief:
        write_json(run_dir / "config.json", {"config": config.to_dict(), "resolved": recipe})
    held_out = f" / {dataset.num_validation} validation" if dataset.validation is not None else ""
    _say(config, f"Run directory: {run_dir}\nData: {dataset.source} ({dataset.num_train} train{held_out} / "
                 f"{dataset.num_test} test, {dataset.num_classes} classes, {dataset.image_size} px)")

    with strategy.scope():
        with policy_scope(config.precision):  # the model keeps its layers' policy after the block
            model = (model_fn or build_model)(config, dataset)
        if config.init_weights:  # a resumed run's checkpoint (BackupAndRestore) overrides this
            try:
                warm_start(model, weights_path(config.init_weights, config.model))
            except ValueError as error:
                raise ConfigError(str(error)) from None
            _say(config, f"Warm start from {config.init_weights} (binary kernels and float layers; points at the origin).")
        if (first_epoch, stop_epoch) != (0, epochs):
            _say(config, f"Segment: epochs {first_epoch + 1}-{stop_epoch} of a {epochs}-epoch schedule"
                         f"{'' if config.init_weights else ' (from a fresh initialisation: no --init-weights)'}.")
        schedule = learning_rate_schedule(config.lr, epochs, dataset.steps_per_epoch, warmup,
                                          step_offset=first_epoch * dataset.steps_per_epoch)
        model.compile(make_optimizer(config, model, schedule, weight_decay),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"], run_eagerly=config.run_eagerly)
    callbacks = run_callbacks(config, run_dir, dataset, epochs, chief)
    # With a validation split, Keras validates on it after each epoch and the test split is
    # evaluated once, at the end; without one, the per-epoch curve is the test split's.
    monitored = dataset.validation if dataset.validation is not None else dataset.test
    try:
        model.fit(dataset.train, validation_data=monitored, initial_epoch=first_epoch, epochs=stop_epoch,
                  callbacks=callbacks, verbose=config.verbose)
        test_loss, test_accuracy = model.evaluate(dataset.test, verbose=0)
        final = {"test_accuracy": float(test_accuracy), "test_loss": float(test_loss)}
        if dataset.validation is not None:
            val_loss, val_accuracy = model.evaluate(dataset.validation, verbose=0)
            final.update(val_accuracy=float(val_accuracy), val_loss=float(val_loss))
    except tf.errors.InvalidArgumentError:
        dataset.check_files()  # a file decoded on the fly is unreadable: name it instead
        raise
    weights = model.get_weights()  # every worker: reading synchronised variables is a collective op
    if not chief:
        return {"status": "complete", "final": final}
    metadata = {**(zoo_metadata(model) or {"model": config.model}), "dataset": dataset.summary()}
    trained = standalone_copy(model, weights)
    artifacts = export_artifacts(trained, metadata, run_dir, tflite=config.export)
    deployment = None
    if config.export:
        _say(config, "Running the 1-bit model.tflite in the LCE interpreter on test images ...")
        deployment = check_converted((run_dir / "model.tflite").read_bytes(), trained, dataset.test)
    records = json.loads((run_dir / "epochs.json").read_text())
    results = {
        "status": "complete",
        "config": config.to_dict(), "resolved": recipe, "dataset": dataset.summary(),
        "epochs": records,
        "final": final,
        "wall_time_s": time.time() - start,
        "train_time_s": float(sum(r["seconds"] for r in records)),
        "replicas": strategy.num_replicas_in_sync,
        "artifacts": artifacts, "deployment": deployment, "versions": versions(), "machine": machine(),
    }
    write_json(results_path, results)
    return results


def _say(config: TrainConfig, message: str) -> None:
    if config.verbose:
        print(message, flush=True)


def summary_text(results: dict) -> str:
    """A short human-readable summary of `results` (as returned by `train`)."""
    records = results.get("epochs", [])
    split = "val" if any("val_accuracy" in r for r in records) else "test"
    lines = [f"{'epoch':>5} {'train acc':>9} {split + ' acc':>9} {'flips':>8} {'s':>7}"]
    for r in records:
        flips = f"{r['flip_rate_mean']:.4f}" if r.get("flip_rate_mean") is not None else "-"
        lines.append(f"{r['epoch']:>5} {r['train_accuracy'] or 0:>9.4f} {r.get(split + '_accuracy') or 0:>9.4f} {flips:>8} {r['seconds']:>7.1f}")
    final = results.get("final", {})
    held_out = f"validation accuracy {final['val_accuracy']:.4f}, " if "val_accuracy" in final else ""
    lines.append(f"final {held_out}test accuracy {final.get('test_accuracy', float('nan')):.4f}, "
                 f"wall time {results.get('wall_time_s', 0):.0f} s")
    deployment = results.get("deployment")
    if deployment:
        lines.append(f"LCE interpreter, model.tflite ({deployment['lce_bconv2d_ops']} binary convolutions as LceBconv2d): "
                     f"top-1 accuracy {deployment['tflite_accuracy']:.4f} on {deployment['examples']} test images "
                     f"(Keras {deployment['keras_accuracy']:.4f}), top-1 agreement with Keras {deployment['agreement']:.4f}")
    for key, value in results.get("artifacts", {}).items():
        lines.append(f"{key}: {value}")
    return "\n".join(lines)
