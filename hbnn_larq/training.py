"""The training recipe behind `train.py`, importable so that benchmarks can run it in-process.

```python
from hbnn_larq.training import TrainConfig, train
results = train(TrainConfig(model="vggsmall", dataset="cifar10", width=0.25, epochs=1))
```

**Recipe** (the paper's defaults, HBNN v1 §6): SGD with momentum 0.9, batch 256, learning rate
0.1 with cosine decay to 0 over the run, 600 epochs for 32-px data and 250 for ImageNet-like
data, weight decay 5e-4 (32 px) or 1e-4 (ImageNet-like).

- *Warm-up*: a linear warm-up from 0 to `lr` over `warmup_epochs`, then the cosine decay over the
  remaining steps. By default (`warmup_epochs=None`) it is scaled to the run length:
  `min(5, epochs // 20)` epochs, i.e. the usual 5 epochs for runs of 100 epochs or more and
  none for runs shorter than 20 epochs.
- *Weight decay* is a coupled L2 term, PyTorch's `SGD(weight_decay=...)` that the paper and the
  baselines use: `wd * w` is added to the gradient before momentum. It applies to kernels only
  (binary latent kernels and the full-precision first conv / classifier): never to the HBNN
  points (decay would pull them to the origin, i.e. to a plain BNN), BatchNorm or biases.
  Keras' own `weight_decay` is decoupled and, with momentum 0.9, about 10x weaker, hence
  `KernelSGD` below.
- *Latent LR multiplier*: the gradients (weight decay included) of latent binary kernels are
  scaled by `latent_lr_multiplier`; with SGD (momentum is linear in the gradient) that is exactly
  a learning-rate multiplier for those variables. Default: the recipe's
  (`hbnn_larq.recipes.latent_lr_multiplier(name)`: x10 for `ste_sign` and `hbnn`, where it measured
  best at a 10-epoch budget, and `hbnn-boundary`, measured at it; x1 (the papers') for the others).
- The points of `HyperbolicSign` recipes get `RiemannianOptimizer`'s Riemannian step with
  `point_lr_multiplier` times the scheduled learning rate (default: the recipe's,
  `hbnn_larq.recipes.point_lr_multiplier(name)`).

**Run directory** (default `runs/<model>-<dataset>-<quantizer>-<hash of the config>`, so that
re-running the same command finds and resumes the same run): `config.json`, `backup/` (the
per-epoch checkpoint: model, optimizer, epoch; removed when training completes), `history.csv`,
`epochs.json`, `logs/` (TensorBoard), `charts.json` (EPC: every chart-selection round, its
scores and the signs each switch flipped), then `model.keras` (reload after `import hbnn_larq`),
`model.tflite` (LCE), `weights.npz` (`hbnn_larq.zoo.save_pretrained`, 1 bit per binary weight)
and `results.json`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import re
import time
from pathlib import Path

import larq as lq
import numpy as np
import tensorflow as tf

from hbnn_larq import data as data_lib
from hbnn_larq import recipes
from hbnn_larq._atomic import write_json
from hbnn_larq.constraints import ball_constraint_of
from hbnn_larq.export import convert_keras_model
from hbnn_larq.flips import FlipRateMonitor
from hbnn_larq.optimizers import POINT_UPDATES, RiemannianOptimizer
from hbnn_larq.precision import PRECISIONS, policy_scope
from hbnn_larq.quantizers import GROUPINGS, ON_SWITCH, SELECTIONS, _all_layers
from hbnn_larq.schedules import QuantizerSchedule
from hbnn_larq.selection import ChartSelection

STRATEGIES = ("default", "mirrored", "multiworker")
# Fields that name outputs or verbosity: they do not change the run, so not its default directory.
_NOT_HASHED = ("run_dir", "export", "verbose", "overwrite", "download", "run_eagerly")
# Fields added after runs existed, with the value earlier configs implied: left out of the hash at
# that value, so re-running an old command still finds (and resumes) its old run directory.
_ADDED_LATER = {"variant": None, "on_switch": "keep", "precision": "float32"}
# Recipes whose defaults changed after runs existed (hbnn-boundary: r = 1 and latent x1 until
# 2026-11-24): their configs hash the resolved r and latent step, not None, so a config that leaves
# them to the recipe neither resumes a run made with the old defaults nor shares its directory.
_HASH_RESOLVED_DEFAULTS = ("hbnn-boundary",)


class ConfigError(ValueError):
    """An invalid training configuration (the message names the parameter and valid values)."""


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a training run; `None` means "the recipe's default".

    See `train.py --help` for the meaning of each field.
    """

    model: str = "vggsmall"
    dataset: str = "cifar10"
    data_dir: str | None = None
    quantizer: str = "hbnn"
    epochs: int | None = None
    batch_size: int = 256
    lr: float = 0.1
    momentum: float = 0.9
    warmup_epochs: float | None = None
    weight_decay: float | None = None
    latent_lr_multiplier: float | None = None
    point_lr_multiplier: float | None = None
    point_update: str = "rsgd"
    radius: float | None = None
    cluster_size: int = 1
    selection: str = "geometric"
    on_switch: str = "reexpress"
    grouping: str = "layer"
    width: float = 1.0
    variant: str | None = None
    image_size: int | None = None
    seed: int = 0
    strategy: str = "default"
    precision: str = "float32"
    run_dir: str | None = None
    max_train_examples: int | None = None
    max_test_examples: int | None = None
    export: bool = True
    download: bool = True
    overwrite: bool = False
    run_eagerly: bool = False
    verbose: int = 1

    def validate(self) -> "TrainConfig":
        from hbnn_larq.zoo import MODEL_VARIANTS, model_names

        _choice("model", self.model, model_names())
        if self.variant is not None:
            if self.model not in MODEL_VARIANTS:
                raise ConfigError(f"`variant` applies to {', '.join(sorted(MODEL_VARIANTS))} only; "
                                  f"`model` {self.model!r} has one layout (leave `variant` unset).")
            _choice("variant", self.variant, MODEL_VARIANTS[self.model])
        _choice("quantizer", self.quantizer, recipes.recipe_names())
        _choice("point_update", self.point_update, POINT_UPDATES)
        _choice("selection", self.selection, SELECTIONS)
        _choice("on_switch", self.on_switch, ON_SWITCH)
        _choice("grouping", self.grouping, GROUPINGS)
        _choice("strategy", self.strategy, STRATEGIES)
        _choice("precision", self.precision, PRECISIONS)
        counts = ("epochs", "batch_size", "cluster_size", "image_size", "max_train_examples", "max_test_examples")
        for name, least in [(name, 1) for name in counts] + [("seed", 0)]:
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < least):
                raise ConfigError(f"`{name}` must be an integer >= {least}, got {value!r}.")
        for name in ("lr", "latent_lr_multiplier", "point_lr_multiplier", "width", "radius"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and 0 < value < float("inf")):
                raise ConfigError(f"`{name}` must be a number > 0, got {value!r}.")
        for name in ("weight_decay", "warmup_epochs"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and 0 <= value < float("inf")):
                raise ConfigError(f"`{name}` must be a number >= 0, got {value!r}.")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"`momentum` must be in [0, 1), got {self.momentum!r}.")
        return self

    def resolved_latent_lr_multiplier(self) -> float:
        """The latent kernels' LR multiplier: the configured one, else the recipe's."""
        return self.latent_lr_multiplier or recipes.latent_lr_multiplier(self.quantizer)

    def resolved_radius(self) -> float | None:
        """The curvature r: the configured one, else the recipe's (None without points)."""
        if self.radius is not None or not recipes.is_hyperbolic(self.quantizer):
            return self.radius
        return recipes.kernel_quantizer(self.quantizer).r

    def resolved_point_lr_multiplier(self) -> float | None:
        """The points' LR multiplier: the configured one, else the recipe's (None without points)."""
        return self.point_lr_multiplier or recipes.point_lr_multiplier(self.quantizer)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"Unknown config key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(known))}.")
        return cls(**values)

    def default_run_dir(self) -> Path:
        hashed = {k: v for k, v in self.to_dict().items()
                  if k not in _NOT_HASHED and not (k in _ADDED_LATER and v == _ADDED_LATER[k])}
        if self.quantizer in _HASH_RESOLVED_DEFAULTS:
            hashed.update(radius=self.resolved_radius(), latent_lr_multiplier=self.resolved_latent_lr_multiplier())
        if self.cluster_size == 1:
            # One chart never switches: EPC's options cannot change the run, so they are hashed as
            # one-chart runs always had them (no on_switch; selection "loss", the default until
            # "geometric" replaced it), and no directory moves.
            hashed.pop("on_switch", None)
            hashed["selection"] = "loss"
        digest = hashlib.sha1(json.dumps(hashed, sort_keys=True).encode()).hexdigest()[:8]
        dataset = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(self.dataset).name.split(".")[0] or "data")
        return Path("runs") / f"{self.model}-{dataset}-{self.quantizer}-{digest}"


