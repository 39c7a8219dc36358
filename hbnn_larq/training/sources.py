"""Where a dataset's examples come from: image folders, their archives, TFDS, or a generated task.

**Where `--dataset NAME` comes from** (`hbnn_larq.training.data.load_dataset`), first match wins:

1. `NAME` is a path: an image-folder tree (`train/<class>/*` plus `test/<class>/*` or
   `val/<class>/*`, possibly inside one top folder) or an archive of one (`.tar`, `.tar.gz`,
   `.tgz`).
2. For `cifar10` and `imagenette`, the offline copies `cifar10-jpeg.tar.gz` / `imagenette-224.tar`
   (or their extracted trees `cifar10-jpeg/`, `imagenette-224/`) in, in this order: `data_dir`
   (`--data-dir`), then the folder named by the environment variable `HBNN_DATA_DIR`.
3. `data_dir/NAME` if that is a tree or an archive.
4. TensorFlow Datasets (`cifar10`, `cifar100`, `imagenet2012`, `imagenette`), stored in
   `data_dir` (TFDS' default `~/tensorflow_datasets` without it); downloaded if allowed.
5. `synthetic`: a generated 10-class 32x32 colour-cue task, for demos without any data.

Archives are extracted once into `$HBNN_CACHE_DIR` (default `~/.cache/hbnn_larq/datasets`),
atomically (into a temporary folder, then renamed), never next to the archive. Decoded images of
folder datasets are cached there too (see `hbnn_larq.training.image_folders`).

Each loader returns a `Source`: the examples as `(uint8 image, int32 label)` datasets, and what
`hbnn_larq.training.data` needs to turn them into training and evaluation pipelines. Image folders
are read by `hbnn_larq.training.image_folders`.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from hbnn_larq.zoo.common import INPUT_STATISTICS

TFDS_NAMES = ("cifar10", "cifar100", "imagenet2012", "imagenette")
OFFLINE_ARCHIVES = {"cifar10": "cifar10-jpeg", "imagenette": "imagenette-224"}
SYNTHETIC = "synthetic"
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
TEST_SPLITS = ("test", "val", "validation")

# The input statistics of each known dataset (by TFDS name and offline copy): the model's
# "input_normalization" layer gets them (`hbnn_larq.zoo.common.normalize_inputs`).
NORMALIZATION = {
    "cifar10": INPUT_STATISTICS["cifar10"],
    "cifar10-jpeg": INPUT_STATISTICS["cifar10"],
    "cifar100": INPUT_STATISTICS["cifar100"],
    "imagenet2012": INPUT_STATISTICS["imagenet"],
    "imagenette": INPUT_STATISTICS["imagenet"],
    "imagenette-224": INPUT_STATISTICS["imagenet"],
}


class DataError(Exception):
    """A dataset problem the user can fix (missing data, unreadable files, bad arguments)."""


class DatasetNotFoundError(DataError):
    pass


class UnreadableImagesError(DataError):
    """Some image files cannot be decoded; `paths` lists them."""

    def __init__(self, paths):
        self.paths = [str(p) for p in paths]
        shown = "\n  ".join(self.paths[:20])
        more = f"\n  ... and {len(self.paths) - 20} more" if len(self.paths) > 20 else ""
        super().__init__(f"{len(self.paths)} image file(s) cannot be decoded:\n  {shown}{more}")


@dataclasses.dataclass
class Split:
    """The examples of one split: a `tf.data` of `(uint8 image, label)`, their count and the
    files decoded on the fly (not cached), if any."""

    examples: tf.data.Dataset
    count: int
    streamed_files: tuple = ()


class Source(NamedTuple):
    """A dataset's splits and what its pipelines need to know (see `load_source`)."""

    train: Split
    test: Split
    class_names: list
    image_size: int
    style: str  # "cifar" (32-px recipe) or "imagenet"
    stats: tuple  # (per-channel mean, per-channel std) of images scaled to [0, 1]
    description: str
    validation: Split | None = None  # held out of the training split (`validation_split`)


# -- the validation split ----------------------------------------------------------------------
# The validation split does not depend on the run's seed: every run of a protocol, whatever its
# seed, is validated on the same images and trained on the same remaining ones.
VALIDATION_SEED = 1_000_003


def check_validation_split(fraction) -> None:
    """Raise `DataError` unless `fraction` is None or a number strictly between 0 and 1."""
    if fraction is not None and (isinstance(fraction, bool) or not isinstance(fraction, (int, float))
                                 or not 0 < fraction < 1):
        raise DataError(f"`validation_split` must be a fraction of the training split strictly between 0 and 1 "
                        f"(e.g. 0.1), or None for no validation split; got {fraction!r}.")


