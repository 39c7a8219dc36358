import os
import subprocess
import sys


def run(code, env_update):
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    env.update(env_update)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)


def test_import_sets_up_legacy_keras():
    result = run("import hbnn_larq, tensorflow as tf; print(tf.keras.layers.Layer.__module__)", {})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith("tf_keras")


def test_import_after_keras3_tensorflow_explains_the_fix():
    result = run("import tensorflow as tf; tf.keras.layers; import hbnn_larq", {})
    assert result.returncode != 0
    assert "ImportError" in result.stderr and "TF_USE_LEGACY_KERAS=1" in result.stderr


def test_seeded_layers_build_on_every_python():
    # tf-keras 2.16 draws initializer seeds with `randint(1, 1e9)` once seeded: a TypeError on
    # Python 3.12, a DeprecationWarning before. The seeds drawn must stay those of `Random(seed)`.
    import random
    import warnings

    import tensorflow as tf
    from tf_keras.src import backend

    import hbnn_larq  # noqa: F401

    tf.keras.utils.set_random_seed(3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert backend._SEED_GENERATOR.generator.randint(1, 1e9) == random.Random(3).randint(1, 10**9)
        tf.keras.layers.Dense(2).build((None, 3))
