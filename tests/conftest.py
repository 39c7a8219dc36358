import os
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The offline dataset copies of this checkout's environment, if any (the package itself only
# looks in --data-dir and $HBNN_DATA_DIR). Set before any test or subprocess reads it.
_SHARED_DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
if _SHARED_DATASETS.is_dir():
    os.environ.setdefault("HBNN_DATA_DIR", str(_SHARED_DATASETS))

import hbnn_larq  # noqa: E402,F401  (sets up legacy Keras before anything imports TensorFlow)
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

# Two logical CPU devices, so that tf.distribute.MirroredStrategy can be tested on one CPU.
# This must happen before the TensorFlow runtime initialises its devices.
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2
)


@pytest.fixture(autouse=True)
def _fresh_keras_session():
    """Each test starts with a clean Keras name scope and a fixed seed."""
    tf.keras.backend.clear_session()
    tf.keras.utils.set_random_seed(0)
    yield
