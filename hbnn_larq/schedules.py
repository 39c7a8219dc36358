"""`QuantizerSchedule`: drive the per-epoch schedules of quantizers (IR-Net's EDE, ReCU's τ).

Any quantizer with a method `set_progress(fraction)` takes part: every layer's kernel,
depthwise, pointwise and input quantizer (`hbnn_larq.utils.QUANTIZER_ATTRIBUTES`), and,
recursively, the `base` of a quantizer that
wraps another one (`HyperbolicSign(base="ir_net")`). Training code can always add the callback:
it does nothing when no quantizer has a schedule.

```python
model.fit(x, y, epochs=300, callbacks=[hbnn_larq.QuantizerSchedule(300)])
```
"""

from __future__ import annotations

import tensorflow as tf

from hbnn_larq.utils import QUANTIZER_ATTRIBUTES, layers


def scheduled_quantizers(model: tf.keras.Model) -> list:
    """The quantizers of `model` (nested models included) that have a `set_progress` method,
    each once, in layer order."""
    found, seen = [], set()

    def visit(quantizer):
        while quantizer is not None and id(quantizer) not in seen:
            seen.add(id(quantizer))
            if callable(getattr(quantizer, "set_progress", None)):
                found.append(quantizer)
            quantizer = getattr(quantizer, "base", None)

    for layer in layers(model):
        for attribute in QUANTIZER_ATTRIBUTES:
            visit(getattr(layer, attribute, None))
    return found


class QuantizerSchedule(tf.keras.callbacks.Callback):
    """Keras callback: at the start of epoch \\(e\\) call `set_progress(f)` on every scheduled
    quantizer of the model, with

    \\[ f = \\frac{e}{E} \\;(\\texttt{endpoint=False}), \\qquad
        f = \\frac{e}{\\max(E - 1, 1)} \\;(\\texttt{endpoint=True}), \\]

    clipped to at most 1 (epochs beyond `total_epochs` keep the final value). The default
    `endpoint=False` is what both reference implementations do (IR-Net's `Log_UP` and ReCU's
    `cpt_tau` use `epoch / args.epochs` for epochs \\(0 \\dots E-1\\)), so the last epoch runs
    at \\((E-1)/E\\), not at the nominal maximum. `epoch` is Keras' absolute epoch index, so a
    run resumed with `initial_epoch` continues the schedule.

    # Arguments
    total_epochs: the planned number of training epochs \\(E\\), int >= 1.
    endpoint: reach \\(f = 1\\) at the last epoch. Default False (reference).

    # Attributes
    fraction: the last progress value that was set (None before the first epoch).
    """

    def __init__(self, total_epochs: int, endpoint: bool = False):
        super().__init__()
        if isinstance(total_epochs, bool) or not isinstance(total_epochs, int) or total_epochs < 1:
            raise ValueError(f"`total_epochs` must be an int >= 1, got {total_epochs!r}.")
        self.total_epochs, self.endpoint = total_epochs, bool(endpoint)
        self.fraction = None

    def progress(self, epoch: int) -> float:
        """The progress fraction for (0-based) `epoch`."""
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"`epoch` must be an int >= 0, got {epoch!r}.")
        denominator = max(self.total_epochs - 1, 1) if self.endpoint else self.total_epochs
        return min(epoch / denominator, 1.0)

    def on_epoch_begin(self, epoch, logs=None):
        self.fraction = self.progress(int(epoch))
        for quantizer in scheduled_quantizers(self.model):
            if getattr(quantizer, "built", True):  # unbuilt ones still hold their initial value
                quantizer.set_progress(self.fraction)
