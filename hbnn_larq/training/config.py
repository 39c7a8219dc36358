"""`TrainConfig`: everything that defines a training run, its validation and its default directory.

**Run directory.** Without `run_dir`, a run lives in
`runs/<model>-<dataset>-<quantizer>-<hash>`, so that re-running the same command finds (and
resumes) the same run. The hash covers every field that can change the run, that is every field
but the output-only ones (`OUTPUT_ONLY`), with the values a field leaves to the recipe resolved
(the radius, the latent kernels' and the points' learning-rate multipliers): a config that
states the recipe's value and one that leaves it to the recipe share a directory. With one chart
(`cluster_size=1`) EPC's options (`EPC_ONLY`) cannot change the run and are not hashed either;
nor are `first_epoch` and `stop_epoch` at their defaults (a whole run), so that the directories of
runs started before those fields existed keep their names.

**Segments** (issue 28). `first_epoch=K, stop_epoch=L` trains epochs K+1..L of the warm-up + cosine
schedule of a single `epochs`-epoch run (the learning rate is offset by K epochs, Keras' epoch
numbering continues from K); with `init_weights` the previous segment's `weights.npz` this
continues a long run on another machine: `benchmarks/zoo_weights.py`, docs/training.md.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path

from hbnn_larq.optimizers import POINT_UPDATES
from hbnn_larq.precision import PRECISIONS
from hbnn_larq.quantizers import GROUPINGS, ON_SWITCH, SELECTIONS
from hbnn_larq.training import recipes
from hbnn_larq.utils import check_choice
from hbnn_larq.zoo import FIXED_WIDTH_MODELS, MODEL_VARIANTS, model_names

STRATEGIES = ("default", "mirrored", "multiworker")
# Fields that name outputs or verbosity: they do not change the run, so not its default directory.
OUTPUT_ONLY = ("run_dir", "export", "verbose", "overwrite", "download", "run_eagerly")
# Fields that only matter when EPC has more than one chart to choose from.
EPC_ONLY = ("selection", "on_switch")


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
    first_epoch: int = 0
    stop_epoch: int | None = None
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
    validation_split: float | None = None
    init_weights: str | None = None
    export: bool = True
    download: bool = True
    overwrite: bool = False
    run_eagerly: bool = False
    verbose: int = 1

    def validate(self) -> "TrainConfig":
        check_choice("model", self.model, model_names(), error=ConfigError)
        if self.variant is not None:
            if self.model not in MODEL_VARIANTS:
                raise ConfigError(f"`variant` applies to {', '.join(sorted(MODEL_VARIANTS))} only; "
                                  f"`model` {self.model!r} has one layout (leave `variant` unset).")
            check_choice("variant", self.variant, MODEL_VARIANTS[self.model], error=ConfigError)
        for name, choices in (("quantizer", recipes.recipe_names()), ("point_update", POINT_UPDATES),
                              ("selection", SELECTIONS), ("on_switch", ON_SWITCH), ("grouping", GROUPINGS),
                              ("strategy", STRATEGIES), ("precision", PRECISIONS)):
            check_choice(name, getattr(self, name), choices, error=ConfigError)
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
        if self.validation_split is not None and (isinstance(self.validation_split, bool) or not isinstance(
                self.validation_split, (int, float)) or not 0 < self.validation_split < 1):
            raise ConfigError(f"`validation_split` must be a fraction strictly between 0 and 1 (e.g. 0.1), "
                              f"got {self.validation_split!r}.")
        if not recipes.is_hyperbolic(self.quantizer):
            for name, unset in (("point_lr_multiplier", None), ("radius", None), ("cluster_size", 1),
                                ("point_update", "rsgd")):
                if getattr(self, name) != unset:
                    hyperbolic = ", ".join(repr(n) for n in recipes.recipe_names() if recipes.is_hyperbolic(n))
                    raise ConfigError(f"`{name}` applies to the HBNN recipes ({hyperbolic}) only; `quantizer` "
                                      f"{self.quantizer!r} has no points: leave `{name}` unset.")
        if self.model in FIXED_WIDTH_MODELS and self.width != 1:
            raise ConfigError(f"`width` must be 1 for `model` {self.model!r} (larq-zoo's channel counts are fixed), "
                              f"got {self.width!r}.")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"`momentum` must be in [0, 1), got {self.momentum!r}.")
        self.epoch_range(self.epochs)
        return self

    def epoch_range(self, epochs: int | None) -> tuple[int, int | None]:
        """`(first_epoch, stop_epoch)` for a schedule of `epochs` epochs (the resolved `epochs`;
        None: not known yet, only the lower bounds are checked): the run trains epochs
        `first_epoch + 1` to `stop_epoch` (1-based), Keras' `fit(initial_epoch=first_epoch,
        epochs=stop_epoch)`.

        # Raises
        ConfigError: unless `0 <= first_epoch < stop_epoch <= epochs`.
        """
        first, stop = self.first_epoch, self.stop_epoch
        limit = float("inf") if epochs is None else epochs
        of_epochs = "" if epochs is None else f" and < `epochs` ({epochs})"
        if isinstance(first, bool) or not isinstance(first, int) or not 0 <= first < limit:
            raise ConfigError(f"`first_epoch` must be an integer >= 0{of_epochs}, got {first!r}.")
        if stop is None:
            return first, epochs
        if isinstance(stop, bool) or not isinstance(stop, int) or not first < stop <= limit:
            of_epochs = "" if epochs is None else f" and <= `epochs` ({epochs})"
            raise ConfigError(f"`stop_epoch` must be an integer > `first_epoch` ({first}){of_epochs}, got {stop!r}.")
        return first, stop

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
        """`default_run_dir(self)`."""
        return default_run_dir(self)


# Number fields: hashed as floats, so that `width=1` and `width=1.0` share a directory.
FLOAT_FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig) if str(f.type).startswith("float"))


def hashed_fields(config: TrainConfig) -> dict:
    """The values that name `config`'s default run directory (see the module docstring)."""
    values = {k: v for k, v in config.to_dict().items() if k not in OUTPUT_ONLY}
    values.update(radius=config.resolved_radius(), latent_lr_multiplier=config.resolved_latent_lr_multiplier(),
                  point_lr_multiplier=config.resolved_point_lr_multiplier())
    for name in FLOAT_FIELDS:
        if isinstance(values[name], (int, float)) and not isinstance(values[name], bool):
            values[name] = float(values[name])
    if config.cluster_size == 1:
        for name in EPC_ONLY:
            del values[name]
    for name, whole_run in (("first_epoch", 0), ("stop_epoch", None), ("stop_epoch", config.epochs)):
        if name in values and values[name] == whole_run:
            del values[name]
    return values


# Settings a run directory may be resumed with changed: where the data lives, and the segment's epochs.
RESUMABLE_CHANGES = ("data_dir", "first_epoch", "stop_epoch")


def changed_settings(config: TrainConfig, stored: dict) -> list[str]:
    """How `config` differs from the run whose `config.json` holds `stored` (its `"config"`), one
    `"name: there -> here"` per setting that changes the run (`hashed_fields`, resolved, except
    `RESUMABLE_CHANGES`); empty for the same run, or for a file this version cannot read."""
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    try:
        there = hashed_fields(TrainConfig.from_dict({k: v for k, v in stored.items() if k in known}))
    except (ConfigError, TypeError, ValueError):
        return []
    here = hashed_fields(config)
    return [f"{name}: {there.get(name)!r} -> {here.get(name)!r}" for name in sorted(there.keys() | here.keys())
            if name not in RESUMABLE_CHANGES and there.get(name) != here.get(name)]


def default_run_dir(config: TrainConfig) -> Path:
    """`runs/<model>-<dataset>-<quantizer>-<hash of hashed_fields(config)>`."""
    digest = hashlib.sha1(json.dumps(hashed_fields(config), sort_keys=True).encode()).hexdigest()[:8]
    dataset = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(config.dataset).name.split(".")[0] or "data")
    return Path("runs") / f"{config.model}-{dataset}-{config.quantizer}-{digest}"
