"""Tests of the bit-packed pretrained-weights format and the shipped-weights registry."""

import json
import math

import larq as lq
import numpy as np
import pytest
import tensorflow as tf

import hbnn_larq
from hbnn_larq import zoo
from hbnn_larq.export import binarized_layers, quantized_kernel
from hbnn_larq.zoo import pretrained

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
    own = [v for layer in model.layers for v in pretrained._own_weights(layer)]
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
    entry = zoo.register_weights("tiny_vgg", path, description="test")
    assert entry["sha256"] == pretrained.sha256(path)
    assert zoo.available_weights() == ["tiny_vgg"]
    restored = zoo.get_model("vggsmall", weights="tiny_vgg", kernel_quantizer="ste_sign", **TINY)
    np.testing.assert_array_equal(restored(inputs(), training=False), model(inputs(), training=False))


def test_sha256_mismatch_and_unknown_name_raise(saved, registry_dir):
    zoo.register_weights("tiny_vgg", saved[1])
    with open(registry_dir / "tiny_vgg.npz", "ab") as f:
        f.write(b"tampered")
    with pytest.raises(ValueError, match="sha256 mismatch"):
        zoo.VGGSmall(weights="tiny_vgg", **TINY)
    with pytest.raises(ValueError, match="'tiny_vgg'"):  # the message lists the valid names
        zoo.VGGSmall(weights="tiny_vggg", **TINY)


def test_shipped_registry_is_consistent():
    registry = json.loads((pretrained.WEIGHTS_DIR / pretrained.REGISTRY_FILENAME).read_text())
    for name, entry in registry.items():
        path = pretrained.WEIGHTS_DIR / entry["file"]
        assert pretrained.sha256(path) == entry["sha256"], name
        assert pretrained.read_metadata(path)["model"] == entry["model"]
