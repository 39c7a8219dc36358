"""Check a converted model where it will run: the `.tflite` in the LCE interpreter, on test images.

`train()` converts every run it exports and records in `results.json` ("deployment") how the
1-bit model the user will deploy does: its top-1 accuracy on (up to `MAX_EXAMPLES`) test images,
fed exactly as the Keras model is (raw pixels: the model normalises them), the number of
`LceBconv2d` ops (binary convolutions LCE runs bit-packed), and its top-1 agreement with the
trained Keras model on the same images.
"""

from __future__ import annotations

import numpy as np

from hbnn_larq.export import op_names

MAX_EXAMPLES = 2000


def check_converted(flatbuffer: bytes, model, test_data, *, max_examples: int = MAX_EXAMPLES) -> dict:
    """Run `flatbuffer` in LCE's interpreter on up to `max_examples` images of `test_data`.

    # Arguments
    flatbuffer: the converted model (`hbnn_larq.convert_keras_model(model)`).
    model: the Keras model it was converted from.
    test_data: a `tf.data.Dataset` of `(images, labels)` batches, as the model takes them.
    max_examples: how many test images to run.

    # Returns
    `{"examples", "lce_bconv2d_ops", "tflite_accuracy", "keras_accuracy", "agreement"}`.
    """
    from larq_compute_engine.tflite.python.interpreter import Interpreter

    interpreter = Interpreter(flatbuffer, num_threads=1)
    lite, keras, labels = [], [], []
    seen = 0
    for images, batch_labels in test_data:
        take = min(len(batch_labels), max_examples - seen)
        images, batch_labels = images[:take], batch_labels[:take]
        lite.append(np.argmax(interpreter.predict(images.numpy()), -1))
        keras.append(np.argmax(model(images, training=False), -1))
        labels.append(batch_labels.numpy())
        seen += take
        if seen >= max_examples:
            break
    lite, keras, labels = (np.concatenate(a) for a in (lite, keras, labels))
    return {
        "examples": int(len(labels)),
        "lce_bconv2d_ops": op_names(flatbuffer).count("LceBconv2d"),
        "tflite_accuracy": float(np.mean(lite == labels)),
        "keras_accuracy": float(np.mean(keras == labels)),
        "agreement": float(np.mean(lite == keras)),
    }
