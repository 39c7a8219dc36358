"""Input pipelines for `train.py`: TFDS datasets, image folders and image-folder archives.

```python
data = hbnn_larq.data.load_dataset("cifar10", batch_size=256)
model.fit(data.train, validation_data=data.test)
```

**Where `--dataset NAME` comes from**, first match wins:

1. `NAME` is a path: an image-folder tree (`train/<class>/*` plus `test/<class>/*` or
   `val/<class>/*`, possibly inside one top folder) or an archive of one (`.tar`, `.tar.gz`,
   `.tgz`).
2. For `cifar10` and `imagenette`, the offline copies `cifar10-jpeg.tar.gz` / `imagenette-224.tar`
   (or their extracted trees `cifar10-jpeg/`, `imagenette-224/`) in, in this order: `data_dir`
   (`--data-dir`), the folder named by the environment variable `HBNN_DATA_DIR`, and
   `../shared/datasets` next to the repository.
3. `data_dir/NAME` if that is a tree or an archive.
4. TensorFlow Datasets (`cifar10`, `cifar100`, `imagenet2012`, `imagenette`), stored in
   `data_dir` (TFDS' default `~/tensorflow_datasets` without it); downloaded if allowed.
5. `synthetic`: a generated 10-class 32x32 colour-cue task, for demos without any data.

Archives are extracted once into `$HBNN_CACHE_DIR` (default `~/.cache/hbnn_larq/datasets`),
atomically (into a temporary folder, then renamed), never next to the archive. Decoded images of
folder datasets are cached there too as `.npy` when the split fits in `HBNN_CACHE_MAX_BYTES`
(default 2 GB), so CIFAR-10 is decoded once (~6 s); bigger splits are decoded on the fly.

**Preprocessing.** Sources whose images are at most 64 px ("32-px data") get the CIFAR recipe:
zero-pad 4 + random crop + horizontal flip for training, nothing for evaluation. Larger images
("ImageNet-like") get random-resized-crop (scale 0.08-1, aspect 3/4-4/3) + flip for training
and resize + centre crop (ratio 0.875) for evaluation, at `image_size` (default 224). Images are
then normalised per channel with the CIFAR-10/100 or ImageNet mean/std, or with statistics
computed on the training split of an unknown folder dataset. The normalisation is part of the
pipeline, not of the model: feed a converted model normalised images (`ImageDataset.mean/std`).

Augmentation uses stateless random ops seeded from `seed`, so the data order and the
augmentations of a run are repeatable.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import tensorflow as tf

from hbnn_larq._atomic import atomic_open

TFDS_NAMES = ("cifar10", "cifar100", "imagenet2012", "imagenette")
OFFLINE_ARCHIVES = {"cifar10": "cifar10-jpeg", "imagenette": "imagenette-224"}
SYNTHETIC = "synthetic"
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
TRAIN_SPLITS = ("train",)
TEST_SPLITS = ("test", "val", "validation")
SMALL_IMAGE_MAX = 64  # sources up to this size get the CIFAR recipe
CENTRE_CROP = 0.875

_CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
_CIFAR100_STATS = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
_IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
NORMALIZATION = {
    "cifar10": _CIFAR10_STATS,
    "cifar10-jpeg": _CIFAR10_STATS,
    "cifar100": _CIFAR100_STATS,
    "imagenet2012": _IMAGENET_STATS,
    "imagenette": _IMAGENET_STATS,
    "imagenette-224": _IMAGENET_STATS,
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
class ImageDataset:
    """Batched, preprocessed train/test pipelines and what a training script needs to know.

    # Attributes
    train: `tf.data.Dataset` of `(images, labels)` training batches (shuffled, augmented,
        incomplete last batch dropped so that every worker of a multi-worker run agrees).
    test: `tf.data.Dataset` of evaluation batches.
    num_classes, class_names, image_size, num_train, num_test, steps_per_epoch: as named.
    style: `"cifar"` (32-px recipe) or `"imagenet"`.
    mean, std: per-channel normalisation constants (of images scaled to [0, 1]).
    source: where the data came from (path or `tfds:<name>`).
    """

    name: str
    train: tf.data.Dataset
    test: tf.data.Dataset
    num_classes: int
    class_names: list
    image_size: int
    num_train: int
    num_test: int
    steps_per_epoch: int
    style: str
    mean: tuple
    std: tuple
    source: str
    streamed_files: list = dataclasses.field(default_factory=list)

    def check_files(self) -> None:
        """Raise `UnreadableImagesError` if a file decoded on the fly (not cached) is unreadable.

        Call it when the pipeline failed with a bare `tf.errors.InvalidArgumentError`."""
        bad = find_unreadable(self.streamed_files) if self.streamed_files else []
        if bad:
            raise UnreadableImagesError(bad)

    @property
    def input_shape(self) -> tuple:
        return (self.image_size, self.image_size, 3)

    def probe_batch(self):
        """One fixed training batch `(x, y)` as tensors (e.g. for `ChartSelection`)."""
        return next(iter(self.train.take(1)))

    def summary(self) -> dict:
        fields = ("name", "source", "num_classes", "image_size", "num_train", "num_test", "style")
        return {**{f: getattr(self, f) for f in fields}, "mean": list(self.mean), "std": list(self.std)}


# -- locations ---------------------------------------------------------------------------------
def cache_root() -> Path:
    """`$HBNN_CACHE_DIR`, else `~/.cache/hbnn_larq/datasets`."""
    return Path(os.environ.get("HBNN_CACHE_DIR") or Path.home() / ".cache" / "hbnn_larq" / "datasets")


def default_search_dirs(data_dir=None) -> list[Path]:
    """Folders searched for offline copies: `data_dir`, `$HBNN_DATA_DIR`, `<repo>/../shared/datasets`."""
    candidates = [data_dir, os.environ.get("HBNN_DATA_DIR"), Path(__file__).resolve().parents[1].parent / "shared" / "datasets"]
    return [Path(c).expanduser() for c in candidates if c]


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
    dirs = default_search_dirs(data_dir)
    if stem is not None:
        for folder in dirs:
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


# -- image folders -----------------------------------------------------------------------------
def list_image_folder(split_dir, class_names=None):
    """`(paths, labels, class_names)` of `split_dir/<class>/<image>`, classes sorted by name."""
    split_dir = Path(split_dir)
    if class_names is None:
        class_names = sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    paths, labels = [], []
    for label, cls in enumerate(class_names):
        files = sorted(p for p in (split_dir / cls).glob("*") if p.suffix.lower() in IMAGE_SUFFIXES) if (split_dir / cls).is_dir() else []
        paths += [str(p) for p in files]
        labels += [label] * len(files)
    if not paths:
        raise DataError(f"No images ({', '.join(IMAGE_SUFFIXES)}) found in {split_dir}/<class>/.")
    return paths, np.array(labels, np.int32), list(class_names)


def _decode(path):
    image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    return tf.ensure_shape(image, [None, None, 3])


def _resize_square(image, size: int, crop: bool):
    """Resize the shorter side to `size` and centre-crop (`crop`), or resize to `size`x`size`."""
    if crop:
        shape = tf.cast(tf.shape(image)[:2], tf.float32)
        scale = size / tf.reduce_min(shape)
        new = tf.cast(tf.math.ceil(shape * scale), tf.int32)
        image = tf.image.resize(image, new, antialias=True)
        image = tf.image.resize_with_crop_or_pad(image, size, size)
    else:
        image = tf.image.resize(image, [size, size], antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)


def _decoder(storage_size: int, crop: bool):
    def decode(path):
        image = _decode(path)
        same = tf.reduce_all(tf.shape(image)[:2] == storage_size)
        return tf.cond(same, lambda: image, lambda: _resize_square(image, storage_size, crop))

    return decode


def find_unreadable(paths) -> list[str]:
    """The files among `paths` that `tf.io.decode_image` cannot decode."""
    ds = tf.data.Dataset.from_tensor_slices(np.arange(len(paths)))
    table = tf.constant(list(paths))
    ds = ds.map(lambda i: (i, tf.shape(_decode(table[i]))[0]), num_parallel_calls=tf.data.AUTOTUNE)
    ok = {int(i) for i, _ in ds.ignore_errors().as_numpy_iterator()}
    return [p for i, p in enumerate(paths) if i not in ok]


def decode_images(paths, storage_size: int, crop: bool) -> np.ndarray:
    """Decode `paths` (in parallel) into a uint8 array `[N, storage_size, storage_size, 3]`.

    # Raises
    UnreadableImagesError: listing every file that cannot be decoded.
    """
    table = tf.constant(list(paths))
    decode = _decoder(storage_size, crop)
    ds = tf.data.Dataset.from_tensor_slices(np.arange(len(paths)))
    ds = ds.map(lambda i: (i, decode(table[i])), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    images = np.zeros((len(paths), storage_size, storage_size, 3), np.uint8)
    seen = np.zeros(len(paths), bool)
    for batch_index, batch in ds.ignore_errors().batch(1024).as_numpy_iterator():
        images[batch_index], seen[batch_index] = batch, True
    if not seen.all():
        raise UnreadableImagesError([p for p, ok in zip(paths, seen) if not ok])
    return images


def _cached_decode(paths, storage_size: int, crop: bool) -> np.ndarray:
    """`decode_images`, memoised as an `.npy` keyed by the file list and the storage size."""
    key = hashlib.sha1("\n".join([str(storage_size), str(crop), *paths]).encode()).hexdigest()[:16]
    target = cache_root() / "decoded" / f"{key}.npy"
    if target.is_file():
        try:
            return np.load(target)
        except (OSError, ValueError):
            pass  # a corrupt cache file: decode again
    images = decode_images(paths, storage_size, crop)
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(target, "wb") as f:
        np.save(f, images)
    return images


def _subset(n: int, limit, seed: int, salt: int) -> np.ndarray:
    """Indices of a seeded random subset of `limit` of `n` examples (all of them, in order, without limit)."""
    if limit is None or limit >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng([seed, salt]).permutation(n)[:limit])


# -- the pipeline ------------------------------------------------------------------------------
def _augment_cifar(image, seed, size: int):
    padded = tf.pad(image, [[4, 4], [4, 4], [0, 0]])
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    image = tf.image.stateless_random_crop(padded, [size, size, 3], seed=crop_seed)
    return tf.image.stateless_random_flip_left_right(image, seed=flip_seed)


def _augment_imagenet(image, seed, size: int):
    box_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    begin, extent, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image), bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=box_seed,
        area_range=(0.08, 1.0), aspect_ratio_range=(3 / 4, 4 / 3), max_attempts=10,
        use_image_if_no_bounding_boxes=True)
    image = tf.slice(image, begin, extent)
    image = tf.image.resize(image, [size, size], antialias=True)
    return tf.image.stateless_random_flip_left_right(image, seed=flip_seed)


def _resize_view(image, size: int):
    same = tf.reduce_all(tf.shape(image)[:2] == size)
    return tf.cond(same, lambda: tf.cast(image, tf.float32), lambda: tf.image.resize(image, [size, size]))


def _centre_crop(image, size: int):
    resized = _resize_square(image, int(round(size / CENTRE_CROP)), crop=True)
    return tf.cast(tf.image.resize_with_crop_or_pad(resized, size, size), tf.float32)


def _batched(ds, *, train: bool, style: str, size: int, batch_size: int, mean, std, seed: int, num_examples: int):
    mean = tf.constant(mean, tf.float32) * 255.0
    std = tf.constant(std, tf.float32) * 255.0
    if train:
        ds = ds.shuffle(min(num_examples, 50_000), seed=seed, reshuffle_each_iteration=True)
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2, drop_remainder=True)
        augment = _augment_cifar if style == "cifar" else _augment_imagenet
        ds = tf.data.Dataset.zip((ds, seeds)).map(
            lambda example, s: (augment(example[0], s, size), example[1]), num_parallel_calls=tf.data.AUTOTUNE)
    else:
        view = _resize_view if style == "cifar" else _centre_crop
        ds = ds.map(lambda im, y: (view(im, size), y), num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.map(lambda im, y: ((tf.cast(im, tf.float32) - mean) / std, y), num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch_size, drop_remainder=train).prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    # In-memory data cannot be sharded by file: multi-worker runs shard by element.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options)


@dataclasses.dataclass
class _Split:
    """Undecoded or decoded examples of one split: a `tf.data` of `(uint8 image, label)`."""

    examples: tf.data.Dataset
    count: int
    streamed_files: tuple = ()


def _folder_split(paths, labels, picks, storage_size: int, crop: bool, budget: int):
    """`(split, decoded images or None)` of the examples `picks` of a folder split.

    The whole split is decoded and cached when it fits in `budget` bytes, so that runs on
    different subsets share one cache; otherwise the picked files are decoded on the fly.
    """
    if len(paths) * storage_size**2 * 3 <= budget:
        images = _cached_decode(paths, storage_size, crop)[picks]
        return _Split(tf.data.Dataset.from_tensor_slices((images, labels[picks])), len(picks)), images
    decode = _decoder(storage_size, crop)
    files = [paths[i] for i in picks]
    ds = tf.data.Dataset.from_tensor_slices((files, labels[picks]))
    ds = ds.map(lambda p, y: (decode(p), y), num_parallel_calls=tf.data.AUTOTUNE)
    return _Split(ds, len(picks), tuple(files)), None


def _native_size(path: str) -> int:
    try:
        return int(max(_decode(path).shape[:2]))
    except tf.errors.OpError:
        raise UnreadableImagesError([path]) from None


def _load_folder(root: Path, name: str, image_size, limits, seed: int):
    train_paths, train_labels, classes = list_image_folder(root / "train")
    test_dir = next(root / s for s in TEST_SPLITS if (root / s).is_dir())
    test_paths, test_labels, _ = list_image_folder(test_dir, classes)
    picks = [_subset(len(train_paths), limits[0], seed, 0), _subset(len(test_paths), limits[1], seed, 1)]
    native = _native_size(train_paths[0])
    style = "cifar" if native <= SMALL_IMAGE_MAX else "imagenet"
    size = int(image_size or (native if style == "cifar" else 224))
    storage, crop = (size, False) if style == "cifar" else (int(round(size / CENTRE_CROP)), True)
    budget = int(float(os.environ.get("HBNN_CACHE_MAX_BYTES", 2e9)))
    train, train_images = _folder_split(train_paths, train_labels, picks[0], storage, crop, budget)
    test, _ = _folder_split(test_paths, test_labels, picks[1], storage, crop, budget)
    stats = NORMALIZATION.get(name) or NORMALIZATION.get(root.name)
    if stats is None:
        stats = _channel_stats(train_images if train_images is not None else decode_images([train_paths[i] for i in picks[0][:1000]], storage, crop))
    return train, test, classes, size, style, stats


def _channel_stats(images: np.ndarray):
    pixels = images.reshape(-1, 3).astype(np.float64) / 255.0
    return tuple(pixels.mean(0).round(4)), tuple(np.maximum(pixels.std(0), 1e-3).round(4))


def _load_synthetic(limits, seed: int, num_classes: int = 10, size: int = 32):
    """A generated task: each class has its own mean colour; texture noise on top."""
    rng = np.random.default_rng(seed)
    palette = rng.uniform(40, 215, (num_classes, 3))

    def split(n, salt):
        r = np.random.default_rng([seed, salt])
        labels = r.integers(num_classes, size=n).astype(np.int32)
        images = palette[labels][:, None, None, :] + r.normal(0, 40, (n, size, size, 3))
        return _Split(tf.data.Dataset.from_tensor_slices((np.clip(images, 0, 255).astype(np.uint8), labels)), n)

    train, test = split(limits[0] or 5000, 0), split(limits[1] or 1000, 1)
    return train, test, [f"class_{i}" for i in range(num_classes)], size, "cifar", ((0.5,) * 3, (0.25,) * 3)


def _load_tfds(name: str, data_dir, image_size, limits, seed: int, download: bool):
    import tensorflow_datasets as tfds

    test_split = "test" if name.startswith("cifar") else "validation"
    try:
        (train, test), info = tfds.load(name, split=["train", test_split], data_dir=data_dir, as_supervised=True,
                                        with_info=True, download=download, shuffle_files=False)
    except Exception as error:  # noqa: BLE001 - TFDS raises many types; all mean "not available"
        raise DatasetNotFoundError(_missing_message(name, data_dir, error)) from None
    counts = [info.splits[s].num_examples for s in ("train", test_split)]
    splits = []
    for ds, count, limit in zip((train, test), counts, limits):
        if limit is not None and limit < count:
            ds, count = ds.take(limit), limit
        splits.append(_Split(ds.map(lambda im, y: (im, tf.cast(y, tf.int32))), count))
    style = "cifar" if name.startswith("cifar") else "imagenet"
    size = int(image_size or (32 if style == "cifar" else 224))
    if style == "cifar" and size == 32:
        splits = [_Split(s.examples.cache(), s.count) for s in splits]
    return splits[0], splits[1], list(info.features["label"].names), size, style, NORMALIZATION[name]


def _missing_message(name: str, data_dir, error=None) -> str:
    looked = ", ".join(str(d) for d in default_search_dirs(data_dir)) or "(no folder)"
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


def load_dataset(
    name: str,
    *,
    data_dir=None,
    batch_size: int = 256,
    image_size: int | None = None,
    max_train_examples: int | None = None,
    max_test_examples: int | None = None,
    seed: int = 0,
    download: bool = True,
) -> ImageDataset:
    """Train/test pipelines for dataset `name` (see the module docstring for the resolution order).

    # Arguments
    name: a TFDS name (`cifar10`, `cifar100`, `imagenet2012`, `imagenette`), `synthetic`, or a
        path to an image-folder tree or archive.
    data_dir: folder searched first for offline copies; TFDS data dir.
    batch_size: global batch size, int >= 1.
    image_size: side of the model input; default: native size for 32-px data, 224 otherwise.
    max_train_examples, max_test_examples: use a seeded random subset of this size.
    seed: seed of subsets, shuffling and augmentation.
    download: let TFDS download a dataset that is not prepared yet.

    # Returns
    An `ImageDataset`.

    # Raises
    DatasetNotFoundError: the dataset is nowhere to be found (the message says how to supply it).
    UnreadableImagesError: image files that cannot be decoded (listed in the message).
    DataError: other invalid arguments.
    """
    for arg, value in (("batch_size", batch_size), ("image_size", image_size),
                       ("max_train_examples", max_train_examples), ("max_test_examples", max_test_examples)):
        if value is not None and (not isinstance(value, (int, np.integer)) or value < 1):
            raise DataError(f"`{arg}` must be a positive integer, got {value!r}.")
    limits = (max_train_examples, max_test_examples)
    if name == SYNTHETIC:
        loaded, source = _load_synthetic(limits, seed), "synthetic (generated colour-cue task, not real images)"
    elif (root := find_offline(name, data_dir)) is not None:
        loaded, source = _load_folder(root, name, image_size, limits, seed), str(root)
    elif name in TFDS_NAMES:
        loaded, source = _load_tfds(name, data_dir, image_size, limits, seed, download), f"tfds:{name}"
    else:
        raise DatasetNotFoundError(
            f"Unknown dataset {name!r}: not an existing path, and not one of {', '.join(TFDS_NAMES + (SYNTHETIC,))}.\n"
            + _missing_message(name, data_dir).split("\n", 1)[1])
    train, test, classes, size, style, (mean, std) = loaded
    if train.count < batch_size:
        raise DataError(f"`batch_size` ({batch_size}) is larger than the training set ({train.count} examples).")
    common = dict(style=style, size=size, batch_size=batch_size, mean=mean, std=std, seed=seed)
    return ImageDataset(
        name=name,
        train=_batched(train.examples, train=True, num_examples=train.count, **common),
        test=_batched(test.examples, train=False, num_examples=test.count, **common),
        num_classes=len(classes), class_names=classes, image_size=size,
        num_train=train.count, num_test=test.count, steps_per_epoch=train.count // batch_size,
        style=style, mean=tuple(float(m) for m in mean), std=tuple(float(s) for s in std), source=source,
        streamed_files=[*train.streamed_files, *test.streamed_files],
    )

