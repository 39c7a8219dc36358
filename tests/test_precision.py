"""HBNN under every supported Keras dtype policy: float32, mixed_bfloat16 and mixed_float16.

Oracle: the float64 NumPy reference (`tests/reference.py`) applied to the latent kernel *as the
layer reads it* (rounded to the policy's compute dtype): everything after that rounding must be
float32 arithmetic, so the binary kernels agree with the reference except at exact ties.
"""

import larq as lq
import numpy as np
import pytest
import tensorflow as tf

import hbnn_larq
from hbnn_larq import HyperbolicSign, IRNetSign, ReCUSign, RiemannianOptimizer
from hbnn_larq.precision import PRECISIONS, FullPrecisionQuantizer, policy_scope
from tests.helpers import binary_conv, random_data, tiny_model
from tests.reference import ref_boundary_map, ref_expmap, ref_sign

MIXED = ("mixed_bfloat16", "mixed_float16")
COMPUTE = {"float32": tf.float32, "mixed_bfloat16": tf.bfloat16, "mixed_float16": tf.float16}


def as_read(latent: np.ndarray, precision: str) -> np.ndarray:
    """The latent kernel as a layer under `precision` reads it: rounded to the compute dtype."""
    return tf.cast(tf.cast(latent, COMPUTE[precision]), tf.float64).numpy()


def point_at(rng, shape, relative: float, r: float) -> np.ndarray:
    direction = rng.normal(size=shape)
    return (direction / np.linalg.norm(direction) * relative / np.sqrt(r)).astype(np.float32)


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("relative", [0.0, 0.5, 0.99, 0.999])
@pytest.mark.parametrize("boundary", [False, True])
def test_binary_kernel_matches_the_float64_reference_of_the_rounded_latent(precision, relative, boundary):
    """A 3x3x256x256 kernel (the size of VGG-Small's conv3): >= 99.995 % of the signs agree
    (the issue's target; in bf16 the old arithmetic got 99.963 %), 0 NaN/inf."""
    r = 0.05
    rng = np.random.default_rng(int(relative * 1000) + boundary)
    shape = (3, 3, 256, 256)
    latent = (rng.normal(size=shape) * 0.05).astype(np.float32)
    point = point_at(rng, shape, relative, r)
    with policy_scope(precision):
        q = HyperbolicSign(r=r, boundary=boundary)
        q.build(shape)
    q.points[0].assign(point)
    read = tf.cast(latent, COMPUTE[precision])
    out = q(read)
    assert out.dtype == read.dtype and q.points[0].dtype == tf.float32
    mapped = (ref_boundary_map if boundary else ref_expmap)(point.astype(np.float64).ravel(),
                                                            as_read(latent, precision).ravel(), r)
    agreement = np.mean(tf.cast(out, tf.float64).numpy().ravel() == ref_sign(mapped))
    assert agreement >= 0.99995, agreement
    assert set(np.unique(tf.cast(out, tf.float32).numpy())) <= {-1.0, 1.0}


@pytest.mark.parametrize("precision", PRECISIONS)
def test_layer_output_under_a_policy_is_the_convolution_with_the_reference_kernel(precision):
    """±1 inputs and ±1 weights over 3x3x16 taps sum to integers <= 144, exact in bf16 and fp16:
    the layer's output equals the float64 convolution with the reference kernel, so a single
    wrong sign would show."""
    r = 0.05
    rng = np.random.default_rng(3)
    with policy_scope(precision):
        layer = binary_conv(16, HyperbolicSign(r=r), input_quantizer="ste_sign", padding="valid")
        layer(np.ones((1, 6, 6, 16), np.float32))  # builds the quantizer too
    latent = (rng.normal(size=layer.kernel.shape) * 0.05).astype(np.float32)
    point = point_at(rng, latent.shape, 0.9, r)
    layer.kernel.latent_variable.assign(latent)
    layer.kernel_quantizer.points[0].assign(point)
    x = np.sign(rng.normal(size=(2, 6, 6, 16))).astype(np.float32)
    out = layer(x)
    assert out.dtype == COMPUTE[precision]
    kernel = ref_sign(ref_expmap(point.astype(np.float64).ravel(), as_read(latent, precision).ravel(), r))
    expected = tf.nn.conv2d(x.astype(np.float64), kernel.reshape(latent.shape), 1, "VALID").numpy()
    np.testing.assert_array_equal(tf.cast(out, tf.float64).numpy(), expected)


