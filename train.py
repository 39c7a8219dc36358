"""Train a binarized network (HBNN or a baseline recipe), then export it to a 1-bit `.tflite`.

    python train.py                          # short demo (see DEMO below), a few minutes on 2 cores
    python train.py --model vggsmall --dataset cifar10 --quantizer hbnn       # steps: the best measured
    python train.py --model vggsmall --dataset cifar10 --point-lr-multiplier 1 --latent-lr-multiplier 1  # the paper's
    python train.py --config run.json --epochs 10                            # JSON defaults, flags win
    python train.py --epochs 60 --first-epoch 20 --stop-epoch 40 --init-weights SEG0/weights.npz  # a segment

Re-running the same command resumes an interrupted run from its last completed epoch. A long run
can also be trained in segments (on different machines), each continuing the same schedule
(docs/training.md, "Long runs in segments").
The recipe and the outputs are documented in `hbnn_larq/training/`: the optimizer and schedule in
`optimizer.py`, the recipes in `recipes.py`, where data comes from in `sources.py`, its preprocessing in
`data.py`, the run directory in `config.py` (its name) and `run.py` (its contents).

TensorFlow's C++ start-up messages (CUDA plugins, oneDNN, CPU features, TensorRT) are off: this
script sets TF_CPP_MIN_LOG_LEVEL=3 unless the environment already sets it (TF_CPP_MIN_LOG_LEVEL=0
shows them all).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

# Before TensorFlow loads. Level 3, not 2: TensorFlow 2.16 logs its harmless "Unable to register
# cuFFT/cuDNN/cuBLAS factory" lines at ERROR level. Errors that matter still raise in Python.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import hbnn_larq  # noqa: E402, F401  (first: sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from hbnn_larq.optimizers import POINT_UPDATES
from hbnn_larq.precision import PRECISIONS
from hbnn_larq.quantizers import GROUPINGS, ON_SWITCH, SELECTIONS
from hbnn_larq.training import ConfigError, TrainConfig, recipes, sources, summary_text, train
from hbnn_larq.training.config import STRATEGIES
from hbnn_larq.zoo import model_names
from hbnn_larq.zoo.resnet import VARIANTS

# `python train.py` without arguments: HBNN (the default recipe) on VGG-Small at width 0.25, 20,000
# CIFAR-10 training images, 2,000 test images, 5 epochs with a one-epoch warm-up, from the offline
# CIFAR-10 copy if one is found in $HBNN_DATA_DIR, otherwise on a generated colour-cue task
# (labelled "synthetic" in the output). About 4 minutes on 2 CPU cores in float32 (docs/training.md).
DEMO = dict(model="vggsmall", dataset="cifar10", width=0.25, epochs=5, warmup_epochs=1, batch_size=128,
            max_train_examples=20_000, max_test_examples=2_000)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text}")
    return value


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: X)" only where X is what the option does when it is not given.

    Not to on/off flags: `--no-export` stores False into `export`, whose default True is the
    setting, not the flag's. Not to defaults of None either: those are decided later (by the
    data, the recipe, ...), and the option's help says how. Nor where the help states it already."""

    def _get_help_string(self, action):
        if action.nargs == 0 or action.default is None or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=_HelpFormatter)
    p.add_argument("--config", help="JSON file of TrainConfig fields used as defaults (flags override it; default: none)")
    p.add_argument("--model", choices=model_names(), default="vggsmall", help="zoo model")
    p.add_argument("--dataset", default="cifar10",
                   help=f"{', '.join(sources.TFDS_NAMES)}, {sources.SYNTHETIC}, or a path to an image-folder tree or .tar/.tar.gz")
    p.add_argument("--data-dir", help="folder with offline copies (cifar10-jpeg.tar.gz, imagenette-224.tar), searched before "
                        "$HBNN_DATA_DIR, or TFDS data dir (default: $HBNN_DATA_DIR only, and TFDS' ~/tensorflow_datasets)")
    p.add_argument("--quantizer", choices=recipes.recipe_names(), default="hbnn", help="weight-binarization recipe")
    p.add_argument("--epochs", type=_positive_int,
                   help="length of the LR schedule; default: 600 for 32-px data, 250 for ImageNet-like")
    p.add_argument("--first-epoch", type=_non_negative_int, default=0, metavar="K",
                   help="continue a longer run: start after its epoch K (LR schedule offset by K epochs, epochs "
                        "numbered from K+1); pass the previous segment's weights.npz as --init-weights")
    p.add_argument("--stop-epoch", type=_positive_int, metavar="L",
                   help="end this run after epoch L of the --epochs schedule (a segment of a longer run; "
                        "default: --epochs)")
    p.add_argument("--batch-size", type=_positive_int, default=256, help="global batch size")
    p.add_argument("--lr", type=_positive_float, default=0.1, help="peak learning rate (cosine decay to 0)")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    p.add_argument("--warmup-epochs", type=_non_negative_float, help="linear warm-up; default min(5, epochs // 20)")
    p.add_argument("--weight-decay", type=_non_negative_float,
                   help="coupled L2 on kernels only; default 5e-4 for 32-px data, 1e-4 for ImageNet-like")
    p.add_argument("--latent-lr-multiplier", type=_positive_float,
                   help="LR multiplier of latent binary kernels (default: the recipe's, see hbnn_larq.training.recipes; the papers' is 1)")
    p.add_argument("--point-lr-multiplier", type=_positive_float,
                   help="LR multiplier of the HBNN points (default: the recipe's, see hbnn_larq.training.recipes)")
    p.add_argument("--point-update", choices=POINT_UPDATES, default="rsgd",
                   help="HBNN points' step: Riemannian SGD, or the paper's Moebius update (Eq. 16)")
    p.add_argument("--radius", type=_positive_float, help="HBNN curvature r (default: the recipe's, 0.05 for hbnn)")
    p.add_argument("--cluster-size", type=_positive_int, default=1, help="EPC cluster size t")
    p.add_argument("--selection", choices=SELECTIONS, default="geometric", help="EPC chart selection criterion")
    p.add_argument("--on-switch", choices=ON_SWITCH, default="reexpress",
                   help="EPC: re-express w~ in the new chart when the chart changes (binary weights stay), "
                        "or keep w~ (the paper's literal reading; binary weights jump)")
    p.add_argument("--grouping", choices=GROUPINGS, default="layer",
                   help="HBNN: one ball per layer (the paper) or one per output channel")
    p.add_argument("--width", type=_positive_float, default=1.0, help="channel-width multiplier")
    p.add_argument("--variant", choices=VARIANTS,
                   help="ResNet layout; default from the input size (CIFAR up to 64 px, ImageNet above)")
    p.add_argument("--image-size", type=_positive_int, help="model input side; default native (32-px data) or 224")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial weights, the data order, augmentation and the --max-*-examples subsets")
    p.add_argument("--strategy", choices=STRATEGIES, default="default",
                   help="tf.distribute strategy: the current one, all GPUs (else all logical CPUs), or "
                        "several workers configured by $TF_CONFIG")
    p.add_argument("--precision", choices=PRECISIONS, default="float32",
                   help="Keras dtype policy; mixed_bfloat16 pays on CPUs with AMX/avx512_bf16, GPUs and TPUs "
                        "(quantizers and points stay float32)")
    p.add_argument("--run-dir", help="default runs/<model>-<dataset>-<quantizer>-<config hash>")
    p.add_argument("--max-train-examples", type=_positive_int,
                   help="train on a seeded random subset of this size (default: every training image)")
    p.add_argument("--max-test-examples", type=_positive_int,
                   help="evaluate on a seeded random subset of this size (default: every test image)")
    p.add_argument("--validation-split", type=float, metavar="F",
                   help="hold out this fraction of the training images (stratified, the same images for every "
                        "seed) and validate on it after each epoch; the test split is then evaluated once, at "
                        "the end (default: no validation split, the test split is evaluated after each epoch)")
    p.add_argument("--init-weights", metavar="PATH_OR_NAME",
                   help="warm start from a weights.npz of an earlier run, or shipped weights by name (e.g. cifar10): "
                        "binary kernels and float layers are loaded, latent kernels rescaled to their initial size, "
                        "points at the origin (hbnn_larq/training/warm_start.py; default: a fresh initialisation)")
    p.add_argument("--no-export", dest="export", action="store_false",
                   help="skip the .tflite conversion (without it the model is exported)")
    p.add_argument("--no-download", dest="download", action="store_false",
                   help="never let TFDS download (without it TFDS downloads a dataset found nowhere offline)")
    p.add_argument("--overwrite", action="store_true", help="retrain a run whose results.json is complete")
    p.add_argument("--run-eagerly", action="store_true",
                   help="no graph tracing (debugging; faster for runs of a few dozen steps, slower otherwise)")
    p.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1, help="Keras progress output")
    return p


