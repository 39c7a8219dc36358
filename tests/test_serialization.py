import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import hbnn_larq
from hbnn_larq import HyperbolicSign
from tests.helpers import compile_hbnn, random_data, tiny_model


@pytest.fixture
def trained():
    """An EPC model after a short fit, with a non-zero active chart and moved points."""
    x, y = random_data(32)
    model = compile_hbnn(tiny_model(lambda: HyperbolicSign(cluster_size=3, seed=1), channels=(8, 8)))
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    for _, q in hbnn_larq.hyperbolic_quantizers(model):
        q.active_index.assign(2)
    return model, x


def quantizer_state(model):
    return [(q.active_index.numpy(), [p.numpy() for p in q.points]) for _, q in hbnn_larq.hyperbolic_quantizers(model)]


def assert_same_state(a, b):
    for (ia, pa), (ib, pb) in zip(quantizer_state(a), quantizer_state(b)):
        assert ia == ib
        for u, v in zip(pa, pb):
            np.testing.assert_array_equal(u, v)


@pytest.mark.parametrize("filename, kwargs", [("m.h5", {}), ("m.keras", {}), ("saved", {"save_format": "tf"})])
def test_model_round_trip(trained, tmp_path, filename, kwargs):
    model, x = trained
    path = str(tmp_path / filename)
    model.save(path, **kwargs)
    loaded = tf.keras.models.load_model(path)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    assert_same_state(model, loaded)
    assert isinstance(loaded.optimizer, hbnn_larq.RiemannianOptimizer)


@pytest.mark.parametrize("filename", ["w.h5", "ckpt"])
def test_save_weights_round_trip(trained, tmp_path, filename):
    model, x = trained
    model.save_weights(str(tmp_path / filename))
    fresh = tiny_model(lambda: HyperbolicSign(cluster_size=3, seed=99), channels=(8, 8))
    fresh.load_weights(str(tmp_path / filename))
    np.testing.assert_array_equal(fresh.predict(x, verbose=0), model.predict(x, verbose=0))
    assert_same_state(model, fresh)


def test_keras_file_loads_in_a_fresh_process_after_importing_hbnn_larq(trained, tmp_path):
    model, x = trained
    model.save(str(tmp_path / "m.keras"))
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", model.predict(x, verbose=0))
    script = (
        "import hbnn_larq, numpy as np, tensorflow as tf, sys\n"
        "d = sys.argv[1]\n"
        "m = tf.keras.models.load_model(d + '/m.keras')\n"
        "np.testing.assert_array_equal(m.predict(np.load(d + '/x.npy'), verbose=0), np.load(d + '/y.npy'))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True, env=env, capture_output=True, timeout=300)