@pytest.mark.parametrize("precision", MIXED)
@pytest.mark.parametrize("make", [lambda: HyperbolicSign(), lambda: HyperbolicSign(boundary=True, r=0.01),
                                  lambda: HyperbolicSign(base="ir_net"), lambda: HyperbolicSign(base="recu"),
                                  IRNetSign, ReCUSign])
def test_quantizers_compute_in_float32_and_return_the_given_dtype(precision, make):
    """Every quantizer of the package: float32 variables, the kernel's dtype out, and the same
    value as the float32 quantizer on the same (rounded) kernel."""
    rng = np.random.default_rng(0)
    kernel = tf.cast((rng.normal(size=(3, 3, 32, 16)) * 0.05).astype(np.float32), COMPUTE[precision])
    with policy_scope(precision):
        mixed = make()
        assert isinstance(mixed, FullPrecisionQuantizer)
        out = mixed(kernel)
    reference = mixed.__class__.from_config(mixed.get_config())  # built outside: float32 policy
    reference(tf.cast(kernel, tf.float32))
    reference.set_weights(mixed.get_weights())
    assert out.dtype == kernel.dtype
    assert all(w.dtype == tf.float32 for w in mixed.weights if w.dtype.is_floating)
    expected = tf.cast(reference(tf.cast(kernel, tf.float32)), kernel.dtype)  # scaled quantizers: ±α rounded
    np.testing.assert_array_equal(tf.cast(out, tf.float32).numpy(), tf.cast(expected, tf.float32).numpy())


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("relative", [0.0, 0.999])
@pytest.mark.parametrize("zero_latent", [False, True])
def test_values_and_gradients_are_finite_near_the_boundary_and_at_zero(precision, relative, zero_latent):
    r = 0.05
    rng = np.random.default_rng(1)
    with policy_scope(precision):
        layer = binary_conv(32, HyperbolicSign(r=r))
        layer(np.ones((1, 5, 5, 32), np.float32))
    latent = np.zeros(layer.kernel.shape, np.float32) if zero_latent else (rng.normal(size=layer.kernel.shape) * 0.05)
    layer.kernel.latent_variable.assign(latent)
    layer.kernel_quantizer.points[0].assign(point_at(rng, latent.shape, relative, r))
    x = tf.constant(rng.normal(size=(2, 5, 5, 32)).astype(np.float32))
    with tf.GradientTape() as tape:
        out = layer(x)
        loss = tf.reduce_sum(tf.cast(out, tf.float32) * rng.normal(size=out.shape).astype(np.float32))
    grads = tape.gradient(loss, [layer.kernel.latent_variable, layer.kernel_quantizer.points[0]])
    assert np.all(np.isfinite(tf.cast(out, tf.float32).numpy()))
    for g in grads:
        assert g is not None and g.dtype == tf.float32 and np.all(np.isfinite(g.numpy()))
    assert np.any(grads[1].numpy() != 0)


def _points(model):
    return [p for _, q in hbnn_larq.hyperbolic_quantizers(model) for p in q.points]


def _fit(precision, epochs=2, jit_compile=False, cluster_size=1, callbacks=(), seed=0):
    tf.keras.utils.set_random_seed(seed)
    with policy_scope(precision):
        model = tiny_model(lambda: HyperbolicSign(cluster_size=cluster_size, seed=1), channels=(32, 32))
    model.compile(RiemannianOptimizer(tf.keras.optimizers.SGD(0.05, momentum=0.9), point_lr_multiplier=100.0),
                  loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=jit_compile)
    before = [p.numpy().copy() for p in _points(model)]
    x, y = random_data(64)
    history = model.fit(x, y, batch_size=16, epochs=epochs, verbose=0, callbacks=list(callbacks))
    return model, before, history.history["loss"]


@pytest.mark.parametrize("precision", PRECISIONS)
def test_short_fit_stays_finite_and_moves_the_points_inside_the_ball(precision):
    model, before, losses = _fit(precision)
    assert np.all(np.isfinite(losses))
    for point, start in zip(_points(model), before):
        assert point.dtype == tf.float32
        assert np.all(np.isfinite(point.numpy())) and not np.array_equal(point.numpy(), start)
        assert float(0.05 * np.sum(point.numpy().astype(np.float64) ** 2)) < 1.0
    inner = model.optimizer
    if precision == "mixed_float16":
        assert isinstance(inner, tf.keras.mixed_precision.LossScaleOptimizer)
        inner = inner.inner_optimizer
    assert isinstance(inner, RiemannianOptimizer)


