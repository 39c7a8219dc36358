"""Make sure `tf.keras` is legacy Keras 2 (tf-keras) before larq is imported.

larq 0.14 only works with Keras 2. TensorFlow 2.16 defaults to Keras 3 unless the environment
variable `TF_USE_LEGACY_KERAS=1` is set *before* TensorFlow is first imported, so this module
must run before anything else in the package imports TensorFlow.
"""

import os
import sys

_FIX = (
    "hbnn-larq needs legacy Keras 2 (the `tf-keras` package): set the environment variable "
    "TF_USE_LEGACY_KERAS=1 before TensorFlow is imported (e.g. `import hbnn_larq` before "
    "`import tensorflow`, or `export TF_USE_LEGACY_KERAS=1`), and `pip install tf-keras==2.16.0`."
)


def ensure_legacy_keras() -> None:
    """Set `TF_USE_LEGACY_KERAS=1` if TensorFlow is not imported yet; fail clearly otherwise.

    # Raises
    ImportError: if TensorFlow was already imported with Keras 3 as `tf.keras`, or if
        `tf-keras` is not installed.
    """
    if "tensorflow" not in sys.modules:
        os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    setting = os.environ.get("TF_USE_LEGACY_KERAS")
    if setting not in ("1", "true", "True"):
        raise ImportError(f"TF_USE_LEGACY_KERAS is {setting!r}. {_FIX}")
    import tensorflow as tf

    # Under legacy Keras, tf.keras layers come from the `tf_keras` package.
    if not tf.keras.layers.Layer.__module__.startswith("tf_keras"):
        raise ImportError(
            "tf.keras is Keras 3 because TensorFlow was imported before hbnn_larq without "
            f"TF_USE_LEGACY_KERAS=1. {_FIX}"
        )