def _choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ConfigError(f"`{name}` must be one of {', '.join(map(str, choices))}; got {value!r}.")


# -- the recipe ----------------------------------------------------------------------------------
def default_epochs(style: str) -> int:
    """600 epochs for 32-px data, 250 for ImageNet-like data (the paper)."""
    return 600 if style == "cifar" else 250


def default_weight_decay(style: str) -> float:
    """5e-4 for 32-px data, 1e-4 for ImageNet-like data (the paper)."""
    return 5e-4 if style == "cifar" else 1e-4


def default_warmup_epochs(epochs: int) -> int:
    """`min(5, epochs // 20)`: 5 epochs on long runs, none on runs shorter than 20 epochs."""
    return min(5, epochs // 20)


def learning_rate_schedule(lr: float, epochs: int, steps_per_epoch: int, warmup_epochs: float):
    """Linear warm-up from 0 to `lr` over `warmup_epochs`, then cosine decay to 0 (per step)."""
    total = max(1, epochs * steps_per_epoch)
    warmup = min(total - 1, int(round(warmup_epochs * steps_per_epoch)))
    if warmup == 0:
        return tf.keras.optimizers.schedules.CosineDecay(lr, decay_steps=total)
    return tf.keras.optimizers.schedules.CosineDecay(0.0, decay_steps=total - warmup, warmup_target=lr, warmup_steps=warmup)


def _base_name(name: str) -> str:
    return name.split(":")[0]


@lq.utils.register_keras_custom_object
class KernelSGD(tf.keras.optimizers.SGD):
    """SGD with coupled L2 weight decay on selected variables and a learning-rate multiplier for
    others (by gradient scaling, exact for SGD with momentum).

    # Arguments
    l2: weight-decay coefficient: `l2 * w` is added to the gradient of the `decayed` variables.
    decayed: names of the variables that get weight decay.
    scaled: names of the variables whose gradient (decay included) is multiplied by `multiplier`.
    multiplier: learning-rate multiplier of the `scaled` variables, float > 0.
    **kwargs: passed to `tf.keras.optimizers.SGD` (`learning_rate`, `momentum`, ...).
    """

    def __init__(self, l2: float = 0.0, decayed=(), scaled=(), multiplier: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.l2, self.multiplier = float(l2), float(multiplier)
        self.decayed, self.scaled = [_base_name(n) for n in decayed], [_base_name(n) for n in scaled]
        self._decayed_keys, self._scaled_keys = set(), set()

    def build(self, var_list):
        super().build(var_list)
        # Keys, not names: inside a distributed update each replica's copy has its own name.
        decayed, scaled = set(self.decayed), set(self.scaled)
        self._decayed_keys = {self._var_key(v) for v in var_list if _base_name(v.name) in decayed}
        self._scaled_keys = {self._var_key(v) for v in var_list if _base_name(v.name) in scaled}

    def update_step(self, gradient, variable):
        key = self._var_key(variable)
        gradient = tf.convert_to_tensor(gradient)
        if self.l2 and key in self._decayed_keys:
            gradient = gradient + tf.cast(self.l2, variable.dtype) * variable
        if self.multiplier != 1.0 and key in self._scaled_keys:
            gradient = gradient * tf.cast(self.multiplier, variable.dtype)
        return super().update_step(gradient, variable)

    def get_config(self):
        return {**super().get_config(), "l2": self.l2, "decayed": self.decayed, "scaled": self.scaled,
                "multiplier": self.multiplier}


def latent_kernel_names(model: tf.keras.Model) -> list[str]:
    """Names of the latent kernels of the weight-quantized (binary) layers of `model`."""
    return [layer.kernel.name for layer in _all_layers(model) if getattr(layer, "kernel_quantizer", None) is not None]


def decayed_variable_names(model: tf.keras.Model) -> list[str]:
    """Names of the trainable kernels of `model`: not points, not BatchNorm, not biases."""
    return [
        v.name for v in model.trainable_variables
        if ball_constraint_of(v) is None and re.search(r"kernel$", _base_name(v.name).split("/")[-1])
    ]


def make_optimizer(config: TrainConfig, model: tf.keras.Model, schedule, weight_decay: float):
    """`KernelSGD` (see the module docstring), wrapped in `RiemannianOptimizer` for HBNN recipes."""
    inner = KernelSGD(
        l2=weight_decay, decayed=decayed_variable_names(model), scaled=latent_kernel_names(model),
        multiplier=config.resolved_latent_lr_multiplier(), learning_rate=schedule, momentum=config.momentum)
    if not recipes.is_hyperbolic(config.quantizer):
        return inner
    return RiemannianOptimizer(inner, point_lr_multiplier=config.resolved_point_lr_multiplier(),
                               point_update=config.point_update)


def build_model(config: TrainConfig, dataset: data_lib.ImageDataset) -> tf.keras.Model:
    """The zoo model of `config` with the kernel quantizer of its recipe."""
    from hbnn_larq.zoo import get_model

    options = {"cluster_size": config.cluster_size, "selection": config.selection, "on_switch": config.on_switch,
               "grouping": config.grouping}
    if config.radius is not None:
        options["r"] = config.radius
    layout = {} if config.variant is None else {"variant": config.variant}
    return get_model(
        config.model, input_shape=dataset.input_shape, num_classes=dataset.num_classes,
        kernel_quantizer=lambda: recipes.kernel_quantizer(config.quantizer, **options),
        kernel_constraint=recipes.kernel_constraint(config.quantizer), width=config.width, **layout)


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
    resolver = getattr(strategy, "cluster_resolver", None)
    return resolver is None or resolver.task_id in (None, 0) or not resolver.task_type


# -- callbacks -----------------------------------------------------------------------------------
class EpochRecorder(tf.keras.callbacks.Callback):
    """Keeps `epochs.json` in the run directory: one record per completed epoch (train/test
    accuracy and loss, mean flip rate, `lr`: the learning rate of the epoch's last step,
    `seconds`), surviving restarts.

    `seconds` runs from the previous epoch's end (or the start of training) to this one's, so it
    includes every callback's work, whatever their order: EPC's chart selection, which runs in
    an earlier callback's `on_epoch_begin`, is part of what an epoch costs."""

    def __init__(self, path):
        super().__init__()
        self.path = Path(path)
        self.records = {r["epoch"]: r for r in json.loads(self.path.read_text())} if self.path.is_file() else {}

    def on_train_begin(self, logs=None):
        self._last = time.time()

    def on_epoch_end(self, epoch, logs=None):
        previous, now = self._last, time.time()
        self._last = now
        logs = logs or {}
        pick = lambda key: float(logs[key]) if key in logs else None  # noqa: E731
        # With a schedule, Keras' `learning_rate` is the value used by the last step.
        lr = self.model.optimizer.learning_rate
        self.records[epoch + 1] = {
            "epoch": epoch + 1,
            "train_accuracy": pick("accuracy"), "train_loss": pick("loss"),
            "test_accuracy": pick("val_accuracy"), "test_loss": pick("val_loss"),
            "flip_rate_mean": pick("flips/mean"), "lr": float(tf.keras.backend.get_value(lr)),
            "seconds": now - previous,
        }
        write_json(self.path, [self.records[k] for k in sorted(self.records)])


def _callbacks(config, run_dir: Path, dataset, epochs: int, chief: bool) -> list:
    callbacks = [
        tf.keras.callbacks.BackupAndRestore(str(run_dir / "backup"), delete_checkpoint=True),
        # After BackupAndRestore, which restores the weights first: flips count from the run's start.
        FlipRateMonitor(state_path=run_dir / "flips_initial.npz" if chief else None),
        QuantizerSchedule(total_epochs=epochs),  # IR-Net's t and ReCU's tau; a no-op otherwise
    ]
    if recipes.is_hyperbolic(config.quantizer) and config.cluster_size > 1:
        callbacks.append(ChartSelection(probe_data=dataset.probe_batch(), seed=config.seed, verbose=config.verbose,
                                        history_path=run_dir / "charts.json" if chief else None))
    if chief:
        callbacks += [
            EpochRecorder(run_dir / "epochs.json"),
            tf.keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=True),
            tf.keras.callbacks.TensorBoard(str(run_dir / "logs"), profile_batch=0),
        ]
    return callbacks


# -- outputs -------------------------------------------------------------------------------------
def versions() -> dict:
    import larq_compute_engine as lce
    import tf_keras

    import hbnn_larq

    return {"python": platform.python_version(), "tensorflow": tf.__version__, "tf_keras": tf_keras.__version__,
            "larq": lq.__version__, "larq_compute_engine": getattr(lce, "__version__", "unknown"),
            "numpy": np.__version__, "hbnn_larq": hbnn_larq.__version__}


def machine() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    from hbnn_larq.precision import cpu_bf16_flags

    return {"cpu_model": cpu, "cores": usable, "bf16_cpu_flags": cpu_bf16_flags(), "platform": platform.platform(),
            "hostname": platform.node()}


def standalone_copy(model: tf.keras.Model, weights) -> tf.keras.Model:
    """A copy of `model` outside any distribution strategy holding `weights`, so that saving and
    converting it needs no collective op (non-chief workers may have exited by then)."""
    copy = tf.keras.models.clone_model(model)
    copy.set_weights(weights)
    return copy


def _export(model, metadata: dict, run_dir: Path, config) -> dict:
    """Write `model.keras` (no optimizer state: `import hbnn_larq` is all a reader needs),
    `weights.npz` (bit-packed) and, unless disabled, `model.tflite`."""
    from hbnn_larq.zoo import save_pretrained

    model.save(str(run_dir / "model.keras"))
    artifacts = {"model": str(run_dir / "model.keras")}
    artifacts["weights"] = str(save_pretrained(model, run_dir / "weights.npz", metadata=metadata))
    if config.export:
        flatbuffer = convert_keras_model(model)
        (run_dir / "model.tflite").write_bytes(flatbuffer)
        artifacts["tflite"] = str(run_dir / "model.tflite")
        artifacts["tflite_bytes"] = len(flatbuffer)
    return artifacts


# -- the run -------------------------------------------------------------------------------------
def train(config: TrainConfig, *, model_fn=None) -> dict:
    """Train, evaluate and export one run; resume it if its run directory holds a checkpoint.

    # Arguments
    config: a `TrainConfig`.
    model_fn: optional `model_fn(config, dataset) -> tf.keras.Model` replacing the zoo model.

    # Returns
    The contents of `results.json`.

    # Raises
    ConfigError: invalid configuration. `hbnn_larq.data.DataError`: dataset problems.
    """
    config.validate()
    start = time.time()
    run_dir = Path(config.run_dir) if config.run_dir else config.default_run_dir()
    results_path = run_dir / "results.json"
    if results_path.is_file() and json.loads(results_path.read_text()).get("status") == "complete":
        if not config.overwrite:
            _say(config, f"Run {run_dir} is already complete (pass --overwrite to train again).")
            return json.loads(results_path.read_text())
        for stale in ("results.json", "epochs.json", "history.csv"):
            (run_dir / stale).unlink(missing_ok=True)
    strategy = make_strategy(config.strategy)
    chief = is_chief(strategy)
    tf.keras.utils.set_random_seed(config.seed)
    dataset = data_lib.load_dataset(
        config.dataset, data_dir=config.data_dir, batch_size=config.batch_size, image_size=config.image_size,
        max_train_examples=config.max_train_examples, max_test_examples=config.max_test_examples,
        seed=config.seed, download=config.download)
    epochs = config.epochs or default_epochs(dataset.style)
    weight_decay = config.weight_decay if config.weight_decay is not None else default_weight_decay(dataset.style)
    warmup = config.warmup_epochs if config.warmup_epochs is not None else default_warmup_epochs(epochs)
    recipe = {"epochs": epochs, "weight_decay": weight_decay, "warmup_epochs": warmup,
              "latent_lr_multiplier": config.resolved_latent_lr_multiplier(),
              "point_lr_multiplier": config.resolved_point_lr_multiplier(),
              "steps_per_epoch": dataset.steps_per_epoch}
    run_dir.mkdir(parents=True, exist_ok=True)
    if chief:
        write_json(run_dir / "config.json", {"config": config.to_dict(), "resolved": recipe})
    _say(config, f"Run directory: {run_dir}\nData: {dataset.source} ({dataset.num_train} train / {dataset.num_test} "
                 f"test, {dataset.num_classes} classes, {dataset.image_size} px)")

    with strategy.scope():
        with policy_scope(config.precision):  # the model keeps its layers' policy after the block
            model = (model_fn or build_model)(config, dataset)
        schedule = learning_rate_schedule(config.lr, epochs, dataset.steps_per_epoch, warmup)
        model.compile(make_optimizer(config, model, schedule, weight_decay),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"], run_eagerly=config.run_eagerly)
    callbacks = _callbacks(config, run_dir, dataset, epochs, chief)
    try:
        model.fit(dataset.train, validation_data=dataset.test, epochs=epochs, callbacks=callbacks,
                  verbose=config.verbose)
        test_loss, test_accuracy = model.evaluate(dataset.test, verbose=0)
    except tf.errors.InvalidArgumentError:
        dataset.check_files()  # a file decoded on the fly is unreadable: name it instead
        raise
    weights = model.get_weights()  # every worker: reading synchronised variables is a collective op
    if not chief:
        return {"status": "complete", "final": {"test_accuracy": float(test_accuracy)}}
    from hbnn_larq.zoo.pretrained import zoo_metadata

    metadata = {**(zoo_metadata(model) or {"model": config.model}), "dataset": dataset.summary()}
    artifacts = _export(standalone_copy(model, weights), metadata, run_dir, config)
    records = json.loads((run_dir / "epochs.json").read_text())
    results = {
        "status": "complete",
        "config": config.to_dict(), "resolved": recipe, "dataset": dataset.summary(),
        "epochs": records,
        "final": {"test_accuracy": float(test_accuracy), "test_loss": float(test_loss)},
        "wall_time_s": time.time() - start,
        "train_time_s": float(sum(r["seconds"] for r in records)),
        "replicas": strategy.num_replicas_in_sync,
        "artifacts": artifacts, "versions": versions(), "machine": machine(),
    }
    write_json(results_path, results)
    return results


def _say(config: TrainConfig, message: str) -> None:
    if config.verbose:
        print(message, flush=True)


def summary_text(results: dict) -> str:
    """A short human-readable summary of `results` (as returned by `train`)."""
    lines = [f"{'epoch':>5} {'train acc':>9} {'test acc':>9} {'flips':>8} {'s':>7}"]
    for r in results.get("epochs", []):
        flips = f"{r['flip_rate_mean']:.4f}" if r.get("flip_rate_mean") is not None else "-"
        lines.append(f"{r['epoch']:>5} {r['train_accuracy'] or 0:>9.4f} {r['test_accuracy'] or 0:>9.4f} {flips:>8} {r['seconds']:>7.1f}")
    final = results.get("final", {})
    lines.append(f"final test accuracy {final.get('test_accuracy', float('nan')):.4f}, wall time {results.get('wall_time_s', 0):.0f} s")
    for key, value in results.get("artifacts", {}).items():
        lines.append(f"{key}: {value}")
    return "\n".join(lines)
