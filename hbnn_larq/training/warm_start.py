"""Warm start: begin a run from the bit-packed inference weights of an earlier one.

`train.py --init-weights PATH_OR_NAME` loads a `weights.npz` (a run's, or shipped weights by
registry name such as `cifar10`) into the freshly built model before training. Those files hold
only what inference needs: the binary kernels (±α), the float layers and the batch-norm
statistics, never the latent kernels, HBNN's points or the optimizer state (which stay out of the
repository). So a warm start re-creates a latent state:

- each weight-quantized latent kernel (kernel, depthwise or pointwise: all are stored as bits)
  becomes its stored binary kernel scaled to the root-mean-square of its fresh initialisation,
  \\(\\tilde w = \\operatorname{rms}(\\tilde w_0)\\,\\operatorname{sign}(w_b)\\): the binary kernel is the
  stored one, and the latent magnitudes are those the recipe's learning rate and weight decay
  were tuned for (the stored ±1 would sit at `weight_clip`'s edge and saturate HBNN's map);
- HBNN points restart at the origin (where \\(\\exp_0\\) keeps every sign), the optimizer's
  momentum at zero.

Before the first step the warm-started model predicts exactly what the stored weights do (test:
`tests/test_train.py`). Long trainings that outlive a machine (issue 28) are run as segments,
each a complete `train.py` run whose `weights.npz` starts the next.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from hbnn_larq.utils import quantized_kernels
from hbnn_larq.zoo import pretrained


def weights_path(init_weights: str, model_name: str):
    """The file `init_weights` names: a registered name of `model_name`'s shipped weights, or a path.

    # Raises
    ValueError: neither (the message lists the registered names).
    """
    if os.path.isfile(init_weights):
        return init_weights
    if init_weights in pretrained.available_weights(model_name):
        return pretrained.registered_path(model_name, init_weights)
    raise ValueError(f"`init_weights` must be a weights file (weights.npz of a run) or the name of weights shipped "
                     f"for {model_name!r} ({', '.join(pretrained.available_weights(model_name)) or 'none'}); "
                     f"got {init_weights!r}.")


def warm_start(model: tf.keras.Model, path) -> dict:
    """Load the weights file `path` into `model` and rescale its weight-quantized latent kernels
    to their initial root-mean-square (see the module docstring).

    # Returns
    `{kernel name (hbnn_larq.utils.QuantizedKernel.name): the latent scale used}`.
    """
    kernels = quantized_kernels(model)
    scales = {kernel.name: float(np.sqrt(np.mean(np.square(kernel.variable.numpy())))) for kernel in kernels}
    pretrained.load_pretrained(model, path)
    for kernel in kernels:
        kernel.variable.assign(kernel.variable * scales[kernel.name])
    return scales
