"""Tests of the bit-packed pretrained-weights format and the shipped-weights registry."""

import json
import math

import larq as lq
import numpy as np
import pytest
import tensorflow as tf

import hbnn_larq
from hbnn_larq import zoo
from hbnn_larq.quantizers import hyperbolic_kernels
from hbnn_larq.utils import binarized_layers, own_weights, quantized_kernel
from hbnn_larq.zoo import pretrained
from tests.helpers import SEPARABLE_TOY_KERNELS, move_points, separable_toy_model

TINY = {"width": 0.25, "input_shape": (16, 16, 3), "num_classes": 4, "classifier_activation": None}


def trained_vggsmall(kernel_quantizer=None, steps=2):
    """A tiny VGG-Small after a few eager SGD steps on random data: points, kernels and BN
    statistics all move (eager steps avoid tracing `fit`, which is slow on a shared CPU)."""
    model = zoo.VGGSmall(kernel_quantizer=kernel_quantizer, **TINY)
    optimizer = hbnn_larq.RiemannianOptimizer(tf.keras.optimizers.SGD(0.5, momentum=0.9))
    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        x = rng.normal(size=(8, 16, 16, 3)).astype("float32")
        with tf.GradientTape() as tape:
            loss = loss_fn(rng.integers(0, 4, size=8), model(x, training=True))
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_weights), model.trainable_weights))
    return model


def inputs(n=4, side=16, seed=1):
    return np.random.default_rng(seed).normal(size=(n, side, side, 3)).astype("float32")


def test_round_trip_is_exact_and_resets_points(tmp_path):
    model = trained_vggsmall()
    quantizers = [q for _, q in hbnn_larq.hyperbolic_quantizers(model)]
    assert all(np.abs(q.points[0].numpy()).max() > 0 for q in quantizers)  # the points moved
    path = zoo.save_pretrained(model, tmp_path / "vgg")
    restored = zoo.VGGSmall(weights=str(path), **TINY)
    x = inputs()
    np.testing.assert_array_equal(restored(x, training=False), model(x, training=False))
    for source, target in zip(binarized_layers(model), binarized_layers(restored)):
        np.testing.assert_array_equal(quantized_kernel(target), quantized_kernel(source))
        assert not np.any(target.kernel_quantizer.points[0].numpy())
        assert int(target.kernel_quantizer.active_index.numpy()) == 0


def test_file_is_bit_packed(tmp_path):
    model = trained_vggsmall(steps=1)
    path = zoo.save_pretrained(model, tmp_path / "vgg.npz")
    binary = {layer.name: int(np.prod(layer.kernel.shape)) for layer in binarized_layers(model)}
    with np.load(path) as archive:
        for name, n in binary.items():
            assert archive[f"{name}/kernel:bits"].nbytes == math.ceil(n / 8)
        assert not any(key.endswith("point_0") for key in archive.files)  # training-only state
    own = [v for layer in model.layers for v in own_weights(layer)]
    float_bytes = sum(4 * int(np.prod(v.shape)) for v in own) - 4 * sum(binary.values())
    packed_bytes = sum(math.ceil(n / 8) for n in binary.values())
    size = path.stat().st_size
    assert float_bytes + packed_bytes < size < float_bytes + packed_bytes + 32_000  # + npz/JSON overhead
    assert size < 0.25 * sum(4 * int(np.prod(v.shape)) for v in own)  # vs float32 for everything


def test_active_chart_of_a_cluster_is_folded_into_the_kernel(tmp_path):
    def make_quantizer():
        return hbnn_larq.HyperbolicSign(cluster_size=2, cluster_init="random", cluster_radius=0.5, seed=3)

    model = zoo.VGGSmall(kernel_quantizer=make_quantizer, **TINY)
    for _, quantizer in hbnn_larq.hyperbolic_quantizers(model):
        quantizer.active_index.assign(1)
    restored = zoo.VGGSmall(weights=zoo.save_pretrained(model, tmp_path / "m"), kernel_quantizer=make_quantizer,
                            **TINY)
    np.testing.assert_array_equal(restored(inputs(), training=False), model(inputs(), training=False))


def test_weights_load_into_another_sign_quantizer(tmp_path):
    path = zoo.save_pretrained(trained_vggsmall(steps=1), tmp_path / "m")
    hbnn = zoo.VGGSmall(weights=path, **TINY)
    ste = zoo.VGGSmall(weights=path, kernel_quantizer="ste_sign", kernel_constraint="weight_clip", **TINY)
    np.testing.assert_array_equal(ste(inputs(), training=False), hbnn(inputs(), training=False))


