"""Input pipelines for `train.py`: `load_dataset` finds a dataset (see
`hbnn_larq.training.sources` for where from) and returns its batched, preprocessed splits.

```python
from hbnn_larq.training.data import load_dataset
data = load_dataset("cifar10", batch_size=256)
model.fit(data.train, validation_data=data.test)
```

**Preprocessing.** Sources whose images are at most 64 px ("32-px data") get the CIFAR recipe:
zero-pad 4 + random crop + horizontal flip for training, nothing for evaluation. Larger images
("ImageNet-like") get random-resized-crop (scale 0.08-1, aspect 3/4-4/3) + flip for training
and resize + centre crop (ratio 0.875) for evaluation, at `image_size` (default 224). The
pipelines yield float32 RGB pixel values in [0, 255]: the normalisation is part of the model, not
of the pipeline (`train.py` builds zoo models with `input_normalization=(dataset.mean,
dataset.std)`: the CIFAR-10/100 or ImageNet statistics, or those of the training split of an
unknown folder dataset), so the saved `model.keras` and the converted `.tflite` take images as
they come (uint8 images cast to float32).

Augmentation uses stateless random ops seeded from `seed`, so the data order and the
augmentations of a run are repeatable. A segment of a run (`first_epoch=K > 0`, issue 28's
checkpointed long runs) seeds its shuffling and augmentation from `(seed, K)` instead
(`order_seed`): without that, every segment would replay the first segment's data order and
augmentations epoch by epoch.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from hbnn_larq.training.image_folders import CENTRE_CROP, find_unreadable, load_folder, resize_square
from hbnn_larq.training.sources import (SYNTHETIC, TFDS_NAMES, DataError, DatasetNotFoundError, UnreadableImagesError,
                                        check_validation_split, find_offline, load_synthetic, load_tfds,
                                        missing_message)

__all__ = ["DataError", "DatasetNotFoundError", "ImageDataset", "UnreadableImagesError", "load_dataset"]


@dataclasses.dataclass
class ImageDataset:
    """Batched, preprocessed train/test pipelines and what a training script needs to know.

    # Attributes
    train: `tf.data.Dataset` of `(images, labels)` training batches (shuffled, augmented,
        incomplete last batch dropped so that every worker of a multi-worker run agrees).
    test: `tf.data.Dataset` of evaluation batches.
    validation: `tf.data.Dataset` of evaluation batches of the validation split held out of the
        training split (`validation_split`), or None.
    num_classes, class_names, image_size, num_train, num_test, num_validation, steps_per_epoch: as named.
    style: `"cifar"` (32-px recipe) or `"imagenet"`.
    mean, std: per-channel statistics of images scaled to [0, 1] (the model's input normalisation).
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
    validation: tf.data.Dataset | None = None
    num_validation: int = 0

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
        fields = ("name", "source", "num_classes", "image_size", "num_train", "num_validation", "num_test", "style")
        return {**{f: getattr(self, f) for f in fields}, "mean": list(self.mean), "std": list(self.std)}


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
    resized = resize_square(image, int(round(size / CENTRE_CROP)), crop=True)
    return tf.cast(tf.image.resize_with_crop_or_pad(resized, size, size), tf.float32)


def order_seed(seed: int, first_epoch: int = 0) -> int:
    """The seed of the training split's shuffling and augmentation for a run whose first epoch
    is `first_epoch + 1`: `seed` for a whole run, a seed drawn from `(seed, first_epoch)` for a
    later segment (a non-negative int32)."""
    if first_epoch == 0:
        return seed
    return int(np.random.SeedSequence([seed, first_epoch]).generate_state(1)[0] & 0x7FFFFFFF)


def _batched(ds, *, train: bool, style: str, size: int, batch_size: int, num_examples: int, seed: int | None = None):
    if train:
        ds = ds.shuffle(min(num_examples, 50_000), seed=seed, reshuffle_each_iteration=True)
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2, drop_remainder=True)
        augment = _augment_cifar if style == "cifar" else _augment_imagenet
        ds = tf.data.Dataset.zip((ds, seeds)).map(
            lambda example, s: (augment(example[0], s, size), example[1]), num_parallel_calls=tf.data.AUTOTUNE)
    else:
        view = _resize_view if style == "cifar" else _centre_crop
        ds = ds.map(lambda im, y: (view(im, size), y), num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.map(lambda im, y: (tf.cast(im, tf.float32), y), num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch_size, drop_remainder=train).prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    # In-memory data cannot be sharded by file: multi-worker runs shard by element.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options)


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
    validation_split: float | None = None,
    first_epoch: int = 0,
) -> ImageDataset:
    """Train/test pipelines for dataset `name` (see `hbnn_larq.training.sources` for the resolution order).

    # Arguments
    name: a TFDS name (`cifar10`, `cifar100`, `imagenet2012`, `imagenette`), `synthetic`, or a
        path to an image-folder tree or archive.
    data_dir: folder searched first for offline copies (then `$HBNN_DATA_DIR`); TFDS data dir.
    batch_size: global batch size, int >= 1.
    image_size: side of the model input; default: native size for 32-px data, 224 otherwise.
    max_train_examples, max_test_examples: use a seeded random subset of this size.
    seed: seed of subsets, shuffling and augmentation.
    download: let TFDS download a dataset that is not prepared yet.
    validation_split: fraction of the training split held out for validation (stratified, with
        a seed of its own: the same images for every run seed; see `sources.holdout`), before
        `max_train_examples` draws its subset from the rest. None: no validation split.
    first_epoch: the number of epochs a segmented run has already trained (int >= 0): the
        training split's shuffling and augmentation are seeded with `order_seed(seed,
        first_epoch)`; the subsets and the validation split do not change.

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
    if isinstance(first_epoch, bool) or not isinstance(first_epoch, (int, np.integer)) or first_epoch < 0:
        raise DataError(f"`first_epoch` must be an integer >= 0, got {first_epoch!r}.")
    check_validation_split(validation_split)
    limits = (max_train_examples, max_test_examples)
    if name == SYNTHETIC:
        source = load_synthetic(limits, seed, validation_split=validation_split)
    elif (root := find_offline(name, data_dir)) is not None:
        source = load_folder(root, name, image_size, limits, seed, validation_split)
    elif name in TFDS_NAMES:
        source = load_tfds(name, data_dir, image_size, limits, download, validation_split)
    else:
        raise DatasetNotFoundError(
            f"Unknown dataset {name!r}: not an existing path, and not one of {', '.join(TFDS_NAMES + (SYNTHETIC,))}.\n"
            + missing_message(name, data_dir).split("\n", 1)[1])
    train, test, (mean, std) = source.train, source.test, source.stats
    if train.count < batch_size:
        raise DataError(f"`batch_size` ({batch_size}) is larger than the training set ({train.count} examples).")
    common = dict(style=source.style, size=source.image_size, batch_size=batch_size)
    validation = source.validation
    return ImageDataset(
        name=name,
        train=_batched(train.examples, train=True, num_examples=train.count,
                       seed=order_seed(seed, first_epoch), **common),
        test=_batched(test.examples, train=False, num_examples=test.count, **common),
        num_classes=len(source.class_names), class_names=source.class_names, image_size=source.image_size,
        num_train=train.count, num_test=test.count, steps_per_epoch=train.count // batch_size,
        style=source.style, mean=tuple(float(m) for m in mean), std=tuple(float(s) for s in std),
        source=source.description,
        streamed_files=[*train.streamed_files, *test.streamed_files, *(validation.streamed_files if validation else ())],
        validation=None if validation is None else _batched(validation.examples, train=False,
                                                            num_examples=validation.count, **common),
        num_validation=0 if validation is None else validation.count,
    )
