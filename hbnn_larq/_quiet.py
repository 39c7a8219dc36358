"""Silence three messages larq and tf-keras print about this package's quantizers that are false alarms.

`silence_false_alarms()` runs on `import hbnn_larq`:

- larq logs "Using a binary weight quantizer without setting `kernel_constraint` may result in
  starved weights" for every layer whose kernel quantizer has `precision == 1` and no kernel
  constraint. The warning is about `ste_sign`, whose gradient is zero once a latent weight
  leaves [-1, 1], so an unclipped latent weight can drift out and never come back. It is a
  false alarm for a quantizer with no such fixed window on the latent kernel (HBNN's map into
  the ball, normalised or per-filter standardized kernels): a latent clip revives nothing there
  and only distorts the kernel. Such a quantizer says so with the class attribute
  `needs_kernel_constraint = False`, and a filter on larq's logger drops the message for the
  layer whose quantizer says it. Every other layer keeps its warning: a plain `ste_sign`
  without `weight_clip` still warns.
- AutoGraph cannot convert larq's `QuantizedVariable.from_variable`, which every Keras optimizer
  update of a quantized kernel calls inside the traced train step, and asks for a TensorFlow bug
  report ("AutoGraph could not transform ..."). It then runs the function as-is, which is
  correct: the function wraps a variable and has nothing to convert. Marking it
  `do_not_convert` skips the failing attempt and its warning; nothing else changes.
- Under a mixed precision policy (`mixed_bfloat16`, `mixed_float16`) the same AutoGraph warning
  names tf-keras' `create_autocast_variable`, which an assignment to a float32 variable wrapped
  for autocasting calls inside the train step (once per model, sign/STE and HBNN alike). It too
  wraps a variable and runs correctly as-is; it gets the same `do_not_convert` mark.
"""

from __future__ import annotations

import logging
import re
import sys

import tensorflow as tf
from larq import layers_base
from larq.quantized_variable import QuantizedVariable
from tf_keras.src.mixed_precision import autocast_variable

_STARVED = "may result in starved weights"
# "`kernel_constraint`" in the message names the layer attribute holding the quantizer it is about.
_CONSTRAINT = re.compile(r"`(\w+)_constraint`")


def _warning_constructors() -> set:
    """The code of the larq `__init__`s that log the warning, with the layer as `self`."""
    names = ("QuantizerBase", "QuantizerDepthwiseBase", "QuantizerSeparableBase")
    classes = [getattr(layers_base, name, None) for name in names]
    return {cls.__init__.__code__ for cls in classes if cls is not None}


class UnclippedQuantizerFilter(logging.Filter):
    """Drops larq's starved-weights warning for a layer whose quantizer declares
    `needs_kernel_constraint = False`; lets every other record through.

    The message does not name the layer, so the filter finds it in the call stack: the record is
    logged from the larq `__init__` that constructs the layer, while it runs.
    """

    def __init__(self):
        super().__init__()
        self._constructors = _warning_constructors()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        match = _CONSTRAINT.search(message)
        if _STARVED not in message or match is None:
            return True
        layer = self._layer_under_construction()
        quantizer = getattr(layer, f"{match.group(1)}_quantizer", None)
        return getattr(quantizer, "needs_kernel_constraint", True)

    def _layer_under_construction(self):
        frame = sys._getframe(1)
        while frame is not None:
            if frame.f_code in self._constructors:
                return frame.f_locals.get("self")
            frame = frame.f_back
        return None


def _quiet_starved_weights_warnings() -> None:
    logger = logging.getLogger(layers_base.__name__)
    if not any(isinstance(f, UnclippedQuantizerFilter) for f in logger.filters):
        logger.addFilter(UnclippedQuantizerFilter())


def _not_converted(function):
    """`function` marked `do_not_convert` (once: a marked function is returned as it is)."""
    if hasattr(function, "autograph_info__"):  # the mark of `do_not_convert`
        return function
    return tf.autograph.experimental.do_not_convert(function)


def _skip_autograph_for_variable_wrappers() -> None:
    function = QuantizedVariable.__dict__["from_variable"].__func__
    QuantizedVariable.from_variable = classmethod(_not_converted(function))
    # `AutoCastVariable.assign*` look the function up in their module at each call
    autocast_variable.create_autocast_variable = _not_converted(autocast_variable.create_autocast_variable)


def silence_false_alarms() -> None:
    """Install the three fixes (idempotent)."""
    _quiet_starved_weights_warnings()
    _skip_autograph_for_variable_wrappers()
