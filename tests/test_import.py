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
