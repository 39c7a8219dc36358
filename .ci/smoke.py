"""Smoke test of an installed hbnn-larq, for Python versions the full suite does not run on.

    python .ci/smoke.py

Checks, in about a minute on 2 CPU cores: the package imports (legacy Keras set up), a small
HBNN VGG-Small trains one epoch on random data, converts to a 1-bit `.tflite` with
`hbnn_larq.convert_keras_model`, every binarized convolution became an `LceBconv2d`, and the
LCE interpreter computes what Keras computes. Exits non-zero on any failure.
"""

import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before TensorFlow loads

import hbnn_larq  # noqa: E402  (first: sets TF_USE_LEGACY_KERAS)
import larq_compute_engine as lce  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from larq_compute_engine import testing as lce_testing  # noqa: E402

from hbnn_larq.export import BINARY_CONV_OP  # noqa: E402
from hbnn_larq.utils import binarized_layers  # noqa: E402

INPUT_SHAPE, CLASSES = (16, 16, 3), 4


def tiny_model() -> tf.keras.Model:
    return hbnn_larq.zoo.VGGSmall(input_shape=INPUT_SHAPE, num_classes=CLASSES, width=0.125,
                                  kernel_quantizer=hbnn_larq.HyperbolicSign, classifier_activation=None)


def train_one_epoch(model: tf.keras.Model) -> float:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, *INPUT_SHAPE)).astype("float32")
    y = rng.integers(0, CLASSES, size=64)
    model.compile(hbnn_larq.RiemannianOptimizer(tf.keras.optimizers.SGD(0.1, momentum=0.9)),
                  tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    loss = model.fit(x, y, batch_size=16, epochs=1, verbose=0).history["loss"][0]
    assert np.isfinite(loss), f"training loss is {loss}"
    return loss


def check_conversion(model: tf.keras.Model) -> int:
    flatbuffer = hbnn_larq.convert_keras_model(model)
    bconvs = hbnn_larq.op_names(flatbuffer).count(BINARY_CONV_OP)
    assert bconvs == len(binarized_layers(model)) > 0, f"{bconvs} {BINARY_CONV_OP} for {len(binarized_layers(model))} binarized convs"
    x = np.random.default_rng(1).normal(size=(2, *INPUT_SHAPE)).astype("float32")
    expected = model(x, training=False).numpy()
    got = lce_testing.Interpreter(flatbuffer, num_threads=1).predict(x, verbose=0)
    # LCE's accumulation order differs from TensorFlow's float ops: its own tests' tolerance.
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3)
    return bconvs


def main() -> int:
    start = time.time()
    print(f"Python {sys.version.split()[0]}, TensorFlow {tf.__version__}, larq-compute-engine {lce.__version__}, "
          f"hbnn-larq {hbnn_larq.__version__}", flush=True)
    assert tf.keras.layers.Layer.__module__.startswith("tf_keras"), "tf.keras is not legacy Keras 2"
    tf.keras.utils.set_random_seed(0)  # as `train.py` does (tf-keras 2.16 needs a fix for it on 3.12)
    model = tiny_model()
    loss = train_one_epoch(model)
    bconvs = check_conversion(model)
    print(f"smoke OK: 1 epoch (loss {loss:.3f}), {bconvs} {BINARY_CONV_OP} ops, interpreter matches Keras, "
          f"{time.time() - start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