def test_loss_scaling_reaches_the_points_unscaled():
    """Under mixed_float16 the LossScaleOptimizer (loss scale 2^15) unscales the points'
    gradients: one step moves them as far as in float32 (not 32768 times as far)."""
    moved = {}
    for precision in ("float32", "mixed_float16"):
        model, before, _ = _fit(precision, epochs=1, seed=3)
        moved[precision] = np.array([np.linalg.norm(p.numpy() - b) for p, b in zip(_points(model), before)])
    np.testing.assert_allclose(moved["mixed_float16"], moved["float32"], rtol=0.3)


def test_inner_clipping_applies_to_the_points():
    q = HyperbolicSign(r=0.05)
    q.build((4, 4))
    big = tf.fill((4, 4), 100.0)
    for clip in ({"clipnorm": 1e-3}, {"global_clipnorm": 1e-3}, {"clipvalue": 2.5e-4}):
        q.points[0].assign(tf.zeros((4, 4)))
        opt = RiemannianOptimizer(tf.keras.optimizers.SGD(1.0, **clip), point_lr_multiplier=1.0)
        opt.apply_gradients([(big, q.points[0])])
        # At the origin λ = 2: the RSGD step is exp_0(-lr g / 4), |g| clipped to 1e-3 (all three
        # clips give 2.5e-4 per entry here).
        expected = ref_expmap(np.zeros(16), -np.full(16, 2.5e-4) / 4.0, 0.05)
        np.testing.assert_allclose(q.points[0].numpy().ravel(), expected, rtol=1e-5)


def test_global_clipnorm_counts_the_points():
    q = HyperbolicSign(r=0.05)
    q.build((4,))
    other = tf.Variable(tf.zeros(4))
    opt = RiemannianOptimizer(tf.keras.optimizers.SGD(1.0, global_clipnorm=1.0), point_lr_multiplier=1.0)
    opt.apply_gradients([(tf.fill((4,), 3.0), q.points[0]), (tf.fill((4,), 4.0), other)])
    # global norm 10: both gradients are scaled by 1/10, the other variable steps by -0.4.
    np.testing.assert_allclose(other.numpy(), np.full(4, -0.4), rtol=1e-6)


@pytest.mark.parametrize("kwargs, name", [({"clipnorm": 1.0}, "clipnorm"), ({"use_ema": True}, "use_ema"),
                                          ({"weight_decay": 1e-4}, "weight_decay"), ({"bogus": 1}, "bogus")])
def test_options_that_belong_to_the_wrapped_optimizer_are_rejected(kwargs, name):
    with pytest.raises(ValueError, match=name):
        RiemannianOptimizer(tf.keras.optimizers.SGD(0.1), **kwargs)


def test_inner_ema_is_rejected():
    with pytest.raises(ValueError, match="use_ema"):
        RiemannianOptimizer(tf.keras.optimizers.SGD(0.1, use_ema=True))


def test_optimizer_serialize_round_trip():
    opt = RiemannianOptimizer(tf.keras.optimizers.Adam(3e-3, clipnorm=2.0), point_lr_multiplier=30.0,
                              point_update="mobius")
    restored = tf.keras.optimizers.deserialize(tf.keras.optimizers.serialize(opt))
    assert isinstance(restored, RiemannianOptimizer)
    assert restored.get_config() == opt.get_config()
    assert restored.inner_optimizer.clipnorm == 2.0


@pytest.mark.parametrize("precision", ["float32", "mixed_bfloat16"])
def test_saved_model_keeps_optimizer_slots(precision, tmp_path):
    model, _, _ = _fit(precision, epochs=1)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = tf.keras.models.load_model(path)
    assert isinstance(loaded.optimizer, RiemannianOptimizer)
    saved, restored = model.optimizer.variables, loaded.optimizer.variables
    assert len(saved) == len(restored) == 1 + len(model.trainable_variables) - len(_points(model))  # momentum
    for before, after in zip(saved, restored):
        np.testing.assert_array_equal(after.numpy(), before.numpy())
    for layer, _ in hbnn_larq.hyperbolic_quantizers(loaded):
        assert np.any(hbnn_larq.optimizers.slot_variables(loaded.optimizer, layer.kernel)[0].numpy())