def parse_config(argv: list[str]) -> TrainConfig:
    parser = build_parser()
    if not argv:
        print("No arguments: running the short demo (python train.py --help for the full CLI).", flush=True)
        return _demo_config()
    known, _ = parser.parse_known_args(argv)
    if known.config:
        try:
            with open(known.config) as f:
                defaults = TrainConfig.from_dict(json.load(f)).to_dict()
        except (OSError, ValueError) as error:
            parser.error(f"--config {known.config}: {error}")
        parser.set_defaults(**defaults)
    values = vars(parser.parse_args(argv))
    values.pop("config")
    return TrainConfig(**values)


def _demo_config() -> TrainConfig:
    config = TrainConfig(**DEMO, download=False)
    try:
        found = sources.find_offline(config.dataset) is not None
    except sources.DataError:
        found = False
    if not found:
        print("No offline CIFAR-10 found (--data-dir, $HBNN_DATA_DIR): the demo trains on a SYNTHETIC generated dataset instead.", flush=True)
        config.dataset = sources.SYNTHETIC
    data = "CIFAR-10" if config.dataset == "cifar10" else "the synthetic task"
    print(f"Demo: HBNN ({config.quantizer!r} recipe) on VGG-Small at width {config.width} (5 binary conv layers), "
          f"{config.epochs} epochs on {config.max_train_examples:,} {data} training images, tested on "
          f"{config.max_test_examples:,} test images; then the 1-bit .tflite is checked in the LCE interpreter.",
          flush=True)
    return config


def main(argv: list[str] | None = None) -> int:
    config = parse_config(sys.argv[1:] if argv is None else argv)
    try:
        results = train(config)
    except (ConfigError, sources.DataError) as error:
        print(f"train.py: error: {error}", file=sys.stderr)
        return 2
    print(summary_text(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