def test_per_channel_scale_is_stored(tmp_path):
    kwargs = {**TINY, "kernel_quantizer": "magnitude_aware_sign"}
    model = zoo.ResNet18(**{**kwargs, "width": 0.125})
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(size=w.shape).astype("float32") if w.ndim > 1 else
                       rng.uniform(0.5, 1.5, size=w.shape).astype("float32") for w in model.get_weights()])
    path = zoo.save_pretrained(model, tmp_path / "r18")
    layer = binarized_layers(model)[0]
    with np.load(path) as archive:
        np.testing.assert_allclose(archive[f"{layer.name}/kernel:scale"],
                                   np.abs(quantized_kernel(layer)).max(axis=(0, 1, 2)), rtol=1e-7)
    restored = zoo.ResNet18(weights=path, **{**kwargs, "width": 0.125})
    # The quantizer recomputes alpha as a float32 mean: equal to the stored one up to rounding.
    np.testing.assert_allclose(restored(inputs(), training=False), model(inputs(), training=False), rtol=1e-5,
                               atol=1e-5)


def test_depthwise_and_pointwise_kernels_are_stored_as_bits_and_restored(tmp_path):
    model = hbnn_larq.hyperbolize(separable_toy_model())
    move_points(model, scale=0.5)  # the binary kernels are sign(exp_F(w~)), not sign(w~)
    path = zoo.save_pretrained(model, tmp_path / "toy")
    kernels = hyperbolic_kernels(model)
    keys = {k.name: f"{k.layer.name}/{k.slot.kernel}" for k in kernels}
    assert list(keys) == SEPARABLE_TOY_KERNELS
    with np.load(path) as archive:
        for k in kernels:
            assert keys[k.name] not in archive.files  # no float latent kernel
            assert archive[keys[k.name] + ":bits"].nbytes == math.ceil(int(np.prod(k.variable.shape)) / 8)
    assert set(pretrained.read_metadata(path)["binary_kernels"]) == set(keys.values())
    fresh = hbnn_larq.hyperbolize(separable_toy_model())  # other latent kernels ...
    move_points(fresh, seed=1, scale=0.5)  # ... and points, which loading resets to the origin
    x = inputs()
    assert not np.array_equal(fresh(x, training=False), model(x, training=False))
    zoo.load_pretrained(fresh, path)
    np.testing.assert_array_equal(fresh(x, training=False), model(x, training=False))
    for source, target in zip(kernels, hyperbolic_kernels(fresh)):
        np.testing.assert_array_equal(target.quantized(), source.quantized())
        assert not np.any(target.quantizer.points[0].numpy()) and int(target.quantizer.active_index.numpy()) == 0


def test_non_binary_kernel_cannot_be_saved(tmp_path):
    model = zoo.VGGSmall(kernel_quantizer=lq.quantizers.DoReFaQuantizer(k_bit=2), **TINY)
    with pytest.raises(ValueError, match="not ±"):
        zoo.save_pretrained(model, tmp_path / "m")


# -- build-argument checks ---------------------------------------------------------------------
@pytest.fixture
def saved(tmp_path):
    model = zoo.VGGSmall(kernel_quantizer="ste_sign", **TINY)
    return model, zoo.save_pretrained(model, tmp_path / "m")


@pytest.mark.parametrize(
    "change, match",
    [({"num_classes": 5}, "num_classes=4"), ({"include_top": False}, "include_top=True"),
     ({"width": 0.5}, "width=0.25"), ({"pad_values": 0.0}, "pad_values=1.0")],
)
def test_mismatched_build_arguments_raise(saved, change, match):
    with pytest.raises(ValueError, match=match):
        zoo.VGGSmall(weights=saved[1], **{**TINY, "kernel_quantizer": "ste_sign", **change})


def test_other_model_or_bad_file_raise(saved, tmp_path):
    with pytest.raises(ValueError, match="model='vggsmall'"):
        zoo.ResNet18(weights=saved[1], **TINY)
    not_weights = tmp_path / "bad.npz"
    np.savez(not_weights, a=np.zeros(3))
    with pytest.raises(ValueError, match="is not a"):
        zoo.VGGSmall(weights=str(not_weights), **TINY)


# -- registry ----------------------------------------------------------------------------------
@pytest.fixture
def registry_dir(tmp_path, monkeypatch):
    weights_dir = tmp_path / "weights"
    monkeypatch.setattr(pretrained, "WEIGHTS_DIR", weights_dir)
    return weights_dir


