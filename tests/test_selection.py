import json

import numpy as np
import pytest
import tensorflow as tf

import hbnn_larq
from hbnn_larq import ChartSelection, HyperbolicSign
from hbnn_larq.quantizers import hyperbolic_kernels
from tests.helpers import SEPARABLE_TOY_KERNELS, compile_hbnn, random_data, separable_toy_model, tiny_model


def epc_model(selection="loss", t=3, **kwargs):
    return compile_hbnn(
        tiny_model(lambda: HyperbolicSign(cluster_size=t, selection=selection, cluster_radius=0.5, seed=4, **kwargs),
                   channels=(8, 8))
    )


def probe_loss(model, x, y):
    loss = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return float(loss(y, model(x, training=True)))


def batchnorm_values(model):
    return [v.numpy().copy() for layer in model.layers if isinstance(layer, tf.keras.layers.BatchNormalization)
            for v in layer.non_trainable_weights]


@pytest.mark.parametrize("on_switch", ["keep", "reexpress"])
def test_loss_criterion_picks_the_greedy_argmin_and_restores_batchnorm(on_switch):
    x, y = random_data(64)
    model = epc_model(on_switch=on_switch)
    callback = ChartSelection(probe_data=(x, y))
    callback.set_model(model)
    layers = hbnn_larq.hyperbolic_quantizers(model)
    kernels = [layer.kernel.numpy() for layer, _ in layers]
    expected = []
    for layer, q in layers:  # independent greedy search in layer order
        losses = []
        for j in range(q.cluster_size):  # each chart scored with the current w~ mapped through it
            q.active_index.assign(j)
            losses.append(probe_loss(model, x, y))
        expected.append(int(np.argmin(losses)))
        q.active_index.assign(0)
        # the later layers are scored after this layer's switch (a re-expressed w~ with "reexpress")
        q.set_active(expected[-1], layer.kernel)
    for (layer, q), kernel in zip(layers, kernels):
        q.active_index.assign(0)
        layer.kernel.assign(kernel)
    bn_before = batchnorm_values(model)
    record = callback.select(0)
    assert [r["index"] for r in record["layers"].values()] == expected
    assert [int(q.active_index.numpy()) for _, q in layers] == expected
    for a, b in zip(batchnorm_values(model), bn_before):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("selection", ["geometric", "nearest", "flips"])
def test_geometric_criteria_follow_their_definition(selection):
    model = epc_model(selection)
    layer, q = hbnn_larq.hyperbolic_quantizers(model)[0]
    w = layer.kernel.numpy().astype(np.float64)
    mapped = [q.project(tf.constant(w), tf.cast(p, tf.float64)).numpy() for p in q.points]
    if selection == "geometric":
        expected = np.argmin([np.sum(m**2) for m in mapped])
    elif selection == "nearest":
        ball = hbnn_larq.PoincareBall(q.r)
        expected = np.argmin([float(np.squeeze(ball.dist(tf.cast(p, tf.float64), tf.constant(mapped[0])))) for p in q.points])
        assert expected == 0  # the active point is at distance lambda_p ||w|| > 0, but others can be nearer
    else:
        expected = np.argmax([np.mean(np.sign(m) != np.sign(mapped[0])) for m in mapped])
    assert int(np.argmin(q.chart_scores(layer.kernel))) == expected


def _random_rounds(seed, model, epochs):
    """Selection rounds of a `ChartSelection(seed=seed)` at `epochs`, and each round's charts."""
    callback = ChartSelection(seed=seed)
    callback.set_model(model)
    rounds = {epoch: callback.select(epoch) for epoch in epochs}
    return rounds, {epoch: tuple(info["index"] for info in r["layers"].values()) for epoch, r in rounds.items()}


def test_random_criterion_draws_seeded_charts_and_reexpression_keeps_the_signs():
    model = epc_model("random", t=4)
    model(random_data(2)[0])
    rounds, charts = _random_rounds(3, model, range(6))
    layer_rounds = [info for r in rounds.values() for info in r["layers"].values()]
    assert len(set(charts.values())) > 1 and any(info["switched"] for info in layer_rounds)
    assert all(info["flipped"] < 1e-3 for info in layer_rounds)
    _, resumed = _random_rounds(3, model, [4, 5])  # the draws depend on (seed, epoch, layer) only
    assert resumed == {4: charts[4], 5: charts[5]}
    _, other_seed = _random_rounds(4, model, range(6))
    assert other_seed != charts