def test_a_reexpressed_switch_resets_that_layers_slots_only():
    model, _, _ = _fit("float32", epochs=1, cluster_size=3)
    selection = hbnn_larq.ChartSelection(seed=0)
    selection.set_model(model)
    layers = [layer for layer, _ in hbnn_larq.hyperbolic_quantizers(model)]
    before = {layer.name: [s.numpy() for s in hbnn_larq.optimizers.slot_variables(model.optimizer, layer.kernel)]
              for layer in layers}
    assert all(len(slots) == 1 and np.any(slots[0]) for slots in before.values())  # SGD momentum
    for _, q in hbnn_larq.hyperbolic_quantizers(model):
        q.selection = "random"
    switched = {}
    for epoch in range(6):  # random charts: some layer switches and some stays within a few rounds
        record = selection.select(epoch)
        for layer in layers:
            slots = hbnn_larq.optimizers.slot_variables(model.optimizer, layer.kernel)
            if record["layers"][layer.name]["switched"]:
                switched[layer.name] = True
                assert not np.any(slots[0].numpy())
            elif layer.name not in switched:
                np.testing.assert_array_equal(slots[0].numpy(), before[layer.name][0])
        if len(switched) == len(layers):
            break
    assert switched


@pytest.mark.parametrize("cluster_size", [1, 3])
def test_jit_compiled_fit(cluster_size):
    callbacks = [hbnn_larq.ChartSelection(seed=0)] if cluster_size > 1 else []
    model, before, losses = _fit("float32", epochs=2, jit_compile=True, cluster_size=cluster_size, callbacks=callbacks)
    assert np.all(np.isfinite(losses))
    assert any(not np.array_equal(p.numpy(), b) for p, b in zip(_points(model), before))


@pytest.mark.parametrize("precision", PRECISIONS)
def test_export_of_a_model_built_and_trained_under_any_policy(precision):
    from larq_compute_engine import testing as lce_testing  # LCE's public test interpreter
    Interpreter = lce_testing.Interpreter

    model, _, _ = _fit(precision, epochs=1)
    baked = hbnn_larq.bake_quantized_kernels(model)
    assert baked.dtype_policy.name == "float32" and all(w.dtype == tf.float32 for w in baked.weights)
    flatbuffer = hbnn_larq.convert_keras_model(model)
    assert hbnn_larq.op_names(flatbuffer).count("LceBconv2d") == 2
    x, _ = random_data(8)
    interpreter = Interpreter(flatbuffer, num_threads=1)
    lce = interpreter.predict(x, verbose=0)  # one sample at a time
    np.testing.assert_allclose(lce, baked.predict(x, verbose=0), rtol=1e-3, atol=1e-3)
    # The float32 copy holds the kernels the mixed model binarizes, not new ones.
    for source, target in zip(model.layers, baked.layers):
        if getattr(source, "kernel_quantizer", None) is not None:
            np.testing.assert_array_equal(hbnn_larq.utils.quantized_kernel(source), target.get_weights()[0])


@pytest.mark.parametrize("precision", MIXED)
def test_a_larq_sign_model_under_a_mixed_policy_trains_with_flip_monitoring_and_exports(precision):
    """larq's own `ste_sign` under a mixed policy: its kernel is read for flip rates and export."""
    with policy_scope(precision):
        model = tiny_model("ste_sign", channels=(32, 32))
    model.compile(tf.keras.optimizers.SGD(0.05), loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = random_data(32)
    history = model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[hbnn_larq.FlipRateMonitor()])
    assert np.isfinite(history.history["loss"][-1]) and "flips/mean" in history.history
    flatbuffer = hbnn_larq.convert_keras_model(model)
    assert hbnn_larq.op_names(flatbuffer).count("LceBconv2d") == 2


@pytest.mark.parametrize("activation", ["softmax", None])
def test_zoo_outputs_are_float32_under_a_mixed_policy(activation):
    with policy_scope("mixed_bfloat16"):
        model = hbnn_larq.zoo.VGGSmall(input_shape=(32, 32, 3), num_classes=10, width=0.125,
                                       classifier_activation=activation)
    assert model.output.dtype == tf.float32
    assert model.get_layer("logits").compute_dtype == "bfloat16"


def test_policy_scope_restores_and_rejects_unknown_names():
    before = tf.keras.mixed_precision.global_policy().name
    with policy_scope("mixed_bfloat16"):
        assert tf.keras.mixed_precision.global_policy().name == "mixed_bfloat16"
    assert tf.keras.mixed_precision.global_policy().name == before
    with pytest.raises(ValueError, match="precision.*mixed_bfloat16"):
        with policy_scope("bfloat16"):
            pass