def test_registered_weights_load_by_name(saved, registry_dir):
    model, path = saved
    entry = zoo.register_weights("tiny_vgg", path, description="test", provenance={"epochs": 3})
    assert entry["sha256"] == pretrained.sha256(path)
    assert entry["provenance"] == {"epochs": 3}
    assert zoo.available_weights("vggsmall") == zoo.available_weights() == ["tiny_vgg"]
    assert zoo.available_weights("resnet18") == []
    assert zoo.registered_weights("vggsmall", "tiny_vgg") == entry
    restored = zoo.get_model("vggsmall", weights="tiny_vgg", kernel_quantizer="ste_sign", **TINY)
    np.testing.assert_array_equal(restored(inputs(), training=False), model(inputs(), training=False))


def test_one_name_serves_several_models(saved, registry_dir, tmp_path):
    """`weights="cifar10"` means the VGG-Small file for VGGSmall and the ResNet-18 file for ResNet18."""
    vgg, vgg_path = saved
    resnet = zoo.ResNet18(input_shape=(16, 16, 3), num_classes=3, width=0.125, kernel_quantizer="ste_sign")
    resnet_path = zoo.save_pretrained(resnet, tmp_path / "resnet.npz")
    zoo.register_weights("cifar10", vgg_path)
    zoo.register_weights("cifar10", resnet_path)
    assert sorted(p.name for p in registry_dir.glob("*.npz")) == ["resnet18_cifar10.npz", "vggsmall_cifar10.npz"]
    restored = zoo.ResNet18(input_shape=(16, 16, 3), num_classes=3, width=0.125, kernel_quantizer="ste_sign",
                            weights="cifar10")
    x = tf.random.stateless_normal((2, 16, 16, 3), seed=(1, 2))
    np.testing.assert_array_equal(restored(x, training=False), resnet(x, training=False))
    with pytest.raises(ValueError, match="registered for 'resnet34'.*none shipped"):
        zoo.ResNet34(input_shape=(16, 16, 3), num_classes=3, width=0.125, weights="cifar10")


def test_sha256_mismatch_and_unknown_name_raise(saved, registry_dir):
    zoo.register_weights("tiny_vgg", saved[1])
    with open(registry_dir / "vggsmall_tiny_vgg.npz", "ab") as f:
        f.write(b"tampered")
    with pytest.raises(ValueError, match="sha256 mismatch"):
        zoo.VGGSmall(weights="tiny_vgg", **TINY)
    with pytest.raises(ValueError, match="'tiny_vgg'"):  # the message lists the valid names
        zoo.VGGSmall(weights="tiny_vggg", **TINY)
    with pytest.raises(ValueError, match="No shipped weights 'nope' for 'vggsmall'.*'tiny_vgg'"):
        zoo.registered_weights("vggsmall", "nope")


def test_shipped_registry_is_consistent():
    registry = json.loads((pretrained.WEIGHTS_DIR / pretrained.REGISTRY_FILENAME).read_text())
    for model_name, entries in registry.items():
        for name, entry in entries.items():
            path = pretrained.registered_path(model_name, name)
            assert pretrained.sha256(path) == entry["sha256"], (model_name, name)
            assert pretrained.read_metadata(path)["model"] == model_name


def shipped_with_measured_slice() -> list:
    registry = json.loads((pretrained.WEIGHTS_DIR / pretrained.REGISTRY_FILENAME).read_text())
    return [(model_name, name) for model_name, entries in registry.items() for name, entry in entries.items()
            if "slice" in entry.get("provenance", {})]


@pytest.mark.parametrize("model_name,name", shipped_with_measured_slice())
def test_shipped_weights_reproduce_their_documented_accuracy(model_name, name):
    """The accuracy `benchmarks/zoo_weights.py` recorded (and the README quotes) on a fixed seeded
    slice of the test set is what the shipped file gives after a fresh load, fed the pipeline's
    raw [0, 255] pixels: shipped models normalise their inputs themselves."""
    from hbnn_larq.training import data

    entry = zoo.registered_weights(model_name, name)
    recorded = entry["provenance"]["slice"]
    width = pretrained.read_metadata(pretrained.registered_path(model_name, name))["width"]
    try:
        dataset = data.load_dataset(recorded["dataset"], batch_size=250, max_train_examples=250,
                                    max_test_examples=recorded["max_test_examples"], seed=recorded["seed"],
                                    download=False)
    except data.DatasetNotFoundError:
        pytest.skip(f"{recorded['dataset']} is not available offline")
    model = zoo.get_model(model_name, weights=name, input_shape=dataset.input_shape, num_classes=dataset.num_classes,
                          width=width)
    assert model.get_layer("input_normalization").get_config()["mean"] == pytest.approx(
        [255 * m for m in dataset.mean])
    correct = sum(int(np.sum(np.argmax(model(x, training=False), -1) == y.numpy())) for x, y in dataset.test)
    # Float summation order may differ across machines: allow two of the slice's images to change.
    assert abs(correct / dataset.num_test - recorded["accuracy"]) <= 2 / dataset.num_test