def holdout(labels, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """`(kept, held_out)`: sorted indices of a stratified, seeded validation split of `labels`.

    Each class gives `round(fraction * its count)` examples (at least one), drawn with
    `VALIDATION_SEED`; the rest stay for training.

    # Raises
    DataError: the split would leave a class without training examples.
    """
    labels = np.asarray(labels)
    held = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        count = max(1, int(round(fraction * len(members))))
        if count >= len(members):
            raise DataError(f"`validation_split` {fraction} leaves class {cls} with no training example "
                            f"({len(members)} in the training split).")
        held.append(np.random.default_rng([VALIDATION_SEED, int(cls)]).permutation(members)[:count])
    held = np.sort(np.concatenate(held))
    return np.setdiff1d(np.arange(len(labels)), held), held


# -- locations ---------------------------------------------------------------------------------
def cache_root() -> Path:
    """`$HBNN_CACHE_DIR`, else `~/.cache/hbnn_larq/datasets`."""
    return Path(os.environ.get("HBNN_CACHE_DIR") or Path.home() / ".cache" / "hbnn_larq" / "datasets")


def default_search_dirs(data_dir=None) -> list[Path]:
    """Folders searched for offline copies: `data_dir`, then `$HBNN_DATA_DIR`."""
    return [Path(c).expanduser() for c in (data_dir, os.environ.get("HBNN_DATA_DIR")) if c]


def _is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(ARCHIVE_SUFFIXES)


def _archive_stem(path: Path) -> str:
    name = path.name
    for suffix in ARCHIVE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def extract_archive(archive, root=None) -> Path:
    """Extract `archive` once into `root/<archive stem>` (default root: `cache_root()`).

    Extraction goes to a temporary sibling folder that is renamed when complete, so an
    interrupted extraction is never mistaken for a finished one.

    # Returns
    The extraction folder.
    """
    archive = Path(archive)
    root = Path(root) if root is not None else cache_root()
    target = root / _archive_stem(archive)
    if target.is_dir():
        return target
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=root))
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(staging, filter="data")
        os.rename(staging, target)
    except OSError:
        if not target.is_dir():  # another process may have won the race: only then is it fine
            raise
    except tarfile.TarError as error:
        raise DataError(f"Cannot extract archive {archive}: {error}") from error
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _split_root(path: Path) -> Path | None:
    """The folder holding `train/` and a test split: `path` itself or its only subfolder."""
    def has_splits(p):
        return (p / "train").is_dir() and any((p / s).is_dir() for s in TEST_SPLITS)

    if has_splits(path):
        return path
    subfolders = [p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")] if path.is_dir() else []
    if len(subfolders) == 1 and has_splits(subfolders[0]):
        return subfolders[0]
    return None


def _folder_or_archive(path: Path) -> Path | None:
    """The split root of a tree or of an archive at `path` (extracting it), else None."""
    if _is_archive(path):
        root = _split_root(extract_archive(path))
        if root is None:
            raise DataError(f"Archive {path} holds no train/ and test/ (or val/) image folders.")
        return root
    return _split_root(path) if path.is_dir() else None


def find_offline(name: str, data_dir=None) -> Path | None:
    """The split root of an offline copy of dataset `name`, or None (see the module docstring)."""
    path = Path(name).expanduser()
    if path.exists():
        root = _folder_or_archive(path)
        if root is None:
            raise DataError(f"{path} is neither an image-folder tree (train/<class>/*, test|val/<class>/*) nor a .tar/.tar.gz archive of one.")
        return root
    stem = OFFLINE_ARCHIVES.get(name)
    if stem is not None:
        for folder in default_search_dirs(data_dir):
            for candidate in [folder / stem] + [folder / f"{stem}{s}" for s in ARCHIVE_SUFFIXES]:
                if candidate.exists() and (root := _folder_or_archive(candidate)) is not None:
                    return root
        if data_dir is not None and (root := _split_root(Path(data_dir).expanduser())) is not None:
            return root
    if data_dir is not None:
        candidate = Path(data_dir).expanduser() / name
        if candidate.exists():
            return _folder_or_archive(candidate)
    return None


# -- generated and TFDS data -------------------------------------------------------------------
def load_synthetic(limits, seed: int, num_classes: int = 10, size: int = 32, validation_split=None) -> Source:
    """A generated task: each class has its own mean colour; texture noise on top (5,000 train
    and 1,000 test images unless `limits` says otherwise; the validation split is held out of
    the training images)."""
    rng = np.random.default_rng(seed)
    palette = rng.uniform(40, 215, (num_classes, 3))

    def split(n, salt, picks=None):
        r = np.random.default_rng([seed, salt])
        labels = r.integers(num_classes, size=n).astype(np.int32)
        images = np.clip(palette[labels][:, None, None, :] + r.normal(0, 40, (n, size, size, 3)), 0, 255).astype(np.uint8)
        parts = holdout(labels, validation_split) if validation_split else (np.arange(n), None)
        return [None if p is None else Split(tf.data.Dataset.from_tensor_slices((images[p], labels[p])), len(p))
                for p in parts]

    train, validation = split(limits[0] or 5000, 0)
    return Source(train, split(limits[1] or 1000, 1)[0], [f"class_{i}" for i in range(num_classes)],
                  size, "cifar", ((0.5,) * 3, (0.25,) * 3), "synthetic (generated colour-cue task, not real images)",
                  validation)


def load_tfds(name: str, data_dir, image_size, limits, download: bool, validation_split=None) -> Source:
    """TFDS dataset `name` from `data_dir` (TFDS' default without it), downloaded if `download`.

    The validation split is a seeded random subset of the training split's indices (not
    stratified: the labels are not read ahead of the pipeline)."""
    import tensorflow_datasets as tfds

    test_split = "test" if name.startswith("cifar") else "validation"
    try:
        (train, test), info = tfds.load(name, split=["train", test_split], data_dir=data_dir, as_supervised=True,
                                        with_info=True, download=download, shuffle_files=False)
    except Exception as error:  # noqa: BLE001 - TFDS raises many types; all mean "not available"
        raise DatasetNotFoundError(missing_message(name, data_dir, error)) from None
    counts = [info.splits[s].num_examples for s in ("train", test_split)]
    validation = None
    if validation_split:
        held = np.random.default_rng(VALIDATION_SEED).permutation(counts[0])[:max(1, int(round(validation_split * counts[0])))]
        is_held = tf.constant(np.isin(np.arange(counts[0]), held))
        indexed = train.enumerate()
        validation = (indexed.filter(lambda i, example: is_held[i]).map(lambda i, example: example), len(held))
        train, counts[0] = indexed.filter(lambda i, example: ~is_held[i]).map(lambda i, example: example), counts[0] - len(held)
    splits = []
    for ds, count, limit in zip((train, test), counts, limits):
        if limit is not None and limit < count:
            ds, count = ds.take(limit), limit
        splits.append(Split(ds.map(lambda im, y: (im, tf.cast(y, tf.int32))), count))
    if validation is not None:
        splits.append(Split(validation[0].map(lambda im, y: (im, tf.cast(y, tf.int32))), validation[1]))
    style = "cifar" if name.startswith("cifar") else "imagenet"
    size = int(image_size or (32 if style == "cifar" else 224))
    if style == "cifar" and size == 32:
        splits = [Split(s.examples.cache(), s.count) for s in splits]
    return Source(splits[0], splits[1], list(info.features["label"].names), size, style, NORMALIZATION[name],
                  f"tfds:{name}", splits[2] if validation is not None else None)


def missing_message(name: str, data_dir, error=None) -> str:
    """Why dataset `name` is not available, where offline copies were looked for, and how to supply it."""
    looked = ", ".join(str(d) for d in default_search_dirs(data_dir)) or "(no folder: neither --data-dir nor HBNN_DATA_DIR is set)"
    offline = OFFLINE_ARCHIVES.get(name)
    lines = [f"Dataset {name!r} is not available."]
    if offline:
        lines.append(f"No offline copy ({offline}.tar.gz, {offline}.tar or an extracted {offline}/ tree) in: {looked}.")
    if error is not None:
        lines.append(f"TensorFlow Datasets could not provide it either: {type(error).__name__}: {str(error)[:300]}")
    lines.append(
        "Supply it with --data-dir DIR (a folder holding the archive or the extracted tree, or a TFDS data dir), "
        "the environment variable HBNN_DATA_DIR, --dataset PATH (an image-folder tree train/<class>/*, "
        "test|val/<class>/*, or a .tar/.tar.gz of one), or run with internet access so that TFDS can download it."
    )
    return "\n".join(lines)