def test_fit_with_selection_and_warmup_logs_the_charts():
    x, y = random_data(64)
    model = epc_model(t=4)
    callback = ChartSelection(probe_data=tf.data.Dataset.from_tensor_slices((x, y)).batch(32), warmup_epochs=1)
    history = model.fit(x, y, epochs=3, batch_size=16, verbose=0, callbacks=[callback])
    chart_keys = [k for k in history.history if k.startswith("chart/")]
    assert len(chart_keys) == 2
    assert len(callback.history) == 2  # epochs 1 and 2, after one warm-up epoch
    for record in callback.history:
        for info in record["layers"].values():
            assert 0 <= info["index"] < 4 and 0.0 <= info["flipped"] <= 1.0
            assert info["switched"] or info["flipped"] == 0.0
    # every point was trained during the warm-up epoch
    for _, q in hbnn_larq.hyperbolic_quantizers(model):
        assert all(np.linalg.norm(p.numpy()) > 0 for p in q.points)


def test_history_file_keeps_every_round_and_a_resumed_run_replaces_the_round_it_restarts(tmp_path):
    x, y = random_data(32)
    model = epc_model(t=3)
    model(x)
    path = tmp_path / "charts.json"
    first = ChartSelection(probe_data=(x, y), history_path=path)
    first.set_model(model)
    for epoch in range(3):
        first.on_epoch_begin(epoch)
    assert [r["epoch"] for r in json.loads(path.read_text())] == [0, 1, 2]
    resumed = ChartSelection(probe_data=(x, y), history_path=path)  # restarts at epoch 1
    resumed.set_model(model)
    resumed.on_epoch_begin(1)
    saved = json.loads(path.read_text())
    assert [r["epoch"] for r in saved] == [0, 1] and saved == resumed.history
    assert set(saved[1]["layers"]) == {layer.name for layer, _ in hbnn_larq.hyperbolic_quantizers(model)}


def _warmup_charts(callback, model, epochs, batches=6):
    """The charts `callback` draws for each (epoch, batch) of `epochs`, hooks called as fit does."""
    callback.set_model(model)
    quantizers = [q for _, q in hbnn_larq.hyperbolic_quantizers(model)]
    charts = {}
    for epoch in epochs:
        callback.on_epoch_begin(epoch)
        for batch in range(batches):
            callback.on_train_batch_begin(batch)
            charts[epoch, batch] = tuple(int(q.active_index.numpy()) for q in quantizers)
    return charts


def test_warmup_charts_are_the_same_after_a_resume():
    model = epc_model(t=4)
    model(random_data(2)[0])
    uninterrupted = _warmup_charts(ChartSelection(warmup_epochs=3, seed=5), model, epochs=[0, 1, 2])
    resumed = _warmup_charts(ChartSelection(warmup_epochs=3, seed=5), model, epochs=[2])
    other_seed = _warmup_charts(ChartSelection(warmup_epochs=3, seed=6), model, epochs=[2])
    assert resumed == {key: uninterrupted[key] for key in resumed}
    assert other_seed != resumed and len(set(uninterrupted.values())) > 1


def test_depthwise_and_pointwise_charts_are_selected_and_their_flips_measured_on_their_own_kernel():
    model = hbnn_larq.hyperbolize(separable_toy_model(), cluster_size=2, selection="flips", on_switch="keep",
                                  cluster_radius=0.5, seed=3)
    kernels = hyperbolic_kernels(model)
    latents = {k.name: k.variable.numpy() for k in kernels}
    signs_before = {k.name: np.where(latents[k.name] >= 0, 1.0, -1.0) for k in kernels}  # chart 0 is the origin
    callback = ChartSelection()
    callback.set_model(model)
    record = callback.select(0)
    assert list(record["layers"]) == SEPARABLE_TOY_KERNELS
    for k in kernels:  # "flips": any chart that flips a sign beats the current one, which flips none
        info = record["layers"][k.name]
        assert info["switched"] and info["index"] == int(k.quantizer.active_index.numpy()) == 1, k.name
        np.testing.assert_array_equal(k.variable.numpy(), latents[k.name])  # "keep": the latent kernel stays
        mapped = k.quantizer.project(tf.constant(latents[k.name]), k.quantizer.points[1]).numpy()
        flipped = np.mean(np.where(mapped >= 0, 1.0, -1.0) != signs_before[k.name])
        assert info["flipped"] == pytest.approx(flipped) and flipped > 0, k.name
    logs = {}
    callback.on_epoch_end(0, logs)
    assert logs == {f"chart/{name}": 1.0 for name in SEPARABLE_TOY_KERNELS}


def test_loss_criterion_needs_probe_data():
    x, y = random_data(16)
    with pytest.raises(ValueError, match="probe_data"):
        epc_model().fit(x, y, epochs=1, verbose=0, callbacks=[ChartSelection()])


@pytest.mark.parametrize("kwargs, name", [({"every": 0}, "every"), ({"warmup_epochs": -1}, "warmup_epochs"),
                                          ({"seed": -1}, "seed")])
def test_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        ChartSelection(**kwargs)
