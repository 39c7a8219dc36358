"""Tests of `hbnn_larq.training.data` and `.sources` on tiny generated image folders (no real dataset needed)."""

import os
import tarfile

import numpy as np
import pytest
import tensorflow as tf

from hbnn_larq.training import data, sources

COLOURS = ((220, 30, 30), (30, 220, 30), (30, 30, 220))


def write_image_folder(root, *, size=32, train_per_class=8, test_per_class=4, test_split="test", seed=0):
    """`root/{train,test}/<class>/*.jpg`: each class has its own colour, plus noise."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", train_per_class), (test_split, test_per_class)):
        for label, colour in enumerate(COLOURS):
            folder = root / split / f"class_{label}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                image = np.clip(np.array(colour) + rng.normal(0, 20, (size, size, 3)), 0, 255).astype(np.uint8)
                (folder / f"{i:03d}.jpg").write_bytes(tf.io.encode_jpeg(image).numpy())
    return root


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HBNN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("HBNN_DATA_DIR", raising=False)
    return tmp_path / "cache"


def test_image_folder_pipeline(tmp_path, cache):
    root = write_image_folder(tmp_path / "tiny")
    ds = data.load_dataset(str(root), batch_size=4)
    assert (ds.num_classes, ds.num_train, ds.num_test, ds.steps_per_epoch) == (3, 24, 12, 6)
    assert ds.style == "cifar" and ds.image_size == 32
    x, y = ds.probe_batch()
    assert x.shape == (4, 32, 32, 3) and x.dtype == tf.float32
    assert len(list(ds.train)) == 6 and sum(int(b[0].shape[0]) for b in ds.test) == 12
    # Unknown folder: statistics computed from the training split (red-ish, green-ish, blue-ish average).
    assert all(0.2 < m < 0.6 for m in ds.mean)
    # Pixels as they come (the model normalises): the dominant channel of a test image is its label.
    assert 0 <= float(tf.reduce_min(x)) and float(tf.reduce_max(x)) <= 255 and float(tf.reduce_max(x)) > 150
    for images, labels in ds.test:
        centre = images.numpy()[:, 12:20, 12:20].mean((1, 2))
        assert (centre.argmax(1) == labels.numpy()).all()
    assert list(cache.glob("decoded/*.npy")), "decoded images are cached"


def test_seed_makes_data_repeatable(tmp_path, cache):
    root = write_image_folder(tmp_path / "tiny")
    first = [data.load_dataset(str(root), batch_size=8, seed=s).probe_batch() for s in (1, 1, 2)]
    np.testing.assert_array_equal(first[0][0], first[1][0])
    np.testing.assert_array_equal(first[0][1], first[1][1])
    assert not np.array_equal(first[0][0], first[2][0])


def test_a_segment_does_not_replay_the_first_segments_data_order(tmp_path, cache):
    root = write_image_folder(tmp_path / "tiny")

    def first_batch(first_epoch):
        ds = data.load_dataset(str(root), batch_size=8, seed=1, first_epoch=first_epoch)
        return ds, [t.numpy() for t in ds.probe_batch()]

    (whole, (x0, y0)), (_, (x0_again, _)), (segment, (x3, y3)) = first_batch(0), first_batch(0), first_batch(3)
    np.testing.assert_array_equal(x0, x0_again)
    assert not np.array_equal(x0, x3) and not np.array_equal(y0, y3)
    # The same examples: only the training order and augmentations change.
    assert (segment.num_train, segment.num_test) == (whole.num_train, whole.num_test)
    for a, b in zip(whole.test, segment.test):
        np.testing.assert_array_equal(a[0], b[0])
    seeds = [data.order_seed(1, k) for k in range(6)]
    assert seeds[0] == 1 and len(set(seeds)) == 6 and all(0 <= s < 2**31 for s in seeds)
    for bad in (-1, 1.5, True):
        with pytest.raises(data.DataError, match="`first_epoch` must be an integer >= 0"):
            data.load_dataset(str(root), batch_size=8, first_epoch=bad)


def test_subsets_and_imagenet_style(tmp_path, cache):
    root = write_image_folder(tmp_path / "big", size=80, train_per_class=4, test_per_class=2, test_split="val")
    ds = data.load_dataset(str(root), batch_size=2, image_size=48, max_train_examples=5, max_test_examples=3)
    assert ds.style == "imagenet" and (ds.num_train, ds.num_test) == (5, 3)
    assert ds.probe_batch()[0].shape == (2, 48, 48, 3)
    assert next(iter(ds.test))[0].shape == (2, 48, 48, 3)


def test_archive_is_extracted_once_into_the_cache(tmp_path, cache):
    write_image_folder(tmp_path / "src" / "tiny-set")
    archive = tmp_path / "tiny-set.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "src" / "tiny-set", arcname="tiny-set")
    ds = data.load_dataset(str(archive), batch_size=4)
    assert ds.num_train == 24 and ds.source.startswith(str(cache))
    marker = cache / "tiny-set"
    stamp = os.stat(marker).st_mtime_ns
    data.load_dataset(str(archive), batch_size=4)
    assert os.stat(marker).st_mtime_ns == stamp
    assert not [p for p in cache.iterdir() if p.name.startswith(".")], "no staging folder left behind"
    assert not (tmp_path / "tiny-set").exists(), "never extracted next to the archive"


def test_offline_resolution_order(tmp_path, cache, monkeypatch):
    write_image_folder(tmp_path / "a" / "cifar10-jpeg", train_per_class=2)
    write_image_folder(tmp_path / "b" / "cifar10-jpeg", train_per_class=3)
    assert sources.default_search_dirs() == []  # nothing but --data-dir and $HBNN_DATA_DIR
    monkeypatch.setenv("HBNN_DATA_DIR", str(tmp_path / "b"))
    assert sources.find_offline("cifar10", data_dir=tmp_path / "a") == tmp_path / "a" / "cifar10-jpeg"
    assert sources.find_offline("cifar10") == tmp_path / "b" / "cifar10-jpeg"
    ds = data.load_dataset("cifar10", data_dir=str(tmp_path / "a"), batch_size=2)
    assert ds.num_train == 6 and ds.mean == pytest.approx(sources.NORMALIZATION["cifar10"][0])


def test_unreadable_images_are_listed(tmp_path, cache):
    root = write_image_folder(tmp_path / "tiny")
    bad = [root / "train" / "class_1" / "broken.jpg", root / "test" / "class_2" / "empty.png"]
    bad[0].write_bytes(b"this is not a jpeg")
    bad[1].write_bytes(b"")
    with pytest.raises(data.UnreadableImagesError) as error:
        data.load_dataset(str(root), batch_size=4)
    assert str(bad[0]) in str(error.value) and error.value.paths == [str(bad[0])]
    bad[0].unlink()
    with pytest.raises(data.UnreadableImagesError, match="empty.png"):
        data.load_dataset(str(root), batch_size=4)


def test_missing_datasets_say_how_to_supply_them(tmp_path, cache):
    with pytest.raises(data.DatasetNotFoundError, match="(?s)Unknown dataset .nope.*cifar10.*--data-dir"):
        data.load_dataset("nope", batch_size=4)
    with pytest.raises(data.DatasetNotFoundError, match="(?s)'cifar100' is not available.*HBNN_DATA_DIR"):
        data.load_dataset("cifar100", data_dir=str(tmp_path / "empty"), download=False)
    assert "No offline copy (cifar10-jpeg.tar.gz" in sources.missing_message("cifar10", None)
    assert "neither --data-dir nor HBNN_DATA_DIR is set" in sources.missing_message("cifar10", None)
    (tmp_path / "flat").mkdir()
    with pytest.raises(data.DataError, match="neither an image-folder tree"):
        data.load_dataset(str(tmp_path / "flat"))


def test_bad_arguments(tmp_path, cache):
    root = write_image_folder(tmp_path / "tiny")
    with pytest.raises(data.DataError, match="`batch_size`.*larger than the training set"):
        data.load_dataset(str(root), batch_size=100)
    with pytest.raises(data.DataError, match="`image_size` must be a positive integer"):
        data.load_dataset(str(root), image_size=0)


def test_synthetic_dataset_is_learnable_signal():
    ds = data.load_dataset("synthetic", batch_size=50, max_train_examples=100, max_test_examples=50)
    assert ds.num_classes == 10 and "synthetic" in ds.source
    x, y = (t.numpy() for t in next(iter(ds.test)))
    means = x.mean((1, 2))
    same = [np.abs(means[y == c] - means[y == c].mean(0)).max() for c in np.unique(y) if (y == c).sum() > 1]
    assert max(same) < 0.5 * 0.25 * 255  # a class's images share their mean colour (half a std, in pixels)


def test_unreadable_streamed_images_are_found(tmp_path, cache, monkeypatch):
    monkeypatch.setenv("HBNN_CACHE_MAX_BYTES", "0")  # too big to cache: decoded on the fly
    root = write_image_folder(tmp_path / "tiny")
    bad = root / "test" / "class_0" / "zz-broken.jpg"
    bad.write_bytes(b"garbage")
    ds = data.load_dataset(str(root), batch_size=4)
    assert len(ds.streamed_files) == 37 and not list(cache.glob("decoded/*.npy"))
    with pytest.raises(tf.errors.InvalidArgumentError):
        list(ds.test)
    with pytest.raises(data.UnreadableImagesError, match="zz-broken.jpg"):
        ds.check_files()


def _labels(ds) -> np.ndarray:
    return np.concatenate([y.numpy() for _, y in ds])


def _images(ds) -> np.ndarray:
    return np.concatenate([x.numpy() for x, _ in ds])


def write_uniform_folder(root, *, per_class=10, classes=3):
    """PNG images of one uniform colour each, unique per image (red channel = its index): an
    augmented crop still shows it in its centre, so images can be told apart after augmentation."""
    for split, count in (("train", per_class), ("test", 2)):
        for label in range(classes):
            folder = root / split / f"class_{label}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                ident = 8 * (label * per_class + i) + (1 if split == "test" else 0)
                image = np.full((32, 32, 3), (ident, 40 * label, 7), np.uint8)
                (folder / f"{i:03d}.png").write_bytes(tf.io.encode_png(image).numpy())
    return root


def _centres(ds) -> set:
    return {int(x[16, 16, 0]) for batch, _ in ds for x in batch.numpy()}


def test_validation_split_is_stratified_held_out_and_the_same_for_every_seed(tmp_path, cache):
    root = write_uniform_folder(tmp_path / "uniform")
    splits = [data.load_dataset(str(root), batch_size=3, validation_split=0.2, seed=s) for s in (0, 1)]
    ds = splits[0]
    assert (ds.num_train, ds.num_validation, ds.num_test) == (24, 6, 6)
    assert np.bincount(_labels(ds.validation)).tolist() == [2, 2, 2]  # stratified: 20 % of each class
    assert _centres(ds.validation) == _centres(splits[1].validation)  # the same images for every seed
    trained = set().union(*(_centres(ds.train) for _ in range(3)))  # several epochs: every image shows
    assert len(trained) == 24 and not trained & _centres(ds.validation)  # held out of training
    # max_train_examples draws from what is left, never from the validation split.
    small = data.load_dataset(str(root), batch_size=3, validation_split=0.2, max_train_examples=9)
    assert (small.num_train, small.num_validation) == (9, 6)
    assert not _centres(small.train) & _centres(small.validation)


@pytest.mark.parametrize("fraction", [0, 1, 1.5, -0.1, True, "0.1"])
def test_invalid_validation_split_names_the_parameter(fraction):
    with pytest.raises(data.DataError, match="validation_split"):
        data.load_dataset("synthetic", batch_size=10, validation_split=fraction)


def test_validation_split_that_empties_a_class_is_refused():
    with pytest.raises(data.DataError, match="no training example"):
        sources.holdout(np.array([0, 0, 1]), 0.5)


def test_synthetic_validation_split():
    ds = data.load_dataset("synthetic", batch_size=50, max_train_examples=200, validation_split=0.25)
    assert ds.num_validation == sum(np.bincount(_labels(ds.validation))) and 40 <= ds.num_validation <= 60
    assert ds.num_train == 200 - ds.num_validation
