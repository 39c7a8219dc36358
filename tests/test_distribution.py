import numpy as np
import tensorflow as tf

import hbnn_larq
from hbnn_larq import ChartSelection, HyperbolicSign
from tests.helpers import compile_hbnn, random_data, tiny_model


def replica_values(variable):
    return [v.numpy() for v in variable.values]


def test_mirrored_strategy_trains_points_and_keeps_charts_in_sync():
    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
    assert len(devices) == 2, "conftest.py splits the CPU into two logical devices"
    strategy = tf.distribute.MirroredStrategy(devices)
    x, y = random_data(64)
    with strategy.scope():
        model = compile_hbnn(tiny_model(lambda: HyperbolicSign(cluster_size=3, seed=0), channels=(8, 8)))
    quantizers = [q for _, q in hbnn_larq.hyperbolic_quantizers(model)]
    for q in quantizers:
        assert isinstance(q.points[0], tf.distribute.DistributedValues)
        assert len(q.points[0].values) == 2
    before = [q.points[0].numpy().copy() for q in quantizers]
    selection = ChartSelection(probe_data=(x[:32], y[:32]))
    history = model.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[selection])
    assert np.all(np.isfinite(history.history["loss"]))
    for q, b in zip(quantizers, before):
        active = q.points[int(q.active_index.numpy())]
        assert np.linalg.norm(q.points[0].numpy() - b) > 0 or np.linalg.norm(active.numpy()) > 0
        for p in q.points:  # replicas hold identical points
            a, c = replica_values(p)
            np.testing.assert_array_equal(a, c)
            assert hbnn_larq.PoincareBall(q.r).contains(p).numpy()
        assert len(set(int(v) for v in replica_values(q.active_index))) == 1
    # the selection callback's choice reached both replicas
    for q in quantizers:
        q.set_active(2)
        assert [int(v) for v in replica_values(q.active_index)] == [2, 2]
