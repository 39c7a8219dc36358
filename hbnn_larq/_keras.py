"""Make sure `tf.keras` is legacy Keras 2 (tf-keras) before larq is imported, and usable on
every Python the package supports.

larq 0.14 only works with Keras 2. TensorFlow 2.16 defaults to Keras 3 unless the environment
variable `TF_USE_LEGACY_KERAS=1` is set *before* TensorFlow is first imported, so this module
must run before anything else in the package imports TensorFlow.
"""

import os
import random
import sys
import threading

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


class _IntBoundsRandom(random.Random):
    """`random.Random` whose `randint` accepts integral float bounds, as Python < 3.12 did."""

    def randint(self, a, b):
        return super().randint(int(a), int(b))


class _SeedGenerator(threading.local):
    """tf-keras' per-thread seed generator holder, with every generator made `_IntBoundsRandom`."""

    def __setattr__(self, name, value):
        if name == "generator" and type(value) is random.Random:
            fixed = _IntBoundsRandom()
            fixed.setstate(value.getstate())  # the same stream of seeds
            value = fixed
        super().__setattr__(name, value)


def ensure_seeded_initializers_work() -> None:
    """Let layers be built after `tf.keras.utils.set_random_seed` on Python 3.12.

    After that call, tf-keras 2.16 draws each initializer's seed with
    `generator.randint(1, 1e9)`: Python 3.12 rejects the float bound with a TypeError (3.10 and
    3.11 accept it with a DeprecationWarning), so no layer with a random initializer could be
    built (`train.py` seeds every run). This gives tf-keras' generator holder a setter that
    turns each new generator into one that accepts such bounds and draws the same seeds.
    Idempotent; a no-op if tf-keras has no such holder.
    """
    try:
        from tf_keras.src import backend
    except ImportError:
        return
    holder = getattr(backend, "_SEED_GENERATOR", None)
    if holder is None or isinstance(holder, _SeedGenerator):
        return
    replacement = _SeedGenerator()
    if getattr(holder, "generator", None) is not None:  # seeded on this thread before the import
        replacement.generator = holder.generator
    backend._SEED_GENERATOR = replacement
