"""Reading an image-folder tree (`train/<class>/*`, `test|val/<class>/*`) as a `Source`.

Images are decoded once, at the size the pipeline reads them at (32-px data: the model input;
ImageNet-like data: the input / 0.875, the evaluation crop's ratio). A split that fits in
`HBNN_CACHE_MAX_BYTES` (default 2 GB) is decoded as a whole and cached as `.npy` in
`hbnn_larq.training.sources.cache_root()`, so that runs on different subsets share one cache;
bigger splits are decoded on the fly.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import tensorflow as tf

from hbnn_larq._atomic import atomic_open
from hbnn_larq.zoo.common import MAX_CIFAR_SIDE
from hbnn_larq.training.sources import (NORMALIZATION, TEST_SPLITS, DataError, Source, Split, UnreadableImagesError,
                                        cache_root, holdout)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
CENTRE_CROP = 0.875  # the evaluation crop of ImageNet-like images (and their stored size's ratio)


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


def resize_square(image, size: int, crop: bool):
    """Resize the shorter side to `size` and centre-crop (`crop`), or resize to `size`x`size`;
    the result is uint8."""
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
        return tf.cond(same, lambda: image, lambda: resize_square(image, storage_size, crop))

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


def _folder_split(paths, labels, picks, storage_size: int, crop: bool, budget: int):
    """`(split, decoded images or None)` of the examples `picks` of a folder split.

    The whole split is decoded and cached when it fits in `budget` bytes, so that runs on
    different subsets share one cache; otherwise the picked files are decoded on the fly.
    """
    if len(paths) * storage_size**2 * 3 <= budget:
        images = _cached_decode(paths, storage_size, crop)[picks]
        return Split(tf.data.Dataset.from_tensor_slices((images, labels[picks])), len(picks)), images
    decode = _decoder(storage_size, crop)
    files = [paths[i] for i in picks]
    ds = tf.data.Dataset.from_tensor_slices((files, labels[picks]))
    ds = ds.map(lambda p, y: (decode(p), y), num_parallel_calls=tf.data.AUTOTUNE)
    return Split(ds, len(picks), tuple(files)), None


def _native_size(path: str) -> int:
    try:
        return int(max(_decode(path).shape[:2]))
    except tf.errors.OpError:
        raise UnreadableImagesError([path]) from None


def load_folder(root: Path, name: str, image_size, limits, seed: int, validation_split=None) -> Source:
    """The image-folder tree at `root` (the folder holding `train/`) as dataset `name`.

    Sources whose images are at most `hbnn_larq.zoo.common.MAX_CIFAR_SIDE` px get the 32-px (CIFAR) style; their
    normalisation is the named dataset's, else computed on the training split.
    `limits`: `(max_train_examples, max_test_examples)`, seeded random subsets (None: all).
    `validation_split`: the fraction of `train/` held out, stratified (`sources.holdout`), before
    the training subset is drawn from the rest."""
    train_paths, train_labels, classes = list_image_folder(root / "train")
    test_dir = next(root / s for s in TEST_SPLITS if (root / s).is_dir())
    test_paths, test_labels, _ = list_image_folder(test_dir, classes)
    kept, held = holdout(train_labels, validation_split) if validation_split else (np.arange(len(train_paths)), None)
    picks = [kept[_subset(len(kept), limits[0], seed, 0)], _subset(len(test_paths), limits[1], seed, 1)]
    native = _native_size(train_paths[0])
    style = "cifar" if native <= MAX_CIFAR_SIDE else "imagenet"
    size = int(image_size or (native if style == "cifar" else 224))
    storage, crop = (size, False) if style == "cifar" else (int(round(size / CENTRE_CROP)), True)
    budget = int(float(os.environ.get("HBNN_CACHE_MAX_BYTES", 2e9)))
    train, train_images = _folder_split(train_paths, train_labels, picks[0], storage, crop, budget)
    test, _ = _folder_split(test_paths, test_labels, picks[1], storage, crop, budget)
    validation = None if held is None else _folder_split(train_paths, train_labels, held, storage, crop, budget)[0]
    stats = NORMALIZATION.get(name) or NORMALIZATION.get(root.name)
    if stats is None:
        stats = _channel_stats(train_images if train_images is not None else decode_images([train_paths[i] for i in picks[0][:1000]], storage, crop))
    return Source(train, test, classes, size, style, stats, str(root), validation)


def _channel_stats(images: np.ndarray):
    pixels = images.reshape(-1, 3).astype(np.float64) / 255.0
    return tuple(pixels.mean(0).round(4)), tuple(np.maximum(pixels.std(0), 1e-3).round(4))
